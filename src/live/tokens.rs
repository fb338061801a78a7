//! Token ids for a trace's content identity.
//!
//! A trace names tokens as `(content, position)` pairs (see [`crate::trace`]). A live server
//! needs real ids, and its prefix cache must see exactly the sharing the trace describes: two
//! prompts must agree on a token id exactly where they agree on `(content, position)`. The id is
//! a hash of both, mapped into the usable range of the vocabulary:
//!
//! ```text
//! id(content, pos) = first_id + splitmix64(splitmix64(content) ^ pos) mod (vocab - first_id)
//! ```
//!
//! where `splitmix64` is the finaliser of Steele et al.'s SplitMix64 (the mixer of
//! [`crate::util::rng`]). Ids below `first_id` are never produced, so a tokenizer's special
//! tokens (BOS, EOS, padding, which usually come first) stay out of prompts. Equal identities give
//! equal ids by construction; different identities collide on one position with probability
//! `1 / (vocab - first_id)`, so a whole block of 16 or 128 tokens essentially never matches by
//! accident.

use crate::trace::Run;

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps `(content, position)` to token ids in `[first_id, vocab)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMap {
    /// Ids at or above this (the vocabulary size of the model, minus trailing special tokens).
    pub vocab: u32,
    /// The first id used (ids below are special tokens).
    pub first_id: u32,
}

impl TokenMap {
    /// A map onto `[first_id, vocab)`; `None` when the range is empty.
    pub fn new(vocab: u32, first_id: u32) -> Option<TokenMap> {
        (first_id < vocab).then_some(TokenMap { vocab, first_id })
    }

    /// The id of token `(content, pos)`.
    pub fn token(&self, content: u64, pos: u32) -> u32 {
        let h = splitmix64(splitmix64(content) ^ pos as u64);
        self.first_id + (h % (self.vocab - self.first_id) as u64) as u32
    }

    /// The ids of a prompt given as runs, in order.
    pub fn prompt(&self, runs: &[Run]) -> Vec<u32> {
        let n: usize = runs.iter().map(|r| r.len as usize).sum();
        let mut out = Vec::with_capacity(n);
        for r in runs {
            let (c, start) = (splitmix64(r.content), r.offset);
            for i in 0..r.len {
                let h = splitmix64(c ^ (start + i) as u64);
                out.push(self.first_id + (h % (self.vocab - self.first_id) as u64) as u32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_give_identical_leading_ids() {
        let m = TokenMap::new(4096, 4).unwrap();
        // Two prompts: the same 300 tokens of document 7, then different questions.
        let a = m.prompt(&[Run::new(7, 0, 300), Run::new(100, 0, 20)]);
        let b = m.prompt(&[Run::new(7, 0, 300), Run::new(101, 0, 20)]);
        assert_eq!(a.len(), 320);
        assert_eq!(a[..300], b[..300]);
        assert_ne!(a[300..], b[300..]);
        // A run starting at an offset gives the same ids as the tail of the full run, whatever
        // way the prompt is split into runs.
        let c = m.prompt(&[Run::new(7, 100, 200)]);
        assert_eq!(c[..], a[100..300]);
        let d = m.prompt(&[Run::new(7, 0, 150), Run::new(7, 150, 150)]);
        assert_eq!(d[..], a[..300]);
        assert_eq!(m.token(7, 5), a[5]);
    }

    #[test]
    fn different_content_differs_and_stays_in_range() {
        let m = TokenMap::new(4096, 4).unwrap();
        let a = m.prompt(&[Run::new(1, 0, 128)]);
        let b = m.prompt(&[Run::new(2, 0, 128)]);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        // Expected 128 / 4092 coincidences; a handful at most.
        assert!(same <= 3, "{same} equal positions");
        // Position matters too: a document is not a constant.
        assert!(a.windows(2).any(|w| w[0] != w[1]));
        let all = m.prompt(&[Run::new(9, 0, 50_000)]);
        assert!(all.iter().all(|&t| (4..4096).contains(&t)));
        // Every usable id occurs (the map is not stuck on part of the range).
        let mut seen = vec![false; 4096];
        all.iter().for_each(|&t| seen[t as usize] = true);
        assert!(seen[4..].iter().filter(|s| **s).count() > 4000);
        assert!(TokenMap::new(4, 4).is_none());
        // Deterministic across calls and builds: pinned values.
        assert_eq!(
            m.prompt(&[Run::new(0, 0, 3)]),
            m.prompt(&[Run::new(0, 0, 3)])
        );
    }
}

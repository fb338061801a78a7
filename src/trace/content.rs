//! Content identity: canonical runs, chained block hashes at any block size, and shared prefixes.
//!
//! vLLM keys a full block of `block_size` tokens by `hash(parent block's key, the block's tokens)`;
//! LMCache keys a chunk of `chunk_size` tokens the same way, prefix-chained. Both are computed here
//! from runs without materialising tokens: a block's tokens are the pieces of runs that fall inside
//! it, and because runs are canonical those pieces describe the tokens uniquely. Work is
//! proportional to blocks plus runs, not to tokens.

use super::Run;
use crate::util::idhash::MixMap;

/// True when no run is empty and no two adjacent runs continue the same content.
pub fn is_canonical(runs: &[Run]) -> bool {
    runs.iter().all(|r| r.len > 0) && runs.windows(2).all(|w| !continues(&w[0], &w[1]))
}

/// Drops empty runs and merges adjacent runs that continue the same content, so that one token
/// sequence has exactly one representation.
pub fn canonicalize(runs: impl IntoIterator<Item = Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for r in runs {
        push_run(&mut out, r);
    }
    out
}

fn continues(a: &Run, b: &Run) -> bool {
    a.content == b.content && a.offset as u64 + a.len as u64 == b.offset as u64
}

/// Appends `run` to a canonical list, merging when it continues the last run.
pub fn push_run(runs: &mut Vec<Run>, run: Run) {
    if run.len == 0 {
        return;
    }
    match runs.last_mut() {
        Some(last) if continues(last, &run) => last.len += run.len,
        _ => runs.push(run),
    }
}

#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// One step of the chained hash: folds `x` into `h`. Fixed constants, so hashes are identical on
/// every platform and in every run.
#[inline]
pub fn mix(h: u64, x: u64) -> u64 {
    mum(h ^ 0xa076_1d64_78bd_642f, x ^ 0xe703_7ed1_a0b4_28db)
}

/// The parent key of a sequence's first block. The block size is folded in so that keys at
/// different granularities (vLLM blocks, LMCache chunks) never coincide.
pub fn root_hash(block: u32) -> u64 {
    mix(0x8ebc_6af0_9c88_c6e3, block as u64)
}

/// Walks a token sequence given as runs and calls `emit(end_token, key)` for each block of
/// `block` tokens, in order; the key of block k is chained on the key of block k-1. The trailing
/// partial block is emitted only when `partial` is true (LMCache's `save_unfull_chunk`).
/// Returns the number of full blocks.
pub fn for_each_block(
    runs: impl IntoIterator<Item = Run>,
    block: u32,
    partial: bool,
    mut emit: impl FnMut(u64, u64),
) -> u64 {
    assert!(block > 0, "block size must be positive");
    // A block's key folds each piece (content, offset, length) into its parent's key, one
    // multiply per piece; blocks have a fixed size, so where one ends needs no marker.
    let mut h = root_hash(block);
    let mut filled: u32 = 0; // tokens in the current block
    let mut end: u64 = 0; // tokens consumed
    let mut full = 0;
    for r in runs {
        let mut off = r.offset;
        let mut left = r.len;
        let content = r.content.rotate_left(23);
        while left > 0 {
            let take = left.min(block - filled);
            h = mix(h ^ content, ((off as u64) << 32) | take as u64);
            filled += take;
            off += take;
            left -= take;
            end += take as u64;
            if filled == block {
                emit(end, h);
                full += 1;
                filled = 0;
            }
        }
    }
    if partial && filled > 0 {
        emit(end, h);
    }
    full
}

/// vLLM's keys of the full blocks of a request's whole sequence (prompt then answer).
pub fn sequence_hashes(req: &super::Request, block: u32) -> Vec<u64> {
    let tokens = req.input_len as u64 + req.output_len as u64;
    let mut out = Vec::with_capacity((tokens / block as u64) as usize);
    for_each_block(req.sequence(), block, false, |_, h| out.push(h));
    out
}

/// Keys of the blocks of a sequence (see [`for_each_block`]), appended to `out`.
pub fn block_hashes(runs: &[Run], block: u32, partial: bool, out: &mut Vec<u64>) {
    for_each_block(runs.iter().copied(), block, partial, |_, h| out.push(h));
}

/// An unlimited cache at token granularity: a radix trie over runs that answers "how many leading
/// tokens of this prompt does any earlier prompt share?" in time proportional to runs.
///
/// Edges are keyed by (node, identity of the edge's first token); two prompts that agree on a
/// token reach the same edge, and an edge is split where they part.
#[derive(Debug, Default)]
pub struct PrefixTrie {
    edges: MixMap<(u32, u64, u32), (u32, u32)>,
    nodes: u32,
}

impl PrefixTrie {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    fn new_node(&mut self) -> u32 {
        self.nodes += 1;
        self.nodes
    }

    /// Returns how many leading tokens of `runs` were inserted before (by any earlier call), then
    /// inserts `runs`.
    pub fn match_and_insert(&mut self, runs: &[Run]) -> u64 {
        self.match_and_insert_iter(runs.iter().copied())
    }

    /// [`PrefixTrie::match_and_insert`] over runs given one by one (they must be canonical).
    pub fn match_and_insert_iter(&mut self, runs: impl IntoIterator<Item = Run>) -> u64 {
        let mut node = 0u32;
        let mut matched = 0u64;
        let mut matching = true;
        for r in runs {
            let mut pos = 0u32;
            while pos < r.len {
                let key = (node, r.content, r.offset + pos);
                let left = r.len - pos;
                match (matching, self.edges.get(&key).copied()) {
                    (true, Some((child, elen))) => {
                        let common = elen.min(left);
                        matched += common as u64;
                        if common == elen {
                            node = child;
                        } else {
                            // The run ends inside the edge: split it.
                            let mid = self.new_node();
                            self.edges.insert(key, (mid, common));
                            self.edges.insert(
                                (mid, r.content, r.offset + pos + common),
                                (child, elen - common),
                            );
                            node = mid;
                        }
                        pos += common;
                    }
                    _ => {
                        matching = false;
                        let child = self.new_node();
                        self.edges.insert(key, (child, left));
                        node = child;
                        pos = r.len;
                    }
                }
            }
        }
        matched
    }
}

/// Tokens a prompt of `input_len` reuses at block size `block` when `shared` leading tokens match
/// an earlier prompt: whole blocks only, except that a prompt covered entirely counts whole
/// (its trailing partial block is covered too).
pub fn reusable_tokens(shared: u64, input_len: u64, block: u32) -> u64 {
    if shared >= input_len {
        input_len
    } else {
        shared / block as u64 * block as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(runs: &[Run], block: u32, partial: bool) -> Vec<u64> {
        let mut v = Vec::new();
        block_hashes(runs, block, partial, &mut v);
        v
    }

    #[test]
    fn canonicalize_merges_continuations_only() {
        let c = canonicalize([
            Run::new(1, 0, 4),
            Run::new(1, 4, 2),
            Run::new(1, 7, 1),
            Run::new(2, 0, 0),
            Run::new(2, 0, 3),
        ]);
        assert_eq!(
            c,
            vec![Run::new(1, 0, 6), Run::new(1, 7, 1), Run::new(2, 0, 3)]
        );
        assert!(is_canonical(&c));
        assert!(!is_canonical(&[Run::new(1, 0, 4), Run::new(1, 4, 2)]));
    }

    #[test]
    fn same_tokens_same_hashes_whatever_the_run_split() {
        // (doc 7, 0..40) written as one run, or as the canonical merge of two pieces.
        let a = [Run::new(7, 0, 40)];
        let b = canonicalize([Run::new(7, 0, 13), Run::new(7, 13, 27)]);
        assert_eq!(hashes(&a, 16, true), hashes(&b, 16, true));
        assert_eq!(hashes(&a, 16, false).len(), 2);
        assert_eq!(hashes(&a, 16, true).len(), 3);
    }

    #[test]
    fn blocks_share_exactly_the_shared_prefix() {
        // Both prompts start with 50 tokens of doc 1, then differ.
        let a = [Run::new(1, 0, 50), Run::new(2, 0, 30)];
        let b = [Run::new(1, 0, 50), Run::new(3, 0, 30)];
        for block in [1u32, 7, 16, 25, 50, 64] {
            let (ha, hb) = (hashes(&a, block, false), hashes(&b, block, false));
            let shared = ha.iter().zip(&hb).take_while(|(x, y)| x == y).count() as u32;
            assert_eq!(shared, 50 / block, "block {block}");
        }
        // A later difference never changes earlier keys; an early difference changes all later ones.
        let c = [Run::new(9, 0, 1), Run::new(1, 1, 49), Run::new(2, 0, 30)];
        let hc = hashes(&c, 16, false);
        let ha = hashes(&a, 16, false);
        assert!(ha.iter().zip(&hc).all(|(x, y)| x != y));
    }

    #[test]
    fn keys_differ_across_granularities_and_offsets() {
        let a = [Run::new(1, 0, 64)];
        let h16 = hashes(&a, 16, false);
        let h64 = hashes(&a, 64, false);
        assert!(!h16.contains(&h64[0]));
        // Same content, different offset: different tokens.
        let b = [Run::new(1, 16, 64)];
        assert_ne!(hashes(&b, 16, false)[0], h16[0]);
    }

    #[test]
    fn trie_counts_longest_shared_prefix_with_any_earlier_prompt() {
        let mut t = PrefixTrie::new();
        assert_eq!(t.match_and_insert(&[Run::new(1, 0, 100)]), 0);
        // Shares 60 of doc 1, then diverges.
        assert_eq!(
            t.match_and_insert(&[Run::new(1, 0, 60), Run::new(5, 0, 10)]),
            60
        );
        // Shares 100 of doc 1 with the first, then doc 2.
        assert_eq!(
            t.match_and_insert(&[Run::new(1, 0, 100), Run::new(2, 0, 8)]),
            100
        );
        // Matches the split path: 60 of doc 1 then 4 of doc 5.
        assert_eq!(
            t.match_and_insert(&[Run::new(1, 0, 60), Run::new(5, 0, 4)]),
            64
        );
        // Same first token as an edge but then a different token.
        assert_eq!(
            t.match_and_insert(&[Run::new(1, 0, 30), Run::new(6, 0, 4)]),
            30
        );
        // Never seen.
        assert_eq!(t.match_and_insert(&[Run::new(1, 1, 10)]), 0);
        // Fully contained in an earlier prompt.
        assert_eq!(
            t.match_and_insert(&[Run::new(1, 0, 100), Run::new(2, 0, 3)]),
            103
        );
    }

    #[test]
    fn reusable_tokens_counts_whole_blocks_or_the_whole_prompt() {
        assert_eq!(reusable_tokens(1000, 2000, 512), 512);
        assert_eq!(reusable_tokens(1023, 2000, 512), 512);
        assert_eq!(reusable_tokens(1024, 2000, 512), 1024);
        assert_eq!(reusable_tokens(700, 700, 512), 700);
        assert_eq!(reusable_tokens(0, 700, 16), 0);
    }
}

/// For each request, the longest prefix (in tokens) of its whole sequence (prompt then output)
/// that it shares with any *other* request of the trace, earlier or later.
///
/// A cached block beyond this length can never be hit by another request, so the engine need
/// not index it (a request can still hit its own blocks after a preemption; the engine indexes
/// those when it preempts). This keeps prefix-cache work proportional to what can be shared.
pub fn shareable_prefixes(trace: &super::Trace) -> Vec<u32> {
    let mut out = vec![0u32; trace.requests.len()];
    let mut fwd = PrefixTrie::new();
    for (i, r) in trace.requests.iter().enumerate() {
        out[i] = fwd.match_and_insert_iter(r.sequence()) as u32;
    }
    drop(fwd);
    let mut rev = PrefixTrie::new();
    for (i, r) in trace.requests.iter().enumerate().rev() {
        out[i] = out[i].max(rev.match_and_insert_iter(r.sequence()) as u32);
    }
    out
}

#[cfg(test)]
mod shareable_tests {
    use super::*;
    use crate::trace::Request;

    /// A request at 0 whose answer is the content `1000 + id`.
    fn req(id: u64, prompt: Vec<Run>, out: u32) -> Request {
        let mut r = crate::testkit::req(id, 0, prompt, out);
        r.output_content = 1000 + id;
        r
    }

    #[test]
    fn shareable_looks_both_ways_and_through_answers() {
        let t = crate::testkit::trace(vec![
            req(0, vec![Run::new(1, 0, 100)], 10),
            // Shares 60 tokens with request 0 (which therefore shares 60 with a later one).
            req(1, vec![Run::new(1, 0, 60), Run::new(2, 0, 5)], 10),
            // A next turn: request 1's prompt and answer, then more.
            req(
                2,
                vec![
                    Run::new(1, 0, 60),
                    Run::new(2, 0, 5),
                    Run::new(1001, 0, 10),
                    Run::new(3, 0, 7),
                ],
                1,
            ),
            req(3, vec![Run::new(9, 0, 50)], 5),
        ]);
        assert_eq!(shareable_prefixes(&t), vec![60, 75, 75, 0]);
    }
}

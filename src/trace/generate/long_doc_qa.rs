//! LMCache `benchmarks/long_doc_qa/long_doc_qa.py`: documents sent once each (warmup round),
//! then again in a repeated, optionally shuffled order (query round), at most
//! `max_inflight_requests` at a time.
//!
//! What the tool does: document i is the text `"{i} " + "hi " * document_length`; the id in front
//! makes documents share nothing. The warmup round sends each document once, in id order, and is
//! awaited completely; the query round sends the list repeated `repeat_count` times (`tile`:
//! 0,1,2,0,1,2; `interleave`: 0,0,1,1,2,2; `random`: tiled, then shuffled with the generator seeded
//! by `shuffle_seed`). With `hit_miss_ratio` "H:M", query position i with `i % (H+M) >= H` gets a
//! random number put in front of its text, so nothing of it can hit a cache. An asyncio semaphore
//! keeps at most `max_inflight_requests` requests outstanding, in list order.
//!
//! Here: document d is one run of content d of `document_length` tokens; a miss is one run of
//! fresh content of the same length; one [`Pool`] of `max_inflight_requests` clients where every
//! request is its own unit (no session), round 0 = warmup, round 1 = query (the barrier between
//! them is the tool's `gather`). The shuffle uses our own generator seeded from `shuffle_seed`
//! (the tool's only seed; the trace seed is recorded but changes nothing).
//!
//! Simplifications: the tool's five untimed pre-warmup prompts (1000 tokens of "hi" after a
//! different id, sharing nothing with the documents) and `--sleep-time-after-warmup` are not in
//! the trace; the id and chat-template tokens (a few per prompt) are not counted, so a prompt is
//! exactly `document_length` tokens.

use super::{Ids, bad, check_requests, meta, request};
use crate::error::Result;
use crate::trace::{Pool, Run, Trace};
use crate::util::rng::Rng;
use serde::{Deserialize, Serialize};

/// Order of the query round.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RepeatMode {
    /// The document list repeated: 0,1,2,0,1,2.
    Tile,
    /// Each document repeated in place: 0,0,1,1,2,2.
    Interleave,
    /// Tiled, then shuffled.
    #[default]
    Random,
}

/// long_doc_qa's parameters (flags and defaults of `long_doc_qa.py`).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Documents (distinct prompts).
    #[arg(long, default_value_t = 8)]
    pub num_documents: u32,
    /// Tokens per document.
    #[arg(long, default_value_t = 20000)]
    pub document_length: u32,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 100)]
    pub output_len: u32,
    /// Times each document is sent in the query round.
    #[arg(long, default_value_t = 2)]
    pub repeat_count: u32,
    /// Order of the query round.
    #[arg(long, value_enum, default_value_t = RepeatMode::Random)]
    pub repeat_mode: RepeatMode,
    /// Seed of the random query order.
    #[arg(long, default_value_t = 0)]
    pub shuffle_seed: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 2)]
    pub max_inflight_requests: u32,
    /// "H:M": of every H+M query positions the first H stay, the last M become misses.
    #[arg(long, value_name = "H:M")]
    pub hit_miss_ratio: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            num_documents: 8,
            document_length: 20000,
            output_len: 100,
            repeat_count: 2,
            repeat_mode: RepeatMode::Random,
            shuffle_seed: 0,
            max_inflight_requests: 2,
            hit_miss_ratio: None,
        }
    }
}

/// Parses "H:M" into (H, M) with H + M > 0.
fn parse_ratio(s: &str) -> Result<(u64, u64)> {
    let err = || {
        bad(
            "hit_miss_ratio",
            format!("expected \"H:M\" with non-negative integers and H+M > 0, got \"{s}\""),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    let h: u64 = h.trim().parse().map_err(|_| err())?;
    let m: u64 = m.trim().parse().map_err(|_| err())?;
    if h.checked_add(m).is_none_or(|p| p == 0) {
        return Err(err());
    }
    Ok((h, m))
}

/// The query round's document order (before misses).
fn query_order(p: &Params) -> Vec<u32> {
    let docs = p.num_documents;
    let mut q: Vec<u32> = match p.repeat_mode {
        RepeatMode::Tile | RepeatMode::Random => {
            (0..p.repeat_count).flat_map(|_| 0..docs).collect()
        }
        RepeatMode::Interleave => (0..docs)
            .flat_map(|d| std::iter::repeat_n(d, p.repeat_count as usize))
            .collect(),
    };
    if p.repeat_mode == RepeatMode::Random {
        Rng::stream(p.shuffle_seed, "long_doc_qa.shuffle").shuffle(&mut q);
    }
    q
}

/// Generates long_doc_qa's workload. `seed` is only recorded: the tool's randomness is
/// `shuffle_seed`.
pub fn generate(p: &Params, seed: u64) -> Result<Trace> {
    if p.num_documents == 0 {
        return Err(bad("num_documents", "must be at least 1"));
    }
    if p.document_length == 0 {
        return Err(bad("document_length", "must be at least 1"));
    }
    if p.output_len == 0 {
        return Err(bad("output_len", "must be at least 1"));
    }
    if p.max_inflight_requests == 0 {
        return Err(bad("max_inflight_requests", "must be at least 1"));
    }
    let ratio = p.hit_miss_ratio.as_deref().map(parse_ratio).transpose()?;
    let total = p.num_documents as u64 * (1 + p.repeat_count as u64);
    check_requests(total, "num_documents x (1 + repeat_count)")?;

    let mut ids = Ids::new();
    let docs: Vec<u64> = (0..p.num_documents).map(|_| ids.fresh()).collect();
    let len = p.document_length;
    let mut requests = Vec::with_capacity(total as usize);
    let mut push = |content: u64, round: u32| -> Result<()> {
        let mut r = request(
            requests.len() as u64,
            vec![Run::new(content, 0, len)],
            p.output_len,
        )?;
        r.pool = Some(0);
        r.round = round;
        requests.push(r);
        Ok(())
    };
    for &d in &docs {
        push(d, 0)?;
    }
    for (i, d) in query_order(p).into_iter().enumerate() {
        let miss = ratio.is_some_and(|(h, m)| i as u64 % (h + m) >= h);
        let content = if miss { ids.fresh() } else { docs[d as usize] };
        push(content, 1)?;
    }
    let pool = Pool::new(0, p.max_inflight_requests);
    Ok(Trace {
        meta: meta("long-doc-qa", p, seed, vec![pool]),
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::generate::testutil::{
        assert_clap_defaults, assert_refused, assert_serde_defaults, parse_flags,
    };

    fn small(mode: RepeatMode) -> Params {
        Params {
            num_documents: 3,
            document_length: 50,
            output_len: 7,
            repeat_count: 2,
            repeat_mode: mode,
            ..Default::default()
        }
    }

    /// (document index or 9 for a miss, round) per request.
    fn shape(t: &Trace) -> Vec<(u64, u32)> {
        t.requests
            .iter()
            .map(|r| {
                let c = r.prompt[0].content;
                (if c <= 3 { c - 1 } else { 9 }, r.round)
            })
            .collect()
    }

    #[test]
    fn clap_defaults_equal_default() {
        assert_clap_defaults::<Params>();
        let p: Params =
            parse_flags(&["x", "--repeat-mode", "tile", "--hit-miss-ratio", "3:1"]).unwrap();
        assert_eq!(p.repeat_mode, RepeatMode::Tile);
        assert_eq!(p.hit_miss_ratio.as_deref(), Some("3:1"));
        assert_serde_defaults::<Params>();
        let p: Params = serde_json::from_str(r#"{"repeat_mode": "interleave"}"#).unwrap();
        assert_eq!(p.repeat_mode, RepeatMode::Interleave);
    }

    #[test]
    fn tile_and_interleave_orders_and_rounds() {
        let t = generate(&small(RepeatMode::Tile), 0).unwrap();
        t.validate("t").unwrap();
        assert_eq!(
            shape(&t),
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (0, 1),
                (1, 1),
                (2, 1),
                (0, 1),
                (1, 1),
                (2, 1)
            ]
        );
        let t = generate(&small(RepeatMode::Interleave), 0).unwrap();
        assert_eq!(
            shape(&t),
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (0, 1),
                (0, 1),
                (1, 1),
                (1, 1),
                (2, 1),
                (2, 1)
            ]
        );
        for r in &t.requests {
            assert_eq!((r.input_len, r.output_len), (50, 7));
            assert_eq!(r.prompt, vec![Run::new(r.prompt[0].content, 0, 50)]);
            assert_eq!((r.pool, r.session, r.think_ns), (Some(0), None, 0));
        }
        assert_eq!(t.meta.pools[0].clients, 2);
        let ids: Vec<u64> = t.requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn random_is_a_seeded_permutation_of_the_tiling() {
        let p = Params {
            num_documents: 10,
            repeat_count: 3,
            ..small(RepeatMode::Random)
        };
        let a = generate(&p, 0).unwrap();
        let mut q: Vec<u64> = a.requests[10..]
            .iter()
            .map(|r| r.prompt[0].content)
            .collect();
        assert_ne!(q, (0..3).flat_map(|_| 1..=10).collect::<Vec<u64>>());
        q.sort();
        assert_eq!(q, (1..=10).flat_map(|d| [d, d, d]).collect::<Vec<u64>>());
        // The trace seed changes nothing; shuffle_seed does.
        assert_eq!(a.requests, generate(&p, 5).unwrap().requests);
        assert_eq!(a, generate(&p, 0).unwrap());
        let b = generate(
            &Params {
                shuffle_seed: 1,
                ..p.clone()
            },
            0,
        )
        .unwrap();
        assert_ne!(a.requests, b.requests);
    }

    #[test]
    fn hit_miss_positions() {
        let p = Params {
            hit_miss_ratio: Some("2:1".into()),
            ..small(RepeatMode::Tile)
        };
        let t = generate(&p, 0).unwrap();
        t.validate("t").unwrap();
        // Query list 0,1,2,0,1,2: positions 2 and 5 are misses.
        assert_eq!(
            shape(&t),
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (0, 1),
                (1, 1),
                (9, 1),
                (0, 1),
                (1, 1),
                (9, 1)
            ]
        );
        let misses: Vec<u64> = t
            .requests
            .iter()
            .map(|r| r.prompt[0].content)
            .filter(|&c| c > 3)
            .collect();
        assert_eq!(misses.len(), 2);
        assert_ne!(misses[0], misses[1], "each miss is fresh");
        assert!(t.requests.iter().all(|r| r.input_len == 50));
        // 0:1: every query is a miss.
        let p = Params {
            hit_miss_ratio: Some("0:1".into()),
            ..small(RepeatMode::Tile)
        };
        assert!(
            shape(&generate(&p, 0).unwrap())[3..]
                .iter()
                .all(|s| s.0 == 9)
        );
    }

    #[test]
    fn zero_repeats_is_warmup_only() {
        let t = generate(
            &Params {
                repeat_count: 0,
                ..small(RepeatMode::Random)
            },
            0,
        )
        .unwrap();
        assert_eq!(shape(&t), [(0, 0), (1, 0), (2, 0)]);
    }

    #[test]
    fn bad_params_are_named() {
        let cases = [
            (
                Params {
                    num_documents: 0,
                    ..Default::default()
                },
                "num_documents (--num-documents)",
            ),
            (
                Params {
                    document_length: 0,
                    ..Default::default()
                },
                "--document-length",
            ),
            (
                Params {
                    output_len: 0,
                    ..Default::default()
                },
                "--output-len",
            ),
            (
                Params {
                    max_inflight_requests: 0,
                    ..Default::default()
                },
                "--max-inflight-requests",
            ),
            (
                Params {
                    hit_miss_ratio: Some("0:0".into()),
                    ..Default::default()
                },
                "--hit-miss-ratio",
            ),
            (
                Params {
                    hit_miss_ratio: Some("3".into()),
                    ..Default::default()
                },
                "--hit-miss-ratio",
            ),
            (
                Params {
                    hit_miss_ratio: Some("a:1".into()),
                    ..Default::default()
                },
                "--hit-miss-ratio",
            ),
            (
                Params {
                    hit_miss_ratio: Some(format!("{}:1", u64::MAX)),
                    ..Default::default()
                },
                "--hit-miss-ratio",
            ),
            (
                Params {
                    num_documents: u32::MAX,
                    repeat_count: u32::MAX,
                    ..Default::default()
                },
                "at most",
            ),
        ];
        assert_refused(generate, cases);
    }
}

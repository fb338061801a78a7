//! Request logs as token ids: one JSON object per line with `timestamp` (seconds from the log's
//! start), `prompt_token_ids` (the prompt as the model's token ids; `token_ids` or `input_ids`
//! also name it), `output_len` (tokens generated; `max_tokens` also names it) and optionally
//! `session_id` (a string or an integer: the turns of one conversation).
//!
//! Token sequences become content runs through a radix tree over every prompt of the log
//! ([`PrefixTree`]): prompts sharing a token prefix share exactly that many tokens of content,
//! and nothing else, so prefix hits at every block and chunk size are exact.

use super::{ImportOptions, ImportReport, Tally, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::content::canonicalize;
use crate::trace::{Request, Run, Trace, TraceMeta};
use crate::util::json::{Obj, show};
use std::collections::HashMap;
use std::io::BufRead;

/// The radix tree of the prompts seen so far: each edge is a stretch of tokens held as one
/// content id from an offset, so a prompt's path from the root is its runs.
#[derive(Debug, Default)]
pub struct PrefixTree {
    /// Per node, its edges by first token.
    nodes: Vec<HashMap<u32, usize>>,
    edges: Vec<Edge>,
    next_content: u64,
}

#[derive(Debug)]
struct Edge {
    tokens: Vec<u32>,
    content: u64,
    offset: u32,
    child: usize,
}

impl PrefixTree {
    /// An empty tree; content ids start at 1.
    pub fn new() -> Self {
        PrefixTree {
            nodes: vec![HashMap::new()],
            edges: Vec::new(),
            next_content: 1,
        }
    }

    fn node(&mut self) -> usize {
        self.nodes.push(HashMap::new());
        self.nodes.len() - 1
    }

    /// Adds `tokens` and returns them as canonical runs: the shared prefix with every earlier
    /// prompt as the content that prompt has there, the rest as new content.
    pub fn insert(&mut self, tokens: &[u32]) -> Vec<Run> {
        self.insert_with(tokens, None)
    }

    /// Like [`PrefixTree::insert`], but when `answer` = `(start, len, content)` names tokens
    /// `start..start + len` as an earlier request's generated answer (content `content` from
    /// offset 0), those tokens get that content where they are new to the tree, so a cache can
    /// match the answer in a later turn. Where the tree already holds them (another prompt had
    /// the same tokens after the same prefix), its content stays.
    pub fn insert_with(&mut self, tokens: &[u32], answer: Option<(usize, u32, u64)>) -> Vec<Run> {
        let mut runs = Vec::new();
        let (mut node, mut i) = (0usize, 0usize);
        while i < tokens.len() {
            let Some(&e) = self.nodes[node].get(&tokens[i]) else {
                // The rest is new: one edge of new content, or, around an answer that lies
                // wholly in it, new content, the answer's, new content.
                let mut cuts = vec![(i, None)];
                if let Some((start, len, content)) = answer {
                    let end = start.saturating_add(len as usize);
                    if len > 0 && start >= i && end <= tokens.len() {
                        cuts.push((start, Some(content)));
                        cuts.push((end, None));
                    }
                }
                for (k, &(from, content)) in cuts.iter().enumerate() {
                    let to = cuts.get(k + 1).map_or(tokens.len(), |c| c.0);
                    if from == to {
                        continue;
                    }
                    let content = content.unwrap_or_else(|| {
                        self.next_content += 1;
                        self.next_content - 1
                    });
                    let child = self.node();
                    self.edges.push(Edge {
                        tokens: tokens[from..to].to_vec(),
                        content,
                        offset: 0,
                        child,
                    });
                    self.nodes[node].insert(tokens[from], self.edges.len() - 1);
                    runs.push(Run::new(content, 0, (to - from) as u32));
                    node = child;
                }
                break;
            };
            let rest = &tokens[i..];
            let edge = &self.edges[e];
            let l = edge
                .tokens
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            let (content, offset) = (edge.content, edge.offset);
            runs.push(Run::new(content, offset, l as u32));
            i += l;
            if l == self.edges[e].tokens.len() {
                node = self.edges[e].child;
                continue;
            }
            // Diverges inside the edge: split it at `l`; the tail keeps its content, `l` on.
            let mid = self.node();
            let tail_tokens = self.edges[e].tokens.split_off(l);
            let tail = Edge {
                tokens: tail_tokens,
                content,
                offset: offset + l as u32,
                child: self.edges[e].child,
            };
            self.edges[e].child = mid;
            self.edges.push(tail);
            let t = self.edges.len() - 1;
            let first = self.edges[t].tokens[0];
            self.nodes[mid].insert(first, t);
            node = mid;
        }
        canonicalize(runs)
    }
}

/// Imports a token-id request log read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let mut tally = Tally::new(opts);
    let mut tree = PrefixTree::new();
    let mut sessions: HashMap<String, u64> = HashMap::new();
    let mut requests = Vec::new();
    super::jsonl_records(
        input,
        name,
        &mut tally,
        |o, id| parse(o).map(|r| (id, r)),
        |(id, (arrival_ns, tokens, output_len, session))| {
            let prompt = tree.insert(&tokens);
            let mut r = Request::new(id, arrival_ns, prompt, output_len);
            if let Some(s) = session {
                let n = sessions.len() as u64;
                r.session = Some(*sessions.entry(s).or_insert(n));
            }
            requests.push(r);
        },
    )?;
    sort_by_arrival(&mut requests);
    Ok((
        Trace {
            meta: TraceMeta::new("import:token-ids"),
            requests,
        },
        tally.report,
    ))
}

/// One record: arrival (ns), prompt tokens, output length, session.
type Record = (u64, Vec<u32>, u32, Option<String>);

fn parse(o: &Obj) -> std::result::Result<Record, InputError> {
    let t = o.f64("timestamp")?;
    if !(0.0..1.8e10).contains(&t) {
        return Err(o.err("timestamp", format!("{t} is not a time in seconds from 0")));
    }
    let key = ["prompt_token_ids", "token_ids", "input_ids"]
        .into_iter()
        .find(|k| o.get(k).is_some())
        .unwrap_or("prompt_token_ids");
    let ids = o.u64_array(key)?;
    if ids.is_empty() {
        return Err(o.err(key, "empty prompt"));
    }
    if ids.len() > u32::MAX as usize {
        return Err(o.err(key, "more tokens than a prompt can hold"));
    }
    let tokens = ids
        .iter()
        .enumerate()
        .map(|(i, v)| {
            u32::try_from(*v).map_err(|_| o.err(key, format!("element {i}: {v} is not a token id")))
        })
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    let out_key = if o.get("output_len").is_some() || o.get("max_tokens").is_none() {
        "output_len"
    } else {
        "max_tokens"
    };
    let output_len = o.u32(out_key)?;
    if output_len == 0 {
        return Err(o.err(out_key, "must be at least 1"));
    }
    let session = match o.get("session_id") {
        None => None,
        Some(v) if v.is_string() => v.as_str().map(str::to_string),
        Some(v) if v.is_u64() => Some(v.to_string()),
        Some(v) => {
            return Err(o.err(
                "session_id",
                format!("expected a string or an integer, found {}", show(v)),
            ));
        }
    };
    Ok(((t * 1e9).round() as u64, tokens, output_len, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::content::for_each_block;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, temp_file};

    #[test]
    fn prompts_share_exactly_their_common_token_prefix() {
        let mut t = PrefixTree::new();
        let a = t.insert(&[1, 2, 3, 4, 5]);
        let b = t.insert(&[1, 2, 3, 9]);
        let c = t.insert(&[1, 2, 3, 4, 5, 6]);
        let d = t.insert(&[7]);
        assert_eq!(a, vec![Run::new(1, 0, 5)]);
        // b shares 3 tokens of a's content, then its own.
        assert_eq!(b, vec![Run::new(1, 0, 3), Run::new(2, 0, 1)]);
        // c is a, then one new token (the split edge keeps a's content: one run again).
        assert_eq!(c, vec![Run::new(1, 0, 5), Run::new(3, 0, 1)]);
        assert_eq!(d, vec![Run::new(4, 0, 1)]);
        // The same prompt again is the same runs.
        assert_eq!(t.insert(&[1, 2, 3, 9]), b);
    }

    #[test]
    fn an_answer_new_to_the_tree_gets_the_answers_content() {
        let mut t = PrefixTree::new();
        let out = crate::trace::output_content(0);
        assert_eq!(t.insert(&[1, 2, 3]), vec![Run::new(1, 0, 3)]);
        // Tokens 3..5 are the answer, new here: its content, then new content for the rest.
        let b = t.insert_with(&[1, 2, 3, 7, 8, 9], Some((3, 2, out)));
        assert_eq!(
            b,
            vec![Run::new(1, 0, 3), Run::new(out, 0, 2), Run::new(2, 0, 1)]
        );
        // A later prompt through the same tokens gets the same content.
        let c = t.insert(&[1, 2, 3, 7, 8, 4]);
        assert_eq!(c[..2], b[..2]);
        // An answer the tree already holds keeps the tree's content; one beyond the prompt,
        // or starting before the new part, is ignored.
        assert_eq!(
            t.insert_with(&[1, 2, 3, 7, 8], Some((3, 2, out + 1))),
            b[..2]
        );
        assert_eq!(
            t.insert_with(&[5, 6], Some((1, 2, out))),
            vec![Run::new(4, 0, 2)]
        );
        assert_eq!(
            t.insert_with(&[1, 2, 6, 6], Some((1, 2, out))),
            vec![Run::new(1, 0, 2), Run::new(5, 0, 2)]
        );
    }

    /// Full blocks of `runs` at `block` tokens: their chained keys.
    fn keys(runs: &[Run], block: u32) -> Vec<u64> {
        let mut k = Vec::new();
        for_each_block(runs.iter().copied(), block, false, |_, h| k.push(h));
        k
    }

    #[test]
    fn a_shared_1000_token_system_prompt_hits_in_whole_blocks_and_chunks() {
        // Three requests: a 1,000-token system prompt, then 300, 40 and 700 tokens of their own.
        let system: Vec<u64> = (0..1000).map(|i| 1000 + i).collect();
        let line = |ts: f64, own: std::ops::Range<u64>, out: u32| {
            let ids: Vec<u64> = system.iter().copied().chain(own).collect();
            serde_json::json!({"timestamp": ts, "prompt_token_ids": ids, "output_len": out})
                .to_string()
        };
        let text = [
            line(0.0, 50_000..50_300, 8),
            line(0.5, 60_000..60_040, 4),
            line(1.0, 70_000..70_700, 2),
        ]
        .join("\n");
        let p = temp_file("log.jsonl", &text);
        let (t, rep) = import_file(Format::TokenIds, &p, true).unwrap();
        assert_eq!((rep.read, rep.imported), (3, 3));
        let lens: Vec<u32> = t.requests.iter().map(|r| r.input_len).collect();
        assert_eq!(lens, [1300, 1040, 1700]);
        // At block size 16 the shared part is 62 whole blocks (992 tokens): exactly those keys
        // agree between any two requests; at chunk size 256, 3 chunks (768 tokens).
        for (block, shared) in [(16u32, 62usize), (256, 3)] {
            let k: Vec<Vec<u64>> = t.requests.iter().map(|r| keys(&r.prompt, block)).collect();
            for (x, y) in [(0, 1), (0, 2), (1, 2)] {
                let common = k[x].iter().zip(&k[y]).take_while(|(a, b)| a == b).count();
                assert_eq!(common, shared, "block {block}: {x} vs {y}");
            }
        }
        // Replayed: vLLM's prefix cache finds the 992 tokens for the second and third request;
        // LMCache alone (prefix caching off) finds the 768.
        let (gpu, cpu) = super::super::testutil::replayed_hits(&t);
        assert_eq!(gpu, [0, 992, 992]);
        assert_eq!(cpu, [0, 768, 768]);
    }

    #[test]
    fn bad_lines_name_file_line_and_field_and_counts_reconcile() {
        let text = "\
{\"timestamp\": 0, \"prompt_token_ids\": [1, 2], \"output_len\": 3, \"session_id\": \"a\"}
{\"timestamp\": 1, \"prompt_token_ids\": [1, -2], \"output_len\": 3}
{\"timestamp\": 2, \"prompt_token_ids\": [], \"output_len\": 3}
{\"timestamp\": 3, \"input_ids\": [1, 2, 5], \"max_tokens\": 2, \"session_id\": \"a\"}
{\"timestamp\": 4, \"prompt_token_ids\": [1], \"output_len\": 0}
not json
{\"timestamp\": 5, \"prompt_token_ids\": [4294967296], \"output_len\": 1}
{\"timestamp\": 6, \"prompt_token_ids\": [1], \"output_len\": 1, \"session_id\": [1]}
";
        let p = temp_file("bad.jsonl", text);
        let (t, rep) = import_file(Format::TokenIds, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (8, 2, 6));
        assert_eq!(t.requests[0].session, t.requests[1].session);
        assert_eq!(t.requests[1].output_len, 2);
        let e = import_file(Format::TokenIds, &p, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.jsonl:2: prompt_token_ids"), "{e}");
        let shown = rep.to_string();
        for want in [
            "bad.jsonl:3: prompt_token_ids: empty prompt",
            "bad.jsonl:5: output_len: must be at least 1",
            "bad.jsonl:6",
        ] {
            assert!(shown.contains(want), "{want} in {shown}");
        }
    }
}

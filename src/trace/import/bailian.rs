//! Qwen Bailian usage traces (alibaba-edu/qwen-bailian-usagetraces-anon,
//! `qwen_*_blksz_16.jsonl`): one JSON object per line with `chat_id`, `parent_chat_id` (-1 for
//! the first turn of a conversation), `timestamp` (seconds from the trace start), `input_length`,
//! `output_length`, `type` (text, search, image, file, api, thinking, ...), `turn` and
//! `hash_ids`.
//!
//! `hash_ids` name the prompt's blocks of 16 tokens, the last partial block with an id of its
//! own, as in Mooncake: block i becomes the run `(hash_ids[i], 0, its length)` (see
//! [`super::mooncake::parse_hashed`]). A request's session is the `chat_id` of its
//! conversation's first turn, found by following `parent_chat_id` through earlier records; when
//! the parent was never seen (the trace is a two-hour window), the parent's id stands for the
//! conversation. The counts of `type` values among the imported requests are kept in the
//! parameters.

use super::mooncake::parse_hashed;
use super::{ImportOptions, ImportReport, Tally, counts_json, sort_by_arrival};
use crate::error::{Error, InputError, Result};
use crate::trace::{Trace, TraceMeta};
use crate::util::json::{Obj, nonblank_lines, parse_object, show};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

/// Bailian's block size in tokens.
pub const BLOCK: u32 = 16;

/// Imports a Bailian JSONL trace read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let block = opts.block_size.unwrap_or(BLOCK);
    if block == 0 {
        return Err(Error::Config(
            "the block size must be at least 1 token".into(),
        ));
    }
    let mut tally = Tally::new(opts);
    let mut requests = Vec::new();
    // chat_id -> the chat_id of its conversation's first turn.
    let mut roots: HashMap<u64, u64> = HashMap::new();
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    for line in nonblank_lines(input, name) {
        let (lineno, line) = line?;
        let id = tally.report.read;
        let parsed = line
            .and_then(|line| parse_object(&line, name, lineno))
            .and_then(|m| {
                let o = Obj::new(&m, name, lineno);
                let r = parse_hashed(&o, id, block, "timestamp", 1e9)?;
                let chat = o.u64("chat_id")?;
                let parent = parent_id(&o)?;
                let kind = o.opt_str("type")?.map(str::to_string);
                Ok((r, chat, parent, kind))
            });
        if let Some((mut r, chat, parent, kind)) = tally.record(parsed)? {
            let session = match parent {
                None => chat,
                Some(p) => roots.get(&p).copied().unwrap_or(p),
            };
            roots.insert(chat, session);
            r.session = Some(session);
            if let Some(k) = kind {
                *types.entry(k).or_default() += 1;
            }
            requests.push(r);
        }
    }
    sort_by_arrival(&mut requests);
    let mut meta = TraceMeta::new("import:bailian");
    meta.block_size = Some(block);
    if !types.is_empty() {
        meta.params.insert("types".into(), counts_json(&types));
    }
    Ok((Trace { meta, requests }, tally.report))
}

/// `parent_chat_id`: `None` for a first turn (-1), else the parent's `chat_id`.
fn parent_id(o: &Obj) -> std::result::Result<Option<u64>, InputError> {
    const KEY: &str = "parent_chat_id";
    let v = o.req(KEY)?;
    match (v.as_i64(), crate::util::json::as_u64(v)) {
        (Some(-1), _) => Ok(None),
        (_, Some(p)) => Ok(Some(p)),
        _ => Err(o.err(KEY, format!("expected -1 or a chat_id, found {}", show(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Run;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, temp_bytes, temp_file};

    const GOOD: &str = "\
{\"chat_id\": 0, \"parent_chat_id\": -1, \"timestamp\": 0.0, \"input_length\": 40, \"output_length\": 12, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1, 2]}
{\"chat_id\": 1, \"parent_chat_id\": -1, \"timestamp\": 0.25, \"input_length\": 16, \"output_length\": 3, \"type\": \"search\", \"turn\": 1, \"hash_ids\": [3]}
{\"chat_id\": 3, \"parent_chat_id\": 0, \"timestamp\": 2.5, \"input_length\": 70, \"output_length\": 9, \"type\": \"text\", \"turn\": 2, \"hash_ids\": [0, 1, 4, 5, 6]}
{\"chat_id\": 4, \"parent_chat_id\": 99, \"timestamp\": 1.125, \"input_length\": 5, \"output_length\": 1, \"type\": \"image\", \"turn\": 3, \"hash_ids\": [7]}

{\"chat_id\": 5, \"parent_chat_id\": 3, \"timestamp\": 4, \"input_length\": 90, \"output_length\": 30, \"type\": \"text\", \"turn\": 3, \"hash_ids\": [0, 1, 4, 5, 8, 9]}
{\"chat_id\": 6, \"parent_chat_id\": 4, \"timestamp\": 3.0, \"input_length\": 17, \"output_length\": 2, \"type\": \"image\", \"turn\": 4, \"hash_ids\": [7, 10]}
";

    #[test]
    fn maps_fields_blocks_and_sessions() {
        let p = temp_file("qwen_traceA_blksz_16.jsonl", GOOD);
        let (t, rep) = import_file(Format::Bailian, &p, true).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (6, 6, 0));
        assert_eq!(t.meta.source, "import:bailian");
        assert_eq!(t.meta.block_size, Some(16));
        // Sorted by arrival (seconds -> ns); ids are record order, blank lines not counted.
        let got: Vec<(u64, u64, Option<u64>)> = t
            .requests
            .iter()
            .map(|r| (r.id, r.arrival_ns, r.session))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, Some(0)),
                (1, 250_000_000, Some(1)),
                // Parent 99 never seen: the parent stands for the conversation.
                (3, 1_125_000_000, Some(99)),
                (2, 2_500_000_000, Some(0)),
                (5, 3_000_000_000, Some(99)),
                // Turn 3 of conversation 0, through turn 2 (chat 3).
                (4, 4_000_000_000, Some(0)),
            ]
        );
        let r = &t.requests[3];
        assert_eq!((r.input_len, r.output_len), (70, 9));
        assert_eq!(
            r.prompt,
            vec![
                Run::new(0, 0, 16),
                Run::new(1, 0, 16),
                Run::new(4, 0, 16),
                Run::new(5, 0, 16),
                Run::new(6, 0, 6)
            ]
        );
        assert_eq!(
            t.meta.params["types"],
            serde_json::json!({"image": 2, "search": 1, "text": 3})
        );
    }

    #[test]
    fn malformed_lines_are_named_counted_or_fatal_when_strict() {
        let p = temp_file(
            "bad.jsonl",
            "{\"chat_id\": 0, \"parent_chat_id\": -1, \"timestamp\": 0.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             {\"chat_id\": 1, \"parent_chat_id\": \"root\", \"timestamp\": 1.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             {\"chat_id\": 2, \"parent_chat_id\": -1, \"timestamp\": -1.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             {\"chat_id\": 3, \"parent_chat_id\": -1, \"timestamp\": 1.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0]}\n\
             {\"parent_chat_id\": -1, \"timestamp\": 1.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             {\"chat_id\": 5, \"parent_chat_id\": -2, \"timestamp\": 1.0, \"input_length\": 20, \"output_length\": 5, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             {\"chat_id\": 6, \"parent_chat_id\": -1, \"timestamp\": 1.0, \"input_length\": 20, \"output_length\": 5, \"type\": 7, \"turn\": 1, \"hash_ids\": [0, 1]}\n\
             [1, 2]\n",
        );
        let (t, rep) = import_file(Format::Bailian, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (8, 1, 7));
        assert_eq!(rep.skipped.get("parent_chat_id"), Some(&2));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        assert_eq!(rep.skipped.get("type"), Some(&1));
        let name = p.display().to_string();
        let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                format!("{name}:2: parent_chat_id: expected -1 or a chat_id, found \"root\""),
                format!("{name}:3: timestamp: negative time -1"),
                format!(
                    "{name}:4: hash_ids: 1 ids for input_length 20, expected 2 (one per 16-token block)"
                ),
                format!("{name}:5: chat_id: missing"),
                format!("{name}:6: parent_chat_id: expected -1 or a chat_id, found -2"),
            ]
        );
        let e = import_file(Format::Bailian, &p, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{name}:2: parent_chat_id: expected -1 or a chat_id, found \"root\"")
        );
    }

    #[test]
    fn invalid_utf8_line_is_skipped_and_counted() {
        let mut lines: Vec<Vec<u8>> = GOOD.lines().map(|l| l.as_bytes().to_vec()).collect();
        // Line 3 (chat 3, a second turn of chat 0) gets a Latin-1 byte in its type.
        let l = String::from_utf8(lines[2].clone()).unwrap();
        lines[2] = l.replace("\"text\"", "\"t\u{1}xt\"").into_bytes();
        let k = lines[2].iter().position(|b| *b == 1).unwrap();
        lines[2][k] = 0xe9;
        let bytes = lines.join(&b"\n"[..]);
        let p = temp_bytes("u.jsonl", &bytes);
        let (t, rep) = import_file(Format::Bailian, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (6, 5, 1));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        assert!(t.requests.iter().all(|r| r.id != 2));
        let name = p.display().to_string();
        let want = format!("{name}:3: not valid UTF-8: byte 0xe9 at column {}", k + 1);
        assert_eq!(rep.examples[0].to_string(), want);
        let e = import_file(Format::Bailian, &p, true).unwrap_err();
        assert_eq!(e.to_string(), want);
    }

    #[test]
    fn block_size_option_and_zero() {
        let p = temp_file("b.jsonl", GOOD);
        let opts = ImportOptions {
            block_size: Some(0),
            ..Default::default()
        };
        let mut input = std::io::BufReader::new(std::fs::File::open(&p).unwrap());
        assert!(import(&mut input, "b", &opts).is_err());
        let opts = ImportOptions {
            block_size: Some(64),
            ..Default::default()
        };
        let (t, rep) = super::super::import(Format::Bailian, &p, &opts).unwrap();
        // With 64-token blocks only the one-block prompts have the right number of ids.
        assert_eq!(rep.imported, 2);
        assert_eq!(t.meta.block_size, Some(64));
    }
}

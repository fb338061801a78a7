//! Mooncake traces (FAST'25 release): one JSON object per line with `timestamp` (ms from the
//! trace start), `input_length`, `output_length` and `hash_ids`.
//!
//! `hash_ids[i]` names the i-th block of 512 tokens *given everything before it* (the ids are
//! chained: the same id always follows the same predecessor), and the last, partial block has an
//! id of its own. Block i becomes the run `(hash_ids[i], 0, its length)`, so two prompts share
//! exactly the blocks whose ids agree, and a partial block shares its tokens with a longer block
//! of the same id up to its own length.

use super::{ImportOptions, ImportReport, Tally, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::{Request, Run, Trace, TraceMeta};
use crate::util::json::Obj;
use std::io::BufRead;

/// Mooncake's block size in tokens.
pub const BLOCK: u32 = 512;

/// Imports Mooncake JSONL read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let block = opts.block_size.unwrap_or(BLOCK);
    let mut tally = Tally::new(opts);
    let mut requests = Vec::new();
    super::jsonl_records(
        input,
        name,
        &mut tally,
        |o, id| parse_hashed(o, id, block, "timestamp", 1e6),
        |r| requests.push(r),
    )?;
    sort_by_arrival(&mut requests);
    let mut meta = TraceMeta::new("import:mooncake");
    meta.block_size = Some(block);
    Ok((Trace { meta, requests }, tally.report))
}

/// Parses a record that describes its prompt as chained block ids (Mooncake, Bailian):
/// `input_length`, `output_length`, `hash_ids` and a time field `time_key` in units of
/// `ns_per_unit` nanoseconds.
pub fn parse_hashed(
    o: &Obj,
    id: u64,
    block: u32,
    time_key: &str,
    ns_per_unit: f64,
) -> std::result::Result<Request, InputError> {
    let t = o.f64(time_key)?;
    if t < 0.0 {
        return Err(o.err(time_key, format!("negative time {t}")));
    }
    let arrival_ns = (t * ns_per_unit).round();
    if arrival_ns >= 1.8e19 {
        return Err(o.err(time_key, format!("{t:e} is too large")));
    }
    let input_len = o.u32("input_length")?;
    if input_len == 0 {
        return Err(o.err("input_length", "must be at least 1"));
    }
    let output_len = o.u32("output_length")?;
    if output_len == 0 {
        return Err(o.err("output_length", "must be at least 1"));
    }
    let hashes = o.u64_array("hash_ids")?;
    let want = input_len.div_ceil(block) as usize;
    if hashes.len() != want {
        return Err(o.err(
            "hash_ids",
            format!(
                "{} ids for input_length {input_len}, expected {want} (one per {block}-token block)",
                hashes.len()
            ),
        ));
    }
    if let Some(h) = hashes.iter().find(|h| **h >= super::OUTPUT_CONTENT_BIT) {
        return Err(o.err("hash_ids", format!("id {h} is 2^63 or larger")));
    }
    let mut prompt = Vec::with_capacity(hashes.len());
    for (k, h) in hashes.iter().enumerate() {
        // Each block is its own content starting at offset 0, so a repeated id is a repeated
        // block and never merges with its neighbour.
        let len = (input_len - k as u32 * block).min(block);
        prompt.push(Run::new(*h, 0, len));
    }
    Ok(Request::new(id, arrival_ns as u64, prompt, output_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, shared_trace, temp_bytes, temp_file};
    use crate::trace::stats::reuse_fraction;

    #[test]
    fn imports_blocks_as_runs_and_shares_what_ids_share() {
        let p = temp_file(
            "m.jsonl",
            "{\"timestamp\": 0, \"input_length\": 1100, \"output_length\": 5, \"hash_ids\": [7, 8, 9]}\n\
             {\"timestamp\": 3000, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [7, 10]}\n\
             {\"timestamp\": 1500, \"input_length\": 1024, \"output_length\": 2, \"hash_ids\": [7, 8]}\n",
        );
        let (t, rep) = import_file(Format::Mooncake, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (3, 3, 0));
        // Sorted by arrival: line 3 (1.5 s) comes before line 2 (3 s).
        let ids: Vec<u64> = t.requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![0, 2, 1]);
        assert_eq!(t.requests[0].arrival_ns, 0);
        assert_eq!(t.requests[1].arrival_ns, 1_500_000_000);
        assert_eq!(
            t.requests[0].prompt,
            vec![Run::new(7, 0, 512), Run::new(8, 0, 512), Run::new(9, 0, 76)]
        );
        // Request 2 shares blocks 7 and 8 (1024 tokens) with request 0: at 512-token blocks
        // that is its whole prompt; request 1 shares block 7 only (512 of 600 tokens).
        // Reuse = (1024 + 512) / (1100 + 1024 + 600).
        let f = reuse_fraction(&t, 512);
        assert!((f - 1536.0 / 2724.0).abs() < 1e-12, "{f}");
    }

    #[test]
    fn malformed_lines_are_named_counted_or_fatal_when_strict() {
        let p = temp_file(
            "bad.jsonl",
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}\n\
             {\"timestamp\": \"x\", \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}\n\
             {\"timestamp\": 1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1]}\n\
             not json\n\
             {\"timestamp\": 1, \"input_length\": 10, \"output_length\": 5}\n",
        );
        let (t, rep) = import_file(Format::Mooncake, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (5, 1, 4));
        assert_eq!(rep.skipped.get("hash_ids"), Some(&2));
        assert_eq!(rep.skipped.get("timestamp"), Some(&1));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        let name = p.display().to_string();
        assert_eq!(
            rep.examples[0].to_string(),
            format!("{name}:2: timestamp: expected a number, found \"x\"")
        );
        assert!(
            rep.examples[1]
                .to_string()
                .contains(":3: hash_ids: 1 ids for input_length 600, expected 2")
        );
        let e = import_file(Format::Mooncake, &p, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{name}:2: timestamp: expected a number, found \"x\"")
        );
    }

    #[test]
    fn invalid_utf8_line_is_skipped_and_counted() {
        let good =
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}";
        let mut bytes = Vec::new();
        bytes.extend_from_slice(good.as_bytes());
        bytes.extend_from_slice(
            b"\r\n{\"timestamp\": 1, \"input_length\": 10, \"tag\": \"\xff\"}\r\n\r\n",
        );
        bytes.extend_from_slice(good.as_bytes());
        bytes.extend_from_slice(b"\n");
        let p = temp_bytes("u.jsonl", &bytes);
        let (t, rep) = import_file(Format::Mooncake, &p, false).unwrap();
        assert_eq!(t.requests.len(), 2);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (3, 2, 1));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        let name = p.display().to_string();
        let want = format!("{name}:2: not valid UTF-8: byte 0xff at column 46");
        assert_eq!(rep.examples[0].to_string(), want);
        let e = import_file(Format::Mooncake, &p, true).unwrap_err();
        assert!(matches!(e, crate::error::Error::Input(_)), "{e:?}");
        assert_eq!(e.to_string(), want);
    }

    #[test]
    fn huge_timestamps_are_refused_not_wrapped() {
        // ms -> ns: 1.7e13 ms still fits in u64 ns, 1.8e13 ms (1.8e19 ns) is refused.
        let p = temp_file(
            "big.jsonl",
            "{\"timestamp\": 1.7e13, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n\
             {\"timestamp\": 1.8e13, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n\
             {\"timestamp\": 1e300, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n",
        );
        let (t, rep) = import_file(Format::Mooncake, &p, false).unwrap();
        assert_eq!(
            (rep.imported, rep.skipped.get("timestamp")),
            (1, Some(&2)),
            "{rep}"
        );
        assert_eq!(t.requests[0].arrival_ns, 17_000_000_000_000_000_000);
        assert!(
            rep.examples[0]
                .to_string()
                .ends_with(":2: timestamp: 1.8e13 is too large"),
            "{}",
            rep.examples[0]
        );
    }

    #[test]
    fn real_traces_reuse_matches_the_published_figures() {
        for (file, n, want) in [
            ("mooncake_conversation_trace.jsonl", 12_031, 0.374),
            ("mooncake_synthetic_trace.jsonl", 3_993, 0.651),
        ] {
            let Some(p) = shared_trace(file) else {
                return;
            };
            let (t, rep) = import_file(Format::Mooncake, &p, true).unwrap();
            assert_eq!(rep.imported, n);
            assert_eq!(t.requests.len(), n as usize);
            let f = reuse_fraction(&t, 512);
            assert!((f - want).abs() < 0.0005, "{file}: {f}");
        }
    }
}

//! BurstGPT traces (HPMLL/BurstGPT): CSV with columns found by name.
//!
//! v1.0/v1.1 (`BurstGPT_1.csv`, `BurstGPT_2.csv`): `Timestamp,Model,Request tokens,Response
//! tokens,Total tokens,Log Type`; v2.0 (`BurstGPT_3.csv`) adds `Session ID` and `Elapsed time`.
//! `Timestamp` is in seconds (an integer in v1.x, a float in v2.0) from an arbitrary origin, so
//! arrivals are made relative to the earliest timestamp in the file (kept in the parameters as
//! `start_timestamp_s`). `Request tokens` is the prompt length and `Response tokens` the output
//! length; a row with 0 response tokens is a request that failed in production and is counted
//! as skipped. The trace carries no content information, so every prompt is unique content:
//! request `i`'s prompt is the single run `(i, 0, Request tokens)`.
//!
//! `Session ID` (blank on API-log rows) becomes the request's session: an integer as it is, any
//! other text (the real files hold UUIDs) through a fixed hash. `Elapsed time` measured the
//! production service, not a system kvreplay models, and is not kept. The counts of `Model` and
//! `Log Type` values among the imported requests are kept in the parameters.

use super::csvutil::{CsvTable, parse_f64_field, parse_u32_field};
use super::{ImportOptions, ImportReport, Tally, counts_json, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::content::mix;
use crate::trace::{Request, Run, Trace, TraceMeta};
use std::collections::BTreeMap;
use std::io::BufRead;

/// The reason under which failed rows are counted.
pub const FAILED: &str = "failed request (Response tokens = 0)";

/// Timestamps from this many seconds on are refused (about 570 years: the span then still fits
/// in u64 nanoseconds).
const MAX_SECONDS: f64 = 1.8e10;

/// One well-formed row.
struct Row {
    id: u64,
    t: f64,
    input_len: u32,
    output_len: u32,
    session: Option<u64>,
    model: Option<String>,
    log_type: Option<String>,
}

/// Imports a BurstGPT CSV read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let mut table = CsvTable::new(input, name)?;
    let ts = table.column(&["Timestamp"])?;
    let req = table.column(&["Request tokens"])?;
    let resp = table.column(&["Response tokens"])?;
    let model = table.find(&["Model"]);
    let log_type = table.find(&["Log Type"]);
    let session = table.find(&["Session ID", "SessionID"]);
    let mut tally = Tally::new(opts);
    let mut rows: Vec<Row> = Vec::new();
    // The earliest timestamp among rows that parsed, failed requests included, so that the
    // imported requests keep their place on the original timeline.
    let mut start = f64::INFINITY;
    while let Some((line, rec)) = table.next_record()? {
        let id = tally.report.read;
        let file = table.name();
        let parsed = rec.and_then(|rec| {
            let t = parse_f64_field(&rec, ts, "Timestamp", file, line)?;
            if t < 0.0 {
                return Err(InputError::new(
                    file,
                    line,
                    "Timestamp",
                    format!("negative time {t}"),
                ));
            }
            if t >= MAX_SECONDS {
                return Err(InputError::new(
                    file,
                    line,
                    "Timestamp",
                    format!("{t:e} is too large"),
                ));
            }
            let input_len = parse_u32_field(&rec, req, "Request tokens", file, line)?;
            let output_len = parse_u32_field(&rec, resp, "Response tokens", file, line)?;
            let text = |col: Option<usize>| {
                col.and_then(|c| rec.get(c))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let session = text(session).map(|s| session_id(&s));
            Ok(Row {
                id,
                t,
                input_len,
                output_len,
                session,
                model: text(model),
                log_type: text(log_type),
            })
        });
        match parsed {
            Ok(row) if row.output_len == 0 => {
                start = start.min(row.t);
                tally.skip_known(FAILED);
            }
            Ok(row) if row.input_len == 0 => {
                let e = InputError::new(file, line, "Request tokens", "must be at least 1");
                tally.record::<()>(Err(e))?;
            }
            other => {
                if let Some(row) = tally.record(other)? {
                    start = start.min(row.t);
                    rows.push(row);
                }
            }
        }
    }
    let mut models: BTreeMap<String, u64> = BTreeMap::new();
    let mut log_types: BTreeMap<String, u64> = BTreeMap::new();
    let mut requests = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(m) = row.model {
            *models.entry(m).or_default() += 1;
        }
        if let Some(l) = row.log_type {
            *log_types.entry(l).or_default() += 1;
        }
        // 0 <= start <= t < MAX_SECONDS, so the difference fits in u64 nanoseconds.
        let arrival_ns = ((row.t - start) * 1e9).round() as u64;
        let prompt = vec![Run::new(row.id, 0, row.input_len)];
        let mut r = Request::new(row.id, arrival_ns, prompt, row.output_len);
        r.session = row.session;
        requests.push(r);
    }
    sort_by_arrival(&mut requests);
    let mut meta = TraceMeta::new("import:burstgpt");
    if start.is_finite() {
        meta.params
            .insert("start_timestamp_s".into(), serde_json::json!(start));
    }
    if !models.is_empty() {
        meta.params.insert("models".into(), counts_json(&models));
    }
    if !log_types.is_empty() {
        meta.params
            .insert("log_types".into(), counts_json(&log_types));
    }
    Ok((Trace { meta, requests }, tally.report))
}

/// A session id from BurstGPT's `Session ID`: an integer as it is, any other text hashed with
/// fixed constants (the same text gives the same id on every platform and in every run).
pub fn session_id(s: &str) -> u64 {
    if let Ok(v) = s.parse::<u64>() {
        return v;
    }
    let mut h = mix(0x5e55_1011_d0c5_a17e, s.len() as u64);
    for chunk in s.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(word));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, temp_file};
    use crate::trace::output_content;

    #[test]
    fn v1_rows_map_to_requests_relative_to_the_earliest_time() {
        let p = temp_file(
            "BurstGPT_1.csv",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
             45,ChatGPT,1087,230,1317,Conversation log\n\
             5,ChatGPT,472,18,490,Conversation log\n\
             118,GPT-4,417,276,693,API log\n\
             118,ChatGPT,266,0,266,API log\n\
             118,GPT-4,12,7,19,API log\n",
        );
        let (t, rep) = import_file(Format::Burstgpt, &p, true).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (5, 4, 1));
        assert_eq!(rep.skipped.get(FAILED), Some(&1));
        assert!(rep.examples.is_empty());
        // Sorted by time; equal times (the same second) keep file order.
        let ids: Vec<u64> = t.requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 0, 2, 4]);
        let r = &t.requests[1];
        assert_eq!(
            (r.arrival_ns, r.input_len, r.output_len),
            (40_000_000_000, 1087, 230)
        );
        assert_eq!(r.prompt, vec![Run::new(0, 0, 1087)]);
        assert_eq!(r.output_content, output_content(0));
        assert_eq!(r.session, None);
        assert_eq!(t.requests[0].arrival_ns, 0);
        assert_eq!(t.requests[3].arrival_ns, 113_000_000_000);
        assert_eq!(t.meta.source, "import:burstgpt");
        assert_eq!(
            t.meta.params["models"],
            serde_json::json!({"ChatGPT": 2, "GPT-4": 2})
        );
        assert_eq!(
            t.meta.params["log_types"],
            serde_json::json!({"API log": 2, "Conversation log": 2})
        );
        assert_eq!(t.meta.params["start_timestamp_s"], serde_json::json!(5.0));
    }

    #[test]
    fn v2_header_in_its_own_order_with_sessions() {
        let p = temp_file(
            "BurstGPT_3.csv",
            "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
             19440110.0,a3f1c9e2-77b0-4f0e-9a51-0c0ffee00001,3.5,ChatGPT,300,40,340,Conversation log\n\
             19440110.5,,1.25,GPT-4,100,20,120,API log\n\
             19440112.25,a3f1c9e2-77b0-4f0e-9a51-0c0ffee00001,2.0,ChatGPT,500,60,560,Conversation log\n\
             19440113.0,42,2.0,ChatGPT,50,6,56,Conversation log\n\
             19440109.0,,0.4,ChatGPT,80,0,80,API log\n",
        );
        let (t, rep) = import_file(Format::Burstgpt, &p, true).unwrap();
        assert_eq!((rep.read, rep.imported), (5, 4));
        assert_eq!(rep.skipped.get(FAILED), Some(&1));
        // The failed row at 19440109.0 is the earliest timestamp in the file.
        let arr: Vec<u64> = t.requests.iter().map(|r| r.arrival_ns).collect();
        assert_eq!(
            arr,
            vec![1_000_000_000, 1_500_000_000, 3_250_000_000, 4_000_000_000]
        );
        let uuid = session_id("a3f1c9e2-77b0-4f0e-9a51-0c0ffee00001");
        assert_eq!(t.requests[0].session, Some(uuid));
        assert_eq!(t.requests[1].session, None);
        assert_eq!(t.requests[2].session, Some(uuid));
        assert_eq!(t.requests[3].session, Some(42));
        assert_ne!(uuid, session_id("a3f1c9e2-77b0-4f0e-9a51-0c0ffee00002"));
        assert_eq!(t.requests[2].input_len, 500);
        assert_eq!(t.requests[2].output_len, 60);
        // Columns in yet another order are found by name.
        let q = temp_file(
            "reordered.csv",
            "Log Type,Response tokens,Timestamp,Request tokens\nAPI log,9,3,7\n",
        );
        let (t, _) = import_file(Format::Burstgpt, &q, true).unwrap();
        assert_eq!((t.requests[0].input_len, t.requests[0].output_len), (7, 9));
    }

    #[test]
    fn malformed_rows_are_named_counted_or_fatal_when_strict() {
        let p = temp_file(
            "bad.csv",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
             5,ChatGPT,472,18,490,Conversation log\n\
             6,ChatGPT,many,18,490,Conversation log\n\
             -7,ChatGPT,472,18,490,Conversation log\n\
             8,ChatGPT,0,18,18,Conversation log\n\
             9,ChatGPT,472,-18,454,Conversation log\n\
             10,ChatGPT,472\n\
             soon,ChatGPT,472,18,490,API log\n\
             11,ChatGPT,4,0,4,API log\n",
        );
        let (t, rep) = import_file(Format::Burstgpt, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (8, 1, 7));
        assert_eq!(rep.skipped.get("Request tokens"), Some(&2));
        assert_eq!(rep.skipped.get("Timestamp"), Some(&2));
        assert_eq!(rep.skipped.get("Response tokens"), Some(&1));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        assert_eq!(rep.skipped.get(FAILED), Some(&1));
        let name = p.display().to_string();
        let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                format!(
                    "{name}:3: Request tokens: expected a non-negative integer, found \"many\""
                ),
                format!("{name}:4: Timestamp: negative time -7"),
                format!("{name}:5: Request tokens: must be at least 1"),
                format!(
                    "{name}:6: Response tokens: expected a non-negative integer, found \"-18\""
                ),
                format!("{name}:7: 3 fields, the header has 6"),
            ]
        );
        let e = import_file(Format::Burstgpt, &p, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{name}:3: Request tokens: expected a non-negative integer, found \"many\"")
        );
        // A failed request is never an error, even when strict.
        let f = temp_file(
            "fails.csv",
            "Timestamp,Request tokens,Response tokens\n1,5,0\n2,5,3\n",
        );
        let (t, rep) = import_file(Format::Burstgpt, &f, true).unwrap();
        assert_eq!((t.requests.len(), rep.read), (1, 2));
        assert_eq!(t.requests[0].arrival_ns, 1_000_000_000);
        let missing = temp_file("m.csv", "Timestamp,Model,Request tokens\n1,x,2\n");
        let e = import_file(Format::Burstgpt, &missing, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}:1: Response tokens: column missing",
                missing.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn crlf_line_numbers_are_exact() {
        let text = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\r\n\
                    5,ChatGPT,472,18,490,Conversation log\r\n\
                    6,ChatGPT,many,18,490,Conversation log\r\n\
                    \r\n\
                    7,ChatGPT,4,0,4,API log\n\
                    8,ChatGPT,472\r\n";
        let p = temp_file("crlf.csv", text);
        let (t, rep) = import_file(Format::Burstgpt, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (4, 1, 3));
        let name = p.display().to_string();
        let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                format!(
                    "{name}:3: Request tokens: expected a non-negative integer, found \"many\""
                ),
                format!("{name}:6: 3 fields, the header has 6"),
            ]
        );
    }

    #[test]
    fn huge_and_odd_timestamps_never_panic() {
        let p = temp_file(
            "odd.csv",
            "Timestamp,Request tokens,Response tokens\n0,1,1\n1e308,1,1\nNaN,1,1\ninf,1,1\n",
        );
        let (t, rep) = import_file(Format::Burstgpt, &p, false).unwrap();
        assert_eq!((rep.imported, rep.skipped_total()), (1, 3));
        assert_eq!(t.requests[0].arrival_ns, 0);
        assert!(
            rep.examples[0]
                .to_string()
                .ends_with(":3: Timestamp: 1e308 is too large"),
            "{}",
            rep.examples[0]
        );
    }
}

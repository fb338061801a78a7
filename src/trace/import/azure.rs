//! Azure LLM inference traces (AzurePublicDataset, 2023 and 2024): CSV with `TIMESTAMP`,
//! `ContextTokens`, `GeneratedTokens`, columns found by name.
//!
//! The traces carry no content information, so every prompt is unique content (no reuse between
//! requests): request `i`'s prompt is the single run `(i, 0, ContextTokens)`. Arrival times are
//! made relative to the earliest timestamp in the file, which is kept in the trace's parameters
//! (`start_unix_ns`, i64 nanoseconds since 1970: a time outside 1677..2262 is an error for its
//! row, and the offset of every row from the earliest then fits in u64 nanoseconds).

use super::csvutil::{CsvTable, parse_u32_field};
use super::{ImportOptions, ImportReport, Tally, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::{Request, Run, Trace, TraceMeta};
use crate::util::time::parse_datetime_ns;
use std::io::BufRead;

/// Imports an Azure LLM inference CSV read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let mut table = CsvTable::new(input, name)?;
    let ts = table.column(&["TIMESTAMP"])?;
    let ctx = table.column(&["ContextTokens"])?;
    let generated = table.column(&["GeneratedTokens"])?;
    let mut tally = Tally::new(opts);
    let mut rows: Vec<(u64, i64, u32, u32)> = Vec::new();
    while let Some((line, rec)) = table.next_record()? {
        let parsed = rec.and_then(|rec| {
            let text = rec.get(ts).unwrap_or("");
            let t = parse_datetime_ns(text)
                .map_err(|m| InputError::new(table.name(), line, "TIMESTAMP", m))?;
            // Kept as i64 nanoseconds since 1970 (as `start_unix_ns`): the offset of any time
            // from the earliest then fits in u64 nanoseconds.
            let t = i64::try_from(t).map_err(|_| {
                InputError::new(
                    table.name(),
                    line,
                    "TIMESTAMP",
                    format!(
                        "{:?} is out of range: times from 1677-09-21 00:12:43.145224192 to \
                         2262-04-11 23:47:16.854775807 UTC are supported",
                        text.trim()
                    ),
                )
            })?;
            let c = parse_u32_field(&rec, ctx, "ContextTokens", table.name(), line)?;
            let g = parse_u32_field(&rec, generated, "GeneratedTokens", table.name(), line)?;
            if c == 0 {
                return Err(InputError::new(
                    table.name(),
                    line,
                    "ContextTokens",
                    "must be at least 1",
                ));
            }
            if g == 0 {
                return Err(InputError::new(
                    table.name(),
                    line,
                    "GeneratedTokens",
                    "must be at least 1",
                ));
            }
            Ok((t, c, g))
        });
        let id = tally.report.read;
        if let Some((t, c, g)) = tally.record(parsed)? {
            rows.push((id, t, c, g));
        }
    }
    let start = rows.iter().map(|r| r.1).min().unwrap_or(0);
    let mut requests: Vec<Request> = rows
        .into_iter()
        // start <= t, both i64: the difference is exact in u64.
        .map(|(id, t, c, g)| Request::new(id, t.abs_diff(start), vec![Run::new(id, 0, c)], g))
        .collect();
    sort_by_arrival(&mut requests);
    let mut meta = TraceMeta::new("import:azure");
    meta.params
        .insert("start_unix_ns".into(), serde_json::json!(start));
    Ok((Trace { meta, requests }, tally.report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, shared_trace, temp_file};
    use crate::trace::stats::reuse_fraction;

    #[test]
    fn imports_rows_relative_to_the_earliest_time() {
        let p = temp_file(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:17:04.0319600,3180,8\n\
             2023-11-16 18:17:03.9799600,4808,10\n",
        );
        let (t, rep) = import_file(Format::Azure, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported), (2, 2));
        assert_eq!(t.requests[0].id, 1);
        assert_eq!(t.requests[0].arrival_ns, 0);
        assert_eq!(t.requests[1].arrival_ns, 52_000_000);
        assert_eq!(t.requests[1].prompt, vec![Run::new(0, 0, 3180)]);
        assert_eq!(reuse_fraction(&t, 16), 0.0);
    }

    #[test]
    fn columns_by_name_and_bad_rows_named() {
        let p = temp_file(
            "b.csv",
            "GeneratedTokens,TIMESTAMP,ContextTokens\n\
             5,2024-05-12 00:00:00.001163+00:00,100\n\
             x,2024-05-12 00:00:01+00:00,100\n\
             5,yesterday,100\n\
             5,2024-05-12 00:00:02+00:00,0\n\
             5,2024-05-12 00:00:02+00:00\n",
        );
        let (t, rep) = import_file(Format::Azure, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!(t.requests[0].input_len, 100);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (5, 1, 4));
        let name = p.display().to_string();
        assert_eq!(
            rep.examples[0].to_string(),
            format!("{name}:3: GeneratedTokens: expected a non-negative integer, found \"x\"")
        );
        assert!(
            rep.examples[1]
                .to_string()
                .starts_with(&format!("{name}:4: TIMESTAMP:"))
        );
        assert!(
            rep.examples[2]
                .to_string()
                .starts_with(&format!("{name}:5: ContextTokens: must be"))
        );
        assert!(
            rep.examples[3]
                .to_string()
                .starts_with(&format!("{name}:6: ")),
            "{}",
            rep.examples[3]
        );
        let missing = temp_file("c.csv", "TIMESTAMP,Tokens\n");
        let e = import_file(Format::Azure, &missing, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ContextTokens: column missing"), "{e}");
    }

    #[test]
    fn crlf_line_numbers_are_exact() {
        // The real Azure files end their lines with CRLF; LF and mixed files must agree.
        let rows = [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            "2023-11-16 18:17:03.9799600,4808,10",
            "2023-11-16 18:17:04.0319600,x,8",
            "",
            "2023-11-16 18:17:04.5,3180,0",
            "2023-11-16 18:17:05.0,3180,8",
        ];
        for (kind, nl) in [("lf", "\n"), ("crlf", "\r\n"), ("mixed", "")] {
            let text = if nl.is_empty() {
                rows.iter()
                    .enumerate()
                    .map(|(i, r)| format!("{r}{}", if i % 2 == 0 { "\r\n" } else { "\n" }))
                    .collect::<String>()
            } else {
                rows.join(nl) + nl
            };
            let p = temp_file(&format!("{kind}.csv"), &text);
            let (t, rep) = import_file(Format::Azure, &p, false).unwrap();
            assert_eq!((rep.read, rep.imported), (4, 2), "{kind}");
            assert_eq!(t.requests.len(), 2);
            let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
            let name = p.display().to_string();
            assert_eq!(
                shown,
                vec![
                    format!(
                        "{name}:3: ContextTokens: expected a non-negative integer, found \"x\""
                    ),
                    format!("{name}:5: GeneratedTokens: must be at least 1"),
                ],
                "{kind}"
            );
            let e = import_file(Format::Azure, &p, true)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{name}:3: ContextTokens:")),
                "{kind}: {e}"
            );
        }
    }

    #[test]
    fn real_crlf_file_names_the_exact_line_of_a_bad_row() {
        let Some(p) = shared_trace("AzureLLMInferenceTrace_code.csv") else {
            return;
        };
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\r\n"),
            "the real file ends its lines with CRLF"
        );
        // Spoil the token count of the row on line 1000 (in memory; the file is read-only).
        let mut rows: Vec<&str> = text.split_inclusive('\n').collect();
        let spoilt = rows[999].replacen(',', ",x", 2).replacen(",x", ",", 1);
        rows[999] = &spoilt;
        let input = rows.concat();
        let opts = super::super::ImportOptions::default();
        let (_, rep) = import(&mut input.as_bytes(), "code.csv", &opts).unwrap();
        assert_eq!((rep.read, rep.skipped_total()), (8_819, 1));
        let e = rep.examples[0].to_string();
        assert!(e.starts_with("code.csv:1000: GeneratedTokens: "), "{e}");
    }

    #[test]
    fn out_of_range_years_are_errors_not_wrapped() {
        let p = temp_file(
            "y.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:17:04.5,3180,8\n\
             0001-01-01 00:00:00,5,5\n\
             9999-12-31 23:59:59,5,5\n\
             2023-11-16 18:17:03.5,4808,10\n",
        );
        let (t, rep) = import_file(Format::Azure, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (4, 2, 2));
        assert_eq!(rep.skipped.get("TIMESTAMP"), Some(&2));
        let name = p.display().to_string();
        assert_eq!(
            rep.examples[0].to_string(),
            format!(
                "{name}:3: TIMESTAMP: \"0001-01-01 00:00:00\" is out of range: times from \
                 1677-09-21 00:12:43.145224192 to 2262-04-11 23:47:16.854775807 UTC are supported"
            )
        );
        assert!(
            rep.examples[1]
                .to_string()
                .starts_with(&format!("{name}:4: TIMESTAMP: "))
        );
        let got: Vec<(u64, u64)> = t.requests.iter().map(|r| (r.id, r.arrival_ns)).collect();
        assert_eq!(got, vec![(3, 0), (0, 1_000_000_000)]);
        assert_eq!(
            t.meta.params["start_unix_ns"],
            serde_json::json!(1_700_158_623_500_000_000i64)
        );
        let e = import_file(Format::Azure, &p, true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{name}:3: TIMESTAMP: ")), "{e}");
        // The whole supported range: the offset of the last from the first is u64::MAX ns.
        let edges = temp_file(
            "edges.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2262-04-11 23:47:16.854775807,1,1\n\
             1677-09-21 00:12:43.145224192,1,1\n\
             2262-04-11 23:47:16.854775808,1,1\n\
             1677-09-21 00:12:43.145224191,1,1\n",
        );
        let (t, rep) = import_file(Format::Azure, &edges, false).unwrap();
        assert_eq!((rep.imported, rep.skipped_total()), (2, 2));
        assert_eq!(t.requests[1].arrival_ns, u64::MAX);
        assert_eq!(t.meta.params["start_unix_ns"], serde_json::json!(i64::MIN));
    }

    #[test]
    fn multibyte_text_in_a_timestamp_is_an_error_not_a_panic() {
        // Found by fuzzing: a character straddling the end of the seconds field.
        let p = temp_file(
            "u.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:0\u{43a}1,5,5\n",
        );
        let (t, rep) = import_file(Format::Azure, &p, false).unwrap();
        assert_eq!((t.requests.len(), rep.skipped_total()), (0, 1));
        assert!(
            rep.examples[0]
                .to_string()
                .contains(":2: TIMESTAMP: expected a time")
        );
    }

    #[test]
    fn real_2023_files_import_whole() {
        for (file, rows) in [
            ("AzureLLMInferenceTrace_code.csv", 8_819),
            ("AzureLLMInferenceTrace_conv.csv", 19_366),
        ] {
            let Some(p) = shared_trace(file) else {
                return;
            };
            let (t, rep) = import_file(Format::Azure, &p, true).unwrap();
            assert_eq!((rep.read, rep.imported), (rows, rows), "{file}");
            assert_eq!(t.requests[0].arrival_ns, 0);
            assert!(
                t.requests
                    .windows(2)
                    .all(|w| w[0].arrival_ns <= w[1].arrival_ns)
            );
        }
    }
}

//! `vllm bench serve --save-result --save-detailed` results (also the older
//! `benchmarks/benchmark_serving.py --save-result`): one JSON object whose per-request arrays
//! `input_lens`, `output_lens`, `ttfts` (s) and `itls` (lists of s) describe each request, with
//! `start_times` (`time.perf_counter()` seconds when each request was sent), `errors` (`""` when
//! it succeeded) and `latencies` (s) in the versions that write them.
//!
//! Index `i` of the arrays is record `i` (errors name it as line `i + 1` and the field as
//! `ttfts[i]`; skipped records are counted by array, `ttfts`, with their first few indices). A request that failed in the live run (a non-empty error, or no output tokens) is
//! counted as skipped. Arrivals are the send times relative to the first send; without
//! `start_times` every request arrives at 0 (noted in the parameters). What the run measured is
//! kept per request ([`crate::trace::Measured`]: TTFT, the inter-chunk gaps and the end-to-end
//! latency, `ttft + sum(itls)` when `latencies` is absent), and every top-level scalar (duration,
//! completed, request_rate, burstiness, max_concurrency, model_id, mean_ttft_ms, ...) is kept in
//! the parameters under `summary`. The file holds no content information, so every prompt is
//! unique content: request `i`'s prompt is the single run `(i, 0, input_lens[i])`.

use super::{ImportOptions, ImportReport, Tally, read_json_document, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::{Measured, Request, Run, Trace, TraceMeta};
use crate::util::json::{as_u64, kind, seconds_to_ns, show};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::BufRead;

/// The reason under which requests that failed in the live run are counted.
pub const FAILED: &str = "failed in the live run";

/// Per-request arrays that must be present.
const REQUIRED: [&str; 4] = ["input_lens", "output_lens", "ttfts", "itls"];
/// Per-request arrays used when present.
const OPTIONAL: [&str; 3] = ["start_times", "errors", "latencies"];

/// The per-request arrays of one result.
struct Columns<'a> {
    input_lens: &'a [Value],
    output_lens: &'a [Value],
    ttfts: &'a [Value],
    itls: &'a [Value],
    start_times: Option<&'a [Value]>,
    errors: Option<&'a [Value]>,
    latencies: Option<&'a [Value]>,
}

/// Imports a vllm bench result read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    let doc = read_json_document(
        input,
        name,
        ": one result per file (split files written with --append-result, one line each)",
    )?;
    let root = match &doc {
        Value::Object(m) => m,
        other => {
            return Err(InputError::new(
                name,
                0,
                "",
                format!("expected a JSON object, found {}", kind(other)),
            )
            .into());
        }
    };
    let cols = columns(root, name)?;
    let n = cols.input_lens.len();
    // Send times are perf_counter readings with an arbitrary origin: rebase on the first send.
    let first_start = cols.start_times.map(|s| {
        s.iter()
            .filter_map(Value::as_f64)
            .filter(|x| x.is_finite())
            .fold(f64::INFINITY, f64::min)
    });
    let mut tally = Tally::new(opts);
    let mut requests = Vec::new();
    for i in 0..n {
        let id = tally.report.read;
        match record(&cols, i, id, first_start, name) {
            Ok(Some(r)) => requests.extend(tally.record(Ok(r))?),
            Ok(None) => tally.skip_known(FAILED),
            Err(e) => {
                tally.record::<Request>(Err(e))?;
            }
        }
    }
    let mut meta = TraceMeta::new("import:vllm-bench");
    if cols.start_times.is_none() {
        meta.params.insert(
            "arrivals".into(),
            Value::String("start_times missing: all requests at t=0".into()),
        );
    }
    let summary: BTreeMap<&String, &Value> = root
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Array(_) | Value::Object(_)))
        .collect();
    let summary: Map<String, Value> = summary
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.params.insert("summary".into(), Value::Object(summary));
    sort_by_arrival(&mut requests);
    Ok((Trace { meta, requests }, tally.report))
}

/// Finds the per-request arrays and checks that they have one entry per request.
fn columns<'a>(root: &'a Map<String, Value>, name: &str) -> Result<Columns<'a>> {
    let get = |key: &str, required: bool| -> Result<Option<&'a [Value]>> {
        match root.get(key) {
            None | Some(Value::Null) if required => Err(InputError::new(
                name,
                0,
                key,
                "missing: per-request results are written by vllm bench serve --save-result \
                 --save-detailed",
            )
            .into()),
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(other) => Err(InputError::new(
                name,
                0,
                key,
                format!("expected an array, found {}", kind(other)),
            )
            .into()),
        }
    };
    let mut req = [&[][..]; 4];
    for (slot, key) in req.iter_mut().zip(REQUIRED) {
        *slot = get(key, true)?.unwrap_or(&[]);
    }
    let mut opt = [None; 3];
    for (slot, key) in opt.iter_mut().zip(OPTIONAL) {
        *slot = get(key, false)?;
    }
    let n = req[0].len();
    let lens = REQUIRED
        .iter()
        .zip(req.iter().map(|a| Some(a.len())))
        .chain(
            OPTIONAL
                .iter()
                .zip(opt.iter().map(|a| a.map(<[Value]>::len))),
        );
    for (key, len) in lens {
        if let Some(len) = len
            && len != n
        {
            return Err(InputError::new(
                name,
                0,
                *key,
                format!("{len} entries, but input_lens has {n}"),
            )
            .into());
        }
    }
    let [input_lens, output_lens, ttfts, itls] = req;
    let [start_times, errors, latencies] = opt;
    Ok(Columns {
        input_lens,
        output_lens,
        ttfts,
        itls,
        start_times,
        errors,
        latencies,
    })
}

/// Entry `i` of an array, or an error naming `key[i]` (the arrays were checked to have the same
/// length, so this never fails in practice).
fn at<'a>(
    arr: &'a [Value],
    key: &str,
    i: usize,
    name: &str,
) -> std::result::Result<&'a Value, InputError> {
    arr.get(i)
        .ok_or_else(|| err(name, i, key, "missing".into()))
}

fn err(name: &str, i: usize, key: &str, msg: String) -> InputError {
    InputError::new(name, i as u64 + 1, format!("{key}[{i}]"), msg)
}

fn tokens(arr: &[Value], key: &str, i: usize, name: &str) -> std::result::Result<u32, InputError> {
    let v = at(arr, key, i, name)?;
    as_u64(v)
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| {
            err(
                name,
                i,
                key,
                format!("expected a token count, found {}", show(v)),
            )
        })
}

fn seconds(v: &Value) -> Option<u64> {
    v.as_f64().and_then(seconds_to_ns)
}

fn secs_at(arr: &[Value], key: &str, i: usize, name: &str) -> std::result::Result<u64, InputError> {
    let v = at(arr, key, i, name)?;
    seconds(v).ok_or_else(|| {
        err(
            name,
            i,
            key,
            format!("expected non-negative seconds, found {}", show(v)),
        )
    })
}

/// Record `i`: `Ok(None)` when the request failed in the live run.
fn record(
    c: &Columns,
    i: usize,
    id: u64,
    first_start: Option<f64>,
    name: &str,
) -> std::result::Result<Option<Request>, InputError> {
    if let Some(errors) = c.errors {
        match at(errors, "errors", i, name)? {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            Value::String(_) => return Ok(None),
            other => {
                return Err(err(
                    name,
                    i,
                    "errors",
                    format!("expected a string, found {}", show(other)),
                ));
            }
        }
    }
    let output_len = tokens(c.output_lens, "output_lens", i, name)?;
    if output_len == 0 {
        return Ok(None);
    }
    let input_len = tokens(c.input_lens, "input_lens", i, name)?;
    if input_len == 0 {
        return Err(err(name, i, "input_lens", "must be at least 1".into()));
    }
    let ttft_ns = secs_at(c.ttfts, "ttfts", i, name)?;
    let itl_ns = match at(c.itls, "itls", i, name)? {
        Value::Array(gaps) => gaps
            .iter()
            .enumerate()
            .map(|(k, g)| {
                seconds(g).ok_or_else(|| {
                    err(
                        name,
                        i,
                        "itls",
                        format!(
                            "element {k}: expected non-negative seconds, found {}",
                            show(g)
                        ),
                    )
                })
            })
            .collect::<std::result::Result<Vec<u64>, InputError>>()?,
        other => {
            return Err(err(
                name,
                i,
                "itls",
                format!("expected an array of seconds, found {}", show(other)),
            ));
        }
    };
    let arrival_ns = match (c.start_times, first_start) {
        (Some(starts), Some(first)) => {
            let v = at(starts, "start_times", i, name)?;
            match v.as_f64().filter(|s| s.is_finite()) {
                Some(s) => seconds_to_ns(s - first).ok_or_else(|| {
                    err(
                        name,
                        i,
                        "start_times",
                        format!("{s} is too far after the first start ({first})"),
                    )
                })?,
                None => {
                    return Err(err(
                        name,
                        i,
                        "start_times",
                        format!("expected a number, found {}", show(v)),
                    ));
                }
            }
        }
        _ => 0,
    };
    let e2e_ns = match c.latencies {
        Some(l) => secs_at(l, "latencies", i, name)?,
        None => itl_ns
            .iter()
            .try_fold(ttft_ns, |acc, g| acc.checked_add(*g))
            .ok_or_else(|| {
                err(
                    name,
                    i,
                    "itls",
                    "ttft plus the gaps is more than 2^64 ns (584 years)".into(),
                )
            })?,
    };
    let mut r = Request::new(id, arrival_ns, vec![Run::new(id, 0, input_len)], output_len);
    r.measured = Measured {
        ttft_ns: Some(ttft_ns),
        e2e_ns: Some(e2e_ns),
        itl_ns,
        itl_mean_ns: None,
        error: None,
    };
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::{import_file, temp_file};
    use crate::trace::output_content;

    /// A `--save-detailed` result of the current format (abbreviated: no generated_texts).
    const DETAILED: &str = r#"{"date": "20260301-101500", "endpoint_type": "vllm", "backend": "vllm", "label": null, "model_id": "Qwen/Qwen3-8B", "tokenizer_id": "Qwen/Qwen3-8B", "num_prompts": 4, "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 2, "duration": 2.5, "completed": 3, "failed": 1, "total_input_tokens": 390, "request_goodput": null, "mean_ttft_ms": 120.5, "p99_itl_ms": 31.0,
 "input_lens": [100, 90, 200, 60], "output_lens": [3, 2, 0, 4],
 "ttfts": [0.1, 0.12, 0.0, 0.25],
 "itls": [[0.02, 0.03], [0.01], [], [0.02, 0.02, 0.02]],
 "start_times": [353399.5, 353399.25, 353399.3, 353400.0],
 "latencies": [0.2, 0.15, 0.0, 0.35],
 "errors": ["", "", "Internal Server Error", ""]}
"#;

    #[test]
    fn maps_requests_times_and_measurements() {
        let p = temp_file("result.json", DETAILED);
        let (t, rep) = import_file(Format::VllmBench, &p, true).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (4, 3, 1));
        assert_eq!(rep.skipped.get(FAILED), Some(&1));
        assert_eq!(t.meta.source, "import:vllm-bench");
        // Sorted by send time, rebased on the first send (request 1).
        let got: Vec<(u64, u64)> = t.requests.iter().map(|r| (r.id, r.arrival_ns)).collect();
        assert_eq!(got, vec![(1, 0), (0, 250_000_000), (3, 750_000_000)]);
        let r = &t.requests[1];
        assert_eq!((r.input_len, r.output_len), (100, 3));
        assert_eq!(r.prompt, vec![Run::new(0, 0, 100)]);
        assert_eq!(r.output_content, output_content(0));
        assert_eq!(
            r.measured,
            Measured {
                ttft_ns: Some(100_000_000),
                e2e_ns: Some(200_000_000),
                itl_ns: vec![20_000_000, 30_000_000],
                itl_mean_ns: None,
                error: None,
            }
        );
        let s = &t.meta.params["summary"];
        assert_eq!(s["model_id"], "Qwen/Qwen3-8B");
        assert_eq!(s["request_rate"], "inf");
        assert_eq!(s["max_concurrency"], 2);
        assert_eq!(s["mean_ttft_ms"], 120.5);
        assert!(s.get("input_lens").is_none());
        assert!(!t.meta.params.contains_key("arrivals"));
    }

    #[test]
    fn old_files_without_start_times_or_latencies() {
        // benchmark_serving.py of early 2025: no start_times/latencies, "request_goodput:".
        let p = temp_file(
            "old.json",
            r#"{"backend": "vllm", "model_id": "base", "request_rate": "inf", "max_concurrency": null, "duration": 2.41, "completed": 2, "request_goodput:": null,
               "input_lens": [20, 30], "output_lens": [4, 2], "ttfts": [0.5, 0.25],
               "itls": [[0.125, 0.125, 0.25], [0.5]], "generated_texts": ["abcd", "ef"], "errors": ["", ""]}"#,
        );
        let (t, rep) = import_file(Format::VllmBench, &p, true).unwrap();
        assert_eq!(rep.imported, 2);
        assert!(t.requests.iter().all(|r| r.arrival_ns == 0));
        assert_eq!(t.requests[0].measured.e2e_ns, Some(1_000_000_000));
        assert_eq!(t.requests[1].measured.e2e_ns, Some(750_000_000));
        assert_eq!(
            t.meta.params["arrivals"],
            "start_times missing: all requests at t=0"
        );
        let s = &t.meta.params["summary"];
        assert!(s["request_goodput:"].is_null());
        assert!(s["max_concurrency"].is_null());
        assert_eq!(s["duration"], 2.41);
    }

    #[test]
    fn malformed_records_are_named_counted_or_fatal_when_strict() {
        let p = temp_file(
            "bad.json",
            r#"{"input_lens": [10, 10, -3, 10, 10, 10, 0],
                "output_lens": [2, "two", 2, 2, 2, 2, 2],
                "ttfts": [0.1, 0.1, 0.1, -0.1, 0.1, 0.1, 0.1],
                "itls": [[0.1], [0.1], [0.1], [0.1], [0.1, null], 0.1, [0.1]],
                "errors": ["", "", "", "", "", "", ""]}"#,
        );
        let (t, rep) = import_file(Format::VllmBench, &p, false).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (7, 1, 6));
        assert_eq!(rep.skipped.get("itls"), Some(&2));
        assert_eq!(rep.indices.get("itls"), Some(&vec![4, 5]));
        let name = p.display().to_string();
        let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                format!("{name}:2: output_lens[1]: expected a token count, found \"two\""),
                format!("{name}:3: input_lens[2]: expected a token count, found -3"),
                format!("{name}:4: ttfts[3]: expected non-negative seconds, found -0.1"),
                format!("{name}:5: itls[4]: element 1: expected non-negative seconds, found null"),
                format!("{name}:6: itls[5]: expected an array of seconds, found 0.1"),
            ]
        );
        let e = import_file(Format::VllmBench, &p, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{name}:2: output_lens[1]: expected a token count, found \"two\"")
        );
    }

    #[test]
    fn skip_reasons_are_grouped_by_field_with_a_few_indices() {
        // 2,000 bad records used to print one reason per index (`ttfts[0]: 1, ttfts[1]: 1, ...`).
        let n = 2000;
        let ttft = |i: usize| if i % 4 == 3 { "0.1" } else { "-0.1" };
        let input = |i: usize| if i % 4 == 3 { "-5" } else { "10" };
        let list = |f: &dyn Fn(usize) -> &'static str| (0..n).map(f).collect::<Vec<_>>().join(", ");
        let text = format!(
            r#"{{"input_lens": [{}], "output_lens": [{}], "ttfts": [{}], "itls": [{}]}}"#,
            list(&input),
            list(&|_| "2"),
            list(&ttft),
            list(&|_| "[0.1]"),
        );
        let p = temp_file("many.json", &text);
        let (t, rep) = import_file(Format::VllmBench, &p, false).unwrap();
        assert!(t.requests.is_empty());
        assert_eq!(rep.skipped.get("ttfts"), Some(&1500));
        assert_eq!(rep.skipped.get("input_lens"), Some(&500));
        assert_eq!(rep.skipped.len(), 2);
        let shown = rep.to_string();
        let first = shown.lines().next().unwrap();
        assert_eq!(
            first,
            "read 2000 = imported 0 + skipped 2000 \
             (input_lens[3, 7, 11, ...]: 500, ttfts[0, 1, 2, ...]: 1500)"
        );
        // The first errors are still shown in full, then a count of the rest.
        assert_eq!(shown.lines().count(), 1 + 5 + 1, "{shown}");
        // One bad record: its index alone, as before.
        let one = temp_file(
            "one.json",
            r#"{"input_lens": [1, 1], "output_lens": [1, 1], "ttfts": [0, -1], "itls": [[], []]}"#,
        );
        let (_, rep) = import_file(Format::VllmBench, &one, false).unwrap();
        let shown = rep.to_string();
        assert!(
            shown.starts_with("read 2 = imported 1 + skipped 1 (ttfts[1]: 1)\n"),
            "{shown}"
        );
    }

    #[test]
    fn file_level_problems_are_one_error() {
        let cases = [
            (
                r#"{"input_lens": [1, 2], "output_lens": [1, 2], "ttfts": [0.1], "itls": [[], []]}"#,
                "ttfts: 1 entries, but input_lens has 2",
            ),
            (
                r#"{"input_lens": [1], "output_lens": [1], "ttfts": [0.1], "itls": [[]], "errors": []}"#,
                "errors: 0 entries, but input_lens has 1",
            ),
            (
                r#"{"duration": 1.0, "completed": 1, "mean_ttft_ms": 3.0}"#,
                "input_lens: missing: per-request results are written by",
            ),
            (
                r#"{"input_lens": 3, "output_lens": [1], "ttfts": [0.1], "itls": [[]]}"#,
                "input_lens: expected an array, found a number",
            ),
            ("[1, 2]", "expected a JSON object, found an array"),
            ("", "empty file"),
            ("{\"a\": \n[1,", "2: not valid JSON"),
            (
                "{\"input_lens\": []}\n{\"input_lens\": []}\n",
                "2: text after the end of the JSON value: one result per file",
            ),
        ];
        for (text, want) in cases {
            let p = temp_file("f.json", text);
            let e = import_file(Format::VllmBench, &p, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn e2e_past_the_clock_is_an_error_not_saturated() {
        // Without latencies, e2e = ttft + sum(itls): each part fits in u64 ns, the sum does not.
        let p = temp_file(
            "e2e.json",
            r#"{"input_lens": [1, 1, 1], "output_lens": [2, 2, 3], "ttfts": [1.7e10, 1.0, 1.0],
                "itls": [[1.7e10], [1.5], [1.7e10, 1.7e10]]}"#,
        );
        let (t, rep) = import_file(Format::VllmBench, &p, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (3, 1, 2));
        assert_eq!(t.requests[0].measured.e2e_ns, Some(2_500_000_000));
        let name = p.display().to_string();
        assert_eq!(
            rep.examples[0].to_string(),
            format!("{name}:1: itls[0]: ttft plus the gaps is more than 2^64 ns (584 years)")
        );
        assert!(
            rep.examples[1]
                .to_string()
                .starts_with(&format!("{name}:3: itls[2]: "))
        );
    }

    #[test]
    fn extreme_start_times_are_errors_not_panics() {
        let p = temp_file(
            "x.json",
            r#"{"input_lens": [1, 1, 1], "output_lens": [1, 1, 1], "ttfts": [0, 0, 1e300], "itls": [[1e9, 1e9], [], []], "start_times": [-1e308, 1e308, "x"]}"#,
        );
        let (t, rep) = import_file(Format::VllmBench, &p, false).unwrap();
        assert_eq!((rep.imported, rep.skipped_total()), (1, 2));
        assert_eq!(
            t.requests[0].measured.e2e_ns,
            Some(2_000_000_000_000_000_000)
        );
    }
}

//! llmperf results (ray-project/llmperf `*_individual_responses.json`): a JSON array of one
//! object per request with `number_input_tokens`, `number_output_tokens`, `ttft_s`,
//! `end_to_end_latency_s`, `inter_token_latency_s` (a number, or a list of gaps for some
//! clients, whose mean is kept) and `error_code` (null when the request succeeded).
//!
//! Element `i` of the array is record `i` (errors name it as line `i + 1`). A request with an
//! error code failed in the live run and is counted as skipped; an element that is not an object
//! (llmperf's final sweep can add stray key strings) is a malformed record. The file records no
//! send times: with [`ImportOptions::clients`] = n the requests are replayed as llmperf sent them,
//! by a closed loop of n clients where client t sends requests t, t+n, t+2n, ... (each client's
//! requests form one session); without it every request is sent at t=0 (noted in the
//! parameters). What the run measured is kept per request ([`crate::trace::Measured`]). The file
//! holds no content information, so every prompt is unique content: request `i`'s prompt is the
//! single run `(i, 0, number_input_tokens)`.

use super::{ImportOptions, ImportReport, Tally, read_json_document, sort_by_arrival};
use crate::error::{Error, InputError, Result};
use crate::trace::{Measured, Pool, Request, Run, Trace, TraceMeta};
use crate::util::json::{Obj, kind, seconds_to_ns, show};
use serde_json::Value;
use std::io::BufRead;

/// The reason under which requests that failed in the live run are counted.
pub const FAILED: &str = "failed in the live run";

/// Imports llmperf individual responses read from `input`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    if opts.clients == Some(0) {
        return Err(Error::Config(
            "a closed loop needs at least 1 client".into(),
        ));
    }
    let doc = read_json_document(input, name, "")?;
    let records = match &doc {
        Value::Array(a) => a,
        other => {
            return Err(InputError::new(
                name,
                0,
                "",
                format!(
                    "expected a JSON array of per-request results \
                     (llmperf's *_individual_responses.json), found {}",
                    kind(other)
                ),
            )
            .into());
        }
    };
    let mut tally = Tally::new(opts);
    let mut requests = Vec::new();
    for (i, v) in records.iter().enumerate() {
        let id = tally.report.read;
        let line = i as u64 + 1;
        let parsed = match v {
            Value::Object(m) => record(&Obj::new(m, name, line), id, opts.clients),
            other => Err(InputError::new(
                name,
                line,
                "",
                format!("expected a JSON object, found {}", show(other)),
            )),
        };
        match parsed {
            Ok(Some(r)) => requests.extend(tally.record(Ok(r))?),
            Ok(None) => tally.skip_known(FAILED),
            Err(e) => {
                tally.record::<Request>(Err(e))?;
            }
        }
    }
    let mut meta = TraceMeta::new("import:llmperf");
    match opts.clients {
        Some(n) => {
            meta.pools.push(Pool::new(0, n));
            meta.params.insert("clients".into(), serde_json::json!(n));
        }
        None => {
            meta.params.insert(
                "arrivals".into(),
                Value::String(
                    "no start times in llmperf results: all requests at t=0 \
                     (import with clients for a closed loop)"
                        .into(),
                ),
            );
            sort_by_arrival(&mut requests);
        }
    }
    Ok((Trace { meta, requests }, tally.report))
}

/// Seconds under `key` as nanoseconds.
fn secs(o: &Obj, key: &str) -> std::result::Result<u64, InputError> {
    let v = o.req(key)?;
    v.as_f64().and_then(seconds_to_ns).ok_or_else(|| {
        o.err(
            key,
            format!("expected non-negative seconds, found {}", show(v)),
        )
    })
}

/// `inter_token_latency_s`: a number, or the mean of a list of gaps (`None` when absent or
/// empty).
fn itl_mean(o: &Obj) -> std::result::Result<Option<u64>, InputError> {
    const KEY: &str = "inter_token_latency_s";
    match o.get(KEY) {
        None => Ok(None),
        Some(Value::Array(gaps)) => {
            let mut sum = 0.0;
            for (k, g) in gaps.iter().enumerate() {
                match g.as_f64() {
                    Some(x) if seconds_to_ns(x).is_some() => sum += x,
                    _ => {
                        return Err(o.err(
                            KEY,
                            format!(
                                "element {k}: expected non-negative seconds, found {}",
                                show(g)
                            ),
                        ));
                    }
                }
            }
            if gaps.is_empty() {
                return Ok(None);
            }
            // The mean of values below the bound is below the bound.
            Ok(seconds_to_ns(sum / gaps.len() as f64))
        }
        Some(_) => secs(o, KEY).map(Some),
    }
}

/// One object: `Ok(None)` when the request failed in the live run.
fn record(
    o: &Obj,
    id: u64,
    clients: Option<u32>,
) -> std::result::Result<Option<Request>, InputError> {
    if o.get("error_code").is_some() {
        return Ok(None);
    }
    let input_len = o.u32("number_input_tokens")?;
    if input_len == 0 {
        return Err(o.err("number_input_tokens", "must be at least 1"));
    }
    let output_len = o.u32("number_output_tokens")?;
    if output_len == 0 {
        return Err(o.err("number_output_tokens", "must be at least 1"));
    }
    let ttft_ns = secs(o, "ttft_s")?;
    let e2e_ns = secs(o, "end_to_end_latency_s")?;
    let itl_mean_ns = itl_mean(o)?;
    let (pool, session) = match clients {
        Some(n) if n > 0 => (Some(0), Some(id % n as u64)),
        _ => (None, None),
    };
    let mut r = Request::new(id, 0, vec![Run::new(id, 0, input_len)], output_len);
    r.session = session;
    r.pool = pool;
    r.measured = Measured {
        ttft_ns: Some(ttft_ns),
        e2e_ns: Some(e2e_ns),
        itl_ns: Vec::new(),
        itl_mean_ns,
        error: None,
    };
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::Format;
    use crate::trace::import::testutil::temp_file;

    fn import_file(
        p: &std::path::Path,
        strict: bool,
        clients: Option<u32>,
    ) -> Result<(Trace, ImportReport)> {
        let opts = ImportOptions {
            strict,
            clients,
            ..Default::default()
        };
        super::super::import(Format::Llmperf, p, &opts)
    }

    fn entry(input: u32, output: u32, ttft: f64, e2e: f64, itl: &str) -> String {
        format!(
            r#"    {{
        "error_code": null,
        "error_msg": "",
        "inter_token_latency_s": {itl},
        "ttft_s": {ttft},
        "end_to_end_latency_s": {e2e},
        "request_output_throughput_token_per_s": 44.57,
        "number_total_tokens": {},
        "number_output_tokens": {output},
        "number_input_tokens": {input}
    }}"#,
            input + output
        )
    }

    fn good_file() -> String {
        let failed = r#"    {
        "error_code": 500,
        "error_msg": "Internal Server Error",
        "inter_token_latency_s": 0,
        "ttft_s": 0,
        "end_to_end_latency_s": 0,
        "request_output_throughput_token_per_s": 0,
        "number_total_tokens": 550,
        "number_output_tokens": 0,
        "number_input_tokens": 550
    }"#;
        format!(
            "[\n{},\n{},\n{failed},\n{},\n{}\n]\n",
            entry(550, 152, 0.184, 3.41, "0.0213"),
            entry(480, 100, 0.25, 2.5, "[0.125, 0.25, 0.375]"),
            entry(600, 120, 0.5, 4.0, "0.03"),
            entry(500, 140, 0.125, 3.0, "[]"),
        )
    }

    #[test]
    fn open_loop_without_clients() {
        let p = temp_file("m_550_150_individual_responses.json", &good_file());
        let (t, rep) = import_file(&p, true, None).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (5, 4, 1));
        assert_eq!(rep.skipped.get(FAILED), Some(&1));
        assert_eq!(t.meta.source, "import:llmperf");
        assert!(!t.is_closed_loop());
        assert!(t.meta.pools.is_empty());
        assert!(t.meta.params["arrivals"].as_str().unwrap().contains("t=0"));
        let ids: Vec<u64> = t.requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![0, 1, 3, 4]);
        assert!(
            t.requests
                .iter()
                .all(|r| r.arrival_ns == 0 && r.session.is_none())
        );
        let r = &t.requests[0];
        assert_eq!((r.input_len, r.output_len), (550, 152));
        assert_eq!(r.prompt, vec![Run::new(0, 0, 550)]);
        assert_eq!(
            r.measured,
            Measured {
                ttft_ns: Some(184_000_000),
                e2e_ns: Some(3_410_000_000),
                itl_ns: vec![],
                itl_mean_ns: Some(21_300_000),
                error: None,
            }
        );
        // A list of gaps: its mean; an empty list: nothing.
        assert_eq!(t.requests[1].measured.itl_mean_ns, Some(250_000_000));
        assert_eq!(t.requests[3].measured.itl_mean_ns, None);
    }

    #[test]
    fn closed_loop_with_clients() {
        let p = temp_file("r.json", &good_file());
        let (t, _) = import_file(&p, true, Some(3)).unwrap();
        assert_eq!(
            t.meta.pools,
            vec![Pool {
                id: 0,
                clients: 3,
                sessions_per_client: 1,
                early_stop: false
            }]
        );
        assert!(!t.meta.params.contains_key("arrivals"));
        let got: Vec<(u64, Option<u32>, Option<u64>)> = t
            .requests
            .iter()
            .map(|r| (r.id, r.pool, r.session))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(0), Some(0)),
                (1, Some(0), Some(1)),
                (3, Some(0), Some(0)),
                (4, Some(0), Some(1)),
            ]
        );
        let e = import_file(&p, true, Some(0)).unwrap_err().to_string();
        assert!(e.contains("at least 1 client"), "{e}");
    }

    #[test]
    fn malformed_records_are_named_counted_or_fatal_when_strict() {
        let text = format!(
            "[\n{},\n\"error_code\",\n{},\n{},\n{},\n{},\n{}\n]",
            entry(550, 152, 0.184, 3.41, "0.0213"),
            entry(550, 152, -0.5, 3.41, "0.0213"),
            entry(550, 152, 0.184, 3.41, "\"fast\"").replace(
                "\"number_input_tokens\": 550",
                "\"number_input_tokens\": \"550\""
            ),
            entry(0, 152, 0.184, 3.41, "0.0213"),
            entry(550, 152, 0.184, 3.41, "[0.1, -1]"),
            entry(550, 152, 0.184, 3.41, "0.01").replace("\"end_to_end_latency_s\": 3.41,", ""),
        );
        let p = temp_file("bad.json", &text);
        let (t, rep) = import_file(&p, false, None).unwrap();
        assert_eq!(t.requests.len(), 1);
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (7, 1, 6));
        assert_eq!(rep.skipped.get("number_input_tokens"), Some(&2));
        assert_eq!(rep.skipped.get("malformed line"), Some(&1));
        let name = p.display().to_string();
        let shown: Vec<String> = rep.examples.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                format!("{name}:2: expected a JSON object, found \"error_code\""),
                format!("{name}:3: ttft_s: expected non-negative seconds, found -0.5"),
                format!(
                    "{name}:4: number_input_tokens: expected a non-negative integer, found \"550\""
                ),
                format!("{name}:5: number_input_tokens: must be at least 1"),
                format!(
                    "{name}:6: inter_token_latency_s: element 1: expected non-negative seconds, found -1"
                ),
            ]
        );
        let e = import_file(&p, true, Some(2)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{name}:2: expected a JSON object, found \"error_code\"")
        );
        for (text, want) in [
            ("{\"results\": []}", "expected a JSON array"),
            ("[1] [2]", "text after the end of the JSON value"),
            ("[{]", "not valid JSON"),
        ] {
            let p = temp_file("f.json", text);
            let e = import_file(&p, false, None).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}

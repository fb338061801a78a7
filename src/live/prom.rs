//! Prometheus text exposition, as vLLM serves it on `/metrics`: enough to take the difference of
//! counters between two scrapes and to read an info gauge's labels.
//!
//! vLLM's prefix-cache counters are named differently across versions:
//! `vllm:prefix_cache_queries_total` / `vllm:prefix_cache_hits_total` (V1),
//! `vllm:gpu_prefix_cache_queries` / `_hits` (older), `vllm:external_prefix_cache_*` (a KV
//! connector such as LMCache), `vllm:cpu_prefix_cache_*`. [`prefix_cache`] therefore pairs any
//! `<stem>_queries[_total]` with `<stem>_hits[_total]` whose name contains `prefix_cache`, and
//! reports what exists.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, as written (with `_total`, `_bucket`, ... suffixes).
    pub name: String,
    /// Label pairs in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses `a="x",b="y\"z"` (the text between the braces). `None` when malformed.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break i,
                c => val.push(c),
            }
        };
        out.push((key, val));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Every sample of a scrape; comment lines and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(b) => {
                // The last `}` after the `{` (a `}` before it makes no label set).
                let Some(close) = line[b..].rfind('}').map(|c| b + c) else {
                    continue;
                };
                let Some(l) = parse_labels(&line[b + 1..close]) else {
                    continue;
                };
                (&line[..b], l, &line[close + 1..])
            }
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, Vec::new(), r),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        out.push(Sample {
            name: name.trim().to_string(),
            labels,
            value,
        });
    }
    out
}

/// Whether a series is one whose difference between scrapes means something to us: a counter
/// (`_total`) or any prefix-cache series, excluding histogram buckets and `_created` stamps.
fn is_counted(name: &str) -> bool {
    !name.ends_with("_bucket")
        && !name.ends_with("_created")
        && (name.ends_with("_total") || name.contains("prefix_cache"))
}

/// Counter values summed over label sets (engines, models, reasons), by name.
pub fn counters(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in parse(text) {
        if is_counted(&s.name) && s.value.is_finite() {
            *out.entry(s.name).or_insert(0.0) += s.value;
        }
    }
    out
}

/// `after - before` for every counter in `after` (a counter missing before counts from 0).
pub fn deltas(before: &str, after: &str) -> BTreeMap<String, f64> {
    let b = counters(before);
    counters(after)
        .into_iter()
        .map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .collect()
}

/// The prefix-cache counters among `deltas`, paired by stem: `{stem: {queries, hits,
/// hit_rate}}` (`hit_rate` is null when there were no queries), plus `primary`: the stem that
/// stands for the engine's own (GPU) prefix cache (`vllm:prefix_cache`, else
/// `vllm:gpu_prefix_cache`, else the first stem), or null when the server has none.
pub fn prefix_cache(deltas: &BTreeMap<String, f64>) -> Value {
    let mut stems: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for (name, v) in deltas {
        if !name.contains("prefix_cache") {
            continue;
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        if let Some(stem) = base.strip_suffix("_queries") {
            stems.entry(stem.to_string()).or_default().0 = Some(*v);
        } else if let Some(stem) = base.strip_suffix("_hits") {
            stems.entry(stem.to_string()).or_default().1 = Some(*v);
        }
    }
    let mut out = Map::new();
    for (stem, (q, h)) in &stems {
        let rate = match (q, h) {
            (Some(q), Some(h)) if *q > 0.0 => json!(h / q),
            _ => Value::Null,
        };
        out.insert(
            stem.clone(),
            json!({"queries": q, "hits": h, "hit_rate": rate}),
        );
    }
    let primary = ["vllm:prefix_cache", "vllm:gpu_prefix_cache"]
        .iter()
        .map(|s| s.to_string())
        .find(|s| stems.contains_key(s))
        .or_else(|| stems.keys().next().cloned());
    json!({"primary": primary, "counters": out})
}

/// The labels of the first sample of an info gauge (`vllm:cache_config_info`), as a JSON object;
/// null when the scrape has none.
pub fn info_labels(text: &str, name: &str) -> Value {
    parse(text)
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| {
            Value::Object(
                s.labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        })
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_brace_before_the_opening_one_skips_the_line() {
        let s = parse("x} y{ 1\nb{k=\"v}\"} 2\n");
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].name.as_str(), s[0].value), ("b", 2.0));
        assert_eq!(s[0].labels, [("k".to_string(), "v}".to_string())]);
    }

    const BEFORE: &str = r#"# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 1000.0
vllm:prefix_cache_queries_created{engine="0",model_name="tiny"} 1.79e+09
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 256.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 3.0
vllm:cache_config_info{block_size="128",enable_prefix_caching="True",engine="0",num_gpu_blocks="8192"} 1.0
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
"#;

    const AFTER: &str = r#"vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 3000.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 1280.0
vllm:external_prefix_cache_queries_total{engine="0",model_name="tiny"} 500
vllm:external_prefix_cache_hits_total{engine="0",model_name="tiny"} 0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 5.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 6.0
vllm:gpu_prefix_cache_hits 7 1700000000000
garbage line without value
broken{a="x" 3
"#;

    #[test]
    fn parses_samples_labels_and_special_values() {
        let s = parse(BEFORE);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].name, "vllm:prefix_cache_queries_total");
        assert_eq!(
            s[0].labels,
            vec![
                ("engine".to_string(), "0".to_string()),
                ("model_name".into(), "tiny".into())
            ]
        );
        assert_eq!(s[0].value, 1000.0);
        assert_eq!(s[4].labels[1], ("le".into(), "+Inf".into()));
        let t = parse("a{x=\"q\\\"uo,te\",y=\"\"} +Inf\nb NaN\nc 2.5e3 123\n");
        assert_eq!(t[0].labels[0].1, "q\"uo,te");
        assert_eq!(t[0].labels[1].1, "");
        assert!(t[0].value.is_infinite() && t[1].value.is_nan());
        assert_eq!((t[2].name.as_str(), t[2].value), ("c", 2500.0));
        let info = info_labels(BEFORE, "vllm:cache_config_info");
        assert_eq!(info["num_gpu_blocks"], "8192");
        assert_eq!(info_labels(AFTER, "vllm:cache_config_info"), Value::Null);
    }

    #[test]
    fn counter_deltas_and_prefix_cache_pairs() {
        let d = deltas(BEFORE, AFTER);
        assert_eq!(d["vllm:prefix_cache_queries_total"], 2000.0);
        assert_eq!(d["vllm:prefix_cache_hits_total"], 1024.0);
        // Summed over label sets.
        assert_eq!(d["vllm:request_success_total"], 3.0);
        // New counters count from zero; an unsuffixed prefix-cache series is kept.
        assert_eq!(d["vllm:external_prefix_cache_queries_total"], 500.0);
        assert_eq!(d["vllm:gpu_prefix_cache_hits"], 7.0);
        assert!(!d.contains_key("vllm:e2e_request_latency_seconds_bucket"));
        assert!(!d.contains_key("vllm:prefix_cache_queries_created"));
        assert!(!d.contains_key("vllm:num_requests_running"));
        let p = prefix_cache(&d);
        assert_eq!(p["primary"], "vllm:prefix_cache");
        let c = &p["counters"];
        assert_eq!(c["vllm:prefix_cache"]["hit_rate"], 0.512);
        assert_eq!(c["vllm:external_prefix_cache"]["hit_rate"], 0.0);
        assert_eq!(c["vllm:gpu_prefix_cache"]["hit_rate"], Value::Null);
        assert_eq!(c["vllm:gpu_prefix_cache"]["hits"], 7.0);
        let none = prefix_cache(&BTreeMap::new());
        assert_eq!(none["primary"], Value::Null);
    }
}

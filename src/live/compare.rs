//! A live run against a prediction of the same trace: per request and in aggregate.
//!
//! Requests are matched by id. Latency errors use the requests finished on both sides; each
//! relative error is `(predicted - measured) / measured`. Throughput and wall time use each
//! side's own finished requests (first send to last finish). Prefix-cache hit rates: the
//! predicted GPU hit fraction is the prediction's `tokens_gpu` over its prompt tokens (finished
//! requests); the measured one is the server's own counters (hits / queries between the scrapes
//! of the live run, see [`super::prom::prefix_cache`]) and, when the server reported it per
//! request, `cached_tokens` over prompt tokens.

use crate::error::Result;
use crate::metrics::record::RequestRecord;
use crate::metrics::summary::{Stats, wall_s};
pub use crate::report::parquet::read_requests;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::Path;

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn rel(pred: f64, meas: f64) -> Option<f64> {
    (meas != 0.0 && pred.is_finite() && meas.is_finite()).then(|| (pred - meas) / meas)
}

/// Wall time (first send to last finish), finished requests, output tokens.
fn throughput(recs: &[RequestRecord]) -> Value {
    let fin: Vec<&RequestRecord> = recs.iter().filter(|r| r.finished()).collect();
    let wall = wall_s(recs.iter()).filter(|w| *w > 0.0);
    let out: u64 = fin.iter().map(|r| r.output_len as u64).sum();
    let inp: u64 = fin.iter().map(|r| r.input_len as u64).sum();
    json!({
        "finished": fin.len(),
        "duration_s": wall,
        "output_tokens": out,
        "output_tps": wall.map(|w| out as f64 / w),
        "total_tps": wall.map(|w| (inp + out) as f64 / w),
        "requests_per_min": wall.map(|w| fin.len() as f64 / w * 60.0),
    })
}

/// Prompt tokens and GPU-hit tokens of the finished requests.
fn hits(recs: &[RequestRecord]) -> (u64, u64) {
    recs.iter()
        .filter(|r| r.finished())
        .fold((0, 0), |(q, h), r| {
            (q + r.input_len as u64, h + r.tokens_gpu as u64)
        })
}

type Pick = fn(&RequestRecord) -> Option<f64>;

const METRICS: [(&str, Pick); 3] = [
    ("ttft", |r| r.ttft_s),
    ("tpot", |r| r.tpot_s),
    ("e2e", |r| r.e2e_s),
];

/// Compares the live run in `live_dir` (written by `kvreplay live`) with the prediction in
/// `predicted_dir` (written by `kvreplay run` on the same trace). See the module doc for the
/// definitions; the JSON has `requests` (counts), `aggregate` (per metric and statistic:
/// predicted, measured, relative error), `per_request_error` (per metric: mean, median and mean
/// absolute relative error), `throughput`, `prefix_cache` and `per_request` (one row per
/// request finished on both sides).
pub fn compare_live(live_dir: &Path, predicted_dir: &Path) -> Result<Value> {
    let live = read_requests(&live_dir.join("requests.parquet"))?;
    let pred = read_requests(&predicted_dir.join("requests.parquet"))?;
    let live_sum = read_json(&live_dir.join("summary.json")).unwrap_or(Value::Null);
    let pred_sum = read_json(&predicted_dir.join("summary.json")).unwrap_or(Value::Null);
    let by_id: HashMap<u64, &RequestRecord> = pred.iter().map(|r| (r.id, r)).collect();
    let pairs: Vec<(&RequestRecord, &RequestRecord)> = live
        .iter()
        .filter_map(|m| by_id.get(&m.id).map(|p| (*p, m)))
        .collect();
    let both: Vec<_> = pairs
        .iter()
        .filter(|(p, m)| p.finished() && m.finished())
        .copied()
        .collect();
    let requests = json!({
        "live": live.len(),
        "predicted": pred.len(),
        "matched": pairs.len(),
        "finished_both": both.len(),
        "finished_live_only": pairs.iter().filter(|(p, m)| m.finished() && !p.finished()).count(),
        "finished_predicted_only": pairs.iter().filter(|(p, m)| p.finished() && !m.finished()).count(),
    });
    let mut aggregate = Map::new();
    let mut per_request_error = Map::new();
    for (name, f) in METRICS {
        let vals: Vec<(f64, f64)> = both
            .iter()
            .filter_map(|(p, m)| Some((f(p)?, f(m)?)))
            .collect();
        let sp = Stats::of(vals.iter().map(|v| v.0));
        let sm = Stats::of(vals.iter().map(|v| v.1));
        let mut stats = Map::new();
        if let (Some(sp), Some(sm)) = (sp, sm) {
            for st in ["mean", "p50", "p90", "p99"] {
                let (a, b) = (
                    sp.get(st).unwrap_or(f64::NAN),
                    sm.get(st).unwrap_or(f64::NAN),
                );
                stats.insert(
                    st.into(),
                    json!({"predicted": a, "measured": b, "rel_error": rel(a, b)}),
                );
            }
            stats.insert("n".into(), json!(vals.len()));
        }
        aggregate.insert(name.into(), Value::Object(stats));
        let errs: Vec<f64> = vals.iter().filter_map(|(a, b)| rel(*a, *b)).collect();
        let e = Stats::of(errs.iter().copied());
        let abs = Stats::of(errs.iter().map(|x| x.abs()));
        per_request_error.insert(
            name.into(),
            json!({
                "n": errs.len(),
                "mean_rel_error": e.map(|s| s.mean),
                "median_rel_error": e.map(|s| s.p50),
                "mean_abs_rel_error": abs.map(|s| s.mean),
                "median_abs_rel_error": abs.map(|s| s.p50),
                "p90_abs_rel_error": abs.map(|s| s.p90),
            }),
        );
    }
    let (tp, tm) = (throughput(&pred), throughput(&live));
    let ratio = |k: &str| match (tp[k].as_f64(), tm[k].as_f64()) {
        (Some(a), Some(b)) => json!(rel(a, b)),
        _ => Value::Null,
    };
    let throughput = json!({
        "predicted": tp,
        "measured": tm,
        "rel_error": {
            "output_tps": ratio("output_tps"),
            "duration_s": ratio("duration_s"),
            "requests_per_min": ratio("requests_per_min"),
        },
    });
    let (pq, ph) = hits(&pred);
    let predicted_gpu = (pq > 0).then(|| ph as f64 / pq as f64);
    let pc = &live_sum["server"]["prefix_cache"];
    let server = pc["primary"]
        .as_str()
        .map(|p| pc["counters"][p].clone())
        .unwrap_or(Value::Null);
    let server_rate = server["hit_rate"].as_f64();
    let reported = live_sum["summary"]["cached_fraction"].as_f64();
    let pp = |m: Option<f64>| match (predicted_gpu, m) {
        (Some(a), Some(b)) => json!((a - b) * 100.0),
        _ => Value::Null,
    };
    let prefix_cache = json!({
        "predicted_gpu_hit_fraction": predicted_gpu,
        "predicted_hit_tokens": ph,
        "predicted_query_tokens": pq,
        "predicted_summary_gpu_fraction": pred_sum["summary"]["hit_fractions"]["gpu"],
        "server_counter": pc["primary"],
        "server_hits": server["hits"],
        "server_queries": server["queries"],
        "server_hit_rate": server_rate,
        "reported_cached_fraction": reported,
        "diff_pp_vs_server": pp(server_rate),
        "diff_pp_vs_reported": pp(reported),
    });
    let per_request: Vec<Value> = both
        .iter()
        .map(|(p, m)| {
            let mut o = Map::new();
            o.insert("id".into(), json!(m.id));
            for (name, f) in METRICS {
                let (a, b) = (f(p), f(m));
                o.insert(
                    name.into(),
                    json!({"predicted": a, "measured": b, "rel_error": a.zip(b).and_then(|(a, b)| rel(a, b))}),
                );
            }
            o.insert(
                "tokens_gpu".into(),
                json!({"predicted": p.tokens_gpu, "measured": m.tokens_gpu}),
            );
            Value::Object(o)
        })
        .collect();
    Ok(json!({
        "live": live_dir.display().to_string(),
        "predicted": predicted_dir.display().to_string(),
        "requests": requests,
        "aggregate": aggregate,
        "per_request_error": per_request_error,
        "throughput": throughput,
        "prefix_cache": prefix_cache,
        "per_request": per_request,
    }))
}

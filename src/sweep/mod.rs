//! What-if sweeps: one trace under a grid of configurations, run in parallel.
//!
//! A grid is a set of keys (the flat configuration keys of [`crate::config`], the same names the
//! study format uses) each with a list of values; the sweep runs their cartesian product in a
//! fixed order, so point `i` is the same configuration on every machine and `--shard K/N`
//! selects a deterministic slice.

pub mod output;

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One configuration of a sweep and what it gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Position in the grid's fixed order.
    pub index: usize,
    /// The grid keys and their values at this point.
    pub params: BTreeMap<String, Value>,
    /// Aggregate metrics by name (the named metrics of [`crate::metrics::summary`]).
    pub metrics: BTreeMap<String, f64>,
}

use crate::config::{RunConfig, parse_value};
use crate::error::{Error, Result};
use crate::pipeline::{RunOutput, run_shared};
use crate::trace::Trace;
use rayon::prelude::*;
use serde_json::Map;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The aggregate metrics every sweep point records (named metrics, see
/// [`crate::metrics::summary::metric_names_help`]).
pub const METRICS: &[&str] = &[
    "ttft_mean_s",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "tpot_mean_s",
    "tpot_p99_s",
    "itlgap_p99_s",
    "e2e_mean_s",
    "e2e_p99_s",
    "queue_mean_s",
    "queue_p99_s",
    "input_tps",
    "output_tps",
    "total_tps",
    "request_throughput",
    "requests_per_min",
    "duration_s",
    "hit_rate_gpu",
    "hit_rate_cpu",
    "hit_rate_disk",
    "hit_rate_remote",
    "hit_rate_total",
    "rehit_rate",
    "completed",
    "rejected",
];

/// `name` when it is one of [`METRICS`]; else an error for `what` (a flag) that lists them.
pub fn known_metric<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    if METRICS.contains(&name) {
        Ok(name)
    } else {
        Err(Error::Config(format!(
            "{what} {name:?}: unknown metric; accepted: {}",
            METRICS.join(", ")
        )))
    }
}

/// A grid: keys in order, each with its values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grid {
    /// (key, values) in the order given; the last key varies fastest.
    pub axes: Vec<(String, Vec<Value>)>,
}

/// Splits `a,b,[1,2],{"x":1}` on commas outside brackets and quotes.
fn split_values(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => depth += 1,
            ']' | '}' if !quoted => depth -= 1,
            ',' if depth == 0 && !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|v| v.trim().to_string()).collect()
}

impl Grid {
    /// Adds an axis from `key=v1,v2,...` (values parsed as JSON when they parse).
    pub fn add_arg(&mut self, arg: &str) -> Result<()> {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--set {arg:?}: expected KEY=V1,V2,...")))?;
        let parts = split_values(v);
        if let Some(i) = parts.iter().position(String::is_empty) {
            return Err(Error::Config(format!(
                "--set {arg:?}: value {} of {} is empty (a stray comma?)",
                i + 1,
                parts.len()
            )));
        }
        let values: Vec<Value> = parts.iter().map(|s| parse_value(s)).collect();
        self.add(k.trim(), values)
    }

    /// Adds an axis; the key must be a configuration key and appear once.
    pub fn add(&mut self, key: &str, values: Vec<Value>) -> Result<()> {
        if !RunConfig::is_key(key) {
            return Err(Error::Config(format!(
                "unknown key {key:?} in the grid (see `kvreplay keys`)"
            )));
        }
        if values.is_empty() {
            return Err(Error::Config(format!("{key}: no values")));
        }
        if self.axes.iter().any(|(k, _)| k == key) {
            return Err(Error::Config(format!("{key} appears twice in the grid")));
        }
        self.axes.push((key.to_string(), values));
        Ok(())
    }

    /// Adds the axes of a JSON object `{key: [values] | value}`.
    pub fn add_object(&mut self, m: &Map<String, Value>) -> Result<()> {
        for (k, v) in m {
            let vals = match v {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            self.add(k, vals)?;
        }
        Ok(())
    }

    /// Points in the grid.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|(_, v)| v.len()).product()
    }

    /// Whether the grid has no points (an axis with no values).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The settings of point `i` (mixed radix, last axis fastest).
    pub fn point(&self, mut i: usize) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (k, vals) in self.axes.iter().rev() {
            out.insert(k.clone(), vals[i % vals.len()].clone());
            i /= vals.len();
        }
        out
    }
}

/// `K/N`: this machine runs the points whose index is K modulo N (0 <= K < N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard.
    pub k: usize,
    /// Shards in all.
    pub n: usize,
}

impl Shard {
    /// Parses `K/N`.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || Error::Config(format!("--shard {s:?}: expected K/N with 0 <= K < N"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }

    /// The whole grid.
    pub const ALL: Shard = Shard { k: 0, n: 1 };

    /// Whether point `i` belongs to this shard.
    pub fn owns(&self, i: usize) -> bool {
        i % self.n == self.k
    }
}

/// Aggregates of one run by metric name (those of [`METRICS`] that are defined).
pub fn point_metrics(o: &RunOutput) -> BTreeMap<String, f64> {
    METRICS
        .iter()
        .filter_map(|m| {
            o.summary
                .metric(&o.records, m)
                .filter(|v| v.is_finite())
                .map(|v| (m.to_string(), v))
        })
        .collect()
}

/// Runs this shard's points of `grid` over `base` in parallel; `progress(done, total)` is called
/// after each point. Points come back in index order.
pub fn run_grid(
    trace: &Trace,
    base: &RunConfig,
    grid: &Grid,
    shard: Shard,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<SweepPoint>> {
    let idx: Vec<usize> = (0..grid.len()).filter(|i| shard.owns(*i)).collect();
    // The same trace at every point: find what it shares, and its block hashes at the base
    // block size, once.
    let block_size = base.setup()?.0.engine.block_size;
    let prep = crate::sim::TracePrep::new(trace, Some(block_size));
    let done = AtomicUsize::new(0);
    let total = idx.len();
    idx.par_iter()
        .map(|&i| {
            let params = grid.point(i);
            let mut cfg = base.clone();
            for (k, v) in &params {
                cfg.set(k, v)
                    .map_err(|e| Error::Config(format!("point {i}: {e}")))?;
            }
            let out = run_shared(trace, &cfg, Some(&prep))?;
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(d, total);
            Ok(SweepPoint {
                index: i,
                params,
                metrics: point_metrics(&out),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `sweep --sort-by bogus` was accepted and the table printed unsorted.
    #[test]
    fn an_unknown_sort_metric_is_an_error() {
        assert_eq!(
            known_metric("--sort-by", "ttft_p99_s").unwrap(),
            "ttft_p99_s"
        );
        let e = known_metric("--sort-by", "bogus").unwrap_err().to_string();
        assert!(
            e.contains("--sort-by \"bogus\": unknown metric; accepted: ttft_mean_s"),
            "{e}"
        );
    }

    /// Regression: an empty grid value (`chunk_size=256,`) was silently dropped.
    #[test]
    fn an_empty_grid_value_is_an_error() {
        let mut g = Grid::default();
        let e = g.add_arg("chunk_size=256,").unwrap_err().to_string();
        assert!(e.contains("value 2 of 2 is empty"), "{e}");
        assert!(g.add_arg("chunk_size=256,,512").is_err());
        g.add_arg("chunk_size=256, 512").unwrap();
        assert_eq!(g.len(), 2);
    }
    use serde_json::json;

    #[test]
    fn grids_enumerate_in_a_fixed_order_and_shards_partition_them() {
        let mut g = Grid::default();
        g.add_arg("tier=none,cpu").unwrap();
        g.add_arg("chunk_size=256,1024,64").unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g.point(0)["tier"], json!("none"));
        assert_eq!(g.point(0)["chunk_size"], json!(256));
        assert_eq!(g.point(2)["chunk_size"], json!(64));
        assert_eq!(g.point(3)["tier"], json!("cpu"));
        let s: Vec<Shard> = (0..3)
            .map(|k| Shard::parse(&format!("{k}/3")).unwrap())
            .collect();
        for i in 0..g.len() {
            assert_eq!(s.iter().filter(|sh| sh.owns(i)).count(), 1);
        }
        assert!(
            Shard::parse("3/3").is_err()
                && Shard::parse("1/0").is_err()
                && Shard::parse("x").is_err()
        );
        assert!(
            g.add_arg("chunk_size=1")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            g.add_arg("chunk_sise=1")
                .unwrap_err()
                .to_string()
                .contains("unknown key")
        );
        assert_eq!(
            split_values("1, [2,3] ,\"a,b\""),
            vec!["1", "[2,3]", "\"a,b\""]
        );
    }

    #[test]
    fn a_sweep_runs_every_point_and_shards_add_up() {
        let t = crate::trace::generate::random::generate(
            &crate::trace::generate::random::Params {
                num_prompts: 20,
                random_input_len: 600,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let mut g = Grid::default();
        g.add_arg("tier=none,cpu").unwrap();
        g.add_arg("max_num_batched_tokens=512,2048").unwrap();
        let base = RunConfig::default();
        let all = run_grid(&t, &base, &g, Shard::ALL, &|_, _| {}).unwrap();
        assert_eq!(
            all.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(all.iter().all(|p| p.metrics["completed"] == 20.0));
        // A smaller token budget cannot make time to first token shorter for the same batch.
        assert!(all[0].metrics["ttft_mean_s"] >= all[1].metrics["ttft_mean_s"]);
        let mut parts = Vec::new();
        for k in 0..2 {
            parts.extend(run_grid(&t, &base, &g, Shard { k, n: 2 }, &|_, _| {}).unwrap());
        }
        parts.sort_by_key(|p| p.index);
        assert_eq!(parts, all);
    }

    /// A sweep computes shared prefixes and block hashes once for all points; each point must
    /// still report what a run of its configuration alone reports, also at a block size other
    /// than the one the hashes were computed for.
    #[test]
    fn a_sweep_point_reports_what_a_single_run_does() {
        let t = crate::trace::generate::random::generate(
            &crate::trace::generate::random::Params {
                num_prompts: 60,
                random_input_len: 900,
                random_prefix_len: 700,
                random_output_len: 64,
                ..Default::default()
            },
            3,
        )
        .unwrap();
        let mut g = Grid::default();
        g.add_arg("block_size=16,32").unwrap();
        g.add_arg("gpu_memory_utilization=0.9,0.22").unwrap();
        let base = RunConfig::default();
        let points = run_grid(&t, &base, &g, Shard::ALL, &|_, _| {}).unwrap();
        assert_eq!(points.len(), 4);
        for p in &points {
            let mut cfg = base.clone();
            for (k, v) in &p.params {
                cfg.set(k, v).unwrap();
            }
            let alone = crate::pipeline::run(&t, &cfg).unwrap();
            assert_eq!(p.metrics, point_metrics(&alone), "point {}", p.index);
            assert!(alone.result.reqs.iter().all(|r| r.finish.is_some()));
        }
        // The memory setting matters, so the comparison above covers distinct results.
        assert!(points[0].metrics != points[1].metrics);
    }
}

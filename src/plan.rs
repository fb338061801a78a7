//! `kvreplay plan`: answers to capacity questions, each with the points it searched.
//!
//! - [`max_rate`]: the highest request rate (the trace's arrivals compressed by a factor) at which
//!   every SLO holds: bracket by doubling or halving, then bisect in log space.
//! - [`smallest_tier`]: the smallest CPU (or disk) tier that reaches a target (a hit rate, a
//!   latency): bracket by doubling, then bisect to `resolution_gib`. LRU is a stack algorithm, so
//!   hits grow monotonically with size.
//! - [`best_chunk`]: the chunk size that minimises a metric for a remote store at a given RTT.
//!
//! Every search is deterministic: the same trace, configuration and targets give the same points.

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::pipeline::run;
use crate::sweep::{METRICS, point_metrics};
use crate::trace::Trace;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// A condition on a named metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// Named metric (`ttft_p99_s`, `hit_rate_total`, ...).
    pub metric: String,
    /// Threshold, in the metric's unit.
    pub threshold: f64,
    /// True when the metric must be at least the threshold (rates, hit rates); false when at
    /// most (latencies).
    pub at_least: bool,
}

impl Target {
    /// Parses `ttft_p99=2s`, `tpot_p99=50ms`, `hit_rate_total=0.8`, `output_tps=1000`. The metric
    /// is one of [`crate::sweep::METRICS`] (a time may drop its `_s` when its value has a unit);
    /// a time needs a unit unless its name ends in `_s`; a hit rate is a fraction in [0, 1].
    pub fn parse(s: &str) -> Result<Target> {
        let accepted = || {
            format!(
                "accepted: {} (times with a unit: 2s, 50ms, 250us)",
                METRICS.join(", ")
            )
        };
        let bad = |why: String| Error::Config(format!("{s:?}: {why}"));
        let (name, val) = s.split_once('=').ok_or_else(|| {
            bad(format!(
                "expected METRIC=VALUE, e.g. ttft_p99=2s; {}",
                accepted()
            ))
        })?;
        let (name, val) = (name.trim(), val.trim());
        let (num, unit) = if let Some(v) = val.strip_suffix("ms") {
            (v, Some(1e-3))
        } else if let Some(v) = val.strip_suffix("us") {
            (v, Some(1e-6))
        } else if let Some(v) = val.strip_suffix('s') {
            (v, Some(1.0))
        } else {
            (val, None)
        };
        let x: f64 = num
            .trim()
            .parse()
            .map_err(|_| bad(format!("{val:?} is not a number")))?;
        if !x.is_finite() || x < 0.0 {
            return Err(bad("the value must be a non-negative number".into()));
        }
        // `ttft_p99=2s` names `ttft_p99_s`.
        let with_s = format!("{name}_s");
        let metric = if METRICS.contains(&name) {
            name
        } else if unit.is_some() && METRICS.contains(&with_s.as_str()) {
            with_s.as_str()
        } else if METRICS.contains(&with_s.as_str()) {
            return Err(bad(format!(
                "{name} is a time: give its unit ({x}s or {}ms) or write {with_s}={x}",
                x * 1e3
            )));
        } else {
            return Err(bad(format!("unknown metric {name:?}; {}", accepted())));
        };
        let is_time = metric.ends_with("_s");
        if unit.is_some() && !is_time {
            return Err(bad(format!(
                "{metric} is not a time: give it without a unit"
            )));
        }
        let threshold = x * unit.unwrap_or(1.0);
        if metric.starts_with("hit_rate") && threshold > 1.0 {
            return Err(bad(format!(
                "{metric} is a fraction of the prompt tokens, from 0 to 1"
            )));
        }
        let at_least = metric.starts_with("hit_rate")
            || metric.ends_with("_tps")
            || metric.contains("throughput")
            || metric.ends_with("per_min")
            || metric == "completed";
        Ok(Target {
            metric: metric.to_string(),
            threshold,
            at_least,
        })
    }

    /// Whether `metrics` satisfy the target (a missing metric does not).
    pub fn met(&self, metrics: &BTreeMap<String, f64>) -> bool {
        match metrics.get(&self.metric) {
            Some(v) if self.at_least => *v >= self.threshold,
            Some(v) => *v <= self.threshold,
            None => false,
        }
    }
}

/// One evaluated point of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The searched quantity (arrival-rate factor, GiB, chunk tokens).
    pub x: f64,
    /// What the simulation gave.
    pub metrics: BTreeMap<String, f64>,
    /// Whether every target held.
    pub ok: bool,
}

/// A search's answer and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What was asked.
    pub question: String,
    /// The answer (`None`: no searched point satisfied the targets).
    pub answer: Option<f64>,
    /// The answer in words.
    pub answer_text: String,
    /// Every point evaluated, in search order.
    pub evidence: Vec<Probe>,
}

/// The setting a plan searches over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// The open-loop arrival-rate multiplier (`qps_scale`).
    QpsScale,
    /// LMCache's CPU tier, GiB (`max_local_cpu_size_gb`).
    CpuGib,
    /// LMCache's disk tier, GiB (`max_local_disk_size_gb`).
    DiskGib,
    /// LMCache's chunk size, tokens (`chunk_size`).
    ChunkSize,
    /// Replicas of the engine behind the router (`replicas`).
    Replicas,
    /// Prefill replicas of a disaggregated fleet (`pd_prefill`).
    Prefill,
    /// Decode replicas of a disaggregated fleet (`pd_decode`).
    Decode,
}

impl Knob {
    /// The configuration key it is (for questions and tables).
    pub fn key(self) -> &'static str {
        match self {
            Knob::QpsScale => "qps_scale",
            Knob::CpuGib => "max_local_cpu_size_gb",
            Knob::DiskGib => "max_local_disk_size_gb",
            Knob::ChunkSize => "chunk_size",
            Knob::Replicas => "replicas",
            Knob::Prefill => "pd_prefill",
            Knob::Decode => "pd_decode",
        }
    }

    /// `cfg` with the knob at `x`.
    fn apply(self, cfg: &mut RunConfig, x: f64) -> Result<()> {
        let bad = |want: &str| Error::Config(format!("{}: expected {want}, found {x}", self.key()));
        match self {
            Knob::QpsScale if x > 0.0 && x.is_finite() => cfg.arrivals.qps_scale = x,
            Knob::CpuGib if x >= 0.0 && x.is_finite() => cfg.lmcache.max_local_cpu_size = Some(x),
            Knob::DiskGib if x >= 0.0 && x.is_finite() => cfg.lmcache.max_local_disk_size = Some(x),
            Knob::ChunkSize if x >= 1.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => {
                cfg.lmcache.chunk_size = Some(x as u32)
            }
            Knob::Replicas if x >= 1.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => {
                cfg.fleet.replicas = x as u32
            }
            Knob::Prefill | Knob::Decode
                if x >= 1.0 && x.fract() == 0.0 && x <= u32::MAX as f64 =>
            {
                let pd = cfg.fleet.pd.get_or_insert_with(Default::default);
                if self == Knob::Prefill {
                    pd.prefill = x as u32;
                } else {
                    pd.decode = x as u32;
                }
                cfg.fleet.replicas = pd.prefill + pd.decode;
            }
            Knob::ChunkSize | Knob::Replicas | Knob::Prefill | Knob::Decode => {
                return Err(bad("a positive integer"));
            }
            _ => return Err(bad("a positive number")),
        }
        Ok(())
    }
}

fn evaluate(
    trace: &Trace,
    cfg: &RunConfig,
    targets: &[Target],
    x: f64,
    knob: Knob,
) -> Result<Probe> {
    let mut c = cfg.clone();
    knob.apply(&mut c, x)?;
    let out = run(trace, &c)?;
    let metrics = point_metrics(&out);
    let ok = targets.iter().all(|t| t.met(&metrics));
    Ok(Probe { x, metrics, ok })
}

/// Evaluates the targets at `x`, keeps the point as evidence, and says whether they hold.
fn probe(eval: &dyn Fn(f64) -> Result<Probe>, x: f64, evidence: &mut Vec<Probe>) -> Result<bool> {
    let p = eval(x)?;
    crate::util::progress::note_probe();
    let ok = p.ok;
    evidence.push(p);
    Ok(ok)
}

/// The targets in words, joined by "and".
fn describe(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            let op = if t.at_least { ">=" } else { "<=" };
            format!("{} {op} {}", t.metric, t.threshold)
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Finds a point where the targets hold and, next to it, one where they fail, by doubling or
/// halving from `start` within `limits`. `ok_below`: the targets hold for small `x` (arrival
/// rate) rather than large `x` (tier size). Returns `(ok, fail)`: `ok` is `None` when no point in
/// the limits holds, `fail` is `None` when every point towards the limit holds.
fn bracket(
    eval: &dyn Fn(f64) -> Result<Probe>,
    start: f64,
    ok_below: bool,
    limits: (f64, f64),
    evidence: &mut Vec<Probe>,
) -> Result<(Option<f64>, Option<f64>)> {
    let within = |x: f64| (limits.0..=limits.1).contains(&x);
    let (towards_fail, towards_ok) = if ok_below { (2.0, 0.5) } else { (0.5, 2.0) };
    let mut holds_at = |x: f64| probe(eval, x, evidence);
    if holds_at(start)? {
        let mut ok = start;
        loop {
            let x = ok * towards_fail;
            if !within(x) {
                return Ok((Some(ok), None));
            }
            if !holds_at(x)? {
                return Ok((Some(ok), Some(x)));
            }
            ok = x;
        }
    }
    let mut fail = start;
    loop {
        let x = fail * towards_ok;
        if !within(x) {
            return Ok((None, Some(fail)));
        }
        if holds_at(x)? {
            return Ok((Some(x), Some(fail)));
        }
        fail = x;
    }
}

pub use crate::trace::stats::base_rate;

/// The highest arrival rate at which every SLO holds.
pub fn max_rate(trace: &Trace, cfg: &RunConfig, slos: &[Target]) -> Result<Plan> {
    if slos.is_empty() {
        return Err(Error::Config(
            "give at least one SLO, e.g. --slo ttft_p99=2s".into(),
        ));
    }
    let rate = base_rate(trace).ok_or_else(|| {
        Error::Config("the trace has no open-loop arrival rate to scale (closed-loop clients set their own pace)".into())
    })?;
    let mut evidence = Vec::new();
    let eval = |x: f64| evaluate(trace, cfg, slos, x, Knob::QpsScale);
    let best = match bracket(&eval, 1.0, true, (1.0 / 1024.0, 4096.0), &mut evidence)? {
        (Some(mut ok), Some(mut fail)) => {
            // Bisect in log space: rates span decades.
            for _ in 0..8 {
                let mid = (ok * fail).sqrt();
                if probe(&eval, mid, &mut evidence)? {
                    ok = mid
                } else {
                    fail = mid
                }
            }
            Some(ok)
        }
        (ok, _) => ok,
    };
    let answer = best.map(|s| s * rate);
    Ok(Plan {
        question: format!("highest request rate meeting {}", describe(slos)),
        answer,
        answer_text: match best {
            Some(s) => format!(
                "{:.3} req/s ({s:.3} x the trace's {rate:.3} req/s)",
                s * rate
            ),
            None => "the SLOs fail even at 1/1024 of the trace's rate".into(),
        },
        evidence,
    })
}

/// The smallest tier (`knob`: [`Knob::CpuGib`] or [`Knob::DiskGib`]) reaching every target, to
/// within `resolution_gib`.
pub fn smallest_tier(
    trace: &Trace,
    cfg: &RunConfig,
    knob: Knob,
    targets: &[Target],
    resolution_gib: f64,
) -> Result<Plan> {
    if targets.is_empty() {
        return Err(Error::Config(
            "give at least one target, e.g. --target hit_rate_total=0.8".into(),
        ));
    }
    let (best, evidence) = smallest(
        trace,
        cfg,
        knob,
        targets,
        (1.0 / 16.0, 16_384.0),
        resolution_gib,
    )?;
    Ok(Plan {
        question: format!("smallest {} meeting {}", knob.key(), describe(targets)),
        answer: best,
        answer_text: match best {
            Some(g) => format!("{g} GiB"),
            None => "not reached even with 16 TiB".into(),
        },
        evidence,
    })
}

/// The fewest replicas (at the trace's own rate, behind `cfg`'s router) at which every SLO
/// holds, up to `max_replicas`; the answer's GPUs are replicas x tensor-parallel ranks.
pub fn fewest_replicas(
    trace: &Trace,
    cfg: &RunConfig,
    slos: &[Target],
    max_replicas: u32,
) -> Result<Plan> {
    if slos.is_empty() {
        return Err(Error::Config(
            "give at least one SLO, e.g. --slo ttft_p99=2s".into(),
        ));
    }
    let max_replicas = max_replicas.min(crate::fleet::MAX_REPLICAS);
    let limits = (1.0, max_replicas.max(1) as f64);
    let (best, evidence) = smallest(trace, cfg, Knob::Replicas, slos, limits, 1.0)?;
    let tp = cfg.engine.tensor_parallel_size.unwrap_or(1);
    Ok(Plan {
        question: format!(
            "fewest replicas ({} router) meeting {} at the trace's rate",
            cfg.fleet.router.name(),
            describe(slos)
        ),
        answer: best,
        answer_text: match best {
            Some(n) => format!("{n} replicas = {} GPUs", n as u32 * tp),
            None => format!("not met even with {max_replicas} replicas"),
        },
        evidence,
    })
}

/// A disaggregated fleet's search passes and its answer `(prefill, decode)`.
pub type PdPlan = (Vec<Plan>, Option<(u32, u32)>);

/// The fewest GPUs of a disaggregated fleet ((prefill + decode replicas) x tensor-parallel
/// ranks, `cfg`'s P/D settings and router) meeting every SLO at the trace's rate, searched in
/// passes, each a [`Plan`] of its own: the fewest aggregated replicas N first (a bound), then
/// the fewest prefill replicas with N decoders, the fewest decoders with those, and the fewest
/// prefill replicas again with those decoders (one knob at a time, as each SLO improves with
/// either pool; the passes need not find a smaller split that only moving both at once reveals).
/// Returns the passes and the answer `(prefill, decode)`.
pub fn fewest_pd(
    trace: &Trace,
    cfg: &RunConfig,
    slos: &[Target],
    max_replicas: u32,
) -> Result<PdPlan> {
    let max_replicas = max_replicas.min(crate::fleet::MAX_REPLICAS);
    let mut passes = Vec::new();
    let mut agg = cfg.clone();
    agg.fleet.pd = None;
    let bound = fewest_replicas(trace, &agg, slos, max_replicas)?;
    let n = bound.answer.unwrap_or(max_replicas.max(1) as f64) as u32;
    passes.push(bound);
    let limits = (1.0, max_replicas.max(1) as f64);
    let mut split = cfg.clone();
    let pd = split.fleet.pd.get_or_insert_with(Default::default);
    pd.decode = n;
    let mut pass = |split: &mut RunConfig, knob: Knob, other: u32| -> Result<Option<u32>> {
        let (best, evidence) = smallest(trace, split, knob, slos, limits, 1.0)?;
        let (what, fixed) = match knob {
            Knob::Prefill => ("prefill", format!("{other} decode")),
            _ => ("decode", format!("{other} prefill")),
        };
        passes.push(Plan {
            question: format!(
                "fewest {what} replicas with {fixed} replicas ({} router) meeting {}",
                cfg.fleet.router.name(),
                describe(slos)
            ),
            answer: best,
            answer_text: match best {
                Some(x) => format!("{x} {what} replicas"),
                None => format!("not met even with {max_replicas} {what} replicas"),
            },
            evidence,
        });
        if let Some(x) = best {
            knob.apply(split, x)?;
        }
        Ok(best.map(|x| x as u32))
    };
    let Some(p1) = pass(&mut split, Knob::Prefill, n)? else {
        return Ok((passes, None));
    };
    let Some(d) = pass(&mut split, Knob::Decode, p1)? else {
        return Ok((passes, None));
    };
    let p = pass(&mut split, Knob::Prefill, d)?.unwrap_or(p1);
    Ok((passes, Some((p, d))))
}

/// The smallest `knob` within `limits` at which the targets hold (they hold from some value up):
/// bracket by doubling from the lower limit (or 1), then bisect between the largest failing
/// value and it, to `resolution`. Returns the answer and every probe.
fn smallest(
    trace: &Trace,
    cfg: &RunConfig,
    knob: Knob,
    targets: &[Target],
    limits: (f64, f64),
    resolution: f64,
) -> Result<(Option<f64>, Vec<Probe>)> {
    let mut evidence = Vec::new();
    let eval = |x: f64| evaluate(trace, cfg, targets, x, knob);
    let start = limits.0.max(1.0);
    let best = match bracket(&eval, start, false, limits, &mut evidence)? {
        (Some(mut ok), fail) => {
            let mut fail = fail.unwrap_or(0.0);
            while ok - fail > resolution {
                let mid = ((fail + ok) / 2.0 / resolution).ceil() * resolution;
                if mid >= ok || mid <= fail {
                    break;
                }
                if probe(&eval, mid, &mut evidence)? {
                    ok = mid
                } else {
                    fail = mid
                }
            }
            Some(ok)
        }
        (None, _) => None,
    };
    Ok((best, evidence))
}

/// The chunk size among `candidates` minimising `metric` with a remote store `rtt_ms` away.
pub fn best_chunk(
    trace: &Trace,
    cfg: &RunConfig,
    rtt_ms: f64,
    candidates: &[u32],
    metric: &str,
) -> Result<Plan> {
    if candidates.is_empty() {
        return Err(Error::Config(
            "give at least one candidate chunk size".into(),
        ));
    }
    if !(rtt_ms >= 0.0 && rtt_ms.is_finite()) {
        return Err(Error::Config(format!(
            "rtt_ms: expected a number >= 0, found {rtt_ms}"
        )));
    }
    let mut c = cfg.clone();
    if !matches!(c.effective_tier(), crate::config::Tier::Remote) {
        c.tier = Some(crate::config::Tier::Remote);
    }
    c.rtt_s = rtt_ms / 1e3;
    let evidence: Vec<Probe> = candidates
        .par_iter()
        .map(|&k| {
            let mut p = evaluate(trace, &c, &[], k as f64, Knob::ChunkSize)?;
            p.ok = p.metrics.contains_key(metric);
            Ok(p)
        })
        .collect::<Result<_>>()?;
    let best = evidence
        .iter()
        .filter_map(|p| p.metrics.get(metric).map(|v| (p.x, *v)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    Ok(Plan {
        question: format!("chunk size minimising {metric} with the remote store {rtt_ms} ms away"),
        answer: best.map(|b| b.0),
        answer_text: match best {
            Some((k, v)) => format!("chunk_size {k} ({metric} = {v:.4})"),
            None => format!("{metric} is undefined for every candidate"),
        },
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::generate::random;

    fn trace(rate: f64, n: u32, prefix: u32) -> Trace {
        random::generate(
            &random::Params {
                num_prompts: n,
                random_input_len: 1024,
                random_output_len: 32,
                random_prefix_len: prefix,
                request_rate: random::RequestRate(rate),
                ..Default::default()
            },
            1,
        )
        .unwrap()
    }

    #[test]
    fn targets_parse_with_units_and_directions() {
        let t = Target::parse("ttft_p99=2s").unwrap();
        assert_eq!(
            (t.metric.as_str(), t.threshold, t.at_least),
            ("ttft_p99_s", 2.0, false)
        );
        let t = Target::parse("tpot_p99=50ms").unwrap();
        assert_eq!((t.metric.as_str(), t.threshold), ("tpot_p99_s", 0.05));
        let t = Target::parse("hit_rate_total=0.8").unwrap();
        assert!(t.at_least && t.threshold == 0.8);
        assert!(Target::parse("ttft_p99").is_err() && Target::parse("ttft=fast").is_err());
        // A time named with its `_s` takes seconds without a unit.
        assert_eq!(Target::parse("ttft_p99_s=2").unwrap().threshold, 2.0);
    }

    /// Regression: `--slo ttft_p99=2` (no unit) became an unknown metric and `plan` answered
    /// "the SLOs fail even at 1/1024 of the trace's rate" with exit 0; unknown metrics and
    /// impossible targets were accepted.
    #[test]
    fn unknown_metrics_missing_units_and_impossible_targets_are_errors() {
        let err = |s: &str| Target::parse(s).unwrap_err().to_string();
        let e = err("ttft_p99=2");
        assert!(
            e.contains("ttft_p99 is a time: give its unit (2s or 2000ms)"),
            "{e}"
        );
        for s in ["bogus=0.5", "ttft_p101=2s"] {
            let e = err(s);
            assert!(
                e.contains("unknown metric") && e.contains("accepted: ttft_mean_s"),
                "{e}"
            );
        }
        let e = err("hit_rate_total=1.5");
        assert!(
            e.contains("a fraction of the prompt tokens, from 0 to 1"),
            "{e}"
        );
        let e = err("output_tps=5s");
        assert!(e.contains("output_tps is not a time"), "{e}");
        assert!(err("ttft_p99=-1s").contains("non-negative"));
    }

    #[test]
    fn max_rate_lies_between_a_passing_and_a_failing_probe() {
        let t = trace(4.0, 120, 0);
        let cfg = RunConfig::default();
        let slo = [Target::parse("ttft_p99=200ms").unwrap()];
        let p = max_rate(&t, &cfg, &slo).unwrap();
        let ans = p.answer.unwrap() / base_rate(&t).unwrap();
        assert!(p.evidence.iter().any(|e| e.ok && (e.x - ans).abs() < 1e-12));
        // Monotone evidence: every probe above the answer failed, every probe at or below passed.
        for e in &p.evidence {
            assert_eq!(e.ok, e.x <= ans + 1e-12, "{:?}", (e.x, e.ok, ans));
        }
        // Deterministic.
        assert_eq!(max_rate(&t, &cfg, &slo).unwrap(), p);
    }

    /// Eight 4,096-token prompts sent at once, one token each, on a fitted 10 ms step.
    fn eight_prompts() -> (Trace, RunConfig) {
        use crate::trace::Run;
        let reqs = (0..8u64)
            .map(|i| crate::trace::Request::new(i, 0, vec![Run::new(i, 0, 4096)], 1))
            .collect();
        let t = Trace {
            meta: crate::trace::TraceMeta::new("test"),
            requests: reqs,
        };
        let mut cfg = RunConfig::default();
        cfg.cost.fitted = Some(crate::testkit::ten_ms_steps());
        (t, cfg)
    }

    /// Eight 4,096-token prompts at once, every step 10 ms, two prompts per step (8,192-token
    /// budget): one replica gives TTFTs of 10, 10, 20, 20, 30, 30, 40, 40 ms; two replicas (four
    /// prompts each) 10, 10, 20, 20 ms. A p99 TTFT of 20 ms needs two replicas.
    #[test]
    fn fewest_replicas_meeting_an_slo_by_hand() {
        let (t, cfg) = eight_prompts();
        let slo = [Target::parse("ttft_p99=20ms").unwrap()];
        let p = fewest_replicas(&t, &cfg, &slo, 64).unwrap();
        assert_eq!(p.answer, Some(2.0));
        assert_eq!(p.answer_text, "2 replicas = 2 GPUs");
        let probes: Vec<(f64, bool)> = p.evidence.iter().map(|e| (e.x, e.ok)).collect();
        assert_eq!(probes, vec![(1.0, false), (2.0, true)]);
        assert!((p.evidence[0].metrics["ttft_p99_s"] - 0.04).abs() < 0.001);
        // Unreachable within the limit: said so, with the probes made.
        let tight = [Target::parse("ttft_p99=5ms").unwrap()];
        let p = fewest_replicas(&t, &cfg, &tight, 4).unwrap();
        assert_eq!((p.answer, p.evidence.len()), (None, 3));
    }

    /// The eight prompts of `fewest_replicas_meeting_an_slo_by_hand`, disaggregated with the
    /// prefiller streaming the first (only) token: TTFT is the prefill's, so two prefill
    /// replicas meet a p99 of 20 ms and one decoder suffices (it has nothing to decode).
    #[test]
    fn fewest_prefill_and_decode_replicas_by_hand() {
        let (t, mut cfg) = eight_prompts();
        cfg.set("pd_first_token", &serde_json::json!("prefiller"))
            .unwrap();
        let slo = [Target::parse("ttft_p99=20ms").unwrap()];
        let (passes, answer) = fewest_pd(&t, &cfg, &slo, 64).unwrap();
        assert_eq!(answer, Some((2, 1)));
        let answers: Vec<Option<f64>> = passes.iter().map(|p| p.answer).collect();
        assert_eq!(answers, [Some(2.0), Some(2.0), Some(1.0), Some(2.0)]);
        // One prefill replica: TTFTs up to 40 ms.
        let one = passes[1].evidence.iter().find(|e| e.x == 1.0).unwrap();
        assert!(!one.ok && (one.metrics["ttft_p99_s"] - 0.04).abs() < 0.001);
    }

    #[test]
    fn smallest_cpu_tier_meets_its_hit_target_and_half_of_it_does_not() {
        // A shared 1024-token prefix on every prompt: a small CPU tier already serves it.
        let t = trace(2.0, 60, 1024);
        let mut cfg = RunConfig {
            tier: Some(crate::config::Tier::Cpu),
            ..Default::default()
        };
        cfg.engine.enable_prefix_caching = Some(false);
        let target = [Target::parse("hit_rate_cpu=0.3").unwrap()];
        let p = smallest_tier(&t, &cfg, Knob::CpuGib, &target, 0.25).unwrap();
        let g = p.answer.unwrap();
        assert!(p.evidence.iter().any(|e| e.x == g && e.ok));
        assert!(p.evidence.iter().filter(|e| e.x < g).all(|e| !e.ok));
    }

    #[test]
    fn an_fp8_kv_cache_halves_the_cpu_tier_long_doc_qa_needs() {
        use crate::trace::generate::long_doc_qa;
        // 16 documents of 2,048 tokens (8 chunks of 256), asked again in the same order: a
        // GPU holding 4,096 tokens keeps none of them for the query round, so every query-round
        // hit comes from the CPU tier, which must hold all 16: 16 x 2,048 x 128 KiB = 4 GiB in
        // bf16, 2 GiB at one byte per element. A whole-document hit loads all but the last
        // token: 2,047 of each 4,096 prompt tokens of the run, 0.49976.
        let t = long_doc_qa::generate(
            &long_doc_qa::Params {
                num_documents: 16,
                document_length: 2048,
                output_len: 4,
                repeat_count: 1,
                repeat_mode: long_doc_qa::RepeatMode::Tile,
                max_inflight_requests: 1,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let target = [Target::parse("hit_rate_total=0.4997").unwrap()];
        let mut answers = Vec::new();
        for dtype in ["auto", "fp8"] {
            let mut cfg = RunConfig {
                tier: Some(crate::config::Tier::Cpu),
                ..Default::default()
            };
            cfg.engine.num_gpu_blocks = Some(256);
            cfg.set("kv_cache_dtype", &serde_json::json!(dtype))
                .unwrap();
            let p = smallest_tier(&t, &cfg, Knob::CpuGib, &target, 0.125).unwrap();
            answers.push(p.answer.unwrap());
        }
        assert_eq!(answers, [4.0, 2.0]);
    }
}

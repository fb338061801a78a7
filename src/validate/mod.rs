//! `kvreplay validate`: predict every run of a study and compare with what was measured.
//!
//! For each run: the study's setup with the run's `set` applied (configuration keys go to the
//! run configuration, `case` selects a workload variant, other keys override workload
//! parameters), the workload generated as the study's tool would, simulated, and each measured
//! metric computed with its definition ([`crate::metrics::summary`]'s named metrics). The
//! parameters a study leaves open (the GPU's compute and memory efficiency and its per-step
//! overhead, which spec sheets do not give) may be fitted on the study's `fit` runs only; `check`
//! runs are never used for fitting, and their errors are the ones reported per study.

pub mod consistency;
pub mod optimize;
pub mod output;
pub mod study;

pub use output::{render, write_parquet};

use crate::config::RunConfig;
use crate::cost::GpuProfile;
use crate::error::{Error, InputError, Result};
use crate::metrics::record::records;
use crate::metrics::summary::RunSummary;
use crate::pipeline;
use crate::trace::Trace;
use crate::trace::generate::from_study;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use study::{Role, Study, StudyRun, set_dotted};

/// How to validate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fit the open parameters on `fit` runs.
    pub fit: bool,
    /// Most simulation sets the fit may evaluate for four parameters (proportionally more for
    /// more).
    pub max_evals: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fit: true,
            max_evals: 120,
        }
    }
}

/// One metric of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// Metric name as the study writes it.
    pub metric: String,
    /// kvreplay's prediction (`None`: the name is not computable).
    pub predicted: Option<f64>,
    /// The study's measurement.
    pub measured: f64,
    /// (predicted - measured) / measured.
    pub error: Option<f64>,
    /// The prediction's 95 % interval (see [`StudyResult::interval_log_sigma`]); `None` without
    /// a fit or a prediction.
    pub interval: Option<(f64, f64)>,
}

/// One run's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Position in the study (0-based).
    pub index: usize,
    /// Fit or check.
    pub role: Role,
    /// The run's `set`.
    pub set: Map<String, Value>,
    /// Its metrics.
    pub metrics: Vec<MetricRow>,
    /// Why its measurements do not hold together under the study's setup (empty: they do;
    /// see [`consistency`]). Such a run's errors are reported apart.
    pub inconsistencies: Vec<String>,
}

/// What the fit did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    /// Parameter -> fitted value.
    pub params: BTreeMap<String, f64>,
    /// Indices of the runs used.
    pub runs: Vec<usize>,
    /// Mean squared log error over the fit runs' metrics, before and after.
    pub objective_before: f64,
    /// After fitting.
    pub objective_after: f64,
    /// Evaluations (sets of simulations).
    pub evaluations: usize,
}

/// One study's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyResult {
    /// Study name.
    pub study: String,
    /// Its file.
    pub file: String,
    /// The GPU profile used and why.
    pub gpu: String,
    /// Assumptions and remarks.
    pub notes: Vec<String>,
    /// The fit, when one was made.
    pub fitted: Option<FitReport>,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Median |relative error| over the metrics of the check runs whose measurements hold
    /// together.
    pub check_median_rel_error: Option<f64>,
    /// Largest |relative error| over those.
    pub check_max_rel_error: Option<f64>,
    /// Check runs whose measurements do not hold together.
    pub inconsistent_check_runs: Vec<usize>,
    /// Median |relative error| over their metrics.
    pub inconsistent_check_median_rel_error: Option<f64>,
    /// Largest |relative error| over their metrics.
    pub inconsistent_check_max_rel_error: Option<f64>,
    /// Standard deviation of ln(predicted / measured) over the fit runs' metrics once fitted:
    /// the model's error where it was fitted, taken as a log-normal predictive error, so each
    /// prediction's 95 % interval is `predicted x exp(±1.96 sigma)` (uncertainty of the fitted
    /// parameters beyond it, and of transfer parameters, which studies run at spec values, is
    /// not included). `None` without a fit.
    pub interval_log_sigma: Option<f64>,
    /// Share of the consistent check runs' measured values inside their predictions' intervals.
    pub check_coverage: Option<f64>,
}

/// A study run made ready to simulate: its configuration and workload.
struct StudyCase {
    cfg: RunConfig,
    trace: Trace,
    /// With `warmup_repeat`, the first request index of the measured copy.
    measured_from: usize,
    /// With `warmup_repeat`, how far the measured copy's rounds were shifted.
    round_shift: u32,
    /// For a tool that counts output tokens itself (llmperf), its tokens per generated token.
    counted_output: Option<f64>,
}

/// The GPU profile a study's `gpu` text names; for a GPU the study calls "unknown ...", the
/// one its text suggests or H100 80GB (then `false`: assumed, not stated). A named GPU kvreplay
/// has no profile for is an error listing the known ones, never a silent substitute.
fn resolve_gpu(text: &str, file: &str) -> Result<(String, String, bool)> {
    if let Ok(p) = GpuProfile::lookup(text) {
        return Ok((p.name.clone(), format!("{} (as stated)", p.name), true));
    }
    let unknown = text.trim().to_ascii_lowercase().starts_with("unknown");
    match GpuProfile::find_in_text(text) {
        Some(p) => Ok((
            p.name.clone(),
            format!("{} (named in {text:?})", p.name),
            true,
        )),
        None if unknown => Ok((
            "H100".into(),
            format!("H100 80GB SXM assumed: the study says {text:?}"),
            false,
        )),
        None => Err(Error::Input(InputError::new(
            file,
            0,
            "setup.gpu",
            format!(
                "{text:?} is not a GPU kvreplay has a profile for (known: {}); write \"unknown ...\" when the GPU is not known",
                GpuProfile::shipped_names().join(", ")
            ),
        ))),
    }
}

/// One line per vLLM setting of the study that kvreplay does not model.
fn engine_notes(study: &Study) -> Vec<String> {
    study
        .engine
        .iter()
        .filter(|(k, _)| !RunConfig::is_key(k))
        .map(|(k, v)| format!("setup.engine.{k} = {v} is not modelled (reported, not used)"))
        .collect()
}

/// Why run `run`'s measurements do not hold together (see [`consistency`]).
fn inconsistencies(study: &Study, run: &StudyRun, gpu: &str, stated: bool) -> Result<Vec<String>> {
    let (workload, _) = run_workload(study, run);
    let seed = workload.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let trace = from_study(&study.kind, &workload, seed, &study.file)?;
    let card = crate::model::lookup(&study.model)?;
    let profile = GpuProfile::lookup(gpu)?;
    let setup = consistency::Setup {
        trace: &trace,
        tool_counts_output: crate::trace::generate::counts_output_tokens_itself(&study.kind),
        card: &card,
        gpu: stated.then_some((&profile, study.tp)),
    };
    Ok(consistency::check(&run.measured, &setup))
}

/// A run's workload parameters (the study's, then its case's overrides, then the run's own
/// workload keys) and whether it repeats a warmup copy first.
pub(crate) fn run_workload(study: &Study, run: &StudyRun) -> (Map<String, Value>, bool) {
    let mut workload = study.workload.clone();
    let mut warmup_repeat = false;
    if let Some(Value::String(c)) = run.set.get("case")
        && let Some(case) = study.cases.get(c)
    {
        for (path, v) in &case.overrides {
            set_dotted(&mut workload, path, v.clone());
        }
    }
    for (k, v) in &run.set {
        match k.as_str() {
            "case" => {}
            "warmup_repeat" => warmup_repeat = v.as_bool().unwrap_or(false),
            _ if RunConfig::is_key(k) => {}
            _ => set_dotted(&mut workload, k, v.clone()),
        }
    }
    (workload, warmup_repeat)
}

fn prepare(
    study: &Study,
    run: &StudyRun,
    gpu: &str,
    overrides: &Map<String, Value>,
) -> Result<StudyCase> {
    let mut cfg = RunConfig::default();
    let ctx = |e: Error| Error::Config(format!("{}: runs[{}]: {e}", study.file, run.index));
    cfg.set("model", &json!(study.model)).map_err(ctx)?;
    cfg.set("gpu", &json!(gpu)).map_err(ctx)?;
    cfg.set("tp", &json!(study.tp)).map_err(ctx)?;
    // The vLLM settings kvreplay models; the others are reported ([`engine_notes`]).
    for (k, v) in &study.engine {
        if RunConfig::is_key(k) {
            cfg.set(k, v).map_err(ctx)?;
        }
    }
    for (k, v) in &study.lmcache {
        // LMCache keys in a study are those of an lmcache_config.yaml; the ones kvreplay does
        // not model are left out, as `--lmcache-config` does.
        if crate::config::keys::find(k).is_some_and(|key| key.lmcache_file) {
            cfg.set(k, v).map_err(ctx)?;
        }
    }
    let (workload, warmup_repeat) = run_workload(study, run);
    for (k, v) in &run.set {
        if RunConfig::is_key(k) {
            cfg.set(k, v).map_err(ctx)?;
        }
    }
    // With LMCache configured but no tier named, the study's setup describes the tier.
    let mut token_ratio = None;
    for (k, v) in overrides {
        if k == LLMPERF_TOKEN_RATIO {
            token_ratio = v.as_f64();
            continue;
        }
        cfg.set(k, v).map_err(ctx)?;
    }
    // llmperf counts output tokens its own way (see LLMPERF_TOKEN_RATIO).
    let counted_output = crate::trace::generate::counts_output_tokens_itself(&study.kind)
        .then(|| token_ratio.unwrap_or(1.0));
    let seed = workload.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let trace = from_study(&study.kind, &workload, seed, &study.file)?;
    if !warmup_repeat {
        return Ok(StudyCase {
            cfg,
            trace,
            measured_from: 0,
            round_shift: 0,
            counted_output,
        });
    }
    // The identical workload ran once, unmeasured, right before: simulate it alone to know when
    // it ends, then append a second copy after it (open loop: shifted by that end; closed loop:
    // in later rounds of the same pools, so the pools' barrier orders them).
    // Arrivals are scaled once, here: the measured copy follows the scaled first one.
    let first = pipeline::prepare(&trace, &cfg)?;
    let first_end = first.simulate()?.end.as_ns();
    let trace = first.trace.into_owned();
    cfg.arrivals.qps_scale = 1.0;
    let n = trace.requests.len();
    let max_id = trace.requests.iter().map(|r| r.id).max().unwrap_or(0);
    let max_round = trace.requests.iter().map(|r| r.round).max().unwrap_or(0);
    let max_session = trace
        .requests
        .iter()
        .filter_map(|r| r.session)
        .max()
        .unwrap_or(0);
    let mut combined = trace.clone();
    for r in &trace.requests {
        let mut c = r.clone();
        c.id = max_id + 1 + r.id;
        if c.pool.is_some() {
            c.round = r.round + max_round + 1;
        } else {
            c.arrival_ns = first_end.saturating_add(r.arrival_ns);
        }
        c.session = r.session.map(|s| s + max_session + 1);
        combined.requests.push(c);
    }
    Ok(StudyCase {
        cfg,
        trace: combined,
        measured_from: n,
        round_shift: max_round + 1,
        counted_output,
    })
}

/// Simulates a prepared run and computes `names`.
fn predict(p: &StudyCase, names: &[String]) -> Result<BTreeMap<String, Option<f64>>> {
    let run = pipeline::prepare(&p.trace, &p.cfg)?;
    let mut result = run.simulate()?;
    let mut recs = records(&run.trace, &result);
    if p.measured_from > 0 {
        recs.drain(..p.measured_from);
        result.reqs.drain(..p.measured_from);
        for (r, q) in recs.iter_mut().zip(&run.trace.requests[p.measured_from..]) {
            if q.pool.is_some() {
                r.round -= p.round_shift;
            }
        }
        let first = recs
            .iter()
            .filter_map(|r| r.arrival_s)
            .fold(f64::INFINITY, f64::min);
        result.start = crate::time::SimTime::from_ns((first * 1e9).round() as u64);
    }
    if let Some(ratio) = p.counted_output {
        count_as_llmperf(&mut recs, ratio);
    }
    let summary = RunSummary::new(&recs, &result);
    Ok(names
        .iter()
        .map(|n| (n.clone(), summary.metric(&recs, n)))
        .collect())
}

/// The records as llmperf counts their output tokens: it re-tokenizes each answer with the
/// Llama-2 tokenizer, which gives `ratio` tokens per token the model generated, plus the BOS
/// its `encode` adds; its throughputs and inter-token latency divide by that count.
fn count_as_llmperf(recs: &mut [crate::metrics::record::RequestRecord], ratio: f64) {
    for r in recs {
        r.output_len = (r.output_len as f64 * ratio).round() as u32 + 1;
    }
}

fn rel(pred: Option<f64>, meas: f64) -> Option<f64> {
    pred.filter(|p| p.is_finite()).map(|p| (p - meas) / meas)
}

/// The fit's objective: mean squared log error over the fit runs' computable metrics.
fn objective(preds: &[BTreeMap<String, Option<f64>>], runs: &[&StudyRun]) -> f64 {
    let mut s = 0.0;
    let mut n = 0usize;
    for (p, r) in preds.iter().zip(runs) {
        for (name, meas) in &r.measured {
            if let Some(Some(v)) = p.get(name)
                && *v > 0.0
                && *meas > 0.0
            {
                s += (v / meas).ln().powi(2);
                n += 1;
            }
        }
    }
    if n == 0 { f64::INFINITY } else { s / n as f64 }
}

/// A continuous parameter the fit may move, in log space.
struct FitParam {
    /// Its configuration key (or [`LLMPERF_TOKEN_RATIO`]).
    key: &'static str,
    /// Its starting value, which the prior pulls towards.
    start: f64,
    /// The simplex's first step, in log space.
    step: f64,
    /// Bounds.
    lo: f64,
    hi: f64,
}

/// Output tokens llmperf counts per token the model generated (it re-tokenizes each answer
/// with the Llama-2 tokenizer and adds a BOS: counted = ratio x generated + 1): 1 for a model
/// with Llama-2's tokenizer, an open parameter for any other. Not a configuration key: it
/// changes how the tool counts, not what the server does.
pub const LLMPERF_TOKEN_RATIO: &str = "llmperf_token_ratio";

/// The parameters the fit may move for `study` on `gpu`: the GPU's compute efficiency, memory
/// efficiency and per-step overhead (us) and the server's per-request overhead (ms); for an
/// llmperf study also its client's gap between requests (ms: Ray's round trip and the result
/// handling) and its output-token count ratio.
fn fit_params(study: &Study, gpu: &GpuProfile) -> Vec<FitParam> {
    let mut p = vec![
        FitParam {
            key: "gpu_compute_efficiency",
            start: gpu.compute_efficiency,
            step: 0.7,
            lo: 0.01,
            hi: 1.0,
        },
        FitParam {
            key: "gpu_memory_efficiency",
            start: gpu.memory_efficiency,
            step: 0.7,
            lo: 0.01,
            hi: 1.0,
        },
        FitParam {
            key: "gpu_step_overhead_us",
            start: gpu.step_overhead_us.max(1.0),
            step: 1.0,
            lo: 1.0,
            hi: 1e6,
        },
        // A server spends milliseconds per request, not seconds: bound it so that the fit
        // cannot explain queueing away as overhead.
        FitParam {
            key: "request_overhead_ms",
            start: 1.0,
            step: 1.5,
            lo: 0.001,
            hi: 50.0,
        },
    ];
    if crate::trace::generate::counts_output_tokens_itself(&study.kind) {
        p.push(FitParam {
            key: "client_gap_ms",
            start: 10.0,
            step: 2.0,
            lo: 0.001,
            hi: 200.0,
        });
        p.push(FitParam {
            key: LLMPERF_TOKEN_RATIO,
            start: 1.0,
            step: 0.2,
            lo: 0.5,
            hi: 2.0,
        });
    }
    p
}

fn fit_overrides(params: &[FitParam], z: &[f64], base: &Map<String, Value>) -> Map<String, Value> {
    let mut m = base.clone();
    for (p, z) in params.iter().zip(z) {
        m.insert(p.key.into(), json!(z.exp().clamp(p.lo, p.hi)));
    }
    m
}

/// Weight of the prior (squared log deviation from the profile's values) against the fit runs'
/// mean squared log error.
const PRIOR_WEIGHT: f64 = 0.01;

/// Fits the continuous parameters on `fit_runs` with `base` keys fixed.
fn fit(
    study: &Study,
    gpu: &str,
    fit_runs: &[&StudyRun],
    base: &Map<String, Value>,
    opts: &Options,
) -> Result<(Map<String, Value>, FitReport)> {
    let names_of = |r: &StudyRun| r.measured.keys().cloned().collect::<Vec<_>>();
    let profile = GpuProfile::lookup(gpu)?;
    let params = fit_params(study, &profile);
    let z0: Vec<f64> = params.iter().map(|p| p.start.ln()).collect();
    let steps: Vec<f64> = params.iter().map(|p| p.step).collect();
    let eval = |z: &[f64]| -> f64 {
        let ov = fit_overrides(&params, z, base);
        let preds: Result<Vec<_>> = fit_runs
            .par_iter()
            .map(|r| prepare(study, r, gpu, &ov).and_then(|p| predict(&p, &names_of(r))))
            .collect();
        // A weak prior towards the profile's values: a parameter the fit runs do not constrain
        // (say, memory efficiency when every fit run is prefill-bound) stays near its stated
        // value instead of drifting to a bound.
        let prior = z.iter().zip(&z0).map(|(a, b)| (a - b).powi(2)).sum::<f64>() * PRIOR_WEIGHT;
        preds
            .map(|p| objective(&p, fit_runs) + prior)
            .unwrap_or(f64::INFINITY)
    };
    let before = eval(&z0);
    if !before.is_finite() {
        // Surface the real error (a broken input) rather than fitting nothing.
        for r in fit_runs {
            predict(&prepare(study, r, gpu, base)?, &names_of(r))?;
        }
    }
    // The evaluation budget is for four parameters; more get proportionally more.
    let budget = opts.max_evals * params.len().max(4) / 4;
    let (z, after, evals) = optimize::nelder_mead(eval, &z0, &steps, budget, 1e-4);
    let ov = fit_overrides(&params, &z, base);
    let report = FitReport {
        params: ov
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_f64()
                        .unwrap_or_else(|| f64::from(u8::from(v == &json!(true)))),
                )
            })
            .collect(),
        runs: fit_runs.iter().map(|r| r.index).collect(),
        objective_before: before,
        objective_after: after,
        evaluations: evals,
    };
    Ok((ov, report))
}

/// Validates one study.
pub fn validate_study(study: &Study, opts: &Options) -> Result<StudyResult> {
    let (gpu, gpu_note, gpu_stated) = resolve_gpu(&study.gpu, &study.file)?;
    let mut notes = engine_notes(study);
    for (name, c) in &study.cases {
        if let Some(n) = &c.note
            && study
                .runs
                .iter()
                .any(|r| r.set.get("case") == Some(&json!(name)))
        {
            notes.push(format!("case {name:?}: {n}"));
        }
    }
    let names_of = |r: &StudyRun| r.measured.keys().cloned().collect::<Vec<_>>();
    let fit_runs: Vec<&StudyRun> = study.runs.iter().filter(|r| r.role == Role::Fit).collect();
    let mut overrides = Map::new();
    let mut fitted = None;
    if opts.fit && !fit_runs.is_empty() {
        // Discrete choices the study leaves open are fitted too: LMCache's save_unfull_chunk
        // (its default changed across versions) when the study configures LMCache without it.
        let mut choices = vec![Map::new()];
        if !study.lmcache.is_empty() && !study.lmcache.contains_key("save_unfull_chunk") {
            choices = [false, true]
                .iter()
                .map(|b| {
                    let mut m = Map::new();
                    m.insert("save_unfull_chunk".into(), json!(b));
                    m
                })
                .collect();
        }
        let mut best: Option<(Map<String, Value>, FitReport)> = None;
        for base in &choices {
            let (ov, rep) = fit(study, &gpu, &fit_runs, base, opts)?;
            if best
                .as_ref()
                .is_none_or(|(_, b)| rep.objective_after < b.objective_after)
            {
                best = Some((ov, rep));
            }
        }
        if let Some((ov, rep)) = best {
            if choices.len() > 1 {
                notes.push(format!(
                    "save_unfull_chunk is not stated: fitted on the fit runs as {}",
                    ov.get("save_unfull_chunk")
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                ));
            }
            overrides = ov;
            fitted = Some(rep);
        }
    }
    let runs: Vec<RunResult> = study
        .runs
        .par_iter()
        .map(|r| -> Result<RunResult> {
            let p = prepare(study, r, &gpu, &overrides)?;
            let preds = predict(&p, &names_of(r))?;
            Ok(RunResult {
                inconsistencies: inconsistencies(study, r, &gpu, gpu_stated)?,
                index: r.index,
                role: r.role,
                set: r.set.clone(),
                metrics: r
                    .measured
                    .iter()
                    .map(|(name, meas)| {
                        let pred = preds.get(name).copied().flatten();
                        MetricRow {
                            metric: name.clone(),
                            predicted: pred,
                            measured: *meas,
                            error: rel(pred, *meas),
                            interval: None,
                        }
                    })
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    // Intervals from the fit runs' residual spread, and the check runs' coverage.
    let mut runs = runs;
    let sigma = fitted.as_ref().and_then(|_| {
        let logs: Vec<f64> = runs
            .iter()
            .filter(|r| r.role == Role::Fit)
            .flat_map(|r| r.metrics.iter())
            .filter_map(|m| {
                m.predicted
                    .filter(|p| *p > 0.0 && m.measured > 0.0)
                    .map(|p| (p / m.measured).ln())
            })
            .collect();
        (!logs.is_empty())
            .then(|| (logs.iter().map(|x| x * x).sum::<f64>() / logs.len() as f64).sqrt())
    });
    let (mut inside, mut counted) = (0usize, 0usize);
    for r in &mut runs {
        for m in &mut r.metrics {
            m.interval = sigma
                .zip(m.predicted)
                .map(|(s, p)| (p * (-1.96 * s).exp(), p * (1.96 * s).exp()));
            if let (Some((lo, hi)), Role::Check, true) =
                (m.interval, r.role, r.inconsistencies.is_empty())
            {
                counted += 1;
                inside += usize::from(lo <= m.measured && m.measured <= hi);
            }
        }
    }
    let check_coverage = (counted > 0).then(|| inside as f64 / counted as f64);
    for r in &runs {
        for m in r.metrics.iter().filter(|m| m.predicted.is_none()) {
            notes.push(format!(
                "runs[{}]: metric {:?} is not computable by name",
                r.index, m.metric
            ));
        }
    }
    // Check-run errors, those of runs whose measurements hold together apart from the rest.
    let errors = |consistent: bool| {
        runs.iter()
            .filter(|r| r.role == Role::Check && r.inconsistencies.is_empty() == consistent)
            .flat_map(|r| r.metrics.iter().filter_map(|m| m.error.map(f64::abs)))
            .collect::<Vec<f64>>()
    };
    let (median, max) = consistency::error_stats(errors(true));
    let (bad_median, bad_max) = consistency::error_stats(errors(false));
    let inconsistent_check_runs = runs
        .iter()
        .filter(|r| r.role == Role::Check && !r.inconsistencies.is_empty())
        .map(|r| r.index)
        .collect();
    Ok(StudyResult {
        study: study.name.clone(),
        file: study.file.clone(),
        gpu: gpu_note,
        notes,
        fitted,
        runs,
        inconsistent_check_runs,
        check_median_rel_error: median,
        check_max_rel_error: max,
        inconsistent_check_median_rel_error: bad_median,
        inconsistent_check_max_rel_error: bad_max,
        interval_log_sigma: sigma,
        check_coverage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::shared_study as shared;

    #[test]
    fn predicts_every_metric_of_every_shipped_study() {
        for f in crate::testkit::SHIPPED_STUDIES {
            let Some(p) = shared(f) else {
                return;
            };
            let s = Study::read(&p).unwrap();
            let r = validate_study(
                &s,
                &Options {
                    fit: false,
                    max_evals: 0,
                },
            )
            .unwrap();
            assert_eq!(r.runs.len(), s.runs.len());
            for run in &r.runs {
                for m in &run.metrics {
                    assert!(
                        m.predicted.is_some_and(|p| p > 0.0),
                        "{f} runs[{}] {}: {:?}",
                        run.index,
                        m.metric,
                        m.predicted
                    );
                }
            }
            assert!(r.check_median_rel_error.is_some() && r.fitted.is_none());
        }
    }

    #[test]
    fn llmperf_counts_output_tokens_with_its_own_tokenizer_and_a_bos() {
        use crate::metrics::record::records;
        use crate::metrics::summary::RunSummary;
        use crate::testkit::{req, run, trace};
        use crate::trace::Run;
        // One request generating 64 tokens, counted by llmperf as 64 x 1.25 + 1 = 81: its
        // throughput and inter-token latency divide by 81, not 64.
        let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 100)], 64)]);
        let r = run(&t, Default::default());
        let mut recs = records(&t, &r);
        let e2e = recs[0].e2e_s.unwrap();
        count_as_llmperf(&mut recs, 1.25);
        assert_eq!(recs[0].output_len, 81);
        let s = RunSummary::new(&recs, &r);
        let got = s.metric(&recs, "throughput_mean_tok_s").unwrap();
        assert!((got - 81.0 / e2e).abs() < 1e-9, "{got}");
        let itl = s.metric(&recs, "itl_mean_s").unwrap();
        assert!((itl - e2e / 81.0).abs() < 1e-12, "{itl}");
    }

    #[test]
    fn intervals_spread_the_fit_runs_log_error_and_coverage_counts_check_values_inside() {
        let Some(p) = shared("long-doc-qa.json") else {
            return;
        };
        let s = Study::read(&p).unwrap();
        let r = validate_study(&s, &Options::default()).unwrap();
        // sigma: root mean square of ln(predicted / measured) over the fit run's 4 metrics.
        let logs: Vec<f64> = r.runs[0]
            .metrics
            .iter()
            .map(|m| (m.predicted.unwrap() / m.measured).ln())
            .collect();
        assert_eq!((r.runs[0].role, logs.len()), (Role::Fit, 4));
        let sigma = (logs.iter().map(|x| x * x).sum::<f64>() / 4.0).sqrt();
        assert!((r.interval_log_sigma.unwrap() - sigma).abs() < 1e-12);
        let (mut inside, mut n) = (0, 0);
        for run in &r.runs {
            for m in &run.metrics {
                let (lo, hi) = m.interval.unwrap();
                let p = m.predicted.unwrap();
                assert!((lo - p * (-1.96 * sigma).exp()).abs() < 1e-9 * p);
                assert!((hi - p * (1.96 * sigma).exp()).abs() < 1e-9 * p);
                if run.role == Role::Check {
                    n += 1;
                    inside += usize::from(lo <= m.measured && m.measured <= hi);
                }
            }
        }
        assert_eq!(r.check_coverage, Some(inside as f64 / n as f64));
        // Without a fit there is no interval.
        let nofit = validate_study(
            &s,
            &Options {
                fit: false,
                max_evals: 0,
            },
        )
        .unwrap();
        assert!(nofit.interval_log_sigma.is_none() && nofit.check_coverage.is_none());
    }

    #[test]
    fn fitting_uses_fit_runs_only_and_does_not_hurt_them() {
        let Some(p) = shared("lmcache-network-rtt.json") else {
            return;
        };
        let s = Study::read(&p).unwrap();
        let r = validate_study(
            &s,
            &Options {
                fit: true,
                max_evals: 40,
            },
        )
        .unwrap();
        let f = r.fitted.as_ref().unwrap();
        assert_eq!(f.runs, vec![0, 3]);
        assert!(f.objective_after <= f.objective_before);
        assert!(r.gpu.contains("assumed"));
        // A check run's measurements never enter the fit: changing them changes no fitted value.
        let mut s2 = s.clone();
        for run in s2.runs.iter_mut().filter(|r| r.role == Role::Check) {
            for v in run.measured.values_mut() {
                *v *= 3.0;
            }
        }
        let r2 = validate_study(
            &s2,
            &Options {
                fit: true,
                max_evals: 40,
            },
        )
        .unwrap();
        assert_eq!(r2.fitted.as_ref().unwrap().params, f.params);
    }

    #[test]
    fn engine_settings_are_applied_or_reported_and_an_unknown_gpu_is_an_error() {
        let Some(ldq) = shared("long-doc-qa.json") else {
            return;
        };
        let text = std::fs::read_to_string(&ldq).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let no_fit = Options {
            fit: false,
            max_evals: 0,
        };
        let query_ttft = |r: &StudyResult| {
            r.runs[1]
                .metrics
                .iter()
                .find(|m| m.metric == "query_ttft_mean_s")
                .and_then(|m| m.predicted)
                .unwrap()
        };
        let base =
            validate_study(&Study::parse(&v.to_string(), "ldq.json").unwrap(), &no_fit).unwrap();
        // An FP8 cache halves the bytes each query-round retrieve moves: a shorter TTFT.
        let mut fp8 = v.clone();
        fp8["setup"]["engine"]["kv_cache_dtype"] = json!("fp8");
        fp8["setup"]["engine"]["kv_connector"] = json!("LMCacheConnectorV1");
        fp8["setup"]["engine"]["compilation_config"] = json!(3);
        let r = validate_study(
            &Study::parse(&fp8.to_string(), "ldq.json").unwrap(),
            &no_fit,
        )
        .unwrap();
        assert!(
            query_ttft(&r) < 0.8 * query_ttft(&base),
            "{} vs {}",
            query_ttft(&r),
            query_ttft(&base)
        );
        let reported: Vec<&String> = r
            .notes
            .iter()
            .filter(|n| n.contains("not modelled"))
            .collect();
        assert_eq!(reported.len(), 2, "{:?}", r.notes);
        assert!(
            reported
                .iter()
                .any(|n| n.contains("setup.engine.kv_connector"))
        );
        assert!(!r.notes.iter().any(|n| n.contains("kv_cache_dtype")));
        // A GPU the study names and kvreplay does not know: one error listing the known ones.
        let mut gb = v.clone();
        gb["setup"]["gpu"] = json!("GB300 NVL72");
        let e = validate_study(&Study::parse(&gb.to_string(), "ldq.json").unwrap(), &no_fit)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ldq.json") && e.contains("setup.gpu") && e.contains("MI300X 192GB"),
            "{e}"
        );
    }

    #[test]
    fn warmup_repeat_measures_the_second_copy_only() {
        let Some(ldq) = shared("long-doc-qa.json") else {
            return;
        };
        let text = std::fs::read_to_string(&ldq).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["runs"][1]["set"]["warmup_repeat"] = json!(true);
        let s = Study::parse(&v.to_string(), "ldq.json").unwrap();
        let cold = validate_study(
            &Study::read(&ldq).unwrap(),
            &Options {
                fit: false,
                max_evals: 0,
            },
        )
        .unwrap();
        let warm = validate_study(
            &s,
            &Options {
                fit: false,
                max_evals: 0,
            },
        )
        .unwrap();
        let ttft = |r: &StudyResult| {
            r.runs[1]
                .metrics
                .iter()
                .find(|m| m.metric == "warmup_ttft_mean_s")
                .unwrap()
                .predicted
                .unwrap()
        };
        // After an identical unmeasured pass with a 66 GiB CPU tier, even the "warmup" round hits.
        assert!(
            ttft(&warm) < ttft(&cold) / 2.0,
            "{} vs {}",
            ttft(&warm),
            ttft(&cold)
        );
    }
}

//! One run from configuration to summary: the path `run`, `compare`, `validate` and `sweep` share.

use crate::config::RunConfig;
use crate::error::Result;
use crate::metrics::record::{RequestRecord, records};
use crate::metrics::summary::RunSummary;
use crate::sim::{SimResult, SimSetup, simulate};
use crate::trace::Trace;
use std::borrow::Cow;

/// A finished simulation with its derived records and summary.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The trace as simulated (arrivals scaled by `qps_scale`).
    pub trace: Trace,
    /// The raw result.
    pub result: SimResult,
    /// One record per request.
    pub records: Vec<RequestRecord>,
    /// Aggregates.
    pub summary: RunSummary,
    /// The resolved setup (engine settings, cost parameters with their provenance).
    pub setup: SimSetup,
    /// The GPU profile's provenance ("spec, not measured: ..." or a calibration record).
    pub gpu_provenance: String,
}

impl RunOutput {
    /// Which inputs of the prediction were measured and which are spec defaults, in words.
    pub fn provenance(&self) -> serde_json::Value {
        let (measured, spec): (Vec<_>, Vec<_>) = self
            .setup
            .transfer
            .provenance
            .iter()
            .partition(|(_, v)| v.starts_with("measured"));
        serde_json::json!({
            "step_time": self.gpu_provenance,
            "fitted_step_time": self.setup.step_model.fitted.is_some(),
            "transfer_measured": measured.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "transfer_spec": spec.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        })
    }
}

/// Open-loop arrivals compressed by `factor` (a rate multiplier); closed-loop requests and think
/// times are untouched.
pub fn scale_arrivals(trace: &Trace, factor: f64) -> Cow<'_, Trace> {
    if factor == 1.0 {
        return Cow::Borrowed(trace);
    }
    let mut t = trace.clone();
    for r in t.requests.iter_mut().filter(|r| r.pool.is_none()) {
        r.arrival_ns = (r.arrival_ns as f64 / factor).round() as u64;
    }
    Cow::Owned(t)
}

/// Simulates `trace` under `cfg`.
pub fn run(trace: &Trace, cfg: &RunConfig) -> Result<RunOutput> {
    run_shared(trace, cfg, None)
}

/// [`run`] reusing what depends on the trace alone when the caller has it (`sim::TracePrep`;
/// arrival scaling does not change it).
pub fn run_shared(
    trace: &Trace,
    cfg: &RunConfig,
    prep: Option<&crate::sim::TracePrep>,
) -> Result<RunOutput> {
    let (setup, _, gpu) = cfg.setup()?;
    let trace = scale_arrivals(trace, cfg.qps_scale).into_owned();
    let result = match prep {
        Some(p) => crate::sim::simulate_shared(&trace, &setup, p),
        None => simulate(&trace, &setup),
    };
    let records = records(&trace, &result);
    let summary = RunSummary::new(&records, &result);
    Ok(RunOutput {
        trace,
        result,
        records,
        summary,
        setup,
        gpu_provenance: gpu.provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::generate::random;

    #[test]
    fn qps_scale_compresses_open_loop_arrivals() {
        let p = random::Params {
            num_prompts: 10,
            request_rate: random::RequestRate(2.0),
            ..Default::default()
        };
        let t = random::generate(&p, 0).unwrap();
        let s = scale_arrivals(&t, 2.0);
        for (a, b) in t.requests.iter().zip(&s.requests) {
            assert_eq!(b.arrival_ns, (a.arrival_ns as f64 / 2.0).round() as u64);
        }
        // The last of N requests at 2 req/s arrives at N/rate = 5 s; at 4 req/s, 2.5 s.
        assert_eq!(s.requests.last().unwrap().arrival_ns, 2_500_000_000);
    }
}

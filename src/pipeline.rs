//! One path from a trace and a typed configuration to records and a summary, shared by `run`,
//! `compare`, `sweep`, `plan`, `validate`, `interval` and `bench`:
//!
//! trace + [`RunConfig`] -> [`prepare`] -> [`Prepared`] (arrivals scaled, setup resolved) ->
//! [`Prepared::simulate`] -> [`crate::sim::SimResult`] -> [`Prepared::run`] -> [`RunOutput`]
//! (records and summary, computed once).
//!
//! The trace is borrowed throughout; it is copied only when `qps_scale` changes its arrivals.

use crate::config::RunConfig;
use crate::error::Result;
use crate::metrics::record::{RequestRecord, records};
use crate::metrics::summary::RunSummary;
use crate::sim::{SimResult, SimSetup, TracePrep, simulate, simulate_shared};
use crate::time::SimDuration;
use crate::trace::Trace;
use std::borrow::Cow;

/// A simulation ready to run: the trace as it will be replayed and the resolved setup.
#[derive(Debug, Clone)]
pub struct Prepared<'t> {
    /// The trace as simulated (arrivals scaled by `qps_scale`; borrowed when unscaled).
    pub trace: Cow<'t, Trace>,
    /// The resolved setup (engine settings, cost parameters with their provenance).
    pub setup: SimSetup,
    /// The GPU profile's provenance ("spec, not measured: ..." or a calibration record).
    pub gpu_provenance: String,
}

/// A finished simulation with its derived records and summary.
#[derive(Debug, Clone)]
pub struct RunOutput<'t> {
    /// The trace as simulated.
    pub trace: Cow<'t, Trace>,
    /// The raw result.
    pub result: SimResult,
    /// One record per request.
    pub records: Vec<RequestRecord>,
    /// Aggregates.
    pub summary: RunSummary,
    /// The resolved setup.
    pub setup: SimSetup,
    /// The GPU profile's provenance.
    pub gpu_provenance: String,
}

/// Which inputs of a prediction were measured and which are spec defaults, in words.
pub fn provenance(setup: &SimSetup, gpu_provenance: &str) -> serde_json::Value {
    let (measured, spec): (Vec<_>, Vec<_>) = setup
        .transfer
        .provenance
        .iter()
        .partition(|(_, v)| v.starts_with("measured"));
    // A heterogeneous fleet's pools whose GPU is another say where theirs come from.
    let mut step_time = gpu_provenance.to_string();
    for (i, p) in setup.pools.iter().enumerate() {
        if p.gpu_provenance != gpu_provenance {
            step_time += &format!("; pool {i}: {}", p.gpu_provenance);
        }
    }
    serde_json::json!({
        "step_time": step_time,
        "fitted_step_time": setup.step_model.fitted.is_some(),
        "transfer_measured": measured.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "transfer_spec": spec.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
    })
}

impl RunOutput<'_> {
    /// Which inputs of the prediction were measured and which are spec defaults, in words.
    pub fn provenance(&self) -> serde_json::Value {
        provenance(&self.setup, &self.gpu_provenance)
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

/// Closed-loop requests with `gap_ms` more think time each (clients pausing between a response
/// and their next request); open-loop requests are untouched.
pub fn add_client_gap(trace: Cow<'_, Trace>, gap_ms: f64) -> Cow<'_, Trace> {
    if gap_ms <= 0.0 || trace.requests.iter().all(|r| r.pool.is_none()) {
        return trace;
    }
    let gap = SimDuration::from_secs_f64(gap_ms / 1e3).as_ns();
    let mut t = trace.into_owned();
    for r in t.requests.iter_mut().filter(|r| r.pool.is_some()) {
        r.think_ns = r.think_ns.saturating_add(gap);
    }
    Cow::Owned(t)
}

/// Resolves `cfg` for `trace`: scales its arrivals, adds the client gap and builds the
/// simulation setup.
pub fn prepare<'t>(trace: &'t Trace, cfg: &RunConfig) -> Result<Prepared<'t>> {
    let (setup, _, gpu) = cfg.setup()?;
    Ok(Prepared {
        trace: add_client_gap(
            scale_arrivals(trace, cfg.arrivals.qps_scale),
            cfg.arrivals.client_gap_ms,
        ),
        setup,
        gpu_provenance: gpu.provenance,
    })
}

impl<'t> Prepared<'t> {
    /// Replays the trace.
    pub fn simulate(&self) -> Result<SimResult> {
        simulate(&self.trace, &self.setup)
    }

    /// Replays the trace reusing what depends on the trace alone (`sim::TracePrep`; arrival
    /// scaling does not change it).
    pub fn simulate_shared(&self, prep: &TracePrep) -> Result<SimResult> {
        simulate_shared(&self.trace, &self.setup, prep)
    }

    /// Replays the trace and derives its records and summary.
    pub fn run(self) -> Result<RunOutput<'t>> {
        let result = self.simulate()?;
        Ok(self.finish(result))
    }

    /// [`Prepared::run`] that also writes the run's timeline (a Chrome / Perfetto trace, see
    /// [`crate::report::timeline`]) to `path`, keeping at most
    /// [`crate::report::timeline::DEFAULT_LIMIT`] step and transfer records. Records and summary
    /// are the same as [`Prepared::run`]'s.
    pub fn run_with_timeline(
        self,
        path: &std::path::Path,
    ) -> Result<(RunOutput<'t>, crate::report::timeline::TimelineInfo)> {
        self.run_with_timeline_limit(path, crate::report::timeline::DEFAULT_LIMIT)
    }

    /// [`Prepared::run_with_timeline`] keeping at most `limit` step and transfer records (each;
    /// split evenly between replicas).
    pub fn run_with_timeline_limit(
        self,
        path: &std::path::Path,
        limit: usize,
    ) -> Result<(RunOutput<'t>, crate::report::timeline::TimelineInfo)> {
        let prep = TracePrep::new(&self.trace, None);
        let result = crate::sim::simulate_recorded(&self.trace, &self.setup, &prep, limit)?;
        let mut out = self.finish(result);
        let info = crate::report::timeline::write(path, &mut out)?;
        Ok((out, info))
    }

    /// [`Prepared::run`] with [`Prepared::simulate_shared`].
    pub fn run_shared(self, prep: &TracePrep) -> Result<RunOutput<'t>> {
        let result = self.simulate_shared(prep)?;
        Ok(self.finish(result))
    }

    /// Records and summary of `result`, a replay of this preparation.
    pub fn finish(self, result: SimResult) -> RunOutput<'t> {
        let records = records(&self.trace, &result);
        let summary = RunSummary::new(&records, &result);
        RunOutput {
            trace: self.trace,
            result,
            records,
            summary,
            setup: self.setup,
            gpu_provenance: self.gpu_provenance,
        }
    }
}

/// Simulates `trace` under `cfg`.
pub fn run<'t>(trace: &'t Trace, cfg: &RunConfig) -> Result<RunOutput<'t>> {
    prepare(trace, cfg)?.run()
}

/// [`run`] reusing what depends on the trace alone when the caller has it.
pub fn run_shared<'t>(
    trace: &'t Trace,
    cfg: &RunConfig,
    prep: Option<&TracePrep>,
) -> Result<RunOutput<'t>> {
    let p = prepare(trace, cfg)?;
    match prep {
        Some(prep) => p.run_shared(prep),
        None => p.run(),
    }
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

    #[test]
    fn a_client_gap_delays_each_clients_next_request() {
        use crate::testkit::{pooled, req};
        use crate::trace::Run;
        // One client, two requests of one token each on 10 ms steps: the second is sent when
        // the first completes (10 ms), or 50 ms later with a 50 ms gap.
        let t = pooled(
            vec![
                req(0, 0, vec![Run::new(1, 0, 32)], 1),
                req(1, 0, vec![Run::new(2, 0, 32)], 1),
            ],
            1,
        );
        let mut cfg = RunConfig::default();
        cfg.cost.fitted = Some(crate::testkit::ten_ms_steps());
        let sent = |cfg: &RunConfig| run(&t, cfg).unwrap().records[1].arrival_s.unwrap();
        assert!((sent(&cfg) - 0.010).abs() < 1e-9);
        cfg.arrivals.client_gap_ms = 50.0;
        assert!((sent(&cfg) - 0.060).abs() < 1e-9);
        // Open-loop requests have no client to pause.
        let open = crate::testkit::trace(
            t.requests
                .clone()
                .into_iter()
                .map(|mut r| {
                    r.pool = None;
                    r
                })
                .collect(),
        );
        assert!(matches!(
            add_client_gap(Cow::Borrowed(&open), 50.0),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn an_unscaled_trace_is_borrowed_not_copied() {
        let t = random::generate(&random::Params::default(), 0).unwrap();
        let mut cfg = RunConfig::default();
        assert!(matches!(prepare(&t, &cfg).unwrap().trace, Cow::Borrowed(_)));
        cfg.arrivals.qps_scale = 2.0;
        assert!(matches!(prepare(&t, &cfg).unwrap().trace, Cow::Owned(_)));
    }
}

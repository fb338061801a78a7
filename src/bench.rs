//! `kvreplay bench`: speed figures for the simulator itself (benchmarks, never timed tests).

use crate::config::RunConfig;
use crate::error::Result;
use crate::trace::Trace;
use std::time::Instant;

/// One measured simulation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchFigure {
    /// What was simulated.
    pub name: String,
    /// Requests in the trace.
    pub requests: usize,
    /// Engine steps simulated.
    pub steps: u64,
    /// Wall seconds of the simulation (trace already in memory), best of the repeats.
    pub wall_s: f64,
    /// Requests simulated per wall second.
    pub requests_per_s: f64,
    /// Peak resident memory of the process after the run, MiB (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
}

/// Peak resident set size of this process in MiB, from /proc (0 when unavailable).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Simulates `trace` under `cfg` `repeats` times and reports the fastest run.
pub fn measure(name: &str, trace: &Trace, cfg: &RunConfig, repeats: u32) -> Result<BenchFigure> {
    measure_mode(name, trace, cfg, repeats, false)
}

/// [`measure`], optionally in the engine's reference mode (every shortcut off: the per-block
/// pool, every block indexed, one step at a time), to show what the shortcuts save.
pub fn measure_mode(
    name: &str,
    trace: &Trace,
    cfg: &RunConfig,
    repeats: u32,
    reference: bool,
) -> Result<BenchFigure> {
    let mut prepared = crate::pipeline::prepare(trace, cfg)?;
    prepared.setup.reference_mode = reference;
    let mut best = f64::INFINITY;
    let mut steps = 0;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let r = prepared.simulate()?;
        best = best.min(t0.elapsed().as_secs_f64());
        steps = r.stats.steps;
    }
    Ok(BenchFigure {
        name: name.to_string(),
        requests: trace.requests.len(),
        steps,
        wall_s: best,
        requests_per_s: trace.requests.len() as f64 / best,
        peak_rss_mib: peak_rss_mib(),
    })
}

//! Prediction intervals: how much a prediction moves when the measured inputs move within their
//! measured spread.
//!
//! Each transfer-profile parameter that a calibration measured carries a relative standard
//! deviation (its fit's standard error, or the spread of its repeated measurements). The interval
//! of a metric is the 2.5th and 97.5th percentiles over `samples` simulations, each with every
//! such parameter multiplied by `exp(sigma * z)`, `z` standard normal (seeded, so the interval is
//! reproducible). Parameters still at spec defaults have no measured spread and are held fixed;
//! the method text says which parameters varied and by how much.

use crate::config::RunConfig;
use crate::error::Result;
use crate::pipeline::prepare;
use crate::sweep::point_metrics;
use crate::trace::Trace;
use crate::util::rng::Rng;
use crate::util::stats::quantile_sorted;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};
use std::collections::BTreeMap;

/// A metric's prediction with its interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// The prediction at the measured values.
    pub value: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Intervals for every aggregate metric, and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalReport {
    /// Metric name -> interval.
    pub metrics: BTreeMap<String, Interval>,
    /// How the interval was made, in words.
    pub method: String,
    /// Parameters that varied, with their relative standard deviation.
    pub varied: BTreeMap<String, f64>,
}

/// Runs `samples` perturbed simulations besides the nominal one (seeded by `seed`).
pub fn intervals(
    trace: &Trace,
    cfg: &RunConfig,
    samples: u32,
    seed: u64,
) -> Result<IntervalReport> {
    let prepared = prepare(trace, cfg)?;
    let nominal = point_metrics(&prepared.clone().run()?);
    let varied: BTreeMap<String, f64> = prepared
        .setup
        .transfer
        .spread
        .iter()
        .filter(|(_, s)| **s > 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let level = 0.95;
    let z = Normal::new(0.0, 1.0)
        .map(|n| n.inverse_cdf(0.5 + level / 2.0))
        .unwrap_or(1.96);
    if varied.is_empty() || samples == 0 {
        return Ok(IntervalReport {
            metrics: nominal.iter().map(|(k, v)| (k.clone(), Interval { value: *v, lo: *v, hi: *v })).collect(),
            method: "no interval: no input has a measured spread (every transfer parameter is a spec default; calibrate and pass --profile)".into(),
            varied,
        });
    }
    let runs: Vec<BTreeMap<String, f64>> = (0..samples)
        .into_par_iter()
        .map(|i| {
            let mut rng = Rng::stream(seed ^ i as u64, "interval");
            let mut p = prepared.clone();
            for (k, sigma) in &varied {
                if let Some(slot) = p.setup.transfer.slot(k) {
                    *slot *= (sigma * rng.std_normal()).exp();
                }
            }
            Ok(point_metrics(&p.run()?))
        })
        .collect::<Result<_>>()?;
    let mut metrics = BTreeMap::new();
    for (k, v) in &nominal {
        let mut xs: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
        xs.sort_by(f64::total_cmp);
        let q = |p| quantile_sorted(&xs, p).unwrap_or(*v);
        metrics.insert(
            k.clone(),
            Interval {
                value: *v,
                lo: q((1.0 - level) / 2.0).min(*v),
                hi: q(0.5 + level / 2.0).max(*v),
            },
        );
    }
    Ok(IntervalReport {
        method: format!(
            "{:.0} % interval: 2.5th-97.5th percentiles over {samples} simulations with the measured transfer parameters drawn log-normally from their spread ({}); spec-default parameters and the step-time model held fixed (a normal's {:.0} % range is +-{z:.2} sigma)",
            level * 100.0,
            varied
                .iter()
                .map(|(k, s)| format!("{k} +-{:.1} %", s * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            level * 100.0
        ),
        metrics,
        varied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intervals_widen_with_the_spread_and_contain_the_nominal_value() {
        // Every prompt shares a 1024-token prefix that the remote store serves after the first.
        let t = crate::trace::generate::random::generate(
            &crate::trace::generate::random::Params {
                num_prompts: 12,
                random_input_len: 256,
                random_prefix_len: 1024,
                random_output_len: 16,
                request_rate: crate::trace::generate::random::RequestRate(2.0),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("kvr-int-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut widths = Vec::new();
        for spread in [0.0, 0.05, 0.3] {
            let f = dir.join(format!("p{spread}.json"));
            std::fs::write(
                &f,
                json!({"params": {"remote_gbps": 1.0}, "param_spread": {"remote_gbps": spread}})
                    .to_string(),
            )
            .unwrap();
            let mut c = RunConfig::default();
            c.set_all(json!({"tier": "remote", "remote": "redis", "local_cpu": false, "rtt_ms": 5, "enable_prefix_caching": false,
                "transfer_profile": f.to_str().unwrap()}).as_object().unwrap()).unwrap();
            let r = intervals(&t, &c, 24, 7).unwrap();
            let i = &r.metrics["ttft_mean_s"];
            assert!(i.lo <= i.value && i.value <= i.hi);
            widths.push(i.hi - i.lo);
            // Reproducible.
            assert_eq!(intervals(&t, &c, 24, 7).unwrap(), r);
        }
        assert_eq!(widths[0], 0.0);
        assert!(widths[1] > 0.0 && widths[2] > widths[1], "{widths:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

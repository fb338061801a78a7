//! Throughput against the offered request rate, with an SLO metric against its threshold and the
//! largest rate that still meets it.

use super::chart::{Plot, Rule, SLO_RED, fmt_num};
use super::labels::{metric_label, param_label};
use super::sweep::{first_param, lines, no_data, without_unit};
use super::{Figure, render};
use crate::error::Result;
use crate::sweep::SweepPoint;
use plotters::style::RGBColor;

/// A service-level objective: a metric that must stay at or below a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// A named metric, e.g. `ttft_p99_s`.
    pub metric: String,
    /// Its largest acceptable value, in the metric's unit.
    pub threshold: f64,
}

/// Parameters that set the offered rate, in order of preference.
pub(crate) const RATE_PARAMS: [&str; 2] = ["qps_scale", "request_rate"];

const MAX_RATE_GREEN: RGBColor = RGBColor(0, 130, 60);

/// `throughput` (a named metric such as `output_tps`) against the offered rate (the `qps_scale`
/// or `request_rate` parameter), one line per combination of the other swept parameters; with
/// `slo`, a second panel of the SLO metric against the same rate with its threshold; with
/// `max_rate`, a vertical line at the largest sustainable rate in both panels.
pub fn throughput_vs_qps(
    points: &[SweepPoint],
    throughput: &str,
    slo: Option<&Slo>,
    max_rate: Option<f64>,
) -> Result<Figure> {
    let x = first_param(points, &RATE_PARAMS).ok_or_else(|| {
        no_data(
            "sweep",
            "qps_scale",
            "no sweep point sets the request rate (qps_scale or request_rate)".into(),
        )
    })?;
    let (mut top, n) = lines(points, x, throughput)?;
    let mut plot = Plot::new(format!(
        "{} vs {}",
        without_unit(&metric_label(throughput)),
        without_unit(&param_label(x))
    ));
    plot.notes.push(format!(
        "{n} sweep points; each line joins points that differ only in {x}"
    ));
    let rate_unit = if x == "qps_scale" {
        "× the trace's rate"
    } else {
        "req/s"
    };
    let rate_rule = |r: f64| Rule {
        label: format!("max sustainable rate: {} {rate_unit}", fmt_num(r)),
        color: MAX_RATE_GREEN,
        at: r,
        vertical: true,
    };
    if let Some(r) = max_rate {
        top.rules.push(rate_rule(r));
    }
    let Some(slo) = slo else {
        plot.panels.push(top);
        return render(&plot);
    };
    top.title = Some("Throughput".into());
    let (mut bottom, _) = lines(points, x, &slo.metric)?;
    bottom.title = Some(format!(
        "SLO: {} must stay at or below {}{}",
        without_unit(&metric_label(&slo.metric)),
        fmt_num(slo.threshold),
        unit_of(&slo.metric)
    ));
    bottom.rules.push(Rule {
        label: format!(
            "SLO threshold: {}{}",
            fmt_num(slo.threshold),
            unit_of(&slo.metric)
        ),
        color: SLO_RED,
        at: slo.threshold,
        vertical: false,
    });
    if let Some(r) = max_rate {
        bottom.rules.push(rate_rule(r));
    }
    plot.title = format!(
        "{} and {} vs {}",
        without_unit(&metric_label(throughput)),
        without_unit(&metric_label(&slo.metric)),
        without_unit(&param_label(x))
    );
    plot.panels.push(top);
    plot.panels.push(bottom);
    plot.panel_height = 440;
    render(&plot)
}

/// " s", " ms", " tok/s", ...: the unit in a metric's label, with a leading space.
fn unit_of(metric: &str) -> String {
    let l = metric_label(metric);
    match (l.rfind(" ("), l.ends_with(')')) {
        (Some(i), true) => format!(" {}", &l[i + 2..l.len() - 1]),
        _ => String::new(),
    }
}

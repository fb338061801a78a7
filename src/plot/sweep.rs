//! Sweep metrics against one swept parameter: one line per combination of the other swept
//! parameters; hit rates by tier against the CPU tier's size.

use super::chart::{Axis, Line, Marker, Panel, Plot, Series, style_of};
use super::labels::{metric_label, param_label};
use super::prompt::wants_log;
use super::{Figure, render};
use crate::error::{InputError, Result};
use crate::sweep::SweepPoint;
use plotters::style::RGBColor;
use serde_json::Value;

/// A parameter value as a number: JSON numbers, and strings that parse as one.
pub(crate) fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// A parameter value as text (strings without quotes).
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The parameters whose value is not the same at every point, in name order.
pub(crate) fn varying(points: &[SweepPoint]) -> Vec<String> {
    let mut keys: Vec<&String> = points.iter().flat_map(|p| p.params.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| {
            let first = points[0].params.get(*k);
            points.iter().any(|p| p.params.get(*k) != first)
        })
        .cloned()
        .collect()
}

/// The first of `candidates` that some point sets to a number.
pub(crate) fn first_param<'a>(points: &[SweepPoint], candidates: &[&'a str]) -> Option<&'a str> {
    candidates.iter().copied().find(|c| {
        points
            .iter()
            .any(|p| p.params.get(*c).and_then(num).is_some())
    })
}

/// Points sharing every varying parameter except `x`, in order of first appearance.
pub(crate) struct Group<'a> {
    /// `key=value, ...` of the other varying parameters (empty when there are none).
    pub label: String,
    pub points: Vec<&'a SweepPoint>,
}

pub(crate) fn group_by_others<'a>(points: &'a [SweepPoint], x: &str) -> Vec<Group<'a>> {
    let others: Vec<String> = varying(points).into_iter().filter(|k| k != x).collect();
    let mut groups: Vec<Group> = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.params.get(x).and_then(num).is_some())
    {
        let label = others
            .iter()
            .map(|k| {
                format!(
                    "{k}={}",
                    p.params.get(k).map(text).unwrap_or_else(|| "-".into())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        match groups.iter_mut().find(|g| g.label == label) {
            Some(g) => g.points.push(p),
            None => groups.push(Group {
                label,
                points: vec![p],
            }),
        }
    }
    groups
}

/// `(x, metric)` of a group's points that have both, sorted by x.
fn xy(g: &Group, x: &str, metric: &str, scale: f64) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = g
        .points
        .iter()
        .filter_map(|p| {
            Some((
                num(p.params.get(x)?)?,
                p.metrics.get(metric).copied().filter(|m| m.is_finite())? * scale,
            ))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// "TTFT mean (s)" -> "TTFT mean".
pub(crate) fn without_unit(label: &str) -> &str {
    match label.rfind(" (") {
        Some(i) if label.ends_with(')') => &label[..i],
        _ => label,
    }
}

pub(crate) fn no_data(what: &str, field: &str, msg: String) -> crate::error::Error {
    InputError::new(what, 0, field, msg).into()
}

/// Axis label with ", log scale" inside its parentheses when the axis is logarithmic.
pub(crate) fn scaled(label: &str, log: bool) -> String {
    if !log {
        return label.to_string();
    }
    match label.strip_suffix(')') {
        Some(l) if l.contains(" (") => format!("{l}, log scale)"),
        _ => format!("{label} (log scale)"),
    }
}

/// Lines of `metric` against `param`, one per combination of the other swept parameters.
pub(crate) fn lines(points: &[SweepPoint], param: &str, metric: &str) -> Result<(Panel, usize)> {
    let groups = group_by_others(points, param);
    if groups.is_empty() {
        return Err(no_data(
            "sweep",
            param,
            "no sweep point sets this parameter to a number".into(),
        ));
    }
    let mut series = Vec::new();
    let mut n = 0;
    for (i, g) in groups.iter().enumerate() {
        let pts = xy(g, param, metric, 1.0);
        n += pts.len();
        let (color, marker) = style_of(i);
        let label = if g.label.is_empty() {
            without_unit(&metric_label(metric)).to_string()
        } else {
            g.label.clone()
        };
        let mut s = Series::line(label, color, Some(marker));
        s.points = pts;
        series.push(s);
    }
    if n == 0 {
        return Err(no_data(
            "sweep",
            metric,
            "no sweep point has a value for this metric".into(),
        ));
    }
    let all = || series.iter().flat_map(|s| &s.points);
    let xlog = wants_log(all().map(|p| p.0));
    let ylog = wants_log(all().map(|p| p.1));
    let mut x = Axis::new(scaled(&param_label(param), xlog)).log(xlog);
    x.ticks_at = all().map(|p| p.0).collect();
    let mut panel = Panel::new(
        x,
        Axis::new(scaled(&metric_label(metric), ylog))
            .log(ylog)
            .zero_based(),
    );
    if groups.len() > 1 {
        panel.legend_title = Some("other swept parameters".into());
    }
    panel.series = series;
    Ok((panel, n))
}

/// Any sweep metric against any numeric swept parameter, one line per combination of the other
/// swept parameters.
pub fn metric_vs_param(points: &[SweepPoint], param: &str, metric: &str) -> Result<Figure> {
    let (panel, n) = lines(points, param, metric)?;
    let mut plot = Plot::new(format!(
        "{} vs {}",
        without_unit(&metric_label(metric)),
        without_unit(&param_label(param))
    ));
    plot.notes.push(format!(
        "{n} sweep points; each line joins points that differ only in {param}"
    ));
    plot.panels.push(panel);
    render(&plot)
}

/// A TTFT metric of a sweep (e.g. `ttft_mean_s`, `query_ttft_p99_s`) against the remote store's
/// round-trip time (the `rtt_ms` parameter), one line per combination of the other swept
/// parameters.
pub fn ttft_vs_rtt(points: &[SweepPoint], metric: &str) -> Result<Figure> {
    metric_vs_param(points, "rtt_ms", metric)
}

/// Keys that size the CPU tier, in order of preference.
pub(crate) const CPU_PARAMS: [&str; 5] = [
    "max_local_cpu_size_gb",
    "cpu_gb",
    "max_local_cpu_size",
    "kv_offloading_size_gb",
    "kv_offloading_size",
];

/// The tiers' hit-rate metrics, words and colours.
const TIERS: [(&str, &str, RGBColor); 4] = [
    ("hit_rate_gpu", "GPU prefix cache", RGBColor(0, 158, 115)),
    ("hit_rate_cpu", "CPU tier", RGBColor(0, 114, 178)),
    ("hit_rate_disk", "disk tier", RGBColor(230, 159, 0)),
    ("hit_rate_remote", "remote tier", RGBColor(204, 121, 167)),
];

/// Most panels (one per combination of the other swept parameters) in one figure.
const MAX_PANELS: usize = 6;

/// Share of prompt tokens served by each tier (`hit_rate_gpu/cpu/disk/remote`, and their sum)
/// against the CPU tier's size (`max_local_cpu_size_gb`, `cpu_gb`, or the native offload size),
/// one panel per combination of the other swept parameters.
pub fn hit_rate_vs_cpu(points: &[SweepPoint]) -> Result<Figure> {
    let x = first_param(points, &CPU_PARAMS).ok_or_else(|| {
        no_data(
            "sweep",
            "max_local_cpu_size_gb",
            format!(
                "no sweep point sets the CPU tier size (one of {})",
                CPU_PARAMS.join(", ")
            ),
        )
    })?;
    let groups = group_by_others(points, x);
    // Tiers that serve nothing anywhere stay out of the legend.
    let used: Vec<_> = TIERS
        .iter()
        .filter(|(m, _, _)| {
            points
                .iter()
                .any(|p| p.metrics.get(*m).is_some_and(|v| *v > 0.0))
        })
        .collect();
    let xs = || points.iter().filter_map(|p| p.params.get(x).and_then(num));
    let xlog = wants_log(xs());
    let mut plot = Plot::new(format!(
        "Prompt tokens served by each tier vs {}",
        without_unit(&param_label(x))
    ));
    plot.notes.push(
        "hit rate = prompt tokens loaded from a tier / all prompt tokens of finished requests; \
         the rest is computed"
            .into(),
    );
    let unused: Vec<&str> = TIERS
        .iter()
        .filter(|t| !used.iter().any(|u| u.0 == t.0))
        .map(|t| t.1)
        .collect();
    if !unused.is_empty() {
        plot.notes.push(format!(
            "served nothing at any point (not drawn): {}",
            unused.join(", ")
        ));
    }
    if groups.len() > MAX_PANELS {
        plot.notes.push(format!(
            "first {MAX_PANELS} of {} combinations of the other swept parameters shown",
            groups.len()
        ));
    }
    let any = points.iter().any(|p| {
        TIERS.iter().any(|(m, _, _)| p.metrics.contains_key(*m))
            || p.metrics.contains_key("hit_rate_total")
    });
    for g in groups.iter().take(MAX_PANELS) {
        let mut xa = Axis::new(scaled(&param_label(x), xlog)).log(xlog);
        xa.ticks_at = xs().collect();
        let mut panel = Panel::new(
            xa,
            Axis::new("share of prompt tokens (%)").range(0.0, 100.0),
        );
        if !g.label.is_empty() {
            panel.title = Some(g.label.clone());
        }
        for (m, words, color) in &used {
            let mut s = Series::line(*words, *color, Some(Marker::Circle));
            s.points = xy(g, x, m, 100.0);
            panel.series.push(s);
        }
        let mut total = Series::line("all tiers (not computed)", RGBColor(40, 40, 40), None);
        total.line = Line::Dashed;
        total.points = xy(g, x, "hit_rate_total", 100.0);
        if total.points.is_empty() {
            // Older sweeps: the sum of the tiers.
            let mut by_x: Vec<(f64, f64)> = Vec::new();
            for s in &panel.series {
                for &(px, py) in &s.points {
                    match by_x.iter_mut().find(|q| q.0 == px) {
                        Some(q) => q.1 += py,
                        None => by_x.push((px, py)),
                    }
                }
            }
            by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
            total.points = by_x;
        }
        panel.series.push(total);
        plot.panels.push(panel);
    }
    if !any {
        return Err(no_data(
            "sweep",
            "hit_rate_cpu",
            "no sweep point has hit-rate metrics (hit_rate_gpu, hit_rate_cpu, ...)".into(),
        ));
    }
    if plot.panels.len() > 1 {
        plot.panel_height = 400;
    }
    render(&plot)
}

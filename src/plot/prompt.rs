//! Per-request latency against prompt length: one scatter series per run (tier, variant).

use super::chart::{Axis, Panel, Plot, Series, style_of};
use super::{Figure, render};
use crate::error::{InputError, Result};
use crate::metrics::record::RequestRecord;

/// Most points drawn per series; larger runs show every k-th finished request.
const MAX_POINTS: usize = 2000;

/// A log axis when the values span more than this ratio.
const LOG_RATIO: f64 = 20.0;

/// TTFT (s) of every finished request against its prompt length (tokens), one series per
/// labelled run. When every prompt has about the same length (within 10 %), the requests are
/// drawn per run instead (a strip per run, coloured by barrier round when there are rounds).
pub fn ttft_vs_prompt(runs: &[(&str, &[RequestRecord])]) -> Result<Figure> {
    latency_vs_prompt(runs, |r| r.ttft_s, "Time to first token", "TTFT")
}

/// End-to-end latency (s) of every finished request against its prompt length (tokens), one
/// series per labelled run; per run when every prompt has about the same length (see
/// [`ttft_vs_prompt`]).
pub fn e2e_vs_prompt(runs: &[(&str, &[RequestRecord])]) -> Result<Figure> {
    latency_vs_prompt(runs, |r| r.e2e_s, "End-to-end latency", "E2E latency")
}

/// Whether values spanning `[lo, hi]` read better on a log axis.
pub(crate) fn wants_log(values: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    hi > 0.0 && hi / lo > LOG_RATIO
}

/// Prompt lengths within this ratio of each other count as one length.
const SAME_LENGTH: f64 = 1.1;

fn latency_vs_prompt(
    runs: &[(&str, &[RequestRecord])],
    value: fn(&RequestRecord) -> Option<f64>,
    long: &str,
    what: &str,
) -> Result<Figure> {
    let lens = || {
        runs.iter()
            .flat_map(|(_, recs)| recs.iter())
            .filter(|r| r.finished() && value(r).is_some())
            .map(|r| r.input_len)
    };
    let (lo, hi) = (lens().min(), lens().max());
    if let (Some(lo), Some(hi)) = (lo, hi)
        && hi as f64 <= lo.max(1) as f64 * SAME_LENGTH
    {
        return per_run(runs, value, long, what, (lo, hi));
    }
    let title = &format!("{long} vs prompt length");
    let mut all: Vec<(f64, f64)> = Vec::new();
    let mut series = Vec::new();
    let mut notes = Vec::new();
    let (mut rejected, mut strided) = (0usize, 1usize);
    for (i, (label, recs)) in runs.iter().enumerate() {
        let pts: Vec<(f64, f64)> = recs
            .iter()
            .filter(|r| r.finished())
            .filter_map(|r| Some((r.input_len as f64, value(r)?)))
            .collect();
        rejected += recs.iter().filter(|r| !r.finished()).count();
        let stride = pts.len().div_ceil(MAX_POINTS).max(1);
        strided = strided.max(stride);
        let (color, marker) = style_of(i);
        let mut s = Series::scatter(format!("{label} ({} requests)", pts.len()), color, marker);
        s.points = pts.into_iter().step_by(stride).collect();
        all.extend(&s.points);
        series.push(s);
    }
    if all.is_empty() {
        return Err(InputError::new(
            "records",
            0,
            "",
            format!("{title}: no finished request to plot"),
        )
        .into());
    }
    let xlog = wants_log(all.iter().map(|p| p.0));
    let ylog = wants_log(all.iter().map(|p| p.1));
    let zero_y = all.iter().filter(|p| p.1 <= 0.0).count();
    let scale = |log: bool| if log { ", log scale" } else { "" };
    let mut panel = Panel::new(
        Axis::new(format!("prompt length (tokens{})", scale(xlog))).log(xlog),
        Axis::new(format!("{what} (s{})", scale(ylog)))
            .log(ylog)
            .zero_based(),
    );
    panel.series = series;
    notes.push(format!(
        "one point per finished request{}",
        if strided > 1 {
            format!(" (every {strided}th shown)")
        } else {
            String::new()
        }
    ));
    if rejected > 0 {
        notes.push(format!(
            "{rejected} rejected requests have no {what} and are not shown"
        ));
    }
    if ylog && zero_y > 0 {
        notes.push(format!(
            "{zero_y} points at 0 s cannot be shown on the log axis"
        ));
    }
    let mut plot = Plot::new(title);
    plot.notes = notes;
    plot.panels.push(panel);
    render(&plot)
}

fn round_name(k: u32) -> String {
    match k {
        0 => "round 0 (warm-up)".into(),
        1 => "round 1 (query)".into(),
        k => format!("round {k}"),
    }
}

/// Most barrier rounds told apart by colour.
const MAX_ROUNDS: usize = 6;

/// A strip of points per run (x: the run, spread left to right in request order), for prompts
/// that all have about the same length.
fn per_run(
    runs: &[(&str, &[RequestRecord])],
    value: fn(&RequestRecord) -> Option<f64>,
    long: &str,
    what: &str,
    (lo, hi): (u32, u32),
) -> Result<Figure> {
    let mut rounds: Vec<u32> = runs
        .iter()
        .flat_map(|(_, recs)| recs.iter())
        .filter(|r| r.finished())
        .map(|r| r.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    let by_round = rounds.len() > 1 && rounds.len() <= MAX_ROUNDS;
    let keys: Vec<Option<u32>> = if by_round {
        rounds.iter().map(|k| Some(*k)).collect()
    } else {
        vec![None]
    };
    let mut series: Vec<Series> = if by_round {
        rounds
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let (c, m) = style_of(j);
                Series::scatter(round_name(*k), c, m)
            })
            .collect()
    } else {
        runs.iter()
            .enumerate()
            .map(|(i, (l, _))| {
                let (c, m) = style_of(i);
                Series::scatter(*l, c, m)
            })
            .collect()
    };
    let mut rejected = 0;
    for (i, (_, recs)) in runs.iter().enumerate() {
        rejected += recs.iter().filter(|r| !r.finished()).count();
        for (j, key) in keys.iter().enumerate() {
            let vals: Vec<f64> = recs
                .iter()
                .filter(|r| r.finished() && key.is_none_or(|k| r.round == k))
                .filter_map(value)
                .collect();
            let stride = vals.len().div_ceil(MAX_POINTS).max(1);
            let vals: Vec<f64> = vals.into_iter().step_by(stride).collect();
            // Sub-column j of the run's column, points spread in request order.
            let slot = 0.8 / keys.len() as f64;
            let centre = i as f64 - 0.4 + slot * (j as f64 + 0.5);
            let n = vals.len();
            let s = &mut series[if by_round { j } else { i }];
            for (k, v) in vals.into_iter().enumerate() {
                let t = if n > 1 {
                    k as f64 / (n - 1) as f64 - 0.5
                } else {
                    0.0
                };
                s.points.push((centre + t * slot * 0.75, v));
            }
        }
    }
    let all = || series.iter().flat_map(|s| &s.points);
    if all().next().is_none() {
        return Err(InputError::new(
            "records",
            0,
            "",
            format!("{long}: no finished request to plot"),
        )
        .into());
    }
    let ylog = wants_log(all().map(|p| p.1));
    let mut x = Axis::new("configuration (each one's requests left to right in sending order)");
    x.categories = runs.iter().map(|(l, _)| l.to_string()).collect();
    let mut panel = Panel::new(
        x,
        Axis::new(format!(
            "{what} (s{})",
            if ylog { ", log scale" } else { "" }
        ))
        .log(ylog)
        .zero_based(),
    );
    panel.series = series;
    if by_round {
        panel.legend_title = Some("barrier round".into());
    }
    let len = if lo == hi {
        format!("{} tokens", thousands(lo))
    } else {
        format!("{} to {} tokens", thousands(lo), thousands(hi))
    };
    let mut plot = Plot::new(format!("{long} per configuration"));
    plot.notes.push(format!(
        "one point per finished request; every prompt is {len} long, so latency is shown per \
         configuration rather than against prompt length"
    ));
    if rejected > 0 {
        plot.notes.push(format!(
            "{rejected} rejected requests have no {what} and are not shown"
        ));
    }
    plot.panels.push(panel);
    render(&plot)
}

/// 10000 -> "10,000".
fn thousands(n: u32) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

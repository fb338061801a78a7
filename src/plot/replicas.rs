//! A fleet's load over time: each replica's requests in flight (waiting and running) and its
//! GPU KV usage, from the usage series of a fleet's `kv_usage.json`.

use super::chart::{Axis, Panel, Plot, Series, style_of};
use super::sweep::no_data;
use super::{Figure, render};
use crate::error::Result;
use crate::sim::KvSample;

/// Replicas drawn one line each; a larger fleet shows its first ones (and says so).
pub const MAX_LINES: usize = 16;

/// Two panels over simulated time: requests waiting + running, and GPU KV usage (%), one line
/// per replica (`replicas[i]` is replica i's samples).
pub fn replica_load(replicas: &[Vec<KvSample>]) -> Result<Figure> {
    if replicas.iter().all(|s| s.is_empty()) {
        return Err(no_data(
            "kv_usage.json",
            "replicas",
            "no replica has usage samples".into(),
        ));
    }
    let mut plot = Plot::new("Load per replica over time");
    if replicas.len() > MAX_LINES {
        plot.notes.push(format!(
            "replicas 0-{} of {} shown",
            MAX_LINES - 1,
            replicas.len()
        ));
    }
    let mut load = Panel::new(
        Axis::new("simulated time (s)"),
        Axis::new("requests waiting + running").zero_based(),
    );
    let mut kv = Panel::new(
        Axis::new("simulated time (s)"),
        Axis::new("GPU KV in use (%)").range(0.0, 100.0),
    );
    load.title = Some("Requests in flight".into());
    kv.title = Some("GPU KV usage".into());
    load.legend_title = Some("replica".into());
    for (i, samples) in replicas.iter().enumerate().take(MAX_LINES) {
        let (color, _) = style_of(i);
        let mut a = Series::line(format!("{i}"), color, None);
        let mut b = Series::line(format!("{i}"), color, None);
        for s in samples {
            a.points.push((s.t_s, (s.waiting + s.running) as f64));
            b.points.push((s.t_s, s.used * 100.0));
        }
        load.series.push(a);
        kv.series.push(b);
    }
    plot.panels.push(load);
    plot.panels.push(kv);
    plot.panel_height = 360;
    render(&plot)
}

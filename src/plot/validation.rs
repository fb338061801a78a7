//! Validation: kvreplay's prediction against the measurement, one point per (run, metric), on
//! log-log axes with the y = x line and a ±25 % band; fit and check runs drawn differently.

use super::chart::{Axis, Band, GREY, Line, Marker, PALETTE, Panel, Plot, Series};
use super::sweep::no_data;
use super::{Figure, render};
use crate::error::Result;
use crate::validate::StudyResult;
use crate::validate::study::Role;

/// One metric of one validation run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationPoint {
    /// Study name.
    pub study: String,
    /// Run index in the study.
    pub run: usize,
    /// A fit run (its measurements may have tuned the model) rather than a check run.
    pub fit: bool,
    /// Metric name.
    pub metric: String,
    /// kvreplay's prediction.
    pub predicted: f64,
    /// The study's measurement.
    pub measured: f64,
}

/// The predicted metrics of `studies` as points (metrics without a prediction are left out).
pub fn validation_points(studies: &[StudyResult]) -> Vec<ValidationPoint> {
    studies
        .iter()
        .flat_map(|s| {
            s.runs.iter().flat_map(move |r| {
                r.metrics.iter().filter_map(move |m| {
                    Some(ValidationPoint {
                        study: s.study.clone(),
                        run: r.index,
                        fit: r.role == Role::Fit,
                        metric: m.metric.clone(),
                        predicted: m.predicted?,
                        measured: m.measured,
                    })
                })
            })
        })
        .collect()
}

/// The band drawn around y = x: predictions within ±25 % of the measurement.
const BAND: f64 = 0.25;

/// Predicted against measured, log-log, one point per (run, metric); check runs filled circles,
/// fit runs hollow squares, one colour per study.
pub fn predicted_vs_measured(points: &[ValidationPoint]) -> Result<Figure> {
    let ok = |p: &&ValidationPoint| {
        p.predicted > 0.0 && p.measured > 0.0 && p.predicted.is_finite() && p.measured.is_finite()
    };
    let shown: Vec<&ValidationPoint> = points.iter().filter(ok).collect();
    if shown.is_empty() {
        return Err(no_data(
            "validation",
            "predicted",
            "no (run, metric) with a positive prediction and measurement".into(),
        ));
    }
    let mut studies: Vec<&str> = Vec::new();
    for p in &shown {
        if !studies.contains(&p.study.as_str()) {
            studies.push(&p.study);
        }
    }
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for p in &shown {
        lo = lo.min(p.predicted.min(p.measured));
        hi = hi.max(p.predicted.max(p.measured));
    }
    let (lo, hi) = (lo / 1.6, hi * 1.6);
    let mut panel = Panel::new(
        Axis::new("measured (metric's own unit, log scale)")
            .log(true)
            .range(lo, hi),
        Axis::new("predicted by kvreplay (same unit, log scale)")
            .log(true)
            .range(lo, hi),
    );
    panel.bands.push(Band {
        label: format!("within ±{:.0} %", BAND * 100.0),
        color: GREY,
        polygon: vec![
            (lo / 10.0, lo / 10.0 * (1.0 - BAND)),
            (hi * 10.0, hi * 10.0 * (1.0 - BAND)),
            (hi * 10.0, hi * 10.0 * (1.0 + BAND)),
            (lo / 10.0, lo / 10.0 * (1.0 + BAND)),
        ],
    });
    let mut diag = Series::line("", GREY, None);
    diag.line = Line::Dashed;
    diag.fit_range = false;
    diag.points = vec![(lo / 10.0, lo / 10.0), (hi * 10.0, hi * 10.0)];
    panel.series.push(diag);
    // One study: a colour per metric; several: a colour per study. Fill tells the role.
    let by_metric = studies.len() == 1;
    let key = |p: &ValidationPoint| {
        if by_metric {
            p.metric.clone()
        } else {
            p.study.clone()
        }
    };
    let mut keys: Vec<String> = Vec::new();
    for p in &shown {
        let k = key(p);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let role_count = |fit: bool| shown.iter().filter(|p| p.fit == fit).count();
    for (i, k) in keys.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut legend = Series::scatter(
            format!("{k} ({})", shown.iter().filter(|p| key(p) == *k).count()),
            color,
            Marker::Circle,
        );
        legend.line = Line::None;
        panel.series.push(legend);
        for fit in [false, true] {
            let mut s =
                Series::scatter("", color, if fit { Marker::Square } else { Marker::Circle });
            s.filled = !fit;
            s.points = shown
                .iter()
                .filter(|p| key(p) == *k && p.fit == fit)
                .map(|p| (p.measured, p.predicted))
                .collect();
            panel.series.push(s);
        }
    }
    for fit in [false, true] {
        let n = role_count(fit);
        if n > 0 {
            let mut s = Series::scatter(
                if fit {
                    format!("fit runs, hollow ({n})")
                } else {
                    format!("check runs, filled ({n})")
                },
                GREY,
                if fit { Marker::Square } else { Marker::Circle },
            );
            s.filled = !fit;
            panel.series.push(s);
        }
    }
    // Legend only: the y = x line after the colours and roles.
    let mut diag = Series::line("predicted = measured", GREY, None);
    diag.line = Line::Dashed;
    panel.series.push(diag);
    panel.legend_title = Some(
        if by_metric {
            "colour: metric"
        } else {
            "colour: study"
        }
        .into(),
    );
    let title = if studies.len() == 1 {
        format!("Validation: predicted vs measured ({})", studies[0])
    } else {
        format!(
            "Validation: predicted vs measured ({} studies)",
            studies.len()
        )
    };
    let mut plot = Plot::new(title);
    let checks: Vec<f64> = shown
        .iter()
        .filter(|p| !p.fit)
        .map(|p| (p.predicted / p.measured - 1.0).abs())
        .collect();
    let within = checks.iter().filter(|e| **e <= BAND).count();
    plot.notes.push(format!(
        "one point per (run, metric); fit runs may have tuned the GPU model, check runs never did{}",
        if checks.is_empty() {
            String::new()
        } else {
            format!(
                "; {within} of {} check metrics within ±{:.0} %",
                checks.len(),
                BAND * 100.0
            )
        }
    ));
    let left_out = points.len() - shown.len();
    if left_out > 0 {
        plot.notes.push(format!(
            "{left_out} values at or below zero cannot be shown on log axes"
        ));
    }
    plot.panels.push(panel);
    plot.panel_height = 640;
    render(&plot)
}

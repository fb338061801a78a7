//! Validation results as text (the printed comparison) and as Parquet (one row per study, run
//! and metric, with whether the run's measurements hold together).

use super::study::Role;
use super::{MetricRow, StudyResult};
use crate::error::Result;
use serde_json::Value;

/// Writes every (study, run, metric) row as Parquet.
pub fn write_parquet(results: &[StudyResult], path: &std::path::Path) -> Result<()> {
    use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt32Builder};
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    struct Row<'a> {
        study: &'a str,
        run: u32,
        role: &'static str,
        set: String,
        consistent: bool,
        m: &'a MetricRow,
    }
    let rows: Vec<Row> = results
        .iter()
        .flat_map(|s| {
            s.runs.iter().flat_map(move |r| {
                r.metrics.iter().map(move |m| Row {
                    study: &s.study,
                    run: r.index as u32,
                    role: if r.role == Role::Fit { "fit" } else { "check" },
                    set: Value::Object(r.set.clone()).to_string(),
                    consistent: r.inconsistencies.is_empty(),
                    m,
                })
            })
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("study", DataType::Utf8, false),
        Field::new("run", DataType::UInt32, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("set", DataType::Utf8, false),
        Field::new("consistent", DataType::Boolean, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("predicted", DataType::Float64, true),
        Field::new("measured", DataType::Float64, false),
        Field::new("rel_error", DataType::Float64, true),
    ]));
    crate::util::parquet::write_rows(path, schema, &rows, |chunk, schema| {
        let mut study = StringBuilder::new();
        let mut run = UInt32Builder::new();
        let mut role = StringBuilder::new();
        let mut set = StringBuilder::new();
        let mut consistent = BooleanBuilder::new();
        let mut metric = StringBuilder::new();
        let mut pred = Float64Builder::new();
        let mut meas = Float64Builder::new();
        let mut err = Float64Builder::new();
        for r in chunk {
            study.append_value(r.study);
            run.append_value(r.run);
            role.append_value(r.role);
            set.append_value(&r.set);
            consistent.append_value(r.consistent);
            metric.append_value(&r.m.metric);
            pred.append_option(r.m.predicted);
            meas.append_value(r.m.measured);
            err.append_option(r.m.error);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(study.finish()),
            Arc::new(run.finish()),
            Arc::new(role.finish()),
            Arc::new(set.finish()),
            Arc::new(consistent.finish()),
            Arc::new(metric.finish()),
            Arc::new(pred.finish()),
            Arc::new(meas.finish()),
            Arc::new(err.finish()),
        ];
        RecordBatch::try_new(schema, cols)
    })
}

/// A study's comparison as text.
pub fn render(r: &StudyResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "study {} ({})", r.study, r.file);
    let _ = writeln!(s, "  GPU: {}", r.gpu);
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    match &r.fitted {
        Some(f) => {
            let _ = writeln!(
                s,
                "  fitted on fit runs {:?} ({} evaluations, mean squared log error {:.4} -> {:.4}): {}",
                f.runs,
                f.evaluations,
                f.objective_before,
                f.objective_after,
                f.params
                    .iter()
                    .map(|(k, v)| format!("{k} = {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        None => {
            let _ = writeln!(s, "  nothing fitted: every parameter is the GPU profile's");
        }
    }
    let _ = writeln!(
        s,
        "  {:<4} {:<6} {:<40} {:<24} {:>12} {:>23} {:>12} {:>9}",
        "run", "role", "set", "metric", "predicted", "95% interval", "measured", "error"
    );
    for run in &r.runs {
        let set = run
            .set
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        for (i, m) in run.metrics.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<4} {:<6} {:<40} {:<24} {:>12} {:>23} {:>12.4} {:>9}",
                if i == 0 {
                    run.index.to_string()
                } else {
                    String::new()
                },
                if i == 0 {
                    if run.role == Role::Fit {
                        "fit"
                    } else {
                        "check"
                    }
                } else {
                    ""
                },
                if i == 0 {
                    set.chars().take(40).collect::<String>()
                } else {
                    String::new()
                },
                m.metric,
                m.predicted
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "-".into()),
                m.interval
                    .map(|(lo, hi)| format!("[{lo:.4}, {hi:.4}]"))
                    .unwrap_or_else(|| "-".into()),
                m.measured,
                m.error
                    .map(|e| format!("{:+.1}%", e * 100.0))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        for why in &run.inconsistencies {
            let _ = writeln!(s, "       ! measurements inconsistent: {why}");
        }
    }
    let pct = |e: Option<f64>| {
        e.map(|e| format!("{:.1}%", e * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        s,
        "  check runs whose measurements hold together: median |error| {}, max |error| {}",
        pct(r.check_median_rel_error),
        pct(r.check_max_rel_error),
    );
    if let Some(sigma) = r.interval_log_sigma {
        let _ = writeln!(
            s,
            "  intervals: predicted x exp(±1.96 x {sigma:.3}), the fit runs' log-error spread; \
             consistent check values inside: {}",
            pct(r.check_coverage)
        );
    }
    if !r.inconsistent_check_runs.is_empty() {
        let _ = writeln!(
            s,
            "  check runs {:?} (measurements inconsistent, reported apart): median |error| {}, max |error| {}",
            r.inconsistent_check_runs,
            pct(r.inconsistent_check_median_rel_error),
            pct(r.inconsistent_check_max_rel_error),
        );
    }
    s
}

//! `kvreplay report`: one self-contained HTML page for a run folder, a compare folder, a sweep
//! folder or a `kvreplay validate --json` file: tables and the relevant plots ([`crate::plot`]),
//! CSS inline, plots as inline SVG, no external resource, no timestamp (the same inputs give the
//! same page).
//!
//! | input | recognised by | page |
//! |---|---|---|
//! | run folder | `summary.json` (+ `requests.parquet`) | configuration, summary, rounds, latency vs prompt length |
//! | compare folder | `compare.json` (+ one folder per variant) | one row per variant, latency vs prompt length per variant |
//! | sweep folder | `shard=K/points.json`, `points.json` or `sweep.json` | every point, metrics against the swept parameters |
//! | validation | a JSON file with `studies` | per study: fit, predicted vs measured table and plot |

use crate::error::{Error, InputError, Result};
use crate::metrics::record::RequestRecord;
use crate::metrics::summary::{HitFractions, RunSummary, Stats};
use crate::plot::{self, Figure, Slo, ValidationPoint};
use crate::report::parquet::read_requests;
use crate::sweep::SweepPoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a report is about, as recognised from the files present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A `kvreplay run` folder.
    Run(PathBuf),
    /// A `kvreplay compare` folder.
    Compare(PathBuf),
    /// A `kvreplay sweep` folder (or a sweep points JSON file).
    Sweep(PathBuf),
    /// A `kvreplay validate --json` file.
    Validation(PathBuf),
}

/// Report options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// For sweeps: the SLO that sets the largest sustainable request rate.
    pub slo: Option<Slo>,
    /// Also write every plot of the page into this folder as `<name>.png` and `<name>.svg`.
    pub plots: Option<PathBuf>,
}

/// Parses an SLO written `METRIC<=VALUE` (also `METRIC=VALUE`), e.g. `ttft_p99_s<=2`.
pub fn parse_slo(s: &str) -> Result<Slo> {
    let (m, v) = s
        .split_once("<=")
        .or_else(|| s.split_once('='))
        .ok_or_else(|| {
            Error::Config(format!(
                "--slo {s:?}: expected METRIC<=VALUE, e.g. ttft_p99_s<=2"
            ))
        })?;
    let threshold: f64 = v
        .trim()
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x > 0.0)
        .ok_or_else(|| {
            Error::Config(format!(
                "--slo {s:?}: the threshold must be a positive number"
            ))
        })?;
    let metric = m.trim();
    if !crate::sweep::METRICS.contains(&metric) {
        return Err(Error::Config(format!(
            "--slo {s:?}: unknown metric {metric:?}; accepted: {}",
            crate::sweep::METRICS.join(", ")
        )));
    }
    Ok(Slo {
        metric: metric.to_string(),
        threshold,
    })
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display().to_string(), e)
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    InputError::new(path.display().to_string(), 0, "", msg).into()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

fn has_shards(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            e.file_name().to_string_lossy().starts_with("shard=")
                && e.path().join("points.json").is_file()
        })
    })
}

/// Recognises what `input` is from the files present.
pub fn detect(input: &Path) -> Result<Kind> {
    if input.is_file() {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = input
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        return match name.as_str() {
            "compare.json" => Ok(Kind::Compare(dir)),
            "summary.json" => Ok(Kind::Run(dir)),
            "sweep.json" | "points.json" => Ok(Kind::Sweep(input.to_path_buf())),
            _ => match read_json(input)? {
                Value::Object(m) if m.contains_key("studies") => {
                    Ok(Kind::Validation(input.to_path_buf()))
                }
                Value::Array(a)
                    if a.first().is_some_and(|p| {
                        p.get("params").is_some() && p.get("metrics").is_some()
                    }) =>
                {
                    Ok(Kind::Sweep(input.to_path_buf()))
                }
                _ => Err(bad(
                    input,
                    "not a kvreplay output: expected `kvreplay validate --json` output (an object \
                     with `studies`) or sweep points (an array of {index, params, metrics})",
                )),
            },
        };
    }
    if !input.is_dir() {
        return Err(bad(input, "no such file or folder"));
    }
    if input.join("compare.json").is_file() {
        return Ok(Kind::Compare(input.to_path_buf()));
    }
    if has_shards(input) {
        return Ok(Kind::Sweep(input.to_path_buf()));
    }
    for f in ["sweep.json", "points.json"] {
        if input.join(f).is_file() {
            return Ok(Kind::Sweep(input.join(f)));
        }
    }
    if input.join("summary.json").is_file() {
        return Ok(Kind::Run(input.to_path_buf()));
    }
    Err(bad(
        input,
        "nothing to report on: expected a run folder (summary.json, requests.parquet), a compare \
         folder (compare.json), a sweep folder (shard=K/points.json or sweep.json), or a \
         `kvreplay validate --json` file",
    ))
}

/// The report page for `input` (see the module documentation for what is recognised).
pub fn report(input: &Path, opts: &Options) -> Result<String> {
    match detect(input)? {
        Kind::Run(d) => run_page(&d, opts),
        Kind::Compare(d) => compare_page(&d, opts),
        Kind::Sweep(p) => sweep_page(&p, opts),
        Kind::Validation(p) => validation_page(&p, opts),
    }
}

// ---------------------------------------------------------------------------------------------
// Page building

/// HTML-escapes text.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A number for a table: about four significant digits, no exponent for ordinary values.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else if a >= 1e-6 {
        // Four significant digits.
        let decimals = (3 - a.log10().floor() as i32) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1} %", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// A table cell: right-aligned when it reads as a number.
struct Cell {
    text: String,
    class: &'static str,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        let numeric = text
            .trim_end_matches([' ', '%'])
            .trim_start_matches(['+', '-'])
            .parse::<f64>()
            .is_ok()
            || text == "-";
        Cell {
            text,
            class: if numeric { "n" } else { "" },
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_string())
    }
}

struct Page {
    title: String,
    body: String,
    /// Where to write the plots as files too.
    plots: Option<PathBuf>,
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;\
margin:0 auto;max-width:1120px;padding:24px 32px 64px;color:#1d1d1f;line-height:1.45}\
h1{font-size:1.7em;margin:0 0 4px}h2{font-size:1.3em;margin:36px 0 8px;border-bottom:1px solid #ddd;\
padding-bottom:4px}h3{font-size:1.08em;margin:24px 0 6px}\
.sub{color:#666;margin:0 0 16px}.note{color:#555;font-size:.92em}\
table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em}\
th,td{border:1px solid #ddd;padding:4px 9px;vertical-align:top}th{background:#f4f5f7;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
tr:nth-child(even) td{background:#fafbfc}td.bad{color:#b00020;font-weight:600}td.good{color:#176f2c}\
figure{margin:12px 0 28px}figure svg{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{color:#555;font-size:.9em;margin-top:4px}.err{color:#b00020}\
code{background:#f4f5f7;padding:1px 4px;border-radius:3px}ul{margin:4px 0 12px}";

impl Page {
    fn new(title: impl Into<String>, source: &Path, opts: &Options) -> Page {
        let title = title.into();
        let mut body = String::new();
        let _ = writeln!(body, "<h1>{}</h1>", esc(&title));
        let _ = writeln!(
            body,
            "<p class=\"sub\">from <code>{}</code> by kvreplay {}</p>",
            esc(&source.display().to_string()),
            env!("CARGO_PKG_VERSION")
        );
        Page {
            title,
            body,
            plots: opts.plots.clone(),
        }
    }

    fn h2(&mut self, t: &str) {
        let _ = writeln!(self.body, "<h2>{}</h2>", esc(t));
    }

    fn h3(&mut self, t: &str) {
        let _ = writeln!(self.body, "<h3>{}</h3>", esc(t));
    }

    fn p(&mut self, t: &str) {
        let _ = writeln!(self.body, "<p class=\"note\">{}</p>", esc(t));
    }

    fn list(&mut self, items: &[String]) {
        if items.is_empty() {
            return;
        }
        self.body.push_str("<ul>\n");
        for i in items {
            let _ = writeln!(self.body, "<li>{}</li>", esc(i));
        }
        self.body.push_str("</ul>\n");
    }

    fn table(&mut self, head: &[&str], rows: Vec<Vec<Cell>>) {
        self.body.push_str("<table>\n<tr>");
        for h in head {
            let _ = write!(self.body, "<th>{}</th>", esc(h));
        }
        self.body.push_str("</tr>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for c in r {
                if c.class.is_empty() {
                    let _ = write!(self.body, "<td>{}</td>", esc(&c.text));
                } else {
                    let _ = write!(self.body, "<td class=\"{}\">{}</td>", c.class, esc(&c.text));
                }
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
    }

    /// Two-column key/value table.
    fn kv(&mut self, rows: Vec<(String, String)>) {
        self.table(
            &["", ""],
            rows.into_iter()
                .map(|(k, v)| vec![Cell::from(k), Cell::from(v)])
                .collect(),
        );
    }

    /// Embeds a plot (or says why there is none); with [`Options::plots`], writes it there as
    /// `<name>.png` and `<name>.svg`.
    fn figure(&mut self, name: &str, fig: Result<Figure>, caption: &str) -> Result<()> {
        match fig {
            Ok(f) => {
                if let Some(dir) = &self.plots {
                    f.write(&dir.join(name))?;
                }
                let _ = writeln!(
                    self.body,
                    "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>",
                    f.inline_svg(),
                    esc(caption)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    self.body,
                    "<p class=\"err\">plot not drawn: {}</p>",
                    esc(&e.to_string())
                );
            }
        }
        Ok(())
    }

    fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
            esc(&self.title),
            self.body
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Runs and comparisons

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Configuration as key/value rows (nested objects flattened with dots; provenance left out).
fn config_rows(config: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if prefix.is_empty() && k == "provenance" {
                        continue;
                    }
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            other => out.push((prefix.to_string(), text_of(other))),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

fn provenance_rows(config: &Value) -> Vec<String> {
    let Some(p) = config.get("provenance") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(s) = p.get("step_time").and_then(Value::as_str) {
        out.push(format!("step time: {s}"));
    }
    let measured: Vec<String> = p
        .get("transfer_measured")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let spec: Vec<String> = p
        .get("transfer_spec")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text_of).collect())
        .unwrap_or_default();
    if measured.is_empty() {
        out.push(
            "transfer costs: all spec defaults (calibrate and pass --profile to measure them)"
                .into(),
        );
    } else {
        out.push(format!("transfer costs measured: {}", measured.join(", ")));
        if !spec.is_empty() {
            out.push(format!("transfer costs from spec: {}", spec.join(", ")));
        }
    }
    out
}

fn summary_rows(s: &RunSummary) -> Vec<(String, String)> {
    let count = |n: u64| Some(n as f64);
    let h = s.hit_fractions;
    let hit = |f: fn(&HitFractions) -> f64| h.as_ref().map(f);
    let gib = |b: u64| Some(b as f64 / (1u64 << 30) as f64);
    let mut rows = vec![
        (
            "requests (finished / rejected)".to_string(),
            format!("{} / {}", opt(count(s.simulated)), opt(count(s.rejected))),
        ),
        ("wall time (s)".into(), opt(s.duration_s)),
    ];
    for (st, words) in [
        (&s.ttft, "TTFT"),
        (&s.tpot, "TPOT"),
        (&s.e2e, "E2E latency"),
        (&s.queue, "queueing delay"),
    ] {
        rows.push((
            format!("{words} mean / p50 / p99 (s)"),
            format!(
                "{} / {} / {}",
                opt(st.map(|x| x.mean)),
                opt(st.map(|x| x.p50)),
                opt(st.map(|x| x.p99))
            ),
        ));
    }
    let t = &s.throughput;
    rows.extend([
        (
            "output / prompt throughput (tok/s)".into(),
            format!("{} / {}", opt(t.output_tps), opt(t.input_tps)),
        ),
        (
            "completed requests per minute".into(),
            opt(t.requests_per_min),
        ),
        (
            "prompt tokens (at first admission) from GPU / CPU / disk / remote / computed".into(),
            format!(
                "{} / {} / {} / {} / {}",
                pct(hit(|h| h.gpu)),
                pct(hit(|h| h.cpu)),
                pct(hit(|h| h.disk)),
                pct(hit(|h| h.remote)),
                pct(hit(|h| h.computed))
            ),
        ),
        (
            "preempted requests re-admitted: tokens looked up, found on the GPU / from the connector"
                .into(),
            {
                let p = &s.preemption_rehits;
                let of = |n: u64| (p.queries > 0).then(|| n as f64 / p.queries as f64);
                format!(
                    "{}: {}, {} / {}",
                    p.requests,
                    p.queries,
                    pct(of(p.gpu_hits)),
                    pct(of(p.external_hits))
                )
            },
        ),
        (
            "GiB loaded into / stored from the GPU".into(),
            format!(
                "{} / {}",
                opt(gib(s.bytes_loaded)),
                opt(gib(s.bytes_stored))
            ),
        ),
        (
            "GPU KV usage mean / peak".into(),
            format!("{} / {}", pct(s.kv_usage_mean), pct(Some(s.kv_usage_peak))),
        ),
        ("preemptions".into(), opt(count(s.preemptions))),
    ]);
    if !s.rejected_by_reason.is_empty() {
        rows.push((
            "rejected by reason".into(),
            s.rejected_by_reason
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    rows
}

/// The `summary` object of a `summary.json` or `compare.json` row, read as a [`RunSummary`]: a
/// missing or renamed field is an error naming it, not a blank cell.
fn run_summary(v: Option<&Value>, path: &Path) -> Result<RunSummary> {
    let v = v.ok_or_else(|| bad(path, "no `summary` object"))?;
    serde_json::from_value(v.clone()).map_err(|e| bad(path, format!("summary: {e}")))
}

/// Finished requests' latency statistics by barrier round (round 0 warm-up, round 1 query).
fn round_rows(recs: &[RequestRecord]) -> Vec<Vec<Cell>> {
    let mut rounds: Vec<u32> = recs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .map(|k| {
            let of = |f: fn(&RequestRecord) -> Option<f64>| {
                Stats::of(
                    recs.iter()
                        .filter(|r| r.round == k && r.finished())
                        .filter_map(f),
                )
            };
            let (t, e) = (of(|r| r.ttft_s), of(|r| r.e2e_s));
            let name = match k {
                0 => "0 (warm-up)".to_string(),
                1 => "1 (query)".to_string(),
                k => k.to_string(),
            };
            vec![
                Cell::from(name),
                Cell::from(recs.iter().filter(|r| r.round == k).count().to_string()),
                Cell::from(opt(t.map(|s| s.mean))),
                Cell::from(opt(t.map(|s| s.p50))),
                Cell::from(opt(t.map(|s| s.p99))),
                Cell::from(opt(e.map(|s| s.mean))),
            ]
        })
        .collect()
}

const ROUND_HEAD: [&str; 6] = [
    "round",
    "requests",
    "TTFT mean (s)",
    "TTFT p50 (s)",
    "TTFT p99 (s)",
    "E2E mean (s)",
];

fn run_page(dir: &Path, opts: &Options) -> Result<String> {
    let sj = read_json(&dir.join("summary.json"))?;
    let config = sj.get("config").cloned().unwrap_or(Value::Null);
    let summary = &run_summary(sj.get("summary"), &dir.join("summary.json"))?;
    let tier = config
        .get("tier")
        .map(text_of)
        .unwrap_or_else(|| "run".into());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let mut page = Page::new(format!("kvreplay run: {name}"), dir, opts);
    page.h2("Summary");
    page.kv(summary_rows(summary));
    let rp = dir.join("requests.parquet");
    let recs = if rp.is_file() {
        Some(read_requests(&rp)?)
    } else {
        page.p("requests.parquet is missing: no per-request plots.");
        None
    };
    if let Some(recs) = &recs {
        if recs.iter().any(|r| r.round > 0) {
            page.h2("By round");
            page.table(&ROUND_HEAD, round_rows(recs));
        }
        page.h2("Latency vs prompt length");
        let runs: Vec<(&str, &[RequestRecord])> = vec![(tier.as_str(), recs.as_slice())];
        page.figure(
            "ttft_vs_prompt",
            plot::ttft_vs_prompt(&runs),
            "Time to first token of each finished request against its prompt length.",
        )?;
        page.figure(
            "e2e_vs_prompt",
            plot::e2e_vs_prompt(&runs),
            "End-to-end latency of each finished request against its prompt length.",
        )?;
    }
    let usage = dir.join("kv_usage.json");
    if usage.is_file() {
        let replicas = replica_samples(&usage)?;
        if replicas.len() > 1 {
            page.h2("Replicas");
            page.figure(
                "replica_load",
                plot::replica_load(&replicas),
                "Each replica's requests waiting and running, and its GPU KV usage, over simulated time.",
            )?;
        }
    }
    page.h2("Configuration");
    page.list(&provenance_rows(&config));
    page.kv(config_rows(&config));
    Ok(page.finish())
}

/// Each replica's usage samples from a fleet's `kv_usage.json` (empty for a single engine).
fn replica_samples(path: &Path) -> Result<Vec<Vec<crate::sim::KvSample>>> {
    #[derive(serde::Deserialize)]
    struct Replica {
        samples: Vec<crate::sim::KvSample>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        replicas: Vec<Replica>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let f: File = serde_json::from_str(&text).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            e.line() as u64,
            "replicas",
            e.to_string(),
        )
    })?;
    Ok(f.replicas.into_iter().map(|r| r.samples).collect())
}

fn compare_page(dir: &Path, opts: &Options) -> Result<String> {
    let cj_path = dir.join("compare.json");
    let cj = read_json(&cj_path)?;
    let rows = cj
        .as_array()
        .ok_or_else(|| bad(&cj_path, "expected an array of {variant, config, summary}"))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "compare".into());
    let mut page = Page::new(format!("kvreplay compare: {name}"), dir, opts);
    // Per-variant records, from the folder `compare` writes for each.
    let mut missing = Vec::new();
    let mut recs: Vec<(String, Option<Vec<RequestRecord>>)> = Vec::new();
    for r in rows {
        let label = r.get("variant").map(text_of).unwrap_or_else(|| "?".into());
        let rp = dir
            .join(label.replace([':', '/'], "_"))
            .join("requests.parquet");
        let rs = if rp.is_file() {
            Some(read_requests(&rp)?)
        } else {
            missing.push(label.clone());
            None
        };
        recs.push((label, rs));
    }
    let rounds = recs
        .iter()
        .any(|(_, r)| r.as_ref().is_some_and(|r| r.iter().any(|q| q.round > 0)));
    page.h2("Variants");
    let mut head = vec!["variant", "tier", "TTFT mean (s)", "TTFT p99 (s)"];
    if rounds {
        head.push("query-round TTFT mean (s)");
    }
    head.extend([
        "E2E mean (s)",
        "wall time (s)",
        "output tok/s",
        "GPU hits",
        "CPU hits",
        "disk hits",
        "remote hits",
        "re-hits after preemption",
        "rejected",
    ]);
    let mut table = Vec::new();
    for (r, (label, rs)) in rows.iter().zip(&recs) {
        let s = run_summary(r.get("summary"), &cj_path)?;
        let h = s.hit_fractions;
        let hit = |f: fn(&HitFractions) -> f64| h.as_ref().map(f);
        let mut row: Vec<Cell> = vec![
            Cell::from(label.clone()),
            Cell::from(
                r.get("config")
                    .and_then(|c| c.get("tier"))
                    .map(text_of)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(opt(s.ttft.map(|x| x.mean))),
            Cell::from(opt(s.ttft.map(|x| x.p99))),
        ];
        if rounds {
            let q = rs.as_ref().and_then(|rs| {
                Stats::of(
                    rs.iter()
                        .filter(|q| q.round == 1 && q.finished())
                        .filter_map(|q| q.ttft_s),
                )
            });
            row.push(Cell::from(opt(q.map(|s| s.mean))));
        }
        row.extend([
            Cell::from(opt(s.e2e.map(|x| x.mean))),
            Cell::from(opt(s.duration_s)),
            Cell::from(opt(s.throughput.output_tps)),
            Cell::from(pct(hit(|h| h.gpu))),
            Cell::from(pct(hit(|h| h.cpu))),
            Cell::from(pct(hit(|h| h.disk))),
            Cell::from(pct(hit(|h| h.remote))),
            Cell::from(pct(s.preemption_rehits.hit_rate())),
            Cell::from(opt(Some(s.rejected as f64))),
        ]);
        table.push(row);
    }
    page.table(&head, table);
    page.p(
        "Hits: share of the prompt tokens of finished requests served by each tier when they were \
         first admitted; the rest was computed. Re-hits after preemption: share of the tokens \
         preempted requests looked up when admitted again that were found (GPU or connector), \
         not counted in the hits.",
    );
    if !missing.is_empty() {
        page.p(&format!(
            "No requests.parquet for: {} (left out of the plots).",
            missing.join(", ")
        ));
    }
    let with: Vec<(&str, &[RequestRecord])> = recs
        .iter()
        .filter_map(|(l, r)| Some((l.as_str(), r.as_deref()?)))
        .collect();
    if !with.is_empty() {
        if rounds {
            page.h2("By round");
            let mut rows = Vec::new();
            for (l, r) in &with {
                for mut row in round_rows(r) {
                    row.insert(0, Cell::from(l.to_string()));
                    rows.push(row);
                }
            }
            let mut head = vec!["variant"];
            head.extend(ROUND_HEAD);
            page.table(&head, rows);
        }
        page.h2("Latency vs prompt length");
        page.figure(
            "ttft_vs_prompt",
            plot::ttft_vs_prompt(&with),
            "Time to first token of each finished request, one series per variant.",
        )?;
        page.figure(
            "e2e_vs_prompt",
            plot::e2e_vs_prompt(&with),
            "End-to-end latency of each finished request, one series per variant.",
        )?;
    }
    page.h2("Configurations");
    for r in rows {
        let label = r.get("variant").map(text_of).unwrap_or_else(|| "?".into());
        page.h3(&label);
        page.kv(config_rows(r.get("config").unwrap_or(&Value::Null)));
    }
    Ok(page.finish())
}

// ---------------------------------------------------------------------------------------------
// Sweeps

fn sweep_points_json(path: &Path) -> Result<Vec<SweepPoint>> {
    let v = read_json(path)?;
    let arr = v.as_array().ok_or_else(|| {
        bad(
            path,
            "expected an array of sweep points {index, params, metrics}",
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, p)| {
            let params: BTreeMap<String, Value> = p
                .get("params")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .ok_or_else(|| bad(path, format!("point {i}: no `params` object")))?;
            let metrics: BTreeMap<String, f64> = p
                .get("metrics")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .ok_or_else(|| bad(path, format!("point {i}: no `metrics` object")))?;
            Ok(SweepPoint {
                index: p
                    .get("index")
                    .and_then(Value::as_u64)
                    .map(|x| x as usize)
                    .unwrap_or(i),
                params,
                metrics,
            })
        })
        .collect()
}

/// The largest rate of `group` (points of one configuration, by rate) up to which every point
/// meets the SLO; `None` when the lowest rate already misses it.
fn max_sustainable(points: &[&SweepPoint], rate: &str, slo: &Slo) -> Option<f64> {
    let mut v: Vec<(f64, Option<f64>)> = points
        .iter()
        .filter_map(|p| {
            Some((
                crate::plot::sweep_param_num(p.params.get(rate)?)?,
                p.metrics.get(&slo.metric).copied(),
            ))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = None;
    for (x, m) in v {
        match m {
            Some(m) if m <= slo.threshold => best = Some(x),
            _ => break,
        }
    }
    best
}

/// Metrics shown in the sweep table, when present.
const SWEEP_COLUMNS: [&str; 9] = [
    "ttft_mean_s",
    "ttft_p99_s",
    "query_ttft_mean_s",
    "e2e_mean_s",
    "output_tps",
    "hit_rate_cpu",
    "hit_rate_total",
    "rejected",
    "duration_s",
];

fn sweep_page(path: &Path, opts: &Options) -> Result<String> {
    let points = if path.is_dir() {
        crate::sweep::output::read_points(path)?
    } else {
        sweep_points_json(path)?
    };
    if points.is_empty() {
        return Err(bad(path, "the sweep has no points"));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    let mut page = Page::new(format!("kvreplay sweep: {name}"), path, opts);
    let varying = plot::sweep_varying(&points);
    let mut fixed: Vec<String> = Vec::new();
    for (k, v) in &points[0].params {
        if !varying.contains(k) {
            fixed.push(format!("{k} = {}", text_of(v)));
        }
    }
    page.p(&format!(
        "{} points; swept: {}{}",
        points.len(),
        if varying.is_empty() {
            "nothing".to_string()
        } else {
            varying.join(", ")
        },
        if fixed.is_empty() {
            String::new()
        } else {
            format!("; the same at every point: {}", fixed.join(", "))
        }
    ));
    let ttft = if points
        .iter()
        .any(|p| p.metrics.contains_key("query_ttft_mean_s"))
    {
        "query_ttft_mean_s"
    } else {
        "ttft_mean_s"
    };
    let num_params: Vec<&String> = varying
        .iter()
        .filter(|k| {
            points
                .iter()
                .filter_map(|p| p.params.get(*k).and_then(crate::plot::sweep_param_num))
                .count()
                >= 2
        })
        .collect();
    let rate = plot::RATE_PARAMS
        .iter()
        .find(|r| num_params.iter().any(|k| k == r))
        .copied();
    // The SLO and the largest sustainable rate.
    let mut max_rate = None;
    if let Some(slo) = &opts.slo {
        page.h2("Service-level objective");
        let words = plot::labels::metric_label(&slo.metric);
        let met = points
            .iter()
            .filter(|p| {
                p.metrics
                    .get(&slo.metric)
                    .is_some_and(|m| *m <= slo.threshold)
            })
            .count();
        page.p(&format!(
            "{words}: at most {}. Met at {met} of {} points.",
            slo.threshold,
            points.len()
        ));
        if let Some(rate) = rate {
            let groups = plot::sweep_groups(&points, rate);
            let mut rows = Vec::new();
            for g in &groups {
                let m = max_sustainable(&g.1, rate, slo);
                rows.push(vec![
                    Cell::from(if g.0.is_empty() {
                        "(all points)".to_string()
                    } else {
                        g.0.clone()
                    }),
                    Cell::from(m.map(|x| x.to_string()).unwrap_or_else(|| "none".into())),
                ]);
                if groups.len() == 1 {
                    max_rate = m;
                }
            }
            page.table(
                &["configuration", &format!("largest {rate} meeting the SLO")],
                rows,
            );
        }
    }
    // Plots: the questions kvreplay is asked.
    page.h2("Plots");
    let mut plotted: Vec<&str> = Vec::new();
    if num_params.iter().any(|k| *k == "rtt_ms") {
        page.figure(
            "ttft_vs_rtt",
            plot::ttft_vs_rtt(&points, ttft),
            "How far can the remote store be: TTFT against its round-trip time.",
        )?;
        if points.iter().any(|p| p.metrics.contains_key("ttft_p99_s")) {
            page.figure(
                "ttft_p99_vs_rtt",
                plot::ttft_vs_rtt(&points, "ttft_p99_s"),
                "Tail TTFT against the remote store's round-trip time.",
            )?;
        }
        plotted.push("rtt_ms");
    }
    if let Some(cpu) = plot::CPU_PARAMS
        .iter()
        .find(|c| num_params.iter().any(|k| k == *c))
    {
        page.figure(
            "hit_rate_vs_cpu",
            plot::hit_rate_vs_cpu(&points),
            "How big should the CPU tier be: prompt tokens served by each tier against its size.",
        )?;
        page.figure(
            "ttft_vs_cpu",
            plot::metric_vs_param(&points, cpu, ttft),
            "TTFT against the CPU tier's size.",
        )?;
        plotted.push(cpu);
    }
    if let Some(rate) = rate {
        page.figure(
            "throughput_vs_rate",
            plot::throughput_vs_qps(&points, "output_tps", opts.slo.as_ref(), max_rate),
            "Throughput against the offered request rate; with --slo, the SLO metric against its \
             threshold.",
        )?;
        plotted.push(rate);
    }
    for k in &num_params {
        if !plotted.contains(&k.as_str()) {
            page.figure(
                &format!("ttft_vs_{k}"),
                plot::metric_vs_param(&points, k, ttft),
                &format!("TTFT against {k}."),
            )?;
        }
    }
    if plotted.is_empty() && num_params.is_empty() {
        page.p("No numeric parameter was swept: see the table.");
    }
    page.h2("Points");
    let cols: Vec<&str> = SWEEP_COLUMNS
        .iter()
        .copied()
        .filter(|c| points.iter().any(|p| p.metrics.contains_key(*c)))
        .collect();
    let mut head: Vec<String> = vec!["#".into()];
    head.extend(varying.iter().cloned());
    head.extend(cols.iter().map(|c| c.to_string()));
    if opts.slo.is_some() {
        head.push("meets SLO".into());
    }
    let rows = points
        .iter()
        .map(|p| {
            let mut r = vec![Cell::from(p.index.to_string())];
            for k in &varying {
                r.push(Cell::from(p.params.get(k).map(text_of).unwrap_or_default()));
            }
            for c in &cols {
                let v = p.metrics.get(*c).copied();
                r.push(Cell::from(if c.starts_with("hit_rate") {
                    pct(v)
                } else {
                    opt(v)
                }));
            }
            if let Some(slo) = &opts.slo {
                let ok = p.metrics.get(&slo.metric).map(|m| *m <= slo.threshold);
                r.push(Cell {
                    text: match ok {
                        Some(true) => "yes".into(),
                        Some(false) => "no".into(),
                        None => "-".into(),
                    },
                    class: match ok {
                        Some(true) => "good",
                        Some(false) => "bad",
                        None => "",
                    },
                });
            }
            r
        })
        .collect();
    let head_ref: Vec<&str> = head.iter().map(String::as_str).collect();
    page.table(&head_ref, rows);
    page.p(
        "Times in seconds, throughput in tokens per second, hit rates as shares of prompt tokens.",
    );
    Ok(page.finish())
}

// ---------------------------------------------------------------------------------------------
// Validation

fn validation_page(path: &Path, opts: &Options) -> Result<String> {
    let v = read_json(path)?;
    let studies = v.get("studies").and_then(Value::as_array).ok_or_else(|| {
        bad(
            path,
            "no `studies` array (expected `kvreplay validate --json` output)",
        )
    })?;
    let mut page = Page::new("kvreplay validation", path, opts);
    // Overview.
    let mut overview = Vec::new();
    let mut all_points: Vec<ValidationPoint> = Vec::new();
    let mut per_study: Vec<Vec<ValidationPoint>> = Vec::new();
    for s in studies {
        let name = s.get("study").map(text_of).unwrap_or_else(|| "?".into());
        let mut pts = Vec::new();
        for r in s
            .get("runs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let fit = r.get("role").and_then(Value::as_str) == Some("fit");
            let run = r.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            for m in r
                .get("metrics")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(p), Some(meas)) = (
                    m.get("predicted").and_then(Value::as_f64),
                    m.get("measured").and_then(Value::as_f64),
                ) {
                    pts.push(ValidationPoint {
                        study: name.clone(),
                        run,
                        fit,
                        metric: m.get("metric").map(text_of).unwrap_or_default(),
                        predicted: p,
                        measured: meas,
                    });
                }
            }
        }
        overview.push(vec![
            Cell::from(name),
            Cell::from(
                s.get("runs")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string(),
            ),
            Cell::from(pct(s.get("check_median_rel_error").and_then(Value::as_f64))),
            Cell::from(pct(s.get("check_max_rel_error").and_then(Value::as_f64))),
            Cell::from({
                let bad = s
                    .get("inconsistent_check_runs")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if bad == 0 {
                    "-".to_string()
                } else {
                    format!(
                        "{bad} (median |error| {})",
                        pct(s
                            .get("inconsistent_check_median_rel_error")
                            .and_then(Value::as_f64))
                    )
                }
            }),
            Cell::from(pct(s.get("check_coverage").and_then(Value::as_f64))),
            Cell::from(if s.get("fitted").is_some_and(|f| !f.is_null()) {
                "yes"
            } else {
                "no"
            }),
        ]);
        all_points.extend(pts.iter().cloned());
        per_study.push(pts);
    }
    page.h2("Studies");
    page.table(
        &[
            "study",
            "runs",
            "check median |error|",
            "check max |error|",
            "check runs with inconsistent measurements",
            "check values inside their 95 % intervals",
            "fitted",
        ],
        overview,
    );
    page.p(
        "Errors are (predicted - measured) / measured. Check runs were never used for fitting; \
         their errors are the ones that count, over the runs whose measurements hold together \
         (Little's law for closed loops, throughputs against the workload's tokens, prefill \
         against the GPU's peak); the others are counted apart.",
    );
    if studies.len() > 1 {
        page.figure(
            "validation_all",
            plot::predicted_vs_measured(&all_points),
            "Every predicted metric of every study against its measurement.",
        )?;
    }
    for (s, pts) in studies.iter().zip(&per_study) {
        let name = s.get("study").map(text_of).unwrap_or_else(|| "?".into());
        page.h2(&format!("Study {name}"));
        let mut facts = vec![
            format!("file: {}", s.get("file").map(text_of).unwrap_or_default()),
            format!("GPU: {}", s.get("gpu").map(text_of).unwrap_or_default()),
        ];
        match s.get("fitted").filter(|f| !f.is_null()) {
            Some(f) => facts.push(format!(
                "fitted on fit runs {} ({} evaluations; mean squared log error {} -> {}): {}",
                f.get("runs").map(|r| r.to_string()).unwrap_or_default(),
                f.get("evaluations").map(text_of).unwrap_or_default(),
                opt(f.get("objective_before").and_then(Value::as_f64)),
                opt(f.get("objective_after").and_then(Value::as_f64)),
                f.get("params")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k} = {}", opt(v.as_f64())))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            )),
            None => facts.push("nothing fitted: every parameter is the GPU profile's".into()),
        }
        for n in s
            .get("notes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            facts.push(format!("note: {}", text_of(n)));
        }
        page.list(&facts);
        if !pts.is_empty() {
            page.figure(
                &format!(
                    "validation_{}",
                    name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
                plot::predicted_vs_measured(pts),
                "Each point is one metric of one run; inside the grey band the prediction is \
                 within 25 % of the measurement.",
            )?;
        }
        let mut rows = Vec::new();
        for r in s
            .get("runs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let set = r
                .get("set")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", text_of(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            for m in r
                .get("metrics")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let err = m.get("error").and_then(Value::as_f64);
                rows.push(vec![
                    Cell::from(r.get("index").map(text_of).unwrap_or_default()),
                    Cell::from(r.get("role").map(text_of).unwrap_or_default()),
                    Cell::from(set.clone()),
                    Cell::from(m.get("metric").map(text_of).unwrap_or_default()),
                    Cell::from(opt(m.get("predicted").and_then(Value::as_f64))),
                    Cell::from(opt(m.get("measured").and_then(Value::as_f64))),
                    Cell {
                        text: err
                            .map(|e| format!("{:+.1} %", e * 100.0))
                            .unwrap_or_else(|| "-".into()),
                        class: match err {
                            Some(e) if e.abs() > 0.25 => "n bad",
                            _ => "n",
                        },
                    },
                ]);
            }
        }
        page.table(
            &[
                "run",
                "role",
                "set",
                "metric",
                "predicted",
                "measured",
                "error",
            ],
            rows,
        );
    }
    Ok(page.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{compare, default_base, parse_variants};
    use crate::trace::generate::long_doc_qa;
    use serde_json::json;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kvreplay-html-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A compare folder as `kvreplay compare` writes it, for a tiny long_doc_qa.
    fn compare_folder(dir: &Path) {
        let p = long_doc_qa::Params {
            num_documents: 4,
            document_length: 3000,
            output_len: 20,
            repeat_count: 1,
            repeat_mode: long_doc_qa::RepeatMode::Tile,
            max_inflight_requests: 2,
            ..Default::default()
        };
        let t = long_doc_qa::generate(&p, 0).unwrap();
        let vs = parse_variants("none,cpu:20").unwrap();
        let out = compare(&t, &default_base(), &vs).unwrap();
        let mut rows = Vec::new();
        for (v, cfg, o) in &out {
            let sub = dir.join(v.label.replace([':', '/'], "_"));
            let mut config = cfg.to_json();
            config["provenance"] = o.provenance();
            crate::report::write_run(&sub, o, &config).unwrap();
            rows.push(json!({"variant": v.label, "config": cfg.to_json(), "summary": o.summary}));
        }
        std::fs::write(
            dir.join("compare.json"),
            serde_json::to_string_pretty(&rows).unwrap(),
        )
        .unwrap();
    }

    fn self_contained(html: &str) {
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        for r in ["<script", "<link", "<img", "src=", "@import", "url("] {
            assert!(!html.contains(r), "{r} in the page");
        }
    }

    #[test]
    fn compare_and_run_folders_give_self_contained_pages() {
        let dir = temp("compare");
        compare_folder(&dir);
        assert_eq!(detect(&dir).unwrap(), Kind::Compare(dir.clone()));
        let html = report(&dir, &Options::default()).unwrap();
        self_contained(&html);
        assert!(html.contains("<h2>Variants</h2>") && html.contains("<table>"));
        assert!(html.contains("<td>none</td>") && html.contains("<td>cpu:20</td>"));
        assert!(html.contains("query-round TTFT mean (s)"));
        assert_eq!(html.matches("<svg").count(), 2, "TTFT and E2E plots");
        assert!(html.contains("Time to first token per configuration"));
        assert_eq!(html, report(&dir, &Options::default()).unwrap());
        // One variant's folder is a run folder.
        let run = dir.join("cpu_20");
        assert_eq!(detect(&run).unwrap(), Kind::Run(run.clone()));
        let recs = read_requests(&run.join("requests.parquet")).unwrap();
        assert_eq!(recs.len(), 8);
        let html = report(&run, &Options::default()).unwrap();
        self_contained(&html);
        assert!(html.contains("<h2>Summary</h2>") && html.contains("<h2>By round</h2>"));
        assert_eq!(html.matches("<svg").count(), 2);
        // The summary is read through its type: a renamed field is an error naming the field,
        // not a row of "-".
        let sj = run.join("summary.json");
        let text = std::fs::read_to_string(&sj).unwrap();
        std::fs::write(&sj, text.replace("\"ttft\":", "\"ttft_s\":")).unwrap();
        let e = report(&run, &Options::default()).unwrap_err().to_string();
        assert!(e.contains("summary: missing field `ttft`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sweep_points_give_plots_and_the_slo_table() {
        let dir = temp("sweep");
        let mut pts = Vec::new();
        for rtt in [1.0, 10.0, 50.0] {
            for q in [1.0, 2.0, 4.0] {
                pts.push(json!({
                    "index": pts.len(),
                    "params": {"rtt_ms": rtt, "qps_scale": q, "tier": "remote"},
                    "metrics": {
                        "ttft_mean_s": 0.05 * q + rtt / 100.0,
                        "ttft_p99_s": 0.1 * q * q + rtt / 50.0,
                        "output_tps": 1000.0 * q,
                        "hit_rate_remote": 0.5,
                    }
                }));
            }
        }
        std::fs::write(dir.join("sweep.json"), json!(pts).to_string()).unwrap();
        assert_eq!(detect(&dir).unwrap(), Kind::Sweep(dir.join("sweep.json")));
        let opts = Options {
            slo: Some(parse_slo("ttft_p99_s<=1").unwrap()),
            plots: std::env::var_os("KVREPLAY_PLOT_DIR").map(PathBuf::from),
        };
        let html = report(&dir, &opts).unwrap();
        self_contained(&html);
        assert!(html.contains("meets SLO") && html.contains("largest qps_scale meeting the SLO"));
        // rtt: mean and p99; qps: throughput with the SLO panel.
        assert_eq!(html.matches("<svg").count(), 3, "{html}");
        assert!(html.contains("SLO threshold: 1 s"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validation_json_gives_tables_and_plots() {
        let dir = temp("validation");
        let f = dir.join("v.json");
        let v = json!({"studies": [{
            "study": "lmcache_cpu", "file": "s.yaml", "gpu": "H100 (as stated)", "notes": ["n1"],
            "fitted": {"params": {"compute_efficiency": 0.61}, "runs": [0], "objective_before": 0.3,
                       "objective_after": 0.01, "evaluations": 40},
            "runs": [
                {"index": 0, "role": "fit", "set": {"case": "a"}, "metrics": [
                    {"metric": "ttft_mean_s", "predicted": 0.21, "measured": 0.2, "error": 0.05}]},
                {"index": 1, "role": "check", "set": {"case": "b"}, "metrics": [
                    {"metric": "ttft_mean_s", "predicted": 0.5, "measured": 0.3, "error": 0.667},
                    {"metric": "output_tps", "predicted": null, "measured": 900.0, "error": null}]}
            ],
            "check_median_rel_error": 0.667, "check_max_rel_error": 0.667
        }]});
        std::fs::write(&f, v.to_string()).unwrap();
        assert_eq!(detect(&f).unwrap(), Kind::Validation(f.clone()));
        let html = report(&f, &Options::default()).unwrap();
        self_contained(&html);
        assert!(html.contains("Study lmcache_cpu") && html.contains("compute_efficiency = 0.6100"));
        assert!(html.contains("<td class=\"n bad\">+66.7 %</td>"));
        assert_eq!(html.matches("<svg").count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_inputs_say_what_was_expected() {
        let dir = temp("empty");
        let e = report(&dir, &Options::default()).unwrap_err().to_string();
        assert!(
            e.contains("nothing to report on") && e.contains("compare.json"),
            "{e}"
        );
        let f = dir.join("x.json");
        std::fs::write(&f, "{\"a\": 1}").unwrap();
        let e = detect(&f).unwrap_err().to_string();
        assert!(e.contains("studies"), "{e}");
        assert!(detect(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            parse_slo("ttft_p99_s<=2").unwrap(),
            Slo {
                metric: "ttft_p99_s".into(),
                threshold: 2.0
            }
        );
        assert!(parse_slo("ttft_p99_s").is_err() && parse_slo("x<=-1").is_err());
        let e = parse_slo("ttft_p99<=2").unwrap_err().to_string();
        assert!(
            e.contains("unknown metric \"ttft_p99\"; accepted: ttft_mean_s"),
            "{e}"
        );
    }
}

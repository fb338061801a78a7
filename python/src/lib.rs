//! `kvreplay._native`: the simulator's entry points for Python. The `kvreplay` Python package
//! (`python/kvreplay/__init__.py`) wraps these in its public API; tables cross as Arrow C
//! streams (no copy through Python objects), configuration and summaries as plain dicts.

mod arrow;
mod convert;

use arrow::{ArrowTable, read_stream};
use convert::{json_to_py, py_to_json, py_to_map};
use kvreplay::config::RunConfig;
use kvreplay::trace::{Trace, TraceMeta};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

create_exception!(
    _native,
    KvreplayError,
    PyValueError,
    "Bad input or configuration: the message names the file, line and field at fault, as the \
     command line's errors do."
);

/// The library's errors as [`KvreplayError`], with the message the command line prints.
fn err(e: impl std::fmt::Display) -> PyErr {
    KvreplayError::new_err(e.to_string())
}

/// A workload held by Rust; the Python `Trace` class wraps it.
#[pyclass(module = "kvreplay._native", frozen)]
struct NativeTrace {
    trace: Trace,
}

#[pymethods]
impl NativeTrace {
    /// Requests in the trace.
    fn __len__(&self) -> usize {
        self.trace.requests.len()
    }

    /// The header (source, pools, parameters) as JSON text.
    fn header_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.trace.meta).map_err(err)
    }

    /// The requests as an Arrow stream in the canonical Parquet columns.
    fn to_arrow(&self) -> PyResult<ArrowTable> {
        ArrowTable::new(kvreplay::trace::parquet::to_arrow(&self.trace).map_err(err)?)
    }

    /// Writes the trace (`.jsonl` or `.parquet`, by extension).
    fn write(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| kvreplay::trace::write(&self.trace, &path))
            .map_err(err)
    }
}

/// Reads a canonical trace file (`.jsonl` or `.parquet`).
#[pyfunction]
fn read_trace(py: Python<'_>, path: PathBuf) -> PyResult<NativeTrace> {
    let trace = py.detach(|| kvreplay::trace::read(&path)).map_err(err)?;
    Ok(NativeTrace { trace })
}

/// A trace from an Arrow stream capsule in the canonical columns; `header_json` is the header
/// when the stream's schema carries none.
#[pyfunction]
#[pyo3(signature = (stream, header_json=None, name="arrow table"))]
fn trace_from_arrow(
    stream: &Bound<'_, PyAny>,
    header_json: Option<&str>,
    name: &str,
) -> PyResult<NativeTrace> {
    let (schema, batches) = read_stream(stream)?;
    let meta = match header_json {
        Some(text) => Some(
            serde_json::from_str::<TraceMeta>(text)
                .map_err(|e| err(format!("{name}: trace header: {e}")))?,
        ),
        None => None,
    };
    let trace = kvreplay::trace::parquet::from_arrow(&schema, batches, meta, name).map_err(err)?;
    Ok(NativeTrace { trace })
}

/// The canonical trace columns, as an empty Arrow stream (for casting tables built elsewhere).
#[pyfunction]
fn trace_schema() -> PyResult<ArrowTable> {
    let empty = Trace {
        meta: TraceMeta::new("schema"),
        requests: Vec::new(),
    };
    ArrowTable::new(kvreplay::trace::parquet::to_arrow(&empty).map_err(err)?)
}

/// The content id of request `id`'s generated tokens (the default `output_content`).
#[pyfunction]
fn output_content(id: u64) -> u64 {
    kvreplay::trace::output_content(id)
}

/// A generated workload: `kind` is a study workload kind, `params` its parameters.
#[pyfunction]
fn generate(
    py: Python<'_>,
    kind: &str,
    params: &Bound<'_, PyDict>,
    seed: u64,
) -> PyResult<NativeTrace> {
    let params = py_to_map(params)?;
    let file = format!("kvreplay.generate({kind})");
    let trace = py
        .detach(|| kvreplay::trace::generate::from_study(kind, &params, seed, &file))
        .map_err(err)?;
    Ok(NativeTrace { trace })
}

/// Imports a file in one of `trace import`'s formats; returns the trace and what the import
/// did with each record (`read`, `imported`, `skipped` by reason, `examples`).
#[pyfunction]
#[pyo3(signature = (format, path, strict=false, block_size=None, clients=None, tokenizer=None, think_time=0.0))]
#[allow(clippy::too_many_arguments)]
fn import_trace<'py>(
    py: Python<'py>,
    format: &str,
    path: PathBuf,
    strict: bool,
    block_size: Option<u32>,
    clients: Option<u32>,
    tokenizer: Option<PathBuf>,
    think_time: f64,
) -> PyResult<(NativeTrace, Bound<'py, PyDict>)> {
    use clap::ValueEnum;
    use kvreplay::trace::import::{Format, ImportOptions, import};
    let fmt = Format::from_str(format, true).map_err(|_| {
        let known: Vec<String> = Format::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        err(format!(
            "unknown import format \"{format}\" (known: {})",
            known.join(", ")
        ))
    })?;
    let think_ns = kvreplay::util::json::seconds_to_ns(think_time)
        .ok_or_else(|| err("think_time must be a number of seconds, 0 or more"))?;
    let tokenizer = match tokenizer {
        Some(dir) => Some(std::sync::Arc::new(
            kvreplay::trace::import::text_tokenizer::TextTokenizer::load(&dir).map_err(err)?,
        )),
        None => None,
    };
    let opts = ImportOptions {
        strict,
        block_size,
        clients,
        tokenizer,
        think_ns,
    };
    let (trace, report) = py.detach(|| import(fmt, &path, &opts)).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("read", report.read)?;
    d.set_item("imported", report.imported)?;
    d.set_item("skipped", report.skipped.clone())?;
    d.set_item(
        "examples",
        report
            .examples
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
    )?;
    Ok((NativeTrace { trace }, d))
}

/// The default configuration with `config`'s keys applied, as `--set` would.
fn config_of(config: &Bound<'_, PyDict>) -> PyResult<RunConfig> {
    let mut c = RunConfig::default();
    c.set_all(&py_to_map(config)?).map_err(err)?;
    Ok(c)
}

/// One finished run as (requests table, summary dict, resolved configuration dict).
type RunTuple<'py> = (ArrowTable, Bound<'py, PyAny>, Bound<'py, PyAny>);

fn run_tuple<'py>(
    py: Python<'py>,
    o: &kvreplay::pipeline::RunOutput,
    cfg: &RunConfig,
) -> PyResult<RunTuple<'py>> {
    let table =
        ArrowTable::new(kvreplay::report::parquet::requests_arrow(&o.records).map_err(err)?)?;
    let summary = serde_json::to_value(&o.summary).map_err(err)?;
    let mut config = cfg.to_json();
    config["provenance"] = o.provenance();
    Ok((table, json_to_py(py, &summary)?, json_to_py(py, &config)?))
}

/// Simulates `trace` under the default configuration with `config`'s keys applied; with
/// `timeline`, also writes the run there as a Chrome / Perfetto trace and returns what it holds
/// (events, the per-replica record limit, records dropped past it, requests drawn) as a fourth
/// element.
#[pyfunction]
#[pyo3(signature = (trace, config, timeline=None))]
fn run<'py>(
    py: Python<'py>,
    trace: &NativeTrace,
    config: &Bound<'py, PyDict>,
    timeline: Option<PathBuf>,
) -> PyResult<(RunTuple<'py>, Bound<'py, PyAny>)> {
    let cfg = config_of(config)?;
    let (o, info) = py
        .detach(|| {
            let p = kvreplay::pipeline::prepare(&trace.trace, &cfg)?;
            match &timeline {
                Some(path) => p.run_with_timeline(path).map(|(o, i)| (o, Some(i))),
                None => p.run().map(|o| (o, None)),
            }
        })
        .map_err(err)?;
    let result = run_tuple(py, &o, &cfg)?;
    let info = match info {
        Some(i) => {
            let d = PyDict::new(py);
            d.set_item("events", i.events)?;
            d.set_item("limit_per_replica", i.limit_per_replica)?;
            d.set_item("dropped_steps", i.dropped_steps)?;
            d.set_item("dropped_transfers", i.dropped_transfers)?;
            d.set_item("sampled_requests", i.sampled_requests)?;
            d.into_any()
        }
        None => py.None().into_bound(py),
    };
    Ok((result, info))
}

/// `trace` under each of `variants` (`compare --variants` syntax; `None`: the default list) over
/// `config`: a list of (label, requests, summary, configuration). With no trace, the embedded
/// default workload and its base configuration, as `kvreplay compare` with no arguments.
#[pyfunction]
#[pyo3(signature = (trace, variants, config))]
fn compare<'py>(
    py: Python<'py>,
    trace: Option<&NativeTrace>,
    variants: Option<&str>,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyList>> {
    let default_trace;
    let (t, mut base) = match trace {
        Some(t) => (&t.trace, RunConfig::default()),
        None => {
            default_trace = kvreplay::compare::default_trace().map_err(err)?;
            (&default_trace, kvreplay::compare::default_base())
        }
    };
    base.set_all(&py_to_map(config)?).map_err(err)?;
    let vs =
        kvreplay::compare::parse_variants(variants.unwrap_or(kvreplay::compare::DEFAULT_VARIANTS))
            .map_err(err)?;
    let results = py
        .detach(|| kvreplay::compare::compare(t, &base, &vs))
        .map_err(err)?;
    let out = PyList::empty(py);
    for (v, cfg, o) in &results {
        let (t, s, c) = run_tuple(py, o, cfg)?;
        out.append((v.label.clone(), t, s, c))?;
    }
    Ok(out)
}

/// A grid of configurations (`grid`: key -> list of values) over `config`: one row per point,
/// the columns of `sweep`'s `points.parquet`.
#[pyfunction]
fn sweep(
    py: Python<'_>,
    trace: &NativeTrace,
    grid: &Bound<'_, PyDict>,
    config: &Bound<'_, PyDict>,
) -> PyResult<ArrowTable> {
    let base = config_of(config)?;
    let mut g = kvreplay::sweep::Grid::default();
    for (k, v) in grid.iter() {
        let key: String = k.extract()?;
        let values = match py_to_json(&v)? {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        g.add(&key, values).map_err(err)?;
    }
    let all = kvreplay::sweep::Shard::ALL;
    let points = py
        .detach(|| kvreplay::sweep::run_grid(&trace.trace, &base, &g, all, &|_, _| {}))
        .map_err(err)?;
    ArrowTable::new(kvreplay::sweep::output::points_arrow(&g, &points).map_err(err)?)
}

fn targets(list: Vec<String>) -> PyResult<Vec<kvreplay::plan::Target>> {
    list.iter()
        .map(|s| kvreplay::plan::Target::parse(s).map_err(err))
        .collect()
}

fn plan_dict<'py>(py: Python<'py>, plan: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    json_to_py(py, &serde_json::to_value(plan).map_err(err)?)
}

/// `plan rate`: the highest arrival-rate factor meeting every SLO.
#[pyfunction]
fn plan_rate<'py>(
    py: Python<'py>,
    trace: &NativeTrace,
    slos: Vec<String>,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = config_of(config)?;
    let slos = targets(slos)?;
    let p = py
        .detach(|| kvreplay::plan::max_rate(&trace.trace, &cfg, &slos))
        .map_err(err)?;
    plan_dict(py, &p)
}

/// `plan tier-size`: the smallest CPU (or disk) tier reaching every target.
#[pyfunction]
fn plan_tier_size<'py>(
    py: Python<'py>,
    trace: &NativeTrace,
    targets_: Vec<String>,
    disk: bool,
    resolution_gib: f64,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    use kvreplay::plan::Knob;
    let cfg = config_of(config)?;
    let t = targets(targets_)?;
    let knob = if disk { Knob::DiskGib } else { Knob::CpuGib };
    let p = py
        .detach(|| kvreplay::plan::smallest_tier(&trace.trace, &cfg, knob, &t, resolution_gib))
        .map_err(err)?;
    plan_dict(py, &p)
}

/// `plan chunk`: the chunk size among `candidates` minimising `metric` at `rtt_ms`.
#[pyfunction]
fn plan_chunk<'py>(
    py: Python<'py>,
    trace: &NativeTrace,
    rtt_ms: f64,
    candidates: Vec<u32>,
    metric: &str,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = config_of(config)?;
    let p = py
        .detach(|| kvreplay::plan::best_chunk(&trace.trace, &cfg, rtt_ms, &candidates, metric))
        .map_err(err)?;
    plan_dict(py, &p)
}

/// `plan fleet`: the fewest replicas behind the configured router meeting every SLO.
#[pyfunction]
fn plan_fleet<'py>(
    py: Python<'py>,
    trace: &NativeTrace,
    slos: Vec<String>,
    max_replicas: u32,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = config_of(config)?;
    let slos = targets(slos)?;
    let p = py
        .detach(|| kvreplay::plan::fewest_replicas(&trace.trace, &cfg, &slos, max_replicas))
        .map_err(err)?;
    plan_dict(py, &p)
}

/// Every configuration key with its description and default, as `kvreplay keys` prints them.
#[pyfunction]
fn keys_help() -> String {
    kvreplay::config::keys::help()
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KvreplayError", m.py().get_type::<KvreplayError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<NativeTrace>()?;
    m.add_class::<ArrowTable>()?;
    for f in [
        wrap_pyfunction!(read_trace, m)?,
        wrap_pyfunction!(trace_from_arrow, m)?,
        wrap_pyfunction!(trace_schema, m)?,
        wrap_pyfunction!(output_content, m)?,
        wrap_pyfunction!(generate, m)?,
        wrap_pyfunction!(import_trace, m)?,
        wrap_pyfunction!(run, m)?,
        wrap_pyfunction!(compare, m)?,
        wrap_pyfunction!(sweep, m)?,
        wrap_pyfunction!(plan_rate, m)?,
        wrap_pyfunction!(plan_tier_size, m)?,
        wrap_pyfunction!(plan_chunk, m)?,
        wrap_pyfunction!(plan_fleet, m)?,
        wrap_pyfunction!(keys_help, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}

//! What a run leaves behind: `requests.parquet` (one row per request), `summary.json` (the
//! configuration and the aggregates), `kv_usage.json` (GPU KV usage over time), and the table
//! printed to the terminal.
//!
//! Every file is a pure function of its inputs: no timestamps, no hash-map iteration order,
//! floats in shortest round-trip form (JSON) or fixed precision (text), so identical runs give
//! byte-identical output.

#[cfg(feature = "plots")]
pub mod html;
pub mod parquet;
pub mod text;
pub mod timeline;

pub use parquet::write_requests;
pub use text::print_summary;

use crate::error::{Error, Result};
use crate::metrics::record::RequestRecord;
use crate::metrics::summary::RunSummary;
use crate::pipeline::RunOutput;
use crate::sim::{KvSample, SimResult};
use serde::Serialize;
use std::path::Path;

/// Contents of `summary.json`.
#[derive(Serialize)]
struct SummaryFile<'a> {
    config: &'a serde_json::Value,
    summary: &'a RunSummary,
}

/// Contents of `kv_usage.json`: a single engine's samples, or each replica's.
#[derive(Serialize)]
struct KvUsageFile<'a> {
    num_gpu_blocks: u32,
    samples: &'a [KvSample],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<ReplicaUsage<'a>>,
}

/// One replica's usage series in a fleet's `kv_usage.json`.
#[derive(Serialize)]
struct ReplicaUsage<'a> {
    num_gpu_blocks: u32,
    samples: &'a [KvSample],
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invariant(format!("serialising {}: {e}", path.display())))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io(path.display().to_string(), e))
}

/// Writes a run's `requests.parquet`, `summary.json` and `kv_usage.json` into `dir` (created if
/// needed), from the records and summary the pipeline computed.
pub fn write_run(dir: &Path, out: &RunOutput, config_json: &serde_json::Value) -> Result<()> {
    write_parts(dir, &out.records, &out.summary, &out.result, config_json)
}

/// [`write_run`] from its parts.
pub fn write_parts(
    dir: &Path,
    records: &[RequestRecord],
    summary: &RunSummary,
    result: &SimResult,
    config_json: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    write_requests(records, &dir.join("requests.parquet"))?;
    write_json(
        &dir.join("summary.json"),
        &SummaryFile {
            config: config_json,
            summary,
        },
    )?;
    write_json(
        &dir.join("kv_usage.json"),
        &KvUsageFile {
            num_gpu_blocks: result.num_gpu_blocks,
            samples: &result.kv_samples,
            replicas: result
                .replicas
                .iter()
                .map(|r| ReplicaUsage {
                    num_gpu_blocks: r.num_gpu_blocks,
                    samples: &r.kv_samples,
                })
                .collect(),
        },
    )
}

#[cfg(test)]
mod tests;

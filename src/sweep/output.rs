//! A sweep's results on disk: one Parquet file per shard in hive-style folders
//! (`DIR/shard=K/points.parquet`), so that DuckDB, pandas or polars read all shards as one table
//! (`read_parquet('DIR/*/*.parquet', hive_partitioning = true)`), plus the same points as JSON
//! (`points.json`) for `kvreplay report`.
//!
//! Columns: `index`, one column per grid key (Float64 when every value is a number, Boolean when
//! every value is a boolean, else Utf8 holding the value as written), one Float64 column per
//! metric of [`super::METRICS`] (null where undefined), and `params` (the point's keys as JSON).

use super::{Grid, METRICS, Shard, SweepPoint};
use crate::error::{Error, Result};
use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy)]
enum Kind {
    Num,
    Bool,
    Text,
}

fn kind_of(values: &[Value]) -> Kind {
    if values.iter().all(Value::is_number) {
        Kind::Num
    } else if values.iter().all(Value::is_boolean) {
        Kind::Bool
    } else {
        Kind::Text
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// The folder of shard `shard` under `dir`.
pub fn shard_dir(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("shard={}", shard.k))
}

/// The points table's schema and its batch builder for `grid`.
#[allow(clippy::type_complexity)]
fn points_columns(
    grid: &Grid,
) -> (
    Arc<Schema>,
    impl Fn(&[SweepPoint], Arc<Schema>) -> std::result::Result<RecordBatch, ArrowError>,
) {
    let kinds: Vec<(String, Kind)> = grid
        .axes
        .iter()
        .map(|(k, v)| (k.clone(), kind_of(v)))
        .collect();
    let mut fields = vec![Field::new("index", DataType::UInt64, false)];
    for (k, kind) in &kinds {
        let t = match kind {
            Kind::Num => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Text => DataType::Utf8,
        };
        fields.push(Field::new(k, t, false));
    }
    for m in METRICS {
        fields.push(Field::new(*m, DataType::Float64, true));
    }
    fields.push(Field::new("params", DataType::Utf8, false));
    let schema = Arc::new(Schema::new(fields));
    let build = move |chunk: &[SweepPoint], schema: Arc<Schema>| {
        let mut cols: Vec<ArrayRef> = Vec::new();
        let mut idx = UInt64Builder::new();
        for p in chunk {
            idx.append_value(p.index as u64);
        }
        cols.push(Arc::new(idx.finish()));
        for (k, kind) in &kinds {
            match kind {
                Kind::Num => {
                    let mut b = Float64Builder::new();
                    for p in chunk {
                        b.append_value(p.params[k].as_f64().unwrap_or(f64::NAN));
                    }
                    cols.push(Arc::new(b.finish()));
                }
                Kind::Bool => {
                    let mut b = BooleanBuilder::new();
                    for p in chunk {
                        b.append_value(p.params[k].as_bool().unwrap_or(false));
                    }
                    cols.push(Arc::new(b.finish()));
                }
                Kind::Text => {
                    let mut b = StringBuilder::new();
                    for p in chunk {
                        b.append_value(text(&p.params[k]));
                    }
                    cols.push(Arc::new(b.finish()));
                }
            }
        }
        for m in METRICS {
            let mut b = Float64Builder::new();
            for p in chunk {
                b.append_option(p.metrics.get(*m).copied());
            }
            cols.push(Arc::new(b.finish()));
        }
        let mut b = StringBuilder::new();
        for p in chunk {
            b.append_value(serde_json::to_string(&p.params).unwrap_or_default());
        }
        cols.push(Arc::new(b.finish()));
        RecordBatch::try_new(schema, cols)
    };
    (schema, build)
}

/// `points` as the record batches of `points.parquet`: the sweep table the Python package
/// returns.
pub fn points_arrow(grid: &Grid, points: &[SweepPoint]) -> Result<Vec<RecordBatch>> {
    let (schema, build) = points_columns(grid);
    crate::util::parquet::batches(schema, points, build)
}

/// Writes `points` (this shard's) under `dir`; returns the Parquet path.
pub fn write_points(
    dir: &Path,
    grid: &Grid,
    shard: Shard,
    points: &[SweepPoint],
) -> Result<PathBuf> {
    let sd = shard_dir(dir, shard);
    std::fs::create_dir_all(&sd).map_err(|e| Error::io(sd.display().to_string(), e))?;
    let (schema, build) = points_columns(grid);
    let path = sd.join("points.parquet");
    crate::util::parquet::write_rows(&path, schema, points, build)?;
    let json =
        serde_json::to_string_pretty(points).map_err(|e| Error::Invariant(e.to_string()))? + "\n";
    let jp = sd.join("points.json");
    std::fs::write(&jp, json).map_err(|e| Error::io(jp.display().to_string(), e))?;
    Ok(path)
}

/// Reads every shard's `points.json` under `dir`, in index order.
pub fn read_points(dir: &Path) -> Result<Vec<SweepPoint>> {
    let mut out: Vec<SweepPoint> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard="))
        })
        .collect();
    dirs.sort();
    for d in dirs {
        let f = d.join("points.json");
        let text =
            std::fs::read_to_string(&f).map_err(|e| Error::io(f.display().to_string(), e))?;
        let pts: Vec<SweepPointJson> = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not a sweep points file: {e}", f.display())))?;
        out.extend(pts.into_iter().map(|p| SweepPoint {
            index: p.index,
            params: p.params,
            metrics: p.metrics,
        }));
    }
    out.sort_by_key(|p| p.index);
    Ok(out)
}

#[derive(serde::Deserialize)]
struct SweepPointJson {
    index: usize,
    params: std::collections::BTreeMap<String, Value>,
    metrics: std::collections::BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn shards_write_hive_folders_that_read_back_as_one_table() {
        let dir = std::env::temp_dir().join(format!("kvr-sweep-{}", std::process::id()));
        let mut g = Grid::default();
        g.add_arg("tier=none,cpu").unwrap();
        g.add_arg("rtt_ms=1,10").unwrap();
        let pts: Vec<SweepPoint> = (0..g.len())
            .map(|i| SweepPoint {
                index: i,
                params: g.point(i),
                metrics: BTreeMap::from([("ttft_p99_s".to_string(), i as f64)]),
            })
            .collect();
        for k in 0..2 {
            let shard = Shard { k, n: 2 };
            let mine: Vec<SweepPoint> = pts
                .iter()
                .filter(|p| shard.owns(p.index))
                .cloned()
                .collect();
            let p = write_points(&dir, &g, shard, &mine).unwrap();
            assert!(p.ends_with(format!("shard={k}/points.parquet")));
        }
        assert_eq!(read_points(&dir).unwrap(), pts);
        // The Parquet file reads back with typed columns.
        let f = std::fs::File::open(dir.join("shard=1/points.parquet")).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        let schema = r.schema().clone();
        assert_eq!(
            schema.field_with_name("rtt_ms").unwrap().data_type(),
            &DataType::Float64
        );
        assert_eq!(
            schema.field_with_name("tier").unwrap().data_type(),
            &DataType::Utf8
        );
        let batch = r.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let _ = json!(0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

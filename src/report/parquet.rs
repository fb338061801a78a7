//! `requests.parquet`: one row per request, one column per [`RequestRecord`] field, in field
//! order. Optional fields are nullable columns; times are Float64 seconds; `status` is
//! `"finished"` or `"rejected"`.

use crate::error::{Error, InputError, Result};
use crate::metrics::record::{RequestRecord, Status};
use crate::util::parquet::write_rows;
use arrow_array::builder::{Float64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// Columns: (name, type, nullable), in [`RequestRecord`] field order.
const COLUMNS: [(&str, DataType, bool); 27] = [
    ("id", DataType::UInt64, false),
    ("round", DataType::UInt32, false),
    ("session", DataType::UInt64, true),
    ("status", DataType::Utf8, false),
    ("reject_reason", DataType::Utf8, true),
    ("arrival_s", DataType::Float64, true),
    ("queue_s", DataType::Float64, true),
    ("ttft_s", DataType::Float64, true),
    ("tpot_s", DataType::Float64, true),
    ("itl_mean_s", DataType::Float64, true),
    ("itl_max_s", DataType::Float64, true),
    ("e2e_s", DataType::Float64, true),
    ("input_len", DataType::UInt32, false),
    ("output_len", DataType::UInt32, false),
    ("tokens_gpu", DataType::UInt32, false),
    ("tokens_cpu", DataType::UInt32, false),
    ("tokens_disk", DataType::UInt32, false),
    ("tokens_remote", DataType::UInt32, false),
    ("tokens_computed", DataType::UInt32, false),
    ("bytes_loaded", DataType::UInt64, false),
    ("bytes_stored", DataType::UInt64, false),
    ("preemptions", DataType::UInt32, false),
    ("preempted_queries", DataType::UInt32, false),
    ("preempted_gpu_hits", DataType::UInt32, false),
    ("preempted_external_hits", DataType::UInt32, false),
    ("measured_ttft_s", DataType::Float64, true),
    ("measured_e2e_s", DataType::Float64, true),
];

/// The columns; a fleet's records add `replica` (UInt32) at the end, and a disaggregated
/// fleet's `prefill_replica` after it.
fn schema(fleet: bool, pd: bool) -> Schema {
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, t, null)| Field::new(*name, t.clone(), *null))
        .collect();
    if fleet {
        fields.push(Field::new("replica", DataType::UInt32, true));
    }
    if pd {
        fields.push(Field::new("prefill_replica", DataType::UInt32, true));
    }
    Schema::new(fields)
}

/// Writes `records` to `path` (Snappy-compressed, no timestamps: identical records give
/// identical bytes).
pub fn write_requests(records: &[RequestRecord], path: &Path) -> Result<()> {
    let fleet = records.iter().any(|r| r.replica.is_some());
    let pd = records.iter().any(|r| r.prefill_replica.is_some());
    write_rows(path, Arc::new(schema(fleet, pd)), records, to_batch)
}

/// `records` as the record batches of `requests.parquet` (same schema, same values): the
/// per-request table the Python package returns.
pub fn requests_arrow(records: &[RequestRecord]) -> Result<Vec<RecordBatch>> {
    let fleet = records.iter().any(|r| r.replica.is_some());
    let pd = records.iter().any(|r| r.prefill_replica.is_some());
    crate::util::parquet::batches(Arc::new(schema(fleet, pd)), records, to_batch)
}

fn to_batch(
    recs: &[RequestRecord],
    schema: Arc<Schema>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let u64s = |f: fn(&RequestRecord) -> u64| {
        let mut b = UInt64Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let opt_u64s = |f: fn(&RequestRecord) -> Option<u64>| {
        let mut b = UInt64Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let u32s = |f: fn(&RequestRecord) -> u32| {
        let mut b = UInt32Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let f64s = |f: fn(&RequestRecord) -> Option<f64>| {
        let mut b = Float64Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let strs = |f: fn(&RequestRecord) -> Option<std::borrow::Cow<'_, str>>| {
        let mut b = StringBuilder::new();
        recs.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let cols: Vec<ArrayRef> = vec![
        u64s(|r| r.id),
        u32s(|r| r.round),
        opt_u64s(|r| r.session),
        strs(|r| Some(r.status.as_str().into())),
        strs(|r| r.reject_reason.as_ref().map(|x| x.to_string().into())),
        f64s(|r| r.arrival_s),
        f64s(|r| r.queue_s),
        f64s(|r| r.ttft_s),
        f64s(|r| r.tpot_s),
        f64s(|r| r.itl_mean_s),
        f64s(|r| r.itl_max_s),
        f64s(|r| r.e2e_s),
        u32s(|r| r.input_len),
        u32s(|r| r.output_len),
        u32s(|r| r.tokens_gpu),
        u32s(|r| r.tokens_cpu),
        u32s(|r| r.tokens_disk),
        u32s(|r| r.tokens_remote),
        u32s(|r| r.tokens_computed),
        u64s(|r| r.bytes_loaded),
        u64s(|r| r.bytes_stored),
        u32s(|r| r.preemptions),
        u32s(|r| r.preempted_queries),
        u32s(|r| r.preempted_gpu_hits),
        u32s(|r| r.preempted_external_hits),
        f64s(|r| r.measured_ttft_s),
        f64s(|r| r.measured_e2e_s),
    ];
    let mut cols = cols;
    if schema.fields().len() > COLUMNS.len() {
        let mut b = UInt32Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_option(r.replica));
        cols.push(Arc::new(b.finish()) as ArrayRef);
    }
    if schema.fields().len() > COLUMNS.len() + 1 {
        let mut b = UInt32Builder::with_capacity(recs.len());
        recs.iter().for_each(|r| b.append_option(r.prefill_replica));
        cols.push(Arc::new(b.finish()) as ArrayRef);
    }
    RecordBatch::try_new(schema, cols)
}

/// Reads a `requests.parquet` written by [`write_requests`] (by `kvreplay run` or `kvreplay
/// live`); a missing column or one of another type is an error naming it.
pub fn read_requests(path: &Path) -> Result<Vec<RequestRecord>> {
    use arrow_array::{Array, Float64Array, StringArray, UInt32Array, UInt64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = path.display().to_string();
    let bad = |msg: String| Error::from(InputError::new(&file, 0, "", msg));
    let f = std::fs::File::open(path).map_err(|e| Error::io(&file, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("cannot read: {e}")))?;
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                Error::from(InputError::new(
                    &file,
                    0,
                    name,
                    "column missing (not a kvreplay requests.parquet)",
                ))
            })
        };
        macro_rules! typed {
            ($name:expr, $t:ty) => {{
                let c = col($name)?;
                c.as_any().downcast_ref::<$t>().ok_or_else(|| {
                    Error::from(InputError::new(
                        &file,
                        0,
                        $name,
                        format!("unexpected type {}", c.data_type()),
                    ))
                })?
            }};
        }
        let id = typed!("id", UInt64Array);
        let round = typed!("round", UInt32Array);
        let session = typed!("session", UInt64Array);
        let status = typed!("status", StringArray);
        let reason = typed!("reject_reason", StringArray);
        let f = |name: &'static str| -> Result<&Float64Array> { Ok(typed!(name, Float64Array)) };
        let (arrival, queue, ttft, tpot) =
            (f("arrival_s")?, f("queue_s")?, f("ttft_s")?, f("tpot_s")?);
        let (itl_mean, itl_max, e2e) = (f("itl_mean_s")?, f("itl_max_s")?, f("e2e_s")?);
        let (m_ttft, m_e2e) = (f("measured_ttft_s")?, f("measured_e2e_s")?);
        // A fleet's file has a replica column; a single engine's has none.
        let replica = match batch.column_by_name("replica") {
            Some(_) => Some(typed!("replica", UInt32Array)),
            None => None,
        };
        let prefill_replica = match batch.column_by_name("prefill_replica") {
            Some(_) => Some(typed!("prefill_replica", UInt32Array)),
            None => None,
        };
        let u = |name: &'static str| -> Result<&UInt32Array> { Ok(typed!(name, UInt32Array)) };
        let (input_len, output_len) = (u("input_len")?, u("output_len")?);
        let (gpu, cpu, disk, remote, computed) = (
            u("tokens_gpu")?,
            u("tokens_cpu")?,
            u("tokens_disk")?,
            u("tokens_remote")?,
            u("tokens_computed")?,
        );
        let preemptions = u("preemptions")?;
        // Files written before re-admissions were counted apart have no such columns: 0.
        let opt_u = |name: &'static str| -> Result<Option<&UInt32Array>> {
            match batch.column_by_name(name) {
                Some(_) => Ok(Some(typed!(name, UInt32Array))),
                None => Ok(None),
            }
        };
        let (rq, rg, re) = (
            opt_u("preempted_queries")?,
            opt_u("preempted_gpu_hits")?,
            opt_u("preempted_external_hits")?,
        );
        let at = |c: Option<&UInt32Array>, i: usize| c.map_or(0, |c| c.value(i));
        let loaded = typed!("bytes_loaded", UInt64Array);
        let stored = typed!("bytes_stored", UInt64Array);
        let of = |a: &Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        for i in 0..batch.num_rows() {
            out.push(RequestRecord {
                id: id.value(i),
                round: round.value(i),
                session: (!session.is_null(i)).then(|| session.value(i)),
                status: if status.value(i) == "finished" {
                    Status::Finished
                } else {
                    Status::Rejected
                },
                reject_reason: (!reason.is_null(i)).then(|| reason.value(i).into()),
                arrival_s: of(arrival, i),
                queue_s: of(queue, i),
                ttft_s: of(ttft, i),
                tpot_s: of(tpot, i),
                itl_mean_s: of(itl_mean, i),
                itl_max_s: of(itl_max, i),
                e2e_s: of(e2e, i),
                input_len: input_len.value(i),
                output_len: output_len.value(i),
                tokens_gpu: gpu.value(i),
                tokens_cpu: cpu.value(i),
                tokens_disk: disk.value(i),
                tokens_remote: remote.value(i),
                tokens_computed: computed.value(i),
                bytes_loaded: loaded.value(i),
                bytes_stored: stored.value(i),
                preemptions: preemptions.value(i),
                preempted_queries: at(rq, i),
                preempted_gpu_hits: at(rg, i),
                preempted_external_hits: at(re, i),
                measured_ttft_s: of(m_ttft, i),
                measured_e2e_s: of(m_e2e, i),
                replica: replica.and_then(|c| (!c.is_null(i)).then(|| c.value(i))),
                prefill_replica: prefill_replica.and_then(|c| (!c.is_null(i)).then(|| c.value(i))),
            });
        }
    }
    Ok(out)
}

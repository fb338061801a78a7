//! `requests.parquet`: one row per request, one column per [`RequestRecord`] field, in field
//! order. Optional fields are nullable columns; times are Float64 seconds; `status` is
//! `"finished"` or `"rejected"`.

use crate::error::Result;
use crate::metrics::record::RequestRecord;
use crate::util::parquet::write_rows;
use arrow_array::builder::{Float64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// Columns: (name, type, nullable), in [`RequestRecord`] field order.
const COLUMNS: [(&str, DataType, bool); 24] = [
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
    ("measured_ttft_s", DataType::Float64, true),
    ("measured_e2e_s", DataType::Float64, true),
];

fn schema() -> Schema {
    Schema::new(
        COLUMNS
            .iter()
            .map(|(name, t, null)| Field::new(*name, t.clone(), *null))
            .collect::<Vec<_>>(),
    )
}

/// Writes `records` to `path` (Snappy-compressed, no timestamps: identical records give
/// identical bytes).
pub fn write_requests(records: &[RequestRecord], path: &Path) -> Result<()> {
    write_rows(path, Arc::new(schema()), records, to_batch)
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
    let strs = |f: fn(&RequestRecord) -> Option<&str>| {
        let mut b = StringBuilder::new();
        recs.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let cols: Vec<ArrayRef> = vec![
        u64s(|r| r.id),
        u32s(|r| r.round),
        opt_u64s(|r| r.session),
        strs(|r| Some(r.status.as_str())),
        strs(|r| r.reject_reason.as_deref()),
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
        f64s(|r| r.measured_ttft_s),
        f64s(|r| r.measured_e2e_s),
    ];
    RecordBatch::try_new(schema, cols)
}

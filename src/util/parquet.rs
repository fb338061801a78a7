//! Writing Parquet files the same way everywhere: Snappy-compressed, created by `kvreplay`, no
//! timestamps (identical rows give identical bytes), row groups of [`BATCH`] rows.

use crate::error::{Error, Result};
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Rows per record batch, written and read.
pub const BATCH: usize = 65_536;

/// Writes `rows` to `path` with `schema`, turning each slice of at most [`BATCH`] rows into a
/// record batch with `to_batch`. Errors name the file; a failed write leaves no partial file
/// (see [`crate::util::atomic::write_file`]).
pub fn write_rows<T>(
    path: &Path,
    schema: Arc<Schema>,
    rows: &[T],
    to_batch: impl Fn(&[T], Arc<Schema>) -> std::result::Result<RecordBatch, ArrowError>,
) -> Result<()> {
    let name = path.display().to_string();
    crate::util::atomic::write_file(path, |file| {
        write_rows_to(file, &name, schema, rows, to_batch)
    })
}

/// Like [`write_rows`], to any writer; `name` stands for it in errors.
pub fn write_rows_to<T, W: Write + Send>(
    w: W,
    name: &str,
    schema: Arc<Schema>,
    rows: &[T],
    to_batch: impl Fn(&[T], Arc<Schema>) -> std::result::Result<RecordBatch, ArrowError>,
) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("kvreplay".to_string())
        .build();
    let perr = |e: parquet::errors::ParquetError| Error::io(name, std::io::Error::other(e));
    let mut w = ArrowWriter::try_new(w, schema.clone(), Some(props)).map_err(perr)?;
    for chunk in rows.chunks(BATCH) {
        let batch = to_batch(chunk, schema.clone())
            .map_err(|e| Error::Invariant(format!("building a Parquet batch: {e}")))?;
        w.write(&batch).map_err(perr)?;
    }
    w.close().map_err(perr)?;
    Ok(())
}

/// `rows` as record batches of at most [`BATCH`] rows with `schema`, as [`write_rows`] would
/// write them: the same table handed to another Arrow consumer (the Python package) without a
/// file in between.
pub fn batches<T>(
    schema: Arc<Schema>,
    rows: &[T],
    to_batch: impl Fn(&[T], Arc<Schema>) -> std::result::Result<RecordBatch, ArrowError>,
) -> Result<Vec<RecordBatch>> {
    if rows.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema)]);
    }
    rows.chunks(BATCH)
        .map(|chunk| {
            to_batch(chunk, schema.clone())
                .map_err(|e| Error::Invariant(format!("building a record batch: {e}")))
        })
        .collect()
}

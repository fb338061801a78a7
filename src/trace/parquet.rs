//! The canonical trace as Parquet: one row per request, the header as JSON in the file's
//! key-value metadata (`kvreplay.trace`).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | id, arrival_ns, output_content | u64 | as in JSONL |
//! | input_len, output_len, round | u32 | |
//! | think_ns | u64 | |
//! | session | u64, nullable | |
//! | pool | u32, nullable | |
//! | prompt_content | list<u64> | run i's content id |
//! | prompt_offset, prompt_len | list<u32> | run i's offset and length |
//! | measured_ttft_ns, measured_e2e_ns, measured_itl_mean_ns | u64, nullable | |
//! | measured_itl_ns | list<u64> | |
//! | measured_error | utf8, nullable | |
//!
//! The three `prompt_*` lists are parallel (same length per row), so DuckDB or pandas can read a
//! trace without kvreplay.

use super::{Measured, Request, Run, Trace, TraceMeta};
use crate::error::{Error, InputError, Result};
use crate::util::contain::upstream;
use crate::util::parquet::{BATCH, write_rows_to};
use arrow_array::builder::{ListBuilder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const META_KEY: &str = "kvreplay.trace";

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

fn schema(meta_json: String) -> Schema {
    use DataType::*;
    let fields = vec![
        Field::new("id", UInt64, false),
        Field::new("arrival_ns", UInt64, false),
        Field::new("input_len", UInt32, false),
        Field::new("output_len", UInt32, false),
        Field::new("output_content", UInt64, false),
        Field::new("session", UInt64, true),
        Field::new("pool", UInt32, true),
        Field::new("round", UInt32, false),
        Field::new("think_ns", UInt64, false),
        Field::new("prompt_content", list_of(UInt64), false),
        Field::new("prompt_offset", list_of(UInt32), false),
        Field::new("prompt_len", list_of(UInt32), false),
        Field::new("measured_ttft_ns", UInt64, true),
        Field::new("measured_e2e_ns", UInt64, true),
        Field::new("measured_itl_mean_ns", UInt64, true),
        Field::new("measured_itl_ns", list_of(UInt64), false),
        Field::new("measured_error", Utf8, true),
    ];
    Schema::new_with_metadata(fields, HashMap::from([(META_KEY.to_string(), meta_json)]))
}

/// Writes `trace` to `path` as Parquet (Snappy-compressed); a failed write leaves no partial
/// file (see [`crate::util::atomic::write_file`]).
pub fn write(trace: &Trace, path: &Path) -> Result<()> {
    let name = path.display().to_string();
    crate::util::atomic::write_file(path, |file| write_to(trace, file, &name))
}

/// Writes `trace` as Parquet to any writer; `name` stands for it in errors.
pub fn write_to(trace: &Trace, w: impl std::io::Write + Send, name: &str) -> Result<()> {
    let meta_json =
        serde_json::to_string(&trace.meta).map_err(|e| Error::Invariant(e.to_string()))?;
    write_rows_to(
        w,
        name,
        Arc::new(schema(meta_json)),
        &trace.requests,
        to_batch,
    )
}

/// `trace` as the record batches of its Parquet form (header JSON in the schema's metadata):
/// the table the Python package hands to pyarrow and pandas.
pub fn to_arrow(trace: &Trace) -> Result<Vec<RecordBatch>> {
    let meta_json =
        serde_json::to_string(&trace.meta).map_err(|e| Error::Invariant(e.to_string()))?;
    crate::util::parquet::batches(Arc::new(schema(meta_json)), &trace.requests, to_batch)
}

/// A trace from record batches in the Parquet form's columns (a table built by pyarrow or
/// pandas); `meta` is the header when `schema` carries none (`kvreplay.trace` metadata wins
/// over it). Checked as a file is: errors name `name`, the row and the column.
pub fn from_arrow(
    schema: &Schema,
    batches: impl IntoIterator<Item = RecordBatch>,
    meta: Option<TraceMeta>,
    name: &str,
) -> Result<Trace> {
    let meta = match schema.metadata().get(META_KEY) {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| InputError::new(name, 0, META_KEY, e.to_string()))?,
        None => meta.ok_or_else(|| {
            InputError::new(
                name,
                0,
                META_KEY,
                "no trace header in the table's metadata, and none given",
            )
        })?,
    };
    let mut requests = Vec::new();
    for batch in batches {
        let row0 = requests.len() as u64;
        read_batch(&batch, name, row0, &mut requests)?;
    }
    let trace = Trace { meta, requests };
    trace.validate(name)?;
    Ok(trace)
}

fn to_batch(
    reqs: &[Request],
    schema: Arc<Schema>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = reqs.len();
    let mut id = UInt64Builder::with_capacity(n);
    let mut arrival = UInt64Builder::with_capacity(n);
    let mut input_len = UInt32Builder::with_capacity(n);
    let mut output_len = UInt32Builder::with_capacity(n);
    let mut output_content = UInt64Builder::with_capacity(n);
    let mut session = UInt64Builder::with_capacity(n);
    let mut pool = UInt32Builder::with_capacity(n);
    let mut round = UInt32Builder::with_capacity(n);
    let mut think = UInt64Builder::with_capacity(n);
    let mut pc = ListBuilder::new(UInt64Builder::new());
    let mut po = ListBuilder::new(UInt32Builder::new());
    let mut pl = ListBuilder::new(UInt32Builder::new());
    let mut ttft = UInt64Builder::with_capacity(n);
    let mut e2e = UInt64Builder::with_capacity(n);
    let mut itl_mean = UInt64Builder::with_capacity(n);
    let mut itl = ListBuilder::new(UInt64Builder::new());
    let mut error = StringBuilder::new();
    for r in reqs {
        id.append_value(r.id);
        arrival.append_value(r.arrival_ns);
        input_len.append_value(r.input_len);
        output_len.append_value(r.output_len);
        output_content.append_value(r.output_content);
        session.append_option(r.session);
        pool.append_option(r.pool);
        round.append_value(r.round);
        think.append_value(r.think_ns);
        for run in &r.prompt {
            pc.values().append_value(run.content);
            po.values().append_value(run.offset);
            pl.values().append_value(run.len);
        }
        pc.append(true);
        po.append(true);
        pl.append(true);
        ttft.append_option(r.measured.ttft_ns);
        e2e.append_option(r.measured.e2e_ns);
        itl_mean.append_option(r.measured.itl_mean_ns);
        itl.values().append_slice(&r.measured.itl_ns);
        itl.append(true);
        error.append_option(r.measured.error.as_deref());
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(arrival.finish()),
        Arc::new(input_len.finish()),
        Arc::new(output_len.finish()),
        Arc::new(output_content.finish()),
        Arc::new(session.finish()),
        Arc::new(pool.finish()),
        Arc::new(round.finish()),
        Arc::new(think.finish()),
        Arc::new(pc.finish()),
        Arc::new(po.finish()),
        Arc::new(pl.finish()),
        Arc::new(ttft.finish()),
        Arc::new(e2e.finish()),
        Arc::new(itl_mean.finish()),
        Arc::new(itl.finish()),
        Arc::new(error.finish()),
    ];
    RecordBatch::try_new(schema, cols)
}

/// Typed column access with errors naming the file and column.
struct Cols<'a> {
    batch: &'a RecordBatch,
    file: &'a str,
}

impl<'a> Cols<'a> {
    fn col<T: 'static>(&self, name: &str, want: &str) -> std::result::Result<&'a T, InputError> {
        let c = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| InputError::new(self.file, 0, name, "column missing"))?;
        c.as_any().downcast_ref::<T>().ok_or_else(|| {
            InputError::new(
                self.file,
                0,
                name,
                format!("expected {want}, found {}", c.data_type()),
            )
        })
    }
    fn u64(&self, name: &str) -> std::result::Result<&'a UInt64Array, InputError> {
        self.col(name, "UInt64")
    }
    fn u32(&self, name: &str) -> std::result::Result<&'a UInt32Array, InputError> {
        self.col(name, "UInt32")
    }
    fn list(&self, name: &str) -> std::result::Result<&'a ListArray, InputError> {
        self.col(name, "List")
    }
}

fn list_values<'a, T: 'static>(
    l: &'a ListArray,
    name: &str,
    want: &str,
    file: &str,
) -> std::result::Result<&'a T, InputError> {
    l.values().as_any().downcast_ref::<T>().ok_or_else(|| {
        InputError::new(
            file,
            0,
            name,
            format!("expected a list of {want}, found {}", l.data_type()),
        )
    })
}

fn opt<T: arrow_array::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    if a.is_null(i) { None } else { Some(a.value(i)) }
}

/// Reads a canonical Parquet trace and validates it. Row numbers in errors count from 1.
pub fn read(path: &Path) -> Result<Trace> {
    let name = path.display().to_string();
    // In memory: the parquet crate reads page headers in small pieces, a system call each on
    // a file.
    let data = std::fs::read(path).map_err(|e| Error::io(&name, e))?;
    read_bytes(data, &name)
}

/// Reads a canonical Parquet trace held in memory; `name` is used in errors.
pub fn read_bytes(data: Vec<u8>, name: &str) -> Result<Trace> {
    read_from(bytes::Bytes::from(data), name)
}

/// Reads a canonical Parquet trace held in memory.
fn read_from(input: bytes::Bytes, name: &str) -> Result<Trace> {
    let bad = |msg: String| -> Error { InputError::new(name, 0, "", msg).into() };
    // The parquet crate panics on some corrupt pages: its calls are contained, the panic an
    // error like any other decoding failure.
    let corrupt = |m: String| bad(format!("corrupt Parquet file ({m})"));
    let file_len = input.len() as u64;
    let data = input.clone();
    super::parquet_pages::check_footer(&data)
        .map_err(|m| bad(format!("corrupt Parquet file: {m}")))?;
    let builder = upstream(|| ParquetRecordBatchReaderBuilder::try_new(input))
        .map_err(corrupt)?
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    // Every column chunk must lie inside the file, and its pages declare sizes it can hold
    // (see `parquet_pages`).
    for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
        for c in rg.columns() {
            // (`byte_range()` panics on negative offsets: they are checked here first.)
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(a, b)| a.checked_add(b));
            if end.is_none_or(|end| end > file_len) {
                return Err(bad(format!(
                    "corrupt Parquet file: column {} of row group {g} claims bytes {start}..+{len}, outside the file ({file_len} bytes)",
                    c.column_path()
                )));
            }
            super::parquet_pages::check_chunk(&data, start as u64, len as u64).map_err(|m| {
                bad(format!(
                    "corrupt Parquet file: column {} of row group {g}: {m}",
                    c.column_path()
                ))
            })?;
        }
    }
    let meta_json = builder
        .schema()
        .metadata()
        .get(META_KEY)
        .cloned()
        .ok_or_else(|| {
            bad(format!(
                "no `{META_KEY}` metadata: not a kvreplay trace (import it with `kvreplay trace import`)"
            ))
        })?;
    let meta: TraceMeta = serde_json::from_str(&meta_json)
        .map_err(|e| InputError::new(name, 0, META_KEY, e.to_string()))?;
    let mut reader = upstream(|| builder.with_batch_size(BATCH).build())
        .map_err(corrupt)?
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut requests = Vec::new();
    while let Some(batch) = upstream(|| reader.next()).map_err(corrupt)? {
        let batch = batch.map_err(|e| bad(format!("cannot read: {e}")))?;
        let row0 = requests.len() as u64;
        read_batch(&batch, name, row0, &mut requests)?;
    }
    let trace = Trace { meta, requests };
    trace.validate(name)?;
    Ok(trace)
}

fn read_batch(batch: &RecordBatch, file: &str, row0: u64, out: &mut Vec<Request>) -> Result<()> {
    let c = Cols { batch, file };
    let id = c.u64("id")?;
    let arrival = c.u64("arrival_ns")?;
    let input_len = c.u32("input_len")?;
    let output_len = c.u32("output_len")?;
    let output_content = c.u64("output_content")?;
    let session = c.u64("session")?;
    let pool = c.u32("pool")?;
    let round = c.u32("round")?;
    let think = c.u64("think_ns")?;
    let pc = c.list("prompt_content")?;
    let po = c.list("prompt_offset")?;
    let pl = c.list("prompt_len")?;
    let pcv = list_values::<UInt64Array>(pc, "prompt_content", "UInt64", file)?;
    let pov = list_values::<UInt32Array>(po, "prompt_offset", "UInt32", file)?;
    let plv = list_values::<UInt32Array>(pl, "prompt_len", "UInt32", file)?;
    let ttft = c.u64("measured_ttft_ns")?;
    let e2e = c.u64("measured_e2e_ns")?;
    let itl_mean = c.u64("measured_itl_mean_ns")?;
    let itl = c.list("measured_itl_ns")?;
    let itlv = list_values::<UInt64Array>(itl, "measured_itl_ns", "UInt64", file)?;
    let error: &StringArray = c.col("measured_error", "Utf8")?;
    for i in 0..batch.num_rows() {
        let row = row0 + i as u64 + 1;
        for (name, a) in [
            ("id", id as &dyn Array),
            ("arrival_ns", arrival),
            ("input_len", input_len),
            ("output_len", output_len),
            ("output_content", output_content),
            ("round", round),
            ("think_ns", think),
            ("prompt_content", pc),
            ("prompt_offset", po),
            ("prompt_len", pl),
            ("measured_itl_ns", itl),
        ] {
            if a.is_null(i) {
                return Err(InputError::new(file, row, name, "null in a required column").into());
            }
        }
        let (s, e) = (
            pc.value_offsets()[i] as usize,
            pc.value_offsets()[i + 1] as usize,
        );
        let (so, eo) = (
            po.value_offsets()[i] as usize,
            po.value_offsets()[i + 1] as usize,
        );
        let (sl, el) = (
            pl.value_offsets()[i] as usize,
            pl.value_offsets()[i + 1] as usize,
        );
        if e - s != eo - so || e - s != el - sl {
            return Err(InputError::new(
                file,
                row,
                "prompt_content",
                "prompt_content, prompt_offset and prompt_len differ in length",
            )
            .into());
        }
        // A null element's slot holds an arbitrary value: refuse it rather than read that.
        for (name, values, at) in [
            ("prompt_content", pcv as &dyn Array, s),
            ("prompt_offset", pov, so),
            ("prompt_len", plv, sl),
        ] {
            if let Some(k) = (0..e - s).find(|k| values.is_null(at + k)) {
                return Err(InputError::new(file, row, name, format!("run {k} is null")).into());
            }
        }
        let prompt = (0..e - s)
            .map(|k| Run::new(pcv.value(s + k), pov.value(so + k), plv.value(sl + k)))
            .collect();
        let (si, ei) = (
            itl.value_offsets()[i] as usize,
            itl.value_offsets()[i + 1] as usize,
        );
        if let Some(k) = (si..ei).find(|&j| itlv.is_null(j)) {
            return Err(InputError::new(
                file,
                row,
                "measured_itl_ns",
                format!("element {} is null", k - si),
            )
            .into());
        }
        out.push(Request {
            id: id.value(i),
            arrival_ns: arrival.value(i),
            input_len: input_len.value(i),
            output_len: output_len.value(i),
            prompt,
            output_content: output_content.value(i),
            session: opt(session, i),
            pool: opt(pool, i),
            round: round.value(i),
            think_ns: think.value(i),
            measured: Measured {
                ttft_ns: opt(ttft, i),
                e2e_ns: opt(e2e, i),
                itl_ns: itlv.values()[si..ei].to_vec(),
                itl_mean_ns: opt(itl_mean, i),
                error: if error.is_null(i) {
                    None
                } else {
                    Some(error.value(i).to_string())
                },
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Pool, Run};

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kvr-pq-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn three() -> Trace {
        let reqs = (0..3u64)
            .map(|i| crate::testkit::numbered(i, vec![Run::new(i, 0, 5), Run::new(9, 0, 2)]))
            .collect();
        crate::testkit::trace(reqs)
    }

    #[test]
    fn arrow_batches_round_trip_and_need_a_header() {
        let t = three();
        let batches = to_arrow(&t).unwrap();
        let schema = batches[0].schema();
        let back = from_arrow(&schema, batches.clone(), None, "tbl").unwrap();
        assert_eq!(back, t);
        // Without the header in the schema, the one given is used; with neither, an error.
        let bare = Schema::new(schema.fields().clone());
        let stripped = batches;
        let mut meta = t.meta.clone();
        meta.source = "given".into();
        let given = from_arrow(&bare, stripped.clone(), Some(meta), "tbl").unwrap();
        assert_eq!(given.meta.source, "given");
        assert_eq!(given.requests, t.requests);
        let e = from_arrow(&bare, stripped, None, "tbl")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tbl: kvreplay.trace: no trace header in the table's metadata, and none given"
        );
        // An empty trace is one empty batch with the schema.
        let empty = Trace {
            meta: t.meta.clone(),
            requests: Vec::new(),
        };
        let b = to_arrow(&empty).unwrap();
        assert_eq!((b.len(), b[0].num_rows()), (1, 0));
    }

    #[test]
    fn zero_output_len_is_rejected_naming_the_row() {
        let dir = temp_dir("zero");
        let mut t = three();
        t.requests[1].output_len = 0;
        let p = dir.join("z.parquet");
        write(&t, &p).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: output_len: must be at least 1 (vLLM generates at least one token)",
                p.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes `t` with column `col` replaced by a list column whose element `k` of row `row` is
    /// null (the other elements as written).
    fn with_null_element(t: &Trace, p: &Path, col: &str, row: usize, k: usize) {
        let meta_json = serde_json::to_string(&t.meta).unwrap();
        let schema = Arc::new(schema(meta_json));
        let batch = to_batch(&t.requests, schema.clone()).unwrap();
        let idx = schema.index_of(col).unwrap();
        let old = batch
            .column(idx)
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap();
        let new: ArrayRef = match old.value_type() {
            DataType::UInt64 => {
                let mut b = ListBuilder::new(UInt64Builder::new());
                for i in 0..old.len() {
                    let v = old.value(i);
                    let v = v.as_any().downcast_ref::<UInt64Array>().unwrap();
                    for j in 0..v.len() {
                        b.values()
                            .append_option((i != row || j != k).then(|| v.value(j)));
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = ListBuilder::new(UInt32Builder::new());
                for i in 0..old.len() {
                    let v = old.value(i);
                    let v = v.as_any().downcast_ref::<UInt32Array>().unwrap();
                    for j in 0..v.len() {
                        b.values()
                            .append_option((i != row || j != k).then(|| v.value(j)));
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
        };
        let mut cols = batch.columns().to_vec();
        cols[idx] = new;
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let f = std::fs::File::create(p).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn null_list_elements_are_errors_not_zeros() {
        let dir = temp_dir("nulls");
        let mut t = three();
        t.requests[2].measured.itl_ns = vec![5, 6, 7];
        // A null read as its slot's value would be content 0, offset 0, a gap of 0 ns.
        for (col, row, k, what) in [
            ("prompt_content", 1, 0, "run 0"),
            ("prompt_offset", 2, 1, "run 1"),
            ("prompt_len", 0, 1, "run 1"),
            ("measured_itl_ns", 2, 2, "element 2"),
        ] {
            let p = dir.join(format!("{col}.parquet"));
            with_null_element(&t, &p, col, row, k);
            let e = read(&p).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("{}:{}: {col}: {what} is null", p.display(), row + 1)
            );
        }
        // The same file without nulls reads back.
        let p = dir.join("ok.parquet");
        write(&t, &p).unwrap();
        assert_eq!(read(&p).unwrap(), t);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trips_losslessly_and_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("kvr-pq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut meta = TraceMeta::new("test");
        meta.pools.push(Pool {
            id: 3,
            clients: 4,
            sessions_per_client: 2,
            early_stop: false,
        });
        let mut reqs: Vec<Request> = (0..70_000u64)
            .map(|i| {
                let mut r = crate::testkit::numbered(
                    i,
                    vec![
                        Run::new(i % 5, 0, 7),
                        Run::new(100 + i, 3, (i % 9) as u32 + 1),
                    ],
                );
                if i % 3 == 0 {
                    r.session = Some(i / 3);
                    r.pool = Some(3);
                    r.round = (i % 2) as u32;
                    r.think_ns = i;
                }
                if i % 7 == 0 {
                    r.measured.ttft_ns = Some(i * 2);
                    r.measured.itl_ns = vec![1, 2, i];
                    r.measured.error = Some(format!("e{i}"));
                }
                r
            })
            .collect();
        reqs[5].measured.itl_mean_ns = Some(17);
        let t = Trace {
            meta,
            requests: reqs,
        };
        let p = dir.join("t.parquet");
        write(&t, &p).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back, t);
        // Not Parquet.
        let junk = dir.join("junk.parquet");
        std::fs::write(&junk, b"hello").unwrap();
        let e = read(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.parquet: not a readable Parquet file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

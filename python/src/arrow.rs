//! Tables across the language boundary through Arrow's C stream interface (the PyCapsule
//! protocol, `__arrow_c_stream__`): pyarrow, polars or DuckDB take the batches Rust built without
//! a copy through Python objects, and hand theirs to Rust the same way.

use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow_schema::SchemaRef;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use std::ffi::{CStr, CString};

const STREAM: &CStr = c"arrow_array_stream";

/// Record batches built in Rust, exported once as an Arrow C stream (`pyarrow.table(t)`).
#[pyclass(module = "kvreplay._native")]
pub struct ArrowTable {
    schema: SchemaRef,
    batches: Option<Vec<RecordBatch>>,
}

impl ArrowTable {
    /// A table of `batches` (at least one, for the schema).
    pub fn new(batches: Vec<RecordBatch>) -> PyResult<Self> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| PyTypeError::new_err("a table needs at least one batch"))?;
        Ok(ArrowTable {
            schema,
            batches: Some(batches),
        })
    }
}

#[pymethods]
impl ArrowTable {
    /// The PyCapsule stream protocol: hands the batches over (once) as an `ArrowArrayStream`.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &mut self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // A consumer may ask for another schema; we offer ours, which the protocol allows.
        let _ = requested_schema;
        let batches = self
            .batches
            .take()
            .ok_or_else(|| PyTypeError::new_err("this table was already consumed"))?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new(py, stream, Some(CString::from(STREAM)))
    }
}

/// Reads every batch of an object with `__arrow_c_stream__` (or such a capsule itself).
pub fn read_stream(obj: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    let capsule = if obj.hasattr("__arrow_c_stream__")? {
        obj.call_method0("__arrow_c_stream__")?
    } else {
        obj.clone()
    };
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        PyTypeError::new_err("expected an Arrow table or an arrow_array_stream capsule")
    })?;
    let ptr = capsule.pointer_checked(Some(STREAM))?;
    // SAFETY: the capsule is named `arrow_array_stream`, so by the protocol it holds an
    // `ArrowArrayStream`; `from_raw` moves it out and marks the original released, as the
    // protocol asks of a consumer.
    let reader = unsafe { RecordBatchStreamReader::from_raw(ptr.as_ptr().cast()) }
        .map_err(|e| crate::err(format!("reading an Arrow stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::err(format!("reading an Arrow stream: {e}")))?;
    Ok((schema, batches))
}

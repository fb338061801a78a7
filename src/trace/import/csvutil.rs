//! CSV reading shared by the CSV importers: columns found by header name, 1-based line numbers,
//! and per-row errors that name the column.

use crate::error::{Error, InputError, Result};
use std::io::BufRead;

/// A CSV file being read row by row.
pub struct CsvTable<'a> {
    name: String,
    reader: csv::Reader<&'a mut dyn BufRead>,
    headers: csv::StringRecord,
}

impl<'a> CsvTable<'a> {
    /// Reads the header line of CSV text from `input`; `name` stands for the file in errors.
    pub fn new(input: &'a mut dyn BufRead, name: &str) -> Result<Self> {
        let name = name.to_string();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| InputError::new(&name, 1, "", format!("cannot read the header: {e}")))?
            .clone();
        if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
            return Err(InputError::new(&name, 0, "", "empty file: no header line").into());
        }
        Ok(CsvTable {
            name,
            reader,
            headers,
        })
    }

    /// The file name, for errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the first header matching one of `names` (ASCII case-insensitive).
    pub fn column(&self, names: &[&str]) -> Result<usize> {
        self.find(names).ok_or_else(|| {
            Error::from(InputError::new(
                &self.name,
                1,
                names[0],
                format!(
                    "column missing (header has: {})",
                    self.headers.iter().collect::<Vec<_>>().join(", ")
                ),
            ))
        })
    }

    /// Like [`CsvTable::column`] but for optional columns.
    pub fn find(&self, names: &[&str]) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    }

    /// The next data row with its 1-based line number; a row with the wrong number of fields is
    /// an `Err` for that line (to be counted), an unreadable file an `Err` of the whole call.
    #[allow(clippy::type_complexity)]
    pub fn next_record(
        &mut self,
    ) -> Result<Option<(u64, std::result::Result<csv::StringRecord, InputError>)>> {
        let mut rec = csv::StringRecord::new();
        match self.reader.read_record(&mut rec) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                if rec.len() != self.headers.len() {
                    let e = InputError::new(
                        &self.name,
                        line,
                        "",
                        format!(
                            "{} fields, the header has {}",
                            rec.len(),
                            self.headers.len()
                        ),
                    );
                    return Ok(Some((line, Err(e))));
                }
                Ok(Some((line, Ok(rec))))
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                match e.kind() {
                    csv::ErrorKind::Io(_) => {
                        Err(Error::io(&self.name, std::io::Error::other(e.to_string())))
                    }
                    _ => Ok(Some((
                        line,
                        Err(InputError::new(
                            &self.name,
                            line,
                            "",
                            format!("malformed CSV: {e}"),
                        )),
                    ))),
                }
            }
        }
    }
}

/// Parses column `col` of `rec` as a non-negative integer (an integral float like `12.0` too).
pub fn parse_u32_field(
    rec: &csv::StringRecord,
    col: usize,
    field: &str,
    file: &str,
    line: u64,
) -> std::result::Result<u32, InputError> {
    let s = rec.get(col).unwrap_or("");
    let bad = || {
        InputError::new(
            file,
            line,
            field,
            format!("expected a non-negative integer, found {s:?}"),
        )
    };
    if let Ok(v) = s.parse::<u32>() {
        return Ok(v);
    }
    match s.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => Ok(f as u32),
        _ => Err(bad()),
    }
}

/// Parses column `col` of `rec` as a finite number.
pub fn parse_f64_field(
    rec: &csv::StringRecord,
    col: usize,
    field: &str,
    file: &str,
    line: u64,
) -> std::result::Result<f64, InputError> {
    let s = rec.get(col).unwrap_or("");
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        _ => Err(InputError::new(
            file,
            line,
            field,
            format!("expected a number, found {s:?}"),
        )),
    }
}

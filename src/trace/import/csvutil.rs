//! CSV reading shared by the CSV importers: columns found by header name, 1-based line numbers,
//! and per-row errors that name the column.
//!
//! Line numbers are counted here, from the bytes read, rather than taken from the CSV parser:
//! the parser's position of a row is where the previous row ended, which is one line early after
//! a CRLF ending (its `\n` is read with the next row) and early by the blank lines it skips. A
//! row's line is the line of its first byte, for LF, CRLF and mixed endings alike.

use crate::error::{Error, InputError, Result};
use std::io::{BufRead, Read};

/// A CSV file being read row by row.
pub struct CsvTable<'a> {
    name: String,
    reader: csv::Reader<LineIndex<&'a mut dyn BufRead>>,
    headers: csv::StringRecord,
    header_line: u64,
}

impl<'a> CsvTable<'a> {
    /// Reads the header line of CSV text from `input`; `name` stands for the file in errors.
    pub fn new(input: &'a mut dyn BufRead, name: &str) -> Result<Self> {
        let name = name.to_string();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(LineIndex::new(input));
        let headers = reader
            .headers()
            .map_err(|e| InputError::new(&name, 1, "", format!("cannot read the header: {e}")))?
            .clone();
        if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
            return Err(InputError::new(&name, 0, "", "empty file: no header line").into());
        }
        let start = headers.position().map(|p| p.byte()).unwrap_or(0);
        let header_line = reader.get_mut().line_of_row_at(start);
        Ok(CsvTable {
            name,
            reader,
            headers,
            header_line,
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
                self.header_line,
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
                let start = rec.position().map(|p| p.byte()).unwrap_or(0);
                let line = self.reader.get_mut().line_of_row_at(start);
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
                let start = e.position().map(|p| p.byte());
                let line = start.map_or(0, |b| self.reader.get_mut().line_of_row_at(b));
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

/// Reads through to `inner`, keeping the bytes read from the start of the row being parsed on,
/// so that a row's line can be counted from its byte offset.
struct LineIndex<R> {
    inner: R,
    /// Bytes read from `inner`; `buf[start..]` begins at input offset `base`.
    buf: Vec<u8>,
    start: usize,
    base: u64,
    /// `\n` bytes before offset `base`.
    newlines: u64,
}

/// Bytes already counted that are kept before they are dropped from the front of the buffer
/// (dropping them row by row would copy the read-ahead once per row).
const COMPACT_AT: usize = 1 << 16;

impl<R> LineIndex<R> {
    fn new(inner: R) -> Self {
        LineIndex {
            inner,
            buf: Vec::new(),
            start: 0,
            base: 0,
            newlines: 0,
        }
    }

    /// The 1-based line of a row the parser started reading at input offset `at`: the line of
    /// its first byte that is not a line ending (the parser starts a row at the end of the
    /// previous one, before that one's `\n` when it ended in CRLF and before any blank lines).
    /// Offsets must not decrease from call to call; what lies before `at` is forgotten.
    fn line_of_row_at(&mut self, at: u64) -> u64 {
        let avail = self.buf.len() - self.start;
        let k = usize::try_from(at.saturating_sub(self.base)).map_or(avail, |k| k.min(avail));
        let counted = &self.buf[self.start..self.start + k];
        self.newlines += counted.iter().filter(|b| **b == b'\n').count() as u64;
        self.start += k;
        self.base += k as u64;
        if self.start >= COMPACT_AT && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let lead = self.buf[self.start..]
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.newlines + lead + 1
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.buf.extend_from_slice(&out[..n]);
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The line number of every data row of `text`, as [`CsvTable::next_record`] reports it.
    fn lines_of(text: &str) -> Vec<u64> {
        let mut input = text.as_bytes();
        let mut table = CsvTable::new(&mut input, "t.csv").unwrap();
        let mut lines = Vec::new();
        while let Some((line, rec)) = table.next_record().unwrap() {
            if let Err(e) = rec {
                assert_eq!(e.line, line, "{e}");
            }
            lines.push(line);
        }
        lines
    }

    #[test]
    fn crlf_line_numbers_are_exact() {
        let lf = "a,b\n1,2\n3,4\n5,6\n";
        assert_eq!(lines_of(lf), vec![2, 3, 4]);
        assert_eq!(lines_of(&lf.replace('\n', "\r\n")), vec![2, 3, 4]);
        // Mixed endings, and a last line without one.
        assert_eq!(lines_of("a,b\r\n1,2\n3,4\r\n5,6"), vec![2, 3, 4]);
        assert_eq!(lines_of("a,b\n1,2\r\n3,4\n5,6\r\n"), vec![2, 3, 4]);
    }

    #[test]
    fn blank_lines_keep_line_numbers_exact() {
        // The parser skips blank lines; the rows after them keep their own line numbers.
        for nl in ["\n", "\r\n"] {
            let text = format!("a,b{nl}1,2{nl}{nl}{nl}3,4{nl}{nl}5{nl}");
            assert_eq!(lines_of(&text), vec![2, 5, 7], "{text:?}");
        }
        // Blank lines before the header.
        assert_eq!(lines_of("\r\n\na,b\r\n1,2\n"), vec![4]);
    }

    #[test]
    fn a_quoted_newline_keeps_the_row_on_its_first_line() {
        let text = "a,b\r\n\"x\r\ny\",2\r\n3,4\r\n\"p\nq\",5\n6,7\n";
        assert_eq!(lines_of(text), vec![2, 4, 5, 7]);
    }

    #[test]
    fn bad_rows_name_their_exact_line_with_crlf() {
        let text: &[u8] = b"a,b\r\n1,2\r\n\r\n3\r\n4,\xff\r\n";
        let mut input = text;
        let mut table = CsvTable::new(&mut input, "t.csv").unwrap();
        let mut errors = Vec::new();
        while let Some((_, rec)) = table.next_record().unwrap() {
            if let Err(e) = rec {
                errors.push(e.to_string());
            }
        }
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0], "t.csv:4: 1 fields, the header has 2");
        assert!(
            errors[1].starts_with("t.csv:5: malformed CSV"),
            "{}",
            errors[1]
        );
    }
}

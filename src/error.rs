//! Typed errors for everything a user can hand kvreplay.
//!
//! Bad input must produce exactly one clear message naming the file, the line (or row) and the
//! field, so that a user can open the file and fix it. Library code returns these; `main.rs`
//! prints them and sets the exit code.

use std::fmt;

/// Where in a user's input something went wrong: `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line (text formats) or row (Parquet, CSV data rows count from the header line);
    /// 0 when the error concerns the whole file.
    pub line: u64,
    /// The field, column or key at fault; empty when the line as a whole is malformed.
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl InputError {
    /// An error about one field of one line.
    pub fn new(
        file: impl Into<String>,
        line: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        InputError {
            file: file.into(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A short reason used to count skipped lines by kind: the field without a trailing index
    /// (`ttfts[17]` counts as `ttfts`, see [`InputError::index`]), or "malformed line" when the
    /// line as a whole is at fault.
    pub fn reason(&self) -> String {
        if self.field.is_empty() {
            "malformed line".to_string()
        } else {
            let cut = self.split_index().map_or(self.field.len(), |(k, _)| k);
            self.field[..cut].to_string()
        }
    }

    /// The index of a field named as an array element (`ttfts[17]` -> 17).
    pub fn index(&self) -> Option<u64> {
        self.split_index().map(|(_, i)| i)
    }

    /// Where a trailing `[digits]` starts in the field, and its value.
    fn split_index(&self) -> Option<(usize, u64)> {
        let inner = self.field.strip_suffix(']')?;
        let open = inner.rfind('[')?;
        let digits = &inner[open + 1..];
        if open == 0 || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((open, digits.parse().ok()?))
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.field.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.file, self.message),
            (0, false) => write!(f, "{}: {}: {}", self.file, self.field, self.message),
            (l, true) => write!(f, "{}:{}: {}", self.file, l, self.message),
            (l, false) => write!(f, "{}:{}: {}: {}", self.file, l, self.field, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A malformed input file (trace, config, model card, study).
    // Transparent: the message prints once under `{:#}` (a `#[from]` field is also a source).
    #[error(transparent)]
    Input(#[from] InputError),
    /// A file could not be opened, read or written.
    // The OS error is part of the message, not a separate cause, so that it prints once.
    #[error("{path}: {err}")]
    Io {
        /// The path involved.
        path: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// A configuration or flag value that cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A broken invariant inside kvreplay: a bug, never the user's fault.
    #[error("internal invariant broken: {0}")]
    Invariant(String),
    /// The simulation ran out of events while requests were still unfinished: nothing could
    /// ever wake them (a bug in an engine or connector, never the user's fault).
    #[error(
        "simulation deadlock at {at}: no event left while {unfinished} requests are unfinished: {state}"
    )]
    Deadlock {
        /// Requests neither finished nor rejected.
        unfinished: usize,
        /// The simulated time of the last event.
        at: crate::time::SimTime,
        /// The engine's state then, in words.
        state: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<String>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }
}

/// Result with the library's error.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_field() {
        let e = InputError::new(
            "trace.jsonl",
            2,
            "timestamp",
            "expected a number, got \"x\"",
        );
        assert_eq!(
            e.to_string(),
            "trace.jsonl:2: timestamp: expected a number, got \"x\""
        );
        let whole = InputError::new("t.csv", 0, "", "empty file");
        assert_eq!(whole.to_string(), "t.csv: empty file");
        let line = InputError::new("t.csv", 7, "", "not valid JSON");
        assert_eq!(line.to_string(), "t.csv:7: not valid JSON");
    }

    #[test]
    fn reason_drops_an_array_index() {
        let at = |field: &str| {
            let e = InputError::new("r.json", 18, field, "bad");
            (e.reason(), e.index())
        };
        assert_eq!(at("ttfts[17]"), ("ttfts".to_string(), Some(17)));
        assert_eq!(at("ttfts"), ("ttfts".to_string(), None));
        assert_eq!(at("a[x]"), ("a[x]".to_string(), None));
        assert_eq!(at("[3]"), ("[3]".to_string(), None));
        assert_eq!(at("a[]"), ("a[]".to_string(), None));
        assert_eq!(at(""), ("malformed line".to_string(), None));
    }

    /// `main` prints errors with their causes (`{:#}`): an input error must still print once.
    #[test]
    fn an_input_error_prints_once_with_its_causes() {
        let e = anyhow::Error::from(Error::from(InputError::new("t.jsonl", 1, "f", "bad")));
        assert_eq!(format!("{e:#}"), "t.jsonl:1: f: bad");
    }
}

//! Typed access to the fields of a JSON object, with errors that name file, line and field.
//!
//! serde's derived errors say "invalid type ... at line 1 column 57" without the key; users need
//! the key. Every JSON reader in kvreplay (canonical JSONL, Mooncake, Bailian, vllm-bench,
//! llmperf, studies) goes through [`Obj`].

use crate::error::InputError;
use serde_json::{Map, Value};

/// A JSON object being read, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Obj<'a> {
    /// The object's fields.
    pub map: &'a Map<String, Value>,
    /// File name for errors.
    pub file: &'a str,
    /// 1-based line (or record) for errors.
    pub line: u64,
    /// Prefix for field names in errors (`"setup.workload."`), empty at top level.
    pub path: &'a str,
}

/// The lines of a JSON Lines input that are not blank, each with its 1-based number (blank lines
/// are counted, so numbers match the file; a line ends at `\n`, and a `\r` before it is dropped).
/// A line that is not valid UTF-8 is an `Err` for that line alone, naming the first bad byte, so
/// that an importer can skip and count it; a read error names `name:line` and ends the lines.
pub fn nonblank_lines<'a>(
    mut input: impl std::io::BufRead + 'a,
    name: &'a str,
) -> impl Iterator<Item = crate::error::Result<(u64, Result<String, InputError>)>> + 'a {
    let mut lineno = 0u64;
    let mut done = false;
    std::iter::from_fn(move || {
        while !done {
            let mut buf = Vec::new();
            lineno += 1;
            match input.read_until(b'\n', &mut buf) {
                Err(e) => {
                    done = true;
                    return Some(Err(crate::error::Error::io(format!("{name}:{lineno}"), e)));
                }
                Ok(0) => done = true,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                    }
                    match String::from_utf8(buf) {
                        Ok(l) if l.trim().is_empty() => {}
                        Ok(l) => return Some(Ok((lineno, Ok(l)))),
                        Err(e) => {
                            let at = e.utf8_error().valid_up_to();
                            let byte = e.as_bytes().get(at).copied().unwrap_or(0);
                            let msg =
                                format!("not valid UTF-8: byte {byte:#04x} at column {}", at + 1);
                            return Some(Ok((lineno, Err(InputError::new(name, lineno, "", msg)))));
                        }
                    }
                }
            }
        }
        None
    })
}

/// Parses one line as a JSON object.
pub fn parse_object(text: &str, file: &str, line: u64) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(InputError::new(
            file,
            line,
            "",
            format!("expected a JSON object, found {}", kind(&other)),
        )),
        // A whole file (line 0) takes the parser's line; one line of a file keeps its own.
        Err(e) => Err(InputError::new(
            file,
            if line == 0 { e.line() as u64 } else { line },
            "",
            format!("not valid JSON: {}", strip_position(&e.to_string())),
        )),
    }
}

fn strip_position(msg: &str) -> &str {
    msg.split(" at line ").next().unwrap_or(msg)
}

/// The JSON type of a value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a value for error messages (long values are cut).
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let mut cut = 37;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

impl<'a> Obj<'a> {
    /// Wraps `map`, read from `file` at `line`.
    pub fn new(map: &'a Map<String, Value>, file: &'a str, line: u64) -> Self {
        Obj {
            map,
            file,
            line,
            path: "",
        }
    }

    /// An error about `key`.
    pub fn err(&self, key: &str, msg: impl Into<String>) -> InputError {
        InputError::new(self.file, self.line, format!("{}{}", self.path, key), msg)
    }

    /// The raw value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// The raw value of a required key.
    pub fn req(&self, key: &str) -> Result<&'a Value, InputError> {
        self.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    /// A required non-negative integer (a float with no fraction, like `3.0`, is accepted).
    pub fn u64(&self, key: &str) -> Result<u64, InputError> {
        let v = self.req(key)?;
        as_u64(v).ok_or_else(|| self.err(key, not_u64(v)))
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.u64(key).map(Some),
        }
    }

    /// A required integer that fits in u32.
    pub fn u32(&self, key: &str) -> Result<u32, InputError> {
        let v = self.u64(key)?;
        u32::try_from(v).map_err(|_| self.err(key, format!("{v} is larger than 4294967295")))
    }

    /// An optional integer that fits in u32.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.u32(key).map(Some),
        }
    }

    /// A required finite number.
    pub fn f64(&self, key: &str) -> Result<f64, InputError> {
        let v = self.req(key)?;
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.err(key, format!("expected a number, found {}", show(v)))),
        }
    }

    /// An optional finite number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&'a str, InputError> {
        let v = self.req(key)?;
        v.as_str()
            .ok_or_else(|| self.err(key, format!("expected a string, found {}", show(v))))
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {}", show(v)))),
        }
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>, InputError> {
        let v = self.req(key)?;
        v.as_array()
            .ok_or_else(|| self.err(key, format!("expected an array, found {}", kind(v))))
    }

    /// A required array of non-negative integers.
    pub fn u64_array(&self, key: &str) -> Result<Vec<u64>, InputError> {
        let a = self.array(key)?;
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                as_u64(v).ok_or_else(|| self.err(key, format!("element {i}: {}", not_u64(v))))
            })
            .collect()
    }

    /// A required nested object, whose errors name `key.` before their own fields.
    pub fn object(&self, key: &'a str, path: &'a str) -> Result<Obj<'a>, InputError> {
        let v = self.req(key)?;
        match v {
            Value::Object(m) => Ok(Obj {
                map: m,
                file: self.file,
                line: self.line,
                path,
            }),
            other => Err(self.err(key, format!("expected an object, found {}", kind(other)))),
        }
    }

    /// Fails on any key not in `known` (catches typos in kvreplay's own formats).
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), InputError> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(self.err(k, format!("unknown field (known: {})", known.join(", "))));
            }
        }
        Ok(())
    }
}

/// Integral floats from this on are refused as integers: not every integer above 2^53 has a
/// float of its own, so `9007199254740993.0` would silently read as `9007199254740992`.
const FLOAT_EXACT: f64 = 9_007_199_254_740_992.0;

/// A JSON value as a non-negative integer, accepting integral floats (`512.0`) below 2^53,
/// where a float stands for exactly one integer.
pub fn as_u64(v: &Value) -> Option<u64> {
    if let Some(x) = v.as_u64() {
        return Some(x);
    }
    let f = v.as_f64()?;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < FLOAT_EXACT {
        Some(f as u64)
    } else {
        None
    }
}

/// What to say about a value [`as_u64`] refused.
fn not_u64(v: &Value) -> String {
    let hint = match v.as_f64() {
        Some(f) if v.as_u64().is_none() && f.fract() == 0.0 && (FLOAT_EXACT..2e19).contains(&f) => {
            " (write integers of 2^53 and more without a fraction or exponent: a float cannot \
             hold them exactly)"
        }
        _ => "",
    };
    format!("expected a non-negative integer, found {}{hint}", show(v))
}

/// Seconds (a JSON number) to integer nanoseconds; negative or non-finite values are refused.
pub fn seconds_to_ns(s: f64) -> Option<u64> {
    if (0.0..1.8e10).contains(&s) {
        Some((s * 1e9).round() as u64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_names_the_line() {
        // A whole file: the parser's line. One line of a JSONL file: that line.
        let e = parse_object("{\n  \"a\": 1,\n  oops\n}", "p.json", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.json:3: not valid JSON: key must be a string"
        );
        let e = parse_object("{oops}", "t.jsonl", 7).unwrap_err();
        assert!(
            e.to_string().starts_with("t.jsonl:7: not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let m = parse_object(
            r#"{"a": "x", "b": -1, "c": 2.0, "d": [1, "z"]}"#,
            "f.jsonl",
            3,
        )
        .unwrap();
        let o = Obj::new(&m, "f.jsonl", 3);
        assert_eq!(
            o.u64("a").unwrap_err().to_string(),
            "f.jsonl:3: a: expected a non-negative integer, found \"x\""
        );
        assert!(o.u64("b").is_err());
        assert_eq!(o.u64("c").unwrap(), 2);
        assert_eq!(
            o.u64("zz").unwrap_err().to_string(),
            "f.jsonl:3: zz: missing"
        );
        assert!(
            o.u64_array("d")
                .unwrap_err()
                .to_string()
                .contains("d: element 1")
        );
        assert!(
            o.deny_unknown(&["a", "b", "c"])
                .unwrap_err()
                .to_string()
                .contains(": d: unknown")
        );
        assert!(
            parse_object("[1]", "f", 1)
                .unwrap_err()
                .to_string()
                .contains("an array")
        );
        assert!(
            parse_object("{", "f", 1)
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}

//! YAML files (`lmcache_config.yaml`, `--config`, sweep grids), read with the `yaml-rust2`
//! parser into a flat JSON object of top-level keys. A byte-order mark is skipped; flow maps,
//! quoted and block scalars, lists and nested maps (LMCache's `extra_config`) are read. One
//! document per file; the top level must be a mapping; a configuration key (see
//! [`super::keys::KEYS`]) takes a scalar, or for a sweep grid a list of scalars; duplicate keys and
//! aliases are refused. Errors name the file, the line and the key.

use crate::error::InputError;
use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// How deep maps and lists may nest (no configuration needs more than a few levels).
const MAX_DEPTH: usize = 32;

/// One top-level key of a YAML file: its name, the line it is on, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// 1-based line of the key.
    pub line: u64,
    /// Its value as JSON.
    pub value: Value,
}

/// Parses `text` (named `file` in errors) into a JSON object of its top-level keys.
pub fn parse(text: &str, file: &str) -> Result<Map<String, Value>, InputError> {
    Ok(entries(text, file)?
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect())
}

/// Parses `text` (named `file` in errors) into its top-level keys in file order, each with its
/// line.
pub fn entries(text: &str, file: &str) -> Result<Vec<Entry>, InputError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut r = Reader {
        parser: Parser::new_from_str(text),
        file,
    };
    let mut out = Vec::new();
    let mut documents = 0;
    loop {
        let (ev, line) = r.next()?;
        match ev {
            Event::StreamEnd => return Ok(out),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(r.err(
                        line,
                        "",
                        "a second YAML document starts here; give one document per file",
                    ));
                }
                out = r.top()?;
            }
            _ => {}
        }
    }
}

struct Reader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, line: u64, field: &str, msg: impl Into<String>) -> InputError {
        InputError::new(self.file, line, field, msg)
    }

    /// The next event and its 1-based line.
    fn next(&mut self) -> Result<(Event, u64), InputError> {
        match self.parser.next_token() {
            Ok((ev, mark)) => Ok((ev, mark.line() as u64)),
            Err(e) => Err(self.err(
                e.marker().line() as u64,
                "",
                format!("not valid YAML: {}", e.info()),
            )),
        }
    }

    /// The top-level node of a document: a mapping (or nothing).
    fn top(&mut self) -> Result<Vec<Entry>, InputError> {
        let (ev, line) = self.next()?;
        let found = match ev {
            Event::MappingStart(..) => return self.top_mapping(),
            Event::Scalar(v, TScalarStyle::Plain, _, None) if v.is_empty() => return Ok(Vec::new()),
            Event::Scalar(..) => "a single value",
            Event::SequenceStart(..) => "a list",
            _ => "an alias",
        };
        Err(self.err(
            line,
            "",
            format!("the top level must be a mapping of `key: value` lines, found {found}"),
        ))
    }

    fn top_mapping(&mut self) -> Result<Vec<Entry>, InputError> {
        let mut out: Vec<Entry> = Vec::new();
        while let Some((key, line)) = self.key("")? {
            if let Some(first) = out.iter().find(|e| e.key == key) {
                return Err(self.err(
                    line,
                    &key,
                    format!("duplicate key (first given on line {})", first.line),
                ));
            }
            let value = self.value(&key, 1)?;
            if super::RunConfig::is_key(&key) && !super::keys::STRUCTURED.contains(&key.as_str()) {
                let nested = match &value {
                    Value::Object(_) => Some("a mapping"),
                    Value::Array(a) if a.iter().any(|v| v.is_object() || v.is_array()) => {
                        Some("a list holding a mapping or a list")
                    }
                    _ => None,
                };
                if let Some(found) = nested {
                    return Err(self.err(
                        line,
                        &key,
                        format!("expected a scalar value, found {found}"),
                    ));
                }
            }
            out.push(Entry { key, line, value });
        }
        Ok(out)
    }

    /// The next key of a mapping and its line, or `None` at the mapping's end. `path` is the
    /// mapping's own key path (empty at the top level), for errors.
    fn key(&mut self, path: &str) -> Result<Option<(String, u64)>, InputError> {
        let (ev, line) = self.next()?;
        let found = match ev {
            Event::MappingEnd => return Ok(None),
            Event::Scalar(k, ..) if !k.is_empty() => return Ok(Some((k, line))),
            Event::Scalar(..) => "an empty key",
            Event::MappingStart(..) => "a mapping",
            Event::SequenceStart(..) => "a list",
            _ => "an alias",
        };
        Err(self.err(
            line,
            path,
            format!("a key must be a plain name, found {found}"),
        ))
    }

    /// The value of key `path` (dotted from the top level), `depth` levels down.
    fn value(&mut self, path: &str, depth: usize) -> Result<Value, InputError> {
        let (ev, line) = self.next()?;
        self.node(ev, line, path, depth)
    }

    /// The node that starts with `ev` (on `line`).
    fn node(
        &mut self,
        ev: Event,
        line: u64,
        path: &str,
        depth: usize,
    ) -> Result<Value, InputError> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                line,
                path,
                format!("maps and lists nest more than {MAX_DEPTH} levels deep"),
            ));
        }
        match ev {
            Event::Scalar(v, style, _, tag) => Ok(scalar_node(v, style, tag.as_ref())),
            Event::SequenceStart(..) => {
                let mut a = Vec::new();
                loop {
                    let (ev, line) = self.next()?;
                    if ev == Event::SequenceEnd {
                        return Ok(Value::Array(a));
                    }
                    a.push(self.node(ev, line, path, depth + 1)?);
                }
            }
            Event::MappingStart(..) => {
                let mut m = Map::new();
                let mut lines: Vec<(String, u64)> = Vec::new();
                while let Some((k, kline)) = self.key(path)? {
                    let sub = format!("{path}.{k}");
                    if let Some((_, first)) = lines.iter().find(|(x, _)| *x == k) {
                        return Err(self.err(
                            kline,
                            &sub,
                            format!("duplicate key (first given on line {first})"),
                        ));
                    }
                    let v = self.value(&sub, depth + 1)?;
                    lines.push((k.clone(), kline));
                    m.insert(k, v);
                }
                Ok(Value::Object(m))
            }
            Event::Alias(_) => {
                Err(self.err(line, path, "YAML aliases (`*name`) are not supported here"))
            }
            other => Err(self.err(line, path, format!("unexpected YAML {other:?}"))),
        }
    }
}

/// A scalar node as JSON: plain scalars as [`scalar`] reads them (an empty one is null), quoted
/// and block scalars and `!!str` ones as strings.
fn scalar_node(v: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    let str_tag = tag.is_some_and(|t| t.suffix == "str");
    match style {
        TScalarStyle::Plain if !str_tag => {
            if v.is_empty() {
                Value::Null
            } else {
                scalar(&v)
            }
        }
        _ => Value::String(v),
    }
}

fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2
        && ((b[0] == b'"' && b[b.len() - 1] == b'"') || (b[0] == b'\'' && b[b.len() - 1] == b'\''))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// A YAML scalar as JSON, as LMCache's YAML 1.1 reader takes it: booleans (`true`, `yes`, `on`
/// and their opposites, any case), null, integers, floats, else a string. Quotes around the
/// whole value make it a string (for `LMCACHE_*` variables).
pub fn scalar(v: &str) -> Value {
    let v = v.trim();
    if v.starts_with('"') || v.starts_with('\'') {
        return Value::String(unquote(v));
    }
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Value::Bool(true),
        "false" | "no" | "off" => return Value::Bool(false),
        "null" | "~" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_lmcache_config() {
        let m = parse(
            "# LMCache config\nchunk_size: 256\nlocal_cpu: True\nmax_local_cpu_size: 5.0\n\
             remote_url: \"redis://localhost:6379\"  # the store\nremote_serde: naive\n\
             extra_config:\n  a: 1\n  b: 'x # not a comment'\nsave_unfull_chunk: false\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(m["chunk_size"], 256);
        assert_eq!(m["local_cpu"], true);
        assert_eq!(m["max_local_cpu_size"], 5.0);
        assert_eq!(m["remote_url"], "redis://localhost:6379");
        assert_eq!(m["extra_config"]["b"], "x # not a comment");
        assert_eq!(m["save_unfull_chunk"], false);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let e = parse("chunk_size: 256\nlocal_cpu: [true\n", "c.yaml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, ""), "{e}");
        assert!(e.message.starts_with("not valid YAML: "), "{e}");
        let e = parse("a: *x\n", "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:1: "), "{e}");
        let e = parse("a: &x 1\nb:\n  c: *x\n", "c.yaml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "b.c"), "{e}");
        assert!(e.message.contains("aliases"), "{e}");
        let deep = format!("a: {}1{}\n", "[".repeat(40), "]".repeat(40));
        let e = parse(&deep, "c.yaml").unwrap_err().to_string();
        assert!(
            e.contains("c.yaml:1: a: maps and lists nest more than"),
            "{e}"
        );
        let e = parse("extra_config:\n  a: 1\n  a: 2\n", "c.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:3: extra_config.a: duplicate key (first given on line 2)"
        );
        let e = parse("[a]: 1\n", "c.yaml").unwrap_err().to_string();
        assert!(
            e.contains("a key must be a plain name, found a list"),
            "{e}"
        );
    }

    #[test]
    fn reads_lists_quotes_block_scalars_and_empty_files() {
        let m = parse(
            "---\nchunk_size: [256, 512]\nmodel: !!str 123\nname: |\n  two\n  lines\nx: 'yes'\ny: ~\nz:\n",
            "g.yaml",
        )
        .unwrap();
        assert_eq!(m["chunk_size"], serde_json::json!([256, 512]));
        assert_eq!(m["model"], "123");
        assert_eq!(m["name"], "two\nlines\n");
        assert_eq!(m["x"], "yes");
        assert_eq!((&m["y"], &m["z"]), (&Value::Null, &Value::Null));
        assert!(parse("", "e.yaml").unwrap().is_empty());
        assert!(parse("# nothing\n---\n...\n", "e.yaml").unwrap().is_empty());
        let e = entries("\n# c\nchunk_size: 256\nlocal_cpu: yes\n", "e.yaml").unwrap();
        let got: Vec<(&str, u64)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(got, [("chunk_size", 3), ("local_cpu", 4)]);
        assert_eq!(e[1].value, true);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let m = parse("\u{feff}chunk_size: 512\nlocal_cpu: true\n", "c.yaml").unwrap();
        assert_eq!(m.get("chunk_size"), Some(&Value::from(512)));
        assert_eq!(m.get("local_cpu"), Some(&Value::Bool(true)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_flow_map_is_read() {
        let m = parse("{chunk_size: 512, local_cpu: true}\n", "c.yaml").unwrap();
        assert_eq!(m.get("chunk_size"), Some(&Value::from(512)));
        assert_eq!(m.get("local_cpu"), Some(&Value::Bool(true)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_second_document_is_an_error_naming_its_line() {
        let e = parse("---\nchunk_size: 256\n---\nchunk_size: 512\n", "c.yaml").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("c.yaml", 3), "{e}");
        assert!(e.message.contains("second YAML document"), "{e}");
    }

    #[test]
    fn a_tab_before_a_comment_ends_the_value() {
        let m = parse(
            "local_cpu: true\t# comment\nchunk_size: 256\t\t# c\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(m.get("local_cpu"), Some(&Value::Bool(true)));
        assert_eq!(m.get("chunk_size"), Some(&Value::from(256)));
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_is_an_error() {
        for (text, line) in [("- chunk_size: 256\n", 1), ("# c\nchunk_size 256\n", 2)] {
            let e = parse(text, "c.yaml").unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains("must be a mapping"), "{e}");
        }
    }

    #[test]
    fn a_nested_mapping_under_a_scalar_key_is_an_error_naming_the_key_and_line() {
        let e = parse("local_cpu: true\nchunk_size:\n  a: 1\n", "c.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:2: chunk_size: expected a scalar value, found a mapping"
        );
        // Keys kvreplay does not model may hold anything (LMCache's `extra_config`).
        let m = parse("extra_config:\n  a: 1\n", "c.yaml").unwrap();
        assert_eq!(m["extra_config"]["a"], 1);
    }

    #[test]
    fn a_duplicate_key_is_an_error_naming_its_line() {
        let e = parse(
            "chunk_size: 256\nlocal_cpu: true\nchunk_size: 512\n",
            "c.yaml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:3: chunk_size: duplicate key (first given on line 1)"
        );
    }
}

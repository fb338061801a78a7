//! The subset of YAML that `lmcache_config.yaml` files use: one `key: value` per line, comments,
//! quoted strings, and nested maps (`extra_config:`) which are read and kept as JSON objects.
//! Lists and multi-line scalars are refused with a clear error rather than misread.

use crate::error::InputError;
use serde_json::{Map, Value};

/// Parses `text` (named `file` in errors) into a JSON object.
pub fn parse(text: &str, file: &str) -> Result<Map<String, Value>, InputError> {
    let mut root = Map::new();
    // Stack of (indent, key path) for nested maps.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        let no_comment = strip_comment(raw);
        if no_comment.trim().is_empty() || no_comment.trim() == "---" {
            continue;
        }
        let indent = no_comment.len() - no_comment.trim_start().len();
        let line = no_comment.trim();
        if line.starts_with('-') {
            return Err(InputError::new(
                file,
                line_no,
                "",
                "YAML lists are not supported here",
            ));
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(InputError::new(
                file,
                line_no,
                "",
                format!("expected `key: value`, found {line:?}"),
            ));
        };
        let key = unquote(k.trim());
        if key.is_empty() {
            return Err(InputError::new(file, line_no, "", "empty key"));
        }
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let target = descend(&mut root, &stack);
        let v = v.trim();
        if v.is_empty() {
            target.insert(key.clone(), Value::Object(Map::new()));
            stack.push((indent, key));
            continue;
        }
        if v.starts_with('[') || v.starts_with('|') || v.starts_with('>') {
            return Err(InputError::new(
                file,
                line_no,
                key,
                "lists and block scalars are not supported here",
            ));
        }
        target.insert(key, scalar(v));
    }
    Ok(root)
}

fn descend<'a>(
    root: &'a mut Map<String, Value>,
    stack: &[(usize, String)],
) -> &'a mut Map<String, Value> {
    let mut m = root;
    for (_, k) in stack {
        m = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("inserted as an object");
    }
    m
}

fn strip_comment(line: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_d => in_s = !in_s,
            '"' if !in_s => in_d = !in_d,
            '#' if !in_s && !in_d && (i == 0 || line[..i].ends_with(' ')) => return &line[..i],
            _ => {}
        }
    }
    line
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

/// A YAML scalar as JSON: booleans, null, integers, floats, else a string.
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
        let e = parse("chunk_size 256\n", "c.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml:1: expected `key: value`, found \"chunk_size 256\""
        );
        assert!(
            parse("a:\n  - 1\n", "c.yaml")
                .unwrap_err()
                .to_string()
                .contains("c.yaml:2:")
        );
    }
}

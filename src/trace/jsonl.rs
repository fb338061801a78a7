//! The canonical trace as JSON Lines: a header object, then one request per line.
//!
//! ```text
//! {"format_version":1,"source":"import:mooncake","block_size":512}
//! {"id":0,"arrival_ns":0,"input_len":6758,"output_len":500,"prompt":[[0,0,512],[1,0,512],...],"output_content":9000000}
//! ```
//! A run is written as `[content, offset, len]`. Optional fields (`session`, `pool`, `round`,
//! `think_ns`, `measured`) are left out when unset. Unknown fields are errors: this is kvreplay's
//! own format and a typo should not pass silently.

use super::{Measured, Request, Run, Trace, TraceMeta};
use crate::error::{Error, InputError, Result};
use crate::util::json::{Obj, as_u64, nonblank_lines, parse_object, show};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

const REQUEST_FIELDS: &[&str] = &[
    "id",
    "arrival_ns",
    "input_len",
    "output_len",
    "prompt",
    "output_content",
    "session",
    "pool",
    "round",
    "think_ns",
    "measured",
];
const MEASURED_FIELDS: &[&str] = &["ttft_ns", "e2e_ns", "itl_ns", "itl_mean_ns", "error"];

/// Writes `trace` to `path`; a failed write leaves no partial file (see
/// [`crate::util::atomic::write_file`]).
pub fn write(trace: &Trace, path: &Path) -> Result<()> {
    let name = path.display().to_string();
    crate::util::atomic::write_file(path, |file| write_buffered(trace, file, &name))
}

/// Writes `trace` as JSONL to any unbuffered writer (a file), buffering it; `name` stands for
/// it in errors.
pub fn write_buffered(trace: &Trace, w: impl Write, name: &str) -> Result<()> {
    let mut w = BufWriter::new(w);
    write_to(trace, &mut w).map_err(|e| Error::io(name, e))?;
    w.flush().map_err(|e| Error::io(name, e))
}

/// Writes `trace` as JSONL to any writer.
pub fn write_to(trace: &Trace, w: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, &trace.meta)?;
    w.write_all(b"\n")?;
    for r in &trace.requests {
        serde_json::to_writer(&mut *w, r)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a canonical JSONL trace and validates it.
pub fn read(path: &Path) -> Result<Trace> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| Error::io(&name, e))?;
    read_from(BufReader::new(f), &name)
}

/// Reads a canonical JSONL trace from any reader; `name` is used in errors.
pub fn read_from(r: impl BufRead, name: &str) -> Result<Trace> {
    let mut meta: Option<TraceMeta> = None;
    let mut requests = Vec::new();
    let mut lines = Vec::new();
    for line in nonblank_lines(r, name) {
        let (lineno, line) = line?;
        let map = parse_object(&line?, name, lineno)?;
        match &meta {
            None => {
                if !map.contains_key("format_version") {
                    return Err(InputError::new(
                        name,
                        lineno,
                        "format_version",
                        "the first line must be the kvreplay trace header (is this a trace to \
                         `kvreplay trace import` first?)",
                    )
                    .into());
                }
                let m: TraceMeta = serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(|e| InputError::new(name, lineno, "header", e.to_string()))?;
                meta = Some(m);
            }
            Some(_) => {
                requests.push(parse_request(&Obj::new(&map, name, lineno))?);
                lines.push(lineno);
            }
        }
    }
    let meta = meta.ok_or_else(|| InputError::new(name, 0, "", "empty file: no trace header"))?;
    let trace = Trace { meta, requests };
    // validate() numbers requests from 1; report the line each came from instead.
    trace.validate(name).map_err(|e| match e {
        Error::Input(mut ie) if ie.line > 0 => {
            ie.line = lines[ie.line as usize - 1];
            Error::Input(ie)
        }
        other => other,
    })?;
    Ok(trace)
}

fn parse_request(o: &Obj) -> std::result::Result<Request, InputError> {
    o.deny_unknown(REQUEST_FIELDS)?;
    let prompt = o
        .array("prompt")?
        .iter()
        .enumerate()
        .map(|(k, v)| parse_run(o, k, v))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let measured = match o.get("measured") {
        None => Measured::default(),
        Some(_) => {
            let m = o.object("measured", "measured.")?;
            m.deny_unknown(MEASURED_FIELDS)?;
            Measured {
                ttft_ns: m.opt_u64("ttft_ns")?,
                e2e_ns: m.opt_u64("e2e_ns")?,
                itl_ns: match m.get("itl_ns") {
                    None => Vec::new(),
                    Some(_) => m.u64_array("itl_ns")?,
                },
                itl_mean_ns: m.opt_u64("itl_mean_ns")?,
                error: m.opt_str("error")?.map(str::to_string),
            }
        }
    };
    Ok(Request {
        id: o.u64("id")?,
        arrival_ns: o.u64("arrival_ns")?,
        input_len: o.u32("input_len")?,
        output_len: o.u32("output_len")?,
        prompt,
        output_content: o.u64("output_content")?,
        session: o.opt_u64("session")?,
        pool: o.opt_u32("pool")?,
        round: o.opt_u32("round")?.unwrap_or(0),
        think_ns: o.opt_u64("think_ns")?.unwrap_or(0),
        measured,
    })
}

fn parse_run(o: &Obj, k: usize, v: &serde_json::Value) -> std::result::Result<Run, InputError> {
    let bad = || {
        o.err(
            "prompt",
            format!(
                "run {k}: expected [content, offset, len], found {}",
                show(v)
            ),
        )
    };
    let a = v.as_array().ok_or_else(bad)?;
    if a.len() != 3 {
        return Err(bad());
    }
    let content = as_u64(&a[0]).ok_or_else(bad)?;
    let offset = as_u64(&a[1])
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(bad)?;
    let len = as_u64(&a[2])
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(bad)?;
    Ok(Run::new(content, offset, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Pool;

    fn sample() -> Trace {
        let mut meta = TraceMeta::new("test");
        meta.block_size = Some(512);
        meta.pools.push(Pool {
            id: 0,
            clients: 2,
            sessions_per_client: 1,
            early_stop: true,
        });
        meta.params.insert("seed".into(), serde_json::json!(7));
        let mut a = crate::testkit::numbered(0, vec![Run::new(1, 0, 10), Run::new(2, 5, 3)]);
        a.session = Some(4);
        a.pool = Some(0);
        a.round = 1;
        a.think_ns = 250;
        a.measured = Measured {
            ttft_ns: Some(12),
            e2e_ns: Some(99),
            itl_ns: vec![3, 4],
            itl_mean_ns: None,
            error: Some("timeout".into()),
        };
        let b = crate::testkit::numbered(1, vec![Run::new(u64::MAX, u32::MAX - 1, 1)]);
        Trace {
            meta,
            requests: vec![a, b],
        }
    }

    #[test]
    fn round_trips_losslessly() {
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let back = read_from(&buf[..], "mem").unwrap();
        assert_eq!(back, t);
        // Writing again gives the same bytes.
        let mut buf2 = Vec::new();
        write_to(&back, &mut buf2).unwrap();
        assert_eq!(buf, buf2);
    }

    #[test]
    fn invalid_utf8_is_an_input_error_naming_the_line() {
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let k = buf.windows(7).position(|w| w == b"timeout").unwrap();
        buf[k] = 0xff;
        let e = read_from(&buf[..], "t.jsonl").unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e:?}");
        let col = k - buf[..k].iter().rposition(|b| *b == b'\n').unwrap();
        assert_eq!(
            e.to_string(),
            format!("t.jsonl:2: not valid UTF-8: byte 0xff at column {col}")
        );
    }

    #[test]
    fn zero_output_len_is_rejected_at_read_time() {
        // vLLM generates at least one token; a request with none never finishes in the engine.
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let zero = lines[2].replacen("\"output_len\":4,", "\"output_len\":0,", 1);
        assert_ne!(zero, lines[2]);
        let bad = format!("{}\n{}\n\n{zero}\n", lines[0], lines[1]);
        let e = read_from(bad.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.jsonl:4: output_len: must be at least 1 (vLLM generates at least one token)"
        );
    }

    #[test]
    fn header_typos_are_errors() {
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        for (from, to) in [
            ("\"block_size\"", "\"block_sise\""),
            ("\"early_stop\"", "\"early_stp\""),
        ] {
            let typo = text.replacen(from, to, 1);
            assert_ne!(typo, text);
            let e = read_from(typo.as_bytes(), "t.jsonl")
                .unwrap_err()
                .to_string();
            let key = to.trim_matches('"');
            assert!(
                e.starts_with(&format!("t.jsonl:1: header: unknown field `{key}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn integers_written_as_imprecise_floats_are_refused() {
        // 2^53 + 1 has no float of its own: as a float it would silently become 2^53.
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let exact = text.replacen(
            "\"arrival_ns\":1000",
            "\"arrival_ns\":4503599627370496.0",
            1,
        );
        let back = read_from(exact.as_bytes(), "t.jsonl").unwrap();
        assert_eq!(back.requests[1].arrival_ns, 1 << 52);
        let bad = text.replacen(
            "\"arrival_ns\":1000",
            "\"arrival_ns\":9007199254740993.0",
            1,
        );
        let e = read_from(bad.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.jsonl:3: arrival_ns: expected a non-negative integer"),
            "{e}"
        );
        // Written as an integer it is exact.
        let int = text.replacen("\"arrival_ns\":1000", "\"arrival_ns\":9007199254740993", 1);
        let back = read_from(int.as_bytes(), "t.jsonl").unwrap();
        assert_eq!(back.requests[1].arrival_ns, (1 << 53) + 1);
    }

    #[test]
    fn bad_lines_name_line_and_field() {
        let t = sample();
        let mut buf = Vec::new();
        write_to(&t, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let bad = text.replacen("\"arrival_ns\":1000", "\"arrival_ns\":\"soon\"", 1);
        let e = read_from(bad.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.jsonl:3: arrival_ns: expected a non-negative integer, found \"soon\""
        );
        let typo = text.replacen("\"output_len\"", "\"output_lne\"", 1);
        let e = read_from(typo.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.jsonl:2: output_lne: unknown field"), "{e}");
        let badrun = text.replacen("[2,5,3]", "[2,5]", 1);
        let e = read_from(badrun.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.jsonl:2: prompt: run 1: expected"), "{e}");
        let e = read_from("{\"timestamp\":0}\n".as_bytes(), "m.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.jsonl:1: format_version"), "{e}");
        // A validation error names the request's line (header is line 1).
        let short = text.replacen("\"input_len\":1,", "\"input_len\":2,", 1);
        let e = read_from(short.as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.jsonl:3: prompt:"), "{e}");
    }
}

//! Importers: other tools' trace and result files -> the canonical [`Trace`].
//!
//! Every importer reads records one by one. A malformed record becomes one [`InputError`] naming
//! file, line and field; by default it is skipped and counted by reason, with `strict` the import
//! stops at the first. Nothing is dropped silently: [`ImportReport`] accounts for every record
//! read (`read = imported + skipped`).

pub mod azure;
pub mod bailian;
pub mod burstgpt;
pub mod chat_template;
pub mod csvutil;
pub mod llmperf;
pub mod mooncake;
pub mod openai;
pub mod sharegpt;
pub mod text_tokenizer;
pub mod token_ids;
pub mod vllm_bench;

use super::Trace;
use crate::error::{InputError, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::Path;

// Defined beside `Request`; re-exported so that the importers' paths keep working.
pub use super::{OUTPUT_CONTENT_BIT, output_content};

/// The formats `kvreplay trace import --format` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids of 512-token blocks.
    Mooncake,
    /// Azure LLM inference CSV, 2023 or 2024: TIMESTAMP, ContextTokens, GeneratedTokens.
    Azure,
    /// BurstGPT CSV (v1.x or v2.0): Timestamp (s), Request tokens, Response tokens, optional
    /// Session ID; rows with 0 response tokens are failed requests and skipped.
    Burstgpt,
    /// Qwen Bailian usage traces JSONL: chat_id, parent_chat_id, timestamp (s), input_length,
    /// output_length, hash_ids of 16-token blocks.
    Bailian,
    /// `vllm bench serve --save-result --save-detailed` JSON: per-request lengths and measured
    /// TTFT/ITL, send times from start_times when present.
    VllmBench,
    /// llmperf `*_individual_responses.json`: per-request lengths and measured TTFT, ITL and
    /// end-to-end latency; no send times (see `clients`).
    Llmperf,
    /// A request log as token ids, JSONL: timestamp (s), prompt_token_ids, output_len, optional
    /// session_id; shared token prefixes become shared content exactly.
    TokenIds,
    /// OpenAI chat-completions or completions requests, JSONL with a timestamp (see
    /// `openai.rs` for the names accepted), tokenized with `--tokenizer DIR`.
    Openai,
    /// ShareGPT conversations (JSON array or JSONL) as closed-loop sessions of `--clients`
    /// clients, tokenized with `--tokenizer DIR`.
    Sharegpt,
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Stop at the first malformed record instead of skipping it.
    pub strict: bool,
    /// Tokens per hash id, for formats that carry block hashes (Mooncake 512, Bailian 16).
    pub block_size: Option<u32>,
    /// llmperf results carry no start times: replay them as a closed loop of this many clients.
    pub clients: Option<u32>,
    /// Text formats (openai, sharegpt): the model's tokenizer and chat template.
    pub tokenizer: Option<std::sync::Arc<text_tokenizer::TextTokenizer>>,
    /// ShareGPT: a client's pause between the turns of a conversation.
    pub think_ns: u64,
}

/// What an import did with every record it read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Records read (data lines, array elements).
    pub read: u64,
    /// Records that became requests.
    pub imported: u64,
    /// Skipped records by reason (the field at fault, without an array index).
    pub skipped: BTreeMap<String, u64>,
    /// For reasons whose fields name array elements (vllm-bench's `ttfts[17]`), the first few
    /// indices skipped, to show with the count.
    pub indices: BTreeMap<String, Vec<u64>>,
    /// The first few errors in full, to show the user.
    pub examples: Vec<InputError>,
}

/// Errors shown in full per import; the rest are counted.
pub const MAX_EXAMPLES: usize = 5;

/// Indices shown per reason; the rest are counted.
pub const MAX_INDICES: usize = 3;

impl ImportReport {
    /// Total skipped records.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {} = imported {} + skipped {}",
            self.read,
            self.imported,
            self.skipped_total()
        )?;
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, v)| match self.indices.get(k) {
                    Some(at) if !at.is_empty() => {
                        let mut list: Vec<String> = at.iter().map(u64::to_string).collect();
                        if *v > at.len() as u64 {
                            list.push("...".into());
                        }
                        format!("{k}[{}]: {v}", list.join(", "))
                    }
                    _ => format!("{k}: {v}"),
                })
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        let shown = self.examples.len() as u64;
        if self.skipped_total() > shown {
            write!(f, "\n  ... and {} more", self.skipped_total() - shown)?;
        }
        Ok(())
    }
}

/// Collects records' outcomes while an importer runs.
#[derive(Debug)]
pub struct Tally {
    strict: bool,
    /// The report being built.
    pub report: ImportReport,
}

impl Tally {
    /// A tally for one import.
    pub fn new(opts: &ImportOptions) -> Self {
        Tally {
            strict: opts.strict,
            report: ImportReport::default(),
        }
    }

    /// Records the outcome of one record: `Ok(Some(x))` imported, `Ok(None)` skipped on purpose
    /// (never used for errors), `Err` malformed. Returns the value to keep, or the error when
    /// strict.
    pub fn record<T>(
        &mut self,
        outcome: std::result::Result<T, InputError>,
    ) -> std::result::Result<Option<T>, InputError> {
        self.report.read += 1;
        match outcome {
            Ok(v) => {
                self.report.imported += 1;
                Ok(Some(v))
            }
            Err(e) => {
                if self.strict {
                    return Err(e);
                }
                let reason = e.reason();
                if let Some(i) = e.index() {
                    let at = self.report.indices.entry(reason.clone()).or_default();
                    if at.len() < MAX_INDICES {
                        at.push(i);
                    }
                }
                *self.report.skipped.entry(reason).or_default() += 1;
                if self.report.examples.len() < MAX_EXAMPLES {
                    self.report.examples.push(e);
                }
                Ok(None)
            }
        }
    }

    /// Counts a record that the source itself marks as failed (BurstGPT's zero-token responses,
    /// an errored benchmark request): skipped with that reason, never an error even when strict.
    pub fn skip_known(&mut self, reason: &str) {
        self.report.read += 1;
        *self.report.skipped.entry(reason.to_string()).or_default() += 1;
    }
}

/// Reads a JSONL input record by record: each non-blank line parsed as a JSON object and then by
/// `parse` (given the object and the record's index), tallied, and handed to `keep` when it
/// parsed.
pub fn jsonl_records<T>(
    input: &mut dyn BufRead,
    name: &str,
    tally: &mut Tally,
    mut parse: impl FnMut(&crate::util::json::Obj, u64) -> std::result::Result<T, InputError>,
    mut keep: impl FnMut(T),
) -> Result<()> {
    use crate::util::json::{Obj, nonblank_lines, parse_object};
    for line in nonblank_lines(input, name) {
        let (lineno, line) = line?;
        let id = tally.report.read;
        let parsed = line
            .and_then(|line| parse_object(&line, name, lineno))
            .and_then(|m| parse(&Obj::new(&m, name, lineno), id));
        if let Some(v) = tally.record(parsed)? {
            keep(v);
        }
    }
    Ok(())
}

/// [`jsonl_records`] with `parse` run on many lines at once (on every core), for parsers that
/// do real work per line (rendering chat templates, tokenizing text). Records reach `tally` and
/// `keep` in file order with the ids the sequential loop gives them, so the result is the same.
pub fn jsonl_records_par<T: Send>(
    input: &mut dyn BufRead,
    name: &str,
    tally: &mut Tally,
    parse: impl Fn(&crate::util::json::Obj, u64) -> std::result::Result<T, InputError> + Sync,
    mut keep: impl FnMut(T),
) -> Result<()> {
    use crate::util::json::{Obj, nonblank_lines, parse_object};
    use rayon::prelude::*;
    /// Lines parsed together: enough to keep every core busy, few enough to bound memory.
    const LINES: usize = 4096;
    let mut lines = nonblank_lines(input, name);
    loop {
        let batch = lines.by_ref().take(LINES).collect::<Result<Vec<_>>>()?;
        if batch.is_empty() {
            return Ok(());
        }
        let id0 = tally.report.read;
        let parsed: Vec<_> = batch
            .into_par_iter()
            .enumerate()
            .map(|(i, (lineno, line))| {
                line.and_then(|line| parse_object(&line, name, lineno))
                    .and_then(|m| parse(&Obj::new(&m, name, lineno), id0 + i as u64))
            })
            .collect();
        for p in parsed {
            if let Some(v) = tally.record(p)? {
                keep(v);
            }
        }
    }
}

/// Imports the file at `path` in `format`.
pub fn import(format: Format, path: &Path, opts: &ImportOptions) -> Result<(Trace, ImportReport)> {
    let name = path.display().to_string();
    let mut input = open(path)?;
    let (mut trace, report) = import_from(format, &mut input, &name, opts)?;
    trace
        .meta
        .params
        .insert("file".into(), serde_json::json!(file_name(path)));
    Ok((trace, report))
}

/// Imports from any reader; `name` stands for the file in errors. Importers never panic on any
/// input (each has a fuzz target under `fuzz/`, see [`crate::fuzzing`]).
pub fn import_from(
    format: Format,
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
) -> Result<(Trace, ImportReport)> {
    if opts.block_size == Some(0) {
        return Err(crate::error::Error::Config(
            "the block size must be at least 1 token".into(),
        ));
    }
    let (trace, report) = match format {
        Format::Mooncake => mooncake::import(input, name, opts)?,
        Format::Azure => azure::import(input, name, opts)?,
        Format::Burstgpt => burstgpt::import(input, name, opts)?,
        Format::Bailian => bailian::import(input, name, opts)?,
        Format::VllmBench => vllm_bench::import(input, name, opts)?,
        Format::Llmperf => llmperf::import(input, name, opts)?,
        Format::TokenIds => token_ids::import(input, name, opts)?,
        Format::Openai => openai::import(input, name, opts, tokenizer(opts, "openai")?)?,
        Format::Sharegpt => sharegpt::import(input, name, opts, tokenizer(opts, "sharegpt")?)?,
    };
    trace.validate(name)?;
    Ok((trace, report))
}

/// The tokenizer a text format needs.
fn tokenizer<'a>(
    opts: &'a ImportOptions,
    format: &str,
) -> Result<&'a text_tokenizer::TextTokenizer> {
    opts.tokenizer.as_deref().ok_or_else(|| {
        crate::error::Error::Config(format!(
            "--format {format} needs the model's tokenizer: --tokenizer DIR (a folder with \
             tokenizer.json and tokenizer_config.json)"
        ))
    })
}

/// The file's name without its folders (traces must not embed machine paths).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads a whole JSON document (vllm bench, llmperf): exactly one value. Invalid JSON is one
/// error naming its line; text after the value is one error naming the line where it starts,
/// followed by `hint`.
pub fn read_json_document(
    input: &mut dyn BufRead,
    name: &str,
    hint: &str,
) -> Result<serde_json::Value> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| crate::error::Error::io(name, e))?;
    let mut stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<serde_json::Value>();
    let value = match stream.next() {
        None => return Err(InputError::new(name, 0, "", "empty file: no JSON value").into()),
        Some(Err(e)) => {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            return Err(InputError::new(
                name,
                e.line() as u64,
                "",
                format!("not valid JSON: {msg}"),
            )
            .into());
        }
        Some(Ok(v)) => v,
    };
    let end = stream.byte_offset().min(bytes.len());
    let rest = bytes.get(end..).unwrap_or(&[]);
    if let Some(k) = rest.iter().position(|b| !b.is_ascii_whitespace()) {
        let at = bytes.get(..end + k).unwrap_or(&[]);
        let line = at.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        return Err(InputError::new(
            name,
            line,
            "",
            format!("text after the end of the JSON value{hint}"),
        )
        .into());
    }
    Ok(value)
}

/// Counts by value (BurstGPT models, Bailian request types) as a JSON object, in key order.
pub fn counts_json(counts: &BTreeMap<String, u64>) -> serde_json::Value {
    serde_json::Value::Object(
        counts
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect(),
    )
}

/// Sorts open-loop requests by arrival, keeping source order among equal times.
pub fn sort_by_arrival(requests: &mut [super::Request]) {
    requests.sort_by_key(|r| (r.arrival_ns, r.id));
}

/// Opens a file for an importer, mapping the OS error to one naming the path.
pub fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(path)
        .map_err(|e| crate::error::Error::io(path.display().to_string(), e))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel loop gives what the sequential one gives, across batch boundaries: the
    /// same records in order with the same ids, the same counts and the same first errors.
    #[test]
    fn parallel_records_equal_sequential_ones() {
        let mut text = String::new();
        for i in 0..10_000u64 {
            match i % 997 {
                0 => text.push_str("{not json\n"),
                1 => text.push_str(&format!("{{\"x\": \"{i}\"}}\n")),
                _ => text.push_str(&format!("{{\"x\": {i}}}\n")),
            }
            if i % 1000 == 0 {
                text.push('\n');
            }
        }
        let parse =
            |o: &crate::util::json::Obj, id: u64| -> std::result::Result<(u64, u64), InputError> {
                Ok((id, o.u64("x")?))
            };
        let run = |par: bool, strict: bool| {
            let opts = ImportOptions {
                strict,
                ..Default::default()
            };
            let mut tally = Tally::new(&opts);
            let mut kept = Vec::new();
            let mut input = text.as_bytes();
            let r = if par {
                jsonl_records_par(&mut input, "t.jsonl", &mut tally, parse, |v| kept.push(v))
            } else {
                jsonl_records(&mut input, "t.jsonl", &mut tally, parse, |v| kept.push(v))
            };
            (r.map_err(|e| e.to_string()), tally.report, kept)
        };
        let (seq, par) = (run(false, false), run(true, false));
        assert_eq!(seq, par);
        // 10,000 lines: 11 malformed (i = 0, 997, ...) and 11 with a string x.
        assert_eq!(
            (par.1.read, par.1.imported, par.1.skipped_total()),
            (10_000, 9_978, 22)
        );
        // Ids count every record read: the first kept is the third line.
        assert_eq!(par.2[0], (2, 2));
        let (seq, par) = (run(false, true), run(true, true));
        assert_eq!(seq.0, par.0);
        assert!(par.0.unwrap_err().starts_with("t.jsonl:1: "));
    }

    /// vLLM generates at least one token: a record with none is never imported (a request with
    /// none would never finish in the engine), and it is counted under a reason.
    #[test]
    fn zero_output_tokens_are_skipped_and_counted_by_every_importer() {
        let cases: [(Format, &str, &str); 6] = [
            (
                Format::Mooncake,
                "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 2, \"hash_ids\": [1]}\n\
                 {\"timestamp\": 1, \"input_length\": 5, \"output_length\": 0, \"hash_ids\": [1]}\n",
                "output_length",
            ),
            (
                Format::Bailian,
                "{\"chat_id\": 0, \"parent_chat_id\": -1, \"timestamp\": 0, \"input_length\": 5, \"output_length\": 2, \"hash_ids\": [1]}\n\
                 {\"chat_id\": 1, \"parent_chat_id\": -1, \"timestamp\": 1, \"input_length\": 5, \"output_length\": 0, \"hash_ids\": [1]}\n",
                "output_length",
            ),
            (
                Format::Azure,
                "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                 2024-05-12 00:00:00,5,2\n2024-05-12 00:00:01,5,0\n",
                "GeneratedTokens",
            ),
            (
                Format::Burstgpt,
                "Timestamp,Request tokens,Response tokens\n1,5,2\n2,5,0\n",
                burstgpt::FAILED,
            ),
            (
                Format::VllmBench,
                r#"{"input_lens": [5, 5], "output_lens": [2, 0], "ttfts": [0.1, 0.1], "itls": [[0.1], []]}"#,
                vllm_bench::FAILED,
            ),
            (
                Format::Llmperf,
                r#"[{"number_input_tokens": 5, "number_output_tokens": 2, "ttft_s": 0.1, "end_to_end_latency_s": 0.2},
                    {"number_input_tokens": 5, "number_output_tokens": 0, "ttft_s": 0.1, "end_to_end_latency_s": 0.2}]"#,
                "number_output_tokens",
            ),
        ];
        for (format, text, reason) in cases {
            let (t, rep) =
                import_from(format, &mut text.as_bytes(), "f", &ImportOptions::default()).unwrap();
            assert_eq!((rep.read, rep.imported), (2, 1), "{format:?}: {rep}");
            assert_eq!(rep.skipped.get(reason), Some(&1), "{format:?}: {rep}");
            assert_eq!(t.requests.len(), 1);
            assert_eq!(t.requests[0].output_len, 2, "{format:?}");
        }
    }
}

/// Test helpers shared by the importers' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::{Format, ImportOptions, ImportReport};
    use crate::error::Result;
    use crate::trace::Trace;
    use std::path::{Path, PathBuf};

    /// Imports the file at `p` as `format`, `strict` or not, other options at their defaults.
    pub fn import_file(format: Format, p: &Path, strict: bool) -> Result<(Trace, ImportReport)> {
        let opts = ImportOptions {
            strict,
            ..Default::default()
        };
        super::import(format, p, &opts)
    }

    /// Replays `t` for the importers' hand-computed hit tests: per request, the prompt tokens
    /// vLLM's prefix cache serves (block 16, no offload), and those LMCache's CPU tier alone
    /// serves (chunks of 256, prefix caching off).
    pub fn replayed_hits(t: &Trace) -> (Vec<u32>, Vec<u32>) {
        use crate::engine::EngineFlags;
        use crate::testkit::{lmcache_cpu, setup};
        let r = crate::sim::simulate(
            t,
            &setup(EngineFlags::default(), crate::tiers::OffloadConfig::None),
        )
        .unwrap();
        let gpu = r.reqs.iter().map(|q| q.origin.gpu).collect();
        let off = EngineFlags {
            enable_prefix_caching: Some(false),
            ..Default::default()
        };
        let r = crate::sim::simulate(t, &setup(off, lmcache_cpu(256, 5))).unwrap();
        let cpu = r.reqs.iter().map(|q| q.origin.cpu).collect();
        (gpu, cpu)
    }

    /// `../shared/traces/NAME`, when the shared materials sit beside the checkout (see
    /// `testkit::shared`).
    pub fn shared_trace(name: &str) -> Option<PathBuf> {
        crate::testkit::shared(&format!("traces/{name}"))
    }

    /// Writes `text` to a fresh temporary file named `name` and returns its path.
    pub fn temp_file(name: &str, text: &str) -> PathBuf {
        temp_bytes(name, text.as_bytes())
    }

    /// Writes `bytes` (not necessarily UTF-8) to a fresh temporary file named `name` and returns
    /// its path.
    pub fn temp_bytes(name: &str, bytes: &[u8]) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvreplay-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

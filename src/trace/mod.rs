//! The canonical trace: the one workload format every importer produces, every generator writes
//! and the engine replays.
//!
//! # Content identity
//! A prompt is a list of [`Run`]s: `content` is an opaque id of a piece of shared content (a
//! document, a Mooncake block, the answer of an earlier request), `offset` is where in that
//! content the run starts and `len` how many tokens it has. Token `i` of a run is therefore the
//! token `(content, offset + i)`. Two prompts share exactly the tokens whose identities agree, so
//! the chained hash of any block, at any block size (vLLM's 16, LMCache's 64..1024, a trace's own
//! 512), follows from the runs alone: see [`content`]. Runs are kept *canonical* (adjacent runs
//! that continue the same content are merged), so that one token sequence has one representation.
//!
//! # Arrivals
//! A request without a `pool` is open-loop: it is sent at `arrival_ns`. A request with a pool is
//! closed-loop: the pool's clients (each with at most one request in flight) take *units* from a
//! FIFO queue in trace order; a unit is a session (all requests with the same `session`, sent one
//! after the other) or a single request without a session. A request is sent at the earliest time
//! when (1) `arrival_ns` has passed, (2) the previous request of its client has completed and that
//! request's `think_ns` has elapsed, (3) every request of the pool with a lower `round` has
//! completed (rounds are barriers, as long_doc_qa's warmup and query rounds), and (4) a client is
//! free (for the first request of a unit).

pub mod content;
pub mod generate;
pub mod import;
pub mod jsonl;
pub mod parquet;
pub mod parquet_pages;
pub mod stats;

use crate::error::{InputError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Version of the canonical trace format written into every file.
pub const FORMAT_VERSION: u32 = 1;

/// Content ids with this bit set name generated tokens (a request's output); importers keep the
/// ids they take from a source below it.
pub const OUTPUT_CONTENT_BIT: u64 = 1 << 63;

/// The content id of request `id`'s generated tokens.
pub fn output_content(id: u64) -> u64 {
    OUTPUT_CONTENT_BIT | id
}

/// A run of consecutive tokens of one piece of content: tokens `(content, offset..offset+len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "(u64, u32, u32)", into = "(u64, u32, u32)")]
pub struct Run {
    /// Opaque id of the content; equal ids mean the same tokens at the same offsets.
    pub content: u64,
    /// First position inside the content.
    pub offset: u32,
    /// Number of tokens (never 0 in a canonical prompt).
    pub len: u32,
}

impl Run {
    /// A run of `len` tokens of `content` starting at `offset`.
    pub fn new(content: u64, offset: u32, len: u32) -> Self {
        Run {
            content,
            offset,
            len,
        }
    }
}

impl From<(u64, u32, u32)> for Run {
    fn from((content, offset, len): (u64, u32, u32)) -> Self {
        Run::new(content, offset, len)
    }
}

impl From<Run> for (u64, u32, u32) {
    fn from(r: Run) -> Self {
        (r.content, r.offset, r.len)
    }
}

/// What a live run measured for a request (kept by the vllm-bench and llmperf importers so that
/// `validate` can compare predictions per request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ns: Option<u64>,
    /// End-to-end latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ns: Option<u64>,
    /// Gaps between successive streamed chunks after the first (vllm bench `itls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub itl_ns: Vec<u64>,
    /// Mean inter-token latency as the tool reported it (llmperf `inter_token_latency_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_mean_ns: Option<u64>,
    /// The error the tool recorded; `None` for a successful request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Measured {
    /// True when nothing was measured.
    pub fn is_empty(&self) -> bool {
        *self == Measured::default()
    }
}

/// One request of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique id within the trace (importers use the source's line or record order).
    pub id: u64,
    /// Open loop: send time. Closed loop: earliest send time. Nanoseconds from the trace start.
    pub arrival_ns: u64,
    /// Prompt tokens; equals the sum of the runs' lengths.
    pub input_len: u32,
    /// Tokens to generate (at least 1: vLLM always generates one).
    pub output_len: u32,
    /// Content identity of the prompt, canonical.
    pub prompt: Vec<Run>,
    /// Content id of this request's generated tokens (`(output_content, 0..output_len)`), so that
    /// a later turn can include this answer in its prompt and a cache can match it.
    pub output_content: u64,
    /// Closed-loop session (conversation, client stream) this request belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// Closed-loop pool whose clients send this request; `None` for open loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<u32>,
    /// Barrier round within the pool (0 first).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub round: u32,
    /// Pause the client takes after this request completes before it sends its next one.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub think_ns: u64,
    /// What a live run measured for this request, when the source had it.
    #[serde(default, skip_serializing_if = "Measured::is_empty")]
    pub measured: Measured,
}

impl Request {
    /// Its whole token sequence as runs: the prompt, then the answer. The answer's content is
    /// the request's own, so it never continues the prompt's last run (the runs stay
    /// canonical).
    pub fn sequence(&self) -> impl Iterator<Item = Run> + '_ {
        self.prompt
            .iter()
            .copied()
            .chain(std::iter::once(Run::new(
                self.output_content,
                0,
                self.output_len,
            )))
            .filter(|x| x.len > 0)
    }

    /// An open-loop request `id` sent at `arrival_ns` with prompt `prompt` (canonical runs) and
    /// `output_len` tokens to generate: `input_len` is the runs' total (saturating at
    /// `u32::MAX`, which [`Trace::validate`] then refuses), the answer is the content
    /// [`output_content`]`(id)`, and no session, pool, round, think time or measurement.
    ///
    /// Importers, generators and tests all build requests this way; callers set the closed-loop
    /// fields and [`Measured`] by assignment afterwards, so that adding a field to [`Request`]
    /// means changing one constructor rather than every literal.
    pub fn new(id: u64, arrival_ns: u64, prompt: Vec<Run>, output_len: u32) -> Request {
        let input_len = prompt.iter().fold(0u32, |n, r| n.saturating_add(r.len));
        Request {
            id,
            arrival_ns,
            input_len,
            output_len,
            prompt,
            output_content: output_content(id),
            session: None,
            pool: None,
            round: 0,
            think_ns: 0,
            measured: Measured::default(),
        }
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// A closed-loop group of clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Id referenced by [`Request::pool`].
    pub id: u32,
    /// Concurrent clients; each has at most one request in flight.
    pub clients: u32,
    /// Sessions a client keeps active at once and serves round-robin (vLLM multi-turn's
    /// `max_active_conversations / num_clients`); 1 means a client finishes a session before it
    /// takes the next.
    #[serde(default = "one")]
    pub sessions_per_client: u32,
    /// vLLM multi-turn's early stop: once a client finds the queue empty, every client stops
    /// after its request in flight, abandoning unfinished sessions.
    #[serde(default)]
    pub early_stop: bool,
}

impl Pool {
    /// Pool `id` of `clients` clients, each finishing a session before it takes the next, with
    /// no early stop: the closed loop of every tool but vLLM multi-turn.
    pub fn new(id: u32, clients: u32) -> Pool {
        Pool {
            id,
            clients,
            sessions_per_client: 1,
            early_stop: false,
        }
    }
}

fn one() -> u32 {
    1
}

/// Everything about a trace that is not a request. Unknown keys are errors when it is read, as
/// in requests: a misspelt optional key would otherwise take its default silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceMeta {
    /// [`FORMAT_VERSION`] of the file.
    pub format_version: u32,
    /// Where the requests came from: `"import:mooncake"`, `"gen:llmperf"`, ...
    pub source: String,
    /// The source's own block size in tokens (Mooncake 512, Bailian 16), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Closed-loop pools referenced by requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
    /// Parameters the trace was made with (generator flags, importer options), for provenance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

impl TraceMeta {
    /// Metadata for a trace from `source` with no pools.
    pub fn new(source: impl Into<String>) -> Self {
        TraceMeta {
            format_version: FORMAT_VERSION,
            source: source.into(),
            block_size: None,
            pools: Vec::new(),
            params: BTreeMap::new(),
        }
    }
}

/// A workload: metadata and requests in trace order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Provenance, pools, native block size.
    pub meta: TraceMeta,
    /// Requests in trace order (open-loop traces are sorted by arrival, then id).
    pub requests: Vec<Request>,
}

impl Trace {
    /// Checks every invariant the engine relies on and reports the first violation with the
    /// request's position (1-based, as a line of the JSONL body or a Parquet row) and field.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |i: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(file, i as u64 + 1, field, msg).into()
        };
        if self.meta.format_version != FORMAT_VERSION {
            return Err(InputError::new(
                file,
                0,
                "format_version",
                format!(
                    "kvreplay reads trace format {FORMAT_VERSION}, this file is {}",
                    self.meta.format_version
                ),
            )
            .into());
        }
        let mut pools = HashMap::new();
        for p in &self.meta.pools {
            if p.clients == 0 || p.sessions_per_client == 0 {
                return Err(InputError::new(
                    file,
                    0,
                    "pools",
                    format!(
                        "pool {} needs at least one client and one session per client",
                        p.id
                    ),
                )
                .into());
            }
            if pools.insert(p.id, ()).is_some() {
                return Err(InputError::new(
                    file,
                    0,
                    "pools",
                    format!("pool {} defined twice", p.id),
                )
                .into());
            }
        }
        let mut ids = HashMap::with_capacity(self.requests.len());
        let mut session_pool: HashMap<u64, Option<u32>> = HashMap::new();
        for (i, r) in self.requests.iter().enumerate() {
            if ids.insert(r.id, ()).is_some() {
                return Err(err(i, "id", format!("duplicate request id {}", r.id)));
            }
            let sum: u64 = r.prompt.iter().map(|x| x.len as u64).sum();
            if sum != r.input_len as u64 {
                return Err(err(
                    i,
                    "prompt",
                    format!("runs hold {sum} tokens but input_len is {}", r.input_len),
                ));
            }
            if r.input_len == 0 {
                return Err(err(
                    i,
                    "input_len",
                    "a prompt needs at least one token".into(),
                ));
            }
            if r.output_len == 0 {
                return Err(err(
                    i,
                    "output_len",
                    "must be at least 1 (vLLM generates at least one token)".into(),
                ));
            }
            if let Some(k) = r.prompt.iter().position(|x| x.len == 0) {
                return Err(err(i, "prompt", format!("run {k} is empty")));
            }
            if let Some(k) = r
                .prompt
                .iter()
                .position(|x| x.offset.checked_add(x.len).is_none())
            {
                return Err(err(i, "prompt", format!("run {k} ends past offset 2^32")));
            }
            if !content::is_canonical(&r.prompt) {
                return Err(err(
                    i,
                    "prompt",
                    "adjacent runs continue the same content; merge them".into(),
                ));
            }
            if let Some(p) = r.pool {
                if !pools.contains_key(&p) {
                    return Err(err(
                        i,
                        "pool",
                        format!("pool {p} is not defined in the header"),
                    ));
                }
            } else if r.round != 0 {
                return Err(err(i, "round", "rounds need a closed-loop pool".into()));
            }
            if let Some(s) = r.session {
                match session_pool.get(&s) {
                    Some(p) if *p != r.pool => {
                        return Err(err(i, "session", format!("session {s} spans two pools")));
                    }
                    _ => {
                        session_pool.insert(s, r.pool);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any request is sent by a closed-loop pool.
    pub fn is_closed_loop(&self) -> bool {
        self.requests.iter().any(|r| r.pool.is_some())
    }
}

/// Reads a trace, choosing the format by extension: `.parquet` or JSONL (anything else).
pub fn read(path: &std::path::Path) -> Result<Trace> {
    if is_parquet(path) {
        parquet::read(path)
    } else {
        jsonl::read(path)
    }
}

/// Writes a trace, choosing the format by extension: `.parquet` or JSONL (anything else). The
/// file is complete or not there: a write that fails (a full disk) leaves `path` as it was (see
/// [`crate::util::atomic::write_file`]).
pub fn write(trace: &Trace, path: &std::path::Path) -> Result<()> {
    crate::util::atomic::write_file(path, |file| encode(trace, path, file))
}

/// Writes `trace` to `w` in the format `path` names, naming `path` in errors.
fn encode(trace: &Trace, path: &std::path::Path, w: impl std::io::Write + Send) -> Result<()> {
    let name = path.display().to_string();
    if is_parquet(path) {
        parquet::write_to(trace, w, &name)
    } else {
        jsonl::write_buffered(trace, w, &name)
    }
}

fn is_parquet(path: &std::path::Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("parquet")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{numbered, trace};
    use std::io::Write;

    /// A file on a disk that fills up after `room` more bytes.
    struct DiskFull {
        file: std::fs::File,
        room: usize,
    }

    impl Write for DiskFull {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device",
                ));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.file.write(&buf[..n])
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    /// A fresh empty folder.
    fn temp_dir(tag: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvreplay-write-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn big_trace() -> Trace {
        trace(
            (0..5000)
                .map(|i| numbered(i, vec![Run::new(i, 0, 10)]))
                .collect(),
        )
    }

    #[test]
    fn a_write_failing_part_way_leaves_no_truncated_output() {
        let t = big_trace();
        for file in ["t.jsonl", "t.parquet"] {
            let dir = temp_dir("full");
            let path = dir.join(file);
            // The disk fills up after 4 KiB: the whole trace takes far more.
            let full = |f: std::fs::File| DiskFull {
                file: f,
                room: 4096,
            };
            let e = crate::util::atomic::write_file(&path, |f| encode(&t, &path, full(f)))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&path.display().to_string()), "{file}: {e}");
            assert!(entries(&dir).is_empty(), "{file}: {:?}", entries(&dir));
            // An earlier output stays whole.
            write(&t, &path).unwrap();
            let before = std::fs::read(&path).unwrap();
            crate::util::atomic::write_file(&path, |f| encode(&t, &path, full(f))).unwrap_err();
            assert_eq!(std::fs::read(&path).unwrap(), before, "{file}");
            assert_eq!(entries(&dir), vec![file.to_string()]);
            assert_eq!(read(&path).unwrap(), t);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        // The output path is a folder: the trace is written, then cannot replace it.
        let dir = temp_dir("rename");
        let path = dir.join("out.jsonl");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "x").unwrap();
        let e = write(&big_trace(), &path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert_eq!(entries(&dir), vec!["out.jsonl".to_string()]);
        assert_eq!(entries(&path), vec!["keep".to_string()]);
        // A folder that does not exist: an error naming the path, nothing created.
        let missing = dir.join("no/such/t.parquet");
        let e = write(&big_trace(), &missing).unwrap_err().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_reports_position_and_field() {
        let mut t = trace(vec![
            numbered(0, vec![Run::new(1, 0, 10)]),
            numbered(1, vec![Run::new(2, 0, 5)]),
        ]);
        t.validate("t.jsonl").unwrap();
        t.requests[1].input_len = 6;
        let e = t.validate("t.jsonl").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.jsonl:2: prompt: runs hold 5 tokens but input_len is 6"
        );
        t.requests[1].input_len = 5;
        t.requests[1].id = 0;
        assert!(
            t.validate("t")
                .unwrap_err()
                .to_string()
                .contains(":2: id: duplicate")
        );
        t.requests[1].id = 1;
        t.requests[1].prompt = vec![Run::new(2, 0, 2), Run::new(2, 2, 3)];
        assert!(
            t.validate("t")
                .unwrap_err()
                .to_string()
                .contains("merge them")
        );
        t.requests[1].prompt = vec![Run::new(2, 0, 5)];
        t.requests[1].pool = Some(3);
        assert!(
            t.validate("t")
                .unwrap_err()
                .to_string()
                .contains("pool 3 is not defined")
        );
    }
}

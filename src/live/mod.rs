//! Live runs: replay a kvreplay trace against an OpenAI-compatible server (vLLM) and record what
//! it measured in the same shape as a prediction, so that the two can be compared request by
//! request ([`compare`]).
//!
//! # What is sent
//! Every request is a streamed `POST /v1/completions` whose `prompt` is a list of token ids made
//! from the request's content identity by [`tokens::TokenMap`]: prompts share exactly the ids
//! the trace says they share, so the server's prefix cache sees the trace's sharing. The body is
//! `{"model", "prompt": [ids], "max_tokens": output_len, "min_tokens": output_len,
//! "ignore_eos": true, "temperature": 0, "stream": true, "stream_options": {"include_usage":
//! true}}`; `min_tokens` and `ignore_eos` are vLLM extensions that make the answer exactly
//! `output_len` tokens long (left out with `exact_lengths: false`, for servers without them; an
//! `output_len` of 0 is sent as 1, the least a server accepts).
//!
//! # When it is sent
//! As the trace contract says (see [`crate::trace`]), with the simulator's own client state
//! machine ([`crate::sim::clients::PoolState`]) driven by real time: an open-loop request is
//! sent at its `arrival_ns` after the replay's start, each on its own thread; each closed-loop
//! client is a thread that takes units from its pool's FIFO queue, sends a session's requests in
//! order (round-robin over `sessions_per_client` active sessions), waits for `arrival_ns`, sleeps
//! `think_ns` after each completion, waits at round barriers, and stops early when the pool says
//! so (vLLM multi-turn). A failed request counts as completed for these rules, as a rejected
//! request does in the simulator.
//!
//! # What is written
//! - `requests.parquet`: one [`RequestRecord`] per trace request, the columns `kvreplay run`
//!   writes. Times are measured (see [`client`] for the definitions, which are vllm bench's);
//!   `arrival_s` is the actual send time. A server does not say where each prompt token came
//!   from, so `tokens_cpu`, `tokens_disk`, `tokens_remote`, `bytes_loaded`, `bytes_stored` and
//!   `preemptions` are 0 and `queue_s` is null. When the server reports
//!   `usage.prompt_tokens_details.cached_tokens` (vLLM with `--enable-prompt-tokens-details`),
//!   `tokens_gpu` holds it (every prefix-cache hit, whatever tier it came from) and
//!   `tokens_computed` the rest of the prompt; otherwise both are 0. `output_len` is the number
//!   of tokens the server generated. A failed request is `rejected` with the error as its
//!   `reject_reason`; a request abandoned by an early stop has no `arrival_s`, as in `run`.
//! - `live_requests.jsonl`: per request the raw measurements: send time, every inter-chunk gap
//!   (`itl_s`, vllm bench's `itls`), the server's token counts, the error.
//! - `summary.json`: the configuration, aggregates over finished requests (`ttft`, `tpot`,
//!   `itl` (all gaps), `e2e`, throughputs over the wall time from the first send to the last
//!   finish), and the server's counters: the differences of every counter between the scrapes of
//!   `/metrics` before and after the run, the prefix-cache counters paired into hit rates (see
//!   [`prom::prefix_cache`]), and the labels of `vllm:cache_config_info`.
//! - `metrics_before.txt`, `metrics_after.txt`: the scrapes as served.

pub mod client;
pub mod compare;
pub mod fit;
pub mod prom;
pub mod sse;
pub mod tokens;

pub use client::Outcome;
pub use compare::compare_live;

use crate::engine::request::RejectReason;
use crate::error::{Error, Result};
use crate::metrics::record::{Reason, RequestRecord, Status};
use crate::metrics::summary::{Stats, Throughput, wall_s};
use crate::sim::clients::{Next, PoolState};
use crate::trace::{Request, Trace};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tokens::TokenMap;

/// Why an abandoned request has no measurement (the simulator's wording).
pub const ABANDONED: &str = "abandoned: the client pool stopped early (vLLM multi-turn early stop)";

/// How to run a trace live.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Server base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub endpoint: String,
    /// Model name to send; `None` asks `/v1/models` and takes the first.
    pub model: Option<String>,
    /// Token ids for content identities.
    pub tokens: TokenMap,
    /// Limit for one request, connect to last byte.
    pub timeout: Duration,
    /// Send vLLM's `min_tokens` and `ignore_eos` so answers have exactly `output_len` tokens.
    pub exact_lengths: bool,
    /// Scrape `/metrics` before and after.
    pub scrape_metrics: bool,
    /// Pause after the last request before the second scrape (counters are updated
    /// asynchronously).
    pub metrics_settle: Duration,
    /// Empty the server's prefix cache first (`POST /reset_prefix_cache`, a vLLM development
    /// endpoint: the server needs `VLLM_SERVER_DEV_MODE=1`), so that earlier runs do not
    /// leave hits the trace does not have.
    pub reset_prefix_cache: bool,
}

impl LiveOptions {
    /// Options for `endpoint` with defaults: vocabulary 32000 from id 16, 600 s per request,
    /// exact lengths, metrics scraped one second after the run.
    pub fn new(endpoint: impl Into<String>) -> LiveOptions {
        LiveOptions {
            endpoint: endpoint.into(),
            model: None,
            tokens: TokenMap::new(32_000, 16).expect("non-empty range"),
            timeout: Duration::from_secs(600),
            exact_lengths: true,
            scrape_metrics: true,
            metrics_settle: Duration::from_secs(1),
            reset_prefix_cache: false,
        }
    }
}

/// The server's base URL without a trailing `/` or `/v1`.
pub fn base_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    e.strip_suffix("/v1").unwrap_or(e).to_string()
}

/// What happened to one trace request.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Never sent (cannot remain after [`schedule`] returns).
    Pending,
    /// Not sent: its pool stopped early.
    Abandoned,
    /// Sent; completed or failed.
    Sent(Outcome),
}

fn sleep_until(t0: Instant, ns: u64) {
    let target = t0 + Duration::from_nanos(ns);
    let now = Instant::now();
    if target > now {
        std::thread::sleep(target - now);
    }
}

/// Sends every request of `trace` at the time the trace contract gives it, calling `send(index,
/// t0)` on a thread of its own (open loop) or of its client (closed loop); `send` returns when
/// the request completed or failed. Returns one slot per request, in trace order.
pub fn schedule<F>(trace: &Trace, send: F) -> Vec<Slot>
where
    F: Fn(usize, Instant) -> Outcome + Sync,
{
    let n = trace.requests.len();
    let slots = Mutex::new(vec![Slot::Pending; n]);
    let (pools, where_) = PoolState::build(trace);
    let pools = Mutex::new(pools);
    let cv = Condvar::new();
    let mut open: Vec<usize> = (0..n)
        .filter(|&i| trace.requests[i].pool.is_none())
        .collect();
    open.sort_by_key(|&i| (trace.requests[i].arrival_ns, i));
    let t0 = Instant::now();
    let (send, slots_ref, pools_ref, cv_ref, where_ref) = (&send, &slots, &pools, &cv, &where_);
    std::thread::scope(|s| {
        if !open.is_empty() {
            s.spawn(move || {
                for i in open {
                    sleep_until(t0, trace.requests[i].arrival_ns);
                    s.spawn(move || {
                        let o = send(i, t0);
                        slots_ref.lock().expect("slots")[i] = Slot::Sent(o);
                    });
                }
            });
        }
        let clients: Vec<(usize, usize)> = pools_ref
            .lock()
            .expect("pools")
            .iter()
            .enumerate()
            .flat_map(|(p, ps)| (0..ps.clients.len()).map(move |c| (p, c)))
            .collect();
        for (p, c) in clients {
            s.spawn(move || {
                let mut g = pools_ref.lock().expect("pools");
                loop {
                    let (next, abandoned) = g[p].next_for(c);
                    if !abandoned.is_empty() {
                        let mut sl = slots_ref.lock().expect("slots");
                        for r in abandoned {
                            sl[r as usize] = Slot::Abandoned;
                        }
                        cv_ref.notify_all();
                    }
                    match next {
                        Next::Send(req) => {
                            drop(g);
                            let r: &Request = &trace.requests[req as usize];
                            sleep_until(t0, r.arrival_ns);
                            let o = send(req as usize, t0);
                            slots_ref.lock().expect("slots")[req as usize] = Slot::Sent(o);
                            g = pools_ref.lock().expect("pools");
                            let (_, u) = where_ref[&req];
                            // Woken clients are blocked ones; every waiter re-checks.
                            let _ = g[p].completed(c, u, r.round);
                            cv_ref.notify_all();
                            if r.think_ns > 0 {
                                drop(g);
                                std::thread::sleep(Duration::from_nanos(r.think_ns));
                                g = pools_ref.lock().expect("pools");
                            }
                        }
                        Next::Idle => {
                            if g[p].clients[c].done {
                                cv_ref.notify_all();
                                break;
                            }
                            g = cv_ref.wait(g).expect("pools");
                        }
                    }
                }
            });
        }
    });
    slots.into_inner().expect("slots")
}

/// The JSON body of request `r`.
pub fn request_body(model: &str, r: &Request, map: &TokenMap, exact_lengths: bool) -> String {
    let ids = map.prompt(&r.prompt);
    let n = r.output_len.max(1);
    let mut body = json!({
        "model": model,
        "prompt": ids,
        "max_tokens": n,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if exact_lengths {
        body["min_tokens"] = json!(n);
        body["ignore_eos"] = json!(true);
    }
    body.to_string()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Inter-chunk gaps of an outcome, nanoseconds.
fn gaps(o: &Outcome) -> Vec<u64> {
    o.chunk_ns
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect()
}

/// One record per trace request, in trace order (see the module doc for what each column holds
/// in a live run).
pub fn records(trace: &Trace, slots: &[Slot]) -> Vec<RequestRecord> {
    trace
        .requests
        .iter()
        .zip(slots)
        .map(|(q, slot)| {
            let mut r = RequestRecord {
                id: q.id,
                round: q.round,
                session: q.session,
                status: Status::Rejected,
                reject_reason: None,
                arrival_s: None,
                queue_s: None,
                ttft_s: None,
                tpot_s: None,
                itl_mean_s: None,
                itl_max_s: None,
                e2e_s: None,
                input_len: q.input_len,
                output_len: q.output_len,
                tokens_gpu: 0,
                tokens_cpu: 0,
                tokens_disk: 0,
                tokens_remote: 0,
                tokens_computed: 0,
                bytes_loaded: 0,
                bytes_stored: 0,
                preemptions: 0,
                preempted_queries: 0,
                preempted_gpu_hits: 0,
                preempted_external_hits: 0,
                measured_ttft_s: q.measured.ttft_ns.map(secs),
                measured_e2e_s: q.measured.e2e_ns.map(secs),
                replica: None,
                prefill_replica: None,
            };
            match slot {
                Slot::Pending => {
                    r.reject_reason = Some(Reason::Failed("unfinished: never sent".into()))
                }
                Slot::Abandoned => {
                    r.reject_reason = Some(Reason::Rejected(RejectReason::Abandoned))
                }
                Slot::Sent(o) => {
                    r.arrival_s = Some(secs(o.send_ns));
                    if let Some(e) = &o.error {
                        r.reject_reason = Some(Reason::Failed(e.clone()));
                        return r;
                    }
                    let (Some(&first), Some(&last)) = (o.chunk_ns.first(), o.chunk_ns.last())
                    else {
                        r.reject_reason = Some(Reason::Failed("no tokens streamed".into()));
                        return r;
                    };
                    r.status = Status::Finished;
                    let out = o.output_tokens();
                    r.output_len = out;
                    r.ttft_s = Some(secs(first.saturating_sub(o.send_ns)));
                    r.e2e_s = Some(secs(last.saturating_sub(o.send_ns)));
                    if out > 1 {
                        let span = secs(last.saturating_sub(first));
                        r.tpot_s = Some(span / (out - 1) as f64);
                        r.itl_mean_s = Some(span / (out - 1) as f64);
                        r.itl_max_s = Some(secs(gaps(o).into_iter().max().unwrap_or(0)));
                    }
                    if let Some(c) = o.cached_tokens {
                        r.tokens_gpu = c.min(q.input_len);
                        r.tokens_computed = q.input_len - r.tokens_gpu;
                    }
                }
            }
            r
        })
        .collect()
}

/// The kind of a live error, for counting.
pub fn error_kind(reason: &str) -> String {
    if reason.starts_with("abandoned") {
        return "abandoned by early stop".into();
    }
    if let Some(rest) = reason.strip_prefix("HTTP ") {
        return format!("HTTP {}", rest.split(':').next().unwrap_or(""));
    }
    match reason.split(':').next() {
        Some(k) if k.starts_with("timeout") => "timeout".into(),
        Some(k) => k.trim().to_string(),
        None => reason.to_string(),
    }
}

/// Aggregates of a live run. Field order is the JSON order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSummary {
    /// Requests in the trace.
    pub requests_in: u64,
    /// Requests that completed.
    pub finished: u64,
    /// Requests that failed or were not sent.
    pub failed: u64,
    /// Failed requests by kind of error.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// First send to last finish, seconds.
    pub duration_s: Option<f64>,
    /// Time to first token.
    pub ttft: Option<Stats>,
    /// (E2E - TTFT) / (output tokens - 1).
    pub tpot: Option<Stats>,
    /// Gaps between successive chunks of all requests (vllm bench ITL).
    pub itl: Option<Stats>,
    /// End-to-end latency.
    pub e2e: Option<Stats>,
    /// Tokens and rates of finished requests over the wall time (as for a simulated run).
    #[serde(flatten)]
    pub throughput: Throughput,
    /// Prompt tokens the server reported as cached, over finished requests that reported it.
    pub cached_tokens: Option<u64>,
    /// `cached_tokens` / prompt tokens of the requests that reported it.
    pub cached_fraction: Option<f64>,
}

/// Aggregates `records` (from [`records`]) and the outcomes' gaps.
pub fn summarize(records: &[RequestRecord], slots: &[Slot]) -> LiveSummary {
    let fin: Vec<&RequestRecord> = records.iter().filter(|r| r.finished()).collect();
    let mut failed_by_reason = BTreeMap::new();
    for r in records.iter().filter(|r| !r.finished()) {
        let k = match &r.reject_reason {
            Some(Reason::Failed(e)) => error_kind(e),
            Some(r) => r.kind().to_string(),
            None => String::new(),
        };
        *failed_by_reason.entry(k).or_insert(0u64) += 1;
    }
    let duration_s = wall_s(records.iter());
    let input_tokens: u64 = fin.iter().map(|r| r.input_len as u64).sum();
    let output_tokens: u64 = fin.iter().map(|r| r.output_len as u64).sum();
    let all_gaps = records
        .iter()
        .zip(slots)
        .filter(|(r, _)| r.finished())
        .flat_map(|(_, s)| match s {
            Slot::Sent(o) => gaps(o),
            _ => Vec::new(),
        });
    let (mut cached, mut cached_of, mut any) = (0u64, 0u64, false);
    for (r, s) in records.iter().zip(slots) {
        if let (true, Slot::Sent(o)) = (r.finished(), s)
            && let Some(c) = o.cached_tokens
        {
            any = true;
            cached += c as u64;
            cached_of += r.input_len as u64;
        }
    }
    let stats = |f: fn(&RequestRecord) -> Option<f64>| Stats::of(fin.iter().filter_map(|r| f(r)));
    LiveSummary {
        requests_in: records.len() as u64,
        finished: fin.len() as u64,
        failed: (records.len() - fin.len()) as u64,
        failed_by_reason,
        duration_s,
        ttft: stats(|r| r.ttft_s),
        tpot: stats(|r| r.tpot_s),
        itl: Stats::of(all_gaps.map(secs)),
        e2e: stats(|r| r.e2e_s),
        throughput: Throughput::over(input_tokens, output_tokens, fin.len() as u64, duration_s),
        cached_tokens: any.then_some(cached),
        cached_fraction: (any && cached_of > 0).then(|| cached as f64 / cached_of as f64),
    }
}

/// The raw measurements of one request (`live_requests.jsonl`).
fn raw_line(q: &Request, slot: &Slot) -> Value {
    match slot {
        Slot::Sent(o) => json!({
            "id": q.id,
            "send_s": secs(o.send_ns),
            "ttft_s": o.chunk_ns.first().map(|t| secs(t.saturating_sub(o.send_ns))),
            "e2e_s": o.chunk_ns.last().map(|t| secs(t.saturating_sub(o.send_ns))),
            "chunks": o.chunk_ns.len(),
            "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.completion_tokens,
            "cached_tokens": o.cached_tokens,
            "itl_s": gaps(o).into_iter().map(secs).collect::<Vec<_>>(),
            "error": o.error,
        }),
        Slot::Abandoned => json!({"id": q.id, "error": ABANDONED}),
        Slot::Pending => json!({"id": q.id, "error": "unfinished: never sent"}),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path))
}

/// Asks the server for its first model's name.
pub fn first_model(agent: &ureq::Agent, base: &str) -> Result<String> {
    let text = client::get_text(agent, &format!("{base}/v1/models")).map_err(Error::Config)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{base}/v1/models: not JSON: {e}")))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Config(format!("{base}/v1/models lists no model; pass --model")))
}

/// Empties the server's prefix cache (vLLM's `POST /reset_prefix_cache`).
pub fn reset_prefix_cache(agent: &ureq::Agent, base: &str) -> Result<()> {
    let url = format!("{base}/reset_prefix_cache");
    let mut r = agent
        .post(&url)
        .send_empty()
        .map_err(|e| Error::Config(format!("POST {url}: {e}")))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    if status == 404 {
        return Err(Error::Config(format!(
            "POST {url}: not found (start vLLM with VLLM_SERVER_DEV_MODE=1)"
        )));
    }
    let ok = serde_json::from_str::<Value>(&text)
        .map(|v| v["success"] != Value::Bool(false))
        .unwrap_or(true);
    if status >= 400 || !ok {
        return Err(Error::Config(format!("POST {url}: HTTP {status}: {text}")));
    }
    Ok(())
}

/// Replays `trace` live with `opts` and writes the run's files into `dir` (see the module doc);
/// returns the contents of `summary.json`. Only setup failures (no server, no model, an
/// unwritable folder) are errors: requests that fail are recorded.
pub fn run_live(trace: &Trace, opts: &LiveOptions, dir: &Path, trace_name: &str) -> Result<Value> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let base = base_url(&opts.endpoint);
    let agent = client::agent(opts.timeout);
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => first_model(&agent, &base)?,
    };
    if opts.reset_prefix_cache {
        reset_prefix_cache(&agent, &base)?;
    }
    let scrape = |name: &str| -> Option<std::result::Result<String, String>> {
        opts.scrape_metrics.then(|| {
            let r = client::get_text(&agent, &format!("{base}/metrics"));
            if let Ok(t) = &r {
                let _ = write_text(&dir.join(name), t);
            }
            r
        })
    };
    let before = scrape("metrics_before.txt");
    let url = format!("{base}/v1/completions");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let slots = schedule(trace, |i, t0| {
        let body = request_body(&model, &trace.requests[i], &opts.tokens, opts.exact_lengths);
        client::stream_completion(&agent, &url, &body, t0, opts.timeout)
    });
    if opts.scrape_metrics {
        std::thread::sleep(opts.metrics_settle);
    }
    let after = scrape("metrics_after.txt");
    let recs = records(trace, &slots);
    crate::report::write_requests(&recs, &dir.join("requests.parquet"))?;
    let mut jsonl = String::new();
    for (q, s) in trace.requests.iter().zip(&slots) {
        jsonl.push_str(&raw_line(q, s).to_string());
        jsonl.push('\n');
    }
    let p = dir.join("live_requests.jsonl");
    write_text(&p, &jsonl)?;
    let summary = summarize(&recs, &slots);
    let server = match (before, after) {
        (Some(Ok(b)), Some(Ok(a))) => {
            let d = prom::deltas(&b, &a);
            json!({
                "metrics_scraped": true,
                "prefix_cache": prom::prefix_cache(&d),
                "counter_deltas": d,
                "cache_config": prom::info_labels(&b, "vllm:cache_config_info"),
            })
        }
        (Some(b), Some(a)) => json!({
            "metrics_scraped": false,
            "metrics_error": b.err().or(a.err()),
        }),
        _ => json!({"metrics_scraped": false}),
    };
    let out = json!({
        "config": {
            "mode": "live",
            "endpoint": base,
            "model": model,
            "trace": trace_name,
            "trace_source": trace.meta.source,
            "vocab": opts.tokens.vocab,
            "first_id": opts.tokens.first_id,
            "timeout_s": opts.timeout.as_secs_f64(),
            "exact_lengths": opts.exact_lengths,
            "reset_prefix_cache": opts.reset_prefix_cache,
            "started_unix_s": started,
        },
        "summary": summary,
        "server": server,
    });
    let p = dir.join("summary.json");
    let text = serde_json::to_string_pretty(&out)
        .map_err(|e| Error::Invariant(format!("serialising summary: {e}")))?;
    write_text(&p, &(text + "\n"))?;
    Ok(out)
}

#[cfg(test)]
mod tests;

//! One streamed completion over HTTP, timed the way `vllm bench` times it.
//!
//! The send time is taken just before the request is written. Every SSE event whose JSON has a
//! non-empty `choices` array is a token arrival (a server that coalesces several tokens into one
//! chunk gives one arrival for them, as vllm bench counts it): TTFT is the first arrival minus
//! the send, each later arrival adds an inter-token gap, and E2E is the last arrival minus the
//! send. Token counts come from the final `usage` chunk (`stream_options.include_usage`).
//! Timeouts, connection failures, HTTP errors, error events and streams that end without
//! `[DONE]` become the request's error; nothing here panics or aborts the run.

use super::sse::{Chunk, SseParser};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// What one request measured; times in nanoseconds since the replay started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// When the request was sent.
    pub send_ns: u64,
    /// When each chunk carrying choices arrived.
    pub chunk_ns: Vec<u64>,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u32>,
    /// Why the request failed; `None` when it completed.
    pub error: Option<String>,
}

impl Outcome {
    /// Output tokens: `usage.completion_tokens`, else the chunks counted.
    pub fn output_tokens(&self) -> u32 {
        self.completion_tokens.unwrap_or(self.chunk_ns.len() as u32)
    }
}

/// An HTTP agent for plain `http://` with a per-request time limit (connect to last byte).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections(1024)
        .max_idle_connections_per_host(1024)
        .build()
        .new_agent()
}

fn describe(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("timeout after {} s", timeout.as_secs_f64()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            format!("timeout after {} s", timeout.as_secs_f64())
        }
        ureq::Error::Io(io) => format!("connection: {io}"),
        other => format!("http: {other}"),
    }
}

fn since(t0: Instant) -> u64 {
    t0.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

/// GETs `url` and returns the body as text (at most 64 MiB).
pub fn get_text(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut r = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status >= 400 {
        return Err(format!("GET {url}: HTTP {status}: {}", snippet(&text)));
    }
    Ok(text)
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    let cut: String = s.chars().take(300).collect();
    if cut.len() < s.len() {
        cut + "..."
    } else {
        cut
    }
}

/// POSTs `body` (a streaming completion request) to `url` and times the stream; times are
/// relative to `t0`.
pub fn stream_completion(
    agent: &ureq::Agent,
    url: &str,
    body: &str,
    t0: Instant,
    timeout: Duration,
) -> Outcome {
    let mut o = Outcome {
        send_ns: since(t0),
        ..Outcome::default()
    };
    let resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "text/event-stream")
        .send(body);
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            o.error = Some(describe(&e, timeout));
            return o;
        }
    };
    let status = resp.status().as_u16();
    if status >= 400 {
        let text = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        o.error = Some(format!("HTTP {status}: {}", snippet(&text)));
        return o;
    }
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut parser = SseParser::default();
    let mut line = String::new();
    let mut done = false;
    let handle = |data: String, at: u64, o: &mut Outcome| -> bool {
        match Chunk::parse(&data) {
            Chunk::Done => return true,
            Chunk::Data { choices, usage } => {
                if choices {
                    o.chunk_ns.push(at);
                }
                if let Some(u) = usage {
                    o.prompt_tokens = u.prompt_tokens.or(o.prompt_tokens);
                    o.completion_tokens = u.completion_tokens.or(o.completion_tokens);
                    o.cached_tokens = u.cached_tokens.or(o.cached_tokens);
                }
            }
            Chunk::Error(m) => {
                o.error = Some(format!("server error in stream: {m}"));
                return true;
            }
            Chunk::Malformed(m) => {
                o.error = Some(format!("malformed stream chunk: {m}"));
                return true;
            }
        }
        false
    };
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                if let Some(d) = parser.finish() {
                    done = handle(d, since(t0), &mut o);
                }
                break;
            }
            Ok(_) => {
                if let Some(d) = parser.line(&line)
                    && handle(d, since(t0), &mut o)
                {
                    done = true;
                    // Read the rest (the chunked body's end) so the connection can be reused.
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                    break;
                }
            }
            Err(e) => {
                o.error = Some(
                    if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timeout")
                    {
                        format!("timeout after {} s", timeout.as_secs_f64())
                    } else {
                        format!("stream dropped: {e}")
                    },
                );
                return o;
            }
        }
    }
    if o.error.is_none() {
        if !done {
            o.error = Some("stream dropped: ended without [DONE]".into());
        } else if o.chunk_ns.is_empty() {
            o.error = Some("no tokens streamed".into());
        }
    }
    o
}

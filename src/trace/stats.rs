//! `kvreplay trace stats`: what a trace holds and how much of it a prefix cache could reuse.

use super::Trace;
use super::content::{PrefixTrie, reusable_tokens};
use crate::util::stats::Summary;
use serde::Serialize;
use std::fmt;

/// Fraction of all prompt tokens that an unlimited cache with `block`-token blocks could serve:
/// for each request in trace order, the longest prefix it shares with any earlier request,
/// counted in whole blocks, except that a prompt covered entirely counts whole.
pub fn reuse_fraction(trace: &Trace, block: u32) -> f64 {
    reuse_fractions(trace, &[block])[0]
}

/// [`reuse_fraction`] at several block sizes with one pass over the trace.
pub fn reuse_fractions(trace: &Trace, blocks: &[u32]) -> Vec<f64> {
    let mut trie = PrefixTrie::new();
    let mut reused = vec![0u64; blocks.len()];
    let mut total = 0u64;
    for r in &trace.requests {
        let shared = trie.match_and_insert(&r.prompt);
        for (acc, b) in reused.iter_mut().zip(blocks) {
            *acc += reusable_tokens(shared, r.input_len as u64, *b);
        }
        total += r.input_len as u64;
    }
    reused
        .into_iter()
        .map(|x| {
            if total == 0 {
                0.0
            } else {
                x as f64 / total as f64
            }
        })
        .collect()
}

/// What `trace stats` prints.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStats {
    /// Provenance of the trace.
    pub source: String,
    /// Number of requests.
    pub requests: usize,
    /// Whether closed-loop pools send some requests (then duration and rate are the simulation's).
    pub closed_loop: bool,
    /// Last minus first arrival, seconds (open-loop requests only).
    pub duration_s: f64,
    /// Open-loop requests per second over the duration.
    pub rate_per_s: f64,
    /// Prompt lengths.
    pub input: Option<Summary>,
    /// Output lengths.
    pub output: Option<Summary>,
    /// Total prompt tokens.
    pub input_tokens: u64,
    /// Total output tokens.
    pub output_tokens: u64,
    /// Distinct sessions.
    pub sessions: usize,
    /// (block size, reuse fraction) with an unlimited cache.
    pub reuse: Vec<(u32, f64)>,
}

/// Open-loop requests (those sent at their own arrival time) and the span of their arrivals, ns.
fn open_loop_span(trace: &Trace) -> (usize, u64) {
    let mut n = 0;
    let (mut first, mut last) = (u64::MAX, 0);
    for r in trace.requests.iter().filter(|r| r.pool.is_none()) {
        n += 1;
        first = first.min(r.arrival_ns);
        last = last.max(r.arrival_ns);
    }
    (n, last.saturating_sub(first))
}

/// The open-loop request rate of a trace, requests per second (`None` without two distinct
/// arrival times).
pub fn base_rate(trace: &Trace) -> Option<f64> {
    let (n, span) = open_loop_span(trace);
    (span > 0).then(|| n as f64 / (span as f64 / 1e9))
}

impl TraceStats {
    /// Computes the statistics, with reuse at each of `blocks`.
    pub fn of(trace: &Trace, blocks: &[u32]) -> TraceStats {
        let (open, duration_ns) = open_loop_span(trace);
        let duration_s = duration_ns as f64 / 1e9;
        let mut sessions: Vec<u64> = trace.requests.iter().filter_map(|r| r.session).collect();
        sessions.sort_unstable();
        sessions.dedup();
        TraceStats {
            source: trace.meta.source.clone(),
            requests: trace.requests.len(),
            closed_loop: trace.is_closed_loop(),
            duration_s,
            rate_per_s: if duration_s > 0.0 {
                open as f64 / duration_s
            } else {
                0.0
            },
            input: Summary::of(trace.requests.iter().map(|r| r.input_len as f64)),
            output: Summary::of(trace.requests.iter().map(|r| r.output_len as f64)),
            input_tokens: trace.requests.iter().map(|r| r.input_len as u64).sum(),
            output_tokens: trace.requests.iter().map(|r| r.output_len as u64).sum(),
            sessions: sessions.len(),
            reuse: blocks
                .iter()
                .copied()
                .zip(reuse_fractions(trace, blocks))
                .collect(),
        }
    }
}

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "source            {}", self.source)?;
        writeln!(f, "requests          {}", self.requests)?;
        if self.sessions > 0 {
            writeln!(f, "sessions          {}", self.sessions)?;
        }
        if self.closed_loop {
            writeln!(
                f,
                "arrivals          closed loop: duration and rate come from the simulation"
            )?;
        } else {
            writeln!(f, "duration          {:.3} s", self.duration_s)?;
            writeln!(f, "rate              {:.3} req/s", self.rate_per_s)?;
        }
        writeln!(
            f,
            "tokens            input {}  output {}",
            self.input_tokens, self.output_tokens
        )?;
        writeln!(f, "                  mean      p50       p99       max")?;
        for (name, s) in [
            ("input length", &self.input),
            ("output length", &self.output),
        ] {
            if let Some(s) = s {
                writeln!(
                    f,
                    "{name:<17} {:<9.1} {:<9.1} {:<9.1} {:.0}",
                    s.mean, s.p50, s.p99, s.max
                )?;
            }
        }
        writeln!(
            f,
            "reuse potential   (prompt tokens an unlimited prefix cache serves)"
        )?;
        for (b, x) in &self.reuse {
            writeln!(f, "  block {b:<6}    {:.1} %", x * 100.0)?;
        }
        Ok(())
    }
}

//! One record per request: what the simulation predicts for it, in seconds, beside what a live
//! run measured when the trace kept it.
//!
//! Every time is seconds as `f64` and never NaN: a quantity that is undefined for a request (a
//! rejected request has no TTFT, a one-token answer has no TPOT) is `None`.
//!
//! | field | definition |
//! |---|---|
//! | `arrival_s` | time the request was sent (trace clock); `None` if it was never sent |
//! | `queue_s` | first scheduled - sent |
//! | `ttft_s` | first token - sent |
//! | `tpot_s` | (last token - first token) / (output_len - 1); only when output_len > 1 |
//! | `itl_mean_s` | mean gap between successive tokens = sum of gaps / (output_len - 1); only when output_len > 1 (not llmperf's `inter_token_latency_s`, see [`super::summary`]) |
//! | `itl_max_s` | largest gap between successive tokens; only when output_len > 1 |
//! | `e2e_s` | last token - sent |
//! | `tokens_*` | prompt tokens by origin (GPU prefix cache, CPU, disk, remote, computed) when the request was first admitted; they sum to `input_len` for a finished request and are 0 for a rejected one |
//! | `preempted_*` | after a preemption, the tokens of its sequence looked up when admitted again (`queries`), and of them those found in the GPU prefix cache (`gpu_hits`) or supplied by the KV connector (`external_hits`), summed over its re-admissions (vLLM's `preempted_queries` and `preempted_hits`); 0 for a request never preempted |

use crate::engine::request::{Phase, RejectReason, ReqState};
use crate::sim::SimResult;
use crate::time::SimTime;
use crate::trace::Trace;
use serde::Serialize;
use std::fmt;

/// Whether the engine ran a request to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Generated all its tokens.
    Finished,
    /// Never simulated, or stopped before completing (see `reject_reason`).
    Rejected,
}

impl Status {
    /// `"finished"` or `"rejected"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Rejected => "rejected",
        }
    }
}

/// Why a request did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The simulator (or a live run's client pool) did not run it, for a reason it names.
    Rejected(RejectReason),
    /// A live run's request failed as its client saw it (an HTTP status, a timeout, a broken
    /// stream): the text the client reported.
    Failed(String),
}

impl Reason {
    /// What summaries count it by: the reject reason's kind, or a live failure's text.
    pub fn kind(&self) -> &str {
        match self {
            Reason::Rejected(r) => r.kind(),
            Reason::Failed(s) => s,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rejected(r) => r.fmt(f),
            Reason::Failed(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Reason {
    /// Reads back a written reason: one kvreplay's simulator writes, else a live failure.
    fn from(s: &str) -> Reason {
        s.parse()
            .map(Reason::Rejected)
            .unwrap_or_else(|_| Reason::Failed(s.to_string()))
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the simulation predicts for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// The trace's request id.
    pub id: u64,
    /// Barrier round within its pool (0 for open loop).
    pub round: u32,
    /// Closed-loop session.
    pub session: Option<u64>,
    /// Finished or rejected.
    pub status: Status,
    /// Why a rejected request did not run.
    pub reject_reason: Option<Reason>,
    /// Send time, seconds from the trace start.
    pub arrival_s: Option<f64>,
    /// First scheduled - sent.
    pub queue_s: Option<f64>,
    /// First token - sent.
    pub ttft_s: Option<f64>,
    /// (Last token - first token) / (output_len - 1), when output_len > 1.
    pub tpot_s: Option<f64>,
    /// Mean gap between successive tokens, when output_len > 1.
    pub itl_mean_s: Option<f64>,
    /// Largest gap between successive tokens, when output_len > 1.
    pub itl_max_s: Option<f64>,
    /// Last token - sent.
    pub e2e_s: Option<f64>,
    /// Prompt tokens.
    pub input_len: u32,
    /// Tokens to generate.
    pub output_len: u32,
    /// Prompt tokens found in the GPU prefix cache.
    pub tokens_gpu: u32,
    /// Prompt tokens loaded from the CPU tier.
    pub tokens_cpu: u32,
    /// Prompt tokens loaded from the disk tier.
    pub tokens_disk: u32,
    /// Prompt tokens loaded from the remote tier.
    pub tokens_remote: u32,
    /// Prompt tokens computed by the forward pass.
    pub tokens_computed: u32,
    /// Bytes loaded into the GPU from offload tiers.
    pub bytes_loaded: u64,
    /// Bytes stored from the GPU into offload tiers.
    pub bytes_stored: u64,
    /// Times the request was preempted.
    pub preemptions: u32,
    /// Tokens looked up at its admissions after a preemption.
    pub preempted_queries: u32,
    /// Of them, found in the GPU prefix cache.
    pub preempted_gpu_hits: u32,
    /// Of them, supplied by the KV connector.
    pub preempted_external_hits: u32,
    /// TTFT a live run measured, when the trace has it.
    pub measured_ttft_s: Option<f64>,
    /// End-to-end latency a live run measured, when the trace has it.
    pub measured_e2e_s: Option<f64>,
    /// The replica that served it, in a fleet (`None` for a single engine); its decoder when
    /// prefill and decode are disaggregated.
    pub replica: Option<u32>,
    /// The replica that ran its prefill, when it was disaggregated.
    pub prefill_replica: Option<u32>,
}

impl RequestRecord {
    /// Whether the request finished.
    pub fn finished(&self) -> bool {
        self.status == Status::Finished
    }

    /// llmperf's `inter_token_latency_s`: e2e / output tokens (finished requests with at least
    /// one output token).
    pub fn llmperf_itl_s(&self) -> Option<f64> {
        let e2e = self.e2e_s?;
        (self.output_len > 0).then(|| e2e / self.output_len as f64)
    }

    /// Tokens per second of this request's lifetime: output_len / e2e (llmperf
    /// `request_output_throughput_token_per_s`).
    pub fn output_throughput(&self) -> Option<f64> {
        let e2e = self.e2e_s?;
        (e2e > 0.0).then(|| self.output_len as f64 / e2e)
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn span(from: SimTime, to: Option<SimTime>) -> Option<f64> {
    to.map(|t| t.since(from).as_secs_f64())
}

/// Whether the request ever reached the engine. Requests abandoned by an early-stopping pool are
/// marked rejected without being sent.
fn was_sent(s: &ReqState) -> bool {
    match s.phase {
        Phase::Pending => false,
        Phase::Rejected => s.reject.is_none_or(|r| r.was_sent()),
        _ => true,
    }
}

/// One record per request of `trace`, in trace order.
pub fn records(trace: &Trace, result: &SimResult) -> Vec<RequestRecord> {
    trace
        .requests
        .iter()
        .zip(&result.reqs)
        .map(|(q, s)| {
            let finished = s.phase == Phase::Finished;
            let sent = was_sent(s);
            let at = s.arrival;
            // A completed simulation leaves every request finished or rejected with a reason.
            debug_assert!(finished || s.reject.is_some(), "{:?}", s.phase);
            let reject_reason = if finished {
                None
            } else {
                s.reject.map(Reason::Rejected)
            };
            let gaps = q.output_len.saturating_sub(1);
            let with_gaps = finished && gaps > 0;
            let o = if finished {
                s.origin
            } else {
                Default::default()
            };
            RequestRecord {
                id: q.id,
                round: q.round,
                session: q.session,
                status: if finished {
                    Status::Finished
                } else {
                    Status::Rejected
                },
                reject_reason,
                arrival_s: sent.then(|| at.as_secs_f64()),
                queue_s: if sent { span(at, s.scheduled) } else { None },
                ttft_s: if finished {
                    span(at, s.first_token)
                } else {
                    None
                },
                tpot_s: match (with_gaps, s.first_token, s.finish) {
                    (true, Some(f), Some(e)) => Some(e.since(f).as_secs_f64() / gaps as f64),
                    _ => None,
                },
                itl_mean_s: with_gaps.then(|| s.itl_sum.as_secs_f64() / gaps as f64),
                itl_max_s: with_gaps.then(|| s.itl_max.as_secs_f64()),
                e2e_s: if finished { span(at, s.finish) } else { None },
                input_len: q.input_len,
                output_len: q.output_len,
                tokens_gpu: o.gpu,
                tokens_cpu: o.cpu,
                tokens_disk: o.disk,
                tokens_remote: o.remote,
                tokens_computed: o.computed,
                bytes_loaded: s.bytes_loaded,
                bytes_stored: s.bytes_stored,
                preemptions: s.preemptions,
                preempted_queries: s.rehits.queries,
                preempted_gpu_hits: s.rehits.gpu,
                preempted_external_hits: s.rehits.external,
                measured_ttft_s: q.measured.ttft_ns.map(secs),
                measured_e2e_s: q.measured.e2e_ns.map(secs),
                replica: result.replica_of.get(s.idx as usize).copied(),
                prefill_replica: result
                    .prefill_of
                    .get(s.idx as usize)
                    .copied()
                    .filter(|p| *p != u32::MAX),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::mixed;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn records_times_of_finished_and_rejected_requests() {
        let (t, r) = mixed();
        let rec = records(&t, &r);
        assert_eq!(rec.len(), 4);
        // A: prefill [0,10] samples token 1, decode [10,20] token 2.
        let a = &rec[0];
        assert_eq!(a.status, Status::Finished);
        assert_eq!(a.arrival_s, Some(0.0));
        assert_eq!(a.queue_s, Some(0.0));
        assert!(close(a.ttft_s, 0.010));
        assert!(close(a.tpot_s, 0.010));
        assert!(close(a.itl_mean_s, 0.010));
        assert!(close(a.itl_max_s, 0.010));
        assert!(close(a.e2e_s, 0.020));
        assert_eq!((a.tokens_computed, a.tokens_gpu), (100, 0));
        // B waits for A: scheduled at 20 ms, token at 30 ms; one token has no TPOT.
        let b = &rec[1];
        assert!(close(b.queue_s, 0.020));
        assert!(close(b.ttft_s, 0.030));
        assert!(close(b.e2e_s, 0.030));
        assert_eq!((b.tpot_s, b.itl_mean_s, b.itl_max_s), (None, None, None));
        assert!(close(b.llmperf_itl_s(), 0.030));
        // C: 990 + 20 > 1000.
        let c = &rec[2];
        assert_eq!(c.status, Status::Rejected);
        assert!(matches!(
            c.reject_reason,
            Some(Reason::Rejected(RejectReason::ExceedsMaxModelLen { .. }))
        ));
        assert_eq!(c.arrival_s, Some(0.0));
        assert_eq!((c.ttft_s, c.e2e_s, c.queue_s), (None, None, None));
        assert_eq!(c.tokens_computed, 0);
        // D at 100 ms on an idle engine: 10 ms TTFT, then 2 decode steps.
        let d = &rec[3];
        assert!(close(d.arrival_s, 0.100));
        assert!(close(d.ttft_s, 0.010));
        assert!(close(d.tpot_s, 0.010));
        assert!(close(d.e2e_s, 0.030));
        assert!(close(d.measured_ttft_s, 0.012));
        assert!(close(d.measured_e2e_s, 0.035));
        assert_eq!(d.session, Some(9));
        assert_eq!(a.measured_ttft_s, None);
        assert_eq!(Status::Rejected.as_str(), "rejected");
    }
}

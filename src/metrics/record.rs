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
//! | `tokens_*` | prompt tokens by origin (GPU prefix cache, CPU, disk, remote, computed); they sum to `input_len` for a finished request and are 0 for a rejected one |

use crate::engine::request::{Phase, ReqState};
use crate::sim::SimResult;
use crate::trace::Trace;
use serde::Serialize;

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
    pub reject_reason: Option<String>,
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
    /// TTFT a live run measured, when the trace has it.
    pub measured_ttft_s: Option<f64>,
    /// End-to-end latency a live run measured, when the trace has it.
    pub measured_e2e_s: Option<f64>,
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

fn span(from: u64, to: Option<u64>) -> Option<f64> {
    to.map(|t| secs(t.saturating_sub(from)))
}

/// Whether the request ever reached the engine. Requests abandoned by an early-stopping pool are
/// marked rejected without being sent.
fn was_sent(s: &ReqState) -> bool {
    match s.phase {
        Phase::Pending => false,
        Phase::Rejected => !s
            .reject
            .as_deref()
            .is_some_and(|r| r.starts_with("abandoned")),
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
            let at = s.arrival_ns;
            let reject_reason = if finished {
                None
            } else {
                Some(s.reject.clone().unwrap_or_else(|| {
                    format!("unfinished: the simulation ended in phase {:?}", s.phase)
                }))
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
                arrival_s: sent.then(|| secs(at)),
                queue_s: if sent { span(at, s.scheduled_ns) } else { None },
                ttft_s: if finished {
                    span(at, s.first_token_ns)
                } else {
                    None
                },
                tpot_s: match (with_gaps, s.first_token_ns, s.finish_ns) {
                    (true, Some(f), Some(e)) => Some(secs(e.saturating_sub(f)) / gaps as f64),
                    _ => None,
                },
                itl_mean_s: with_gaps.then(|| secs(s.itl_sum_ns) / gaps as f64),
                itl_max_s: with_gaps.then(|| secs(s.itl_max_ns)),
                e2e_s: if finished {
                    span(at, s.finish_ns)
                } else {
                    None
                },
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
                measured_ttft_s: q.measured.ttft_ns.map(secs),
                measured_e2e_s: q.measured.e2e_ns.map(secs),
            }
        })
        .collect()
}

/// Small simulations shared by the metrics and report tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::cost::{Fitted, GpuProfile, StepModel, TransferProfile};
    use crate::engine::{EngineConfig, EngineFlags};
    use crate::model::lookup;
    use crate::sim::{SimResult, SimSetup, simulate};
    use crate::tiers::OffloadConfig;
    use crate::trace::import::output_content;
    use crate::trace::{Measured, Pool, Request, Run, Trace, TraceMeta};

    pub const MS: u64 = 1_000_000;

    pub fn req(id: u64, at_ms: u64, prompt: Vec<Run>, out: u32) -> Request {
        Request {
            id,
            arrival_ns: at_ms * MS,
            input_len: prompt.iter().map(|r| r.len).sum(),
            output_len: out,
            prompt,
            output_content: output_content(id),
            session: None,
            pool: None,
            round: 0,
            think_ns: 0,
            measured: Measured::default(),
        }
    }

    pub fn trace(requests: Vec<Request>) -> Trace {
        Trace {
            meta: TraceMeta::new("test"),
            requests,
        }
    }

    /// A pool of `clients` sending `requests` (rounds as set).
    pub fn pooled(mut requests: Vec<Request>, clients: u32) -> Trace {
        for r in &mut requests {
            r.pool = Some(0);
        }
        let mut t = trace(requests);
        t.meta.pools.push(Pool {
            id: 0,
            clients,
            sessions_per_client: 1,
            early_stop: false,
        });
        t
    }

    /// Llama-3.1-8B on an H100 with every step taking exactly 10 ms.
    pub fn setup(flags: EngineFlags, offload: OffloadConfig) -> SimSetup {
        let card = lookup("meta-llama/Llama-3.1-8B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let engine = EngineConfig::resolve(&card, &gpu, &flags).unwrap();
        let mut step_model = StepModel::roofline(&card, &gpu, 1);
        step_model.fitted = Some(Fitted {
            c0: 0.010,
            c_prefill: 0.0,
            c_decode: 0.0,
            c_attn: 0.0,
            c_ctx: 0.0,
        });
        let mut transfer = TransferProfile::spec_defaults(&gpu);
        transfer.chunk_overhead_us = 0.0;
        SimSetup {
            engine,
            offload,
            step_model,
            transfer,
            layers: card.layers,
            sample_interval_ns: 10 * MS,
            reference_mode: false,
        }
    }

    pub fn run(t: &Trace, flags: EngineFlags) -> SimResult {
        simulate(t, &setup(flags, OffloadConfig::None))
    }

    /// One running sequence at a time, so that requests queue behind each other.
    pub fn serial() -> EngineFlags {
        EngineFlags {
            max_num_seqs: Some(1),
            ..Default::default()
        }
    }

    /// Open loop, one at a time: A (out 2) and B (out 1) at 0 ms, C too long for
    /// max_model_len 1000, D (out 3) at 100 ms with a measured TTFT and e2e.
    pub fn mixed() -> (Trace, SimResult) {
        let mut reqs = vec![
            req(0, 0, vec![Run::new(1, 0, 100)], 2),
            req(1, 0, vec![Run::new(2, 0, 100)], 1),
            req(2, 0, vec![Run::new(3, 0, 990)], 20),
            req(3, 100, vec![Run::new(4, 0, 100)], 3),
        ];
        reqs[3].measured.ttft_ns = Some(12 * MS);
        reqs[3].measured.e2e_ns = Some(35 * MS);
        reqs[3].session = Some(9);
        let t = trace(reqs);
        let f = EngineFlags {
            max_model_len: Some(1000),
            ..serial()
        };
        let r = run(&t, f);
        (t, r)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
        assert!(
            c.reject_reason
                .as_deref()
                .unwrap()
                .contains("max_model_len")
        );
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

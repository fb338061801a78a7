//! The discrete-event loop: requests arrive (open loop) or are sent by clients (closed loop),
//! the engine steps, completions release clients.
//!
//! # Ordering
//! Time is integer nanoseconds ([`SimTime`]). Events at the same time are handled in phase
//! order, then in the order they were scheduled (FIFO): step completions (requests finish,
//! blocks are freed), client wake-ups, request sends, requests reaching the scheduler,
//! asynchronous-load wake-ups. Only after every event at a time has been handled does an idle
//! engine start its next step, so a request sent at time t is seen by a step starting at t.
//! Scheduling an event before the current time is an [`Error::Invariant`]; running out of
//! events with requests unfinished is an [`Error::Deadlock`]. Tests pin both.

pub mod clients;

use crate::connector::{ConnectorStats, KvConnector, WithConnector, with_connector};
use crate::cost::{StepModel, TransferProfile};
use crate::engine::request::{Phase, RejectReason, ReqState};
use crate::engine::scheduler::EngineStats;
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::metrics::histogram::LogHistogram;
use crate::tiers::OffloadConfig;
use crate::time::{SimDuration, SimTime};
use crate::trace::Trace;
use clients::{Next, PoolState};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// Everything a simulation needs besides the trace.
#[derive(Debug, Clone)]
pub struct SimSetup {
    /// Engine settings.
    pub engine: EngineConfig,
    /// Offload connector.
    pub offload: OffloadConfig,
    /// Step-time model.
    pub step_model: StepModel,
    /// Transfer costs.
    pub transfer: TransferProfile,
    /// Model layers (for layer-wise transfer overlap).
    pub layers: u32,
    /// Interval between GPU KV usage samples.
    pub sample_interval: SimDuration,
    /// Run without the engine's exactness-preserving shortcuts (for equivalence tests).
    pub reference_mode: bool,
    /// The server's own time per request before the scheduler sees it (HTTP, tokenization).
    pub request_overhead: SimDuration,
}

/// A GPU KV usage sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KvSample {
    /// Simulated time, seconds.
    pub t_s: f64,
    /// Fraction of GPU blocks held by running requests.
    pub used: f64,
    /// Running requests.
    pub running: u32,
    /// Waiting requests.
    pub waiting: u32,
}

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct SimResult {
    /// Per-request state and record, indexed like the trace.
    pub reqs: Vec<ReqState>,
    /// Engine counters.
    pub stats: EngineStats,
    /// Inter-token gaps of all requests, ns.
    pub itl_hist: LogHistogram,
    /// GPU KV usage over time.
    pub kv_samples: Vec<KvSample>,
    /// Prefix-cache evictions on the GPU.
    pub gpu_evictions: u64,
    /// The KV connector's counters (`None` without one).
    pub connector_stats: Option<ConnectorStats>,
    /// Time the first request was sent.
    pub start: SimTime,
    /// Time the last request finished.
    pub end: SimTime,
    /// GPU blocks.
    pub num_gpu_blocks: u32,
}

/// What happens at an instant. Events at the same instant are handled in the order of
/// [`Event::phase`], then in the order they were scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The engine's step ends: its finished requests are complete, the engine is idle.
    StepEnd,
    /// A closed-loop client may send its next request.
    ClientReady { pool: u32, client: u32 },
    /// A request is sent (its TTFT counts from here).
    Send { req: u32 },
    /// A sent request reaches the scheduler after the server's per-request overhead.
    Submit { req: u32 },
    /// An asynchronous load completes (the engine looks at its waiting queue again).
    Wake,
}

impl Event {
    /// The same-time order: completions free blocks and clients before anything new is sent,
    /// sends before the scheduler sees them, wake-ups last.
    fn phase(&self) -> u8 {
        match self {
            Event::StepEnd => 0,
            Event::ClientReady { .. } => 1,
            Event::Send { .. } => 2,
            Event::Submit { .. } => 3,
            Event::Wake => 4,
        }
    }
}

/// The event queue: by time, then phase, then scheduling order. It refuses events in the past.
struct Queue {
    heap: BinaryHeap<Reverse<(SimTime, u8, u64, Event)>>,
    seq: u64,
    now: SimTime,
}

impl Queue {
    fn push(&mut self, t: SimTime, e: Event) -> Result<()> {
        if t < self.now {
            return Err(Error::Invariant(format!(
                "{e:?} scheduled at {t}, before the current time {}",
                self.now
            )));
        }
        self.seq += 1;
        self.heap.push(Reverse((t, e.phase(), self.seq, e)));
        Ok(())
    }
    fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }
    fn pop(&mut self) -> Option<(SimTime, Event)> {
        let (t, e) = self.heap.pop().map(|Reverse((t, _, _, e))| (t, e))?;
        self.now = t;
        Some((t, e))
    }
}

/// Replays `trace` through one engine; deterministic for a given trace and setup.
pub fn simulate(trace: &Trace, setup: &SimSetup) -> Result<SimResult> {
    simulate_shared(trace, setup, &TracePrep::new(trace, None))
}

/// What depends on the trace alone, computed once by callers that simulate one trace many
/// times (sweeps): which prefixes requests share, and optionally every request's block hashes
/// at one block size.
#[derive(Debug)]
pub struct TracePrep {
    /// Per request, see `content::shareable_prefixes`.
    pub shareable: Vec<u32>,
    /// Per request, its block hashes at the block size given (used when the engine's matches).
    pub block_hashes: Option<(u32, Vec<Arc<Vec<u64>>>)>,
}

impl TracePrep {
    /// Most hashes kept beforehand (8 bytes each): past this, engines compute their own.
    pub const MAX_HASHES: u64 = 1 << 25;

    /// Shared prefixes of `trace`, and its block hashes at `block_size` when given and within
    /// [`TracePrep::MAX_HASHES`].
    pub fn new(trace: &Trace, block_size: Option<u32>) -> Self {
        let block_hashes = block_size.filter(|bs| *bs > 0).and_then(|bs| {
            let total: u64 = trace
                .requests
                .iter()
                .map(|r| (r.input_len as u64 + r.output_len as u64) / bs as u64)
                .sum();
            (total <= Self::MAX_HASHES).then(|| {
                let chains = trace
                    .requests
                    .iter()
                    .map(|r| Arc::new(crate::trace::content::sequence_hashes(r, bs)))
                    .collect();
                (bs, chains)
            })
        });
        TracePrep {
            shareable: crate::trace::content::shareable_prefixes(trace),
            block_hashes,
        }
    }
}

/// [`simulate`] with what depends on the trace alone computed beforehand.
pub fn simulate_shared(trace: &Trace, setup: &SimSetup, prep: &TracePrep) -> Result<SimResult> {
    /// The replay, for whichever connector the setup describes.
    struct Replay<'a> {
        trace: &'a Trace,
        setup: &'a SimSetup,
        prep: &'a TracePrep,
    }
    impl WithConnector for Replay<'_> {
        type Output = Result<SimResult>;
        fn with<C: KvConnector + 'static>(self, connector: C) -> Result<SimResult> {
            let Replay { trace, setup, prep } = self;
            if setup.reference_mode {
                replay::<crate::engine::blocks::BlockPool, C>(trace, setup, prep, connector)
            } else {
                replay::<crate::engine::segments::SegmentPool, C>(trace, setup, prep, connector)
            }
        }
    }
    let job = Replay { trace, setup, prep };
    with_connector(&setup.offload, &setup.engine, &setup.transfer, job)
}

/// The replay on block pool `P` in front of `connector`.
fn replay<P: crate::engine::pool::KvPool, C: KvConnector>(
    trace: &Trace,
    setup: &SimSetup,
    prep: &TracePrep,
    connector: C,
) -> Result<SimResult> {
    let mut engine = Engine::<P, C>::new(
        setup.engine.clone(),
        trace,
        connector,
        setup.step_model.clone(),
        setup.layers,
    );
    engine.set_reference_mode(setup.reference_mode);
    engine.set_shareable(prep.shareable.clone());
    if let Some((bs, chains)) = &prep.block_hashes
        && *bs == setup.engine.block_size
    {
        engine.set_block_hashes(chains);
    }
    let (mut pools, where_) = PoolState::build(trace);
    let mut q = Queue {
        heap: BinaryHeap::new(),
        seq: 0,
        now: SimTime::ZERO,
    };
    for (i, r) in trace.requests.iter().enumerate() {
        if r.pool.is_none() {
            q.push(
                SimTime::from_ns(r.arrival_ns),
                Event::Send { req: i as u32 },
            )?;
        }
    }
    for (p, ps) in pools.iter().enumerate() {
        for c in 0..ps.clients.len() {
            let (pool, client) = (p as u32, c as u32);
            q.push(SimTime::ZERO, Event::ClientReady { pool, client })?;
        }
    }
    // Which client sent a closed-loop request.
    let mut sender: HashMap<u32, u32> = HashMap::new();
    let mut busy = false;
    let mut now = SimTime::ZERO;
    let mut start: Option<SimTime> = None;
    let mut end = SimTime::ZERO;
    let mut samples = Vec::new();
    let mut next_sample = SimTime::ZERO;
    let interval = setup.sample_interval.max(SimDuration::from_ns(1));

    // A request completed (finished or rejected) at `at`: its client, if any, goes on.
    let complete = |idx: u32,
                    at: SimTime,
                    pools: &mut Vec<PoolState>,
                    sender: &mut HashMap<u32, u32>,
                    q: &mut Queue|
     -> Result<()> {
        let Some(&(p, u)) = where_.get(&idx) else {
            return Ok(()); // open loop
        };
        let c = sender.remove(&idx).ok_or_else(|| {
            Error::Invariant(format!(
                "closed-loop request {idx} completed, but no client sent it"
            ))
        })? as usize;
        let req = &trace.requests[idx as usize];
        let wake = pools[p].completed(c, u, req.round);
        let think = SimDuration::from_ns(req.think_ns);
        let pool = p as u32;
        q.push(
            at + think,
            Event::ClientReady {
                pool,
                client: c as u32,
            },
        )?;
        for w in wake {
            q.push(
                at,
                Event::ClientReady {
                    pool,
                    client: w as u32,
                },
            )?;
        }
        Ok(())
    };

    while let Some(t) = q.peek_time() {
        now = t;
        while q.peek_time() == Some(t) {
            let (_, e) = q.pop().expect("peeked");
            match e {
                Event::StepEnd => {
                    busy = false;
                }
                Event::Wake => {}
                Event::Send { req } => {
                    start.get_or_insert(t);
                    engine.mark_sent(req, t);
                    if setup.request_overhead == SimDuration::ZERO {
                        if !engine.submit(req) {
                            complete(req, t, &mut pools, &mut sender, &mut q)?;
                        }
                    } else {
                        q.push(t + setup.request_overhead, Event::Submit { req })?;
                    }
                }
                Event::Submit { req } => {
                    if !engine.submit(req) {
                        complete(req, t, &mut pools, &mut sender, &mut q)?;
                    }
                }
                Event::ClientReady { pool, client } => {
                    let (next, abandoned) = pools[pool as usize].next_for(client as usize);
                    for r in abandoned {
                        let st = &mut engine.reqs[r as usize];
                        st.phase = Phase::Rejected;
                        st.reject = Some(RejectReason::Abandoned);
                    }
                    if let Next::Send(req) = next {
                        sender.insert(req, client);
                        let at = t.max(SimTime::from_ns(trace.requests[req as usize].arrival_ns));
                        q.push(at, Event::Send { req })?;
                    }
                }
            }
        }
        // A decode-only stretch may run up to the next event or usage sample.
        let horizon = q.peek_time().unwrap_or(SimTime::MAX).min(next_sample);
        if !busy
            && engine.has_work()
            && let Some(out) = engine.step(now, horizon)
        {
            busy = true;
            for w in &out.wakeups {
                q.push(*w, Event::Wake)?;
            }
            for &idx in &out.finished {
                end = end.max(out.end);
                complete(idx, out.end, &mut pools, &mut sender, &mut q)?;
            }
            if next_sample <= now {
                let sample = |at: SimTime| KvSample {
                    t_s: at.as_secs_f64(),
                    used: engine.used_blocks() as f64 / setup.engine.num_gpu_blocks as f64,
                    running: engine.num_running() as u32,
                    waiting: engine.num_waiting() as u32,
                };
                samples.push(sample(next_sample));
                // Every further sample due by now holds the same values: after an idle gap only
                // the last of them is kept, so that a gap of years costs two samples, not one
                // per interval.
                let more = (now - next_sample).as_ns() / interval.as_ns();
                if more > 0 {
                    samples.push(sample(next_sample + interval.times(more)));
                }
                next_sample += interval.times(more + 1);
            }
            q.push(out.end, Event::StepEnd)?;
        }
    }
    let unfinished = engine
        .reqs
        .iter()
        .filter(|r| !matches!(r.phase, Phase::Finished | Phase::Rejected))
        .count();
    if unfinished > 0 {
        return Err(Error::Deadlock {
            unfinished,
            at: now,
            state: engine.stall_state(),
        });
    }
    Ok(SimResult {
        gpu_evictions: engine.gpu_evictions(),
        stats: engine.stats.clone(),
        itl_hist: engine.itl_hist.clone(),
        connector_stats: engine.connector().stats(),
        reqs: engine.reqs,
        kv_samples: samples,
        start: start.unwrap_or(SimTime::ZERO),
        end,
        num_gpu_blocks: setup.engine.num_gpu_blocks,
    })
}

#[cfg(test)]
mod tests;

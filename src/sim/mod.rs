//! The discrete-event loop: requests arrive (open loop) or are sent by clients (closed loop),
//! the engine steps, completions release clients.
//!
//! # Ordering
//! Time is integer nanoseconds. Events at the same time are handled in phase order, then in the
//! order they were scheduled: step completions (requests finish, blocks are freed), client
//! wake-ups, request sends, requests reaching the scheduler. Only after every event at a time has been handled does an idle engine
//! start its next step, so a request sent at time t is seen by a step starting at t.

pub mod clients;

use crate::cost::{StepModel, TransferProfile};
use crate::engine::request::{Phase, ReqState};
use crate::engine::scheduler::EngineStats;
use crate::engine::{Engine, EngineConfig};
use crate::metrics::histogram::LogHistogram;
use crate::tiers::OffloadConfig;
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
    pub sample_interval_ns: u64,
    /// Run without the engine's exactness-preserving shortcuts (for equivalence tests).
    pub reference_mode: bool,
    /// The server's own time per request before the scheduler sees it (HTTP, tokenization).
    pub request_overhead_ns: u64,
}

/// A GPU KV usage sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
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
    /// Inter-token gaps of all requests.
    pub itl_hist: LogHistogram,
    /// GPU KV usage over time.
    pub kv_samples: Vec<KvSample>,
    /// Prefix-cache evictions on the GPU.
    pub gpu_evictions: u64,
    /// Offload counters, as JSON (tier-specific).
    pub offload_stats: serde_json::Value,
    /// Time the first request was sent.
    pub start_ns: u64,
    /// Time the last request finished.
    pub end_ns: u64,
    /// GPU blocks.
    pub num_gpu_blocks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    StepEnd,
    ClientReady { pool: u32, client: u32 },
    Send { req: u32 },
    Submit { req: u32 },
    Wake,
}

fn phase(e: &Event) -> u8 {
    match e {
        Event::StepEnd => 0,
        Event::ClientReady { .. } => 1,
        Event::Send { .. } => 2,
        Event::Submit { .. } => 3,
        Event::Wake => 4,
    }
}

struct Queue {
    heap: BinaryHeap<Reverse<(u64, u8, u64, Event)>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.heap.push(Reverse((t, phase(&e), self.seq, e)));
    }
    fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }
    fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|Reverse((t, _, _, e))| (t, e))
    }
}

/// Replays `trace` through one engine; deterministic for a given trace and setup.
pub fn simulate(trace: &Trace, setup: &SimSetup) -> SimResult {
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
pub fn simulate_shared(trace: &Trace, setup: &SimSetup, prep: &TracePrep) -> SimResult {
    if setup.reference_mode {
        replay::<crate::engine::blocks::BlockPool>(trace, setup, prep)
    } else {
        replay::<crate::engine::segments::SegmentPool>(trace, setup, prep)
    }
}

/// The replay on block pool `P`.
fn replay<P: crate::engine::pool::KvPool>(
    trace: &Trace,
    setup: &SimSetup,
    prep: &TracePrep,
) -> SimResult {
    let mut engine = Engine::<P>::new(
        setup.engine.clone(),
        trace,
        &setup.offload,
        setup.step_model.clone(),
        setup.transfer.clone(),
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
    };
    for (i, r) in trace.requests.iter().enumerate() {
        if r.pool.is_none() {
            q.push(r.arrival_ns, Event::Send { req: i as u32 });
        }
    }
    for (p, ps) in pools.iter().enumerate() {
        for c in 0..ps.clients.len() {
            q.push(
                0,
                Event::ClientReady {
                    pool: p as u32,
                    client: c as u32,
                },
            );
        }
    }
    // Which client sent a closed-loop request.
    let mut sender: HashMap<u32, u32> = HashMap::new();
    let mut busy = false;
    let mut now = 0u64;
    let mut start_ns: Option<u64> = None;
    let mut end_ns = 0u64;
    let mut samples = Vec::new();
    let mut next_sample = 0u64;
    let interval = setup.sample_interval_ns.max(1);

    let complete = |idx: u32,
                    at: u64,
                    pools: &mut Vec<PoolState>,
                    sender: &mut HashMap<u32, u32>,
                    q: &mut Queue| {
        if let Some(&(p, u)) = where_.get(&idx) {
            let c = sender.remove(&idx).unwrap_or(0) as usize;
            let round = trace.requests[idx as usize].round;
            let wake = pools[p].completed(c, u, round);
            let think = trace.requests[idx as usize].think_ns;
            q.push(
                at + think,
                Event::ClientReady {
                    pool: p as u32,
                    client: c as u32,
                },
            );
            for w in wake {
                q.push(
                    at,
                    Event::ClientReady {
                        pool: p as u32,
                        client: w as u32,
                    },
                );
            }
        }
    };

    loop {
        let Some(t) = q.peek_time() else {
            if !busy && engine.has_work() {
                // Only loading requests remain and no wake-up is queued: cannot happen, since a
                // load always schedules its wake-up.
                debug_assert!(false, "engine has work but nothing is scheduled");
            }
            break;
        };
        now = t;
        while q.peek_time() == Some(t) {
            let (_, e) = q.pop().expect("peeked");
            match e {
                Event::StepEnd => {
                    busy = false;
                }
                Event::Wake => {}
                Event::Send { req } => {
                    start_ns.get_or_insert(t);
                    engine.mark_sent(req, t);
                    if setup.request_overhead_ns == 0 {
                        if !engine.submit(req) {
                            complete(req, t, &mut pools, &mut sender, &mut q);
                        }
                    } else {
                        q.push(t + setup.request_overhead_ns, Event::Submit { req });
                    }
                }
                Event::Submit { req } => {
                    if !engine.submit(req) {
                        complete(req, t, &mut pools, &mut sender, &mut q);
                    }
                }
                Event::ClientReady { pool, client } => {
                    let (next, abandoned) = pools[pool as usize].next_for(client as usize);
                    for r in abandoned {
                        let st = &mut engine.reqs[r as usize];
                        st.phase = Phase::Rejected;
                        st.reject = Some(
                            "abandoned: the client pool stopped early (vLLM multi-turn early stop)"
                                .into(),
                        );
                    }
                    if let Next::Send(req) = next {
                        sender.insert(req, client);
                        let at = t.max(trace.requests[req as usize].arrival_ns);
                        q.push(at, Event::Send { req });
                    }
                }
            }
        }
        // A decode-only stretch may run up to the next event or usage sample.
        let horizon = q.peek_time().unwrap_or(u64::MAX).min(next_sample);
        if !busy
            && engine.has_work()
            && let Some(out) = engine.step(now, horizon)
        {
            busy = true;
            for w in &out.wakeups {
                q.push(*w, Event::Wake);
            }
            for &idx in &out.finished {
                end_ns = end_ns.max(out.end_ns);
                complete(idx, out.end_ns, &mut pools, &mut sender, &mut q);
            }
            while next_sample <= now {
                samples.push(KvSample {
                    t_s: next_sample as f64 / 1e9,
                    used: engine.used_blocks() as f64 / setup.engine.num_gpu_blocks as f64,
                    running: engine.num_running() as u32,
                    waiting: engine.num_waiting() as u32,
                });
                next_sample += interval;
            }
            q.push(out.end_ns, Event::StepEnd);
        }
    }
    let _ = now;
    let offload_stats = match &engine.offload {
        crate::engine::scheduler::Offload::None => serde_json::Value::Null,
        crate::engine::scheduler::Offload::LmCache(l) => {
            let (c, d, r) = l.evictions();
            serde_json::json!({"kind": "lmcache", "counters": l.stats, "evictions": {"cpu": c, "disk": d, "remote": r}})
        }
        crate::engine::scheduler::Offload::Native(n) => {
            serde_json::json!({"kind": "native", "stores": n.stores, "loads": n.loads, "evictions": n.evictions()})
        }
    };
    SimResult {
        gpu_evictions: engine.gpu_evictions(),
        stats: engine.stats.clone(),
        itl_hist: engine.itl_hist.clone(),
        reqs: engine.reqs,
        kv_samples: samples,
        offload_stats,
        start_ns: start_ns.unwrap_or(0),
        end_ns,
        num_gpu_blocks: setup.engine.num_gpu_blocks,
    }
}

#[cfg(test)]
mod tests;

//! The discrete-event loop: requests arrive (open loop) or are sent by clients (closed loop),
//! the engine steps, completions release clients.
//!
//! # Ordering
//! Time is integer nanoseconds ([`SimTime`]). Events at the same time are handled in phase
//! order, then in the order they were scheduled (FIFO): step completions (requests finish,
//! blocks are freed) and the due checks of steps waiting for a shared store's bytes, client
//! wake-ups, request sends, requests reaching the scheduler, asynchronous-load wake-ups. Only
//! after every event at a time has been handled does an idle engine start its next step (and a
//! waiting step whose bytes are through its forward pass), in replica order, so a request sent
//! at time t is seen by a step starting at t.
//! Scheduling an event before the current time is an [`Error::Invariant`]; running out of
//! events with requests unfinished is an [`Error::Deadlock`]. Tests pin both.

pub mod clients;

use crate::connector::pd::{Arrivals, PdConnector};
use crate::connector::{
    ConnectorStats, KvConnector, PoolConnectors, PoolOffload, WithConnector, with_connector,
};
use crate::cost::shared_link::SharedLink;
use crate::cost::{StepModel, TransferProfile};
use crate::engine::pool::KvPool;
use crate::engine::request::{Phase, RejectReason, ReqState};
use crate::engine::scheduler::EngineStats;
use crate::engine::step_log::StepLog;
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::fleet::FleetConfig;
use crate::fleet::kv_events::EventIndex;
use crate::fleet::pd::FirstToken;
use crate::fleet::router::{Query, Replicas, Router};
use crate::fleet::signals::{Load, LoadSignals};
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
    /// Replicas of this engine and how requests are routed to them (one replica: a single
    /// engine).
    pub fleet: FleetConfig,
    /// A heterogeneous fleet's pools, replicas numbered pool by pool (empty: every replica
    /// is the engine above).
    pub pools: Vec<PoolSetup>,
}

/// One pool of a heterogeneous fleet: replicas alike in GPU, engine settings, tiers and costs.
#[derive(Debug, Clone)]
pub struct PoolSetup {
    /// How it was described (its keys), for outputs.
    pub label: String,
    /// Replicas in it.
    pub count: u32,
    /// Their engine settings.
    pub engine: EngineConfig,
    /// Their offload connector.
    pub offload: OffloadConfig,
    /// Their step-time model.
    pub step_model: StepModel,
    /// Their transfer costs.
    pub transfer: TransferProfile,
    /// Their model's layers.
    pub layers: u32,
    /// Where their GPU profile's figures come from.
    pub gpu_provenance: String,
}

impl SimSetup {
    /// Replica `r`'s pool, in a heterogeneous fleet.
    fn pool_of(&self, r: usize) -> Option<u32> {
        crate::fleet::pool_of(self.pools.iter().map(|p| p.count), r).map(|i| i as u32)
    }

    /// Replica `r`'s engine settings, step model and layers (its pool's, or the setup's).
    fn replica_spec(&self, r: usize) -> (&EngineConfig, &StepModel, u32) {
        match self.pool_of(r) {
            Some(i) => {
                let p = &self.pools[i as usize];
                (&p.engine, &p.step_model, p.layers)
            }
            None => (&self.engine, &self.step_model, self.layers),
        }
    }
}

/// A GPU KV usage sample, taken when a step starts at or after a multiple of the sample
/// interval. The instants with no step between them (an idle gap, one long step) see the same
/// state and are written as the first and the last of them, so a run's samples are bounded by
/// its steps whatever its timestamps.
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
    /// GPU blocks (of all replicas).
    pub num_gpu_blocks: u32,
    /// Per request (by trace index), the replica that served it (its decoder, when prefill and
    /// decode are disaggregated).
    pub replica_of: Vec<u32>,
    /// Per request, the prefill replica of a disaggregated request (`u32::MAX`: none); empty
    /// unless prefill and decode are disaggregated.
    pub prefill_of: Vec<u32>,
    /// Each replica's own results, when there is more than one (the fields above are then the
    /// fleet's: counters added up, usage samples per replica only).
    pub replicas: Vec<ReplicaResult>,
    /// A heterogeneous fleet's pools (their labels), replicas numbered pool by pool.
    pub pools: Vec<String>,
    /// Per replica, its steps and transfers, when recorded ([`simulate_recorded`]; empty
    /// otherwise).
    pub step_logs: Vec<StepLog>,
}

/// One replica's results in a fleet.
#[derive(Debug, Clone)]
pub struct ReplicaResult {
    /// Engine counters.
    pub stats: EngineStats,
    /// GPU KV usage over time.
    pub kv_samples: Vec<KvSample>,
    /// Prefix-cache evictions on its GPU.
    pub gpu_evictions: u64,
    /// Its connector's counters.
    pub connector_stats: Option<ConnectorStats>,
    /// Its GPU blocks.
    pub num_gpu_blocks: u32,
    /// Its inter-token gaps.
    pub itl_hist: LogHistogram,
    /// Its pool, in a heterogeneous fleet.
    pub pool: Option<u32>,
}

/// What happens at an instant. Events at the same instant are handled in the order of
/// [`Event::phase`], then in the order they were scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A replica's step ends: its finished requests are complete, the replica is idle.
    StepEnd { replica: u32 },
    /// The data a replica's step waits for through the shared store is projected to be
    /// through: the step runs its forward pass, or waits longer (`Engine::settle`).
    Settle { replica: u32 },
    /// A closed-loop client may send its next request.
    ClientReady { pool: u32, client: u32 },
    /// A request is sent (its TTFT counts from here) and routed.
    Send { req: u32 },
    /// A sent request reaches its replica's scheduler after the server's per-request overhead.
    Submit { req: u32, replica: u32 },
    /// An asynchronous load completes (the replica looks at its waiting queue again).
    Wake { replica: u32 },
}

impl Event {
    /// The same-time order: completions free blocks and clients before anything new is sent,
    /// sends before the scheduler sees them, wake-ups last.
    fn phase(&self) -> u8 {
        match self {
            Event::StepEnd { .. } | Event::Settle { .. } => 0,
            Event::ClientReady { .. } => 1,
            Event::Send { .. } => 2,
            Event::Submit { .. } => 3,
            Event::Wake { .. } => 4,
        }
    }

    /// The replica whose own event this is (a step end or a wake-up), which only that replica
    /// waits for.
    fn own_replica(&self) -> Option<u32> {
        match self {
            Event::StepEnd { replica } | Event::Settle { replica } | Event::Wake { replica } => {
                Some(*replica)
            }
            _ => None,
        }
    }
}

/// A queue key: time, phase, scheduling order.
type Key = (SimTime, u8, u64);

/// The event queue: by time, then phase, then scheduling order. It refuses events in the past.
/// Beside the one order it keeps, per replica, the keys of the events that replica alone waits
/// for and, apart, the keys of everyone's events, so that a replica's next decode stretch may
/// run up to the next event that can change it (not another replica's step end).
struct Queue {
    heap: BinaryHeap<Reverse<(Key, Event)>>,
    seq: u64,
    now: SimTime,
    shared: BinaryHeap<Reverse<Key>>,
    own: Vec<BinaryHeap<Reverse<Key>>>,
}

impl Queue {
    /// A queue for `replicas` replicas (for one, the side heaps are not kept: every event can
    /// change it).
    fn new(replicas: usize) -> Self {
        let sides = if replicas > 1 { replicas } else { 0 };
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: SimTime::ZERO,
            shared: BinaryHeap::new(),
            own: (0..sides).map(|_| BinaryHeap::new()).collect(),
        }
    }

    /// The side heap event `e` goes to, if sides are kept.
    fn side(&mut self, e: &Event) -> Option<&mut BinaryHeap<Reverse<Key>>> {
        if self.own.is_empty() {
            return None;
        }
        Some(match e.own_replica() {
            Some(r) => &mut self.own[r as usize],
            None => &mut self.shared,
        })
    }
    fn push(&mut self, t: SimTime, e: Event) -> Result<()> {
        if t < self.now {
            return Err(Error::Invariant(format!(
                "{e:?} scheduled at {t}, before the current time {}",
                self.now
            )));
        }
        self.seq += 1;
        let key = (t, e.phase(), self.seq);
        if let Some(side) = self.side(&e) {
            side.push(Reverse(key));
        }
        self.heap.push(Reverse((key, e)));
        Ok(())
    }
    fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|Reverse(((t, ..), _))| *t)
    }
    fn pop(&mut self) -> Option<(SimTime, Event)> {
        let (key, e) = self.heap.pop().map(|Reverse(x)| x)?;
        // The same order restricted to a subset: the event is at the top of its side heap.
        if let Some(side) = self.side(&e) {
            debug_assert_eq!(side.peek().map(|Reverse(k)| *k), Some(key));
            side.pop();
        }
        self.now = key.0;
        Some((key.0, e))
    }
    /// The time of the next event that can change replica `r`: anyone's send, submission or
    /// client wake-up, or its own step end or wake-up.
    fn next_for(&self, r: usize) -> SimTime {
        if self.own.is_empty() {
            return self.peek_time().unwrap_or(SimTime::MAX);
        }
        let t = |h: &BinaryHeap<Reverse<Key>>| h.peek().map_or(SimTime::MAX, |Reverse(k)| k.0);
        t(&self.shared).min(t(&self.own[r]))
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
    simulate_with(trace, setup, prep, None)
}

/// [`simulate_shared`] that also records every replica's steps and transfers
/// ([`SimResult::step_logs`]), at most `limit` records of each kind over the run (split evenly
/// between replicas), for a timeline. Every other result is the same as without recording.
pub fn simulate_recorded(
    trace: &Trace,
    setup: &SimSetup,
    prep: &TracePrep,
    limit: usize,
) -> Result<SimResult> {
    simulate_with(trace, setup, prep, Some(limit))
}

/// The replay, recording up to `record` records when given.
fn simulate_with(
    trace: &Trace,
    setup: &SimSetup,
    prep: &TracePrep,
    record: Option<usize>,
) -> Result<SimResult> {
    /// The replay, for whichever connector the setup describes.
    struct Replay<'a> {
        trace: &'a Trace,
        setup: &'a SimSetup,
        prep: &'a TracePrep,
        record: Option<usize>,
    }
    impl WithConnector for Replay<'_> {
        type Output = Result<SimResult>;
        fn with<C: KvConnector + 'static, F: Fn(usize) -> C>(self, make: F) -> Result<SimResult> {
            let Replay {
                trace,
                setup,
                prep,
                record,
            } = self;
            if setup.fleet.pd.is_some() {
                if setup.reference_mode {
                    return Err(Error::Config(
                        "the reference mode does not run disaggregated prefill/decode".into(),
                    ));
                }
                let arrivals = Arrivals::default();
                let a = arrivals.clone();
                return replay::<crate::engine::segments::SegmentPool, PdConnector<C>, _>(
                    trace,
                    setup,
                    prep,
                    move |r| PdConnector::new(make(r), a.clone()),
                    Some(arrivals),
                    record,
                );
            }
            if setup.reference_mode {
                replay::<crate::engine::blocks::BlockPool, C, F>(
                    trace, setup, prep, make, None, record,
                )
            } else {
                replay::<crate::engine::segments::SegmentPool, C, F>(
                    trace, setup, prep, make, None, record,
                )
            }
        }
    }
    let job = Replay {
        trace,
        setup,
        prep,
        record,
    };
    if setup.pools.is_empty() {
        return with_connector(&setup.offload, &setup.engine, &setup.transfer, job);
    }
    let replicas: u32 = setup.pools.iter().map(|p| p.count).sum();
    let want = match &setup.fleet.pd {
        Some(pd) => pd.prefill + pd.decode,
        None => setup.fleet.replicas,
    };
    if replicas != want {
        return Err(Error::Config(format!(
            "the pools hold {replicas} replicas, the fleet {want}"
        )));
    }
    let connectors = PoolConnectors::new(
        setup
            .pools
            .iter()
            .map(|p| PoolOffload {
                count: p.count,
                offload: &p.offload,
                engine: &p.engine,
                transfer: &p.transfer,
            })
            .collect(),
    )?;
    job.with(|r| connectors.make(r))
}

/// The replica `router` picks for `query` among `pool` (fleet replicas `base` on), as a fleet
/// index.
fn route_over<P: KvPool, C: KvConnector>(
    router: &mut dyn Router,
    query: &Query<'_>,
    pool: &mut [Replica<'_, P, C>],
    base: usize,
    signals: &mut LoadSignals,
    events: Option<&EventIndex>,
    controller_delay: SimDuration,
) -> usize {
    let len = pool.len();
    let mut view = View {
        replicas: pool,
        base,
        signals,
        events,
        controller_delay,
        now: query.now,
    };
    base + router.route(query, &mut view).min(len - 1)
}

/// A disaggregated request's record: its prefill (`pre`, on the prefill replica, where its
/// prompt's KV came from) and its decode (`dec`, which generated the output). TTFT counts from
/// the send either way; the first token is the decoder's or, when the prefiller streams it, the
/// prefill's, the decoder's tokens following it.
fn merge_pd(pre: ReqState, dec: ReqState, first: FirstToken) -> ReqState {
    let mut m = dec;
    m.arrival = pre.arrival;
    m.scheduled = pre.scheduled;
    m.origin = pre.origin;
    m.preemptions += pre.preemptions;
    m.bytes_loaded += pre.bytes_loaded;
    m.bytes_stored += pre.bytes_stored;
    if let (FirstToken::Prefiller, Some(p), Some(d)) = (first, pre.first_token, m.first_token) {
        // The prefiller's token first; the decoder's then follow it (its first standing for
        // the second).
        let gap = d.since(p);
        m.first_token = Some(p);
        m.itl_sum += gap;
        m.itl_max = m.itl_max.max(gap);
    }
    m
}

/// One replica's engine and what the loop keeps for it.
struct Replica<'t, P: KvPool, C: KvConnector> {
    engine: Engine<'t, P, C>,
    busy: bool,
    samples: Vec<KvSample>,
    next_sample: SimTime,
}

/// The replicas as a router sees them: stale load signals, and the engines for the oracle.
struct View<'a, 't, P: KvPool, C: KvConnector> {
    /// The pool routed over (the whole fleet, or its prefill or decode replicas).
    replicas: &'a mut [Replica<'t, P, C>],
    /// Fleet index of `replicas[0]`.
    base: usize,
    signals: &'a mut LoadSignals,
    /// The router's index fed by late KV events, if they are late.
    events: Option<&'a EventIndex>,
    /// How long the LMCache controller's admit messages take to arrive.
    controller_delay: SimDuration,
    now: SimTime,
}

impl<P: KvPool, C: KvConnector> Replicas for View<'_, '_, P, C> {
    fn count(&self) -> usize {
        self.replicas.len()
    }
    fn load(&mut self, r: usize) -> Load {
        self.signals.seen(self.base + r, self.now)
    }
    fn refreshed_at(&self) -> SimTime {
        self.signals.refreshed_at(self.now)
    }
    fn load_now(&mut self, r: usize) -> Load {
        self.replicas[r].engine.load()
    }
    fn gpu_hit(&mut self, r: usize, request: &crate::trace::Request) -> u32 {
        self.replicas[r].engine.gpu_hit_tokens(request)
    }
    fn events_hit(&mut self, r: usize, request: &crate::trace::Request) -> u32 {
        let Some(index) = self.events else {
            return self.gpu_hit(r, request);
        };
        let engine = &self.replicas[r].engine;
        let hashes = engine.prompt_block_hashes(request);
        index.hit_blocks(self.base + r, &hashes) as u32 * engine.cfg.block_size
    }
    fn active(&mut self, r: usize) -> crate::fleet::router::Active {
        self.replicas[r].engine.active_work()
    }
    fn block_size(&self) -> u32 {
        self.replicas
            .first()
            .map_or(16, |r| r.engine.cfg.block_size)
    }
    fn controller_lookup(&mut self, request: &crate::trace::Request) -> Option<(usize, u32)> {
        let chunks = self
            .replicas
            .first()?
            .engine
            .connector()
            .prompt_chunks(request);
        let mut found: Option<(usize, u32)> = None;
        for (end, key) in chunks {
            // The instance registered first among those the controller has heard from.
            let owner = self
                .replicas
                .iter()
                .enumerate()
                .filter_map(|(r, rep)| {
                    let since = rep.engine.connector().local_chunk_since(key)?;
                    (since + self.controller_delay <= self.now).then_some((since, r))
                })
                .min();
            let Some((_, o)) = owner else { break };
            match &mut found {
                None => found = Some((o, end)),
                Some((c, matched)) if *c == o => *matched = end,
                Some(_) => {}
            }
        }
        found
    }
}

/// The replay on block pool `P`, each replica in front of a connector `make` builds.
fn replay<P: KvPool, C: KvConnector, F: Fn(usize) -> C>(
    trace: &Trace,
    setup: &SimSetup,
    prep: &TracePrep,
    make: F,
    arrivals: Option<Arrivals>,
    record: Option<usize>,
) -> Result<SimResult> {
    let pd = setup.fleet.pd.as_ref().filter(|_| arrivals.is_some());
    // Disaggregated: replicas 0..np prefill (each request a one-token request there), the rest
    // decode. Otherwise np is the fleet: one pool.
    let (n, np) = match pd {
        Some(p) => {
            let (a, b) = (p.prefill.max(1) as usize, p.decode.max(1) as usize);
            (a + b, a)
        }
        None => {
            let n = setup.fleet.replicas.max(1) as usize;
            (n, n)
        }
    };
    let prefill_trace = pd.map(|_| Trace {
        meta: trace.meta.clone(),
        requests: trace
            .requests
            .iter()
            .map(|r| {
                let mut one = r.clone();
                one.output_len = one.output_len.min(1);
                one
            })
            .collect(),
    });
    let mut replicas: Vec<Replica<P, C>> = (0..n)
        .map(|r| {
            let own = match &prefill_trace {
                Some(pt) if r < np => pt,
                _ => trace,
            };
            let (cfg, step_model, layers) = setup.replica_spec(r);
            let mut engine =
                Engine::<P, C>::new(cfg.clone(), own, make(r), step_model.clone(), layers);
            engine.set_reference_mode(setup.reference_mode);
            if let Some(limit) = record {
                engine.record_steps(limit / n);
            }
            engine.set_shareable(&prep.shareable);
            if let Some((bs, chains)) = &prep.block_hashes
                && *bs == cfg.block_size
            {
                engine.set_block_hashes(chains);
            }
            Replica {
                engine,
                busy: false,
                samples: Vec::new(),
                next_sample: SimTime::ZERO,
            }
        })
        .collect();
    let pool_router = |replicas: usize| {
        crate::fleet::router::build(&crate::fleet::FleetConfig {
            replicas: replicas as u32,
            ..setup.fleet.clone()
        })
    };
    // The router of the first pool (the fleet, or its prefill replicas) and of the decode pool.
    let mut router = pool_router(np);
    let mut router_d = pd.map(|_| pool_router(n - np));
    // Which pool's router hears that request `idx` left fleet replica `r`.
    macro_rules! left {
        ($idx:expr, $r:expr) => {{
            let (idx, r): (u32, usize) = ($idx, $r);
            match &mut router_d {
                Some(rd) if r >= np => rd.finished(idx, r - np),
                _ => router.finished(idx, r),
            }
        }};
    }
    // P/D: per request, its prefill replica (u32::MAX: not disaggregated), its state when the
    // prefill ended, and when each prefill replica's link is next free.
    let mut prefill_of: Vec<u32> = vec![
        u32::MAX;
        if pd.is_some() {
            trace.requests.len()
        } else {
            0
        }
    ];
    let mut prefilled: HashMap<u32, ReqState> = HashMap::new();
    // P/D: each prefill replica's link, shared by the transfers leaving it (one class each).
    let mut links: Vec<SharedLink> = vec![SharedLink::new(); np];
    let mut handoffs: Vec<(u32, usize, SimTime)> = Vec::new();
    let refresh = SimDuration::from_secs_f64(setup.fleet.refresh_ms / 1e3);
    let mut signals = LoadSignals::new(n, refresh);
    let mut bucket = crate::fleet::admission::Bucket::new(setup.fleet.admission);
    // The router's index fed by the engines' KV events, when they arrive late.
    let mut events = (n > 1
        && setup.fleet.events_delay_ms > 0.0
        && setup.fleet.effective_cache_view() == Some(crate::fleet::CacheView::Events))
    .then(|| {
        for rep in replicas.iter_mut() {
            rep.engine.publish_kv_events();
        }
        EventIndex::new(
            n,
            SimDuration::from_secs_f64(setup.fleet.events_delay_ms / 1e3),
        )
    });
    let mut step_events = Vec::new();
    let controller_delay = SimDuration::from_secs_f64(setup.fleet.events_delay_ms / 1e3);
    // Every request's final state, by trace index: pending until it is sent, then whatever the
    // engine hands back when it finishes or is rejected.
    let mut reqs: Vec<ReqState> = trace
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| ReqState::new(i as u32, r.input_len, r.output_len))
        .collect();
    let mut replica_of: Vec<u32> = vec![0; if n > 1 { reqs.len() } else { 0 }];
    let (mut pools, where_) = PoolState::build(trace);
    let mut q = Queue::new(n);
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
    let mut now = SimTime::ZERO;
    let mut start: Option<SimTime> = None;
    let mut end = SimTime::ZERO;
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

    // The replicas that may start a step at this instant: those an event reached, and those
    // left idle with work at an earlier one (the rest are busy or have nothing to do).
    let mut touched = vec![false; n];
    let mut check: Vec<usize> = Vec::new();
    let mut idle_with_work: Vec<usize> = Vec::new();
    macro_rules! touch {
        ($r:expr) => {{
            let r: usize = $r;
            if !touched[r] {
                touched[r] = true;
                check.push(r);
            }
        }};
    }
    let mut since_noted = 0u32;
    while let Some(t) = q.peek_time() {
        now = t;
        // How far the run has got, for a progress display (never read by the simulation).
        since_noted += 1;
        if since_noted == 4096 {
            since_noted = 0;
            crate::util::progress::note_sim_time(t.as_ns());
        }
        for r in idle_with_work.drain(..) {
            touch!(r);
        }
        while q.peek_time() == Some(t) {
            let (_, e) = q.pop().expect("peeked");
            if let Some(r) = e.own_replica() {
                touch!(r as usize);
            }
            // Submits a sent request to its replica; a rejected one completes at once.
            macro_rules! submit {
                ($req:expr, $r:expr) => {{
                    let (req, r): (u32, usize) = ($req, $r);
                    touch!(r);
                    let rep = &mut replicas[r];
                    match rep.engine.submit(req, reqs[req as usize].arrival) {
                        Ok(()) => {
                            if n > 1 {
                                signals.record(r, t, rep.engine.load());
                            }
                        }
                        Err(rejected) => {
                            reqs[req as usize] = *rejected;
                            prefilled.remove(&req);
                            if n > 1 {
                                left!(req, r);
                                // A request refused by its prefiller never reaches the
                                // decoder its router chose.
                                if r < np
                                    && prefill_of.get(req as usize).is_some_and(|p| *p != u32::MAX)
                                {
                                    left!(req, replica_of[req as usize] as usize);
                                }
                            }
                            complete(req, t, &mut pools, &mut sender, &mut q)?;
                        }
                    }
                }};
            }
            match e {
                Event::StepEnd { replica } => {
                    replicas[replica as usize].busy = false;
                }
                Event::Wake { .. } | Event::Settle { .. } => {}
                Event::Send { req } => {
                    start.get_or_insert(t);
                    reqs[req as usize].arrival = t;
                    if let Some(b) = &mut bucket
                        && !b.admit(t, trace.requests[req as usize].input_len)
                    {
                        let st = &mut reqs[req as usize];
                        st.phase = Phase::Rejected;
                        st.reject = Some(RejectReason::NotAdmitted);
                        complete(req, t, &mut pools, &mut sender, &mut q)?;
                        continue;
                    }
                    if let Some(ev) = &mut events {
                        ev.deliver(t);
                    }
                    let query = Query {
                        idx: req,
                        request: &trace.requests[req as usize],
                        now: t,
                    };
                    let r = if let (Some(p), Some(rd)) = (pd, &mut router_d) {
                        // The decoder first; then the prefiller, if the request is
                        // disaggregated.
                        let d = route_over(
                            &mut **rd,
                            &query,
                            &mut replicas[np..],
                            np,
                            &mut signals,
                            events.as_ref(),
                            controller_delay,
                        );
                        replica_of[req as usize] = d as u32;
                        let prompt = query.request.input_len;
                        let split = p.threshold == 0
                            || prompt
                                - replicas[d].engine.gpu_hit_tokens(query.request).min(prompt)
                                > p.threshold;
                        if split {
                            let pr = route_over(
                                &mut *router,
                                &query,
                                &mut replicas[..np],
                                0,
                                &mut signals,
                                events.as_ref(),
                                controller_delay,
                            );
                            prefill_of[req as usize] = pr as u32;
                            pr
                        } else {
                            d
                        }
                    } else if n > 1 {
                        let r = route_over(
                            &mut *router,
                            &query,
                            &mut replicas,
                            0,
                            &mut signals,
                            events.as_ref(),
                            controller_delay,
                        );
                        replica_of[req as usize] = r as u32;
                        r
                    } else {
                        0
                    };
                    if setup.request_overhead == SimDuration::ZERO {
                        submit!(req, r);
                    } else {
                        let replica = r as u32;
                        q.push(t + setup.request_overhead, Event::Submit { req, replica })?;
                    }
                }
                Event::Submit { req, replica } => submit!(req, replica as usize),
                Event::ClientReady { pool, client } => {
                    let (next, abandoned) = pools[pool as usize].next_for(client as usize);
                    for r in abandoned {
                        let st = &mut reqs[r as usize];
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
        // Idle replicas start their next steps, in replica order. A decode-only stretch may run
        // up to the next event that can change the replica, or its next usage sample.
        check.sort_unstable();
        for &r in check.iter() {
            touched[r] = false;
            let rep = &mut replicas[r];
            let replica = r as u32;
            let out = if let Some(due) = rep.engine.settle_due() {
                // A step waiting for the shared store's bytes: when due, it goes on if they are
                // through, else waits for their new projection.
                if now < due {
                    continue;
                }
                match rep.engine.settle(now) {
                    Ok(out) => out,
                    Err(later) => {
                        if later != SimTime::MAX {
                            q.push(later, Event::Settle { replica })?;
                        }
                        continue;
                    }
                }
            } else {
                if rep.busy || !rep.engine.has_work() {
                    continue;
                }
                let horizon = q.next_for(r).min(rep.next_sample);
                let Some(out) = rep.engine.step(now, horizon) else {
                    idle_with_work.push(r);
                    continue;
                };
                rep.busy = true;
                for w in &out.wakeups {
                    q.push(*w, Event::Wake { replica })?;
                }
                if out.settle {
                    q.push(out.end, Event::Settle { replica })?;
                    continue;
                }
                out
            };
            for &slot in &out.finished {
                let done = rep.engine.take_finished(slot);
                let idx = done.idx;
                end = end.max(out.end);
                if n > 1 {
                    left!(idx, r);
                }
                let split = prefill_of.get(idx as usize).is_some_and(|p| *p != u32::MAX);
                if let (true, Some(p)) = (split, pd) {
                    if r < np {
                        // The prefill ended: the KV leaves for the decoder over this replica's
                        // link, and the request is sent on.
                        let first_only = p.first_token == FirstToken::Prefiller
                            && trace.requests[idx as usize].output_len <= 1;
                        if !first_only {
                            handoffs.push((idx, r, out.end));
                            prefilled.insert(idx, done);
                            continue;
                        }
                    } else if let Some(pre) = prefilled.remove(&idx) {
                        reqs[idx as usize] = merge_pd(pre, done, p.first_token);
                        complete(idx, out.end, &mut pools, &mut sender, &mut q)?;
                        continue;
                    }
                }
                reqs[idx as usize] = done;
                complete(idx, out.end, &mut pools, &mut sender, &mut q)?;
            }
            if rep.next_sample <= now {
                let e = &rep.engine;
                let sample = |t: SimTime| KvSample {
                    t_s: t.as_secs_f64(),
                    used: e.used_blocks() as f64 / e.cfg.num_gpu_blocks.max(1) as f64,
                    running: e.num_running() as u32,
                    waiting: e.num_waiting() as u32,
                };
                rep.samples.push(sample(rep.next_sample));
                // The sample instants since the last step (an idle gap, or one long step) all
                // see this state: the first and the last of them are kept, so samples grow with
                // the steps, not with the simulated time.
                let skipped = (now - rep.next_sample).as_ns() / interval.as_ns();
                if skipped > 0 {
                    rep.next_sample += interval.times(skipped);
                    rep.samples.push(sample(rep.next_sample));
                }
                rep.next_sample += interval;
            }
            if n > 1 {
                signals.record(r, now, rep.engine.load());
            }
            if let Some(ev) = &mut events {
                rep.engine.take_kv_events(&mut step_events);
                ev.publish(r, out.end, &step_events);
                step_events.clear();
            }
            q.push(out.end, Event::StepEnd { replica })?;
        }
        check.clear();
        // P/D: the prefills that ended leave for their decoders, each over its prefill
        // replica's link, the transfers under way on one link sharing it.
        if let (Some(p), Some(arrivals)) = (pd, &arrivals) {
            for (idx, r, at) in handoffs.drain(..) {
                let d = replica_of[idx as usize] as usize;
                let request = &trace.requests[idx as usize];
                let tokens = if p.whole_prompt {
                    request.input_len
                } else {
                    let cached = replicas[d].engine.gpu_hit_tokens(request);
                    request.input_len - cached.min(request.input_len)
                };
                let bytes = tokens as u64 * replicas[r].engine.cfg.kv_bytes_per_token;
                let wire = SimDuration::from_secs_f64(bytes as f64 / (p.transfer_gbps * 1e9));
                // The transfers under way on the link share it: each one's arrival is
                // projected again as this one joins (the decoders look the times up when they
                // next try to schedule the request).
                let link = &mut links[r];
                link.advance(now, |_, _, _| {});
                link.submit(idx as u64, at, wire);
                let latency = SimDuration::from_secs_f64(p.latency_ms / 1e3);
                for (req, _, through) in link.projected() {
                    arrivals.expect(req as u32, through + latency);
                }
                if let Some(pre) = prefilled.get_mut(&idx) {
                    pre.bytes_loaded += bytes;
                }
                let replica = d as u32;
                q.push(at, Event::Submit { req: idx, replica })?;
            }
        }
    }
    let unfinished = reqs
        .iter()
        .filter(|r| !matches!(r.phase, Phase::Finished | Phase::Rejected))
        .count();
    if unfinished > 0 {
        let state = replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.engine.has_work())
            .map(|(i, r)| {
                let s = r.engine.stall_state();
                if n > 1 {
                    format!("replica {i}: {s}")
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Deadlock {
            unfinished,
            at: now,
            state,
        });
    }
    let step_logs: Vec<StepLog> = replicas
        .iter_mut()
        .filter_map(|r| r.engine.take_step_log())
        .collect();
    let per: Vec<ReplicaResult> = replicas
        .into_iter()
        .enumerate()
        .map(|(i, r)| ReplicaResult {
            gpu_evictions: r.engine.gpu_evictions(),
            connector_stats: r.engine.connector().stats(),
            itl_hist: r.engine.itl_hist.clone(),
            stats: r.engine.stats.clone(),
            kv_samples: r.samples,
            num_gpu_blocks: r.engine.cfg.num_gpu_blocks,
            pool: setup.pool_of(i),
        })
        .collect();
    let mut stats = EngineStats::default();
    let mut itl_hist = LogHistogram::default();
    let mut connector_stats = None;
    for r in &per {
        stats.add(&r.stats);
        itl_hist.merge(&r.itl_hist);
        connector_stats = ConnectorStats::sum(connector_stats, r.connector_stats.clone());
    }
    let one = n == 1;
    Ok(SimResult {
        gpu_evictions: per.iter().map(|r| r.gpu_evictions).sum(),
        stats,
        itl_hist,
        connector_stats,
        reqs,
        kv_samples: if one {
            per[0].kv_samples.clone()
        } else {
            Vec::new()
        },
        start: start.unwrap_or(SimTime::ZERO),
        end,
        num_gpu_blocks: per.iter().map(|r| r.num_gpu_blocks).sum(),
        replica_of,
        prefill_of,
        replicas: if one { Vec::new() } else { per },
        pools: setup.pools.iter().map(|p| p.label.clone()).collect(),
        step_logs,
    })
}

#[cfg(test)]
mod tests;

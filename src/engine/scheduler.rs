//! vLLM V1's scheduler, one step at a time, with the KV connector hooks where vLLM calls them.
//!
//! Each step (vllm/v1/core/sched/scheduler.py):
//! 1. Running requests first, in order: each gets its remaining tokens up to the step's token
//!    budget (a decode gets 1, a chunked prefill the rest of its prompt). When blocks run out,
//!    the last running request is preempted (its blocks freed, tail first; it goes back to the
//!    front of the waiting queue and is recomputed from scratch later).
//! 2. Only if nothing was preempted, waiting requests are admitted in order while fewer than
//!    `max_num_seqs` run and budget remains: GPU prefix-cache hit (capped at the sequence length
//!    minus one), then the KV connector's match ([`KvConnector`]), then blocks for the hit plus
//!    the new tokens (if they do not fit, admission stops). A request whose external KV loads
//!    asynchronously is skipped until the load completes.
//! 3. The step takes: connector lookups (blocking, at scheduling) + blocking loads + the forward
//!    pass + saves on the critical path. When the connector works layer by layer, the
//!    transfers overlap the forward pass.
//! 4. At the step's end every request whose computed tokens reach its length samples a token;
//!    those with all their tokens finish and free their blocks.
//!
//! The engine knows connectors only through the [`KvConnector`] trait (`crate::connector`): a new
//! one plugs in without a change here.
//!
//! Decode-only stretches run in one call ([`Engine::step`] with a horizon): when every running
//! request decodes, the connector needs nothing from those steps but saves of filled blocks off
//! the critical path, and no waiting request can be admitted (none
//! waits, the batch is full, or the first found no room and nothing has freed any since), a
//! step differs from the last only by one more token per request. The stretch then costs O(1)
//! per step plus the steps where a request crosses a block boundary (a block allocated or
//! registered), and ends before any request's last token, before the horizon (the next event
//! or KV sample the caller has), or before a step whose blocks would not fit. Results are identical to stepping one by one (the
//! reference mode does that; tests compare).

use super::config::EngineConfig;
use super::pool::KvPool;
use super::request::{Origin, Phase, RejectReason, ReqState};
use super::segments::SegmentPool;
use super::step_log::{Direction, StepKind, StepLog, StepRecord, TransferRecord};
use crate::connector::{ConnectorRequest, DecodeSaves, KvConnector, Load, Matched};
use crate::cost::{BatchShape, StepModel};
use crate::time::{Seconds, SimDuration, SimTime};
use crate::trace::Trace;
use crate::trace::content;
use std::collections::VecDeque;
use std::sync::Arc;

/// Counters over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Steps executed.
    pub steps: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Tokens run through prefill.
    pub prefill_tokens: u64,
    /// Tokens decoded.
    pub decode_tokens: u64,
    /// Time the engine spent in steps.
    pub busy: SimDuration,
    /// Time spent in connector lookups, blocking loads and critical-path saves.
    pub transfer: SimDuration,
    /// Sum over steps of used GPU blocks x step duration in ns (for the time-weighted mean
    /// usage).
    pub used_block_ns: f64,
    /// Most GPU blocks in use at once.
    pub peak_used_blocks: u32,
    /// Of `steps`, those run inside decode-only stretches (how much stepping was skipped; no
    /// result depends on it).
    pub stretch_steps: u64,
}

impl EngineStats {
    /// Adds `o`'s counters (a fleet's total); the peak is the sum of the peaks.
    pub fn add(&mut self, o: &EngineStats) {
        self.steps += o.steps;
        self.preemptions += o.preemptions;
        self.prefill_tokens += o.prefill_tokens;
        self.decode_tokens += o.decode_tokens;
        self.busy += o.busy;
        self.transfer += o.transfer;
        self.used_block_ns += o.used_block_ns;
        self.peak_used_blocks += o.peak_used_blocks;
        self.stretch_steps += o.stretch_steps;
    }
}

/// What a step did.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    /// When the step ends.
    pub end: SimTime,
    /// Requests that finished at the end.
    pub finished: Vec<u32>,
    /// Times at which asynchronous loads started in this step complete.
    pub wakeups: Vec<SimTime>,
    /// The step's forward pass waits for data through a shared path (a fleet's remote store)
    /// projected to be through at `end`: nothing is computed yet, and the caller calls
    /// [`Engine::settle`] then.
    pub settle: bool,
}

/// A step whose forward pass waits for shared data (see [`Engine::settle`]).
#[derive(Debug)]
struct PendingStep {
    start: SimTime,
    /// When its data is next projected to be through: when to settle it.
    due: SimTime,
    shape: BatchShape,
    lookup: Seconds,
    /// Its blocking loads' time besides the shared data.
    load: Seconds,
}

/// One vLLM instance with its KV connector `C`, on block pool `P` (the run-length pool by
/// default; the reference mode runs on the per-block one). `C` is a type parameter so that the
/// connector's calls inline into the step loop; `Box<dyn KvConnector>` serves where the
/// connector is chosen at run time.
#[derive(Debug)]
pub struct Engine<'t, P: KvPool = SegmentPool, C: KvConnector = Box<dyn KvConnector>> {
    /// Effective engine settings.
    pub cfg: EngineConfig,
    trace: &'t Trace,
    /// The state of each request this engine holds, by slot (a request takes a slot when it is
    /// submitted and gives it back when it finishes, so memory follows the requests in flight,
    /// not the trace). A slot is what `idx` means inside the engine; `ReqState::idx` is the
    /// request's index in the trace.
    reqs: Vec<ReqState>,
    /// Slots free for reuse (last freed first).
    free_slots: Vec<u32>,
    pool: P,
    /// Per slot, its blocks.
    held: Vec<P::Held>,
    /// Per slot, its block hashes (computed when first admitted; pool segments share them).
    hashes: Vec<Arc<Vec<u64>>>,
    /// Block hashes computed beforehand, by trace index (see `sim::TracePrep`).
    given_hashes: Option<&'t [Arc<Vec<u64>>]>,
    /// The empty chain: requests' hashes before they are computed and after they finish.
    no_chain: Arc<Vec<u64>>,
    /// Per slot, whether its hashes are computed.
    prepared: Vec<bool>,
    /// Per slot, the computed-token count below which the connector's save does nothing
    /// (what its last save said; 0 after an admission or a preemption).
    save_at: Vec<u32>,
    /// Per slot, the request's shareable tokens (see `shareable`), looked up when it arrives.
    slot_shareable: Vec<u32>,
    /// Scratch space of prefix-hit scans.
    scan: P::Scan,
    /// Scratch for a step's plan.
    plan: Vec<(u32, u32)>,
    waiting: VecDeque<u32>,
    running: Vec<u32>,
    /// The KV connector.
    connector: C,
    step_model: StepModel,
    layers: u32,
    /// Counters.
    pub stats: EngineStats,
    /// Gaps between successive tokens of all requests (ns), for ITL percentiles.
    pub itl_hist: crate::metrics::histogram::LogHistogram,
    /// By trace index, tokens of a request's sequence that another request shares (see
    /// `content::shareable_prefixes`): only blocks within it are indexed in the prefix cache
    /// (`None`: every block is).
    shareable: Option<&'t [u32]>,
    /// Reference mode: index every block and step one step at a time, as vLLM does. Results
    /// must be identical either way; tests check that.
    reference: bool,
    /// The waiting request that last found no room, with the pool's admission epoch then.
    blocked: Option<(u32, u64)>,
    /// Scratch space of decode stretches: running requests by the step residue at which they
    /// allocate and fill blocks.
    stretch_classes: StretchClasses,
    /// The step waiting for shared data, if any (its plan in `plan`).
    pending: Option<PendingStep>,
    /// Step and transfer records, when a timeline was asked for.
    log: Option<Box<StepLog>>,
}

/// See [`Engine::stretch_classes`].
type StretchClasses = (Vec<Vec<(u32, u64)>>, Vec<Vec<u32>>);

/// The connector's view of request `idx` (a free function: it borrows fields the caller may
/// hold apart from the connector).
fn conn_req<'a>(
    trace: &'a Trace,
    hashes: &'a [Arc<Vec<u64>>],
    reqs: &[ReqState],
    block_size: u32,
    idx: u32,
) -> ConnectorRequest<'a> {
    let r = &reqs[idx as usize];
    ConnectorRequest {
        idx,
        global: r.idx,
        request: &trace.requests[r.idx as usize],
        block_hashes: &hashes[idx as usize],
        block_size,
        prompt_len: r.prompt_len,
        num_tokens: r.num_tokens(),
        num_computed: r.num_computed,
    }
}

impl<'t, P: KvPool, C: KvConnector> Engine<'t, P, C> {
    /// An engine for `trace` with every request pending, in front of `connector`.
    pub fn new(
        cfg: EngineConfig,
        trace: &'t Trace,
        connector: C,
        step_model: StepModel,
        layers: u32,
    ) -> Self {
        Engine {
            pool: P::new(cfg.num_gpu_blocks, cfg.enable_prefix_caching),
            held: Vec::new(),
            hashes: Vec::new(),
            given_hashes: None,
            no_chain: Arc::new(Vec::new()),
            prepared: Vec::new(),
            save_at: Vec::new(),
            slot_shareable: Vec::new(),
            scan: P::Scan::default(),
            plan: Vec::new(),
            cfg,
            trace,
            reqs: Vec::new(),
            free_slots: Vec::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            connector,
            step_model,
            layers: layers.max(1),
            stats: EngineStats::default(),
            itl_hist: Default::default(),
            shareable: None,
            reference: false,
            blocked: None,
            stretch_classes: Default::default(),
            pending: None,
            log: None,
        }
    }

    /// Starts recording steps and transfers, at most `limit` records of each (for a
    /// timeline); results are unchanged.
    pub fn record_steps(&mut self, limit: usize) {
        self.log = Some(Box::new(StepLog::new(limit, self.cfg.kv_bytes_per_token)));
        self.connector.record_tier_writes();
    }

    /// The records so far, if recording (see [`Engine::record_steps`]); recording stops.
    pub fn take_step_log(&mut self) -> Option<StepLog> {
        self.take_tier_writes();
        self.log.take().map(|l| *l)
    }

    /// Moves the connector's tier writes since the last call into the log.
    #[cold]
    fn take_tier_writes(&mut self) {
        if let Some(log) = &mut self.log {
            let mut w = Vec::new();
            self.connector.take_tier_writes(&mut w);
            log.tier_writes(&mut w);
        }
    }

    /// The KV connector (for its counters at the end of a run).
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// Sets, by trace index, how many leading tokens another request shares (see
    /// `content::shareable_prefixes`; it depends only on the trace, so sweeps compute it once).
    pub fn set_shareable(&mut self, shareable: &'t [u32]) {
        assert_eq!(
            shareable.len(),
            self.trace.requests.len(),
            "one entry per request"
        );
        if !self.reference {
            self.shareable = Some(shareable);
        }
    }

    /// Turns off the shortcuts (shareable-only indexing, decode stretches).
    pub fn set_reference_mode(&mut self, on: bool) {
        self.reference = on;
        if on {
            self.shareable = None;
        }
    }

    /// Why nothing can run, in words (for a deadlock error): what runs, what waits, who holds
    /// the GPU's blocks.
    pub fn stall_state(&self) -> String {
        let holding: Vec<u32> = self
            .waiting
            .iter()
            .copied()
            .filter(|&i| P::held_len(&self.held[i as usize]) > 0)
            .collect();
        let held: u32 = holding
            .iter()
            .map(|&i| P::held_len(&self.held[i as usize]))
            .sum();
        let front = self.waiting.front().map(|&i| {
            let r = &self.reqs[i as usize];
            let need = self.blocks_for(r.num_tokens());
            let have = P::held_len(&self.held[i as usize]);
            format!(
                "; the first waiting request needs {} more blocks",
                need.saturating_sub(have)
            )
        });
        format!(
            "{} running, {} waiting ({} of them hold {held} of the GPU's {} KV blocks, loaded \
             asynchronously by the connector), {} blocks free{}",
            self.running.len(),
            self.waiting.len(),
            holding.len(),
            self.cfg.num_gpu_blocks,
            self.pool.num_free(),
            front.unwrap_or_default()
        )
    }

    /// The prompt tokens of `request` (not yet submitted) that this engine's GPU prefix cache
    /// holds now, as admission would find them; changes nothing.
    pub fn gpu_hit_tokens(&mut self, request: &crate::trace::Request) -> u32 {
        let hashes = self.prompt_block_hashes(request);
        if hashes.is_empty() {
            return 0;
        }
        let mut scan = std::mem::take(&mut self.scan);
        let blocks = self.pool.scan_hits(&mut scan, &hashes);
        self.scan = scan;
        blocks as u32 * self.cfg.block_size
    }

    /// The chained hashes of `request`'s prompt blocks that may hit (full blocks, the last
    /// prompt token always computed): the keys of the prefix cache and of its KV events.
    pub fn prompt_block_hashes(&self, request: &crate::trace::Request) -> Vec<u64> {
        let bs = self.cfg.block_size;
        let cap = (request.input_len.saturating_sub(1) / bs) as usize;
        let mut hashes = Vec::with_capacity(cap);
        if cap > 0 {
            content::for_each_block(request.prompt.iter().copied(), bs, false, |_, k| {
                if hashes.len() < cap {
                    hashes.push(k)
                }
            });
        }
        hashes
    }

    /// Starts recording the GPU prefix cache's changes as KV events (for routers that index
    /// every engine's cache).
    pub fn publish_kv_events(&mut self) {
        self.pool.record_events(true);
    }

    /// Moves the KV events since the last call, in order, to the end of `out`.
    pub fn take_kv_events(&mut self, out: &mut Vec<super::pool::BlockEvent>) {
        self.pool.take_events(out);
    }

    /// Prompt tokens still to compute for requests without a first token, and the KV blocks
    /// of every request held (what Dynamo's router tracks per request).
    pub fn active_work(&self) -> crate::fleet::router::Active {
        let bs = self.cfg.block_size.max(1) as u64;
        let mut a = crate::fleet::router::Active::default();
        for r in self.in_flight() {
            if r.num_output == 0 {
                a.prefill_tokens += r.prompt_len.saturating_sub(r.num_computed) as u64;
            }
            a.blocks += (r.prompt_len as u64 + r.num_output as u64).div_ceil(bs);
        }
        a
    }

    /// Waiting and running requests and GPU KV usage now (what a router's signals report).
    pub fn load(&self) -> crate::fleet::signals::Load {
        crate::fleet::signals::Load {
            waiting: self.waiting.len() as u32,
            running: self.running.len() as u32,
            kv_usage: self.pool.num_used() as f64 / self.cfg.num_gpu_blocks.max(1) as f64,
        }
    }

    /// Requests waiting or running.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// Waiting queue length.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Running batch size.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// GPU blocks in use.
    pub fn used_blocks(&self) -> u32 {
        self.pool.num_used()
    }

    /// Prefix-cache evictions so far.
    pub fn gpu_evictions(&self) -> u64 {
        self.pool.evictions()
    }

    /// Trace request `global`, sent at `sent` (its TTFT and E2E count from there), reaches the
    /// engine's scheduler (after the server's own per-request work): it takes a slot and waits.
    /// When it can never run (nothing to generate, longer than `max_model_len`, more KV blocks
    /// than the GPU has) it is handed back rejected, with its reason, and takes no slot.
    pub fn submit(&mut self, global: u32, sent: SimTime) -> Result<(), Box<ReqState>> {
        let q = &self.trace.requests[global as usize];
        let mut r = ReqState::new(global, q.input_len, q.output_len);
        r.arrival = sent;
        let bs = self.cfg.block_size as u64;
        let total = r.prompt_len as u64 + r.output_len as u64;
        let reject = if r.output_len == 0 {
            Some(RejectReason::NoOutputTokens)
        } else if total > self.cfg.max_model_len as u64 {
            Some(RejectReason::ExceedsMaxModelLen {
                tokens: total,
                max_model_len: self.cfg.max_model_len,
            })
        } else if (total - 1).div_ceil(bs) > self.cfg.num_gpu_blocks as u64 {
            Some(RejectReason::ExceedsKvCapacity {
                blocks: (total - 1).div_ceil(bs),
                gpu_blocks: self.cfg.num_gpu_blocks,
            })
        } else {
            None
        };
        if let Some(why) = reject {
            r.phase = Phase::Rejected;
            r.reject = Some(why);
            return Err(Box::new(r));
        }
        r.phase = Phase::Waiting;
        let shareable = self.shareable.map_or(u32::MAX, |s| s[global as usize]);
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.reqs[s as usize] = r;
                self.slot_shareable[s as usize] = shareable;
                s
            }
            None => {
                self.reqs.push(r);
                self.held.push(P::Held::default());
                self.hashes.push(self.no_chain.clone());
                self.prepared.push(false);
                self.save_at.push(0);
                self.slot_shareable.push(shareable);
                (self.reqs.len() - 1) as u32
            }
        };
        self.waiting.push_back(slot);
        Ok(())
    }

    /// The state of a finished request (a slot of the last step's `finished`), which gives its
    /// slot back.
    pub fn take_finished(&mut self, slot: u32) -> ReqState {
        let s = slot as usize;
        debug_assert_eq!(self.reqs[s].phase, Phase::Finished);
        self.hashes[s] = self.no_chain.clone();
        self.prepared[s] = false;
        self.save_at[s] = 0;
        self.free_slots.push(slot);
        std::mem::replace(&mut self.reqs[s], ReqState::new(u32::MAX, 0, 0))
    }

    /// The state of every request still waiting or running (for a run that stops early).
    pub fn in_flight(&self) -> impl Iterator<Item = &ReqState> {
        self.running
            .iter()
            .chain(self.waiting.iter())
            .map(|&i| &self.reqs[i as usize])
    }

    /// Uses block hashes computed beforehand (see `sim::TracePrep`), by trace index, at the
    /// engine's block size.
    pub fn set_block_hashes(&mut self, chains: &'t [Arc<Vec<u64>>]) {
        assert_eq!(
            chains.len(),
            self.trace.requests.len(),
            "one entry per request"
        );
        self.given_hashes = Some(chains);
    }

    /// Computes the request's block hashes once (unless given).
    fn prepare(&mut self, idx: u32) {
        let s = idx as usize;
        if self.prepared[s] {
            return;
        }
        self.prepared[s] = true;
        let global = self.reqs[s].idx as usize;
        self.hashes[s] = match self.given_hashes {
            Some(g) if !g[global].is_empty() => g[global].clone(),
            _ => Arc::new(content::sequence_hashes(
                &self.trace.requests[global],
                self.cfg.block_size,
            )),
        };
    }

    fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.cfg.block_size)
    }

    /// Allocates blocks so that request `idx` can hold `tokens` tokens; false if they do not fit.
    fn grow(&mut self, idx: u32, tokens: u32) -> bool {
        let need = self.blocks_for(tokens);
        let held = &mut self.held[idx as usize];
        let have = P::held_len(held);
        if need <= have {
            return true;
        }
        if need - have > self.pool.num_free() {
            return false;
        }
        self.pool.allocate(held, need - have);
        true
    }

    fn release(&mut self, idx: u32) {
        self.pool.release(&mut self.held[idx as usize]);
    }

    fn preempt(&mut self, idx: u32) {
        // Its recompute may hit its own blocks: index all of them before they are freed.
        let hashes = &self.hashes[idx as usize];
        let full =
            (self.reqs[idx as usize].num_computed / self.cfg.block_size).min(hashes.len() as u32);
        self.pool
            .register(&mut self.held[idx as usize], hashes, full);
        self.release(idx);
        self.connector.request_preempted(idx);
        self.save_at[idx as usize] = 0;
        let r = &mut self.reqs[idx as usize];
        r.num_computed = 0;
        r.preemptions += 1;
        r.phase = Phase::Waiting;
        self.stats.preemptions += 1;
        self.waiting.push_front(idx);
    }

    /// Runs one step starting at `now`, or a stretch of decode-only steps whose later steps
    /// all start before `horizon` (see the module doc); `None` when there is nothing to run.
    /// `horizon` is the earliest time at which something outside the engine may change its
    /// state (an arrival, a wake-up) or observe it (a usage sample); `now` or less: one step.
    pub fn step(&mut self, now: SimTime, horizon: SimTime) -> Option<StepOutcome> {
        if horizon > now
            && !self.reference
            && let Some(out) = self.decode_stretch(now, horizon)
        {
            return Some(out);
        }
        self.one_step(now)
    }

    /// Runs decode-only steps from `now` while the conditions of the module doc hold; `None`
    /// (having changed nothing) when fewer than two steps could run that way.
    fn decode_stretch(&mut self, now: SimTime, horizon: SimTime) -> Option<StepOutcome> {
        if self.running.is_empty() {
            return None;
        }
        let save_full_blocks = match self.connector.decode_saves() {
            DecodeSaves::Nothing => false,
            DecodeSaves::AtFullBlocks => true,
            DecodeSaves::EveryStep => return None,
        };
        let n = self.running.len() as u64;
        if n > self.cfg.max_num_batched_tokens as u64 {
            return None;
        }
        // Waiting requests must stay where they are: either no admission is attempted (the
        // batch is full), or the front one found no room at its last attempt and nothing that
        // could make room has happened since (its lookup is then cached: attempts cost nothing
        // and change nothing). Steps that register blocks end the stretch (they may extend its
        // prefix hit).
        let full = self.running.len() >= self.cfg.max_num_seqs as usize;
        let watch_blocked = match self.waiting.front() {
            None => false,
            Some(_) if full => false,
            Some(&front) => {
                let r = &self.reqs[front as usize];
                let still = self.blocked == Some((front, self.pool.admission_epoch()))
                    && r.phase == Phase::Waiting
                    && r.num_computed == 0
                    && self.connector.match_is_settled(front);
                if !still {
                    return None;
                }
                true
            }
        };
        let bs = self.cfg.block_size as u64;
        let decoding = |r: &ReqState| r.num_output > 0 && r.num_computed + 1 == r.num_tokens();
        // The latest admitted is the likeliest to be still in its prefill: look at it first.
        if !self
            .running
            .last()
            .is_some_and(|&i| decoding(&self.reqs[i as usize]))
        {
            return None;
        }
        // Steps before the first request's last token; the context sum of step 1.
        let mut k_max = u64::MAX;
        let mut ctx0 = 0u64;
        for &idx in &self.running {
            let r = &self.reqs[idx as usize];
            if !decoding(r) {
                return None;
            }
            k_max = k_max.min((r.output_len - r.num_output) as u64 - 1);
            ctx0 += r.num_computed as u64 + 1;
        }
        if k_max < 2 {
            return None; // a request ends within two steps: one step at a time
        }
        // Requests by the residue (mod block size) of the steps at which they take a new block
        // and at which they fill one, in running order: step k touches only `alloc[k % bs]`
        // (from each request's first allocation step on) and `fill[k % bs]`.
        let (mut alloc, mut fill) = std::mem::take(&mut self.stretch_classes);
        alloc.resize_with(bs as usize, Vec::new);
        fill.resize_with(bs as usize, Vec::new);
        alloc.iter_mut().for_each(Vec::clear);
        fill.iter_mut().for_each(Vec::clear);
        for &idx in &self.running {
            let r = &self.reqs[idx as usize];
            let c = r.num_computed as u64;
            let have = P::held_len(&self.held[idx as usize]) as u64;
            // The first k with c + k > have * bs: the target outgrows the blocks held.
            let first_alloc = (have * bs + 1).saturating_sub(c).max(1);
            alloc[(first_alloc % bs) as usize].push((idx, first_alloc));
            // The first k with (c + k) % bs == 0.
            fill[((bs - c % bs) % bs) as usize].push(idx);
        }
        let stored_before: u64 = match &self.log {
            Some(_) => self
                .running
                .iter()
                .map(|&i| self.reqs[i as usize].bytes_stored)
                .sum(),
            None => 0,
        };
        let mut t = now;
        // End of the first step, and the longest later step (every request's gap then).
        let (mut first_end, mut max_gap) = (SimTime::ZERO, SimDuration::ZERO);
        let mut k = 0u64;
        while k < k_max && (k == 0 || t < horizon) {
            let step = k + 1;
            let class = (step % bs) as usize;
            let need = alloc[class].iter().filter(|(_, f)| step >= *f).count() as u32;
            if need > self.pool.num_free() {
                break; // the step preempts: stepped one by one
            }
            for &(idx, first) in &alloc[class] {
                if step >= first {
                    let target = self.reqs[idx as usize].num_computed + step as u32;
                    let ok = self.grow(idx, target);
                    debug_assert!(ok, "free blocks counted");
                }
            }
            let shape = BatchShape {
                decode_seqs: n,
                decode_ctx: ctx0 + n * k,
                seqs: n,
                ..BatchShape::default()
            };
            let end = t + SimDuration::from_secs_f64(self.step_model.step_s(&shape));
            for &idx in &fill[class] {
                let c = self.reqs[idx as usize].num_computed;
                self.reqs[idx as usize].num_computed = c + step as u32;
                self.cache_full_blocks(idx);
                if save_full_blocks {
                    let saved = self.save(idx, end);
                    debug_assert_eq!(saved, Seconds::ZERO, "saves off the critical path");
                }
                self.reqs[idx as usize].num_computed = c;
            }
            let registered = watch_blocked
                && self
                    .blocked
                    .is_some_and(|(_, e)| e != self.pool.admission_epoch());
            self.stats.steps += 1;
            self.stats.decode_tokens += n;
            self.stats.busy += end - t;
            let used = self.pool.num_used();
            self.stats.peak_used_blocks = self.stats.peak_used_blocks.max(used);
            self.stats.used_block_ns += used as f64 * (end - t).as_ns() as f64;
            if k == 0 {
                first_end = end;
            } else {
                // Every request's gap in a later step is the step itself.
                self.itl_hist.add((end - t).as_ns(), n);
                max_gap = max_gap.max(end - t);
            }
            t = end;
            k += 1;
            if registered {
                break; // the next step's admission attempt may succeed
            }
        }
        self.stretch_classes = (alloc, fill);
        if k == 0 {
            return None;
        }
        self.stats.stretch_steps += k;
        let last_end = t;
        for &idx in &self.running {
            let r = &mut self.reqs[idx as usize];
            let gap1 = first_end - r.last_token;
            self.itl_hist.add(gap1.as_ns(), 1);
            r.itl_sum += last_end - r.last_token;
            r.itl_max = r.itl_max.max(gap1).max(max_gap);
            r.last_token = last_end;
            r.num_output += k as u32;
            r.num_computed += k as u32;
        }
        for j in 0..self.running.len() {
            let idx = self.running[j];
            self.cache_full_blocks(idx);
        }
        if self.log.is_some() {
            self.log_stretch(now, last_end, k, n, stored_before);
        }
        Some(StepOutcome {
            end: last_end,
            ..StepOutcome::default()
        })
    }

    /// Records a decode-only stretch of `k` steps of `n` requests from `start` to `end` as one
    /// span; its saves (of blocks filled, off the critical path) as one store at its end.
    #[cold]
    fn log_stretch(&mut self, start: SimTime, end: SimTime, k: u64, n: u64, stored_before: u64) {
        let stored: u64 = self
            .running
            .iter()
            .map(|&i| self.reqs[i as usize].bytes_stored)
            .sum::<u64>()
            - stored_before;
        let record = StepRecord {
            steps: k,
            decode_tokens: n * k,
            requests: n as u32,
            forward_s: (end - start).as_secs_f64(),
            bytes_stored: stored,
            ..self.blank_record(StepKind::Stretch, start, end)
        };
        self.take_tier_writes();
        let log = self.log.as_mut().expect("recording");
        log.step(record);
        if stored > 0 {
            log.transfer(TransferRecord {
                req: u32::MAX,
                dir: Direction::Store,
                start: end,
                end,
                bytes: stored,
                blocking: false,
            });
        }
    }

    /// A record of `kind` from `start` to `end` with no work in it yet, and the engine's state
    /// now (blocks used, requests running and waiting).
    fn blank_record(&self, kind: StepKind, start: SimTime, end: SimTime) -> StepRecord {
        StepRecord {
            kind,
            start,
            end,
            steps: 0,
            prefill_tokens: 0,
            decode_tokens: 0,
            requests: 0,
            lookup_s: 0.0,
            load_s: 0.0,
            forward_s: 0.0,
            store_s: 0.0,
            transfer_s: 0.0,
            layerwise: self.connector.layerwise(),
            bytes_stored: 0,
            used_blocks: self.pool.num_used(),
            running: self.running.len() as u32,
            waiting: self.waiting.len() as u32,
        }
    }

    /// Records a step that ran no batch but spent `lookup` in connector lookups.
    #[cold]
    fn log_lookup_only(&mut self, start: SimTime, end: SimTime, lookup: Seconds) {
        let record = StepRecord {
            lookup_s: lookup.0,
            ..self.blank_record(StepKind::LookupOnly, start, end)
        };
        let log = self.log.as_mut().expect("recording");
        log.pending_loads.clear();
        log.step(record);
    }

    /// Runs one step starting at `now`; `None` when there is nothing to run.
    fn one_step(&mut self, now: SimTime) -> Option<StepOutcome> {
        let mut out = StepOutcome::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        // The step's (request, tokens), in a list kept between steps.
        let mut plan = std::mem::take(&mut self.plan);
        plan.clear();
        let mut shape = BatchShape::default();
        let mut lookup = Seconds::ZERO;
        let mut load = Seconds::ZERO;
        let mut preempted = false;

        // 1. Running requests.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let idx = self.running[i];
            let r = &self.reqs[idx as usize];
            let n = (r.num_tokens() - r.num_computed).min(budget);
            let target = r.num_computed + n;
            let mut self_preempted = false;
            while !self.grow(idx, target) {
                let victim = self.running.pop().expect("running is not empty");
                self.preempt(victim);
                preempted = true;
                if victim == idx {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            self.add_to_shape(&mut shape, idx, n);
            plan.push((idx, n));
            budget -= n;
            i += 1;
        }

        // 2. Waiting requests.
        if !preempted {
            let mut skipped: Vec<u32> = Vec::new();
            while let Some(&idx) = self.waiting.front() {
                if self.running.len() >= self.cfg.max_num_seqs as usize || budget == 0 {
                    break;
                }
                if self.reqs[idx as usize].phase == Phase::Loading {
                    if self.reqs[idx as usize].ready > now {
                        skipped.push(self.waiting.pop_front().expect("front exists"));
                        continue;
                    }
                    self.reqs[idx as usize].phase = Phase::Waiting;
                }
                match self.admit(idx, now, budget, &mut lookup, &mut load) {
                    Admit::Scheduled(n) => {
                        self.waiting.pop_front();
                        self.add_to_shape(&mut shape, idx, n);
                        plan.push((idx, n));
                        budget -= n;
                        self.running.push(idx);
                        let r = &mut self.reqs[idx as usize];
                        r.phase = Phase::Running;
                        r.scheduled.get_or_insert(now);
                    }
                    Admit::Loading(ready) => {
                        skipped.push(self.waiting.pop_front().expect("front exists"));
                        out.wakeups.push(ready);
                    }
                    Admit::NoRoom => {
                        self.blocked = Some((idx, self.pool.admission_epoch()));
                        break;
                    }
                }
            }
            for idx in skipped.into_iter().rev() {
                self.waiting.push_front(idx);
            }
        }

        if plan.is_empty() {
            self.plan = plan;
            // Nothing could run (all waiting requests are loading): the lookups still took time.
            return if out.wakeups.is_empty() {
                None
            } else {
                out.end = now + lookup.to_duration();
                if self.log.is_some() {
                    self.log_lookup_only(now, out.end, lookup);
                }
                Some(out)
            };
        }

        // The step's blocking loads wait for data through a shared path (a fleet's remote
        // store): the forward pass runs when it is through, which later traffic may delay.
        if let Some(through) = self.connector.blocking_data(now) {
            self.plan = plan;
            self.pending = Some(PendingStep {
                start: now,
                due: through,
                shape,
                lookup,
                load,
            });
            out.end = through;
            out.settle = true;
            return Some(out);
        }
        Some(self.forward(now, plan, &shape, lookup, load, out))
    }

    /// Settles the step whose forward pass waits for shared data ([`StepOutcome::settle`]), at
    /// its due time `now` ([`Engine::settle_due`]): the step as [`Engine::step`] gives it once
    /// the data is through, else when it is now projected to be (later traffic slowed it),
    /// which becomes its due time.
    pub fn settle(&mut self, now: SimTime) -> Result<StepOutcome, SimTime> {
        let Some(mut p) = self.pending.take() else {
            debug_assert!(false, "settle without a pending step");
            return Err(SimTime::MAX);
        };
        let mut load = p.load;
        if let Some(through) = self.connector.blocking_data(now) {
            if through > now {
                p.due = through;
                self.pending = Some(p);
                return Err(through);
            }
            load += Seconds((through - p.start).as_secs_f64());
        }
        let plan = std::mem::take(&mut self.plan);
        Ok(self.forward(
            p.start,
            plan,
            &p.shape,
            p.lookup,
            load,
            StepOutcome::default(),
        ))
    }

    /// When the step waiting for shared data is due to be settled ([`Engine::settle`]), if one
    /// waits.
    pub fn settle_due(&self) -> Option<SimTime> {
        self.pending.as_ref().map(|p| p.due)
    }

    /// The forward pass of the step that started at `now` and the saves on its critical path,
    /// then its sampled tokens and finished requests.
    fn forward(
        &mut self,
        now: SimTime,
        plan: Vec<(u32, u32)>,
        shape: &BatchShape,
        lookup: Seconds,
        load: Seconds,
        mut out: StepOutcome,
    ) -> StepOutcome {
        // 3. Forward pass, then saves on the critical path.
        let forward = Seconds(self.step_model.step_s(shape));
        let fwd_end = now + (lookup + load + forward).to_duration();
        let mut store = Seconds::ZERO;
        let logging = self.log.is_some();
        let mut stored_bytes = 0u64;
        for &(idx, n) in &plan {
            self.reqs[idx as usize].num_computed += n;
            self.cache_full_blocks(idx);
            let before = self.reqs[idx as usize].bytes_stored;
            let s = self.save(idx, fwd_end);
            if logging {
                let bytes = self.reqs[idx as usize].bytes_stored - before;
                stored_bytes += bytes;
                self.log_save(idx, fwd_end + store.to_duration(), s, bytes);
            }
            store += s;
        }
        let (lookup_s, load_s, forward_s, store_s) = (lookup.0, load.0, forward.0, store.0);
        let transfer_s = if self.connector.layerwise() {
            let moved = load_s + store_s;
            (forward_s.max(moved) - forward_s) + moved / self.layers as f64
        } else {
            load_s + store_s
        };
        let total = lookup_s + transfer_s + forward_s;
        let end = now + SimDuration::from_secs_f64(total);
        self.stats.steps += 1;
        self.stats.busy += end - now;
        self.stats.transfer += SimDuration::from_secs_f64(lookup_s + transfer_s);
        let used = self.pool.num_used();
        self.stats.peak_used_blocks = self.stats.peak_used_blocks.max(used);
        self.stats.used_block_ns += used as f64 * (end - now).as_ns() as f64;
        // (Blocks used and requests running and waiting are taken at the end, in `log_step`.)
        let logged = logging.then(|| StepRecord {
            steps: 1,
            prefill_tokens: shape.prefill_tokens,
            decode_tokens: shape.decode_seqs,
            requests: plan.len() as u32,
            lookup_s,
            load_s,
            forward_s,
            store_s,
            transfer_s,
            bytes_stored: stored_bytes,
            ..self.blank_record(StepKind::Step, now, end)
        });

        // 4. Sample tokens, finish requests.
        for &(idx, _) in &plan {
            let r = &mut self.reqs[idx as usize];
            if r.num_computed < r.num_tokens() {
                continue; // a chunked prefill that is not done yet
            }
            if r.num_output > 0 {
                self.itl_hist.add((end - r.last_token).as_ns(), 1);
            }
            r.emit_token(end);
            if r.num_output == r.output_len {
                r.phase = Phase::Finished;
                r.finish = Some(end);
                out.finished.push(idx);
            }
        }
        if !out.finished.is_empty() {
            for &idx in &out.finished {
                self.release(idx);
                self.connector.request_finished(idx);
            }
            let reqs = &self.reqs;
            self.running
                .retain(|i| reqs[*i as usize].phase == Phase::Running);
        }
        if let Some(record) = logged {
            self.log_step(record, now + lookup.to_duration());
        }
        self.plan = plan;
        out.end = end;
        out
    }

    /// Records a save of `bytes` for slot `idx` taking `critical` from `at`.
    #[cold]
    fn log_save(&mut self, idx: u32, at: SimTime, critical: Seconds, bytes: u64) {
        if bytes == 0 && critical == Seconds::ZERO {
            return;
        }
        let req = self.reqs[idx as usize].idx;
        let log = self.log.as_mut().expect("recording");
        log.transfer(TransferRecord {
            req,
            dir: Direction::Store,
            start: at,
            end: at + critical.to_duration(),
            bytes,
            blocking: critical.0 > 0.0,
        });
    }

    /// Records step `record` (its end-of-step counts filled in here) and lays its blocking
    /// loads out one after another from `loads_from`.
    #[cold]
    fn log_step(&mut self, mut record: StepRecord, loads_from: SimTime) {
        record.running = self.running.len() as u32;
        record.waiting = self.waiting.len() as u32;
        record.used_blocks = self.pool.num_used();
        self.take_tier_writes();
        let log = self.log.as_mut().expect("recording");
        let mut at = loads_from;
        for (req, s, bytes, tiers) in std::mem::take(&mut log.pending_loads) {
            let end = at + SimDuration::from_secs_f64(s);
            log.transfer(TransferRecord {
                req,
                dir: Direction::Load(tiers),
                start: at,
                end,
                bytes,
                blocking: true,
            });
            at = end;
        }
        log.step(record);
    }

    fn add_to_shape(&mut self, shape: &mut BatchShape, idx: u32, n: u32) {
        let r = &self.reqs[idx as usize];
        if n == 1 && r.num_output > 0 && r.num_computed + 1 == r.num_tokens() {
            shape.add_decode(r.num_computed as u64);
            self.stats.decode_tokens += 1;
        } else {
            shape.add_prefill(n as u64, r.num_computed as u64);
            self.stats.prefill_tokens += n as u64;
        }
    }

    /// The connector's save of what request `idx` computed, after a forward pass ending at `at`
    /// (skipped while the connector said it would do nothing); returns its critical-path time.
    #[inline]
    fn save(&mut self, idx: u32, at: SimTime) -> Seconds {
        let i = idx as usize;
        if self.reqs[i].num_computed < self.save_at[i] {
            return Seconds::ZERO;
        }
        let req = conn_req(
            self.trace,
            &self.hashes,
            &self.reqs,
            self.cfg.block_size,
            idx,
        );
        let saved = self.connector.save(&req, at);
        self.save_at[i] = saved.next;
        self.reqs[i].bytes_stored += saved.bytes;
        saved.critical
    }

    #[inline]
    fn cache_full_blocks(&mut self, idx: u32) {
        let bs = self.cfg.block_size;
        let hashes = &self.hashes[idx as usize];
        let full = (self.reqs[idx as usize].num_computed / bs).min(hashes.len() as u32);
        // Blocks past what any other request shares can never be hit by another request.
        let shareable = (self.slot_shareable[idx as usize] / bs).min(full);
        self.pool
            .register(&mut self.held[idx as usize], hashes, shareable);
    }

    /// Tries to admit waiting request `idx` with `budget` tokens left in the step.
    fn admit(
        &mut self,
        idx: u32,
        now: SimTime,
        budget: u32,
        lookup: &mut Seconds,
        load: &mut Seconds,
    ) -> Admit {
        let bs = self.cfg.block_size;
        if self.reqs[idx as usize].num_computed > 0 {
            // Its external KV arrived asynchronously; its blocks are held already.
            let r = &self.reqs[idx as usize];
            let n = (r.num_tokens() - r.num_computed).min(budget);
            let target = r.num_computed + n;
            return if self.grow(idx, target) {
                Admit::Scheduled(n)
            } else {
                Admit::NoRoom
            };
        }
        self.prepare(idx);
        let num_tokens = self.reqs[idx as usize].num_tokens();
        let prompt_len = self.reqs[idx as usize].prompt_len;
        let max_hit_blocks = ((num_tokens - 1) / bs) as usize;
        let mut scan = std::mem::take(&mut self.scan);
        let gpu_blocks = {
            let hashes = &self.hashes[idx as usize];
            let cap = max_hit_blocks.min(hashes.len());
            self.pool.scan_hits(&mut scan, &hashes[..cap])
        };
        let gpu_hit = gpu_blocks as u32 * bs;

        // The connector's match beyond the local hit.
        let req = conn_req(self.trace, &self.hashes, &self.reqs, bs, idx);
        let m = self
            .connector
            .get_num_new_matched_tokens(&req, gpu_hit, now);
        *lookup += m.lookup;
        let (ext_end, tiers, load_async) = match m.matched {
            Matched::Later { ready } => {
                self.scan = scan;
                let r = &mut self.reqs[idx as usize];
                r.phase = Phase::Loading;
                r.ready = ready;
                return Admit::Loading(ready);
            }
            Matched::Tokens {
                end,
                tiers,
                load_async,
            } => (end.max(gpu_hit), tiers, load_async),
        };

        // Blocks for the hit and the new tokens (for the hit only when it loads
        // asynchronously: the new tokens wait for it).
        let n = (num_tokens - ext_end).min(budget);
        let target = if load_async { ext_end } else { ext_end + n };
        // Free blocks needed: the new ones, plus the hit blocks that sit in the free queue.
        let need_new = self.blocks_for(target) as usize - gpu_blocks;
        let touched_free = gpu_blocks - self.pool.count_busy(&scan);
        if need_new + touched_free > self.pool.num_free() as usize {
            self.scan = scan;
            return Admit::NoRoom;
        }
        self.pool.take_hits(&scan, &mut self.held[idx as usize]);
        self.scan = scan;
        let ok = self.grow(idx, target);
        debug_assert!(ok);

        // Record where the prompt's tokens come from.
        let mut origin = Origin {
            gpu: gpu_hit.min(prompt_len),
            cpu: tiers.cpu,
            disk: tiers.disk,
            remote: tiers.remote,
            computed: 0,
        };
        origin.computed = prompt_len - origin.gpu - origin.cpu - origin.disk - origin.remote;
        let r = &mut self.reqs[idx as usize];
        if r.preemptions == 0 {
            r.origin = origin;
        } else {
            // A preempted request re-hitting what it computed itself is not reuse: vLLM counts
            // its lookups apart (`preempted_queries`, `preempted_hits`), and so do we.
            let h = &mut r.rehits;
            h.queries = h.queries.saturating_add(num_tokens);
            h.gpu = h.gpu.saturating_add(gpu_hit);
            h.external = h.external.saturating_add(ext_end - gpu_hit);
        }
        r.num_computed = ext_end;

        let req = conn_req(self.trace, &self.hashes, &self.reqs, bs, idx);
        let started = self
            .connector
            .update_state_after_alloc(&req, gpu_hit, &m.matched, now);
        self.save_at[idx as usize] = 0;
        let r = &mut self.reqs[idx as usize];
        match started {
            Load::None => {}
            Load::Blocking { time, bytes } => {
                *load += time;
                r.bytes_loaded += bytes;
                if let Some(log) = &mut self.log {
                    log.pending_loads.push((r.idx, time.0, bytes, tiers));
                }
            }
            Load::Async { ready, bytes } => {
                r.bytes_loaded += bytes;
                r.phase = Phase::Loading;
                r.ready = ready;
                if let Some(log) = &mut self.log {
                    log.transfer(TransferRecord {
                        req: r.idx,
                        dir: Direction::Load(tiers),
                        start: now,
                        end: ready,
                        bytes,
                        blocking: false,
                    });
                }
                return Admit::Loading(ready);
            }
        }
        Admit::Scheduled(n)
    }
}

enum Admit {
    Scheduled(u32),
    Loading(SimTime),
    NoRoom,
}

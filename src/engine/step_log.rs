//! What an engine did step by step, recorded only when asked (a timeline): typed records of its
//! steps and of the KV transfers its connector charged, kept up to a limit.
//!
//! Recording is off by default; an engine without a log pays one `Option` check per step. The
//! records are what the step loop already computes (its parts' seconds, the loads and saves the
//! connector returned): recording changes no result.

use crate::connector::{TierTokens, TierWrite};
use crate::time::SimTime;

/// What kind of work a [`StepRecord`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// One scheduler step with a forward pass.
    Step,
    /// A decode-only stretch: `steps` consecutive pure-decode steps the engine ran in one call
    /// (see the scheduler's module doc), recorded as one span.
    Stretch,
    /// A scheduling pass that ran no batch (every waiting request's load was still under way)
    /// but whose connector lookups took time.
    LookupOnly,
}

/// One step (or one decode-only stretch) of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// What it covers.
    pub kind: StepKind,
    /// When it started.
    pub start: SimTime,
    /// When it ended (the engine's step end: what the simulation advanced by).
    pub end: SimTime,
    /// Scheduler steps covered (1, or a stretch's length).
    pub steps: u64,
    /// Tokens run through prefill.
    pub prefill_tokens: u64,
    /// Tokens decoded.
    pub decode_tokens: u64,
    /// Requests in the batch.
    pub requests: u32,
    /// Connector lookups at scheduling, seconds.
    pub lookup_s: f64,
    /// Blocking loads the forward pass waited for (a shared store's bytes included), seconds.
    pub load_s: f64,
    /// The forward pass (the step model's time; a stretch's: all its steps), seconds.
    pub forward_s: f64,
    /// Critical-path saves after the forward pass, seconds.
    pub store_s: f64,
    /// Loads and saves as charged to the step: `load_s + store_s`, or with layer-wise transfers
    /// what of them the forward pass does not hide. `lookup_s + transfer_s + forward_s` is the
    /// step's length (before rounding to nanoseconds).
    pub transfer_s: f64,
    /// Whether transfers overlap the forward pass layer by layer.
    pub layerwise: bool,
    /// Bytes its saves moved off the GPU (a stretch's block-filling saves included).
    pub bytes_stored: u64,
    /// GPU KV blocks in use at its end.
    pub used_blocks: u32,
    /// Requests running at its end.
    pub running: u32,
    /// Requests waiting at its end.
    pub waiting: u32,
}

/// Which way a [`TransferRecord`] moves KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the GPU (a load), with the prompt tokens each tier supplied.
    Load(TierTokens),
    /// Out of the GPU (a save).
    Store,
}

/// One load or save the connector charged, as the engine saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRecord {
    /// The request's index in the trace.
    pub req: u32,
    /// Its direction (and for a load, where the tokens came from).
    pub dir: Direction,
    /// When it started.
    pub start: SimTime,
    /// When it ended (equal to `start` for a save off the critical path).
    pub end: SimTime,
    /// Bytes moved to or from the GPU.
    pub bytes: u64,
    /// Whether the step waited for it (a blocking load, a critical-path save) or it ran beside
    /// the batch (an asynchronous load).
    pub blocking: bool,
}

/// An engine's records, up to `limit` of each kind; what did not fit is counted.
#[derive(Debug, Clone, Default)]
pub struct StepLog {
    /// Steps, in order.
    pub steps: Vec<StepRecord>,
    /// Transfers, in the order they were charged.
    pub transfers: Vec<TransferRecord>,
    /// Writes into tiers beside the engine (disk writes, remote puts), as the connector
    /// reported them.
    pub tier_writes: Vec<TierWrite>,
    /// Most records of each kind kept.
    pub limit: usize,
    /// KV bytes per token of this engine (to turn a load's tier tokens into bytes).
    pub bytes_per_token: u64,
    /// Step records past the limit, not kept.
    pub dropped_steps: u64,
    /// Transfer records past the limit, not kept.
    pub dropped_transfers: u64,
    /// Blocking loads of the step being scheduled: (request, seconds, bytes, tiers), laid out
    /// when its forward pass is.
    pub(crate) pending_loads: Vec<(u32, f64, u64, TierTokens)>,
}

impl StepLog {
    /// An empty log keeping at most `limit` records of each kind, for an engine whose KV takes
    /// `bytes_per_token` per token.
    pub fn new(limit: usize, bytes_per_token: u64) -> Self {
        StepLog {
            limit,
            bytes_per_token,
            ..Default::default()
        }
    }

    /// Keeps `s`, or counts it when the log is full.
    pub fn step(&mut self, s: StepRecord) {
        if self.steps.len() < self.limit {
            self.steps.push(s);
        } else {
            self.dropped_steps += 1;
        }
    }

    /// Keeps the tier writes in `w` (emptied) while there is room, counts the others as
    /// dropped transfers.
    pub fn tier_writes(&mut self, w: &mut Vec<TierWrite>) {
        let room = self
            .limit
            .saturating_sub(self.tier_writes.len())
            .min(w.len());
        self.dropped_transfers += (w.len() - room) as u64;
        self.tier_writes.extend(w.drain(..room));
        w.clear();
    }

    /// Keeps `t`, or counts it when the log is full.
    pub fn transfer(&mut self, t: TransferRecord) {
        if self.transfers.len() < self.limit {
            self.transfers.push(t);
        } else {
            self.dropped_transfers += 1;
        }
    }
}

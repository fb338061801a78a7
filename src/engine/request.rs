//! A request's state inside the engine, and what is recorded about it.

use crate::tiers::lmcache::Chunk;

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet sent by its client.
    Pending,
    /// In the waiting queue.
    Waiting,
    /// Its external KV is being loaded asynchronously; skipped by the scheduler until then.
    Loading,
    /// In the running batch.
    Running,
    /// Generated all its tokens.
    Finished,
    /// Never simulated (see `reject`).
    Rejected,
}

/// Prompt tokens of the final prefill by where they came from. They sum to the prompt length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// vLLM's GPU prefix cache.
    pub gpu: u32,
    /// Offload CPU tier (LMCache local CPU, or vLLM's native CPU offload).
    pub cpu: u32,
    /// LMCache local disk.
    pub disk: u32,
    /// LMCache remote store.
    pub remote: u32,
    /// Computed by the forward pass.
    pub computed: u32,
}

/// One request's engine state and record.
#[derive(Debug, Clone)]
pub struct ReqState {
    /// Index in the trace.
    pub idx: u32,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Tokens to generate.
    pub output_len: u32,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Tokens whose KV is on the GPU.
    pub num_computed: u32,
    /// Tokens generated so far.
    pub num_output: u32,
    /// Offload keys (LMCache chunks, or native offload blocks) of the prompt.
    pub chunks: Vec<Chunk>,
    /// Leading chunks already in the offload store (hits, or stored by this request).
    pub chunks_saved: u32,
    /// Time the request was sent.
    pub arrival_ns: u64,
    /// First time it was scheduled.
    pub scheduled_ns: Option<u64>,
    /// Time its first token was produced.
    pub first_token_ns: Option<u64>,
    /// Time its last token was produced.
    pub finish_ns: Option<u64>,
    /// Time its previous token was produced.
    pub last_token_ns: u64,
    /// Sum of the gaps between successive tokens.
    pub itl_sum_ns: u64,
    /// Largest gap between successive tokens.
    pub itl_max_ns: u64,
    /// Prompt tokens by origin (of the prefill that completed).
    pub origin: Origin,
    /// Bytes loaded into the GPU from offload tiers.
    pub bytes_loaded: u64,
    /// Bytes stored from the GPU into offload tiers.
    pub bytes_stored: u64,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Time an asynchronous load completes (phase Loading).
    pub ready_ns: u64,
    /// Tokens an asynchronous load brings (phase Loading).
    pub pending_load: u32,
    /// Why it was never simulated.
    pub reject: Option<String>,
    /// LMCache's cached lookup result while it waits (LMCache looks a request up once, pins
    /// the hits, and forgets the result when the request is scheduled).
    pub lmc_lookup: Option<crate::tiers::lmcache::TierHits>,
}

impl ReqState {
    /// A request not yet sent.
    pub fn new(idx: u32, prompt_len: u32, output_len: u32) -> Self {
        ReqState {
            idx,
            prompt_len,
            output_len,
            phase: Phase::Pending,
            num_computed: 0,
            num_output: 0,
            chunks: Vec::new(),
            chunks_saved: 0,
            arrival_ns: 0,
            scheduled_ns: None,
            first_token_ns: None,
            finish_ns: None,
            last_token_ns: 0,
            itl_sum_ns: 0,
            itl_max_ns: 0,
            origin: Origin::default(),
            bytes_loaded: 0,
            bytes_stored: 0,
            preemptions: 0,
            ready_ns: 0,
            pending_load: 0,
            reject: None,
            lmc_lookup: None,
        }
    }

    /// Tokens of the sequence so far: the prompt plus generated tokens.
    pub fn num_tokens(&self) -> u32 {
        self.prompt_len + self.num_output
    }

    /// Records a token produced at `t`.
    pub fn emit_token(&mut self, t: u64) {
        if self.num_output == 0 {
            self.first_token_ns = Some(t);
        } else {
            let gap = t - self.last_token_ns;
            self.itl_sum_ns += gap;
            self.itl_max_ns = self.itl_max_ns.max(gap);
        }
        self.last_token_ns = t;
        self.num_output += 1;
    }
}

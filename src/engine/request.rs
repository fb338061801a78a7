//! A request's state inside the engine, and what is recorded about it.

use crate::time::{SimDuration, SimTime};

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
    /// A connector's CPU tier.
    pub cpu: u32,
    /// A connector's disk tier.
    pub disk: u32,
    /// A connector's remote store.
    pub remote: u32,
    /// Computed by the forward pass.
    pub computed: u32,
}

/// A preempted request's lookups when it is admitted again, summed over its re-admissions:
/// vLLM counts them apart from first admissions (`preempted_queries` and `preempted_hits` of its
/// prefix-cache statistics), since a request re-hitting the blocks it computed itself before
/// its preemption is not reuse across requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rehits {
    /// Tokens of its sequence (prompt and output so far) looked up.
    pub queries: u32,
    /// Of them, found in the GPU prefix cache.
    pub gpu: u32,
    /// Of them, supplied by the KV connector beyond the GPU hit.
    pub external: u32,
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
    /// Time the request was sent.
    pub arrival: SimTime,
    /// First time it was scheduled.
    pub scheduled: Option<SimTime>,
    /// Time its first token was produced.
    pub first_token: Option<SimTime>,
    /// Time its last token was produced.
    pub finish: Option<SimTime>,
    /// Time its previous token was produced.
    pub last_token: SimTime,
    /// Sum of the gaps between successive tokens.
    pub itl_sum: SimDuration,
    /// Largest gap between successive tokens.
    pub itl_max: SimDuration,
    /// Prompt tokens by origin, at its first admission (what a hit rate counts).
    pub origin: Origin,
    /// Its lookups at admissions after a preemption, counted apart from `origin`.
    pub rehits: Rehits,
    /// Bytes loaded into the GPU from offload tiers.
    pub bytes_loaded: u64,
    /// Bytes stored from the GPU into offload tiers.
    pub bytes_stored: u64,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Time an asynchronous load completes (phase Loading).
    pub ready: SimTime,
    /// Why it was never simulated.
    pub reject: Option<RejectReason>,
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
            arrival: SimTime::ZERO,
            scheduled: None,
            first_token: None,
            finish: None,
            last_token: SimTime::ZERO,
            itl_sum: SimDuration::ZERO,
            itl_max: SimDuration::ZERO,
            origin: Origin::default(),
            rehits: Rehits::default(),
            bytes_loaded: 0,
            bytes_stored: 0,
            preemptions: 0,
            ready: SimTime::ZERO,
            reject: None,
        }
    }

    /// Tokens of the sequence so far: the prompt plus generated tokens.
    pub fn num_tokens(&self) -> u32 {
        self.prompt_len + self.num_output
    }

    /// Records a token produced at `t`.
    pub fn emit_token(&mut self, t: SimTime) {
        if self.num_output == 0 {
            self.first_token = Some(t);
        } else {
            let gap = t - self.last_token;
            self.itl_sum += gap;
            self.itl_max = self.itl_max.max(gap);
        }
        self.last_token = t;
        self.num_output += 1;
    }
}

/// Why a request did not complete. Its text (`Display`) is what records and Parquet carry; its
/// [`kind`](RejectReason::kind) is what summaries count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// Prompt plus output exceed `max_model_len` (vLLM refuses the request).
    ExceedsMaxModelLen {
        /// Prompt + output tokens.
        tokens: u64,
        /// The engine's `max_model_len`.
        max_model_len: u32,
    },
    /// The request needs more KV blocks than the GPU has: it could never be scheduled.
    ExceedsKvCapacity {
        /// Blocks it needs.
        blocks: u64,
        /// Blocks the GPU has.
        gpu_blocks: u32,
    },
    /// Never sent: its client pool stopped early (vLLM multi-turn's early stop).
    Abandoned,
    /// Nothing to generate: vLLM needs at least one output token (`max_tokens >= 1`).
    NoOutputTokens,
    /// Refused in front of the router: the admission token bucket held fewer tokens than the
    /// prompt has.
    NotAdmitted,
}

impl RejectReason {
    /// Every kind, in the order summaries list them.
    pub const KINDS: [&'static str; 5] = [
        "exceeds max_model_len",
        "exceeds GPU KV capacity",
        "abandoned by early stop",
        "no output tokens",
        "not admitted",
    ];

    /// The kind of reason, for counting (one of [`RejectReason::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::ExceedsMaxModelLen { .. } => Self::KINDS[0],
            RejectReason::ExceedsKvCapacity { .. } => Self::KINDS[1],
            RejectReason::Abandoned => Self::KINDS[2],
            RejectReason::NoOutputTokens => Self::KINDS[3],
            RejectReason::NotAdmitted => Self::KINDS[4],
        }
    }

    /// Whether the request was ever sent to the server.
    pub fn was_sent(&self) -> bool {
        !matches!(self, RejectReason::Abandoned)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::ExceedsMaxModelLen {
                tokens,
                max_model_len,
            } => write!(
                f,
                "prompt + output = {tokens} tokens exceeds max_model_len {max_model_len}"
            ),
            RejectReason::ExceedsKvCapacity { blocks, gpu_blocks } => {
                write!(f, "needs {blocks} KV blocks, the GPU has {gpu_blocks}")
            }
            RejectReason::Abandoned => write!(
                f,
                "abandoned: the client pool stopped early (vLLM multi-turn early stop)"
            ),
            RejectReason::NoOutputTokens => write!(
                f,
                "output_len 0: vLLM needs at least one token to generate (max_tokens >= 1)"
            ),
            RejectReason::NotAdmitted => write!(
                f,
                "not admitted: the admission token bucket held fewer tokens than the prompt"
            ),
        }
    }
}

impl std::str::FromStr for RejectReason {
    type Err = String;

    /// Reads back what `Display` wrote (a `requests.parquet` column).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not a reject reason kvreplay writes: {s:?}");
        if let Some(rest) = s.strip_prefix("prompt + output = ") {
            let (tokens, max) = rest
                .split_once(" tokens exceeds max_model_len ")
                .ok_or_else(bad)?;
            return Ok(RejectReason::ExceedsMaxModelLen {
                tokens: tokens.parse().map_err(|_| bad())?,
                max_model_len: max.parse().map_err(|_| bad())?,
            });
        }
        if let Some(rest) = s.strip_prefix("needs ") {
            let (blocks, gpu) = rest
                .split_once(" KV blocks, the GPU has ")
                .ok_or_else(bad)?;
            return Ok(RejectReason::ExceedsKvCapacity {
                blocks: blocks.parse().map_err(|_| bad())?,
                gpu_blocks: gpu.parse().map_err(|_| bad())?,
            });
        }
        for r in [
            RejectReason::Abandoned,
            RejectReason::NoOutputTokens,
            RejectReason::NotAdmitted,
        ] {
            if s == r.to_string() {
                return Ok(r);
            }
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_read_back_what_they_write() {
        let all = [
            RejectReason::ExceedsMaxModelLen {
                tokens: 140_000,
                max_model_len: 131_072,
            },
            RejectReason::ExceedsKvCapacity {
                blocks: 9,
                gpu_blocks: 3,
            },
            RejectReason::Abandoned,
            RejectReason::NoOutputTokens,
            RejectReason::NotAdmitted,
        ];
        for r in all {
            assert_eq!(r.to_string().parse::<RejectReason>(), Ok(r));
        }
        assert_eq!(all.map(|r| r.kind()).to_vec(), RejectReason::KINDS.to_vec());
        assert_eq!(
            all[1].to_string(),
            "needs 9 KV blocks, the GPU has 3",
            "the text records carry"
        );
        assert!("needs many KV blocks".parse::<RejectReason>().is_err());
        assert!(!RejectReason::Abandoned.was_sent() && all[0].was_sent());
    }
}

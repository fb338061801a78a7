//! Fleets: many vLLM replicas behind a router, on one clock.
//!
//! A fleet is `replicas` engines of one configuration, or pools of engines that differ (GPU,
//! TP, engine flags, tiers: `crate::sim::PoolSetup`), each with its own GPU prefix cache and
//! its own connector (so its own local LMCache tiers or native CPU pool), and a router
//! ([`router`]) that picks a replica for each request when it is sent. The simulation runs them
//! on one event queue (`crate::sim`); one replica is exactly the single-engine run.
//!
//! # Order at one instant
//! Events at the same instant run in phase order (step ends and due store checks, client
//! wake-ups, sends and their routing, submissions, load wake-ups), then in the order they were
//! scheduled. Then, in replica order (0, 1, ...), the idle replicas start their next steps and
//! the steps waiting for a shared store's bytes that are through run their forward passes. A
//! router deciding at `t` sees every completion at `t` but no step started at `t`.
//!
//! # What a router knows
//! Load signals (waiting and running requests, GPU KV usage) reach the router as snapshots taken
//! every `router_refresh_ms` (vLLM's coordinator republishes at most every 100 ms, llm-d scrapes
//! every 50 ms; 0 is an oracle that sees the present), plus what the router itself decided since
//! (its in-flight counts, its own prefix index). See [`signals`].

pub mod admission;
pub mod kv_events;
pub mod pd;
pub mod prefix_index;
pub mod router;
pub mod run_index;
pub mod signals;

pub use router::{Router, RouterKind};

use serde::{Deserialize, Serialize};

/// Which pool replica `r` belongs to when pools of `counts` replicas are numbered one after
/// another (`None`: past the last).
pub fn pool_of(counts: impl IntoIterator<Item = u32>, r: usize) -> Option<usize> {
    let mut first = 0usize;
    for (i, n) in counts.into_iter().enumerate() {
        first += n as usize;
        if r < first {
            return Some(i);
        }
    }
    None
}

/// Most replicas a fleet (or each pool of a disaggregated one) may have: each is a whole
/// engine in memory.
pub const MAX_REPLICAS: u32 = 4096;

/// A fleet's shape and routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// Engines, each a full vLLM instance with its own connector.
    pub replicas: u32,
    /// How requests are spread over them.
    pub router: RouterKind,
    /// How often the router's load signals are refreshed, ms (0: it sees the present).
    pub refresh_ms: f64,
    /// Weights of llm-d's scorers: prefix cache, queue depth, KV utilisation.
    pub weights: ScorerWeights,
    /// Blocks per replica in the router's own prefix index (llm-d's `lruCapacityPerServer`).
    pub lru_blocks: u32,
    /// Tokens per block of the router's prefix hashes.
    pub block_tokens: u32,
    /// Seed of the router's tie-breaks.
    pub seed: u64,
    /// How long a routing decision stays in a decision index, s (`router_ttl_s`; `None`: the
    /// router's default, Dynamo 120 s, llm-d until its LRU evicts it; 0: no TTL).
    pub ttl_s: Option<f64>,
    /// Where a cache-aware router's view of the caches comes from (`None`: the router's own
    /// default: llm-d its decisions, Dynamo the engines' KV events).
    pub cache_view: Option<CacheView>,
    /// With the `events` cache view: how long after the end of the step that made them the
    /// engines' KV events reach the router, ms (0: the router sees every cache as it is).
    pub events_delay_ms: f64,
    /// Which requests reach the router.
    pub admission: admission::Admission,
    /// Disaggregated prefill/decode (`replicas` is then prefill + decode).
    pub pd: Option<pd::PdConfig>,
    /// Dynamo: weight of the prefill blocks against the decode blocks (`--kv-overlap-score-weight`,
    /// 1 by default; 0 balances load alone).
    pub overlap_weight: f64,
    /// Dynamo: softmax temperature of the choice (0: the lowest cost).
    pub temperature: f64,
    /// kvaware: how many prompt tokens the controller's instance may lack and still be chosen
    /// (production-stack's `--kv-aware-threshold`, 2,000).
    pub kv_aware_threshold: u32,
    /// Replicas share one LMCache remote store (`remote_shared`), as replicas whose
    /// `remote_url` names one server do; else each has a store of its own.
    pub shared_store: bool,
    /// Round-trip times of the replicas to the remote store, ms, replica `r` taking entry
    /// `r % len` (`replica_rtt_ms`; empty: `rtt_ms` for all).
    pub rtt_ms: Vec<f64>,
    /// Bandwidth of the shared remote store's data path, GB/s (`remote_store_gbps`; `None`:
    /// the transfer profile's `remote_gbps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_gbps: Option<f64>,
}

impl FleetConfig {
    /// Where its router learns what replicas cache: the `router_cache_view` key, else the
    /// router's own default (llm-d its decisions, Dynamo the engines' KV events); `None` for
    /// routers that read no cache view.
    pub fn effective_cache_view(&self) -> Option<CacheView> {
        let default = match self.router {
            RouterKind::LlmD => CacheView::Decisions,
            RouterKind::Dynamo => CacheView::Events,
            _ => return None,
        };
        Some(self.cache_view.unwrap_or(default))
    }
}

/// Where a cache-aware router (llm-d, Dynamo) learns what each replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheView {
    /// Nothing: it scores no prefix (load alone).
    Nothing,
    /// Its own routing decisions (llm-d's approximate prefix producer; Dynamo without KV
    /// events, its TTL replaced by the per-replica capacity `router_lru_blocks`).
    Decisions,
    /// The engines' KV events: every replica's GPU prefix cache (llm-d's precise prefix-cache
    /// scorer, Dynamo's default), as it is, or as the events that have arrived describe it
    /// when they take `router_events_delay_ms` ([`kv_events`]).
    Events,
}

/// llm-d's scorer weights (its default profile: prefix 3, queue 2, KV utilisation 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScorerWeights {
    /// `prefix-cache-scorer`.
    pub prefix: f64,
    /// `queue-scorer`.
    pub queue: f64,
    /// `kv-cache-utilization-scorer`.
    pub kv: f64,
}

impl Default for ScorerWeights {
    fn default() -> Self {
        ScorerWeights {
            prefix: 3.0,
            queue: 2.0,
            kv: 2.0,
        }
    }
}

impl Default for FleetConfig {
    /// One replica (the single-engine run), round-robin, llm-d's defaults for its scorers.
    fn default() -> Self {
        FleetConfig {
            replicas: 1,
            router: RouterKind::RoundRobin,
            refresh_ms: 50.0,
            weights: ScorerWeights::default(),
            lru_blocks: 31_250,
            block_tokens: 16,
            seed: 0,
            ttl_s: None,
            cache_view: None,
            events_delay_ms: 0.0,
            admission: admission::Admission::Always,
            pd: None,
            overlap_weight: 1.0,
            temperature: 0.0,
            kv_aware_threshold: 2000,
            shared_store: true,
            rtt_ms: Vec::new(),
            store_gbps: None,
        }
    }
}

#[cfg(test)]
mod tests;

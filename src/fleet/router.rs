//! Routers: which replica serves a request, each as its source behaves (the facts and their
//! sources are gathered in the project's cluster notes; the summary of each is on its type).

use super::CacheView;
use super::FleetConfig;
use super::prefix_index::DecisionIndex;
use super::signals::Load;
use crate::time::{SimDuration, SimTime};
use crate::trace::Request;
use crate::util::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The routers kvreplay models (the `router` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterKind {
    /// production-stack's `roundrobin` (its Helm default): replicas in turn.
    RoundRobin,
    /// vLLM's data-parallel balancer as on main since mid-2026 (PRs #47420, #49204).
    VllmDp,
    /// vLLM's classic data-parallel balancer: `waiting*4 + running`.
    VllmDpClassic,
    /// production-stack's `session`: consistent hashing of the session, least-QPS without one.
    Session,
    /// llm-d's default scheduler profile: prefix cache (from its own decisions), queue depth and
    /// KV utilisation scorers, weighted 3/2/2, max-score picker.
    LlmD,
    /// The upper bound of cache-aware routing: the replica with the longest exact GPU prefix
    /// hit, least loaded among equals.
    Oracle,
    /// NVIDIA Dynamo's KV router: the lowest `overlap_weight * prefill blocks + decode blocks`,
    /// its cache view from the engines' KV events, its load tracked per request.
    Dynamo,
    /// production-stack's `kvaware`: the instance an LMCache controller lookup names, unless it
    /// holds less than the prompt minus `kv_aware_threshold` tokens (then `session`).
    Kvaware,
}

impl RouterKind {
    /// Every router, in the order `kvreplay keys` lists them.
    pub const ALL: [RouterKind; 8] = [
        RouterKind::RoundRobin,
        RouterKind::VllmDp,
        RouterKind::VllmDpClassic,
        RouterKind::Session,
        RouterKind::LlmD,
        RouterKind::Oracle,
        RouterKind::Dynamo,
        RouterKind::Kvaware,
    ];

    /// Its key value (`round_robin`, `vllm_dp`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::RoundRobin => "round_robin",
            RouterKind::VllmDp => "vllm_dp",
            RouterKind::VllmDpClassic => "vllm_dp_classic",
            RouterKind::Session => "session",
            RouterKind::LlmD => "llm_d",
            RouterKind::Oracle => "oracle",
            RouterKind::Dynamo => "dynamo",
            RouterKind::Kvaware => "kvaware",
        }
    }

    /// The router a key value names.
    pub fn from_name(name: &str) -> Option<RouterKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One request a router places.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Its index in the trace.
    pub idx: u32,
    /// The request (its content, session, lengths).
    pub request: &'a Request,
    /// When it is sent.
    pub now: SimTime,
}

/// What a router can ask about the replicas.
pub trait Replicas {
    /// Replicas in the fleet.
    fn count(&self) -> usize;
    /// Replica `r`'s load as the router's signals show it (as of the last refresh).
    fn load(&mut self, r: usize) -> Load;
    /// When the signals were last refreshed.
    fn refreshed_at(&self) -> SimTime;
    /// Replica `r`'s load now (the oracle's view).
    fn load_now(&mut self, r: usize) -> Load;
    /// The prompt tokens of `request` found in replica `r`'s GPU prefix cache now (the
    /// oracle's view, and that of a router fed by the engines' KV events).
    fn gpu_hit(&mut self, r: usize, request: &Request) -> u32;
    /// The prompt tokens of `request` a router fed by the engines' KV events believes replica
    /// `r` caches: [`Replicas::gpu_hit`] when events arrive at once, else what the events that
    /// have arrived say.
    fn events_hit(&mut self, r: usize, request: &Request) -> u32 {
        self.gpu_hit(r, request)
    }
    /// The work replica `r` has been given and not finished (what a router tracking its own
    /// requests knows exactly).
    fn active(&mut self, r: usize) -> Active;
    /// Tokens per KV block of the engines.
    fn block_size(&self) -> u32;
    /// What an LMCache controller answers for `request`'s prompt: the instance registered for
    /// its first chunk and the prompt tokens up to the last chunk registered for that instance
    /// in the run of registered chunks (`None`: its first chunk is registered nowhere).
    fn controller_lookup(&mut self, _request: &Request) -> Option<(usize, u32)> {
        None
    }
}

/// The requests a replica holds, as Dynamo's router tracks them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Active {
    /// Prompt tokens still to compute for requests without their first token.
    pub prefill_tokens: u64,
    /// KV blocks of every request in flight (prompt and output so far).
    pub blocks: u64,
}

/// A router: places requests on replicas and hears when they finish.
pub trait Router: std::fmt::Debug {
    /// The replica for `q`.
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize;
    /// Request `idx`, placed on replica `r`, finished or was rejected.
    fn finished(&mut self, _idx: u32, _r: usize) {}
}

/// The router `cfg` describes, for `replicas` replicas.
pub fn build(cfg: &FleetConfig) -> Box<dyn Router> {
    let n = cfg.replicas.max(1) as usize;
    match cfg.router {
        RouterKind::RoundRobin => Box::new(RoundRobin { next: 0 }),
        RouterKind::VllmDp => Box::new(VllmDp::new(n, false)),
        RouterKind::VllmDpClassic => Box::new(VllmDp::new(n, true)),
        RouterKind::Session => Box::new(Session::new(n)),
        RouterKind::Kvaware => Box::new(Kvaware {
            threshold: cfg.kv_aware_threshold,
            fallback: Session::new(n),
        }),
        RouterKind::LlmD => Box::new(LlmD::new(n, cfg)),
        RouterKind::Oracle => Box::new(Oracle),
        RouterKind::Dynamo => Box::new(Dynamo {
            overlap_weight: cfg.overlap_weight,
            temperature: cfg.temperature,
            view: View::new(
                n,
                &FleetConfig {
                    ttl_s: cfg.ttl_s.or(Some(DYNAMO_TTL_S)),
                    ..cfg.clone()
                },
            ),
            rng: Rng::stream(cfg.seed, "dynamo router"),
        }),
    }
}

/// Dynamo's approximate indexer (no KV events) forgets a routing decision after 120 s
/// (`--router-ttl-secs`).
pub const DYNAMO_TTL_S: f64 = 120.0;

/// production-stack's `RoundRobinRouter`: endpoints in order, a counter modulo their number.
#[derive(Debug)]
struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn route(&mut self, _q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let r = self.next % replicas.count();
        self.next = r + 1;
        r
    }
}

/// vLLM's `DPLBAsyncMPClient.get_core_engine_for_request` with one API server
/// (`client_count` 1).
///
/// - Classic: `score = waiting*4 + running` from the coordinator's snapshot, argmin scanning
///   from engine 0 with strict `<` (the first scanned wins ties); the chosen engine's waiting
///   count is raised by `client_count` locally until the next snapshot replaces it.
/// - Current (PR #49204): `score = max(client_count*inflight, waiting+running)`, plus
///   `waiting*6*max(0, kv_usage-0.5)` when anything waits, where `inflight` is this client's
///   exact count of its unfinished requests on the engine; the scan's start rotates by one
///   after every decision (PR #47420).
#[derive(Debug)]
struct VllmDp {
    classic: bool,
    start: usize,
    /// Requests this router placed and that have not finished, per engine.
    inflight: Vec<u32>,
    /// Classic: local waiting increments since the snapshot taken at `reserved_for`.
    reserved: Vec<u32>,
    reserved_for: SimTime,
}

impl VllmDp {
    fn new(n: usize, classic: bool) -> Self {
        VllmDp {
            classic,
            start: 0,
            inflight: vec![0; n],
            reserved: vec![0; n],
            reserved_for: SimTime::ZERO,
        }
    }
}

impl Router for VllmDp {
    fn route(&mut self, _q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let n = replicas.count();
        if self.classic && replicas.refreshed_at() != self.reserved_for {
            // A new snapshot overwrites the local increments.
            self.reserved_for = replicas.refreshed_at();
            self.reserved.iter_mut().for_each(|x| *x = 0);
        }
        let mut best = (f64::INFINITY, self.start % n);
        for k in 0..n {
            let r = (self.start + k) % n;
            let l = replicas.load(r);
            let score = if self.classic {
                ((l.waiting + self.reserved[r]) * 4 + l.running) as f64
            } else {
                let base = (self.inflight[r] as f64).max((l.waiting + l.running) as f64);
                let kv = if l.waiting > 0 {
                    l.waiting as f64 * 6.0 * (l.kv_usage - 0.5).max(0.0)
                } else {
                    0.0
                };
                base + kv
            };
            if score < best.0 {
                best = (score, r);
            }
        }
        let r = best.1;
        self.inflight[r] += 1;
        if self.classic {
            self.reserved[r] += 1;
        } else {
            self.start = (self.start + 1) % n;
        }
        r
    }

    fn finished(&mut self, _idx: u32, r: usize) {
        self.inflight[r] = self.inflight[r].saturating_sub(1);
    }
}

/// A 64-bit mix (SplitMix64's finaliser), for hash rings and tie-breaks.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// production-stack's `SessionRouter`: a consistent-hash ring of the endpoints (virtual nodes
/// per endpoint) maps a session id to an endpoint; a request without a session goes to the
/// endpoint with the fewest requests routed by this router in the last 60 s (one never routed
/// to first).
#[derive(Debug)]
struct Session {
    /// (point, replica), sorted.
    ring: Vec<(u64, usize)>,
    /// Per replica, when this router sent it requests (the last 60 s).
    recent: Vec<VecDeque<SimTime>>,
}

/// Virtual nodes per endpoint on the ring.
const VNODES: u64 = 160;
/// production-stack's `--request-stats-window`.
const QPS_WINDOW: SimDuration = SimDuration::from_ns(60_000_000_000);

impl Session {
    fn new(n: usize) -> Self {
        let mut ring: Vec<(u64, usize)> = (0..n)
            .flat_map(|r| (0..VNODES).map(move |v| (mix(mix(r as u64 + 1) ^ v), r)))
            .collect();
        ring.sort_unstable();
        Session {
            ring,
            recent: vec![VecDeque::new(); n],
        }
    }
}

impl Router for Session {
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let n = replicas.count();
        let r = match q.request.session {
            Some(s) => {
                let h = mix(s ^ 0x5e55_1011);
                let i = self.ring.partition_point(|(p, _)| *p < h);
                self.ring[i % self.ring.len()].1
            }
            None => {
                let cutoff = SimTime::from_ns(q.now.as_ns().saturating_sub(QPS_WINDOW.as_ns()));
                for d in &mut self.recent {
                    while d.front().is_some_and(|t| *t < cutoff) {
                        d.pop_front();
                    }
                }
                (0..n)
                    .min_by_key(|&r| (self.recent[r].len(), r))
                    .unwrap_or(0)
            }
        };
        self.recent[r].push_back(q.now);
        r
    }
}

/// production-stack's `KvawareRouter`: it asks the LMCache controller which instance holds the
/// prompt's chunks (the controller walks the chunk keys until one is registered nowhere and
/// names, per key, the instance registered first); it takes the instance of the first chunk
/// and the tokens up to that instance's last chunk in the walk. When those fall short of the
/// prompt by more than `kv_aware_threshold` tokens (2,000), or nothing is registered, it routes
/// as `session` does (the session's hash, or the fewest requests in the last 60 s).
#[derive(Debug)]
struct Kvaware {
    threshold: u32,
    fallback: Session,
}

impl Router for Kvaware {
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let prompt = q.request.input_len as i64;
        match replicas.controller_lookup(q.request) {
            Some((r, matched)) if matched as i64 >= prompt - self.threshold as i64 => {
                // Its request statistics count every request it routes.
                self.fallback.recent[r].push_back(q.now);
                r
            }
            _ => self.fallback.route(q, replicas),
        }
    }
}

/// llm-d's scheduler with its built-in default profile: `prefix-cache-scorer` (weight 3) fed by
/// the approximate prefix producer, `queue-scorer` (2), `kv-cache-utilization-scorer` (2), and
/// the max-score picker (a random choice among the best).
///
/// - Prefix: the router hashes the prompt in blocks (`block_tokens`, a partial last block
///   included, at most 256 blocks) and keeps, per replica, an LRU of the blocks it sent there
///   (`lru_blocks`); a replica's score is its leading matched blocks / the prompt's blocks. The
///   index learns only from the router's own decisions.
/// - Queue: `(maxQ - q) / (maxQ - minQ)` over waiting requests, 1 when all are equal.
/// - KV utilisation: `1 - kv_usage`.
#[derive(Debug)]
struct LlmD {
    weights: super::ScorerWeights,
    view: View,
    rng: Rng,
    /// Scratch, kept between requests.
    loads: Vec<Load>,
    order: Vec<usize>,
}

/// Where a cache-aware router's view of the replicas' caches comes from (`router_cache_view`).
#[derive(Debug)]
enum View {
    /// Nothing: no prefix is ever matched.
    Nothing,
    /// Its own routing decisions, in a per-replica LRU index.
    Decisions(DecisionIndex),
    /// The engines' KV events: each replica's GPU prefix cache as it is.
    Events,
}

impl View {
    /// The view `cfg`'s router reads (`router_cache_view`, else the router's default).
    fn new(n: usize, cfg: &FleetConfig) -> View {
        match cfg.effective_cache_view().unwrap_or(CacheView::Nothing) {
            CacheView::Nothing => View::Nothing,
            CacheView::Decisions => View::Decisions(DecisionIndex::new(n, cfg)),
            CacheView::Events => View::Events,
        }
    }

    /// For a request to place: its prompt's block keys (for the decision index, whose expired
    /// entries go first; else none) and, per replica, the fraction of its prompt the replica
    /// is taken to hold.
    fn consult(
        &mut self,
        q: &Query<'_>,
        replicas: &mut dyn Replicas,
    ) -> (std::sync::Arc<Vec<u64>>, Vec<f64>) {
        let keys = match self {
            View::Decisions(index) => {
                index.expire(q.now);
                index.prompt_blocks(q.request)
            }
            _ => Default::default(),
        };
        let held = self.held(q.request, &keys, replicas);
        (keys, held)
    }

    /// The decision index learns that `keys` went to replica `r` (llm-d's PreRequest).
    fn learn(&mut self, r: usize, keys: &std::sync::Arc<Vec<u64>>, now: SimTime) {
        if let View::Decisions(index) = self {
            index.learn(r, keys, now);
        }
    }

    /// Per replica, the fraction of `request`'s prompt it is taken to hold (of the blocks
    /// `keys`, for the decision index).
    fn held(&self, request: &Request, keys: &[u64], replicas: &mut dyn Replicas) -> Vec<f64> {
        let n = replicas.count();
        match self {
            View::Nothing => vec![0.0; n],
            View::Decisions(index) if !keys.is_empty() => index
                .matched(keys)
                .into_iter()
                .map(|m| m as f64 / keys.len() as f64)
                .collect(),
            View::Decisions(_) => vec![0.0; n],
            View::Events => (0..n)
                .map(|r| {
                    let hit = replicas.events_hit(r, request) as f64;
                    hit / (request.input_len.max(1) as f64)
                })
                .collect(),
        }
    }
}

impl LlmD {
    fn new(n: usize, cfg: &FleetConfig) -> Self {
        LlmD {
            weights: cfg.weights,
            view: View::new(n, cfg),
            rng: Rng::stream(cfg.seed, "llm-d picker"),
            loads: Vec::new(),
            order: Vec::new(),
        }
    }
}

impl Router for LlmD {
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let n = replicas.count();
        let (keys, held) = self.view.consult(q, replicas);
        let mut loads = std::mem::take(&mut self.loads);
        loads.clear();
        loads.extend((0..n).map(|r| replicas.load(r)));
        let (min_q, max_q) = loads.iter().fold((u32::MAX, 0), |(lo, hi), l| {
            (lo.min(l.waiting), hi.max(l.waiting))
        });
        let score = |r: usize| {
            let prefix = held[r];
            let queue = if max_q == min_q {
                1.0
            } else {
                (max_q - loads[r].waiting) as f64 / (max_q - min_q) as f64
            };
            let kv = (1.0 - loads[r].kv_usage).clamp(0.0, 1.0);
            self.weights.prefix * prefix + self.weights.queue * queue + self.weights.kv * kv
        };
        // Shuffled, then the best first: a random choice among equal scores.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..n);
        self.rng.shuffle(&mut order);
        let scores: Vec<f64> = (0..n).map(score).collect();
        let r = order
            .iter()
            .copied()
            .reduce(|a, b| if scores[b] > scores[a] { b } else { a })
            .unwrap_or(0);
        self.loads = loads;
        self.order = order;
        // The index learns the decision (llm-d's PreRequest).
        self.view.learn(r, &keys, q.now);
        r
    }
}

/// What no real router can do: see every replica's GPU prefix cache now, and send the request
/// where most of its prompt is cached; among equals, to the replica with the fewest requests
/// waiting and running, then the lowest index.
#[derive(Debug)]
struct Oracle;

impl Router for Oracle {
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        (0..replicas.count())
            .map(|r| {
                let hit = replicas.gpu_hit(r, q.request);
                let l = replicas.load_now(r);
                (std::cmp::Reverse(hit), l.waiting + l.running, r)
            })
            .min()
            .map_or(0, |(_, _, r)| r)
    }
}

/// NVIDIA Dynamo's KV router (`DefaultWorkerSelector`): per worker,
/// `logit = overlap_weight * prefill_blocks + decode_blocks`, where `prefill_blocks` is (the
/// prompt tokens it still has to prefill + this request's tokens not in its cache) / block size
/// and `decode_blocks` is the blocks of its requests in flight + this request's blocks.
///
/// - Cache view (`router_cache_view`): by default the engines' KV events (Stored / Removed)
///   build the router's index, so it sees each replica's GPU prefix cache as it is (events are
///   taken to arrive at once); `decisions` is its indexer without KV events (its TTL replaced by
///   a per-replica capacity); `nothing` balances load alone.
/// - Load: tracked by the router per request (prompt load until the first token, blocks until
///   completion): exact, no refresh interval.
/// - Temperature 0: the lowest logit, ties to the replica with less KV in use, then a seeded
///   random one; temperature > 0: a softmax sample over `-(logit / (max - min)) / T`.
#[derive(Debug)]
struct Dynamo {
    overlap_weight: f64,
    temperature: f64,
    view: View,
    rng: Rng,
}

impl Router for Dynamo {
    fn route(&mut self, q: &Query<'_>, replicas: &mut dyn Replicas) -> usize {
        let n = replicas.count();
        let bs = replicas.block_size().max(1) as f64;
        let prompt = q.request.input_len as f64;
        let (keys, held) = self.view.consult(q, replicas);
        let logits: Vec<f64> = (0..n)
            .map(|r| {
                let cached = (held[r] * prompt).min(prompt);
                let a = replicas.active(r);
                let prefill = (a.prefill_tokens as f64 + prompt - cached) / bs;
                let decode = a.blocks as f64 + (prompt / bs).ceil();
                self.overlap_weight * prefill + decode
            })
            .collect();
        let r = self.pick(&logits, replicas);
        self.view.learn(r, &keys, q.now);
        r
    }
}

impl Dynamo {
    /// The replica for `logits`: a softmax sample with a temperature, else the lowest, ties to
    /// the replica with less KV in use, then a seeded random one.
    fn pick(&mut self, logits: &[f64], replicas: &mut dyn Replicas) -> usize {
        let n = logits.len();
        if self.temperature > 0.0 {
            let (lo, hi) = logits
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
                    (a.min(l), b.max(l))
                });
            let span = if hi > lo { hi - lo } else { 1.0 };
            let weights: Vec<f64> = logits
                .iter()
                .map(|l| (-((l - lo) / span) / self.temperature).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            let mut x = self.rng.f64() * total;
            for (r, w) in weights.iter().enumerate() {
                if x < *w {
                    return r;
                }
                x -= w;
            }
            return n - 1;
        }
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        let usage: Vec<f64> = (0..n).map(|r| replicas.load_now(r).kv_usage).collect();
        order
            .into_iter()
            .reduce(|a, b| {
                let better =
                    logits[b] < logits[a] || (logits[b] == logits[a] && usage[b] < usage[a]);
                if better { b } else { a }
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas whose loads and hits a test sets.
    struct Fixed {
        loads: Vec<Load>,
        hits: Vec<u32>,
        at: SimTime,
        active: Vec<Active>,
    }

    impl Replicas for Fixed {
        fn count(&self) -> usize {
            self.loads.len()
        }
        fn load(&mut self, r: usize) -> Load {
            self.loads[r]
        }
        fn refreshed_at(&self) -> SimTime {
            self.at
        }
        fn load_now(&mut self, r: usize) -> Load {
            self.loads[r]
        }
        fn gpu_hit(&mut self, r: usize, _: &Request) -> u32 {
            self.hits[r]
        }
        fn active(&mut self, r: usize) -> Active {
            self.active.get(r).copied().unwrap_or_default()
        }
        fn block_size(&self) -> u32 {
            16
        }
    }

    fn load(waiting: u32, running: u32, kv_usage: f64) -> Load {
        Load {
            waiting,
            running,
            kv_usage,
        }
    }

    fn query(r: &Request) -> Query<'_> {
        Query {
            idx: 0,
            request: r,
            now: SimTime::ZERO,
        }
    }

    #[test]
    fn dynamo_costs_prefill_and_decode_blocks_as_its_docs_compute() {
        // Dynamo's documented example: workers with (prefill, decode) blocks (8, 10), (5, 5),
        // (2, 9) cost 18, 10 and 11 at overlap weight 1; worker 1 wins. Here with 16-token
        // blocks and a 32-token prompt (2 blocks): worker 0 has 6 blocks of prefill queued and
        // 8 blocks in flight and no hit, worker 1 3 and 3, worker 2 1 block queued, 7 in
        // flight and one block of the prompt cached.
        let req = Request::new(0, 0, vec![crate::trace::Run::new(1, 0, 32)], 1);
        let active = |p: u64, b: u64| Active {
            prefill_tokens: p * 16,
            blocks: b,
        };
        let mut rs = Fixed {
            loads: vec![load(0, 0, 0.0); 3],
            hits: vec![0, 0, 16],
            at: SimTime::ZERO,
            active: vec![active(6, 8), active(3, 3), active(1, 7)],
        };
        let mut cfg = FleetConfig {
            replicas: 3,
            router: RouterKind::Dynamo,
            ..FleetConfig::default()
        };
        assert_eq!(build(&cfg).route(&query(&req), &mut rs), 1);
        // Costs 18, 10, 11 at weight 1; at weight 2: 26, 15, 14: worker 2.
        cfg.overlap_weight = 2.0;
        assert_eq!(build(&cfg).route(&query(&req), &mut rs), 2);
        // Weight 0 balances decode blocks alone: 10, 5, 9.
        cfg.overlap_weight = 0.0;
        assert_eq!(build(&cfg).route(&query(&req), &mut rs), 1);
        // A tie goes to the replica with less KV in use.
        rs.active = vec![active(3, 3), active(3, 3), active(3, 3)];
        rs.hits = vec![0; 3];
        rs.loads = vec![load(0, 0, 0.5), load(0, 0, 0.4), load(0, 0, 0.2)];
        cfg.overlap_weight = 1.0;
        assert_eq!(build(&cfg).route(&query(&req), &mut rs), 2);
        // With a temperature, every replica is chosen sometimes, the cheapest most often.
        rs.active = vec![active(6, 8), active(3, 3), active(1, 7)];
        rs.hits = vec![0, 0, 16];
        cfg.temperature = 0.5;
        let mut r = build(&cfg);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[r.route(&query(&req), &mut rs)] += 1;
        }
        // Logits 18, 10, 11 scaled by their span (8): weights e^-2, 1, e^-0.25 after / T.
        let w = [(-2.0f64).exp(), 1.0, (-0.25f64).exp()];
        let total: f64 = w.iter().sum();
        for k in 0..3 {
            let expect = 3000.0 * w[k] / total;
            assert!(
                (counts[k] as f64 - expect).abs() < 0.1 * 3000.0,
                "{counts:?}"
            );
        }
        assert!(counts[1] > counts[2] && counts[2] > counts[0], "{counts:?}");
    }

    #[test]
    fn vllm_classic_score_and_its_local_increments() {
        let req = Request::new(0, 0, vec![crate::trace::Run::new(1, 0, 10)], 1);
        // Scores 4*1+0 = 4, 4*0+3 = 3, 4*0+3 = 3: engine 1 wins (first scanned of the tie).
        let mut rs = Fixed {
            loads: vec![load(1, 0, 0.0), load(0, 3, 0.0), load(0, 3, 0.0)],
            hits: vec![0; 3],
            at: SimTime::ZERO,
            active: Vec::new(),
        };
        let mut r = VllmDp::new(3, true);
        assert_eq!(r.route(&query(&req), &mut rs), 1);
        // Engine 1 now counts one more waiting (score 7): engine 2 (3) wins, then engine 0 (4).
        assert_eq!(r.route(&query(&req), &mut rs), 2);
        assert_eq!(r.route(&query(&req), &mut rs), 0);
        // A new snapshot clears the increments.
        rs.at = SimTime::from_ns(100);
        assert_eq!(r.route(&query(&req), &mut rs), 1);
    }

    #[test]
    fn vllm_current_score_counts_inflight_and_kv_pressure() {
        let req = Request::new(0, 0, vec![crate::trace::Run::new(1, 0, 10)], 1);
        // Engine 0: max(0, 2+1) + 2*6*(0.9-0.5) = 7.8; engine 1: max(0, 5) = 5.
        let mut rs = Fixed {
            loads: vec![load(2, 1, 0.9), load(0, 5, 0.95)],
            hits: vec![0; 2],
            at: SimTime::ZERO,
            active: Vec::new(),
        };
        let mut r = VllmDp::new(2, false);
        assert_eq!(r.route(&query(&req), &mut rs), 1);
        // Equal scores: the scan's start rotated to engine 1, which wins the tie.
        rs.loads = vec![load(0, 0, 0.0), load(0, 0, 0.0)];
        r.inflight = vec![0, 0];
        assert_eq!(r.route(&query(&req), &mut rs), 1);
        assert_eq!(r.route(&query(&req), &mut rs), 0);
    }

    #[test]
    fn session_affinity_keeps_a_session_on_one_replica() {
        let mut r = Session::new(4);
        let mut rs = Fixed {
            loads: vec![Load::default(); 4],
            hits: vec![0; 4],
            at: SimTime::ZERO,
            active: Vec::new(),
        };
        let mut seen = std::collections::BTreeMap::new();
        for s in 0..200u64 {
            let mut q = Request::new(s, 0, vec![crate::trace::Run::new(s, 0, 10)], 1);
            q.session = Some(s % 40);
            let to = r.route(&query(&q), &mut rs);
            assert_eq!(*seen.entry(s % 40).or_insert(to), to, "session {}", s % 40);
        }
        // 40 sessions spread over all 4 replicas.
        let used: std::collections::BTreeSet<usize> = seen.values().copied().collect();
        assert_eq!(used.len(), 4);
        // Without sessions: the replica with the fewest recent requests, never-used first.
        let mut r = Session::new(3);
        rs.loads.truncate(3);
        let q = Request::new(0, 0, vec![crate::trace::Run::new(1, 0, 10)], 1);
        let picks: Vec<usize> = (0..6).map(|_| r.route(&query(&q), &mut rs)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn the_oracle_follows_the_longest_hit_then_the_lightest_load() {
        let q = Request::new(0, 0, vec![crate::trace::Run::new(1, 0, 10)], 1);
        let mut rs = Fixed {
            loads: vec![load(0, 9, 0.0), load(0, 2, 0.0), load(1, 0, 0.0)],
            hits: vec![64, 64, 32],
            at: SimTime::ZERO,
            active: Vec::new(),
        };
        assert_eq!(Oracle.route(&query(&q), &mut rs), 1);
        rs.hits = vec![0, 0, 0];
        assert_eq!(Oracle.route(&query(&q), &mut rs), 2);
    }
}

//! The KV-connector seam: what sits between vLLM's scheduler (`engine`) and an external KV
//! store, shaped like the scheduler side of vLLM's `KVConnectorBase_V1`.
//!
//! | vLLM (`vllm/distributed/kv_transfer/kv_connector/v1/base.py`) | here |
//! |---|---|
//! | `get_num_new_matched_tokens(request, num_computed_tokens)` -> (tokens, load async?) | [`KvConnector::get_num_new_matched_tokens`] -> [`Match`] |
//! | `update_state_after_alloc(request, blocks, num_external_tokens)` | [`KvConnector::update_state_after_alloc`] -> the [`Load`] to start |
//! | `build_connector_meta`: the step's loads and saves | loads come from admission, saves from [`KvConnector::save`] at the step's end |
//! | `request_finished(request, block_ids)` | [`KvConnector::request_finished`] |
//! | connector statistics | [`KvConnector::stats`] -> [`ConnectorStats`] |
//!
//! Costs come back as [`Seconds`] (the engine adds a step's parts and rounds once); instants as
//! [`SimTime`].
//!
//! # Connectors
//! - [`none::NoConnector`]: vLLM alone, nothing beyond the GPU prefix cache.
//! - [`lmcache::LmCacheConnector`]: LMCache's `LMCacheConnectorV1` with its tiers
//!   (`crate::tiers::lmcache`).
//! - [`native::NativeConnector`]: vLLM's `OffloadingConnector` (`--kv-offloading-backend
//!   native`) over a CPU block pool (`crate::tiers::native`).
//!
//! # Adding a connector
//! Write a type that implements [`KvConnector`] in a new file of this folder (a P/D transfer, a
//! store shared by many engines through an `Rc<RefCell<..>>` or an index into fleet state),
//! add its settings to [`crate::tiers::OffloadConfig`] (or a config of its own) and a case to
//! [`build`]. Nothing in `src/engine/` changes: the engine sees only this trait, a request's
//! tokens and block hashes ([`ConnectorRequest`]), and what the methods return.

pub mod lmcache;
pub mod native;
pub mod none;
pub mod pd;

use crate::cost::TransferProfile;
use crate::engine::EngineConfig;
use crate::tiers::OffloadConfig;
use crate::tiers::remote::SharedStore;
use crate::time::{Seconds, SimTime};
use crate::trace::Request;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// What the engine shows a connector about one request.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorRequest<'a> {
    /// The engine's slot of the request (connectors keep per-request state by it; a slot
    /// serves another request after [`KvConnector::request_finished`]).
    pub idx: u32,
    /// Index of the request in the trace.
    pub global: u32,
    /// The trace's request: its content identity (for the connector's own keys).
    pub request: &'a Request,
    /// vLLM's chained block hashes of the request's sequence.
    pub block_hashes: &'a Arc<Vec<u64>>,
    /// Tokens per GPU block.
    pub block_size: u32,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Prompt plus tokens generated so far.
    pub num_tokens: u32,
    /// Tokens whose KV is on the GPU.
    pub num_computed: u32,
}

/// Prompt tokens an external load brings, by the tier holding them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierTokens {
    /// From a CPU tier (LMCache local CPU, vLLM's native CPU pool).
    pub cpu: u32,
    /// From LMCache's local disk.
    pub disk: u32,
    /// From LMCache's remote store.
    pub remote: u32,
}

/// What a lookup found for a waiting request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Matched {
    /// The request's tokens up to `end` can be had from the connector (nothing when `end` is at
    /// most the local hit).
    Tokens {
        /// Exclusive end of the external hit, in tokens of the request's sequence.
        end: u32,
        /// Of the prompt's tokens beyond the local hit, where the external ones come from.
        tiers: TierTokens,
        /// Loaded asynchronously (vLLM's `load_kv_async`): blocks are allocated for the hit
        /// only and the request waits until the load completes.
        load_async: bool,
    },
    /// The connector must first bring the hit closer (LMCache's asynchronous prefetch): the
    /// request is skipped until `ready` and then looked up again.
    Later {
        /// When the prefetch completes.
        ready: SimTime,
    },
}

/// [`KvConnector::get_num_new_matched_tokens`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// What was found.
    pub matched: Matched,
    /// Time the lookup blocked the scheduler (remote existence checks; zero when the lookup
    /// was cached from an earlier attempt).
    pub lookup: Seconds,
}

/// The load [`KvConnector::update_state_after_alloc`] starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Nothing to load.
    None,
    /// A load the step waits for before its forward pass.
    Blocking {
        /// Its time on the step's critical path.
        time: Seconds,
        /// Bytes moved into the GPU.
        bytes: u64,
    },
    /// A load the request waits for while the batch goes on.
    Async {
        /// When it completes.
        ready: SimTime,
        /// Bytes moved into the GPU.
        bytes: u64,
    },
}

/// What [`KvConnector::save`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Save {
    /// Time on the step's critical path.
    pub critical: Seconds,
    /// Bytes stored from the GPU.
    pub bytes: u64,
    /// The computed-token count below which the next save of this request would do nothing
    /// (`u32::MAX`: never again): the engine skips the calls until then, until the request is
    /// admitted again or preempted.
    pub next: u32,
}

impl Save {
    /// Nothing saved, and nothing to save before `next` computed tokens.
    pub fn nothing_until(next: u32) -> Save {
        Save {
            critical: Seconds::ZERO,
            bytes: 0,
            next,
        }
    }
}

/// What a connector needs from steps in which every running request decodes (the engine runs
/// such steps in stretches when the connector allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeSaves {
    /// Nothing: decode-only steps need no connector call.
    Nothing,
    /// A save for each request whose step fills a GPU block, costing nothing on the critical
    /// path.
    AtFullBlocks,
    /// A save call every step (the engine then steps one at a time).
    EveryStep,
}

/// Counters of LMCache's tiers.
pub use crate::tiers::lmcache::LmCacheStats;

/// Evictions per LMCache tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierEvictions {
    /// From the CPU tier.
    pub cpu: u64,
    /// From the disk tier.
    pub disk: u64,
    /// From the remote store.
    pub remote: u64,
}

/// A connector's counters over a run (the summary's `offload`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ConnectorStats {
    /// LMCache.
    #[serde(rename = "lmcache")]
    LmCache {
        /// Operation counters.
        counters: LmCacheStats,
        /// Evictions per tier.
        evictions: TierEvictions,
    },
    /// vLLM native offload.
    Native {
        /// Blocks copied to the CPU pool.
        stores: u64,
        /// Blocks loaded back.
        loads: u64,
        /// Blocks evicted from the CPU pool.
        evictions: u64,
    },
}

impl ConnectorStats {
    /// Two connectors' counters added up (a fleet's total); `None` when neither has any.
    pub fn sum(a: Option<ConnectorStats>, b: Option<ConnectorStats>) -> Option<ConnectorStats> {
        use ConnectorStats::*;
        let (a, b) = match (a, b) {
            (None, b) => return b,
            (a, None) => return a,
            (Some(a), Some(b)) => (a, b),
        };
        Some(match (a, b) {
            (
                LmCache {
                    counters: c,
                    evictions: e,
                },
                LmCache {
                    counters: d,
                    evictions: f,
                },
            ) => LmCache {
                counters: LmCacheStats {
                    lookups: c.lookups + d.lookups,
                    cpu_stores: c.cpu_stores + d.cpu_stores,
                    disk_stores: c.disk_stores + d.disk_stores,
                    remote_stores: c.remote_stores + d.remote_stores,
                    promotions: c.promotions + d.promotions,
                    remote_ops: c.remote_ops + d.remote_ops,
                    remote_skips: c.remote_skips + d.remote_skips,
                },
                evictions: TierEvictions {
                    cpu: e.cpu + f.cpu,
                    disk: e.disk + f.disk,
                    remote: e.remote + f.remote,
                },
            },
            (
                Native {
                    stores,
                    loads,
                    evictions,
                },
                Native {
                    stores: s,
                    loads: l,
                    evictions: e,
                },
            ) => Native {
                stores: stores + s,
                loads: loads + l,
                evictions: evictions + e,
            },
            (x, _) => x,
        })
    }
}

impl Serialize for ConnectorStats {
    /// Keys in alphabetical order at every level, `kind` among them (the order summaries have
    /// always had).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = match self {
            ConnectorStats::LmCache {
                counters,
                evictions,
            } => {
                serde_json::json!({"kind": "lmcache", "counters": counters, "evictions": evictions})
            }
            ConnectorStats::Native {
                stores,
                loads,
                evictions,
            } => {
                serde_json::json!({"kind": "native", "stores": stores, "loads": loads, "evictions": evictions})
            }
        };
        v.serialize(s)
    }
}

/// A connector's per-request state, by request index, grown on first use (connectors learn of
/// requests as the engine asks about them).
#[derive(Debug, Clone, Default)]
pub struct PerRequest<T>(Vec<T>);

impl<T: Default> PerRequest<T> {
    /// Request `idx`'s state, created on first use.
    pub fn get_mut(&mut self, idx: u32) -> &mut T {
        let i = idx as usize;
        if i >= self.0.len() {
            self.0.resize_with(i + 1, T::default);
        }
        &mut self.0[i]
    }

    /// Request `idx`'s state, if it has any yet.
    pub fn get(&self, idx: u32) -> Option<&T> {
        self.0.get(idx as usize)
    }
}

/// Which tier a [`TierWrite`] goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTier {
    /// A local disk.
    Disk,
    /// A remote store.
    Remote,
}

/// A write into an offload tier beside the engine (off every step's critical path), recorded
/// for timelines when asked ([`KvConnector::record_tier_writes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierWrite {
    /// Where it goes.
    pub tier: WriteTier,
    /// When it starts (a remote put: when it is handed to the store's client).
    pub start: SimTime,
    /// When it ends (a remote put: equal to `start`, its network time being the client's).
    pub end: SimTime,
    /// Bytes written (a remote put: on the wire).
    pub bytes: u64,
}

/// The scheduler side of a KV connector (see the module doc).
pub trait KvConnector: std::fmt::Debug + Send {
    /// For a waiting request whose first `local_hit` tokens are on the GPU: the tokens beyond
    /// that the connector can supply, looked up at `now`. Called at every admission attempt; a
    /// connector may cache its answer until the request is admitted.
    fn get_num_new_matched_tokens(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        now: SimTime,
    ) -> Match;

    /// The request was admitted with `matched` (from the last lookup) and blocks for it are
    /// allocated at `now`; returns the load to start.
    fn update_state_after_alloc(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        matched: &Matched,
        now: SimTime,
    ) -> Load;

    /// After a step whose forward pass ended at `at`, saves what the request's computed tokens
    /// now cover.
    fn save(&mut self, req: &ConnectorRequest<'_>, at: SimTime) -> Save;

    /// The request was preempted: its GPU blocks are gone and it will be recomputed.
    fn request_preempted(&mut self, idx: u32);

    /// The request finished; its per-request state can go.
    fn request_finished(&mut self, idx: u32);

    /// Whether loads and saves run layer by layer, overlapping the forward pass.
    fn layerwise(&self) -> bool {
        false
    }

    /// For the blocking loads started this step, asked at `now`: when the data they fetch
    /// through a path shared with other engines (a fleet's remote store) is through, as far as
    /// is known at `now` (a time at or before `now`: it is, and the loads are settled); `None`
    /// when they fetch nothing that way (their [`Load`] times are the whole cost).
    fn blocking_data(&mut self, _now: SimTime) -> Option<SimTime> {
        None
    }

    /// What decode-only steps need from the connector.
    fn decode_saves(&self) -> DecodeSaves;

    /// Whether asking again about this waiting request (still not admitted) would change
    /// nothing and cost nothing: its answer is cached and no time-dependent work is pending.
    fn match_is_settled(&self, idx: u32) -> bool;

    /// Counters over the run; `None` for no connector.
    fn stats(&self) -> Option<ConnectorStats>;

    /// The prompt's chunks as this connector's own tiers key them (LMCache's full chunks, each
    /// as its end token and key), for a router asking an LMCache controller; empty for
    /// connectors without a controller.
    fn prompt_chunks(&self, _request: &Request) -> Vec<(u32, u64)> {
        Vec::new()
    }

    /// Since when this instance's own tiers hold chunk `key` (what an LMCache controller learns
    /// from its admit messages); `None` when they do not.
    fn local_chunk_since(&self, _key: u64) -> Option<SimTime> {
        None
    }

    /// Starts recording the writes into tiers that run beside the engine (for a timeline);
    /// nothing else changes. Connectors without such writes ignore it.
    fn record_tier_writes(&mut self) {}

    /// Moves the writes recorded since the last call to the end of `out`.
    fn take_tier_writes(&mut self, _out: &mut Vec<TierWrite>) {}
}

impl KvConnector for Box<dyn KvConnector> {
    fn get_num_new_matched_tokens(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        now: SimTime,
    ) -> Match {
        (**self).get_num_new_matched_tokens(req, local_hit, now)
    }
    fn update_state_after_alloc(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        matched: &Matched,
        now: SimTime,
    ) -> Load {
        (**self).update_state_after_alloc(req, local_hit, matched, now)
    }
    fn save(&mut self, req: &ConnectorRequest<'_>, at: SimTime) -> Save {
        (**self).save(req, at)
    }
    fn request_preempted(&mut self, idx: u32) {
        (**self).request_preempted(idx)
    }
    fn request_finished(&mut self, idx: u32) {
        (**self).request_finished(idx)
    }
    fn layerwise(&self) -> bool {
        (**self).layerwise()
    }
    fn blocking_data(&mut self, now: SimTime) -> Option<SimTime> {
        (**self).blocking_data(now)
    }
    fn decode_saves(&self) -> DecodeSaves {
        (**self).decode_saves()
    }
    fn match_is_settled(&self, idx: u32) -> bool {
        (**self).match_is_settled(idx)
    }
    fn stats(&self) -> Option<ConnectorStats> {
        (**self).stats()
    }
    fn prompt_chunks(&self, request: &Request) -> Vec<(u32, u64)> {
        (**self).prompt_chunks(request)
    }
    fn local_chunk_since(&self, key: u64) -> Option<SimTime> {
        (**self).local_chunk_since(key)
    }
    fn record_tier_writes(&mut self) {
        (**self).record_tier_writes()
    }
    fn take_tier_writes(&mut self, out: &mut Vec<TierWrite>) {
        (**self).take_tier_writes(out)
    }
}

/// Something to do with whichever connector a configuration describes, as its own type (so
/// that the engine's calls into it are static and inline).
pub trait WithConnector {
    /// What it gives back.
    type Output;
    /// Does it with connectors `make` builds (one per engine: `make(r)` for replica `r`).
    fn with<C: KvConnector + 'static, F: Fn(usize) -> C>(self, make: F) -> Self::Output;
}

/// Runs `job` with the connector `offload` describes, for engines with `engine`'s settings. A
/// remote store marked shared is made once here, and every engine's connector gets a handle on
/// it.
pub fn with_connector<W: WithConnector>(
    offload: &OffloadConfig,
    engine: &EngineConfig,
    transfer: &TransferProfile,
    job: W,
) -> W::Output {
    match offload {
        OffloadConfig::None => job.with(|_| none::NoConnector),
        OffloadConfig::LmCache(c) => {
            let store = c
                .remote
                .as_ref()
                .filter(|r| r.shared)
                .map(|r| SharedStore::new(r.capacity_bytes));
            job.with(move |replica| lmcache_of(c, replica, engine, transfer, store.as_ref()))
        }
        OffloadConfig::Native { cpu_bytes } => {
            job.with(|_| native_of(*cpu_bytes, engine, transfer))
        }
    }
}

/// Replica `replica`'s LMCache connector (its own RTT to the store, its handle on a shared
/// store).
fn lmcache_of(
    c: &crate::tiers::lmcache::LmCacheConfig,
    replica: usize,
    engine: &EngineConfig,
    transfer: &TransferProfile,
    store: Option<&Arc<Mutex<SharedStore>>>,
) -> lmcache::LmCacheConnector {
    let mut cfg = c.clone();
    if let Some(r) = cfg.remote.as_mut()
        && !r.replica_rtt_s.is_empty()
    {
        r.rtt_s = r.replica_rtt_s[replica % r.replica_rtt_s.len()];
    }
    lmcache::LmCacheConnector::with_store(
        cfg,
        engine.kv_bytes_per_token,
        transfer.clone(),
        store.map(|s| SharedStore::replica(s, replica)),
    )
}

/// A native offload connector over `cpu_bytes` of CPU blocks.
fn native_of(
    cpu_bytes: u64,
    engine: &EngineConfig,
    transfer: &TransferProfile,
) -> native::NativeConnector {
    native::NativeConnector::new(
        cpu_bytes,
        engine.block_size,
        engine.kv_bytes_per_token,
        transfer.clone(),
    )
}

/// One pool of a heterogeneous fleet, as its connectors need it.
#[derive(Debug, Clone, Copy)]
pub struct PoolOffload<'a> {
    /// Replicas in it.
    pub count: u32,
    /// Its connector's settings.
    pub offload: &'a OffloadConfig,
    /// Its engines' settings.
    pub engine: &'a EngineConfig,
    /// Its transfer costs.
    pub transfer: &'a TransferProfile,
}

/// The connectors of a fleet of pools that differ (a connector type each, chosen at run time):
/// replicas are numbered pool by pool. Pools whose LMCache remote store is shared and whose
/// keys match (tensor-parallel layout, KV bytes per token, chunk size: LMCache's key holds the
/// model, the TP layout and the dtype, and a chunk is keyed by its tokens) use one store.
#[derive(Debug)]
pub struct PoolConnectors<'a> {
    pools: Vec<PoolOffload<'a>>,
    /// Per pool, its shared store.
    stores: Vec<Option<Arc<Mutex<SharedStore>>>>,
}

impl<'a> PoolConnectors<'a> {
    /// Connectors for `pools`; an error when pools sharing one store give it different
    /// capacities.
    pub fn new(pools: Vec<PoolOffload<'a>>) -> crate::error::Result<Self> {
        type KeySpace = (u32, u64, u32);
        let mut made: Vec<(KeySpace, u64, Arc<Mutex<SharedStore>>)> = Vec::new();
        let mut stores = Vec::with_capacity(pools.len());
        for (i, p) in pools.iter().enumerate() {
            let OffloadConfig::LmCache(c) = p.offload else {
                stores.push(None);
                continue;
            };
            let Some(remote) = c.remote.as_ref().filter(|r| r.shared) else {
                stores.push(None);
                continue;
            };
            let space = (p.engine.tp, p.engine.kv_bytes_per_token, c.chunk_size);
            let store = match made.iter().find(|(k, _, _)| *k == space) {
                Some((_, cap, _)) if *cap != remote.capacity_bytes => {
                    return Err(crate::error::Error::Config(format!(
                        "pools[{i}]: its remote store is shared with an earlier pool's (same TP, KV bytes and chunk size) but given another size ({} bytes against {cap})",
                        remote.capacity_bytes
                    )));
                }
                Some((_, _, s)) => s.clone(),
                None => {
                    let s = SharedStore::new(remote.capacity_bytes);
                    made.push((space, remote.capacity_bytes, s.clone()));
                    s
                }
            };
            stores.push(Some(store));
        }
        Ok(PoolConnectors { pools, stores })
    }

    /// Replica `replica`'s connector (its pool's kind and settings).
    pub fn make(&self, replica: usize) -> Box<dyn KvConnector> {
        // Past the pools (never, once counts are checked): the last pool's.
        let i = crate::fleet::pool_of(self.pools.iter().map(|p| p.count), replica)
            .unwrap_or(self.pools.len().saturating_sub(1));
        let Some(p) = self.pools.get(i) else {
            return Box::new(none::NoConnector);
        };
        match p.offload {
            OffloadConfig::None => Box::new(none::NoConnector),
            OffloadConfig::LmCache(c) => Box::new(lmcache_of(
                c,
                replica,
                p.engine,
                p.transfer,
                self.stores[i].as_ref(),
            )),
            OffloadConfig::Native { cpu_bytes } => {
                Box::new(native_of(*cpu_bytes, p.engine, p.transfer))
            }
        }
    }
}

/// The connector an offload configuration describes, chosen at run time.
pub fn build(
    offload: &OffloadConfig,
    engine: &EngineConfig,
    transfer: &TransferProfile,
) -> Box<dyn KvConnector> {
    struct Boxed;
    impl WithConnector for Boxed {
        type Output = Box<dyn KvConnector>;
        fn with<C: KvConnector + 'static, F: Fn(usize) -> C>(self, make: F) -> Self::Output {
            Box::new(make(0))
        }
    }
    with_connector(offload, engine, transfer, Boxed)
}

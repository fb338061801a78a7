//! LMCache (v1, `LMCacheConnectorV1`, kv_both) in front of vLLM: chunk keys, the tier cascade,
//! and what lookups, retrieves and stores cost.
//!
//! Mechanisms mirrored:
//! - Tokens are cut into `chunk_size` chunks with prefix-chained keys; a trailing partial chunk
//!   exists only with `save_unfull_chunk`.
//! - Lookup goes tier by tier (CPU, disk, remote); each tier counts leading hits among the chunks
//!   the earlier tiers missed; the first miss ends the hit. Hit chunks are touched, suffix first,
//!   so that a prefix outlives its suffix.
//! - Retrieve (blocking, before the forward pass) moves the hit minus what vLLM already has on the
//!   GPU; disk and remote hits are read, promoted into the CPU tier, then loaded. A CPU hit is
//!   the pinned object itself (no allocation): one scatter kernel per chunk reads it from host
//!   memory, one synchronisation per request; a step's requests retrieve one after another.
//! - Store (after the forward pass) is write-through: the GPU-to-CPU copy is on the critical
//!   path, disk writes go to a pool of writer threads, remote puts are serialised synchronously
//!   and sent asynchronously with bounded concurrency. Chunks that were hits are not stored
//!   again. A chunk written asynchronously becomes visible when its write completes.

use super::lru::LruTier;
use super::remote::{RemoteTier, StoreHandle};
use super::remote_client::{Connections, DEFAULT_WINDOW_BYTES, InTurn, LinkCost, RemoteClient};
use crate::connector::{TierWrite, WriteTier};
use crate::cost::TransferProfile;
use crate::cost::shared_link::OpId;
use crate::time::{SimDuration, SimTime};
use serde::Serialize;

/// Which remote store `remote_url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RemoteKind {
    /// `redis://`: a data key and a metadata key per chunk.
    Redis,
    /// `lm://`: LMCache's own server.
    LmServer,
    /// `mooncakestore://`: Mooncake's store over TCP.
    Mooncake,
}

impl RemoteKind {
    /// Sequential round trips of one chunk get, one chunk put, one existence check.
    pub fn round_trips(self) -> (u32, u32, u32) {
        match self {
            // GET data + GET metadata; SET data + SET metadata; EXISTS.
            RemoteKind::Redis => (2, 2, 1),
            RemoteKind::LmServer | RemoteKind::Mooncake => (1, 1, 1),
        }
    }

    /// How LMCache's connector for this kind shares its connections: `lm://` sends every
    /// operation over one socket under one lock; the Redis and Mooncake connectors run up to
    /// `concurrency` at once.
    pub fn default_connections(self) -> Connections {
        match self {
            RemoteKind::LmServer => Connections::Serial,
            RemoteKind::Redis | RemoteKind::Mooncake => Connections::Pool,
        }
    }

    /// The kind a `remote_url` names, from its scheme.
    pub fn from_url(url: &str) -> Option<RemoteKind> {
        let scheme = url.split("://").next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "redis" | "rediss" | "redis-sentinel" => Some(RemoteKind::Redis),
            "lm" => Some(RemoteKind::LmServer),
            "mooncakestore" | "mooncake" => Some(RemoteKind::Mooncake),
            _ => None,
        }
    }
}

/// How chunks are serialised for the remote store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Serde {
    /// Raw KV bytes.
    Naive,
    /// CacheGen compression (ratio and codec speed from the transfer profile).
    CacheGen,
}

impl Serde {
    /// The serde LMCache's `remote_serde` names (`naive`, `cachegen`).
    pub fn from_name(name: &str) -> Option<Serde> {
        match name {
            "naive" => Some(Serde::Naive),
            "cachegen" => Some(Serde::CacheGen),
            _ => None,
        }
    }
}

/// The remote tier's configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteConfig {
    /// Store kind.
    pub kind: RemoteKind,
    /// Round-trip time between the engine and the store, seconds.
    pub rtt_s: f64,
    /// Operations in flight at once.
    pub concurrency: u32,
    /// Serialisation.
    pub serde: Serde,
    /// Capacity in bytes (`u64::MAX`: unbounded).
    pub capacity_bytes: u64,
    /// One store shared by every replica of a fleet (see [`crate::tiers::remote`]).
    pub shared: bool,
    /// Round-trip times of the replicas to the store, seconds, replica `r` taking entry
    /// `r % len` (empty: `rtt_s` for all).
    pub replica_rtt_s: Vec<f64>,
    /// A shared store's data-path bandwidth, GB/s (`None`: the transfer profile's
    /// `remote_gbps`).
    pub store_gbps: Option<f64>,
    /// How the engine's operations share its connections ([`crate::tiers::remote_client`]).
    pub connections: Connections,
    /// The TCP window of one connection, bytes: a stream moves at most this per round trip.
    pub window_bytes: u64,
}

impl RemoteConfig {
    /// The store a remote tier uses when no `remote_url` is given.
    pub const DEFAULT_URL: &'static str = "redis://remote:6379";

    /// The time `bytes` take through a shared store's data path at its full rate, moved by
    /// `streams` connections each limited to one window per round trip.
    pub fn store_data(&self, bytes: u64, streams: u64, tp: &TransferProfile) -> SimDuration {
        let rate = match self.store_gbps {
            Some(g) => bytes as f64 / (g * 1e9),
            None => tp.remote_op_s(bytes, 0, 0.0),
        };
        // Every window after each stream's first takes a round trip.
        let windows = bytes.div_ceil(self.window_bytes.max(1) * streams.max(1));
        let window = windows.saturating_sub(1) as f64 * self.rtt_s;
        SimDuration::from_secs_f64(rate.max(window))
    }

    /// What one operation costs on the engine's connections.
    pub fn link_cost(&self, tp: &TransferProfile) -> LinkCost {
        LinkCost {
            rtt_s: self.rtt_s,
            op_s: tp.remote_op_us * 1e-6,
            bytes_per_s: tp.remote_gbps * 1e9,
            window_bytes: self.window_bytes,
        }
    }
}

impl Default for RemoteConfig {
    /// A Redis 0.1 ms away (the same host), 4 operations in flight, raw KV, unbounded.
    fn default() -> Self {
        RemoteConfig {
            kind: RemoteKind::Redis,
            rtt_s: 0.0001,
            concurrency: 4,
            serde: Serde::Naive,
            capacity_bytes: u64::MAX,
            shared: false,
            replica_rtt_s: Vec::new(),
            store_gbps: None,
            connections: Connections::Pool,
            window_bytes: DEFAULT_WINDOW_BYTES,
        }
    }
}

/// LMCache configuration (the keys of an `lmcache_config.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LmCacheConfig {
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// Store a trailing partial chunk too.
    pub save_unfull_chunk: bool,
    /// CPU tier capacity in bytes per TP rank (`max_local_cpu_size` GiB); `None` when the CPU
    /// tier is off (`local_cpu: false`).
    pub cpu_bytes: Option<u64>,
    /// Disk tier capacity in bytes (`max_local_disk_size` GiB); `None` when off.
    pub disk_bytes: Option<u64>,
    /// Disk writer threads.
    pub disk_writers: u32,
    /// The remote tier, if any.
    pub remote: Option<RemoteConfig>,
    /// Prefetch disk/remote hits into CPU asynchronously; the request waits meanwhile.
    pub enable_async_loading: bool,
    /// Per-layer transfers pipelined with the forward pass.
    pub use_layerwise: bool,
    /// Store chunks filled during decode too.
    pub save_decode_cache: bool,
}

impl Default for LmCacheConfig {
    fn default() -> Self {
        LmCacheConfig {
            chunk_size: 256,
            save_unfull_chunk: false,
            cpu_bytes: Some(5 << 30),
            disk_bytes: None,
            disk_writers: 4,
            remote: None,
            enable_async_loading: false,
            use_layerwise: false,
            save_decode_cache: false,
        }
    }
}

/// Where a looked-up prefix was found: chunk counts per tier, in cascade order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierHits {
    /// Leading chunks found in the CPU tier.
    pub cpu: u32,
    /// Following chunks found on disk.
    pub disk: u32,
    /// Following chunks found remotely.
    pub remote: u32,
}

impl TierHits {
    /// Chunks hit in all tiers.
    pub fn total(&self) -> u32 {
        self.cpu + self.disk + self.remote
    }
}

/// Counters over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LmCacheStats {
    /// Lookups made.
    pub lookups: u64,
    /// Chunks stored into the CPU tier.
    pub cpu_stores: u64,
    /// Chunks written to disk.
    pub disk_stores: u64,
    /// Chunks put remotely.
    pub remote_stores: u64,
    /// Chunks promoted from disk or remote into the CPU tier.
    pub promotions: u64,
    /// Remote operations (gets, puts, existence checks).
    pub remote_ops: u64,
    /// Chunks not put to a shared store because this engine's puts not yet through it filled
    /// its staging buffer (see [`crate::tiers::remote`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remote_skips: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The LMCache engine state.
#[derive(Debug)]
pub struct LmCache {
    /// Its configuration.
    pub cfg: LmCacheConfig,
    bytes_per_token: u64,
    cpu: Option<LruTier>,
    disk: Option<LruTier>,
    remote: Option<RemoteTier>,
    /// Remote chunks this engine's puts evicted.
    remote_evictions: u64,
    disk_free_at: Vec<SimTime>,
    /// The engine's connections to a store of its own (made at the first remote operation).
    client: Option<RemoteClient>,
    /// The scheduler's lookups at one instant, one after another.
    lookups: InTurn,
    /// Counters.
    pub stats: LmCacheStats,
    /// Disk writes and remote puts since they were last taken, when a timeline records them
    /// (`None`: not recorded).
    pub writes: Option<Vec<TierWrite>>,
}

/// A chunk of a request's token sequence: where it ends (exclusive token index) and its key.
pub type Chunk = (u32, u64);

/// Assigns a job of `dur` ns to the earliest free worker; returns its completion time.
fn enqueue(workers: &mut [SimTime], now: SimTime, dur: SimDuration) -> SimTime {
    let (i, free) = workers
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|(i, t)| (*t, *i))
        .unwrap_or((0, now));
    let end = free.max(now) + dur;
    if let Some(w) = workers.get_mut(i) {
        *w = end;
    }
    end
}

/// LMCache's host buffer when its CPU tier is off (`max_local_cpu_size`'s default, 5 GiB):
/// chunks being put to a remote store are staged in it.
pub const DEFAULT_STAGING_BYTES: u64 = 5 << 30;

/// What reading a request's disk and remote hits into host memory costs
/// ([`LmCache::fetch_cost`]).
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    /// Seconds, besides the bytes through a shared store's data path.
    pub s: f64,
    /// Bytes read.
    pub bytes: u64,
    /// The get through a shared store, whose bytes take their time apart.
    pub shared: Option<OpId>,
}

impl LmCache {
    /// An empty cache; `bytes_per_token` is the KV size of one token on one TP rank.
    pub fn new(cfg: LmCacheConfig, bytes_per_token: u64) -> Self {
        Self::with_store(cfg, bytes_per_token, None)
    }

    /// A cache whose remote tier is `store` (shared with other engines) when given, else its
    /// own.
    pub fn with_store(
        cfg: LmCacheConfig,
        bytes_per_token: u64,
        store: Option<StoreHandle>,
    ) -> Self {
        let remote = cfg.remote.as_ref().map(|r| match store {
            Some(s) => RemoteTier::Shared(s),
            None => RemoteTier::Own(LruTier::new(r.capacity_bytes)),
        });
        LmCache {
            bytes_per_token,
            cpu: cfg.cpu_bytes.map(LruTier::new),
            disk: cfg.disk_bytes.map(LruTier::new),
            remote,
            remote_evictions: 0,
            disk_free_at: vec![SimTime::ZERO; cfg.disk_writers.max(1) as usize],
            writes: None,
            client: None,
            lookups: InTurn::default(),
            stats: LmCacheStats::default(),
            cfg,
        }
    }

    /// A store of its own: the engine's connections to it, with the puts that go before an
    /// operation at `now` started (and their chunks visible from when they complete).
    fn own_client(&mut self, now: SimTime, tp: &TransferProfile) -> Option<&mut RemoteClient> {
        let rc = self.cfg.remote.as_ref()?;
        let Some(RemoteTier::Own(tier)) = &mut self.remote else {
            return None;
        };
        let client = self.client.get_or_insert_with(|| {
            RemoteClient::new(rc.connections, rc.concurrency, rc.link_cost(tp))
        });
        client.advance(now, |key, at| tier.restamp(key, at));
        Some(client)
    }

    fn chunk_tokens(chunks: &[Chunk], i: usize) -> u64 {
        let start = if i == 0 { 0 } else { chunks[i - 1].0 };
        (chunks[i].0 - start) as u64
    }

    fn chunk_bytes(&self, chunks: &[Chunk], i: usize) -> u64 {
        Self::chunk_tokens(chunks, i) * self.bytes_per_token
    }

    /// Looks `chunks` up tier by tier at `now`; returns the hits and the seconds the lookup
    /// blocks the scheduler (remote existence checks: one round trip per chunk checked).
    pub fn lookup(
        &mut self,
        chunks: &[Chunk],
        now: SimTime,
        tp: &TransferProfile,
    ) -> (TierHits, f64) {
        self.stats.lookups += 1;
        let mut hits = TierHits::default();
        let mut i = 0usize;
        if let Some(cpu) = &self.cpu {
            while i < chunks.len() && cpu.contains(chunks[i].1, now) {
                i += 1;
            }
            hits.cpu = i as u32;
        }
        if let Some(disk) = &self.disk {
            let s = i;
            while i < chunks.len() && disk.contains(chunks[i].1, now) {
                i += 1;
            }
            hits.disk = (i - s) as u32;
        }
        let mut lookup_s = 0.0;
        // Puts that completed by now are visible.
        self.own_client(now, tp);
        if let (Some(remote), Some(rc)) = (&self.remote, &self.cfg.remote) {
            let s = i;
            while i < chunks.len() && remote.contains(chunks[i].1, now) {
                i += 1;
            }
            hits.remote = (i - s) as u32;
            // Existence checks for every chunk the remote tier was asked about, the first miss
            // included, one after another.
            let checked = (i - s + usize::from(i < chunks.len())) as u64;
            let (_, _, exists_rt) = rc.kind.round_trips();
            self.stats.remote_ops += checked;
            // The scheduler looks its waiting requests up one after another, adding up their
            // times: this one's checks start when the previous one's were answered.
            let rtt_s = rc.rtt_s;
            let start = self.lookups.start(now);
            lookup_s = match self.own_client(start, tp) {
                Some(c) => {
                    let end = c.exists_chain(now, start, checked, exists_rt);
                    self.lookups.done(end);
                    end.since(start).as_secs_f64()
                }
                None => checked as f64 * tp.remote_op_s(0, exists_rt, rtt_s),
            };
        }
        // Touch suffix first so that the prefix ends most recently used.
        let (c, d) = (hits.cpu as usize, (hits.cpu + hits.disk) as usize);
        if let Some(cpu) = &mut self.cpu {
            for ch in chunks[..c].iter().rev() {
                cpu.touch(ch.1);
            }
        }
        if let Some(disk) = &mut self.disk {
            for ch in chunks[c..d].iter().rev() {
                disk.touch(ch.1);
            }
        }
        (hits, lookup_s)
    }

    /// Tokens covered by the first `n` chunks.
    pub fn tokens_of(chunks: &[Chunk], n: u32) -> u32 {
        if n == 0 { 0 } else { chunks[n as usize - 1].0 }
    }

    /// What reading the disk and remote hits into host memory from `now` costs, for a retrieve
    /// the scheduler charged at instant `at` (a blocking retrieve, which `waits` for a shared
    /// store's bytes and asks about them again, or an asynchronous prefetch, which takes their
    /// projected time). A step's blocking retrieves run one after another: the caller passes,
    /// as `now`, when the previous one ended.
    pub fn fetch_cost(
        &mut self,
        chunks: &[Chunk],
        hits: &TierHits,
        at: SimTime,
        now: SimTime,
        tp: &TransferProfile,
        waits: bool,
    ) -> Fetch {
        let c = hits.cpu as usize;
        let d = c + hits.disk as usize;
        let r = d + hits.remote as usize;
        let mut s = 0.0;
        let mut bytes = 0u64;
        let mut shared = None;
        if hits.disk > 0 {
            let b: u64 = (c..d).map(|i| self.chunk_bytes(chunks, i)).sum();
            s += tp.disk_read_s(b, hits.disk as u64) + tp.memcpy_s(b);
            bytes += b;
        }
        if let (true, Some(rc)) = (hits.remote > 0, self.cfg.remote.clone()) {
            let b: u64 = (d..r).map(|i| self.chunk_bytes(chunks, i)).sum();
            let per_chunk = b.div_ceil(hits.remote as u64);
            let (get_rt, _, _) = rc.kind.round_trips();
            let wire = self.wire_bytes_with(per_chunk, tp);
            let n = hits.remote as u64;
            let shared_store = self.remote.as_ref().and_then(RemoteTier::shared).cloned();
            s += match shared_store {
                // Round trips in waves of `concurrency`, this engine's; the bytes through the
                // store's shared data path, their time apart.
                Some(store) => {
                    let latency = tp.remote_batch_s(n, 0, get_rt, rc.rtt_s, rc.concurrency);
                    let streams = match rc.connections {
                        Connections::Serial => 1,
                        Connections::Pool => n.min(rc.concurrency as u64),
                    };
                    let data = rc.store_data(n * wire, streams, tp);
                    let serial = rc.connections == Connections::Serial;
                    shared = Some(store.get(now, data, waits, serial));
                    latency
                }
                // The gets on the engine's connections, after what occupies them.
                None => match self.own_client(now, tp) {
                    Some(c) => c
                        .get_batch(at, now, n, wire, get_rt)
                        .since(now)
                        .as_secs_f64(),
                    None => tp.remote_batch_s(n, wire, get_rt, rc.rtt_s, rc.concurrency),
                },
            };
            s += match rc.serde {
                Serde::Naive => tp.memcpy_s(b),
                Serde::CacheGen => b as f64 / (tp.cachegen_decode_gbps * 1e9),
            };
            self.stats.remote_ops += hits.remote as u64 * get_rt as u64;
            bytes += b;
        }
        Fetch { s, bytes, shared }
    }

    /// The fleet's shared remote store, if this cache's remote tier is one.
    pub fn shared_store(&self) -> Option<&StoreHandle> {
        self.remote.as_ref().and_then(RemoteTier::shared)
    }

    /// Since when this instance's own tiers (CPU, disk) hold chunk `key`, if they do: what the
    /// LMCache controller learns from its admit messages.
    pub fn local_since(&self, key: u64) -> Option<SimTime> {
        let cpu = self.cpu.as_ref().and_then(|t| t.ready_at(key));
        let disk = self.disk.as_ref().and_then(|t| t.ready_at(key));
        match (cpu, disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Promotes the disk and remote hits into the CPU tier, visible from `ready_at`.
    pub fn promote(&mut self, chunks: &[Chunk], hits: &TierHits, ready_at: SimTime) {
        let c = hits.cpu as usize;
        let r = c + (hits.disk + hits.remote) as usize;
        for i in c..r {
            let b = self.chunk_bytes(chunks, i);
            if let Some(cpu) = &mut self.cpu {
                cpu.insert(chunks[i].1, b, ready_at);
                self.stats.promotions += 1;
            }
        }
    }

    /// Bytes a chunk of `bytes` KV occupies on the wire to the remote store.
    fn wire_bytes_with(&self, bytes: u64, tp: &TransferProfile) -> u64 {
        match self.cfg.remote.as_ref().map(|r| r.serde) {
            Some(Serde::CacheGen) => (bytes as f64 * tp.cachegen_ratio).ceil() as u64,
            _ => bytes,
        }
    }

    /// Seconds to load tokens `[from, to)` of the hit into the GPU from pinned host memory.
    pub fn gpu_load_s(
        &self,
        chunks: &[Chunk],
        from: u32,
        to: u32,
        tp: &TransferProfile,
    ) -> (f64, u64) {
        if to <= from {
            return (0.0, 0);
        }
        // One launch per chunk the range touches, a partial one included (a whole-prompt hit
        // loads its last chunk but one token).
        let n_chunks = chunks
            .iter()
            .enumerate()
            .filter(|(i, (end, _))| {
                let start = if *i == 0 { 0 } else { chunks[i - 1].0 };
                *end > from && start < to
            })
            .count()
            .max(1) as u64;
        let bytes = (to - from) as u64 * self.bytes_per_token;
        (tp.gpu_load_s(bytes, n_chunks), bytes)
    }

    /// Stores chunks `[first, last)` of a request after the forward pass at `now`; returns the
    /// seconds on the critical path (GPU-to-CPU copy and remote serialisation) and the bytes
    /// stored.
    pub fn store(
        &mut self,
        chunks: &[Chunk],
        first: usize,
        last: usize,
        now: SimTime,
        tp: &TransferProfile,
    ) -> (f64, u64) {
        if last <= first {
            return (0.0, 0);
        }
        let bytes: u64 = (first..last).map(|i| self.chunk_bytes(chunks, i)).sum();
        let n = (last - first) as u64;
        let mut critical = tp.gpu_store_s(bytes, n);
        let done_copy = now + SimDuration::from_secs_f64(critical);
        for i in first..last {
            let (key, b) = (chunks[i].1, self.chunk_bytes(chunks, i));
            if let Some(cpu) = &mut self.cpu
                && cpu.insert(key, b, done_copy)
            {
                self.stats.cpu_stores += 1;
            }
            if self.disk.as_ref().is_some_and(|d| !d.has(key)) {
                let dur = SimDuration::from_secs_f64(tp.disk_write_s(b));
                let end = enqueue(&mut self.disk_free_at, done_copy, dur);
                if let Some(w) = &mut self.writes {
                    w.push(TierWrite {
                        tier: WriteTier::Disk,
                        start: SimTime::from_ns(end.as_ns() - dur.as_ns()),
                        end,
                        bytes: b,
                    });
                }
                if let Some(disk) = &mut self.disk {
                    disk.insert(key, b, end);
                }
                self.stats.disk_stores += 1;
            }
        }
        if let Some(rc) = self.cfg.remote.clone() {
            let (_, put_rt, _) = rc.kind.round_trips();
            let ser = match rc.serde {
                Serde::Naive => tp.memcpy_s(bytes),
                Serde::CacheGen => bytes as f64 / (tp.cachegen_encode_gbps * 1e9),
            };
            critical += ser;
            let ready = now + SimDuration::from_secs_f64(critical);
            let shared = self.remote.as_ref().and_then(RemoteTier::shared).cloned();
            for i in first..last {
                let (key, b) = (chunks[i].1, self.chunk_bytes(chunks, i));
                if self.remote.as_ref().is_some_and(|r| r.has(key)) {
                    continue;
                }
                let wire = self.wire_bytes_with(b, tp);
                match &shared {
                    // The bytes go through the store's shared data path from when they are
                    // serialised; the chunk is visible once the acknowledgements are back.
                    Some(store) => {
                        let data = rc.store_data(wire, 1, tp);
                        let acks = SimDuration::from_secs_f64(tp.remote_op_s(0, put_rt, rc.rtt_s));
                        let staging = self.cfg.cpu_bytes.unwrap_or(DEFAULT_STAGING_BYTES);
                        match store.put(key, b, ready, data, acks, staging) {
                            Some(evicted) => self.remote_evictions += evicted,
                            None => {
                                self.stats.remote_skips += 1;
                                continue;
                            }
                        }
                    }
                    // Queued on the engine's connections; visible once it completes.
                    None => {
                        if let Some(c) = self.own_client(now, tp) {
                            c.put(key, ready, wire, put_rt);
                        }
                        if let Some(RemoteTier::Own(t)) = &mut self.remote {
                            let before = t.evictions;
                            t.insert(key, b, SimTime::MAX);
                            self.remote_evictions += t.evictions - before;
                        }
                    }
                }
                if let Some(w) = &mut self.writes {
                    w.push(TierWrite {
                        tier: WriteTier::Remote,
                        start: ready,
                        end: ready,
                        bytes: wire,
                    });
                }
                self.stats.remote_stores += 1;
                self.stats.remote_ops += put_rt as u64;
            }
        }
        (critical, bytes)
    }

    /// (bytes used, capacity) of the CPU tier, if any.
    pub fn cpu_usage(&self) -> Option<(u64, u64)> {
        self.cpu.as_ref().map(|t| (t.used(), t.capacity()))
    }

    /// Evictions per tier (cpu, disk, remote).
    pub fn evictions(&self) -> (u64, u64, u64) {
        (
            self.cpu.as_ref().map_or(0, |t| t.evictions),
            self.disk.as_ref().map_or(0, |t| t.evictions),
            self.remote_evictions,
        )
    }
}

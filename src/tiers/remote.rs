//! LMCache's remote tier as one engine sees it: a store of its own, or one store that every
//! replica of a fleet shares (one Redis, one `lmcache_server`, one Mooncake store behind the
//! same `remote_url`).
//!
//! A shared store holds one set of chunks: capacity and LRU eviction are fleet-wide, and a chunk
//! one replica put is a hit for every replica once the put has completed (LMCache's key is the
//! model, the TP layout, the dtype and the chunk hash; the replicas of one fleet run one
//! configuration, so their keys match). Its data path is shared too, at the transfer profile's
//! remote bandwidth, fairly between the replicas with traffic under way
//! ([`crate::cost::shared_link`]): each replica's puts form one stream and its gets another,
//! each going through in the order its operations start, and while `k` streams have bytes
//! moving each moves at `1/k` of the store's rate (Redis serves its clients in turn,
//! interleaving large replies as their sockets drain). So two replicas loading at once both
//! take twice the data time one alone takes, and a replica whose puts fall behind halves the
//! others' rate (and its own gets') for as long as its backlog lasts, without its backlog
//! blocking anyone's gets (whether a replica's gets queue behind its own puts on one
//! connection depends on LMCache's remote connector and version, not modelled here). A put is visible once its bytes are through and its acknowledgements have
//! come back (the replica's round trips); a step that loads from the store waits for its bytes
//! to be through, which traffic that starts later may delay (the engine settles such a step
//! when the bytes are through: `Engine::settle`). Round trips are each replica's own (its RTT
//! to the store). A store of one engine keeps the per-engine cost model of
//! [`crate::tiers::lmcache`] (its transfers limited by its own link), so a one-replica fleet is
//! exactly the single-engine run.

use super::lru::LruTier;
use crate::cost::shared_link::{OpId, SharedLink};
use crate::time::{SimDuration, SimTime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A store shared by a fleet: its contents and the traffic through its data path.
#[derive(Debug)]
pub struct SharedStore {
    tier: LruTier,
    /// The data path: replica `r`'s puts are class `2r`, its gets `2r + 1`.
    link: SharedLink,
    /// Puts whose bytes are moving: the chunk, the time its acknowledgements take, the
    /// replica and the bytes it stages.
    puts: HashMap<OpId, (u64, SimDuration, usize, u64)>,
    /// Per replica, the bytes of its puts not yet through (held in its staging buffer).
    staged: Vec<u64>,
    /// Chunks stored but not yet visible, by the put that makes them visible.
    pending: HashMap<u64, OpId>,
    /// Gets a step waits for: when their bytes were through (`None`: not yet).
    waits: HashMap<OpId, Option<SimTime>>,
}

impl SharedStore {
    /// An empty store of `capacity` bytes (`u64::MAX`: unbounded); [`SharedStore::replica`]
    /// gives each replica's connector its handle.
    pub fn new(capacity: u64) -> Arc<Mutex<SharedStore>> {
        Arc::new(Mutex::new(SharedStore {
            tier: LruTier::new(capacity),
            link: SharedLink::new(),
            puts: HashMap::new(),
            staged: Vec::new(),
            pending: HashMap::new(),
            waits: HashMap::new(),
        }))
    }

    /// Replica `replica`'s handle on `store`.
    pub fn replica(store: &Arc<Mutex<SharedStore>>, replica: usize) -> StoreHandle {
        StoreHandle {
            store: store.clone(),
            replica,
        }
    }

    /// Chunks evicted fleet-wide.
    pub fn evictions(&self) -> u64 {
        self.tier.evictions
    }

    /// Moves the data path on to `now`: puts whose acknowledgements are due become visible
    /// then, gets record when their bytes were through.
    fn advance(&mut self, now: SimTime) {
        let SharedStore {
            tier,
            link,
            puts,
            staged,
            pending,
            waits,
        } = self;
        if link.is_idle() {
            return;
        }
        link.advance(now, |_, op, t| {
            if let Some((key, acks, replica, bytes)) = puts.remove(&op) {
                staged[replica] -= bytes;
                if pending.get(&key) == Some(&op) {
                    pending.remove(&key);
                    tier.restamp(key, t + acks);
                }
            } else if let Some(w) = waits.get_mut(&op) {
                *w = Some(t);
            }
        });
    }
}

/// A replica's handle on a shared store (engines are `Send`; the lock is never contended, since
/// one simulation runs its replicas on one thread).
#[derive(Debug, Clone)]
pub struct StoreHandle {
    store: Arc<Mutex<SharedStore>>,
    replica: usize,
}

impl StoreHandle {
    /// The store.
    pub fn lock(&self) -> MutexGuard<'_, SharedStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts chunk `key` (`bytes` stored, `data` the time its bytes take through the store at
    /// its full rate) from `start`; it is visible `acks` after its bytes are through. Returns
    /// the chunks this evicted; `None` (nothing put) when this replica's puts not yet through
    /// the store (as of the time the store has reached) would hold more than `staging` bytes
    /// with this one: LMCache stages a put in its host buffer until it is sent and skips a
    /// store it cannot allocate for, so a store that cannot keep up loses puts rather than
    /// queueing them without end.
    pub fn put(
        &self,
        key: u64,
        bytes: u64,
        start: SimTime,
        data: SimDuration,
        acks: SimDuration,
        staging: u64,
    ) -> Option<u64> {
        let mut s = self.lock();
        if s.staged.len() <= self.replica {
            s.staged.resize(self.replica + 1, 0);
        }
        if s.staged[self.replica] + bytes > staging {
            return None;
        }
        s.staged[self.replica] += bytes;
        let before = s.tier.evictions;
        s.tier.insert(key, bytes, SimTime::MAX);
        let op = s.link.submit(self.replica as u64 * 2, start, data);
        s.puts.insert(op, (key, acks, self.replica, bytes));
        s.pending.insert(key, op);
        Some(s.tier.evictions - before)
    }

    /// Gets bytes taking `data` through the store at its full rate, from `start`. A get the
    /// caller `waits` for is asked about ([`StoreHandle::through`]) until it has been
    /// [`StoreHandle::forget`]-ed; any other is done with once [`StoreHandle::projected`].
    /// With `serial` (one connection, see [`crate::tiers::remote_client`]) the get goes
    /// after this replica's puts, in the stream of its puts.
    pub fn get(&self, start: SimTime, data: SimDuration, waits: bool, serial: bool) -> OpId {
        let mut s = self.lock();
        let class = self.replica as u64 * 2 + u64::from(!serial);
        let op = s.link.submit(class, start, data);
        if waits {
            s.waits.insert(op, None);
        }
        op
    }

    /// When the bytes of get `op`, not yet through, are projected to be (`SimTime::ZERO` for
    /// one the store has passed).
    pub fn projected(&self, op: OpId) -> SimTime {
        self.lock().link.finish(op).unwrap_or(SimTime::ZERO)
    }

    /// Asked at `now` about a get the caller waits for: `Ok` with when its bytes were through,
    /// or `Err` with when they are now projected to be.
    pub fn through(&self, op: OpId, now: SimTime) -> Result<SimTime, SimTime> {
        let mut s = self.lock();
        s.advance(now);
        match s.waits.get(&op) {
            Some(Some(t)) => Ok(*t),
            _ => Err(s.link.finish(op).unwrap_or(now)),
        }
    }

    /// The caller no longer waits for `op`.
    pub fn forget(&self, op: OpId) {
        self.lock().waits.remove(&op);
    }
}

/// The remote tier of one engine.
#[derive(Debug)]
pub enum RemoteTier {
    /// A store this engine alone uses.
    Own(LruTier),
    /// A store shared with other engines.
    Shared(StoreHandle),
}

impl RemoteTier {
    /// Runs `f` on the chunks the store holds.
    pub fn with<R>(&self, f: impl FnOnce(&LruTier) -> R) -> R {
        match self {
            RemoteTier::Own(t) => f(t),
            RemoteTier::Shared(s) => f(&s.lock().tier),
        }
    }

    /// Whether `key` is stored and its put completed by `now`.
    pub fn contains(&self, key: u64, now: SimTime) -> bool {
        match self {
            RemoteTier::Own(t) => t.contains(key, now),
            RemoteTier::Shared(h) => {
                let mut s = h.lock();
                s.advance(now);
                s.tier.contains(key, now)
            }
        }
    }

    /// Whether `key` is stored or being put.
    pub fn has(&self, key: u64) -> bool {
        self.with(|t| t.has(key))
    }

    /// The shared store, if this tier is one.
    pub fn shared(&self) -> Option<&StoreHandle> {
        match self {
            RemoteTier::Own(_) => None,
            RemoteTier::Shared(s) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::shared_link::OpId;
    use crate::cost::{GpuProfile, TransferProfile};
    use crate::tiers::lmcache::{Chunk, LmCache, LmCacheConfig, RemoteConfig, TierHits};
    use crate::tiers::remote_client::Connections;

    const MS: u64 = 1_000_000;

    /// Round numbers: 1 MB chunks (250 tokens of 4,000 bytes), 1 GB/s GPU-to-host and host
    /// copies (1 ms a chunk), a store moving 0.1 GB/s (10 ms a chunk), 5 ms round trips, no
    /// per-operation or per-chunk overheads.
    fn profile() -> TransferProfile {
        let mut tp = TransferProfile::spec_defaults(&GpuProfile::lookup("H100").unwrap());
        tp.chunk_overhead_us = 0.0;
        tp.d2h_gbps = 1.0;
        tp.host_memcpy_gbps = 1.0;
        tp.remote_gbps = 0.1;
        tp.remote_op_us = 0.0;
        tp
    }

    /// Replica `replica`'s remote-only LMCache (no CPU tier) on `store`, Redis 5 ms away,
    /// `concurrency` operations in flight.
    fn cache(store: &Arc<Mutex<SharedStore>>, replica: usize, concurrency: u32) -> LmCache {
        let cfg = LmCacheConfig {
            chunk_size: 250,
            cpu_bytes: None,
            remote: Some(RemoteConfig {
                rtt_s: 0.005,
                concurrency,
                shared: true,
                ..RemoteConfig::default()
            }),
            ..LmCacheConfig::default()
        };
        LmCache::with_store(cfg, 4000, Some(SharedStore::replica(store, replica)))
    }

    /// A store holding 4 chunks replica 0 put at 0, and a remote hit of all 4.
    fn four_chunks_stored() -> (
        Arc<Mutex<SharedStore>>,
        TransferProfile,
        Vec<Chunk>,
        TierHits,
    ) {
        let store = SharedStore::new(u64::MAX);
        let tp = profile();
        let c = chunks(4);
        cache(&store, 0, 4).store(&c, 0, 4, at(0), &tp);
        let hits = TierHits {
            remote: 4,
            ..TierHits::default()
        };
        (store, tp, c, hits)
    }

    fn chunks(n: u64) -> Vec<Chunk> {
        (0..n).map(|i| (250 * (i as u32 + 1), 77 + i)).collect()
    }

    fn at(ns: u64) -> SimTime {
        SimTime::from_ns(ns)
    }

    /// A remote-only LMCache (no CPU tier) with a Redis of its own 5 ms away, its connections
    /// `mode`.
    fn own(mode: Connections) -> LmCache {
        let cfg = LmCacheConfig {
            chunk_size: 250,
            cpu_bytes: None,
            remote: Some(RemoteConfig {
                rtt_s: 0.005,
                connections: mode,
                window_bytes: 1 << 40,
                ..RemoteConfig::default()
            }),
            ..LmCacheConfig::default()
        };
        LmCache::new(cfg, 4000)
    }

    #[test]
    fn on_one_connection_a_lookup_waits_for_the_puts_before_it() {
        let tp = profile();
        let c = chunks(3);
        // Two 1 MB chunks stored at 0: the copy (2 ms) and the serialisation (2 ms) end at
        // 4 ms; each put is 10 ms of bytes and two 5 ms round trips.
        let (mut serial, mut pool) = (own(Connections::Serial), own(Connections::Pool));
        for l in [&mut serial, &mut pool] {
            let (critical, _) = l.store(&c, 0, 2, at(0), &tp);
            assert!((critical - 0.004).abs() < 1e-9, "{critical}");
        }
        // One connection: the puts run 4-24 ms and 24-44 ms. A lookup at 10 ms finds nothing
        // visible yet and its one existence check waits for both: answered at 49 ms.
        let (hits, s) = serial.lookup(&c, at(10 * MS), &tp);
        assert_eq!(hits.remote, 0);
        assert!((s - 0.039).abs() < 1e-9, "{s}");
        // Four workers: the second put's bytes follow the first's on the link (14-24 ms), both
        // on their own workers; the check takes a free one at once: 5 ms.
        let (hits, s) = pool.lookup(&c, at(10 * MS), &tp);
        assert_eq!(hits.remote, 0);
        assert!((s - 0.005).abs() < 1e-9, "{s}");
        // At 50 ms both puts are visible: two hits, three checks one after another.
        let (hits, s) = serial.lookup(&c, at(50 * MS), &tp);
        assert_eq!(hits.remote, 2);
        assert!((s - 0.015).abs() < 1e-9, "{s}");
        // The pool's second put completed at 34 ms: visible at 34, not at 33.
        let (hits, _) = own(Connections::Pool).lookup(&c, at(0), &tp);
        assert_eq!(hits.remote, 0);
        let (h33, _) = pool.lookup(&c, at(33 * MS), &tp);
        let (h34, _) = pool.lookup(&c, at(34 * MS), &tp);
        assert_eq!((h33.remote, h34.remote), (1, 2));
    }

    #[test]
    fn a_chunk_one_replica_put_is_a_hit_for_another_once_the_put_completed() {
        let store = SharedStore::new(u64::MAX);
        let (mut a, mut b) = (cache(&store, 0, 1), cache(&store, 1, 1));
        let tp = profile();
        let c = chunks(1);
        // A stores at 0: the GPU-to-host copy (1 ms) and the serialisation (1 ms) are on its
        // critical path; the put sends 1 MB through the store (10 ms), then waits for the
        // acknowledgements of SET data and SET metadata (2 x 5 ms): visible at 22 ms.
        let (critical, bytes) = a.store(&c, 0, 1, at(0), &tp);
        assert_eq!((critical, bytes), (0.002, 1_000_000));
        let (hits, _) = b.lookup(&c, at(22 * MS - 1), &tp);
        assert_eq!(hits.remote, 0, "A's put is still in flight");
        let (hits, lookup_s) = b.lookup(&c, at(22 * MS), &tp);
        assert_eq!(hits.remote, 1);
        // One existence check of one round trip (the request has no chunk past the hit).
        assert!((lookup_s - 0.005).abs() < 1e-12, "{lookup_s}");
        // A replica with a store of its own sees nothing of A's.
        let mut own_cfg = b.cfg.clone();
        if let Some(r) = own_cfg.remote.as_mut() {
            r.shared = false;
        }
        let mut own = LmCache::new(own_cfg, 4000);
        assert_eq!(own.lookup(&c, at(1_000 * MS), &tp).0.remote, 0);
    }

    #[test]
    fn two_replicas_loading_at_once_share_the_store_not_a_link_each() {
        let (store, tp, c, hits) = four_chunks_stored();
        // Alone (at 1 s, the store idle): one wave of 4 GETs (2 round trips of 5 ms) and 4 MB
        // deserialised (4 ms), and 4 MB through the store (40 ms): 54 ms.
        let h = SharedStore::replica(&store, 1);
        let alone =
            cache(&store, 1, 4).fetch_cost(&c, &hits, at(1_000 * MS), at(1_000 * MS), &tp, true);
        assert!((alone.s - 0.014).abs() < 1e-12, "{}", alone.s);
        let through = h.projected(alone.shared.unwrap());
        assert_eq!(through, at(1_040 * MS));
        let total = alone.s + (through - at(1_000 * MS)).as_secs_f64();
        assert!((total - 0.054).abs() < 1e-12, "{total}");
        // Two at once (at 2 s): the first is projected alone (40 ms) until the second joins;
        // then each moves at half the store's rate, and both are through after 80 ms, twice
        // the time alone: each load takes 94 ms (with a link each, both would take 54).
        let a =
            cache(&store, 1, 4).fetch_cost(&c, &hits, at(2_000 * MS), at(2_000 * MS), &tp, true);
        let a_op = a.shared.unwrap();
        let a_alone = h.projected(a_op);
        let b =
            cache(&store, 2, 4).fetch_cost(&c, &hits, at(2_000 * MS), at(2_000 * MS), &tp, true);
        let b_op = b.shared.unwrap();
        assert_eq!(a_alone, at(2_040 * MS), "projected before B joined");
        assert_eq!(h.projected(b_op), at(2_080 * MS));
        assert_eq!(h.through(a_op, at(2_040 * MS)), Err(at(2_080 * MS)));
        assert_eq!(h.through(a_op, at(2_080 * MS)), Ok(at(2_080 * MS)));
        assert_eq!(h.through(b_op, at(2_080 * MS)), Ok(at(2_080 * MS)));
        // Three at once (at 3 s): a third each, 120 ms.
        let ops: Vec<OpId> = (1..=3)
            .map(|r| {
                let f = cache(&store, r, 4).fetch_cost(
                    &c,
                    &hits,
                    at(3_000 * MS),
                    at(3_000 * MS),
                    &tp,
                    true,
                );
                f.shared.unwrap()
            })
            .collect();
        for op in ops {
            assert_eq!(h.through(op, at(3_200 * MS)), Ok(at(3_120 * MS)));
            h.forget(op);
        }
    }

    #[test]
    fn a_replica_behind_on_its_puts_halves_the_others_rate_while_its_backlog_lasts() {
        // Replica 0 stores 100 chunks at 0: 100 ms copying to the host, 100 ms serialising,
        // then 100 puts from 200 ms, 10 ms each through the store: about a second of backlog.
        let store = SharedStore::new(u64::MAX);
        let tp = profile();
        let c = chunks(100);
        cache(&store, 0, 4).store(&c, 0, 100, at(0), &tp);
        // Replica 1 loads one chunk at 300 ms: its 10 ms of bytes at half the rate (20 ms),
        // after 2 round trips (10 ms), then deserialised (1 ms): 31 ms.
        let hits = TierHits {
            remote: 1,
            ..TierHits::default()
        };
        let load =
            cache(&store, 1, 4).fetch_cost(&c[..1], &hits, at(300 * MS), at(300 * MS), &tp, true);
        let h = SharedStore::replica(&store, 1);
        let op = load.shared.unwrap();
        assert_eq!(h.through(op, at(400 * MS)), Ok(at(320 * MS)));
        assert!((load.s - 0.011).abs() < 1e-12, "{}", load.s);
        // Replica 0's backlog lost 10 ms of store time to it: its last chunk's bytes are
        // through at 200 + 1,000 + 10 ms, visible after its two acknowledgements (10 ms).
        let mut b = cache(&store, 1, 4);
        assert_eq!(b.lookup(&c, at(1_220 * MS - 1), &tp).0.remote, 99);
        assert_eq!(b.lookup(&c, at(1_220 * MS), &tp).0.remote, 100);
    }

    #[test]
    fn a_replica_skips_puts_its_staging_buffer_cannot_hold_until_earlier_ones_are_through() {
        // 3 MB of staging, 1 MB chunks taking 10 ms each through the store.
        let store = SharedStore::new(u64::MAX);
        let h = SharedStore::replica(&store, 0);
        let put = |key: u64, ms: u64| {
            let d = SimDuration::from_ns(10 * MS);
            h.put(key, 1_000_000, at(ms * MS), d, SimDuration::ZERO, 3_000_000)
        };
        assert_eq!(
            (put(1, 0), put(2, 0), put(3, 0)),
            (Some(0), Some(0), Some(0))
        );
        assert_eq!(put(4, 0), None, "3 MB staged");
        // The store reaches 10 ms: the first is through, room for one more.
        store.lock().unwrap().advance(at(10 * MS));
        assert_eq!((put(4, 10), put(5, 10)), (Some(0), None));
        // A skipped chunk is not stored: nobody finds it, and a later put may store it.
        assert!(!store.lock().unwrap().tier.has(5));
        // LMCache's counters: a replica whose CPU tier (its staging buffer) holds 2 chunks puts
        // 2 of 5 chunks stored at once and skips 3.
        let tp = profile();
        let mut cfg = cache(&store, 1, 4).cfg.clone();
        cfg.cpu_bytes = Some(2_000_000);
        let mut c = LmCache::with_store(cfg, 4000, Some(SharedStore::replica(&store, 1)));
        let five: Vec<Chunk> = (0..5u64).map(|i| (250 * (i as u32 + 1), 500 + i)).collect();
        c.store(&five, 0, 5, at(0), &tp);
        assert_eq!((c.stats.remote_stores, c.stats.remote_skips), (2, 3));
    }

    #[test]
    fn capacity_and_eviction_are_fleet_wide() {
        // Room for 3 chunks: A puts 2, B puts 2 others; the oldest of A's goes, counted once,
        // against B (whose put evicted it).
        let store = SharedStore::new(3_000_000);
        let tp = profile();
        let (mut a, mut b) = (cache(&store, 0, 1), cache(&store, 1, 1));
        let ca: Vec<Chunk> = vec![(250, 1), (500, 2)];
        let cb: Vec<Chunk> = vec![(250, 3), (500, 4)];
        a.store(&ca, 0, 2, at(0), &tp);
        b.store(&cb, 0, 2, at(MS), &tp);
        assert_eq!(
            (
                a.evictions().2,
                b.evictions().2,
                store.lock().unwrap().evictions()
            ),
            (0, 1, 1)
        );
        let late = at(10_000 * MS);
        assert_eq!(a.lookup(&ca, late, &tp).0.remote, 0, "chunk 1 evicted");
        assert_eq!(a.lookup(&cb, late, &tp).0.remote, 2, "B's chunks serve A");
    }
}

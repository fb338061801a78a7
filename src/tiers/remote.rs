//! LMCache's remote tier as one engine sees it: a store of its own, or one store that every
//! replica of a fleet shares (one Redis, one `lmcache_server`, one Mooncake store behind the
//! same `remote_url`).
//!
//! A shared store holds one set of chunks: capacity and LRU eviction are fleet-wide, and a chunk
//! one replica put is a hit for every replica once the put has completed (LMCache's key is the
//! model, the TP layout, the dtype and the chunk hash; the replicas of one fleet run one
//! configuration, so their keys match). Its data path is shared too: every replica's gets and
//! puts move their bytes through it one after another, in the order they are issued, at the
//! transfer profile's remote bandwidth (Redis serves commands on one thread), so a store busy
//! with one replica's traffic slows every other. An operation waits for the bytes every replica
//! still has in flight at the store when it is issued (at most `remote_concurrency` chunks of
//! each: LMCache's client holds back the rest), then moves its own; so two replicas loading at
//! once finish one load's time apart, and a replica whose puts fall behind delays the others by
//! its in-flight puts, not by its whole backlog. Round trips are each replica's own (its RTT to
//! the store). A store of one engine keeps the per-engine cost model of
//! [`crate::tiers::lmcache`] (its transfers limited by its own link), so a one-replica fleet is
//! exactly the single-engine run.

use super::lru::LruTier;
use crate::time::{SimDuration, SimTime};
use std::sync::{Arc, Mutex, MutexGuard};

/// A store shared by a fleet: its contents and each replica's traffic through it.
#[derive(Debug)]
pub struct SharedStore {
    tier: LruTier,
    /// Per replica, when the bytes it has sent or asked for are through the store.
    busy_until: Vec<SimTime>,
}

impl SharedStore {
    /// An empty store of `capacity` bytes (`u64::MAX`: unbounded); [`SharedStore::replica`]
    /// gives each replica's connector its handle.
    pub fn new(capacity: u64) -> Arc<Mutex<SharedStore>> {
        Arc::new(Mutex::new(SharedStore {
            tier: LruTier::new(capacity),
            busy_until: Vec::new(),
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

    /// Moves bytes taking `data` through the store, issued at `at` by this replica; returns
    /// when they are through. They wait for what every replica (this one included) still has
    /// in flight at `at`, at most `in_flight` of each: a replica keeps at most
    /// `remote_concurrency` operations at the store, and LMCache's client queues the rest.
    pub fn serve(&self, at: SimTime, data: SimDuration, in_flight: SimDuration) -> SimTime {
        let mut s = self.lock();
        if s.busy_until.len() <= self.replica {
            s.busy_until.resize(self.replica + 1, SimTime::ZERO);
        }
        let wait = s.busy_until.iter().fold(SimDuration::ZERO, |w, b| {
            let ahead = if *b > at { *b - at } else { SimDuration::ZERO };
            w + ahead.min(in_flight)
        });
        let done = at + wait + data;
        let mine = &mut s.busy_until[self.replica];
        *mine = (*mine).max(done);
        done
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
        self.with(|t| t.contains(key, now))
    }

    /// Whether `key` is stored or being put.
    pub fn has(&self, key: u64) -> bool {
        self.with(|t| t.has(key))
    }

    /// Stores `key` (`bytes`), visible from `ready_at`; returns the chunks this evicted.
    pub fn insert(&mut self, key: u64, bytes: u64, ready_at: SimTime) -> u64 {
        let put = |t: &mut LruTier| {
            let before = t.evictions;
            t.insert(key, bytes, ready_at);
            t.evictions - before
        };
        match self {
            RemoteTier::Own(t) => put(t),
            RemoteTier::Shared(s) => put(&mut s.lock().tier),
        }
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
    use crate::cost::{GpuProfile, TransferProfile};
    use crate::tiers::lmcache::{Chunk, LmCache, LmCacheConfig, RemoteConfig, TierHits};

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
        // Alone (at 1 s, the store idle): one wave of 4 GETs (2 round trips of 5 ms), 4 MB
        // through the store (40 ms), 4 MB deserialised (4 ms).
        let (alone, _) = cache(&store, 1, 4).fetch_cost(&c, &hits, at(1_000 * MS), &tp);
        assert!((alone - 0.054).abs() < 1e-9, "{alone}");
        // Two at once (at 2 s): the second's bytes wait behind the first's in the store's
        // queue, 40 ms more; with a link each, both would take 54 ms.
        let (first, _) = cache(&store, 1, 4).fetch_cost(&c, &hits, at(2_000 * MS), &tp);
        let (second, _) = cache(&store, 2, 4).fetch_cost(&c, &hits, at(2_000 * MS), &tp);
        assert!((first - 0.054).abs() < 1e-9, "{first}");
        assert!((second - 0.094).abs() < 1e-9, "{second}");
        // A third at once waits for both: 134 ms.
        let (third, _) = cache(&store, 3, 4).fetch_cost(&c, &hits, at(2_000 * MS), &tp);
        assert!((third - 0.134).abs() < 1e-9, "{third}");
    }

    /// Two replicas loading back to back for as long as they run: after the first pair (54
    /// and 94 ms), every load takes 80 ms, for both: the store is busy all the time, moving
    /// each replica's 40 ms of data in every 80 ms (half its bandwidth each), as a store
    /// shared fairly would (two loads of 40 ms of data and 14 ms of round trips and
    /// deserialising each cannot cycle faster than 80 ms through one store); with a link each,
    /// every load would take 54 ms.
    #[test]
    fn two_replicas_loading_without_pause_each_get_half_the_store() {
        let (store, tp, c, hits) = four_chunks_stored();
        let (mut a, mut b) = (cache(&store, 1, 4), cache(&store, 2, 4));
        // Each issues its next load when its last one completed.
        let (mut next_a, mut next_b) = (1_000 * MS, 1_000 * MS);
        let mut times = Vec::new();
        for _ in 0..6 {
            // Whichever is due first issues first (A on ties).
            if next_a <= next_b {
                let (s, _) = a.fetch_cost(&c, &hits, at(next_a), &tp);
                next_a += (s * 1e9).round() as u64;
                times.push(('a', s));
            } else {
                let (s, _) = b.fetch_cost(&c, &hits, at(next_b), &tp);
                next_b += (s * 1e9).round() as u64;
                times.push(('b', s));
            }
        }
        let ms: Vec<(char, u64)> = times
            .iter()
            .map(|(w, s)| (*w, (s * 1e3).round() as u64))
            .collect();
        assert_eq!(
            ms,
            vec![
                ('a', 54),
                ('b', 94),
                ('a', 80),
                ('b', 80),
                ('a', 80),
                ('b', 80)
            ]
        );
    }

    #[test]
    fn a_replica_behind_on_its_puts_delays_others_by_what_it_has_in_flight() {
        // Replica 0 puts 100 chunks from 0 (about a second of store time); replica 1's load of
        // one chunk at 100 ms waits for replica 0's four chunks in flight (40 ms), not for the
        // whole backlog: 2 round trips (10 ms) + 40 ms + its 10 ms + deserialising (1 ms).
        let store = SharedStore::new(u64::MAX);
        let tp = profile();
        let c = chunks(100);
        cache(&store, 0, 4).store(&c, 0, 100, at(0), &tp);
        assert!(store.lock().unwrap().busy_until[0] > at(990 * MS));
        let hits = TierHits {
            remote: 1,
            ..TierHits::default()
        };
        let (load, _) = cache(&store, 1, 4).fetch_cost(&c[..1], &hits, at(100 * MS), &tp);
        assert!((load - 0.061).abs() < 1e-9, "{load}");
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

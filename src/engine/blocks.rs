//! vLLM V1's paged KV block pool with automatic prefix caching.
//!
//! Mechanisms mirrored (vllm/v1/core/block_pool.py, kv_cache_utils.py):
//! - Blocks with no running request (`ref_cnt == 0`) sit in a free queue ordered for eviction:
//!   allocation takes the front; a freed block goes to the back.
//! - A finished or preempted request frees its blocks tail first, so its suffix blocks are
//!   evicted before its prefix blocks.
//! - A full block that has been computed is registered under its chained hash; a later request
//!   whose prefix hashes match reuses it (a hit takes the block out of the free queue).
//! - Allocating a block that still carries a hash evicts that hash from the prefix cache.
//!
//! Blocks no prefix-cache entry can ever point at (those past what any other request shares,
//! see the engine) need no identity: a request holds them as a count, and the free queue keeps
//! a run of them as one entry. Only blocks that may carry a hash have an id and bookkeeping.
//! Which physical block serves a request is not observable, so this changes no result; the
//! reference mode, where every block has an id, checks that.

use crate::util::hashindex::HashIndex;
use std::collections::VecDeque;

/// One block id's bookkeeping, kept together so that touching a block costs one cache line.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Stamp of its last push onto the free queue (0: not in the queue).
    stamp: u64,
    /// The prefix-cache key it holds, when `has_hash`.
    hash: u64,
    ref_cnt: u32,
    has_hash: bool,
}

/// An entry of the free queue: one block id, or a run of `anon` blocks without identity.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stamp: u64,
    id: u32,
    anon: u32,
}

/// The GPU's KV blocks.
#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<Meta>,
    /// The free queue, front first. An id entry is stale (skipped) once its block was taken by
    /// a hit or pushed again: its stamp no longer matches the block's.
    queue: VecDeque<Entry>,
    /// Stale id entries in `queue` (compacted away when they are most of it).
    stale: usize,
    /// Ids neither held nor in the queue: as many as blocks held or free without identity.
    spare: Vec<u32>,
    free: u32,
    cached: HashIndex,
    /// Prefix-cache entries evicted so far.
    pub evictions: u64,
    caching: bool,
    // Every push onto the free queue gets the next stamp. Allocation always pops the oldest
    // block present, so popped stamps never decrease: a block freed with stamp s is still in the
    // pool while `last_popped < s`. Scans of a waiting request's prefix hits rely on this to
    // stay up to date across steps without rescanning (see `HitScan`).
    next_stamp: u64,
    last_popped: u64,
    // Counts every block id taken from or returned to the free queue by a request (a reference
    // count moving between 0 and 1): while it is unchanged, no block changed between held and
    // free, and a remembered count of held blocks still holds.
    ref_epoch: u64,
    // Successful prefix-cache insertions.
    inserts: u64,
    // Requests that released blocks (free blocks only grow this way).
    releases: u64,
}

/// A remembered prefix-hit scan of one waiting request: the blocks its leading hashes hit, kept
/// across steps and brought up to date by [`BlockPool::refresh_hits`] without looking every
/// hash up again.
///
/// Blocks leave the free queue for eviction in stamp order, so a hit block that was free when
/// it was scanned is gone exactly when its stamp is at most the last popped stamp; one that was
/// held by a request can only be evicted after a release gives it a stamp newer than
/// `start_stamp`. With `min_free_stamp` (a running minimum) the first evicted hit is found by
/// binary search, and while `last_popped < start_stamp` nothing else can have been evicted.
/// Where a recorded stamp is stale (a block taken and released again since) the truncation is
/// only earlier than needed, and the hash lookups that extend the scan restore the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HitScan {
    /// The hit blocks, in prefix order.
    blocks: Vec<u32>,
    /// `min_free_stamp[i]`: the smallest stamp among `blocks[..=i]` that were free when read
    /// (`u64::MAX` while none was).
    min_free_stamp: Vec<u64>,
    /// The pool's next stamp when the scan was (re)started.
    start_stamp: u64,
    /// `busy_prefix[i]`: how many of `blocks[..=i]` running requests held at `busy_epoch`.
    busy_prefix: Vec<u32>,
    busy_epoch: u64,
}

impl HitScan {
    /// Leading blocks hit.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether nothing is hit.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The hit blocks, in prefix order.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }
}

impl BlockPool {
    /// A pool of `n` empty blocks; `caching` turns automatic prefix caching on.
    pub fn new(n: u32, caching: bool) -> Self {
        let mut queue = VecDeque::new();
        if n > 0 {
            queue.push_back(Entry {
                stamp: 1,
                id: 0,
                anon: n,
            });
        }
        BlockPool {
            meta: vec![
                Meta {
                    stamp: 0,
                    hash: 0,
                    ref_cnt: 0,
                    has_hash: false,
                };
                n as usize
            ],
            queue,
            stale: 0,
            spare: (0..n).rev().collect(),
            free: n,
            cached: HashIndex::with_max_entries(n as usize),
            evictions: 0,
            caching,
            next_stamp: 2,
            last_popped: 0,
            ref_epoch: 0,
            inserts: 0,
            releases: 0,
        }
    }

    /// Total blocks.
    pub fn total(&self) -> u32 {
        self.meta.len() as u32
    }

    /// Blocks in the free queue (allocatable, possibly still caching a prefix).
    pub fn num_free(&self) -> u32 {
        self.free
    }

    /// Blocks held by running requests.
    pub fn num_used(&self) -> u32 {
        self.total() - self.free
    }

    #[inline]
    fn push_id(&mut self, b: u32) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.meta[b as usize].stamp = stamp;
        self.queue.push_back(Entry {
            stamp,
            id: b,
            anon: 0,
        });
        self.free += 1;
    }

    fn push_anon(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.free += n;
        if let Some(e) = self.queue.back_mut()
            && e.anon > 0
        {
            // Adjacent runs merge: no id lies between them.
            e.anon += n;
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.queue.push_back(Entry {
            stamp,
            id: 0,
            anon: n,
        });
    }

    /// Takes `want` blocks (at most) off the front of the free queue, oldest first: every block
    /// id met evicts its hash and goes to `ids` when `keep_ids`, else to the spare ids;
    /// anonymous blocks are only counted. Returns anonymous blocks taken.
    #[inline]
    fn pop_front(&mut self, mut want: u32, keep_ids: Option<&mut Vec<u32>>) -> u32 {
        let mut ids = keep_ids;
        let mut anon = 0;
        while want > 0 {
            let Some(e) = self.queue.front_mut() else {
                break;
            };
            if e.anon > 0 {
                let take = e.anon.min(want);
                e.anon -= take;
                self.last_popped = e.stamp;
                if e.anon == 0 {
                    self.queue.pop_front();
                }
                anon += take;
                want -= take;
                self.free -= take;
                continue;
            }
            let e = *e;
            self.queue.pop_front();
            let m = &mut self.meta[e.id as usize];
            if m.stamp != e.stamp || m.ref_cnt > 0 {
                self.stale -= 1;
                continue;
            }
            self.last_popped = e.stamp;
            m.stamp = 0;
            if m.has_hash {
                m.has_hash = false;
                let h = m.hash;
                if self.cached.remove_if(h, e.id) {
                    self.evictions += 1;
                }
            }
            self.free -= 1;
            want -= 1;
            match ids.as_deref_mut() {
                Some(v) => {
                    self.meta[e.id as usize].ref_cnt = 1;
                    v.push(e.id);
                }
                None => self.spare.push(e.id),
            }
        }
        anon
    }

    /// Gives `n` spare ids to a request (as held blocks), for blocks it holds without identity.
    fn take_spare(&mut self, n: u32, ids: &mut Vec<u32>) {
        for _ in 0..n {
            let b = self
                .spare
                .pop()
                .expect("a spare id for every block without one");
            self.meta[b as usize].ref_cnt = 1;
            ids.push(b);
        }
    }

    /// The block caching `hash`, if any. (A test oracle: the engine
    /// uses [`BlockPool::refresh_hits`] and [`BlockPool::allocate_into`].)
    #[cfg(test)]
    pub fn cached_block(&self, hash: u64) -> Option<u32> {
        if !self.caching {
            return None;
        }
        self.cached.get(hash)
    }

    /// How many leading `hashes` are cached (a prefix-cache hit of that many blocks). (A test oracle: the engine
    /// uses [`BlockPool::refresh_hits`] and [`BlockPool::allocate_into`].)
    #[cfg(test)]
    pub fn count_hits(&self, hashes: &[u64]) -> usize {
        if !self.caching {
            return 0;
        }
        hashes
            .iter()
            .take_while(|h| self.cached.get(**h).is_some())
            .count()
    }

    /// Takes a reference on a cached block (a prefix hit).
    pub fn touch(&mut self, b: u32) {
        let m = &mut self.meta[b as usize];
        if m.ref_cnt == 0 {
            // Its queue entry goes stale; compact when stale entries are most of the queue.
            m.stamp = 0;
            self.free -= 1;
            self.ref_epoch += 1;
            self.stale += 1;
            if self.stale > 1024 && self.stale * 2 > self.queue.len() {
                let meta = &self.meta;
                self.queue
                    .retain(|e| e.anon > 0 || meta[e.id as usize].stamp == e.stamp);
                self.stale = 0;
            }
        }
        self.meta[b as usize].ref_cnt += 1;
    }

    /// Takes the least recently freed block as a block with identity (one that may be
    /// registered in the prefix cache), evicting the cached prefix it held. (A test oracle: the engine
    /// uses [`BlockPool::refresh_hits`] and [`BlockPool::allocate_into`].)
    #[cfg(test)]
    pub fn allocate(&mut self) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let mut one = Vec::with_capacity(1);
        self.allocate_into(1, 0, &mut one);
        one.pop()
    }

    /// Takes `with_id + anon` blocks off the front of the free queue, in that order: the first
    /// `with_id` get ids (appended to `ids`), the rest are counted only. The caller has checked
    /// that enough blocks are free.
    pub fn allocate_into(&mut self, with_id: u32, anon: u32, ids: &mut Vec<u32>) {
        debug_assert!(with_id + anon <= self.free, "free count checked");
        if with_id > 0 {
            let before = ids.len();
            let got = self.pop_front(with_id, Some(ids));
            let spare_needed = with_id - (ids.len() - before) as u32;
            debug_assert_eq!(got, spare_needed);
            self.take_spare(spare_needed, ids);
        }
        if anon > 0 {
            self.pop_front(anon, None);
        }
    }

    /// Gives `n` of a request's blocks without identity an id each (appended to `ids`), so
    /// that they can be registered in the prefix cache (a preempted request's own blocks).
    pub fn identify(&mut self, n: u32, ids: &mut Vec<u32>) {
        self.take_spare(n, ids);
    }

    /// Releases a request's blocks, last block first: `anon` blocks without identity (always
    /// its tail), then `blocks` from the last.
    pub fn free_request(&mut self, blocks: &[u32], anon: u32) {
        self.releases += 1;
        self.push_anon(anon);
        for &b in blocks.iter().rev() {
            let r = &mut self.meta[b as usize].ref_cnt;
            debug_assert!(*r > 0, "freeing a free block");
            *r -= 1;
            if *r == 0 {
                self.push_id(b);
                self.ref_epoch += 1;
            }
        }
    }

    /// Registers a computed full block under its hash.
    #[inline]
    pub fn cache(&mut self, b: u32, hash: u64) {
        let m = &mut self.meta[b as usize];
        if !self.caching || m.has_hash {
            return;
        }
        m.has_hash = true;
        m.hash = hash;
        if self.cached.insert_if_absent(hash, b) {
            self.inserts += 1;
        }
    }

    /// A counter that moves whenever something could make room for a waiting request:
    /// prefix-cache insertions, hits taken from the free queue, and releases. While it stands
    /// still, a waiting request that could not be admitted still cannot (allocations and the
    /// evictions they cause only make room scarcer; see the engine's decode stretches).
    pub fn admission_epoch(&self) -> u64 {
        self.inserts + self.ref_epoch + self.releases
    }

    /// Brings `scan` up to date with the prefix hit of `hashes`: drops the hits evicted since it
    /// was made (or starts over when that cannot be told), then extends it through the cache.
    pub fn refresh_hits(&self, scan: &mut HitScan, hashes: &[u64]) {
        if scan.blocks.is_empty() || self.last_popped >= scan.start_stamp {
            scan.blocks.clear();
            scan.min_free_stamp.clear();
            scan.busy_prefix.clear();
            scan.start_stamp = self.next_stamp;
        } else {
            let last = self.last_popped;
            let keep = scan
                .min_free_stamp
                .partition_point(|m| *m > last)
                .min(hashes.len());
            scan.blocks.truncate(keep);
            scan.min_free_stamp.truncate(keep);
            scan.busy_prefix.truncate(keep);
        }
        if !self.caching {
            return;
        }
        let mut min = scan.min_free_stamp.last().copied().unwrap_or(u64::MAX);
        while let Some(b) = hashes
            .get(scan.blocks.len())
            .and_then(|h| self.cached.get(*h))
        {
            let m = &self.meta[b as usize];
            if m.ref_cnt == 0 {
                min = min.min(m.stamp);
            }
            scan.blocks.push(b);
            scan.min_free_stamp.push(min);
        }
        debug_assert!(
            scan.blocks
                .iter()
                .zip(hashes)
                .all(|(b, h)| self.cached.get(*h) == Some(*b)),
            "a remembered hit is no longer cached"
        );
    }

    /// How many of the scan's hit blocks running requests hold (taking them uses no free
    /// block). Counted again only over blocks added since the last count, unless a block has
    /// changed between held and free since.
    pub fn count_busy(&self, scan: &mut HitScan) -> usize {
        if scan.busy_epoch != self.ref_epoch {
            scan.busy_prefix.clear();
            scan.busy_epoch = self.ref_epoch;
        }
        let mut busy = scan.busy_prefix.last().copied().unwrap_or(0);
        for &b in &scan.blocks[scan.busy_prefix.len()..] {
            busy += u32::from(self.meta[b as usize].ref_cnt > 0);
            scan.busy_prefix.push(busy);
        }
        busy as usize
    }
}

/// A request's blocks in a [`BlockPool`]: ids, then blocks without identity.
#[derive(Debug, Default)]
pub struct BlockHeld {
    blocks: Vec<u32>,
    anon: u32,
    /// Leading blocks registered (or found registered) already.
    done: u32,
}

impl super::pool::KvPool for BlockPool {
    type Held = BlockHeld;
    type Scan = HitScan;

    fn new(n: u32, caching: bool) -> Self {
        BlockPool::new(n, caching)
    }

    fn num_free(&self) -> u32 {
        self.free
    }

    fn total(&self) -> u32 {
        self.meta.len() as u32
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }

    fn admission_epoch(&self) -> u64 {
        BlockPool::admission_epoch(self)
    }

    fn held_len(held: &BlockHeld) -> u32 {
        held.blocks.len() as u32 + held.anon
    }

    fn scan_hits(&self, scan: &mut HitScan, hashes: &[u64]) -> usize {
        *scan = HitScan::default();
        self.refresh_hits(scan, hashes);
        scan.len()
    }

    fn count_busy(&self, scan: &mut HitScan) -> usize {
        BlockPool::count_busy(self, scan)
    }

    fn take_hits(&mut self, scan: &HitScan, held: &mut BlockHeld) {
        debug_assert!(held.blocks.is_empty() && held.anon == 0);
        for &b in scan.blocks() {
            self.touch(b);
        }
        held.blocks.extend_from_slice(scan.blocks());
        held.done = scan.len() as u32;
    }

    fn allocate(&mut self, held: &mut BlockHeld, n: u32, id_limit: u32) {
        let have = held.blocks.len() as u32 + held.anon;
        let with_id = if held.anon > 0 {
            0
        } else {
            (have + n).min(id_limit).saturating_sub(have)
        };
        self.allocate_into(with_id, n - with_id, &mut held.blocks);
        held.anon += n - with_id;
    }

    fn register(&mut self, held: &mut BlockHeld, hashes: &std::sync::Arc<Vec<u64>>, upto: u32) {
        if upto <= held.done {
            return;
        }
        let ids = held.blocks.len() as u32;
        if upto > ids {
            self.identify(upto - ids, &mut held.blocks);
            held.anon -= upto - ids;
        }
        for k in held.done as usize..upto as usize {
            self.cache(held.blocks[k], hashes[k]);
        }
        held.done = upto;
    }

    fn release(&mut self, held: &mut BlockHeld) {
        self.free_request(&held.blocks, held.anon);
        *held = BlockHeld::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recent_and_suffix_first() {
        let mut p = BlockPool::new(4, true);
        // Request A takes blocks 0,1 (prefix hashes 10, 11); B takes 2,3 (20, 21).
        let a: Vec<u32> = (0..2).map(|_| p.allocate().unwrap()).collect();
        let b: Vec<u32> = (0..2).map(|_| p.allocate().unwrap()).collect();
        assert_eq!((a.clone(), b.clone()), (vec![0, 1], vec![2, 3]));
        assert_eq!(p.allocate(), None);
        p.cache(a[0], 10);
        p.cache(a[1], 11);
        p.cache(b[0], 20);
        p.cache(b[1], 21);
        p.free_request(&a, 0); // queue: 1, 0 (suffix first)
        p.free_request(&b, 0); // queue: 1, 0, 3, 2
        assert_eq!(p.num_free(), 4);
        assert_eq!(p.count_hits(&[10, 11]), 2);
        // Allocating one block evicts A's suffix (hash 11), not its prefix.
        assert_eq!(p.allocate(), Some(1));
        assert_eq!(p.evictions, 1);
        assert_eq!(p.count_hits(&[10, 11]), 1);
        // A hit on B's prefix takes block 2 out of the free queue.
        let hit = p.cached_block(20).unwrap();
        p.touch(hit);
        assert_eq!(p.num_free(), 2);
        // Next allocations take 0 (evicting 10) then 3 (evicting 21); 2 stays cached.
        assert_eq!(p.allocate(), Some(0));
        assert_eq!(p.allocate(), Some(3));
        assert_eq!(p.evictions, 3);
        assert_eq!(p.count_hits(&[20]), 1);
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn a_remembered_scan_follows_evictions_and_holds() {
        // Six blocks start free as one run without identity (stamp 1). Request A takes ids 0-3,
        // caches 10-13 and frees them tail first: the queue is [2 blocks](1) 3(2) 2(3) 1(4) 0(5).
        let mut p = BlockPool::new(6, true);
        let a: Vec<u32> = (0..4).map(|_| p.allocate().unwrap()).collect();
        for (b, h) in a.iter().zip(10..) {
            p.cache(*b, h);
        }
        p.free_request(&a, 0);
        let hashes = [10, 11, 12, 13];
        let mut scan = HitScan::default();
        p.refresh_hits(&mut scan, &hashes);
        assert_eq!(scan.blocks(), &[0, 1, 2, 3]);
        assert_eq!(scan.min_free_stamp, vec![5, 4, 3, 2]);
        assert_eq!(p.count_busy(&mut scan), 0);
        // Three allocations take the run (as spare ids 4 and 5) and 3: hash 13 is evicted, the
        // scan is cut to three hits by its stamps (3 had stamp 2 <= last popped 2).
        let b: Vec<u32> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(b, vec![4, 5, 3]);
        p.refresh_hits(&mut scan, &hashes);
        assert_eq!(scan.blocks(), &[0, 1, 2]);
        assert_eq!(p.count_hits(&hashes), 3);
        // Another request takes block 1 (a hit): one of the three is now held.
        p.touch(1);
        assert_eq!(p.count_busy(&mut scan), 1);
        // It frees block 1 (stamp 6); two allocations pop 2 (stamp 3), skip 1's stale entry and
        // pop 0 (stamp 5), evicting hashes 12 and 10: no hit is left, though 1 still caches 11.
        p.free_request(&[1], 0);
        assert_eq!(p.count_busy(&mut scan), 0);
        assert_eq!((p.allocate(), p.allocate()), (Some(2), Some(0)));
        p.refresh_hits(&mut scan, &hashes);
        assert!(scan.is_empty());
        assert_eq!(p.cached_block(11), Some(1));
        // Hash 10 cached again in block 4 makes 10, 11 a hit once more.
        p.cache(4, 10);
        p.refresh_hits(&mut scan, &hashes);
        assert_eq!(scan.blocks(), &[4, 1]);
        assert_eq!(p.count_busy(&mut scan), 1, "block 4 is held, 1 is free");
    }

    #[test]
    fn blocks_without_identity_keep_their_place_in_the_queue() {
        let mut p = BlockPool::new(5, true);
        // A: one block with an id (it will hold hash 100), then two without.
        let mut a = Vec::new();
        p.allocate_into(1, 2, &mut a);
        assert_eq!((a.len(), p.num_free()), (1, 2));
        p.cache(a[0], 100);
        // B: two blocks without identity; the pool is full.
        let mut b = Vec::new();
        p.allocate_into(0, 2, &mut b);
        assert!(b.is_empty());
        assert_eq!((p.num_free(), p.allocate()), (0, None));
        // A frees its tail first (the two anonymous blocks), then its id; then B its two.
        p.free_request(&a, 2);
        p.free_request(&b, 2);
        assert_eq!(p.num_free(), 5);
        // Queue: [2] A's id [2]. One block with an id comes from the first run: hash 100 stays.
        let mut c = Vec::new();
        p.allocate_into(1, 0, &mut c);
        assert_eq!((c.len(), p.count_hits(&[100]), p.evictions), (1, 1, 0));
        // Two more blocks: the run's last one, then A's block, evicting its hash.
        p.allocate_into(0, 2, &mut c);
        assert_eq!((p.count_hits(&[100]), p.evictions, p.num_free()), (0, 1, 2));
        // Giving two held anonymous blocks ids (a preempted request's own blocks) uses spares.
        let mut d = Vec::new();
        p.identify(2, &mut d);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| !c.contains(x)));
        p.cache(d[1], 7);
        p.free_request(&d, 0);
        assert_eq!((p.num_free(), p.count_hits(&[7])), (4, 1));
    }

    #[test]
    fn shared_blocks_return_to_the_queue_when_the_last_user_frees() {
        let mut p = BlockPool::new(2, true);
        let x = p.allocate().unwrap();
        p.cache(x, 7);
        p.touch(x); // a second request shares it
        p.free_request(&[x], 0);
        assert_eq!(p.num_free(), 1);
        p.free_request(&[x], 0);
        assert_eq!(p.num_free(), 2);
        assert_eq!(p.count_hits(&[7]), 1);
    }

    #[test]
    fn caching_off_never_hits() {
        let mut p = BlockPool::new(2, false);
        let x = p.allocate().unwrap();
        p.cache(x, 7);
        p.free_request(&[x], 0);
        assert_eq!(p.count_hits(&[7]), 0);
        assert_eq!(p.cached_block(7), None);
    }
}

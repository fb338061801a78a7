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

use crate::util::hashindex::HashIndex;

const NIL: u32 = u32::MAX;

/// One block's bookkeeping, kept together so that touching a block costs one cache line.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Stamp of its last push onto the free queue (see `BlockPool::stamp`).
    stamp: u64,
    /// The prefix-cache key it holds, when `has_hash`.
    hash: u64,
    prev: u32,
    next: u32,
    ref_cnt: u32,
    has_hash: bool,
}

/// The GPU's KV blocks.
#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<Meta>,
    head: u32,
    tail: u32,
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
    // Counts every block taken from or returned to the free queue by a request (a reference
    // count moving between 0 and 1): while it is unchanged, no block changed between held and
    // free, and a remembered count of held blocks still holds.
    ref_epoch: u64,
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
        let mut p = BlockPool {
            meta: vec![
                Meta {
                    stamp: 0,
                    hash: 0,
                    prev: NIL,
                    next: NIL,
                    ref_cnt: 0,
                    has_hash: false,
                };
                n as usize
            ],
            head: NIL,
            tail: NIL,
            free: 0,
            cached: HashIndex::with_max_entries(n as usize),
            evictions: 0,
            caching,
            next_stamp: 1,
            last_popped: 0,
            ref_epoch: 0,
        };
        for b in 0..n {
            p.push_back(b);
        }
        p
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
    fn push_back(&mut self, b: u32) {
        let tail = self.tail;
        let m = &mut self.meta[b as usize];
        m.stamp = self.next_stamp;
        m.prev = tail;
        m.next = NIL;
        self.next_stamp += 1;
        if tail != NIL {
            self.meta[tail as usize].next = b;
        } else {
            self.head = b;
        }
        self.tail = b;
        self.free += 1;
    }

    #[inline]
    fn unlink(&mut self, b: u32) {
        let Meta {
            prev: p, next: n, ..
        } = self.meta[b as usize];
        if p != NIL {
            self.meta[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.meta[n as usize].prev = p;
        } else {
            self.tail = p;
        }
        self.free -= 1;
    }

    /// The block caching `hash`, if any.
    pub fn cached_block(&self, hash: u64) -> Option<u32> {
        if !self.caching {
            return None;
        }
        self.cached.get(hash)
    }

    /// How many leading `hashes` are cached (a prefix-cache hit of that many blocks).
    pub fn count_hits(&self, hashes: &[u64]) -> usize {
        if !self.caching {
            return 0;
        }
        hashes
            .iter()
            .take_while(|h| self.cached.get(**h).is_some())
            .count()
    }

    /// Whether taking block `b` for a request uses a free block (it was in the free queue).
    pub fn is_free(&self, b: u32) -> bool {
        self.meta[b as usize].ref_cnt == 0
    }

    /// Takes a reference on a cached block (a prefix hit).
    pub fn touch(&mut self, b: u32) {
        if self.meta[b as usize].ref_cnt == 0 {
            self.unlink(b);
            self.ref_epoch += 1;
        }
        self.meta[b as usize].ref_cnt += 1;
    }

    /// Takes the least recently freed block, evicting its cached prefix if it has one.
    #[inline]
    pub fn allocate(&mut self) -> Option<u32> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        let m = &mut self.meta[b as usize];
        self.last_popped = m.stamp;
        m.ref_cnt = 1;
        if m.has_hash {
            m.has_hash = false;
            let h = m.hash;
            if self.cached.remove_if(h, b) {
                self.evictions += 1;
            }
        }
        Some(b)
    }

    /// Releases a request's blocks, last block first.
    pub fn free_request(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let r = &mut self.meta[b as usize].ref_cnt;
            debug_assert!(*r > 0, "freeing a free block");
            *r -= 1;
            if *r == 0 {
                self.push_back(b);
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
        self.cached.insert_if_absent(hash, b);
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

    /// Entries in the prefix cache.
    pub fn num_cached(&self) -> usize {
        self.cached.len()
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
        p.free_request(&a); // queue: 1, 0 (suffix first)
        p.free_request(&b); // queue: 1, 0, 3, 2
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
        // Blocks 0..5 start free with stamps 1..6. Request A takes 0-3, caches 10-13 and frees
        // them tail first: the queue is 4(5) 5(6) 3(7) 2(8) 1(9) 0(10).
        let mut p = BlockPool::new(6, true);
        let a: Vec<u32> = (0..4).map(|_| p.allocate().unwrap()).collect();
        for (b, h) in a.iter().zip(10..) {
            p.cache(*b, h);
        }
        p.free_request(&a);
        let hashes = [10, 11, 12, 13];
        let mut scan = HitScan::default();
        p.refresh_hits(&mut scan, &hashes);
        assert_eq!(scan.blocks(), &[0, 1, 2, 3]);
        assert_eq!(scan.min_free_stamp, vec![10, 9, 8, 7]);
        assert_eq!(p.count_busy(&mut scan), 0);
        // Three allocations pop 4, 5 and 3: hash 13 is evicted, the scan is cut to three hits
        // by its stamps (3 had stamp 7 <= last popped 7) without a rescan.
        let b: Vec<u32> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(b, vec![4, 5, 3]);
        p.refresh_hits(&mut scan, &hashes);
        assert_eq!(scan.blocks(), &[0, 1, 2]);
        assert_eq!(p.count_hits(&hashes), 3);
        // Another request takes block 1 (a hit): one of the three is now held.
        p.touch(1);
        assert_eq!(p.count_busy(&mut scan), 1);
        // It frees block 1 (stamp 11); two allocations pop 2 (stamp 8) and 0 (stamp 10), evicting
        // hashes 12 and 10: no hit is left, though block 1 still caches 11.
        p.free_request(&[1]);
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
    fn shared_blocks_return_to_the_queue_when_the_last_user_frees() {
        let mut p = BlockPool::new(2, true);
        let x = p.allocate().unwrap();
        p.cache(x, 7);
        p.touch(x); // a second request shares it
        p.free_request(&[x]);
        assert_eq!(p.num_free(), 1);
        p.free_request(&[x]);
        assert_eq!(p.num_free(), 2);
        assert_eq!(p.count_hits(&[7]), 1);
    }

    #[test]
    fn caching_off_never_hits() {
        let mut p = BlockPool::new(2, false);
        let x = p.allocate().unwrap();
        p.cache(x, 7);
        p.free_request(&[x]);
        assert_eq!(p.count_hits(&[7]), 0);
        assert_eq!(p.cached_block(7), None);
    }
}

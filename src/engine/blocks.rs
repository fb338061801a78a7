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
    // stay valid across steps without rescanning (see `HitScan`).
    next_stamp: u64,
    last_popped: u64,
    touched_from_free: u64,
    released: u64,
}

/// A remembered prefix-hit scan of one request, valid while none of its free hit blocks has
/// been evicted or taken by another request (checked in O(1) by [`BlockPool::scan_valid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitScan {
    /// Leading blocks hit.
    pub blocks: u32,
    /// Of those, blocks held by running requests (not in the free queue).
    pub busy: u32,
    min_stamp: u64,
    touched_from_free: u64,
    released: u64,
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
            touched_from_free: 0,
            released: 0,
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
            self.touched_from_free += 1;
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
            }
        }
        self.released += 1;
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

    /// Scans (or, from `prev`, extends) the prefix hit of `hashes`: leading cached blocks and how
    /// many of them running requests hold.
    pub fn scan_hits(&self, hashes: &[u64], prev: Option<HitScan>) -> HitScan {
        let mut s = match prev {
            Some(p) if self.scan_valid(&p) && p.blocks as usize <= hashes.len() => p,
            _ => HitScan {
                blocks: 0,
                busy: 0,
                min_stamp: self.next_stamp,
                touched_from_free: self.touched_from_free,
                released: self.released,
            },
        };
        if !self.caching {
            return s;
        }
        while let Some(b) = hashes
            .get(s.blocks as usize)
            .and_then(|h| self.cached.get(*h))
        {
            let m = &self.meta[b as usize];
            if m.ref_cnt > 0 {
                s.busy += 1;
            } else {
                s.min_stamp = s.min_stamp.min(m.stamp);
            }
            s.blocks += 1;
        }
        s
    }

    /// Whether a scan still describes the pool: none of its free hit blocks has been popped
    /// (popped stamps never decrease), no free block was taken by a request and no request
    /// released blocks (which could turn busy hits free).
    pub fn scan_valid(&self, s: &HitScan) -> bool {
        self.last_popped < s.min_stamp
            && self.touched_from_free == s.touched_from_free
            && self.released == s.released
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

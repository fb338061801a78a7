//! vLLM V1's paged KV block pool with automatic prefix caching, block by block: the reference
//! that [`SegmentPool`](super::segments::SegmentPool) must match.
//!
//! Mechanisms mirrored (vllm/v1/core/block_pool.py, kv_cache_utils.py):
//! - Blocks with no running request (`ref_cnt == 0`) sit in a free queue ordered for eviction
//!   (a doubly linked list): allocation takes the front; a freed block goes to the back.
//! - A finished or preempted request frees its blocks tail first, so its suffix blocks are
//!   evicted before its prefix blocks.
//! - A full block that has been computed is registered under its chained hash, unless another
//!   block holds that hash already; a later request whose prefix hashes match reuses it (a hit
//!   takes the block out of the free queue).
//! - Allocating a block that still carries a hash evicts that hash from the prefix cache.

use super::pool::KvPool;
use crate::util::hashindex::HashIndex;
use std::sync::Arc;

const NIL: u32 = u32::MAX;

/// One block's bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Block {
    ref_cnt: u32,
    /// The prefix-cache key it was registered under (it holds the entry only if the index
    /// points back at it).
    hash: Option<u64>,
    /// Neighbours in the free queue while free.
    prev: u32,
    next: u32,
}

/// The GPU's KV blocks, each with an id.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    /// Front (next to allocate) and back of the free queue.
    head: u32,
    tail: u32,
    free: u32,
    cached: HashIndex,
    evictions: u64,
    caching: bool,
    /// Insertions, hits taken off the free queue, releases (see `admission_epoch`).
    epoch: u64,
    /// Prefix-cache changes since last taken, when recording.
    events: Option<Vec<super::pool::BlockEvent>>,
}

/// A request's blocks in a [`BlockPool`], in sequence order.
#[derive(Debug, Default)]
pub struct BlockHeld {
    blocks: Vec<u32>,
    /// Leading blocks registered (or found registered) already.
    done: u32,
}

/// The blocks a prefix-hit scan found, in prefix order.
#[derive(Debug, Default)]
pub struct BlockScan {
    blocks: Vec<u32>,
}

impl BlockPool {
    fn unlink(&mut self, b: u32) {
        let Block { prev, next, .. } = self.blocks[b as usize];
        match prev {
            NIL => self.head = next,
            p => self.blocks[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.blocks[n as usize].prev = prev,
        }
        self.free -= 1;
    }

    fn push_back(&mut self, b: u32) {
        self.blocks[b as usize].prev = self.tail;
        self.blocks[b as usize].next = NIL;
        match self.tail {
            NIL => self.head = b,
            t => self.blocks[t as usize].next = b,
        }
        self.tail = b;
        self.free += 1;
    }

    /// Takes the front of the free queue, evicting the prefix-cache entry it holds.
    fn pop_front(&mut self) -> u32 {
        let b = self.head;
        debug_assert!(b != NIL, "free blocks counted");
        self.unlink(b);
        if let Some(h) = self.blocks[b as usize].hash.take()
            && self.cached.remove_if(h, b)
        {
            self.evictions += 1;
            if let Some(ev) = &mut self.events {
                ev.push(super::pool::BlockEvent {
                    hash: h,
                    stored: false,
                });
            }
        }
        self.blocks[b as usize].ref_cnt = 1;
        b
    }

    /// Registers block `b` under `hash` unless it or another block holds it already.
    fn cache(&mut self, b: u32, hash: u64) {
        let blk = &mut self.blocks[b as usize];
        if !self.caching || blk.hash.is_some() {
            return;
        }
        blk.hash = Some(hash);
        if self.cached.insert_if_absent(hash, b) {
            self.epoch += 1;
            if let Some(ev) = &mut self.events {
                ev.push(super::pool::BlockEvent { hash, stored: true });
            }
        }
    }
}

impl KvPool for BlockPool {
    type Held = BlockHeld;
    type Scan = BlockScan;

    fn new(n: u32, caching: bool) -> Self {
        let mut p = BlockPool {
            blocks: vec![
                Block {
                    ref_cnt: 0,
                    hash: None,
                    prev: NIL,
                    next: NIL,
                };
                n as usize
            ],
            head: NIL,
            tail: NIL,
            free: 0,
            cached: HashIndex::with_max_entries(n as usize),
            evictions: 0,
            caching,
            epoch: 0,
            events: None,
        };
        for b in 0..n {
            p.push_back(b);
        }
        p
    }

    fn num_free(&self) -> u32 {
        self.free
    }

    fn total(&self) -> u32 {
        self.blocks.len() as u32
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }

    fn admission_epoch(&self) -> u64 {
        self.epoch
    }

    fn held_len(held: &BlockHeld) -> u32 {
        held.blocks.len() as u32
    }

    fn scan_hits(&self, scan: &mut BlockScan, hashes: &[u64]) -> usize {
        scan.blocks.clear();
        if self.caching {
            scan.blocks
                .extend(hashes.iter().map_while(|h| self.cached.get(*h)));
        }
        scan.blocks.len()
    }

    fn count_busy(&self, scan: &BlockScan) -> usize {
        scan.blocks
            .iter()
            .filter(|b| self.blocks[**b as usize].ref_cnt > 0)
            .count()
    }

    fn take_hits(&mut self, scan: &BlockScan, held: &mut BlockHeld) {
        debug_assert!(held.blocks.is_empty());
        for &b in &scan.blocks {
            if self.blocks[b as usize].ref_cnt == 0 {
                self.unlink(b);
                self.epoch += 1;
            }
            self.blocks[b as usize].ref_cnt += 1;
        }
        held.blocks.extend_from_slice(&scan.blocks);
        held.done = scan.blocks.len() as u32;
    }

    fn allocate(&mut self, held: &mut BlockHeld, n: u32) {
        debug_assert!(n <= self.free, "free count checked");
        for _ in 0..n {
            let b = self.pop_front();
            held.blocks.push(b);
        }
    }

    fn register(&mut self, held: &mut BlockHeld, hashes: &Arc<Vec<u64>>, upto: u32) {
        for k in held.done..upto.max(held.done) {
            self.cache(held.blocks[k as usize], hashes[k as usize]);
        }
        held.done = held.done.max(upto);
    }

    fn record_events(&mut self, on: bool) {
        self.events = on.then(Vec::new);
    }

    fn take_events(&mut self, out: &mut Vec<super::pool::BlockEvent>) {
        if let Some(ev) = &mut self.events {
            out.append(ev);
        }
    }

    fn release(&mut self, held: &mut BlockHeld) {
        self.epoch += 1;
        for &b in held.blocks.iter().rev() {
            let blk = &mut self.blocks[b as usize];
            debug_assert!(blk.ref_cnt > 0, "freeing a free block");
            blk.ref_cnt -= 1;
            if blk.ref_cnt == 0 {
                self.push_back(b);
            }
        }
        *held = BlockHeld::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(v: &[u64]) -> Arc<Vec<u64>> {
        Arc::new(v.to_vec())
    }

    /// Allocates `n` blocks for a new request and registers them under `h`.
    fn request(p: &mut BlockPool, h: &Arc<Vec<u64>>) -> BlockHeld {
        let mut held = BlockHeld::default();
        p.allocate(&mut held, h.len() as u32);
        p.register(&mut held, h, h.len() as u32);
        held
    }

    fn hits(p: &BlockPool, h: &[u64]) -> usize {
        p.scan_hits(&mut BlockScan::default(), h)
    }

    #[test]
    fn lru_evicts_least_recent_and_suffix_first() {
        let mut p = BlockPool::new(4, true);
        // Request A takes blocks 0,1 (prefix hashes 10, 11); B takes 2,3 (20, 21).
        let (ha, hb) = (hashes(&[10, 11]), hashes(&[20, 21]));
        let mut a = request(&mut p, &ha);
        let mut b = request(&mut p, &hb);
        assert_eq!(
            (a.blocks.clone(), b.blocks.clone()),
            (vec![0, 1], vec![2, 3])
        );
        assert_eq!(p.num_free(), 0);
        p.release(&mut a); // queue: 1, 0 (suffix first)
        p.release(&mut b); // queue: 1, 0, 3, 2
        assert_eq!((p.num_free(), hits(&p, &ha)), (4, 2));
        // Allocating one block evicts A's suffix (hash 11), not its prefix.
        let mut c = BlockHeld::default();
        p.allocate(&mut c, 1);
        assert_eq!((c.blocks.clone(), p.evictions), (vec![1], 1));
        assert_eq!(hits(&p, &ha), 1);
        // A hit on B's prefix takes block 2 out of the free queue.
        let mut scan = BlockScan::default();
        assert_eq!(p.scan_hits(&mut scan, &[20]), 1);
        assert_eq!(p.count_busy(&scan), 0);
        let mut d = BlockHeld::default();
        p.take_hits(&scan, &mut d);
        assert_eq!((d.blocks.clone(), p.num_free()), (vec![2], 2));
        assert_eq!(p.count_busy(&scan), 1);
        // Next allocations take 0 (evicting 10) then 3 (evicting 21); 2 stays cached.
        p.allocate(&mut c, 2);
        assert_eq!((c.blocks.clone(), p.evictions), (vec![1, 0, 3], 3));
        assert_eq!((hits(&p, &[20]), hits(&p, &ha), p.num_free()), (1, 0, 0));
    }

    #[test]
    fn a_hash_held_by_another_block_is_not_registered_twice() {
        let mut p = BlockPool::new(4, true);
        let h = hashes(&[7, 8]);
        let mut a = request(&mut p, &h);
        // B computes the same two blocks itself: they stay unregistered, so freeing and then
        // evicting them evicts nothing.
        let mut b = request(&mut p, &h);
        let epoch = p.admission_epoch();
        p.release(&mut b);
        assert!(p.admission_epoch() > epoch, "a release may make room");
        let mut c = BlockHeld::default();
        p.allocate(&mut c, 2);
        assert_eq!((p.evictions, hits(&p, &h)), (0, 2));
        p.release(&mut a);
        p.release(&mut c);
        assert_eq!(p.num_free(), 4);
    }

    #[test]
    fn shared_blocks_return_to_the_queue_when_the_last_user_frees() {
        let mut p = BlockPool::new(2, true);
        let h = hashes(&[7]);
        let mut a = request(&mut p, &h);
        let mut scan = BlockScan::default();
        p.scan_hits(&mut scan, &h);
        let mut b = BlockHeld::default();
        p.take_hits(&scan, &mut b); // a second request shares it
        p.release(&mut a);
        assert_eq!(p.num_free(), 1);
        p.release(&mut b);
        assert_eq!((p.num_free(), hits(&p, &h)), (2, 1));
    }

    #[test]
    fn caching_off_never_hits() {
        let mut p = BlockPool::new(2, false);
        let h = hashes(&[7]);
        let mut a = request(&mut p, &h);
        p.release(&mut a);
        assert_eq!(hits(&p, &h), 0);
    }
}

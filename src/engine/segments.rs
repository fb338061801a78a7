//! The GPU block pool with runs of blocks as single entries: the same behaviour as
//! [`BlockPool`](super::blocks::BlockPool) (vLLM's free queue, prefix cache, LRU eviction tail
//! first) at a cost per run of blocks instead of per block.
//!
//! A *segment* is a run of registered blocks at consecutive positions of one hash chain, all
//! with the same reference count. Because block hashes are chained, a hash fixes its position
//! and everything before it, and each hash is registered by at most one block; so a hash that
//! is cached lies either at the start of a segment or right after its predecessor's block in
//! the same segment. Only segment starts are indexed, and a request's prefix hit is found by
//! following segments and comparing hashes along them.
//!
//! Why runs stay runs:
//! - a request frees its blocks tail first, so a free segment's blocks sit in the free queue
//!   with consecutive stamps, last position first: one queue entry;
//! - allocation pops the queue front, so it evicts a free segment from its end;
//! - a prefix hit takes the leading blocks of a segment; the segment is split there, so that
//!   each part keeps one reference count (a held segment keeps its id for the head, so that
//!   its holders, who follow `next`, still find it; a free one keeps its id for the tail,
//!   whose queue entry it is).
//!
//! Blocks without a registered hash (past what others share, not computed yet, or whose hash
//! another block has) are counted only, as runs in the queue and in the request.

use super::pool::{BlockEvent, KvPool};
use crate::util::hashindex::HashIndex;
use std::collections::VecDeque;
use std::sync::Arc;

const NONE: u32 = u32::MAX;

/// A run of registered blocks at positions `start..start + len` of `chain`.
#[derive(Debug, Clone)]
struct Segment {
    /// Block hashes of the request that registered it, by position.
    chain: Arc<Vec<u64>>,
    start: u32,
    len: u32,
    ref_cnt: u32,
    /// Stamp of its free-queue entry while free (0 otherwise).
    stamp: u64,
    /// The segment split off its tail while it was held (its holders hold that too).
    next: u32,
}

impl Segment {
    /// Whether it registers `hash` at `pos` (a dead segment, of length 0, covers nothing).
    fn covers(&self, pos: usize, hash: u64) -> bool {
        (self.start as usize) <= pos
            && pos < (self.start + self.len) as usize
            && self.chain[pos] == hash
    }
}

/// A free-queue entry: a free segment (all of its blocks, last position first) or a run of
/// `plain` blocks without a hash.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stamp: u64,
    seg: u32,
    plain: u32,
}

/// A piece of a request's blocks: `n` blocks of segment `seg` and the segments split off it,
/// or (`seg == NONE`) `n` blocks without a hash.
#[derive(Debug, Clone, Copy)]
struct Piece {
    seg: u32,
    n: u32,
}

/// A request's blocks: pieces covering its first `done` positions, then `tail` blocks not
/// registered yet.
#[derive(Debug)]
pub struct SegHeld {
    pieces: Vec<Piece>,
    tail: u32,
    done: u32,
    /// The segment its last registered block belongs to, or that holds the hash of its block at
    /// `done - 1` (a hint, checked before use).
    cursor: u32,
    /// The segment it extends with its own blocks (a hint, checked before use).
    open: u32,
}

impl Default for SegHeld {
    fn default() -> Self {
        SegHeld {
            pieces: Vec::new(),
            tail: 0,
            done: 0,
            cursor: NONE,
            open: NONE,
        }
    }
}

/// What a prefix-hit scan found: (segment, leading blocks hit) in prefix order.
#[derive(Debug, Default)]
pub struct SegScan {
    hits: Vec<(u32, u32)>,
}

/// The GPU's KV blocks as runs.
#[derive(Debug)]
pub struct SegmentPool {
    segs: Vec<Segment>,
    spare_segs: Vec<u32>,
    /// First hash of every live segment -> the segment.
    starts: HashIndex,
    queue: VecDeque<Entry>,
    /// Queue entries of segments taken whole by a hit or freed again since (skipped).
    stale: usize,
    free: u32,
    total: u32,
    evictions: u64,
    caching: bool,
    next_stamp: u64,
    /// Blocks registered, hits taken off the free queue, releases (see `admission_epoch`).
    epoch: u64,
    /// An empty chain for dead segments (so that they keep no request's hashes alive).
    no_chain: Arc<Vec<u64>>,
    /// Prefix-cache changes since last taken, when recording.
    events: Option<Vec<BlockEvent>>,
}

impl SegmentPool {
    fn new_segment(&mut self, seg: Segment) -> u32 {
        crate::util::slab::put(&mut self.segs, &mut self.spare_segs, seg)
    }

    fn start_hash(&self, z: u32) -> u64 {
        let s = &self.segs[z as usize];
        s.chain[s.start as usize]
    }

    fn push_plain(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.free += n;
        if let Some(e) = self.queue.back_mut()
            && e.seg == NONE
        {
            e.plain += n;
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.queue.push_back(Entry {
            stamp,
            seg: NONE,
            plain: n,
        });
    }

    fn push_segment(&mut self, z: u32) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let s = &mut self.segs[z as usize];
        s.stamp = stamp;
        self.free += s.len;
        self.queue.push_back(Entry {
            stamp,
            seg: z,
            plain: 0,
        });
    }

    /// Takes `want` blocks off the queue front, evicting the hashes of segment blocks.
    fn pop_front(&mut self, mut want: u32) {
        while want > 0 {
            let e = self.queue.front_mut().expect("free blocks counted");
            if e.seg == NONE {
                let take = e.plain.min(want);
                e.plain -= take;
                if e.plain == 0 {
                    self.queue.pop_front();
                }
                self.free -= take;
                want -= take;
                continue;
            }
            let z = e.seg;
            let s = &mut self.segs[z as usize];
            if s.len == 0 || s.stamp != e.stamp {
                self.queue.pop_front();
                self.stale -= 1;
                continue;
            }
            let take = s.len.min(want);
            s.len -= take;
            if let Some(ev) = &mut self.events {
                // Evicted from the segment's end, last position first.
                let from = (s.start + s.len) as usize;
                for &hash in s.chain[from..from + take as usize].iter().rev() {
                    ev.push(BlockEvent {
                        hash,
                        stored: false,
                    });
                }
            }
            self.evictions += take as u64;
            self.free -= take;
            want -= take;
            if s.len == 0 {
                self.queue.pop_front();
                self.kill(z);
            }
        }
    }

    fn kill(&mut self, z: u32) {
        let h = self.start_hash(z);
        let removed = self.starts.remove_if(h, z);
        debug_assert!(removed, "a live segment's start is indexed");
        self.segs[z as usize].chain = self.no_chain.clone();
        self.spare_segs.push(z);
    }

    /// Splits segment `z` after its first `k` blocks; returns the segment with its first `k`
    /// blocks (a held one keeps its id there, a free one for the tail in the queue).
    fn split(&mut self, z: u32, k: u32) -> u32 {
        let s = &self.segs[z as usize];
        debug_assert!(0 < k && k < s.len);
        let part = Segment {
            chain: s.chain.clone(),
            start: s.start,
            len: s.len,
            ref_cnt: s.ref_cnt,
            stamp: 0,
            next: NONE,
        };
        if s.ref_cnt > 0 {
            let tail = self.new_segment(Segment {
                start: part.start + k,
                len: part.len - k,
                next: self.segs[z as usize].next,
                ..part
            });
            let s = &mut self.segs[z as usize];
            s.len = k;
            s.next = tail;
            let inserted = self.starts.insert_if_absent(self.start_hash(tail), tail);
            debug_assert!(inserted);
            z
        } else {
            let head = self.new_segment(Segment { len: k, ..part });
            let h = self.start_hash(z);
            self.starts.set_present(h, head);
            let s = &mut self.segs[z as usize];
            s.start += k;
            s.len -= k;
            let inserted = self.starts.insert_if_absent(self.start_hash(z), z);
            debug_assert!(inserted);
            head
        }
    }

    /// The segment that registers `hashes[pos]` at `pos`, trying `hint` first.
    fn holder_of(&self, hint: u32, hashes: &[u64], pos: usize) -> u32 {
        let h = hashes[pos];
        let mut z = hint;
        for _ in 0..4 {
            if z == NONE {
                break;
            }
            let s = &self.segs[z as usize];
            if s.covers(pos, h) {
                return z;
            }
            z = if s.len > 0 { s.next } else { NONE };
        }
        // The nearest segment start at or before `pos` decides: a segment holding `pos`
        // holds every hash from its start to `pos`, and those past its start are not starts.
        for p in (0..=pos).rev() {
            if let Some(z) = self.starts.get(hashes[p]) {
                return if self.segs[z as usize].covers(pos, h) {
                    z
                } else {
                    NONE
                };
            }
        }
        NONE
    }

    /// Leading blocks of segment `z` (starting at `p`) that `hashes` shares, at most `max`.
    fn matched(&self, z: u32, hashes: &[u64], p: usize, max: usize) -> usize {
        let chain = &self.segs[z as usize].chain;
        if chain[p + max - 1] == hashes[p + max - 1] {
            return max;
        }
        // Chains agree up to some position and differ from there on: equal at lo, not at hi.
        let (mut lo, mut hi) = (0, max - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if chain[p + mid] == hashes[p + mid] {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo + 1
    }
}

impl KvPool for SegmentPool {
    type Held = SegHeld;
    type Scan = SegScan;

    fn new(n: u32, caching: bool) -> Self {
        let mut p = SegmentPool {
            segs: Vec::new(),
            spare_segs: Vec::new(),
            starts: HashIndex::sparse(),
            queue: VecDeque::new(),
            stale: 0,
            free: 0,
            total: n,
            evictions: 0,
            caching,
            next_stamp: 1,
            epoch: 0,
            no_chain: Arc::new(Vec::new()),
            events: None,
        };
        p.push_plain(n);
        p
    }

    fn num_free(&self) -> u32 {
        self.free
    }

    fn total(&self) -> u32 {
        self.total
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }

    fn admission_epoch(&self) -> u64 {
        self.epoch
    }

    fn held_len(held: &SegHeld) -> u32 {
        held.done + held.tail
    }

    fn scan_hits(&self, scan: &mut SegScan, hashes: &[u64]) -> usize {
        scan.hits.clear();
        if !self.caching {
            return 0;
        }
        let mut p = 0;
        while p < hashes.len() {
            let Some(z) = self.starts.get(hashes[p]) else {
                break;
            };
            let s = &self.segs[z as usize];
            debug_assert_eq!(s.start as usize, p, "a hash fixes its position");
            let m = self.matched(z, hashes, p, (s.len as usize).min(hashes.len() - p));
            scan.hits.push((z, m as u32));
            p += m;
        }
        p
    }

    fn count_busy(&self, scan: &SegScan) -> usize {
        scan.hits
            .iter()
            .filter(|(z, _)| self.segs[*z as usize].ref_cnt > 0)
            .map(|(_, m)| *m as usize)
            .sum()
    }

    fn take_hits(&mut self, scan: &SegScan, held: &mut SegHeld) {
        debug_assert!(held.pieces.is_empty() && held.done == 0 && held.tail == 0);
        held.cursor = NONE;
        held.open = NONE;
        for &(z, m) in &scan.hits {
            let z = if m < self.segs[z as usize].len {
                self.split(z, m)
            } else {
                z
            };
            let s = &mut self.segs[z as usize];
            if s.ref_cnt == 0 {
                // Out of the free queue: its entry goes stale unless a split kept it for the
                // tail.
                if s.stamp != 0 {
                    s.stamp = 0;
                    self.stale += 1;
                }
                self.free -= m;
                self.epoch += 1;
            }
            s.ref_cnt += 1;
            held.pieces.push(Piece { seg: z, n: m });
            held.done += m;
            held.cursor = z;
        }
        if self.stale > 1024 && self.stale * 2 > self.queue.len() {
            let segs = &self.segs;
            self.queue.retain(|e| {
                e.seg == NONE || {
                    let s = &segs[e.seg as usize];
                    s.len > 0 && s.stamp == e.stamp
                }
            });
            self.stale = 0;
        }
    }

    fn allocate(&mut self, held: &mut SegHeld, n: u32) {
        debug_assert!(n <= self.free, "free count checked");
        self.pop_front(n);
        held.tail += n;
    }

    fn register(&mut self, held: &mut SegHeld, hashes: &Arc<Vec<u64>>, upto: u32) {
        if upto <= held.done || !self.caching {
            return;
        }
        debug_assert!(upto <= held.done + held.tail, "only held blocks register");
        // The segment holding the previous position's hash, if another one holds it.
        let mut prev = if held.done == 0 {
            NONE
        } else {
            self.holder_of(held.cursor, hashes, held.done as usize - 1)
        };
        let mut q = held.done as usize;
        while q < upto as usize {
            let h = hashes[q];
            let other = if prev != NONE && self.segs[prev as usize].covers(q, h) {
                prev
            } else {
                self.starts.get(h).unwrap_or(NONE)
            };
            if other != NONE {
                // Cached already by another block: this one stays without a hash.
                match held.pieces.last_mut() {
                    Some(last) if last.seg == NONE => last.n += 1,
                    _ => held.pieces.push(Piece { seg: NONE, n: 1 }),
                }
                prev = other;
                q += 1;
                continue;
            }
            // This block registers, and so do the next ones until one's hash is a segment
            // start (no other segment can hold them inside: it would hold this one's hash).
            let mut end = q + 1;
            while end < upto as usize && self.starts.get(hashes[end]).is_none() {
                end += 1;
            }
            let n = (end - q) as u32;
            self.epoch += n as u64;
            if let Some(ev) = &mut self.events {
                ev.extend(
                    hashes[q..end]
                        .iter()
                        .map(|&hash| BlockEvent { hash, stored: true }),
                );
            }
            // Extend its own open segment when that ends right before (it may have been split
            // by a hit since: follow to the part it holds alone).
            let mut o = held.open;
            while o != NONE && self.segs[o as usize].start + self.segs[o as usize].len < q as u32 {
                o = self.segs[o as usize].next;
            }
            let extend = o != NONE && {
                let s = &self.segs[o as usize];
                s.len > 0
                    && s.ref_cnt == 1
                    && s.next == NONE
                    && s.start + s.len == q as u32
                    && Arc::ptr_eq(&s.chain, hashes)
                    && matches!(held.pieces.last(), Some(l) if l.seg != NONE)
            };
            if extend {
                self.segs[o as usize].len += n;
                held.pieces.last_mut().expect("checked").n += n;
            } else {
                o = self.new_segment(Segment {
                    chain: hashes.clone(),
                    start: q as u32,
                    len: n,
                    ref_cnt: 1,
                    stamp: 0,
                    next: NONE,
                });
                let inserted = self.starts.insert_if_absent(h, o);
                debug_assert!(inserted);
                held.pieces.push(Piece { seg: o, n });
            }
            held.open = o;
            prev = o;
            q = end;
        }
        held.tail -= upto - held.done;
        held.done = upto;
        held.cursor = prev;
    }

    fn record_events(&mut self, on: bool) {
        self.events = on.then(Vec::new);
    }

    fn take_events(&mut self, out: &mut Vec<BlockEvent>) {
        if let Some(ev) = &mut self.events {
            out.append(ev);
        }
    }

    fn release(&mut self, held: &mut SegHeld) {
        self.epoch += 1;
        self.push_plain(held.tail);
        let mut chain: Vec<u32> = Vec::new();
        for i in (0..held.pieces.len()).rev() {
            let Piece { seg, n } = held.pieces[i];
            if seg == NONE {
                self.push_plain(n);
                continue;
            }
            chain.clear();
            let (mut z, mut left) = (seg, n);
            while left > 0 {
                chain.push(z);
                let s = &self.segs[z as usize];
                debug_assert!(s.len > 0 && s.ref_cnt > 0 && s.len <= left);
                left -= s.len;
                z = s.next;
            }
            for &z in chain.iter().rev() {
                let s = &mut self.segs[z as usize];
                s.ref_cnt -= 1;
                if s.ref_cnt == 0 {
                    s.next = NONE;
                    self.push_segment(z);
                }
            }
        }
        *held = SegHeld::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::blocks::{BlockPool, BlockScan};
    use crate::util::rng::Rng;

    /// A chain of `len` block hashes over a small alphabet, so that chains share prefixes of
    /// every length and diverge anywhere.
    fn chain(rng: &mut Rng, len: usize) -> Arc<Vec<u64>> {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                let token = if rng.range(0, 5) == 0 {
                    rng.range(1, 3)
                } else {
                    0
                };
                h = (h ^ token).wrapping_mul(0x1000_0000_01b3).rotate_left(29) ^ 0xabcd;
                h
            })
            .collect::<Vec<_>>()
            .into()
    }

    /// One simulated request on both pools.
    #[derive(Default)]
    struct Req {
        hashes: Option<Arc<Vec<u64>>>,
        a: <BlockPool as KvPool>::Held,
        b: SegHeld,
        /// Blocks it may register in the normal course (the engine's shareable limit).
        limit: u32,
        registered: u32,
    }

    /// The per-block pool and the run-length pool go through the same random admissions,
    /// allocations, registrations (some by a preempted request, past its limit), and releases;
    /// after every operation they agree on free blocks, evictions, and the prefix hit (with
    /// how much of it running requests hold) of every request and of fresh chains.
    #[test]
    fn runs_of_blocks_behave_like_single_blocks() {
        for seed in 0..40u64 {
            let mut rng = Rng::new(seed);
            let n = rng.range(8, 64) as u32;
            let mut a = <BlockPool as KvPool>::new(n, true);
            let mut b = SegmentPool::new(n, true);
            a.record_events(true);
            b.record_events(true);
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            let mut reqs: Vec<Req> = (0..12).map(|_| Req::default()).collect();
            let mut sa = BlockScan::default();
            let mut sb = SegScan::default();
            for step in 0..3000 {
                let i = rng.range(0, reqs.len() as u64 - 1) as usize;
                let r = &mut reqs[i];
                match &r.hashes {
                    None => {
                        // Admit: hits, then more blocks if they fit.
                        let len = rng.range(1, 24) as usize;
                        let h = chain(&mut rng, len);
                        let cap = rng.range(0, h.len() as u64) as usize;
                        let hits = a.scan_hits(&mut sa, &h[..cap]);
                        assert_eq!(
                            hits,
                            b.scan_hits(&mut sb, &h[..cap]),
                            "seed {seed} step {step}"
                        );
                        let busy = a.count_busy(&sa);
                        assert_eq!(busy, b.count_busy(&sb));
                        let extra = rng.range(0, (h.len() - hits) as u64) as u32;
                        if extra as usize + hits - busy > a.num_free() as usize {
                            continue;
                        }
                        a.take_hits(&sa, &mut r.a);
                        b.take_hits(&sb, &mut r.b);
                        r.limit = rng.range(0, h.len() as u64) as u32;
                        a.allocate(&mut r.a, extra);
                        b.allocate(&mut r.b, extra);
                        r.registered = hits as u32;
                        r.hashes = Some(h);
                    }
                    Some(h) => {
                        let h = h.clone();
                        let held = <BlockPool as KvPool>::held_len(&r.a);
                        assert_eq!(held, SegmentPool::held_len(&r.b));
                        match rng.range(0, 3) {
                            0 | 1 if held < h.len() as u32 => {
                                // Compute: grow by a block or two if free, register up to the limit.
                                let more = (rng.range(1, 2) as u32)
                                    .min(h.len() as u32 - held)
                                    .min(a.num_free());
                                a.allocate(&mut r.a, more);
                                b.allocate(&mut r.b, more);
                                let upto = (held + more).min(r.limit).max(r.registered);
                                a.register(&mut r.a, &h, upto);
                                b.register(&mut r.b, &h, upto);
                                r.registered = upto;
                            }
                            2 => {
                                // Preempted: everything held registers, then is freed.
                                a.register(&mut r.a, &h, held);
                                b.register(&mut r.b, &h, held);
                                a.release(&mut r.a);
                                b.release(&mut r.b);
                                *r = Req::default();
                            }
                            _ => {
                                a.release(&mut r.a);
                                b.release(&mut r.b);
                                *r = Req::default();
                            }
                        }
                    }
                }
                assert_eq!(a.num_free(), b.num_free(), "seed {seed} step {step}");
                assert_eq!(a.evictions(), b.evictions(), "seed {seed} step {step}");
                // Both publish the same KV events, in the same order.
                a.take_events(&mut ea);
                b.take_events(&mut eb);
                assert_eq!(ea, eb, "seed {seed} step {step}");
                let probe = chain(&mut rng, 20);
                assert_eq!(a.scan_hits(&mut sa, &probe), b.scan_hits(&mut sb, &probe));
                assert_eq!(a.count_busy(&sa), b.count_busy(&sb));
                for r in &reqs {
                    if let Some(h) = &r.hashes {
                        assert_eq!(a.scan_hits(&mut sa, h), b.scan_hits(&mut sb, h));
                        assert_eq!(a.count_busy(&sa), b.count_busy(&sb));
                    }
                }
            }
            assert!(a.evictions() > 0, "seed {seed}: the pool never filled");
            let removed = ea.iter().filter(|e| !e.stored).count() as u64;
            assert_eq!(
                removed,
                a.evictions(),
                "seed {seed}: one event per eviction"
            );
        }
    }
}

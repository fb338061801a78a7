//! One replica's part of a router's decision index (llm-d's per-pod LRU of prompt blocks), kept
//! as runs of blocks rather than block by block.
//!
//! A router learns a request by touching its prompt's block keys last block first, so that the
//! first block is the most recent. The keys are chained (a key stands for its whole prefix), so
//! every learn that touches a block also touches its parent later: along any chain a parent is
//! more recent than its child. The least recently used block is therefore always a leaf, and
//! the blocks held form a prefix-closed tree. This keeps that tree as runs: consecutive blocks of
//! one chain touched by the same learn, whose stamps (LRU positions) are consecutive. A learn
//! touches the runs along its path (splitting the last where the path leaves it) and adds one run
//! for its new blocks; eviction takes blocks from the tail of the run with the lowest stamps; a
//! match walks the runs from the root, comparing keys in order. The work per request grows with
//! the runs on its path, not with its blocks; the result is that of the block-by-block LRU
//! (a test checks it against one).

use crate::time::SimTime;
use crate::util::hashindex::HashIndex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Blocks `start..start + len` of `chain`, touched together.
#[derive(Debug, Clone)]
struct Run {
    chain: Arc<Vec<u64>>,
    start: u32,
    len: u32,
    /// The stamp of its first block; the block at offset `i` has `top - i`.
    top: u64,
    /// When it was touched.
    at: SimTime,
    /// Its last key (a match that reaches it is a match of the whole run), kept here so that
    /// a walk reads the chain only where it leaves a run.
    last: u64,
}

/// How many leading keys `run` and `rest` share. Keys are chained (each stands for its whole
/// prefix, as the prefix cache assumes), so once two chains differ they differ to the end: the
/// last common position answers a whole run at once, and the first difference is found by
/// bisection.
#[inline]
fn shared(run: &[u64], rest: &[u64]) -> usize {
    let n = run.len().min(rest.len());
    if n == 0 || run[n - 1] == rest[n - 1] {
        return n;
    }
    // The first difference is in lo..=hi (hi differs).
    let (mut lo, mut hi) = (0, n - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if run[mid] == rest[mid] {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Run {
    fn keys(&self) -> &[u64] {
        &self.chain[self.start as usize..(self.start + self.len) as usize]
    }

    /// Its lowest stamp (its last block's).
    fn tail(&self) -> u64 {
        self.top - (self.len as u64 - 1)
    }
}

/// A replica's LRU of prompt blocks as a tree of runs.
#[derive(Debug)]
pub struct ReplicaRuns {
    capacity: u64,
    runs: Vec<Run>,
    spare: Vec<u32>,
    /// The first key of every live run -> the run.
    starts: HashIndex,
    /// Every live run by its lowest stamp, the least recent first: a heap whose entries go
    /// stale when their run's stamps change (an entry is current when its run is live and its
    /// lowest stamp is the entry's). New stamps are the highest yet, so a push costs O(1).
    order: BinaryHeap<Reverse<(u64, u32)>>,
    /// Live runs.
    live: usize,
    /// Blocks held.
    blocks: u64,
    /// The next stamp.
    next: u64,
    /// The path of the last walk: (run, its blocks on the path).
    path: Vec<(u32, u32)>,
    /// Keys that became (true) or stopped being (false) a run's first key since last taken,
    /// when recorded.
    start_changes: Option<Vec<(u64, bool)>>,
    /// An empty chain for freed runs (so that they keep no prompt's keys alive).
    no_chain: Arc<Vec<u64>>,
}

impl ReplicaRuns {
    /// An empty index of at most `capacity` blocks.
    pub fn new(capacity: u64) -> Self {
        ReplicaRuns {
            capacity,
            runs: Vec::new(),
            spare: Vec::new(),
            starts: HashIndex::with_max_entries(64),
            order: BinaryHeap::new(),
            live: 0,
            blocks: 0,
            next: 0,
            path: Vec::new(),
            start_changes: None,
            no_chain: Arc::default(),
        }
    }

    /// Starts recording which keys begin runs (for a filter shared by the replicas).
    pub fn record_starts(&mut self) {
        self.start_changes = Some(Vec::new());
    }

    /// Moves the recorded changes of run starts, in order, to `out`.
    pub fn take_start_changes(&mut self, out: &mut Vec<(u64, bool)>) {
        if let Some(c) = &mut self.start_changes {
            out.append(c);
        }
    }

    fn started(&mut self, key: u64, z: u32) {
        let inserted = self.starts.insert_if_absent(key, z);
        debug_assert!(inserted, "a key is held once");
        if let Some(c) = &mut self.start_changes {
            c.push((key, true));
        }
    }

    /// Blocks held.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The leading blocks of `keys` held. `may_start(p)` says whether a run of this replica
    /// may start at `keys[p]` (false only when it certainly does not: a filter shared by the
    /// replicas spares each a probe of its own index).
    pub fn matched(&self, keys: &[u64], may_start: impl FnMut(usize) -> bool) -> usize {
        self.follow(keys, may_start, |_, _| {})
    }

    /// Walks the runs along `keys` from the root, telling `visit` each run reached and how
    /// many of its blocks the path covers; returns the leading blocks of `keys` held.
    fn follow(
        &self,
        keys: &[u64],
        mut may_start: impl FnMut(usize) -> bool,
        mut visit: impl FnMut(u32, u32),
    ) -> usize {
        let mut p = 0;
        while p < keys.len() && may_start(p) {
            let Some(z) = self.starts.get(keys[p]) else {
                break;
            };
            let r = &self.runs[z as usize];
            let end = p + r.len as usize;
            if end <= keys.len() && keys[end - 1] == r.last {
                visit(z, r.len);
                p = end;
                continue;
            }
            let t = shared(r.keys(), &keys[p..]);
            visit(z, t as u32);
            p += t;
            break;
        }
        p
    }

    /// The leading blocks of `keys` held, recording the runs on the way in `self.path`.
    fn walk(&mut self, keys: &[u64]) -> usize {
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        let held = self.follow(keys, |_| true, |z, t| path.push((z, t)));
        self.path = path;
        held
    }

    fn alloc(&mut self, run: Run) -> u32 {
        self.live += 1;
        crate::util::slab::put(&mut self.runs, &mut self.spare, run)
    }

    fn free(&mut self, z: u32) {
        let r = &self.runs[z as usize];
        let key = r.chain[r.start as usize];
        let removed = self.starts.remove_if(key, z);
        debug_assert!(removed, "a live run's start is indexed");
        if let Some(c) = &mut self.start_changes {
            c.push((key, false));
        }
        self.blocks -= r.len as u64;
        let r = &mut self.runs[z as usize];
        r.chain = self.no_chain.clone();
        r.len = 0;
        self.live -= 1;
        self.spare.push(z);
    }

    /// Touches `keys` (a prompt's chained block keys) at `now`, last first, inserting those not
    /// held, then evicts the least recently used blocks past the capacity.
    pub fn learn(&mut self, keys: &Arc<Vec<u64>>, now: SimTime) {
        let m = keys.len();
        if m == 0 {
            return;
        }
        let held = self.walk(keys);
        // Block q of the prompt gets stamp t0 + m - 1 - q: the last block the lowest.
        let t0 = self.next;
        self.next += m as u64;
        let stamp = |q: usize| t0 + (m - 1 - q) as u64;
        let mut p = 0usize;
        for i in 0..self.path.len() {
            let (z, t) = self.path[i];
            let r = &self.runs[z as usize];
            let old_tail = r.tail();
            if t < r.len {
                // The path leaves the run inside: its untouched tail keeps its stamps.
                let tail = Run {
                    chain: r.chain.clone(),
                    start: r.start + t,
                    len: r.len - t,
                    top: r.top - t as u64,
                    at: r.at,
                    last: r.last,
                };
                let first = tail.chain[tail.start as usize];
                let tz = self.alloc(tail);
                self.started(first, tz);
                self.order.push(Reverse((old_tail, tz)));
                let head = &mut self.runs[z as usize];
                head.len = t;
                head.last = head.chain[(head.start + t - 1) as usize];
            }
            let r = &mut self.runs[z as usize];
            r.top = stamp(p);
            r.at = now;
            self.order.push(Reverse((r.tail(), z)));
            p += t as usize;
        }
        if held < m {
            let run = Run {
                chain: keys.clone(),
                start: held as u32,
                len: (m - held) as u32,
                top: stamp(held),
                at: now,
                last: keys[m - 1],
            };
            let tail = run.tail();
            let z = self.alloc(run);
            self.started(keys[held], z);
            self.order.push(Reverse((tail, z)));
            self.blocks += (m - held) as u64;
        }
        self.evict(self.blocks.saturating_sub(self.capacity));
    }

    /// The least recent live run and its lowest stamp (stale heap entries dropped on the way).
    fn least_recent(&mut self) -> Option<(u64, u32)> {
        while let Some(&Reverse((tail, z))) = self.order.peek() {
            let r = &self.runs[z as usize];
            if r.len > 0 && r.tail() == tail {
                return Some((tail, z));
            }
            self.order.pop();
        }
        None
    }

    /// Rebuilds the heap from the live runs when stale entries outnumber them.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.live + 64 {
            return;
        }
        let mut live: Vec<Reverse<(u64, u32)>> = Vec::with_capacity(self.live);
        for (z, r) in self.runs.iter().enumerate() {
            if r.len > 0 {
                live.push(Reverse((r.tail(), z as u32)));
            }
        }
        self.order = BinaryHeap::from(live);
    }

    /// Evicts the `n` least recently used blocks.
    fn evict(&mut self, mut n: u64) {
        while n > 0 {
            let Some((tail, z)) = self.least_recent() else {
                break;
            };
            self.order.pop();
            let len = self.runs[z as usize].len as u64;
            if n >= len {
                self.free(z);
                n -= len;
            } else {
                let r = &mut self.runs[z as usize];
                r.len -= n as u32;
                r.last = r.chain[(r.start + r.len - 1) as usize];
                self.blocks -= n;
                self.order.push(Reverse((tail + n, z)));
                n = 0;
            }
        }
        self.compact();
    }

    /// Forgets the blocks last touched before `cutoff`.
    pub fn expire_before(&mut self, cutoff: SimTime) {
        while let Some((_, z)) = self.least_recent() {
            if self.runs[z as usize].at >= cutoff {
                break;
            }
            self.order.pop();
            self.free(z);
        }
        self.compact();
    }
}

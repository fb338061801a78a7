//! One storage tier of chunks (or blocks) with a byte capacity and LRU eviction.
//!
//! An entry becomes visible at `ready_at` (the simulated time its asynchronous write completes):
//! a lookup before then misses, as a real `contains` would. Capacity is charged when the write
//! is issued, since the backend reserves its space then.

use crate::time::SimTime;
use crate::util::hashindex::HashIndex;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Entry {
    key: u64,
    bytes: u64,
    ready_at: SimTime,
    prev: u32,
    next: u32,
}

/// An LRU set of keyed entries bounded by total bytes.
#[derive(Debug)]
pub struct LruTier {
    capacity: u64,
    used: u64,
    map: HashIndex,
    slots: Vec<Entry>,
    free_slots: Vec<u32>,
    lru: u32,
    mru: u32,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Entries written.
    pub writes: u64,
}

impl LruTier {
    /// An empty tier holding at most `capacity` bytes (`u64::MAX` for unbounded).
    pub fn new(capacity: u64) -> Self {
        LruTier {
            capacity,
            used: 0,
            map: HashIndex::with_max_entries(1024),
            slots: Vec::new(),
            free_slots: Vec::new(),
            lru: NIL,
            mru: NIL,
            evictions: 0,
            writes: 0,
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the tier holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `key` is present and its write completed by `now`.
    pub fn contains(&self, key: u64, now: SimTime) -> bool {
        match self.map.get(key) {
            Some(s) => self.slots[s as usize].ready_at <= now,
            None => false,
        }
    }

    /// When `key`'s first write completes, if present.
    pub fn ready_at(&self, key: u64) -> Option<SimTime> {
        self.map.get(key).map(|s| self.slots[s as usize].ready_at)
    }

    /// Whether `key` is present at all (its write may still be in flight).
    pub fn has(&self, key: u64) -> bool {
        self.map.get(key).is_some()
    }

    fn unlink(&mut self, s: u32) {
        let (p, n) = (self.slots[s as usize].prev, self.slots[s as usize].next);
        if p != NIL {
            self.slots[p as usize].next = n;
        } else {
            self.lru = n;
        }
        if n != NIL {
            self.slots[n as usize].prev = p;
        } else {
            self.mru = p;
        }
    }

    fn link_mru(&mut self, s: u32) {
        self.slots[s as usize].prev = self.mru;
        self.slots[s as usize].next = NIL;
        if self.mru != NIL {
            self.slots[self.mru as usize].next = s;
        } else {
            self.lru = s;
        }
        self.mru = s;
    }

    /// Marks `key` most recently used.
    pub fn touch(&mut self, key: u64) {
        if let Some(s) = self.map.get(key)
            && self.mru != s
        {
            self.unlink(s);
            self.link_mru(s);
        }
    }

    /// Inserts `key` (or refreshes it), evicting least recently used entries until it fits.
    /// Returns false when the entry is larger than the whole tier (then nothing changes).
    pub fn insert(&mut self, key: u64, bytes: u64, ready_at: SimTime) -> bool {
        self.insert_reporting(key, bytes, ready_at, |_| {})
    }

    /// [`LruTier::insert`], telling `evicted` each key it evicts to make room.
    pub fn insert_reporting(
        &mut self,
        key: u64,
        bytes: u64,
        ready_at: SimTime,
        mut evicted: impl FnMut(u64),
    ) -> bool {
        if bytes > self.capacity {
            return false;
        }
        if let Some(s) = self.map.get(key) {
            let e = &mut self.slots[s as usize];
            e.ready_at = e.ready_at.min(ready_at);
            self.touch(key);
            return true;
        }
        while self.used + bytes > self.capacity {
            let victim = self.lru;
            debug_assert!(victim != NIL);
            evicted(self.slots[victim as usize].key);
            self.remove_slot(victim);
            self.evictions += 1;
        }
        let e = Entry {
            key,
            bytes,
            ready_at,
            prev: NIL,
            next: NIL,
        };
        let s = crate::util::slab::put(&mut self.slots, &mut self.free_slots, e);
        self.map.insert_if_absent(key, s);
        self.link_mru(s);
        self.used += bytes;
        self.writes += 1;
        true
    }

    /// Sets `key`'s time (its ready time) to `at`, if present: for users that keep the time of
    /// the last write, not the first, or learn when a write completes after issuing it.
    pub fn restamp(&mut self, key: u64, at: SimTime) {
        if let Some(s) = self.map.get(key) {
            self.slots[s as usize].ready_at = at;
        }
    }

    #[cfg(test)]
    /// Removes least recently used entries while their time is before `cutoff`, telling
    /// `evicted` each key (for users whose times grow with recency, an expiry).
    pub fn expire_before(&mut self, cutoff: SimTime, mut evicted: impl FnMut(u64)) {
        while self.lru != NIL && self.slots[self.lru as usize].ready_at < cutoff {
            let s = self.lru;
            evicted(self.slots[s as usize].key);
            self.remove_slot(s);
        }
    }

    /// Every entry, least recently used first, as (key, ready time in ns).
    #[cfg(test)]
    pub(crate) fn entries_lru_to_mru(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.len());
        let mut s = self.lru;
        while s != NIL {
            let e = &self.slots[s as usize];
            out.push((e.key, e.ready_at.as_ns()));
            s = e.next;
        }
        out
    }

    fn remove_slot(&mut self, s: u32) {
        self.unlink(s);
        let e = &self.slots[s as usize];
        self.used -= e.bytes;
        self.map.remove_if(e.key, s);
        self.free_slots.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const T0: SimTime = SimTime::ZERO;

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut t = LruTier::new(300);
        assert!(t.insert(1, 100, T0));
        assert!(t.insert(2, 100, T0));
        assert!(t.insert(3, 100, T0));
        t.touch(1); // order (LRU first): 2, 3, 1
        assert!(t.insert(4, 150, T0)); // evicts 2 and 3
        assert_eq!(t.evictions, 2);
        assert!(t.contains(1, T0) && t.contains(4, T0));
        assert!(!t.contains(2, T0) && !t.contains(3, T0));
        assert_eq!(t.used(), 250);
        assert!(!t.insert(9, 301, T0));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn entries_are_visible_once_written() {
        let mut t = LruTier::new(u64::MAX);
        t.insert(5, 10, SimTime::from_ns(1_000));
        assert!(!t.contains(5, SimTime::from_ns(999)));
        assert!(t.has(5));
        assert!(t.contains(5, SimTime::from_ns(1_000)));
    }
}

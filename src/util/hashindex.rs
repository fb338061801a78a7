//! An open-addressing map from well-mixed u64 keys (block hashes) to u32 values, with linear
//! probing and backward-shift deletion. It is kept at most half full: short probes, no
//! tombstones. Sized for its expected entries up front, it doubles when it must.

const EMPTY: u32 = u32::MAX;

/// One slot: key and value side by side, so that a probe reads one cache line.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    val: u32,
}

/// A fixed-capacity u64 -> u32 map for pre-hashed keys.
#[derive(Debug, Clone)]
pub struct HashIndex {
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
    /// It grows before `len << sparsity` would exceed its slots.
    sparsity: u32,
}

impl HashIndex {
    /// A map sized for `max_entries` entries without growing (kept at most half full).
    pub fn with_max_entries(max_entries: usize) -> Self {
        let cap = (max_entries.max(4) * 2).next_power_of_two();
        HashIndex {
            slots: vec![Slot { key: 0, val: EMPTY }; cap],
            mask: cap - 1,
            len: 0,
            sparsity: 1,
        }
    }

    /// A map kept at most 1/16 full, for lookups that mostly miss: the first slot probed is
    /// then nearly always empty, a branch the processor predicts.
    pub fn sparse() -> Self {
        HashIndex {
            sparsity: 4,
            ..Self::with_max_entries(32)
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        // Keys are already well mixed; fold the high half in for safety.
        ((key ^ (key >> 32)) as usize) & self.mask
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        let mut i = self.slot(key);
        loop {
            let s = self.slots[i];
            if s.val == EMPTY {
                return None;
            }
            if s.key == key {
                return Some(s.val);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts `key -> val` unless `key` is present; returns whether it inserted.
    #[inline]
    pub fn insert_if_absent(&mut self, key: u64, val: u32) -> bool {
        debug_assert!(val != EMPTY);
        if (self.len + 1) << self.sparsity > self.slots.len() {
            self.grow();
        }
        let mut i = self.slot(key);
        loop {
            let s = &mut self.slots[i];
            if s.val == EMPTY {
                *s = Slot { key, val };
                self.len += 1;
                return true;
            }
            if s.key == key {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Doubles the table, placing every entry again.
    #[cold]
    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot { key: 0, val: EMPTY }; cap]);
        self.mask = self.slots.len() - 1;
        self.len = 0;
        for s in old {
            if s.val != EMPTY {
                self.insert_if_absent(s.key, s.val);
            }
        }
    }

    /// Points the present `key` at `val` instead; returns whether `key` was present.
    pub fn set_present(&mut self, key: u64, val: u32) -> bool {
        let mut i = self.slot(key);
        loop {
            let s = &mut self.slots[i];
            if s.val == EMPTY {
                return false;
            }
            if s.key == key {
                s.val = val;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `key` if it maps to `val`; returns whether it did.
    pub fn remove_if(&mut self, key: u64, val: u32) -> bool {
        let mut i = self.slot(key);
        loop {
            let s = self.slots[i];
            if s.val == EMPTY {
                return false;
            }
            if s.key == key {
                if s.val != val {
                    return false;
                }
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion: move later entries of the probe run into the hole.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        while self.slots[j].val != EMPTY {
            let home = self.slot(self.slots[j].key);
            // Entry j may move to the hole if its home is not in (hole, j] cyclically.
            let dist_j = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_j >= dist_hole {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.slots[hole].val = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;
    use std::collections::HashMap;

    #[test]
    fn behaves_like_a_hashmap_under_random_operations() {
        for sparse in [false, true] {
            let mut rng = Rng::new(9);
            // Sized for 4 entries, or sparse: it grows as the map does.
            let mut h = if sparse {
                HashIndex::sparse()
            } else {
                HashIndex::with_max_entries(4)
            };
            let mut m: HashMap<u64, u32> = HashMap::new();
            // Few distinct keys with colliding low bits force long probe runs and wrap-around.
            for step in 0..200_000u32 {
                let key = rng.range(0, 600) << 40 | rng.range(0, 3);
                match rng.range(0, 2) {
                    0 if m.len() < 300 => {
                        let ins = h.insert_if_absent(key, step);
                        assert_eq!(ins, !m.contains_key(&key));
                        m.entry(key).or_insert(step);
                    }
                    1 => {
                        let val = m.get(&key).copied().unwrap_or(7);
                        let removed = h.remove_if(key, val);
                        assert_eq!(removed, m.remove(&key).is_some());
                    }
                    _ if step % 7 == 0 => {
                        let present = m.contains_key(&key);
                        assert_eq!(h.set_present(key, step), present);
                        if present {
                            m.insert(key, step);
                        }
                    }
                    _ => assert_eq!(h.get(key), m.get(&key).copied()),
                }
                assert_eq!(h.len(), m.len());
            }
            for (k, v) in &m {
                assert_eq!(h.get(*k), Some(*v));
            }
            // remove_if with the wrong value keeps the entry.
            if let Some((k, v)) = m.iter().next() {
                assert!(!h.remove_if(*k, v.wrapping_add(1)));
                assert_eq!(h.get(*k), Some(*v));
            }
        }
    }
}

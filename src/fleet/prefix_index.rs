//! A router's own index of what it sent where (llm-d's approximate prefix producer, Dynamo's
//! indexer without KV events): the prompt hashed in blocks, and per replica an LRU of the
//! blocks routed there, learning only from the router's decisions.

use super::FleetConfig;
use crate::tiers::lru::LruTier;
use crate::time::{SimDuration, SimTime};
use crate::trace::Request;
use crate::trace::content::for_each_block;
use crate::util::hashindex::HashIndex;

/// Per replica, the LRU of prompt blocks the router sent there.
#[derive(Debug)]
pub struct DecisionIndex {
    block_tokens: u32,
    /// Per replica, the LRU of blocks it was sent (its capacity is llm-d's per-server one).
    lru: Vec<LruTier>,
    /// How long an entry lives after the decision that last sent its block (Dynamo's
    /// `--router-ttl-secs`); `None`: until the LRU evicts it.
    ttl: Option<SimDuration>,
    /// Which replicas' LRUs hold a block, a bit each, kept for fleets of 17 to 64 replicas
    /// (smaller ones ask their few LRUs faster, larger ones have too many for a bit each).
    holders: Option<Holders>,
}

/// Block -> the replicas holding it, as bit masks in a slab indexed by an open-addressing map.
#[derive(Debug)]
struct Holders {
    index: HashIndex,
    masks: Vec<u64>,
    free: Vec<u32>,
}

impl Holders {
    fn get(&self, key: u64) -> u64 {
        self.index.get(key).map_or(0, |s| self.masks[s as usize])
    }

    fn add(&mut self, key: u64, bit: u64) {
        match self.index.get(key) {
            Some(s) => self.masks[s as usize] |= bit,
            None => {
                let s = match self.free.pop() {
                    Some(s) => {
                        self.masks[s as usize] = bit;
                        s
                    }
                    None => {
                        self.masks.push(bit);
                        (self.masks.len() - 1) as u32
                    }
                };
                self.index.insert_if_absent(key, s);
            }
        }
    }

    fn remove(&mut self, key: u64, bit: u64) {
        if let Some(s) = self.index.get(key) {
            let m = &mut self.masks[s as usize];
            *m &= !bit;
            if *m == 0 {
                self.index.remove_if(key, s);
                self.free.push(s);
            }
        }
    }
}

/// llm-d's `maxPrefixBlocksToMatch`.
pub const MAX_PREFIX_BLOCKS: usize = 256;

impl DecisionIndex {
    /// An empty index for `n` replicas (`router_lru_blocks` each, `router_block_size`-token
    /// blocks).
    pub fn new(n: usize, cfg: &FleetConfig) -> Self {
        DecisionIndex {
            block_tokens: cfg.block_tokens.max(1),
            ttl: cfg
                .ttl_s
                .filter(|t| *t > 0.0)
                .map(SimDuration::from_secs_f64),
            lru: (0..n)
                .map(|_| LruTier::new(cfg.lru_blocks as u64))
                .collect(),
            holders: (17..=64).contains(&n).then(|| Holders {
                index: HashIndex::with_max_entries(
                    (n as u64 * cfg.lru_blocks as u64).min(1 << 22) as usize
                ),
                masks: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// The prompt's block keys (its first [`MAX_PREFIX_BLOCKS`], a partial last one included).
    pub fn prompt_blocks(&self, request: &Request) -> Vec<u64> {
        // Only the first MAX_PREFIX_BLOCKS blocks are hashed.
        let mut left = MAX_PREFIX_BLOCKS as u64 * self.block_tokens as u64;
        let runs = request.prompt.iter().map_while(|r| {
            (left > 0).then(|| {
                let len = (r.len as u64).min(left) as u32;
                left -= len as u64;
                crate::trace::Run::new(r.content, r.offset, len)
            })
        });
        let mut keys = Vec::with_capacity(MAX_PREFIX_BLOCKS);
        for_each_block(runs, self.block_tokens, true, |_, k| keys.push(k));
        keys
    }

    /// Per replica, the leading blocks of `keys` its LRU holds.
    pub fn matched(&self, keys: &[u64]) -> Vec<usize> {
        let n = self.lru.len();
        let Some(holders) = &self.holders else {
            return (0..n)
                .map(|r| keys.iter().take_while(|k| self.lru[r].has(**k)).count())
                .collect();
        };
        let mut matched = vec![keys.len(); n];
        let mut still = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        for (i, k) in keys.iter().enumerate() {
            let held = holders.get(*k);
            let mut dropped = still & !held;
            while dropped != 0 {
                matched[dropped.trailing_zeros() as usize] = i;
                dropped &= dropped - 1;
            }
            still &= held;
            if still == 0 {
                break;
            }
        }
        matched
    }

    /// Forgets the entries whose time to live has passed at `now` (with a TTL; `now` never
    /// decreases).
    pub fn expire(&mut self, now: SimTime) {
        let Some(ttl) = self.ttl else { return };
        let Some(cutoff) = now.as_ns().checked_sub(ttl.as_ns()) else {
            return;
        };
        // An entry sent at `cutoff` or before has lived its TTL.
        let cutoff = SimTime::from_ns(cutoff + 1);
        for (r, lru) in self.lru.iter_mut().enumerate() {
            let bit = 1u64 << (r % 64);
            match &mut self.holders {
                None => lru.expire_before(cutoff, |_| {}),
                Some(h) => lru.expire_before(cutoff, |gone| h.remove(gone, bit)),
            }
        }
    }

    /// Records that `keys` were sent to replica `r` at `now`, suffix first so that the prefix
    /// stays most recent.
    pub fn learn(&mut self, r: usize, keys: &[u64], now: SimTime) {
        let lru = &mut self.lru[r];
        let ttl = self.ttl.is_some();
        let stamp = if ttl { now } else { SimTime::ZERO };
        match &mut self.holders {
            None => {
                for k in keys.iter().rev() {
                    if !lru.insert(*k, 1, stamp) {
                        continue;
                    }
                    if ttl {
                        lru.restamp(*k, stamp);
                    }
                }
            }
            Some(holders) => {
                let bit = 1u64 << r;
                for k in keys.iter().rev() {
                    let writes = lru.writes;
                    lru.insert_reporting(*k, 1, stamp, |gone| holders.remove(gone, bit));
                    if ttl {
                        lru.restamp(*k, stamp);
                    }
                    // A block the replica's LRU held already is only touched: its bit is set.
                    if lru.writes != writes {
                        holders.add(*k, bit);
                    }
                }
            }
        }
    }

    /// Drops the block-to-replicas masks (the index then asks every replica's LRU); whether it
    /// had them.
    #[cfg(test)]
    pub fn drop_masks(&mut self) -> bool {
        self.holders.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Run;

    #[test]
    fn a_decision_is_forgotten_once_its_ttl_has_passed() {
        let s = |x: u64| SimTime::from_ns(x * 1_000_000_000);
        // Two replicas, 16-token blocks, a TTL of 10 s.
        let cfg = FleetConfig {
            ttl_s: Some(10.0),
            ..FleetConfig::default()
        };
        let mut index = DecisionIndex::new(2, &cfg);
        let a = index.prompt_blocks(&Request::new(0, 0, vec![Run::new(1, 0, 64)], 1));
        let b = index.prompt_blocks(&Request::new(1, 0, vec![Run::new(2, 0, 32)], 1));
        assert_eq!((a.len(), b.len()), (4, 2));
        index.learn(0, &a, s(0));
        index.learn(1, &b, s(5));
        index.expire(s(9));
        assert_eq!(index.matched(&a), vec![4, 0]);
        // At 10 s, the decision of 0 s has lived its 10 s; that of 5 s has not.
        index.expire(s(10));
        assert_eq!(index.matched(&a), vec![0, 0]);
        assert_eq!(index.matched(&b), vec![0, 2]);
        // Sending `b` again at 12 s renews it: at 16 s it is still there, at 22 s gone.
        index.learn(1, &b, s(12));
        index.expire(s(16));
        assert_eq!(index.matched(&b), vec![0, 2]);
        index.expire(s(22));
        assert_eq!(index.matched(&b), vec![0, 0]);
        // Without a TTL nothing expires.
        let mut forever = DecisionIndex::new(2, &FleetConfig::default());
        forever.learn(0, &a, s(0));
        forever.expire(s(1_000_000));
        assert_eq!(forever.matched(&a), vec![4, 0]);
    }
}

//! A router's own index of what it sent where (llm-d's approximate prefix producer, Dynamo's
//! indexer without KV events): the prompt hashed in blocks, and per replica an LRU of the
//! blocks routed there, learning only from the router's decisions. Each replica's LRU is kept
//! as runs of blocks ([`super::run_index`]).

use super::FleetConfig;
use super::run_index::ReplicaRuns;
use crate::time::{SimDuration, SimTime};
use crate::trace::Request;
use crate::trace::content::for_each_block;
use crate::util::hashindex::HashIndex;
use std::sync::Arc;

/// Per replica, the LRU of prompt blocks the router sent there.
#[derive(Debug)]
pub struct DecisionIndex {
    block_tokens: u32,
    /// How long an entry lives after the decision that last sent its block (Dynamo's
    /// `--router-ttl-secs`); `None`: until the LRU evicts it.
    ttl: Option<SimDuration>,
    /// Per replica, the blocks it was sent (its capacity is llm-d's per-server one).
    replicas: Vec<ReplicaRuns>,
    /// For fleets of 2 to 64 replicas: key -> the replicas with a run starting at it, a bit
    /// each (one probe here spares one per replica).
    starts: Option<StartMasks>,
    changes: Vec<(u64, bool)>,
    /// Scratch: per prompt position, the replicas with a run starting there (once looked up).
    masks: std::cell::RefCell<Vec<Option<u64>>>,
}

/// Key -> replicas bit mask, in an open-addressing map onto a slab.
#[derive(Debug)]
struct StartMasks {
    index: HashIndex,
    masks: Vec<u64>,
    free: Vec<u32>,
}

impl StartMasks {
    fn get(&self, key: u64) -> u64 {
        self.index.get(key).map_or(0, |s| self.masks[s as usize])
    }

    fn set(&mut self, key: u64, bit: u64, on: bool) {
        match (self.index.get(key), on) {
            (Some(s), true) => self.masks[s as usize] |= bit,
            (Some(s), false) => {
                let m = &mut self.masks[s as usize];
                *m &= !bit;
                if *m == 0 {
                    self.index.remove_if(key, s);
                    self.free.push(s);
                }
            }
            (None, true) => {
                let s = crate::util::slab::put(&mut self.masks, &mut self.free, bit);
                self.index.insert_if_absent(key, s);
            }
            (None, false) => {}
        }
    }
}

/// llm-d's `maxPrefixBlocksToMatch`.
pub const MAX_PREFIX_BLOCKS: usize = 256;

/// The prompt's block keys at `block_tokens` tokens a block (its first [`MAX_PREFIX_BLOCKS`], a
/// partial last one included).
pub fn prompt_keys(request: &Request, block_tokens: u32) -> Vec<u64> {
    // Only the first MAX_PREFIX_BLOCKS blocks are hashed.
    let mut left = MAX_PREFIX_BLOCKS as u64 * block_tokens as u64;
    let runs = request.prompt.iter().map_while(|r| {
        (left > 0).then(|| {
            let len = (r.len as u64).min(left) as u32;
            left -= len as u64;
            crate::trace::Run::new(r.content, r.offset, len)
        })
    });
    let mut keys = Vec::with_capacity(MAX_PREFIX_BLOCKS);
    for_each_block(runs, block_tokens, true, |_, k| keys.push(k));
    keys
}

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
            replicas: (0..n)
                .map(|_| {
                    let mut r = ReplicaRuns::new(cfg.lru_blocks as u64);
                    if (2..=64).contains(&n) {
                        r.record_starts();
                    }
                    r
                })
                .collect(),
            starts: (2..=64).contains(&n).then(|| StartMasks {
                index: HashIndex::with_max_entries(1 << 12),
                masks: Vec::new(),
                free: Vec::new(),
            }),
            changes: Vec::new(),
            masks: Default::default(),
        }
    }

    /// Applies replica `r`'s changes of run starts to the shared masks.
    fn sync(&mut self, r: usize) {
        let Some(starts) = &mut self.starts else {
            return;
        };
        self.replicas[r].take_start_changes(&mut self.changes);
        for (key, on) in self.changes.drain(..) {
            starts.set(key, 1u64 << r, on);
        }
    }

    /// The prompt's block keys (its first [`MAX_PREFIX_BLOCKS`], a partial last one included).
    pub fn prompt_blocks(&self, request: &Request) -> Arc<Vec<u64>> {
        Arc::new(prompt_keys(request, self.block_tokens))
    }

    /// Per replica, the leading blocks of `keys` its LRU holds.
    pub fn matched(&self, keys: &[u64]) -> Vec<usize> {
        let Some(starts) = &self.starts else {
            return self
                .replicas
                .iter()
                .map(|r| r.matched(keys, |_| true))
                .collect();
        };
        // The mask of the runs starting at each position, looked up once for all replicas.
        let mut masks = self.masks.borrow_mut();
        masks.clear();
        masks.resize(keys.len(), None);
        let mut mask_at = |p: usize| *masks[p].get_or_insert_with(|| starts.get(keys[p]));
        (0..self.replicas.len())
            .map(|r| self.replicas[r].matched(keys, |p| mask_at(p) & (1u64 << r) != 0))
            .collect()
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
        for r in 0..self.replicas.len() {
            self.replicas[r].expire_before(cutoff);
            self.sync(r);
        }
    }

    /// Records that `keys` were sent to replica `r` at `now`, suffix first so that the prefix
    /// stays most recent.
    pub fn learn(&mut self, r: usize, keys: &Arc<Vec<u64>>, now: SimTime) {
        self.replicas[r].learn(keys, now);
        self.sync(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::lru::LruTier;
    use crate::trace::Run;
    use crate::util::rng::Rng;

    /// Random prompts over shared documents and conversations that grow turn by turn, learned
    /// on random replicas with small LRUs (so that they evict) and with or without a TTL: the
    /// run index matches exactly as a block-by-block LRU per replica does.
    #[test]
    fn runs_match_as_a_block_by_block_lru() {
        for seed in 0..12u64 {
            let mut rng = Rng::new(seed);
            let n = rng.range(1, 6) as usize;
            let ttl = (seed % 3 == 0).then_some(0.4);
            let cfg = FleetConfig {
                lru_blocks: rng.range(5, 120) as u32,
                block_tokens: 16,
                ttl_s: ttl,
                ..FleetConfig::default()
            };
            let mut runs = DecisionIndex::new(n, &cfg);
            let mut blocks: Vec<LruTier> = (0..n)
                .map(|_| LruTier::new(cfg.lru_blocks as u64))
                .collect();
            // Conversations: a shared system prompt, a document, then turns appended.
            let mut convs: Vec<Vec<Run>> = Vec::new();
            for i in 0..3000u64 {
                let now = SimTime::from_ns(i * 1_000_000);
                let c = rng.range(0, 30) as usize;
                if c >= convs.len() || rng.range(0, 8) == 0 {
                    let mut prompt = vec![Run::new(1, 0, 16 * rng.range(0, 4) as u32 + 1)];
                    prompt.push(Run::new(rng.range(2, 12), 0, rng.range(1, 200) as u32));
                    if c < convs.len() {
                        convs[c] = prompt;
                    } else {
                        convs.push(prompt);
                    }
                }
                let c = c.min(convs.len() - 1);
                convs[c].push(Run::new(1000 + i, 0, rng.range(1, 90) as u32));
                let q = Request::new(i, 0, convs[c].clone(), 1);
                let keys = runs.prompt_blocks(&q);
                runs.expire(now);
                if let Some(t) = ttl {
                    let cutoff = now.as_ns().checked_sub((t * 1e9) as u64);
                    if let Some(cut) = cutoff {
                        for b in &mut blocks {
                            b.expire_before(SimTime::from_ns(cut + 1), |_| {});
                        }
                    }
                }
                let want: Vec<usize> = blocks
                    .iter()
                    .map(|b| keys.iter().take_while(|k| b.has(**k)).count())
                    .collect();
                assert_eq!(runs.matched(&keys), want, "seed {seed} request {i}");
                let r = rng.range(0, n as u64 - 1) as usize;
                runs.learn(r, &keys, now);
                for k in keys.iter().rev() {
                    blocks[r].insert(*k, 1, now);
                    blocks[r].restamp(*k, now);
                }
                assert_eq!(
                    runs.replicas[r].blocks(),
                    blocks[r].len() as u64,
                    "seed {seed} request {i}"
                );
            }
            let evicted: u64 = blocks.iter().map(|b| b.evictions).sum();
            assert!(evicted > 0, "seed {seed}: the LRUs never filled");
        }
    }

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

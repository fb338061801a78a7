//! LMCache's `LMCacheConnectorV1` as vLLM's scheduler sees it: a request's prompt cut into
//! chunk keys, one lookup per waiting request (cached, its hits pinned, until the request is
//! scheduled), a blocking retrieve after allocation (or an asynchronous prefetch into the CPU
//! tier), and write-through saves of completed chunks after each step. The tiers and what their
//! operations cost are [`crate::tiers::lmcache`].

use super::{
    ConnectorRequest, ConnectorStats, DecodeSaves, KvConnector, Load, Match, Matched, PerRequest,
    Save, TierEvictions, TierTokens,
};
use crate::cost::TransferProfile;
use crate::cost::shared_link::OpId;
use crate::tiers::lmcache::{Chunk, LmCache, LmCacheConfig, TierHits};
use crate::tiers::remote::StoreHandle;
use crate::tiers::remote_client::InTurn;
use crate::time::{Seconds, SimDuration, SimTime};
use crate::trace::Request;
use crate::trace::content::for_each_block;

/// LMCache's per-request state.
#[derive(Debug, Clone, Default)]
struct ReqChunks {
    /// The request's chunk keys, computed at its first lookup (`None` before, and after it
    /// finished).
    chunks: Option<Vec<Chunk>>,
    /// Leading chunks already in LMCache (hits, or saved by this request).
    saved: u32,
    /// The lookup cached while the request waits.
    lookup: Option<TierHits>,
    /// Leading chunks an asynchronous prefetch brought into host memory for this request: they
    /// stay pinned until it is scheduled, whatever the CPU tier evicts meanwhile.
    prefetched: u32,
}

/// The LMCache connector.
#[derive(Debug)]
pub struct LmCacheConnector {
    cache: LmCache,
    transfer: TransferProfile,
    reqs: PerRequest<ReqChunks>,
    /// Gets through a shared store that this step's blocking loads wait for.
    waiting_on: Vec<OpId>,
    /// A step's blocking retrieves: LMCache retrieves its requests one after another.
    retrieves: InTurn,
}

impl LmCacheConnector {
    /// LMCache with configuration `cfg` for KV of `kv_bytes_per_token` per token and rank.
    pub fn new(cfg: LmCacheConfig, kv_bytes_per_token: u64, transfer: TransferProfile) -> Self {
        Self::with_store(cfg, kv_bytes_per_token, transfer, None)
    }

    /// LMCache whose remote tier is `store`, shared with other engines, when given.
    pub fn with_store(
        cfg: LmCacheConfig,
        kv_bytes_per_token: u64,
        transfer: TransferProfile,
        store: Option<StoreHandle>,
    ) -> Self {
        LmCacheConnector {
            cache: LmCache::with_store(cfg, kv_bytes_per_token, store),
            transfer,
            reqs: PerRequest::default(),
            waiting_on: Vec::new(),
            retrieves: InTurn::default(),
        }
    }

    /// The request's chunk keys, computed once.
    fn chunks(&mut self, req: &ConnectorRequest<'_>) -> &[Chunk] {
        let cfg = &self.cache.cfg;
        let (cs, partial, decode) = (cfg.chunk_size, cfg.save_unfull_chunk, cfg.save_decode_cache);
        let st = self.reqs.get_mut(req.idx);
        st.chunks.get_or_insert_with(|| {
            let r = req.request;
            let mut chunks = Vec::with_capacity(((r.input_len + r.output_len) / cs + 1) as usize);
            if decode {
                for_each_block(r.sequence(), cs, partial, |end, k| {
                    chunks.push((end as u32, k))
                });
            } else {
                for_each_block(r.prompt.iter().copied(), cs, partial, |end, k| {
                    chunks.push((end as u32, k))
                });
            }
            chunks
        })
    }
}

impl KvConnector for LmCacheConnector {
    fn get_num_new_matched_tokens(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        now: SimTime,
    ) -> Match {
        self.chunks(req);
        let st = self.reqs.get_mut(req.idx);
        let chunks = st.chunks.as_deref().unwrap_or_default();
        let l = &mut self.cache;
        let tp = &self.transfer;
        // LMCache caches a request's lookup (and pins its hits) until vLLM schedules it: a
        // waiting request retried step after step pays for one lookup.
        let (mut hits, lookup) = match st.lookup {
            Some(h) => (h, Seconds::ZERO),
            None => {
                let (h, s) = l.lookup(chunks, now, tp);
                st.lookup = Some(h);
                (h, Seconds(s))
            }
        };
        if st.prefetched > 0 {
            // What the prefetch brought is in host memory, pinned for this request.
            let total = hits.total().max(st.prefetched);
            let cpu = hits.cpu.max(st.prefetched);
            let disk = (hits.cpu + hits.disk).saturating_sub(cpu);
            hits = TierHits {
                cpu,
                disk,
                remote: total - cpu - disk,
            };
            st.lookup = Some(hits);
        }
        let hit_tokens = LmCache::tokens_of(chunks, hits.total()).min(req.num_tokens - 1);
        if l.cfg.enable_async_loading
            && st.prefetched == 0
            && hits.disk + hits.remote > 0
            && hit_tokens > local_hit
        {
            // Prefetch into the CPU tier; the request is skipped until it completes, then looks
            // up again and finds its prefix in host memory (once: what the tier evicts meanwhile
            // stays pinned for it).
            // A shared store's bytes are taken where they are projected to be through when
            // the prefetch starts.
            let f = l.fetch_cost(chunks, &hits, now, now, tp, false);
            let through = match (f.shared, l.shared_store()) {
                (Some(op), Some(store)) => store.projected(op).since(now),
                _ => SimDuration::ZERO,
            };
            let ready = now + SimDuration::from_secs_f64(f.s) + through;
            l.promote(chunks, &hits, ready);
            st.lookup = None;
            st.prefetched = hits.total();
            return Match {
                matched: Matched::Later { ready },
                lookup,
            };
        }
        let mut end = local_hit;
        let mut tiers = TierTokens::default();
        if hit_tokens > local_hit {
            end = hit_tokens;
            let c_end = LmCache::tokens_of(chunks, hits.cpu);
            let d_end = LmCache::tokens_of(chunks, hits.cpu + hits.disk);
            let prompt_len = req.prompt_len;
            let span = |a: u32, b: u32| {
                b.min(end)
                    .saturating_sub(a.max(local_hit))
                    .min(prompt_len.saturating_sub(a.max(local_hit)))
            };
            tiers.cpu = span(0, c_end);
            tiers.disk = span(c_end, d_end);
            tiers.remote = span(d_end, end);
        }
        Match {
            matched: Matched::Tokens {
                end,
                tiers,
                load_async: false,
            },
            lookup,
        }
    }

    fn update_state_after_alloc(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        matched: &Matched,
        now: SimTime,
    ) -> Load {
        let st = self.reqs.get_mut(req.idx);
        let Some(hits) = st.lookup.take() else {
            return Load::None;
        };
        st.saved = hits.total();
        st.prefetched = 0;
        let end = match matched {
            Matched::Tokens { end, .. } if *end > local_hit => *end,
            _ => return Load::None,
        };
        // Blocking retrieve: disk and remote hits are read and promoted, then everything from
        // the GPU hit to the end of the LMCache hit is loaded.
        let chunks = st.chunks.as_deref().unwrap_or_default();
        let l = &mut self.cache;
        let start = self.retrieves.start(now);
        let fetch = l.fetch_cost(chunks, &hits, now, start, &self.transfer, true);
        if let Some(op) = fetch.shared {
            self.waiting_on.push(op);
        }
        l.promote(chunks, &hits, now);
        let (load, bytes) = l.gpu_load_s(chunks, local_hit, end, &self.transfer);
        let time = fetch.s + load;
        self.retrieves
            .done(start + SimDuration::from_secs_f64(time));
        Load::Blocking {
            time: Seconds(time),
            bytes,
        }
    }

    fn save(&mut self, req: &ConnectorRequest<'_>, at: SimTime) -> Save {
        let st = self.reqs.get_mut(req.idx);
        let chunks = st.chunks.as_deref().unwrap_or_default();
        // Chunks before `saved` are covered already: look only past them.
        let first = st.saved as usize;
        let covered = first
            + chunks[first.min(chunks.len())..]
                .iter()
                .take_while(|(end, _)| *end <= req.num_computed)
                .count();
        // The next chunk is saved once the computed tokens reach its end.
        let next = chunks.get(covered).map_or(u32::MAX, |c| c.0);
        if covered <= first {
            return Save::nothing_until(next);
        }
        let (s, bytes) = self.cache.store(chunks, first, covered, at, &self.transfer);
        st.saved = covered as u32;
        Save {
            critical: Seconds(s),
            bytes,
            next,
        }
    }

    fn request_preempted(&mut self, idx: u32) {
        let st = self.reqs.get_mut(idx);
        st.saved = 0;
        st.lookup = None;
        st.prefetched = 0;
    }

    fn request_finished(&mut self, idx: u32) {
        // The slot may serve another request next.
        *self.reqs.get_mut(idx) = ReqChunks::default();
    }

    fn layerwise(&self) -> bool {
        self.cache.cfg.use_layerwise
    }

    fn blocking_data(&mut self, now: SimTime) -> Option<SimTime> {
        if self.waiting_on.is_empty() {
            return None;
        }
        let store = self.cache.shared_store()?;
        let mut latest = SimTime::ZERO;
        let mut through = true;
        for &op in &self.waiting_on {
            let t = store.through(op, now).unwrap_or_else(|projected| {
                through = false;
                projected
            });
            latest = latest.max(t);
        }
        if through {
            for op in self.waiting_on.drain(..) {
                store.forget(op);
            }
        }
        Some(latest)
    }

    fn decode_saves(&self) -> DecodeSaves {
        if self.cache.cfg.save_decode_cache {
            DecodeSaves::EveryStep
        } else {
            // Saves cover prompt chunks only, all saved when the prefill ended.
            DecodeSaves::Nothing
        }
    }

    fn match_is_settled(&self, idx: u32) -> bool {
        !self.cache.cfg.enable_async_loading
            && self.reqs.get(idx).is_some_and(|s| s.lookup.is_some())
    }

    fn stats(&self) -> Option<ConnectorStats> {
        let (cpu, disk, remote) = self.cache.evictions();
        Some(ConnectorStats::LmCache {
            counters: self.cache.stats,
            evictions: TierEvictions { cpu, disk, remote },
        })
    }

    fn prompt_chunks(&self, request: &Request) -> Vec<(u32, u64)> {
        let cs = self.cache.cfg.chunk_size;
        let mut keys = Vec::with_capacity((request.input_len / cs) as usize);
        for_each_block(request.prompt.iter().copied(), cs, false, |end, k| {
            keys.push((end as u32, k))
        });
        keys
    }

    fn local_chunk_since(&self, key: u64) -> Option<SimTime> {
        self.cache.local_since(key)
    }

    fn record_tier_writes(&mut self) {
        self.cache.writes = Some(Vec::new());
    }

    fn take_tier_writes(&mut self, out: &mut Vec<super::TierWrite>) {
        if let Some(w) = &mut self.cache.writes {
            out.append(w);
        }
    }
}

//! Disaggregated prefill/decode, the decoder's side: a connector wrapped around the configured
//! one that, for a request whose KV a prefill replica computed, answers as vLLM's NIXL
//! connector does on the decode instance: nothing can be scheduled until the transfer has
//! arrived (the request waits, as in `WAITING_FOR_REMOTE_KVS`), then the whole prompt is
//! matched but its last token, which the decoder computes again to sample from (vLLM's
//! `num_computed_tokens -= 1` after a full load). Every other request, and every other call, is
//! the wrapped connector's.
//!
//! The fleet loop (`crate::sim`) tells the decoders when each transfer arrives through an
//! [`Arrivals`] handle shared with them; the engine is not involved.

use super::{
    ConnectorRequest, ConnectorStats, DecodeSaves, KvConnector, Load, Match, Matched, PerRequest,
    Save,
};
use crate::time::{Seconds, SimTime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// When each disaggregated request's KV reaches its decoder, by trace index (shared by the
/// fleet loop, which writes it, and the decoders' connectors, which take from it).
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<u32, SimTime>>>);

impl Arrivals {
    /// Request `global`'s KV arrives at `at`.
    pub fn expect(&self, global: u32, at: SimTime) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(global, at);
    }

    /// When request `global`'s KV is expected (the latest projection).
    fn get(&self, global: u32) -> Option<SimTime> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&global)
            .copied()
    }

    /// The request's KV has arrived: its entry goes.
    fn remove(&self, global: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&global);
    }
}

/// The configured connector `C`, with the decoder's side of disaggregated serving.
#[derive(Debug)]
pub struct PdConnector<C> {
    inner: C,
    arrivals: Arrivals,
    /// Per slot, when its transferred KV arrives (read from `arrivals` at each lookup until it
    /// has arrived; cleared once it has been matched, or when the request is preempted or
    /// done).
    pending: PerRequest<Option<SimTime>>,
}

impl<C> PdConnector<C> {
    /// `inner`, receiving the transfers `arrivals` announces.
    pub fn new(inner: C, arrivals: Arrivals) -> Self {
        PdConnector {
            inner,
            arrivals,
            pending: PerRequest::default(),
        }
    }
}

impl<C: KvConnector> KvConnector for PdConnector<C> {
    fn get_num_new_matched_tokens(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        now: SimTime,
    ) -> Match {
        // The arrival is looked up again at every attempt: transfers that join the link later
        // may have delayed it.
        let slot = self.pending.get_mut(req.idx);
        if let Some(t) = self.arrivals.get(req.global) {
            *slot = Some(t);
        }
        let Some(arrival) = *slot else {
            return self.inner.get_num_new_matched_tokens(req, local_hit, now);
        };
        let matched = if now < arrival {
            Matched::Later { ready: arrival }
        } else {
            self.arrivals.remove(req.global);
            Matched::Tokens {
                end: req.prompt_len.min(req.num_tokens - 1).max(local_hit),
                tiers: Default::default(),
                load_async: false,
            }
        };
        Match {
            matched,
            lookup: Seconds::ZERO,
        }
    }

    fn update_state_after_alloc(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        matched: &Matched,
        now: SimTime,
    ) -> Load {
        if self.pending.get_mut(req.idx).take().is_some() {
            // The KV is in the decoder's blocks already (the transfer wrote it there).
            return Load::None;
        }
        self.inner
            .update_state_after_alloc(req, local_hit, matched, now)
    }

    fn save(&mut self, req: &ConnectorRequest<'_>, at: SimTime) -> Save {
        self.inner.save(req, at)
    }

    fn request_preempted(&mut self, idx: u32) {
        *self.pending.get_mut(idx) = None;
        self.inner.request_preempted(idx)
    }

    fn request_finished(&mut self, idx: u32) {
        *self.pending.get_mut(idx) = None;
        self.inner.request_finished(idx)
    }

    fn layerwise(&self) -> bool {
        self.inner.layerwise()
    }

    fn blocking_data(&mut self, now: SimTime) -> Option<SimTime> {
        self.inner.blocking_data(now)
    }

    fn decode_saves(&self) -> DecodeSaves {
        self.inner.decode_saves()
    }

    fn match_is_settled(&self, idx: u32) -> bool {
        !self.pending.get(idx).is_some_and(|p| p.is_some()) && self.inner.match_is_settled(idx)
    }

    fn stats(&self) -> Option<ConnectorStats> {
        self.inner.stats()
    }

    fn prompt_chunks(&self, request: &crate::trace::Request) -> Vec<(u32, u64)> {
        self.inner.prompt_chunks(request)
    }

    fn local_chunk_since(&self, key: u64) -> Option<SimTime> {
        self.inner.local_chunk_since(key)
    }

    fn record_tier_writes(&mut self) {
        self.inner.record_tier_writes()
    }

    fn take_tier_writes(&mut self, out: &mut Vec<super::TierWrite>) {
        self.inner.take_tier_writes(out)
    }
}

//! vLLM's own `OffloadingConnector` (`--kv-offloading-backend native`) as its scheduler side
//! behaves: whole GPU blocks, keyed by vLLM's block hashes, are saved to a CPU pool after the
//! step that fills them and loaded back asynchronously (the request waits, the batch goes on).
//! The pool and what its copies cost are [`crate::tiers::native`].

use super::{
    ConnectorRequest, ConnectorStats, DecodeSaves, KvConnector, Load, Match, Matched, PerRequest,
    Save, TierTokens,
};
use crate::cost::TransferProfile;
use crate::tiers::native::NativeOffload;
use crate::time::{Seconds, SimDuration, SimTime};

/// Native offload's per-request state.
#[derive(Debug, Clone, Copy, Default)]
struct ReqBlocks {
    /// Leading blocks already in the CPU pool (loaded from it, or saved by this request).
    saved: u32,
    /// The load the last lookup found: seconds and bytes.
    pending: Option<(f64, u64)>,
}

/// The native offload connector.
#[derive(Debug)]
pub struct NativeConnector {
    pool: NativeOffload,
    transfer: TransferProfile,
    kv_bytes_per_token: u64,
    reqs: PerRequest<ReqBlocks>,
}

impl NativeConnector {
    /// A CPU pool of `cpu_bytes` for an engine with blocks of `block_size` tokens of
    /// `kv_bytes_per_token` each.
    pub fn new(
        cpu_bytes: u64,
        block_size: u32,
        kv_bytes_per_token: u64,
        transfer: TransferProfile,
    ) -> Self {
        NativeConnector {
            pool: NativeOffload::new(
                cpu_bytes,
                block_size,
                kv_bytes_per_token * block_size as u64,
            ),
            transfer,
            kv_bytes_per_token,
            reqs: PerRequest::default(),
        }
    }
}

impl KvConnector for NativeConnector {
    fn get_num_new_matched_tokens(
        &mut self,
        req: &ConnectorRequest<'_>,
        local_hit: u32,
        now: SimTime,
    ) -> Match {
        let bs = req.block_size;
        let hashes = req.block_hashes;
        let cap = (((req.num_tokens - 1) / bs) as usize).min(hashes.len());
        let first = ((local_hit / bs) as usize).min(cap);
        let hit = self.pool.lookup(hashes, first, cap, now);
        let mut end = local_hit;
        let mut tiers = TierTokens::default();
        let mut pending = None;
        if hit > 0 {
            end = local_hit + hit * bs;
            tiers.cpu = (hit * bs).min(req.prompt_len.saturating_sub(local_hit));
            let secs = self.pool.load_s(hit, &self.transfer);
            let bytes = hit as u64 * bs as u64 * self.kv_bytes_per_token;
            pending = (secs > 0.0).then_some((secs, bytes));
        }
        self.reqs.get_mut(req.idx).pending = pending;
        Match {
            matched: Matched::Tokens {
                end,
                tiers,
                load_async: pending.is_some(),
            },
            lookup: Seconds::ZERO,
        }
    }

    fn update_state_after_alloc(
        &mut self,
        req: &ConnectorRequest<'_>,
        _local_hit: u32,
        matched: &Matched,
        now: SimTime,
    ) -> Load {
        let st = self.reqs.get_mut(req.idx);
        let (Some((secs, bytes)), Matched::Tokens { end, .. }) = (st.pending.take(), matched)
        else {
            return Load::None;
        };
        st.saved = (end / req.block_size).min(req.block_hashes.len() as u32);
        Load::Async {
            ready: now + SimDuration::from_secs_f64(secs),
            bytes,
        }
    }

    fn save(&mut self, req: &ConnectorRequest<'_>, at: SimTime) -> Save {
        let hashes = req.block_hashes;
        let bs = req.block_size;
        let full = (req.num_computed / bs).min(hashes.len() as u32);
        let st = self.reqs.get_mut(req.idx);
        // The next block is saved once the computed tokens fill it.
        let saved = st.saved.max(full);
        let next = if (saved as usize) < hashes.len() {
            (saved + 1).saturating_mul(bs)
        } else {
            u32::MAX
        };
        if full <= st.saved {
            return Save::nothing_until(next);
        }
        let from = st.saved as usize;
        st.saved = full;
        let bytes = self
            .pool
            .store(hashes, from, full as usize, at, &self.transfer);
        Save {
            critical: Seconds::ZERO,
            bytes,
            next,
        }
    }

    fn request_preempted(&mut self, idx: u32) {
        self.reqs.get_mut(idx).saved = 0;
    }

    fn request_finished(&mut self, idx: u32) {
        *self.reqs.get_mut(idx) = ReqBlocks::default();
    }

    fn decode_saves(&self) -> DecodeSaves {
        // A decode step saves a block when it fills one, off the critical path.
        DecodeSaves::AtFullBlocks
    }

    fn match_is_settled(&self, _idx: u32) -> bool {
        // Every attempt looks the pool up again (touching its blocks) at a later time.
        false
    }

    fn stats(&self) -> Option<ConnectorStats> {
        Some(ConnectorStats::Native {
            stores: self.pool.stores,
            loads: self.pool.loads,
            evictions: self.pool.evictions(),
        })
    }
}

//! No connector: vLLM alone, with nothing beyond its GPU prefix cache.

use super::{
    ConnectorRequest, ConnectorStats, DecodeSaves, KvConnector, Load, Match, Matched, Save,
};
use crate::time::{Seconds, SimTime};

/// The no-op connector: finds nothing, loads nothing, saves nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoConnector;

impl KvConnector for NoConnector {
    fn get_num_new_matched_tokens(
        &mut self,
        _req: &ConnectorRequest<'_>,
        local_hit: u32,
        _now: SimTime,
    ) -> Match {
        Match {
            matched: Matched::Tokens {
                end: local_hit,
                tiers: Default::default(),
                load_async: false,
            },
            lookup: Seconds::ZERO,
        }
    }

    fn update_state_after_alloc(
        &mut self,
        _req: &ConnectorRequest<'_>,
        _local_hit: u32,
        _matched: &Matched,
        _now: SimTime,
    ) -> Load {
        Load::None
    }

    fn save(&mut self, _req: &ConnectorRequest<'_>, _at: SimTime) -> Save {
        Save::nothing_until(u32::MAX)
    }

    fn request_preempted(&mut self, _idx: u32) {}

    fn request_finished(&mut self, _idx: u32) {}

    fn decode_saves(&self) -> DecodeSaves {
        DecodeSaves::Nothing
    }

    fn match_is_settled(&self, _idx: u32) -> bool {
        true
    }

    fn stats(&self) -> Option<ConnectorStats> {
        None
    }
}

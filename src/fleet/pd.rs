//! Disaggregated prefill/decode: a prefill pool and a decode pool of replicas. A request is
//! routed to a decode replica when it is sent; if it is disaggregated (always, or when more of
//! its prompt than `pd_threshold` tokens is missing from that decoder's GPU prefix cache, as
//! llm-d decides), it first runs on a prefill replica as a one-token request; when that ends,
//! its KV moves to the decoder over the prefill replica's link (`pd_transfer_gbps`, shared
//! fairly by the transfers under way on it: [`crate::cost::shared_link`];
//! `pd_transfer_latency_ms` each),
//! the whole prompt or only what the decoder's prefix cache lacks (`pd_transfer`); the decoder
//! schedules it once the KV has arrived (see [`crate::connector::pd`]).
//!
//! Who emits the first token (`pd_first_token`):
//! - `decoder` (vLLM's NixlConnector flow): TTFT = prefill queue + prefill + transfer + decode
//!   queue + the decoder's first step (it recomputes the last prompt token to sample).
//! - `prefiller` (LMCache's disaggregated proxy): the prefiller's token is streamed at once, so
//!   TTFT = prefill queue + prefill; the decoder's tokens follow. The decoder here generates
//!   the request's whole output (LMCache's proxy sends it the prompt plus the first token and
//!   asks for one token fewer: one decode step per request more than there).
//!
//! Simplified: the prefill replica frees the request's blocks when its prefill ends (vLLM's
//! NIXL flow keeps them until the decoder has read them); the decoder allocates blocks when the
//! KV has arrived, not before the read.

use serde::{Deserialize, Serialize};

/// Who streams the first token to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstToken {
    /// The decoder, after the transfer (vLLM's NixlConnector proxy).
    Decoder,
    /// The prefiller, at the end of the prefill (LMCache's disaggregated proxy).
    Prefiller,
}

/// A disaggregated fleet's shape and transfer channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdConfig {
    /// Prefill replicas (replicas 0 .. prefill).
    pub prefill: u32,
    /// Decode replicas (the rest).
    pub decode: u32,
    /// Who emits the first token.
    pub first_token: FirstToken,
    /// Disaggregate only requests with more uncached prompt tokens on their decoder than this
    /// (0: every request).
    pub threshold: u32,
    /// Bandwidth of a prefill replica's link, GB/s per rank.
    pub transfer_gbps: f64,
    /// Fixed time per transfer, ms.
    pub latency_ms: f64,
    /// Move the whole prompt (else only the tokens the decoder's prefix cache lacks, as vLLM's
    /// NIXL connector reads only the uncomputed tail).
    pub whole_prompt: bool,
}

impl Default for PdConfig {
    /// One prefill and one decode replica, the decoder's first token, every request
    /// disaggregated, inference-sim's channel defaults (25 GB/s, 0.05 ms).
    fn default() -> Self {
        PdConfig {
            prefill: 1,
            decode: 1,
            first_token: FirstToken::Decoder,
            threshold: 0,
            transfer_gbps: 25.0,
            latency_ms: 0.05,
            whole_prompt: false,
        }
    }
}

//! kvreplay: a deterministic trace-replay simulator for LLM serving with KV cache offloading
//! (vLLM V1 + LMCache).
//!
//! Data flow: `trace` (import, generate, store) -> engine -> connector (cache tiers) -> cost ->
//! metrics -> report, with calibrate and validate beside them.

#![warn(missing_docs)]

pub mod bench;
pub mod calibrate;
pub mod compare;
pub mod config;
pub mod connector;
pub mod cost;
pub mod engine;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod interval;
#[cfg(feature = "live")]
pub mod live;
pub mod metrics;
pub mod model;
pub mod netdelay;
pub mod pipeline;
pub mod plan;
#[cfg(feature = "plots")]
pub mod plot;
pub mod report;
pub mod sim;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testkit;
pub mod tiers;
pub mod time;
pub mod trace;
pub mod util;
pub mod validate;

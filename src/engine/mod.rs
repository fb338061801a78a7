//! The vLLM V1 engine model: block pool with prefix caching, scheduler with chunked prefill and
//! preemption, and the configuration vLLM derives from flags and the GPU.

pub mod blocks;
pub mod config;
pub mod pool;
pub mod request;
pub mod scheduler;
pub mod segments;
pub mod step_log;

pub use config::{EngineConfig, EngineFlags};
pub use scheduler::Engine;

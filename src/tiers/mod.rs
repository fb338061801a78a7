//! KV offload in front of the GPU: LMCache's tiers ([`lmcache`]) or vLLM's native CPU offload
//! ([`native`]), over LRU byte-bounded stores ([`lru`], and [`block_runs`] for whole blocks held
//! as runs); LMCache's remote tier may be one store a fleet shares ([`remote`]), reached through
//! an engine's connections to it ([`remote_client`]).

pub mod block_runs;
pub mod lmcache;
pub mod lru;
pub mod native;
pub mod remote;
pub mod remote_client;

use serde::Serialize;

/// Which offload model runs, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum OffloadConfig {
    /// vLLM alone: its GPU prefix cache only.
    None,
    /// LMCache's connector.
    LmCache(lmcache::LmCacheConfig),
    /// vLLM's native CPU offload with this many bytes per rank.
    Native {
        /// CPU pool bytes.
        cpu_bytes: u64,
    },
}

impl OffloadConfig {
    /// A short name for tables: none, cpu, cpu+disk, remote, native ...
    pub fn label(&self) -> String {
        match self {
            OffloadConfig::None => "none".into(),
            OffloadConfig::Native { cpu_bytes } => {
                format!("native {:.0}GiB", *cpu_bytes as f64 / (1u64 << 30) as f64)
            }
            OffloadConfig::LmCache(c) => {
                let mut parts = Vec::new();
                if let Some(b) = c.cpu_bytes {
                    parts.push(format!("cpu {:.0}GiB", b as f64 / (1u64 << 30) as f64));
                }
                if let Some(b) = c.disk_bytes {
                    parts.push(format!("disk {:.0}GiB", b as f64 / (1u64 << 30) as f64));
                }
                if let Some(r) = &c.remote {
                    parts.push(format!("remote {:?} {}ms", r.kind, r.rtt_s * 1e3));
                }
                format!("lmcache[{}] chunk {}", parts.join(" + "), c.chunk_size)
            }
        }
    }
}

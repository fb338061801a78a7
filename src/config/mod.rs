//! One run's configuration as a flat set of named keys.
//!
//! Every way a user states a configuration lands here through [`RunConfig::set`]: vLLM-style
//! flags, an existing `lmcache_config.yaml`, `LMCACHE_*` environment variables, `--set key=value`,
//! a `--config` file, a validation study's `set` entries and a sweep's grid. One vocabulary, one
//! meaning per key (see [`KEYS`]). Later settings override earlier ones.

pub mod yaml;

use crate::cost::{Fitted, GpuProfile, StepModel, TransferProfile};
use crate::engine::{EngineConfig, EngineFlags};
use crate::error::{Error, Result};
use crate::model::ModelCard;
use crate::sim::SimSetup;
use crate::tiers::OffloadConfig;
use crate::tiers::lmcache::{LmCacheConfig, RemoteConfig, RemoteKind, Serde};
use serde_json::{Map, Value};

/// Which offload tier a run uses (the study vocabulary's `tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// vLLM alone, its GPU prefix cache only.
    None,
    /// LMCache local CPU.
    Cpu,
    /// LMCache local disk behind the CPU tier.
    Disk,
    /// LMCache remote store (behind the CPU tier when `local_cpu` is on).
    Remote,
    /// vLLM's native CPU offload (`--kv-offloading-backend native`).
    Native,
}

/// The keys [`RunConfig::set`] accepts, with what they mean.
pub const KEYS: &[(&str, &str)] = &[
    (
        "model",
        "Hugging Face id with a shipped card, or a config.json path",
    ),
    (
        "gpu",
        "H100, A100, L40S, RTX4090, or a GPU profile JSON path",
    ),
    ("tp | tensor_parallel_size", "tensor-parallel ranks"),
    ("block_size", "vLLM KV block size in tokens (16)"),
    (
        "max_num_batched_tokens",
        "vLLM step token budget (by GPU: 8192 or 2048)",
    ),
    (
        "max_num_seqs",
        "vLLM running-request limit (by GPU: 1024 or 256)",
    ),
    ("max_model_len", "longest prompt + output (the model's)"),
    (
        "gpu_memory_utilization",
        "fraction of GPU memory vLLM may use (0.9)",
    ),
    ("num_gpu_blocks", "override the GPU KV block count"),
    (
        "enable_prefix_caching",
        "vLLM automatic prefix caching (true)",
    ),
    ("tier", "none | cpu | disk | remote | native"),
    ("chunk_size", "LMCache chunk size in tokens (256)"),
    (
        "save_unfull_chunk",
        "LMCache stores a trailing partial chunk (false)",
    ),
    ("local_cpu", "LMCache CPU tier on (true)"),
    (
        "max_local_cpu_size | max_local_cpu_size_gb | cpu_gb",
        "LMCache CPU tier GiB per TP rank (5)",
    ),
    ("local_disk", "LMCache disk tier on (a path or true)"),
    (
        "max_local_disk_size | max_local_disk_size_gb | disk_gb",
        "LMCache disk tier GiB (0)",
    ),
    (
        "remote_url",
        "LMCache remote store URL (redis://, lm://, mooncakestore://)",
    ),
    (
        "remote",
        "remote store kind: redis | lmcache_server | mooncake_tcp",
    ),
    ("rtt_ms", "round-trip time to the remote store, ms (0.1)"),
    ("remote_serde", "naive | cachegen"),
    ("remote_concurrency", "remote operations in flight (4)"),
    ("remote_size_gb", "remote store capacity in GiB (unbounded)"),
    (
        "enable_async_loading",
        "LMCache asynchronous prefetch (false)",
    ),
    ("use_layerwise", "LMCache layer-wise pipelining (false)"),
    (
        "save_decode_cache",
        "LMCache stores decode chunks too (false)",
    ),
    (
        "kv_offloading_size | kv_offloading_size_gb",
        "vLLM native offload CPU GiB (tier native)",
    ),
    (
        "transfer_profile",
        "transfer profile JSON written by `kvreplay calibrate`",
    ),
    (
        "qps_scale",
        "multiply open-loop arrival rates (divide arrival times) by this",
    ),
    (
        "kv_offloading_backend",
        "vLLM native offload: `native` sets tier native",
    ),
    (
        "request_overhead_ms",
        "server time per request before scheduling: HTTP, tokenization (0)",
    ),
    (
        "gpu_compute_efficiency",
        "override the GPU profile's fraction of peak FLOP/s",
    ),
    (
        "gpu_memory_efficiency",
        "override the GPU profile's fraction of HBM bandwidth",
    ),
    (
        "gpu_step_overhead_us",
        "override the GPU profile's fixed time per step",
    ),
    (
        "gpu_per_seq_overhead_us",
        "override the GPU profile's time per sequence per step",
    ),
    (
        "step_c0_s | step_c_prefill_s | step_c_decode_s | step_c_attn_s | step_c_ctx_s",
        "fitted step time (s): c0 + c_prefill x prefill tokens + c_decode x decoding sequences + c_attn x prefill attention pairs + c_ctx x decode context tokens; any of them replaces the roofline",
    ),
];

/// The LMCache settings an `lmcache_config.yaml` key or an `LMCACHE_*` variable may set (as
/// [`RunConfig::set`] keys); the others are LMCache settings kvreplay does not model.
const LMCACHE_FILE_KEYS: [&str; 11] = [
    "chunk_size",
    "local_cpu",
    "max_local_cpu_size",
    "local_disk",
    "max_local_disk_size",
    "remote_url",
    "remote_serde",
    "save_unfull_chunk",
    "enable_async_loading",
    "use_layerwise",
    "save_decode_cache",
];

/// A run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Model id or config path.
    pub model: String,
    /// GPU name or profile path.
    pub gpu: String,
    /// vLLM flags.
    pub engine: EngineFlags,
    /// Explicit tier; `None` infers it from the LMCache settings given.
    pub tier: Option<Tier>,
    /// LMCache keys as given (chunk_size, local_cpu, ...), before defaults.
    pub lmcache: Map<String, Value>,
    /// Round-trip time to the remote store, seconds.
    pub rtt_s: f64,
    /// Native offload CPU GiB.
    pub native_gib: f64,
    /// Transfer profile path.
    pub transfer_profile: Option<String>,
    /// Fitted step-time coefficients replacing the roofline.
    pub fitted: Option<Fitted>,
    /// Arrival-rate multiplier for open-loop traces.
    pub qps_scale: f64,
    /// GPU profile fields overridden by key (`gpu_compute_efficiency`, ...).
    pub gpu_overrides: Map<String, Value>,
    /// Server time per request before it reaches the scheduler, ms.
    pub request_overhead_ms: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: "meta-llama/Llama-3.1-8B".into(),
            gpu: "H100".into(),
            engine: EngineFlags::default(),
            tier: None,
            lmcache: Map::new(),
            rtt_s: 0.0001,
            native_gib: 5.0,
            transfer_profile: None,
            fitted: None,
            qps_scale: 1.0,
            gpu_overrides: Map::new(),
            request_overhead_ms: 0.0,
        }
    }
}

fn bad(key: &str, v: &Value, want: &str) -> Error {
    Error::Config(format!("{key}: expected {want}, found {v}"))
}

fn as_f64(key: &str, v: &Value) -> Result<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(bad(key, v, "a number")),
    }
}

fn as_pos_f64(key: &str, v: &Value) -> Result<f64> {
    let x = as_f64(key, v)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(bad(key, v, "a positive number"))
    }
}

fn as_nonneg_f64(key: &str, v: &Value) -> Result<f64> {
    let x = as_f64(key, v)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err(bad(key, v, "a number >= 0"))
    }
}

fn as_u32(key: &str, v: &Value) -> Result<u32> {
    let x = as_f64(key, v).map_err(|_| bad(key, v, "a positive integer"))?;
    if x >= 1.0 && x.fract() == 0.0 && x <= u32::MAX as f64 {
        Ok(x as u32)
    } else {
        Err(bad(key, v, "a positive integer"))
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad(key, v, "true or false")),
        },
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        _ => Err(bad(key, v, "true or false")),
    }
}

fn as_str<'a>(key: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str().ok_or_else(|| bad(key, v, "a string"))
}

/// A `key=value` argument's value: JSON when it parses (numbers, booleans, objects), else the
/// text itself.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl RunConfig {
    /// Sets one key (see [`KEYS`]); the error names the key and the value.
    pub fn set(&mut self, key: &str, v: &Value) -> Result<()> {
        let e = &mut self.engine;
        match key {
            "model" => self.model = as_str(key, v)?.to_string(),
            "gpu" => self.gpu = as_str(key, v)?.to_string(),
            "tp" | "tensor_parallel_size" => e.tensor_parallel_size = Some(as_u32(key, v)?),
            "block_size" => e.block_size = Some(as_u32(key, v)?),
            "max_num_batched_tokens" => e.max_num_batched_tokens = Some(as_u32(key, v)?),
            "max_num_seqs" => e.max_num_seqs = Some(as_u32(key, v)?),
            "max_model_len" => e.max_model_len = Some(as_u32(key, v)?),
            "gpu_memory_utilization" => e.gpu_memory_utilization = Some(as_pos_f64(key, v)?),
            "num_gpu_blocks" => e.num_gpu_blocks = Some(as_u32(key, v)?),
            "enable_prefix_caching" => e.enable_prefix_caching = Some(as_bool(key, v)?),
            "tier" => {
                self.tier = Some(match as_str(key, v)?.to_ascii_lowercase().as_str() {
                    "none" => Tier::None,
                    "cpu" => Tier::Cpu,
                    "disk" => Tier::Disk,
                    "remote" => Tier::Remote,
                    "native" => Tier::Native,
                    _ => return Err(bad(key, v, "none, cpu, disk, remote or native")),
                })
            }
            "chunk_size" => {
                self.lmcache
                    .insert("chunk_size".into(), Value::from(as_u32(key, v)?));
            }
            "save_unfull_chunk"
            | "local_cpu"
            | "enable_async_loading"
            | "use_layerwise"
            | "save_decode_cache" => {
                self.lmcache
                    .insert(key.into(), Value::Bool(as_bool(key, v)?));
            }
            "max_local_cpu_size" | "max_local_cpu_size_gb" | "cpu_gb" => {
                self.lmcache.insert(
                    "max_local_cpu_size".into(),
                    Value::from(as_nonneg_f64(key, v)?),
                );
            }
            "local_disk" => {
                // A path turns the tier on; false/null turns it off.
                let on = match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty() && s != "false" && s != "None",
                    other => as_bool(key, other)?,
                };
                self.lmcache.insert("local_disk".into(), Value::Bool(on));
            }
            "max_local_disk_size" | "max_local_disk_size_gb" | "disk_gb" => {
                self.lmcache.insert(
                    "max_local_disk_size".into(),
                    Value::from(as_nonneg_f64(key, v)?),
                );
            }
            "remote_url" => {
                let url = as_str(key, v)?;
                if RemoteKind::from_url(url).is_none() {
                    return Err(bad(key, v, "a redis://, lm:// or mooncakestore:// URL"));
                }
                self.lmcache
                    .insert("remote_url".into(), Value::String(url.into()));
            }
            "remote" => {
                let kind = match as_str(key, v)?.to_ascii_lowercase().as_str() {
                    "redis" => "redis://remote:6379",
                    "lmcache_server" | "lm" => "lm://remote:65432",
                    "mooncake_tcp" | "mooncake" => "mooncakestore://remote:50051",
                    _ => return Err(bad(key, v, "redis, lmcache_server or mooncake_tcp")),
                };
                self.lmcache
                    .insert("remote_url".into(), Value::String(kind.into()));
            }
            "rtt_ms" => self.rtt_s = as_nonneg_f64(key, v)? / 1e3,
            "remote_serde" => {
                let s = as_str(key, v)?.to_ascii_lowercase();
                if s != "naive" && s != "cachegen" {
                    return Err(bad(key, v, "naive or cachegen"));
                }
                self.lmcache.insert("remote_serde".into(), Value::String(s));
            }
            "remote_concurrency" => {
                self.lmcache
                    .insert(key.into(), Value::from(as_u32(key, v)?));
            }
            "remote_size_gb" => {
                self.lmcache
                    .insert(key.into(), Value::from(as_pos_f64(key, v)?));
            }
            "kv_offloading_size" | "kv_offloading_size_gb" => self.native_gib = as_pos_f64(key, v)?,
            "kv_offloading_backend" => {
                if as_str(key, v)? != "native" {
                    return Err(bad(key, v, "native"));
                }
                self.tier = Some(Tier::Native);
            }
            "transfer_profile" => self.transfer_profile = Some(as_str(key, v)?.to_string()),
            "qps_scale" => self.qps_scale = as_pos_f64(key, v)?,
            "request_overhead_ms" => self.request_overhead_ms = as_nonneg_f64(key, v)?,
            "gpu_compute_efficiency" | "gpu_memory_efficiency" => {
                let x = as_pos_f64(key, v)?;
                if x > 1.0 {
                    return Err(bad(key, v, "a fraction in (0, 1]"));
                }
                self.gpu_overrides.insert(key.into(), Value::from(x));
            }
            "gpu_step_overhead_us" | "gpu_per_seq_overhead_us" => {
                self.gpu_overrides
                    .insert(key.into(), Value::from(as_nonneg_f64(key, v)?));
            }
            "step_c0_s" | "step_c_prefill_s" | "step_c_decode_s" | "step_c_attn_s"
            | "step_c_ctx_s" => {
                let x = as_nonneg_f64(key, v)?;
                let f = self.fitted.get_or_insert(Fitted {
                    c0: 0.0,
                    c_prefill: 0.0,
                    c_decode: 0.0,
                    c_attn: 0.0,
                    c_ctx: 0.0,
                });
                match key {
                    "step_c0_s" => f.c0 = x,
                    "step_c_prefill_s" => f.c_prefill = x,
                    "step_c_decode_s" => f.c_decode = x,
                    "step_c_attn_s" => f.c_attn = x,
                    _ => f.c_ctx = x,
                }
            }
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(Error::Config(format!(
                    "unknown key {key:?} (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `key` is a configuration key (as opposed to, say, a workload parameter).
    pub fn is_key(key: &str) -> bool {
        KEYS.iter()
            .flat_map(|(k, _)| k.split(" | "))
            .any(|k| k == key)
    }

    /// Applies every key of a JSON object in order.
    pub fn set_all(&mut self, m: &Map<String, Value>) -> Result<()> {
        for (k, v) in m {
            self.set(k, v)?;
        }
        Ok(())
    }

    /// Applies an `lmcache_config.yaml`. Keys kvreplay does not model are listed in the return
    /// value so that the caller can say they were ignored.
    pub fn apply_lmcache_yaml(&mut self, text: &str, file: &str) -> Result<Vec<String>> {
        let m = yaml::parse(text, file)?;
        let mut ignored = Vec::new();
        for (k, v) in &m {
            if LMCACHE_FILE_KEYS.contains(&k.as_str()) {
                self.set(k, v)
                    .map_err(|e| Error::Config(format!("{file}: {e}")))?;
            } else {
                ignored.push(k.clone());
            }
        }
        Ok(ignored)
    }

    /// Applies `LMCACHE_*` variables (`LMCACHE_CHUNK_SIZE=512` sets `chunk_size`), as LMCache
    /// reads them when no config file is given.
    pub fn apply_lmcache_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>> {
        let mut used = Vec::new();
        let mut sorted: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("LMCACHE_") && k != "LMCACHE_CONFIG_FILE")
            .collect();
        sorted.sort();
        for (k, v) in sorted {
            let key = k["LMCACHE_".len()..].to_ascii_lowercase();
            if LMCACHE_FILE_KEYS.contains(&key.as_str()) {
                self.set(&key, &yaml::scalar(&v))
                    .map_err(|e| Error::Config(format!("{k}: {e}")))?;
                used.push(k);
            }
        }
        Ok(used)
    }

    /// The effective tier: explicit, or inferred from the LMCache keys given.
    pub fn effective_tier(&self) -> Tier {
        if let Some(t) = self.tier {
            return t;
        }
        if self.lmcache.is_empty() {
            return Tier::None;
        }
        if self.lmcache.contains_key("remote_url") {
            Tier::Remote
        } else if self.lmcache.get("local_disk") == Some(&Value::Bool(true)) {
            Tier::Disk
        } else {
            Tier::Cpu
        }
    }

    fn gib(&self, key: &str, default: f64) -> u64 {
        let g = self
            .lmcache
            .get(key)
            .and_then(Value::as_f64)
            .unwrap_or(default);
        (g * (1u64 << 30) as f64).round() as u64
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.lmcache
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// The offload connector this configuration describes.
    pub fn offload(&self) -> Result<OffloadConfig> {
        let tier = self.effective_tier();
        let chunk_size = self
            .lmcache
            .get("chunk_size")
            .and_then(Value::as_u64)
            .unwrap_or(256) as u32;
        let remote = || -> Result<RemoteConfig> {
            let url = self
                .lmcache
                .get("remote_url")
                .and_then(Value::as_str)
                .unwrap_or("redis://remote:6379");
            let kind = RemoteKind::from_url(url)
                .ok_or_else(|| Error::Config(format!("remote_url {url:?}: unknown scheme")))?;
            Ok(RemoteConfig {
                kind,
                rtt_s: self.rtt_s,
                concurrency: self
                    .lmcache
                    .get("remote_concurrency")
                    .and_then(Value::as_u64)
                    .unwrap_or(4) as u32,
                serde: match self.lmcache.get("remote_serde").and_then(Value::as_str) {
                    Some("cachegen") => Serde::CacheGen,
                    _ => Serde::Naive,
                },
                capacity_bytes: match self.lmcache.get("remote_size_gb").and_then(Value::as_f64) {
                    Some(g) => (g * (1u64 << 30) as f64) as u64,
                    None => u64::MAX,
                },
            })
        };
        let base = LmCacheConfig {
            chunk_size,
            save_unfull_chunk: self.flag("save_unfull_chunk", false),
            cpu_bytes: Some(self.gib("max_local_cpu_size", 5.0)),
            disk_bytes: None,
            disk_writers: 4,
            remote: None,
            enable_async_loading: self.flag("enable_async_loading", false),
            use_layerwise: self.flag("use_layerwise", false),
            save_decode_cache: self.flag("save_decode_cache", false),
        };
        Ok(match tier {
            Tier::None => OffloadConfig::None,
            Tier::Native => OffloadConfig::Native {
                cpu_bytes: (self.native_gib * (1u64 << 30) as f64) as u64,
            },
            Tier::Cpu => OffloadConfig::LmCache(base),
            Tier::Disk => {
                let disk = self.gib("max_local_disk_size", 0.0);
                if disk == 0 {
                    return Err(Error::Config(
                        "tier disk needs max_local_disk_size_gb > 0".into(),
                    ));
                }
                OffloadConfig::LmCache(LmCacheConfig {
                    disk_bytes: Some(disk),
                    ..base
                })
            }
            Tier::Remote => OffloadConfig::LmCache(LmCacheConfig {
                cpu_bytes: if self.flag("local_cpu", true) {
                    base.cpu_bytes
                } else {
                    None
                },
                disk_bytes: if self.flag("local_disk", false) {
                    Some(self.gib("max_local_disk_size", 0.0)).filter(|b| *b > 0)
                } else {
                    None
                },
                remote: Some(remote()?),
                ..base
            }),
        })
    }

    /// Resolves the model, GPU, engine, cost and offload into a simulation setup.
    pub fn setup(&self) -> Result<(SimSetup, ModelCard, GpuProfile)> {
        let card = crate::model::lookup(&self.model)?;
        let mut gpu = GpuProfile::lookup(&self.gpu)?;
        for (k, v) in &self.gpu_overrides {
            let x = v.as_f64().unwrap_or_default();
            match k.as_str() {
                "gpu_compute_efficiency" => gpu.compute_efficiency = x,
                "gpu_memory_efficiency" => gpu.memory_efficiency = x,
                "gpu_step_overhead_us" => gpu.step_overhead_us = x,
                _ => gpu.per_seq_overhead_us = x,
            }
        }
        if !self.gpu_overrides.is_empty() {
            gpu.provenance = format!(
                "{}; overridden: {}",
                gpu.provenance,
                self.gpu_overrides
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let engine = EngineConfig::resolve(&card, &gpu, &self.engine)?;
        let mut step_model = StepModel::roofline(&card, &gpu, engine.tp);
        step_model.fitted = self.fitted;
        let transfer = match &self.transfer_profile {
            Some(p) => TransferProfile::from_file(p, &gpu)?,
            None => TransferProfile::spec_defaults(&gpu),
        };
        let setup = SimSetup {
            engine,
            offload: self.offload()?,
            step_model,
            transfer,
            layers: card.layers,
            sample_interval_ns: 1_000_000_000,
            reference_mode: false,
            request_overhead_ns: (self.request_overhead_ms * 1e6).round() as u64,
        };
        Ok((setup, card, gpu))
    }

    /// The configuration as JSON, for reports (every key with its effective value).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "model": self.model,
            "gpu": self.gpu,
            "engine": self.engine,
            "tier": self.effective_tier(),
            "lmcache": self.lmcache,
            "rtt_ms": self.rtt_s * 1e3,
            "native_offload_gib": self.native_gib,
            "transfer_profile": self.transfer_profile,
            "fitted": self.fitted,
            "qps_scale": self.qps_scale,
            "gpu_overrides": self.gpu_overrides,
            "request_overhead_ms": self.request_overhead_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn study_keys_build_the_offload_they_name() {
        let mut c = RunConfig::default();
        assert_eq!(c.offload().unwrap(), OffloadConfig::None);
        c.set("tier", &json!("cpu")).unwrap();
        c.set("max_local_cpu_size_gb", &json!(66)).unwrap();
        c.set("chunk_size", &json!(512)).unwrap();
        let OffloadConfig::LmCache(l) = c.offload().unwrap() else {
            panic!()
        };
        assert_eq!((l.chunk_size, l.cpu_bytes), (512, Some(66u64 << 30)));
        // The RTT study: remote only, Redis, 30 ms.
        let mut c = RunConfig::default();
        c.set_all(json!({"chunk_size": 256, "local_cpu": false, "remote_url": "redis://redis:6379", "rtt_ms": 30}).as_object().unwrap()).unwrap();
        let OffloadConfig::LmCache(l) = c.offload().unwrap() else {
            panic!()
        };
        assert_eq!(l.cpu_bytes, None);
        let r = l.remote.unwrap();
        assert_eq!((r.kind, r.rtt_s), (RemoteKind::Redis, 0.030));
    }

    #[test]
    fn yaml_then_env_then_flags_each_override() {
        let mut c = RunConfig::default();
        let ignored = c
            .apply_lmcache_yaml(
                "chunk_size: 256\nmax_local_cpu_size: 20\nblocking_timeout_secs: 10\n",
                "l.yaml",
            )
            .unwrap();
        assert_eq!(ignored, vec!["blocking_timeout_secs".to_string()]);
        c.apply_lmcache_env([
            ("LMCACHE_CHUNK_SIZE".into(), "512".into()),
            ("PATH".into(), "/bin".into()),
        ])
        .unwrap();
        c.set("chunk_size", &parse_value("1024")).unwrap();
        let OffloadConfig::LmCache(l) = c.offload().unwrap() else {
            panic!()
        };
        assert_eq!((l.chunk_size, l.cpu_bytes), (1024, Some(20u64 << 30)));
    }

    #[test]
    fn every_listed_key_is_accepted_and_gpu_overrides_apply() {
        for (k, _) in KEYS {
            for key in k.split(" | ") {
                assert!(RunConfig::is_key(key), "{key}");
            }
        }
        assert!(!RunConfig::is_key("random_input_len"));
        let mut c = RunConfig::default();
        c.set("gpu_compute_efficiency", &json!(0.3)).unwrap();
        c.set("step_c0_s", &json!(0.02)).unwrap();
        let (setup, _, gpu) = c.setup().unwrap();
        assert_eq!(gpu.compute_efficiency, 0.3);
        assert!(
            gpu.provenance
                .contains("overridden: gpu_compute_efficiency=0.3")
        );
        assert_eq!(setup.step_model.fitted.unwrap().c0, 0.02);
        assert!(c.set("gpu_memory_efficiency", &json!(1.5)).is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = RunConfig::default();
        let e = c.set("chunk_size", &json!("big")).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid configuration: chunk_size: expected a positive integer, found \"big\""
        );
        assert!(
            c.set("tier", &json!("gpu"))
                .unwrap_err()
                .to_string()
                .contains("tier: expected none, cpu")
        );
        assert!(
            c.set("chunk_sise", &json!(1))
                .unwrap_err()
                .to_string()
                .contains("unknown key \"chunk_sise\"")
        );
        let e = c
            .apply_lmcache_env([("LMCACHE_CHUNK_SIZE".into(), "-3".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("LMCACHE_CHUNK_SIZE: "), "{e}");
        c.set("tier", &json!("disk")).unwrap();
        assert!(
            c.offload()
                .unwrap_err()
                .to_string()
                .contains("max_local_disk_size_gb")
        );
    }
}

//! One run's configuration, in typed sections whose defaults are written once.
//!
//! Every way a user states a configuration lands here through one key table ([`keys`]):
//! vLLM-style flags, an existing `lmcache_config.yaml`, `LMCACHE_*` environment variables,
//! `--set key=value`, a `--config` file, a validation study's `set` entries and a sweep's grid.
//! One vocabulary, one meaning per key. Later settings override earlier ones. Code inside
//! kvreplay sets the typed fields directly.

pub mod keys;
pub mod yaml;

use crate::cost::{Fitted, GpuProfile, StepModel, TransferProfile};
use crate::engine::{EngineConfig, EngineFlags};
use crate::error::{Error, InputError, Result};
use crate::model::ModelCard;
use crate::sim::SimSetup;
use crate::tiers::OffloadConfig;
use crate::tiers::lmcache::{LmCacheConfig, RemoteConfig, RemoteKind, Serde};
use crate::tiers::remote_client::Connections;
use crate::time::SimDuration;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use keys::KEYS;

/// Which offload tier a run uses (the study vocabulary's `tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// LMCache's settings as given (an `lmcache_config.yaml`'s keys); `None` keeps LMCache's
/// default ([`LmCacheConfig::default`], [`RemoteConfig::default`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LmCacheKeys {
    /// `chunk_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
    /// `local_cpu` (the remote tier's CPU tier in front).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_cpu: Option<bool>,
    /// `max_local_cpu_size`, GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_local_cpu_size: Option<f64>,
    /// `local_disk` (on when a path is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_disk: Option<bool>,
    /// `max_local_disk_size`, GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_local_disk_size: Option<f64>,
    /// `remote_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    /// `remote_serde`: `naive` or `cachegen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_serde: Option<String>,
    /// Remote operations in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_concurrency: Option<u32>,
    /// How the engine's remote operations share its connections: `serial` or `pool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_connections: Option<String>,
    /// The TCP window of one connection to the remote store, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_window_mib: Option<f64>,
    /// Remote store capacity, GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_size_gb: Option<f64>,
    /// `save_unfull_chunk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_unfull_chunk: Option<bool>,
    /// `enable_async_loading`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_async_loading: Option<bool>,
    /// `use_layerwise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_layerwise: Option<bool>,
    /// `save_decode_cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_decode_cache: Option<bool>,
}

impl LmCacheKeys {
    /// Whether no LMCache key was given.
    pub fn is_empty(&self) -> bool {
        *self == LmCacheKeys::default()
    }
}

/// GPU profile fields overridden by key; `None` keeps the profile's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuOverrides {
    /// Fraction of peak FLOP/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_compute_efficiency: Option<f64>,
    /// Fraction of HBM bandwidth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory_efficiency: Option<f64>,
    /// Fixed time per step, us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_step_overhead_us: Option<f64>,
    /// Time per sequence per step, us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_per_seq_overhead_us: Option<f64>,
}

impl GpuOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == GpuOverrides::default()
    }
}

/// Where step and transfer costs come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostKeys {
    /// A transfer profile written by `kvreplay calibrate` (else the GPU's spec defaults).
    pub transfer_profile: Option<String>,
    /// Fitted step-time coefficients replacing the roofline.
    pub fitted: Option<Fitted>,
    /// GPU profile fields overridden.
    pub gpu: GpuOverrides,
}

/// How the trace's requests reach the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrivalKeys {
    /// Arrival-rate multiplier for open-loop traces.
    pub qps_scale: f64,
    /// Server time per request before it reaches the scheduler, ms.
    pub request_overhead_ms: f64,
    /// Closed-loop clients' pause between a response and their next request (client-side work
    /// such as llmperf's result handling), ms, added to every pooled request's think time.
    #[serde(default)]
    pub client_gap_ms: f64,
}

impl Default for ArrivalKeys {
    fn default() -> Self {
        ArrivalKeys {
            qps_scale: 1.0,
            request_overhead_ms: 0.0,
            client_gap_ms: 0.0,
        }
    }
}

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
    /// LMCache keys as given.
    pub lmcache: LmCacheKeys,
    /// Round-trip time to the remote store, seconds.
    pub rtt_s: f64,
    /// Native offload CPU GiB.
    pub native_gib: f64,
    /// Cost sources.
    pub cost: CostKeys,
    /// Arrivals.
    pub arrivals: ArrivalKeys,
    /// Replicas and routing.
    pub fleet: crate::fleet::FleetConfig,
    /// A heterogeneous fleet's pools (empty: every replica runs this configuration).
    pub pools: Vec<PoolKeys>,
}

/// One pool of a heterogeneous fleet as given: its replicas, and the keys in which they differ
/// from the run's configuration (GPU, TP, engine flags, tiers, costs).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolKeys {
    /// Replicas in the pool.
    pub count: u32,
    /// Its keys, applied over the run's configuration.
    pub keys: Map<String, Value>,
}

impl PoolKeys {
    /// Its keys as `key=value` pairs (`as the fleet` without any).
    pub fn label(&self) -> String {
        if self.keys.is_empty() {
            return "as the fleet".into();
        }
        self.keys
            .iter()
            .map(|(k, v)| match v {
                Value::String(t) => format!("{k}={t}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: "meta-llama/Llama-3.1-8B".into(),
            gpu: "H100".into(),
            engine: EngineFlags::default(),
            tier: None,
            lmcache: LmCacheKeys::default(),
            rtt_s: RemoteConfig::default().rtt_s,
            native_gib: 5.0,
            cost: CostKeys::default(),
            arrivals: ArrivalKeys::default(),
            fleet: crate::fleet::FleetConfig::default(),
            pools: Vec::new(),
        }
    }
}

/// The keys of a `--config` or `--grid` file: JSON when the file is `.json` or starts with `{`
/// (a malformed one is a JSON error at its line and column), else YAML.
pub fn parse_key_file(text: &str, file: &str) -> Result<Map<String, Value>> {
    let body = text.trim_start_matches('\u{feff}');
    if file.ends_with(".json") || body.trim_start().starts_with('{') {
        return match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => {
                Err(
                    crate::error::InputError::new(file, 0, "", "expected a JSON object of keys")
                        .into(),
                )
            }
            Err(e) => Err(crate::error::InputError::new(
                file,
                e.line() as u64,
                "",
                format!("not valid JSON: {e}"),
            )
            .into()),
        };
    }
    Ok(yaml::parse(body, file)?)
}

/// A `key=value` argument's value: JSON when it parses (numbers, booleans, objects), else the
/// text itself.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn gib_bytes(g: f64) -> u64 {
    (g * (1u64 << 30) as f64).round() as u64
}

impl RunConfig {
    /// Sets one key (see [`keys::KEYS`]); the error names the key and the value, or for an
    /// unknown key the nearest known one.
    pub fn set(&mut self, key: &str, v: &Value) -> Result<()> {
        keys::set(self, key, v)
    }

    /// Whether `key` is a configuration key (as opposed to, say, a workload parameter).
    pub fn is_key(key: &str) -> bool {
        keys::find(key).is_some()
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
        let mut ignored = Vec::new();
        for e in yaml::entries(text, file)? {
            if keys::find(&e.key).is_some_and(|key| key.lmcache_file) {
                self.set(&e.key, &e.value).map_err(|err| match err {
                    // `key: message` from the key table, placed at the key's line.
                    Error::Config(m) => {
                        let prefix = format!("{}: ", e.key);
                        let msg = m.strip_prefix(&prefix).unwrap_or(&m);
                        InputError::new(file, e.line, &e.key, msg).into()
                    }
                    other => other,
                })?;
            } else {
                ignored.push(e.key);
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
            if keys::find(&key).is_some_and(|k| k.lmcache_file) {
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
        if self.lmcache.remote_url.is_some() {
            Tier::Remote
        } else if self.lmcache.local_disk == Some(true) {
            Tier::Disk
        } else {
            Tier::Cpu
        }
    }

    /// The offload connector this configuration describes.
    pub fn offload(&self) -> Result<OffloadConfig> {
        let k = &self.lmcache;
        let d = LmCacheConfig::default();
        let remote = || -> Result<RemoteConfig> {
            let rd = RemoteConfig::default();
            let url = k.remote_url.as_deref().unwrap_or(RemoteConfig::DEFAULT_URL);
            let kind = RemoteKind::from_url(url)
                .ok_or_else(|| Error::Config(format!("remote_url {url:?}: unknown scheme")))?;
            Ok(RemoteConfig {
                kind,
                rtt_s: self.rtt_s,
                concurrency: k.remote_concurrency.unwrap_or(rd.concurrency),
                serde: k
                    .remote_serde
                    .as_deref()
                    .and_then(Serde::from_name)
                    .unwrap_or(rd.serde),
                capacity_bytes: match k.remote_size_gb {
                    Some(g) => (g * (1u64 << 30) as f64) as u64,
                    None => rd.capacity_bytes,
                },
                shared: self.fleet.replicas > 1 && self.fleet.shared_store,
                replica_rtt_s: self.fleet.rtt_ms.iter().map(|ms| ms / 1e3).collect(),
                store_gbps: self.fleet.store_gbps,
                connections: k
                    .remote_connections
                    .as_deref()
                    .and_then(Connections::from_name)
                    .unwrap_or(kind.default_connections()),
                window_bytes: match k.remote_window_mib {
                    Some(m) => ((m * (1u64 << 20) as f64) as u64).max(1),
                    None => rd.window_bytes,
                },
            })
        };
        let base = LmCacheConfig {
            chunk_size: k.chunk_size.unwrap_or(d.chunk_size),
            save_unfull_chunk: k.save_unfull_chunk.unwrap_or(d.save_unfull_chunk),
            cpu_bytes: k.max_local_cpu_size.map(gib_bytes).or(d.cpu_bytes),
            disk_bytes: None,
            remote: None,
            enable_async_loading: k.enable_async_loading.unwrap_or(d.enable_async_loading),
            use_layerwise: k.use_layerwise.unwrap_or(d.use_layerwise),
            save_decode_cache: k.save_decode_cache.unwrap_or(d.save_decode_cache),
            ..d
        };
        let disk_bytes = || k.max_local_disk_size.map_or(0, gib_bytes);
        Ok(match self.effective_tier() {
            Tier::None => OffloadConfig::None,
            Tier::Native => OffloadConfig::Native {
                cpu_bytes: (self.native_gib * (1u64 << 30) as f64) as u64,
            },
            Tier::Cpu => OffloadConfig::LmCache(base),
            Tier::Disk => {
                let disk = disk_bytes();
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
                cpu_bytes: if k.local_cpu.unwrap_or(true) {
                    base.cpu_bytes
                } else {
                    None
                },
                disk_bytes: if k.local_disk.unwrap_or(false) {
                    Some(disk_bytes()).filter(|b| *b > 0)
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
        let kv_bytes = match &self.engine.kv_cache_dtype {
            Some(d) => crate::model::card::kv_cache_dtype_bytes(d).ok_or_else(|| {
                Error::Config(format!(
                    "kv_cache_dtype {d:?}: expected auto, fp8, fp8_e4m3 or fp8_e5m2"
                ))
            })?,
            None => None,
        };
        let card = crate::model::lookup(&self.model)?.with_kv_cache_dtype(kv_bytes);
        let mut gpu = GpuProfile::lookup(&self.gpu)?;
        let o = &self.cost.gpu;
        let set = |slot: &mut f64, x: Option<f64>| {
            if let Some(x) = x {
                *slot = x;
            }
        };
        set(&mut gpu.compute_efficiency, o.gpu_compute_efficiency);
        set(&mut gpu.memory_efficiency, o.gpu_memory_efficiency);
        set(&mut gpu.step_overhead_us, o.gpu_step_overhead_us);
        set(&mut gpu.per_seq_overhead_us, o.gpu_per_seq_overhead_us);
        if !o.is_empty() {
            let given = match serde_json::to_value(o) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            gpu.provenance = format!(
                "{}; overridden: {}",
                gpu.provenance,
                given
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let engine = EngineConfig::resolve(&card, &gpu, &self.engine)?;
        let mut step_model = StepModel::roofline(&card, &gpu, engine.tp);
        if self.engine.enable_expert_parallel == Some(true) {
            step_model = step_model.with_expert_parallel(&card, engine.tp);
        }
        step_model.fitted = self.cost.fitted;
        let transfer = match &self.cost.transfer_profile {
            Some(p) => TransferProfile::from_file(p, &gpu)?,
            None => TransferProfile::spec_defaults(&gpu),
        };
        if let Some(pd) = &self.fleet.pd
            && pd.prefill + pd.decode != self.fleet.replicas
        {
            return Err(Error::Config(format!(
                "replicas {} with pd_prefill {} and pd_decode {}: a disaggregated fleet's replicas are its prefill plus decode replicas (leave replicas out)",
                self.fleet.replicas, pd.prefill, pd.decode
            )));
        }
        let pools = self.pool_setups()?;
        let setup = SimSetup {
            engine,
            offload: self.offload()?,
            step_model,
            transfer,
            layers: card.layers,
            sample_interval: SimDuration::from_ns(1_000_000_000),
            reference_mode: false,
            request_overhead: SimDuration::from_ns(
                (self.arrivals.request_overhead_ms * 1e6).round() as u64,
            ),
            fleet: self.fleet.clone(),
            pools,
        };
        Ok((setup, card, gpu))
    }

    /// The pools of a heterogeneous fleet, each resolved as the run's configuration with its
    /// keys applied; an error names the pool and the key (a key of the fleet, the model or the
    /// arrivals is not a pool's).
    fn pool_setups(&self) -> Result<Vec<crate::sim::PoolSetup>> {
        let total: u32 = self.pools.iter().map(|p| p.count).sum();
        if !self.pools.is_empty() && total != self.fleet.replicas {
            return Err(Error::Config(format!(
                "pools hold {total} replicas, but replicas is {} (leave replicas out)",
                self.fleet.replicas
            )));
        }
        let mut out = Vec::with_capacity(self.pools.len());
        for (i, pool) in self.pools.iter().enumerate() {
            let mut c = self.clone();
            c.pools.clear();
            for (k, v) in &pool.keys {
                let before = c.clone();
                c.set(k, v).map_err(|e| match e {
                    Error::Config(m) => Error::Config(format!("pools[{i}]: {m}")),
                    other => Error::Config(format!("pools[{i}]: {other}")),
                })?;
                if c.model != before.model
                    || c.fleet != before.fleet
                    || c.arrivals != before.arrivals
                    || !c.pools.is_empty()
                {
                    return Err(Error::Config(format!(
                        "pools[{i}]: {k} is set for the whole fleet (model, routing, replicas, pools, arrivals), not per pool"
                    )));
                }
            }
            let (s, _, gpu) = c.setup().map_err(|e| {
                let msg = match e {
                    Error::Config(m) => m,
                    other => other.to_string(),
                };
                Error::Config(format!("pools[{i}] ({}): {msg}", pool.label()))
            })?;
            out.push(crate::sim::PoolSetup {
                label: pool.label(),
                count: pool.count,
                engine: s.engine,
                offload: s.offload,
                step_model: s.step_model,
                transfer: s.transfer,
                layers: s.layers,
                gpu_provenance: gpu.provenance,
            });
        }
        Ok(out)
    }

    /// The configuration as JSON, for reports (every key with its effective value).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "model": self.model,
            "gpu": self.gpu,
            "engine": self.engine,
            "tier": self.effective_tier(),
            "lmcache": self.lmcache,
            "rtt_ms": self.rtt_s * 1e3,
            "native_offload_gib": self.native_gib,
            "transfer_profile": self.cost.transfer_profile,
            "fitted": self.cost.fitted,
            "qps_scale": self.arrivals.qps_scale,
            "gpu_overrides": self.cost.gpu,
            "request_overhead_ms": self.arrivals.request_overhead_ms,
        });
        if self.arrivals.client_gap_ms > 0.0 {
            v["client_gap_ms"] = serde_json::json!(self.arrivals.client_gap_ms);
        }
        // A fleet's settings appear only for a fleet: one replica reads as it always has.
        if self.fleet.replicas > 1 {
            v["fleet"] = serde_json::to_value(&self.fleet).unwrap_or(Value::Null);
        }
        if !self.pools.is_empty() {
            v["pools"] = self
                .pools
                .iter()
                .map(|p| {
                    let mut m = p.keys.clone();
                    m.insert("count".into(), p.count.into());
                    Value::Object(m)
                })
                .collect();
        }
        v
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
    fn an_lmcache_config_with_a_byte_order_mark_or_a_flow_map_is_applied() {
        for text in [
            "\u{feff}chunk_size: 512\nlocal_cpu: true\n",
            "{chunk_size: 512, local_cpu: true}\n",
        ] {
            let mut c = RunConfig::default();
            let ignored = c.apply_lmcache_yaml(text, "l.yaml").unwrap();
            assert!(ignored.is_empty(), "{text:?}: {ignored:?}");
            assert_eq!(c.effective_tier(), Tier::Cpu, "{text:?}");
            let OffloadConfig::LmCache(l) = c.offload().unwrap() else {
                panic!()
            };
            assert_eq!(l.chunk_size, 512);
        }
    }

    #[test]
    fn a_bad_value_in_an_lmcache_config_names_its_line_and_key() {
        let e = RunConfig::default()
            .apply_lmcache_yaml("# c\nlocal_cpu: true\nchunk_size: big\n", "l.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "l.yaml:3: chunk_size: expected a positive integer, found \"big\""
        );
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
        // Every name of every key sets something: one of these values is accepted and changes
        // the configuration.
        let samples = [
            json!(true),
            json!(false),
            json!(2),
            json!(0.5),
            json!("cpu"),
            json!("redis"),
            json!("naive"),
            json!("native"),
            json!("redis://h:1"),
            json!("oracle"),
            json!("token_bucket"),
            json!("prefiller"),
            json!("whole"),
            json!("events"),
            json!("serial"),
            json!("fp8"),
            json!("x"),
            json!([{"count": 2, "gpu": "A100"}]),
        ];
        for key in KEYS {
            for name in key.names {
                assert!(RunConfig::is_key(name), "{name}");
                let changes = samples.iter().any(|v| {
                    let mut c = RunConfig::default();
                    c.set(name, v).is_ok() && c != RunConfig::default()
                });
                assert!(changes, "{name} sets nothing");
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

    /// Regression: a truncated `--config` JSON was read as YAML and reported as an unknown key.
    #[test]
    fn a_truncated_json_config_is_a_json_error_at_its_line() {
        let e = parse_key_file("{\n  \"tier\": \"cpu\",\n  \"chunk_size\": 25", "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.json:3: not valid JSON: EOF"), "{e}");
        // Without the extension, a leading brace says JSON too.
        let e = parse_key_file("{\"tier\": ", "c.conf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let m = parse_key_file("\u{feff}{\"tier\": \"cpu\"}", "c.json").unwrap();
        assert_eq!(m["tier"], json!("cpu"));
        assert!(parse_key_file("[1]", "c.json").is_err());
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

    #[test]
    fn a_fleet_shares_its_remote_store_with_rtts_per_replica() {
        let mut c = RunConfig::default();
        c.set("tier", &json!("remote")).unwrap();
        c.set("replica_rtt_ms", &json!("1;20")).unwrap();
        let remote = |c: &RunConfig| match c.offload().unwrap() {
            OffloadConfig::LmCache(l) => l.remote.unwrap(),
            o => panic!("{o:?}"),
        };
        // One replica has the store to itself (the single-engine run).
        assert!(!remote(&c).shared);
        c.set("replicas", &json!(4)).unwrap();
        let r = remote(&c);
        assert!(r.shared);
        assert_eq!(r.replica_rtt_s, [0.001, 0.020]);
        c.set("remote_shared", &json!(false)).unwrap();
        assert!(!remote(&c).shared);
        c.set("replica_rtt_ms", &json!([5, 7.5])).unwrap();
        assert_eq!(remote(&c).replica_rtt_s, [0.005, 0.0075]);
        for bad in [json!("1;x"), json!(""), json!([-1]), json!(true)] {
            let e = c.set("replica_rtt_ms", &bad).unwrap_err().to_string();
            assert!(
                e.contains("replica_rtt_ms") && e.contains("list of milliseconds"),
                "{e}"
            );
        }
    }

    #[test]
    fn admission_keys_make_a_token_bucket() {
        use crate::fleet::admission::Admission;
        let mut c = RunConfig::default();
        assert_eq!(c.fleet.admission, Admission::Always);
        c.set("admission", &json!("token_bucket")).unwrap();
        assert_eq!(c.fleet.admission, Admission::BUCKET);
        c.set("admission", &json!("always")).unwrap();
        c.set("admission_refill", &json!(50)).unwrap();
        let want = Admission::TokenBucket {
            capacity: 10_000.0,
            refill_per_s: 50.0,
        };
        assert_eq!(c.fleet.admission, want);
        // token_bucket keeps the bucket set so far.
        c.set("admission", &json!("token_bucket")).unwrap();
        assert_eq!(c.fleet.admission, want);
        let e = c.set("admission", &json!("gaie")).unwrap_err().to_string();
        assert!(e.contains("always or token_bucket"), "{e}");
        assert!(c.set("admission_capacity", &json!(0)).is_err());
    }

    #[test]
    fn pd_keys_shape_the_fleet_and_a_contradicting_replicas_is_an_error() {
        use crate::fleet::pd::FirstToken;
        let mut c = RunConfig::default();
        c.set("pd_prefill", &json!(2)).unwrap();
        c.set("pd_decode", &json!(6)).unwrap();
        c.set("pd_first_token", &json!("prefiller")).unwrap();
        c.set("pd_transfer", &json!("whole")).unwrap();
        assert_eq!(c.fleet.replicas, 8);
        let pd = c.fleet.pd.clone().unwrap();
        assert_eq!((pd.prefill, pd.decode), (2, 6));
        assert_eq!(pd.first_token, FirstToken::Prefiller);
        assert!(pd.whole_prompt);
        assert!(c.setup().is_ok());
        c.set("replicas", &json!(4)).unwrap();
        let e = c.setup().unwrap_err().to_string();
        assert!(
            e.contains("replicas 4 with pd_prefill 2 and pd_decode 6"),
            "{e}"
        );
        for (k, v) in [
            ("pd_first_token", json!("both")),
            ("pd_transfer", json!("half")),
            ("pd_transfer_gbps", json!(0)),
            ("pd_threshold", json!(-1)),
            ("pd_decode", json!(0)),
            ("pd_prefill", json!(5000)),
            ("replicas", json!(4_000_000_000u64)),
        ] {
            assert!(c.set(k, &v).is_err(), "{k}={v}");
        }
    }
}

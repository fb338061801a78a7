//! Flags shared by every command that simulates: vLLM's own flag names, LMCache's config keys as
//! flags, and the generic `--config FILE` / `--set KEY=VALUE`.

use anyhow::{Context, Result};
use clap::Args;
use kvreplay::config::{RunConfig, parse_value};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Engine and cache configuration flags.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Model: a Hugging Face id with a shipped card, or a config.json path.
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B")]
    pub model: String,
    /// GPU: a shipped profile (H100, H200, B200, A100, A40, A10G, L4, L40, L40S, RTX4090, MI300X)
    /// or a GPU profile JSON.
    #[arg(long, default_value = "H100")]
    pub gpu: String,
    /// vLLM --max-num-batched-tokens (default by GPU).
    #[arg(long)]
    pub max_num_batched_tokens: Option<u32>,
    /// vLLM --max-num-seqs (default by GPU).
    #[arg(long)]
    pub max_num_seqs: Option<u32>,
    /// vLLM --block-size.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// vLLM --kv-cache-dtype: auto, fp8, fp8_e4m3 or fp8_e5m2.
    #[arg(long)]
    pub kv_cache_dtype: Option<String>,
    /// vLLM --enable-expert-parallel (mixture-of-experts models under tensor parallelism).
    #[arg(long)]
    pub enable_expert_parallel: bool,
    /// vLLM --gpu-memory-utilization.
    #[arg(long)]
    pub gpu_memory_utilization: Option<f64>,
    /// vLLM --tensor-parallel-size.
    #[arg(long, visible_alias = "tp")]
    pub tensor_parallel_size: Option<u32>,
    /// vLLM --max-model-len.
    #[arg(long)]
    pub max_model_len: Option<u32>,
    /// vLLM --num-gpu-blocks-override.
    #[arg(long)]
    pub num_gpu_blocks_override: Option<u32>,
    /// vLLM --no-enable-prefix-caching.
    #[arg(long)]
    pub no_enable_prefix_caching: bool,
    /// vLLM --kv-offloading-backend (native).
    #[arg(long)]
    pub kv_offloading_backend: Option<String>,
    /// vLLM --kv-offloading-size in GiB.
    #[arg(long)]
    pub kv_offloading_size: Option<f64>,
    /// Offload tier: none, cpu, disk, remote, native (default: from the LMCache settings given).
    #[arg(long)]
    pub tier: Option<String>,
    /// LMCache chunk_size.
    #[arg(long)]
    pub chunk_size: Option<u32>,
    /// LMCache max_local_cpu_size in GiB (per TP rank).
    #[arg(long)]
    pub max_local_cpu_size: Option<f64>,
    /// LMCache max_local_disk_size in GiB.
    #[arg(long)]
    pub max_local_disk_size: Option<f64>,
    /// LMCache remote_url (redis://, lm://, mooncakestore://).
    #[arg(long)]
    pub remote_url: Option<String>,
    /// Round-trip time to the remote store in ms.
    #[arg(long)]
    pub rtt_ms: Option<f64>,
    /// LMCache remote_serde: naive or cachegen.
    #[arg(long)]
    pub remote_serde: Option<String>,
    /// LMCache save_unfull_chunk.
    #[arg(long)]
    pub save_unfull_chunk: bool,
    /// LMCache enable_async_loading.
    #[arg(long)]
    pub enable_async_loading: bool,
    /// LMCache use_layerwise.
    #[arg(long)]
    pub use_layerwise: bool,
    /// LMCache save_decode_cache.
    #[arg(long)]
    pub save_decode_cache: bool,
    /// An existing lmcache_config.yaml (default: $LMCACHE_CONFIG_FILE).
    #[arg(long)]
    pub lmcache_config: Option<PathBuf>,
    /// Transfer profile written by `kvreplay calibrate`.
    #[arg(long = "profile")]
    pub transfer_profile: Option<String>,
    /// Multiply open-loop arrival rates by this factor.
    #[arg(long)]
    pub qps_scale: Option<f64>,
    /// A JSON or YAML file of configuration keys (see `kvreplay keys`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set any configuration key (repeatable), e.g. --set tier=cpu --set chunk_size=512.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl SimArgs {
    /// Builds the run configuration. Order (later wins): defaults, lmcache_config.yaml,
    /// LMCACHE_* environment, --config file, explicit flags, --set.
    pub fn run_config(&self) -> Result<(RunConfig, Vec<String>)> {
        let mut notes = Vec::new();
        let mut c = RunConfig::default();
        let yaml_path = self
            .lmcache_config
            .clone()
            .or_else(|| std::env::var_os("LMCACHE_CONFIG_FILE").map(PathBuf::from));
        if let Some(p) = yaml_path {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let ignored = c.apply_lmcache_yaml(&text, &p.display().to_string())?;
            if !ignored.is_empty() {
                notes.push(format!(
                    "{}: keys not modelled, ignored: {}",
                    p.display(),
                    ignored.join(", ")
                ));
            }
        }
        let used = c.apply_lmcache_env(std::env::vars())?;
        if !used.is_empty() {
            notes.push(format!("from the environment: {}", used.join(", ")));
        }
        if let Some(p) = &self.config {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let name = p.display().to_string();
            let map = kvreplay::config::parse_key_file(&text, &name)?;
            c.set_all(&map).with_context(|| format!("in {name}"))?;
        }
        let mut flags: Vec<(&str, Value)> =
            vec![("model", json!(self.model)), ("gpu", json!(self.gpu))];
        let mut opt = |k: &'static str, v: Option<Value>| {
            if let Some(v) = v {
                flags.push((k, v));
            }
        };
        opt(
            "max_num_batched_tokens",
            self.max_num_batched_tokens.map(Value::from),
        );
        opt("max_num_seqs", self.max_num_seqs.map(Value::from));
        opt("block_size", self.block_size.map(Value::from));
        opt(
            "kv_cache_dtype",
            self.kv_cache_dtype.clone().map(Value::from),
        );
        opt(
            "enable_expert_parallel",
            self.enable_expert_parallel.then_some(json!(true)),
        );
        opt(
            "gpu_memory_utilization",
            self.gpu_memory_utilization.map(Value::from),
        );
        opt("tp", self.tensor_parallel_size.map(Value::from));
        opt("max_model_len", self.max_model_len.map(Value::from));
        opt(
            "num_gpu_blocks",
            self.num_gpu_blocks_override.map(Value::from),
        );
        opt(
            "enable_prefix_caching",
            self.no_enable_prefix_caching.then_some(json!(false)),
        );
        opt(
            "kv_offloading_backend",
            self.kv_offloading_backend.clone().map(Value::from),
        );
        opt(
            "kv_offloading_size",
            self.kv_offloading_size.map(Value::from),
        );
        opt("tier", self.tier.clone().map(Value::from));
        opt("chunk_size", self.chunk_size.map(Value::from));
        opt(
            "max_local_cpu_size",
            self.max_local_cpu_size.map(Value::from),
        );
        opt(
            "max_local_disk_size",
            self.max_local_disk_size.map(Value::from),
        );
        opt("remote_url", self.remote_url.clone().map(Value::from));
        opt("rtt_ms", self.rtt_ms.map(Value::from));
        opt("remote_serde", self.remote_serde.clone().map(Value::from));
        opt(
            "save_unfull_chunk",
            self.save_unfull_chunk.then_some(json!(true)),
        );
        opt(
            "enable_async_loading",
            self.enable_async_loading.then_some(json!(true)),
        );
        opt("use_layerwise", self.use_layerwise.then_some(json!(true)));
        opt(
            "save_decode_cache",
            self.save_decode_cache.then_some(json!(true)),
        );
        opt(
            "transfer_profile",
            self.transfer_profile.clone().map(Value::from),
        );
        opt("qps_scale", self.qps_scale.map(Value::from));
        for (k, v) in flags {
            c.set(k, &v).with_context(|| flag_of(k))?;
        }
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            c.set(k.trim(), &parse_value(v.trim()))
                .with_context(|| format!("--set {kv}"))?;
        }
        Ok((c, notes))
    }
}

/// The command-line flag that sets configuration key `key` (for error messages).
fn flag_of(key: &str) -> String {
    match key {
        "tp" => "--tensor-parallel-size".into(),
        "num_gpu_blocks" => "--num-gpu-blocks-override".into(),
        "enable_prefix_caching" => "--no-enable-prefix-caching".into(),
        "transfer_profile" => "--profile".into(),
        k => format!("--{}", k.replace('_', "-")),
    }
}

//! The one table of configuration keys: every way a user names a setting (`--set`, `--config`,
//! `lmcache_config.yaml`, `LMCACHE_*`, a study's `set`, a sweep's grid, the vLLM- and
//! LMCache-named flags) goes through [`set`] into the typed fields of [`RunConfig`], and
//! `kvreplay keys` prints this table.

use super::{RunConfig, Tier};
use crate::cost::Fitted;
use crate::engine::config::{DEFAULT_BLOCK_SIZE, DEFAULT_GPU_MEMORY_UTILIZATION};
use crate::error::{Error, Result};
use crate::fleet::RouterKind;
use crate::tiers::lmcache::{LmCacheConfig, RemoteConfig, RemoteKind, Serde};
use crate::tiers::remote_client::{Connections, DEFAULT_WINDOW_BYTES};
use serde_json::Value;

/// What a value must be, when it is not (the error says "expected {it}").
type Want = &'static str;

/// One configuration key.
pub struct Key {
    /// Its name, then its aliases.
    pub names: &'static [&'static str],
    /// What it sets.
    pub help: &'static str,
    /// Its default, read from the types that hold it (so it is written once).
    pub default: fn() -> String,
    /// Whether an `lmcache_config.yaml` or an `LMCACHE_*` variable may set it.
    pub lmcache_file: bool,
    /// Sets it from a value.
    set: fn(&mut RunConfig, &Value) -> std::result::Result<(), Want>,
}

/// Keys whose value is a list of mappings (every other key takes a scalar or a list of them).
pub const STRUCTURED: [&str; 1] = ["pools"];

fn f64_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

fn pos(v: &Value) -> std::result::Result<f64, Want> {
    f64_of(v).filter(|x| *x > 0.0).ok_or("a positive number")
}

fn nonneg(v: &Value) -> std::result::Result<f64, Want> {
    f64_of(v).filter(|x| *x >= 0.0).ok_or("a number >= 0")
}

fn fraction(v: &Value) -> std::result::Result<f64, Want> {
    f64_of(v)
        .filter(|x| *x > 0.0 && *x <= 1.0)
        .ok_or("a fraction in (0, 1]")
}

fn count(v: &Value) -> std::result::Result<u32, Want> {
    f64_of(v)
        .filter(|x| *x >= 1.0 && x.fract() == 0.0 && *x <= u32::MAX as f64)
        .map(|x| x as u32)
        .ok_or("a positive integer")
}

/// A count of replicas, 1 to [`crate::fleet::MAX_REPLICAS`].
fn replicas(v: &Value) -> std::result::Result<u32, Want> {
    count(v)
        .ok()
        .filter(|n| *n <= crate::fleet::MAX_REPLICAS)
        .ok_or("an integer from 1 to 4096")
}

fn boolean(v: &Value) -> std::result::Result<bool, Want> {
    const WANT: Want = "true or false";
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(WANT),
        },
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        _ => Err(WANT),
    }
}

fn text(v: &Value) -> std::result::Result<&str, Want> {
    v.as_str().ok_or("a string")
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "off".to_string(),
        |b| format!("{}", b as f64 / (1u64 << 30) as f64),
    )
}

/// The token bucket `c` has (BLIS's defaults when admission is `always`), with `capacity` or
/// `refill` replaced.
fn bucket(
    c: &RunConfig,
    capacity: Option<f64>,
    refill: Option<f64>,
) -> crate::fleet::admission::Admission {
    use crate::fleet::admission::Admission;
    let (cap0, refill0) = c.fleet.admission.bucket();
    Admission::TokenBucket {
        capacity: capacity.unwrap_or(cap0),
        refill_per_s: refill.unwrap_or(refill0),
    }
}

/// The disaggregated fleet `c` describes, one prefill and one decode replica when none yet.
fn pd(c: &mut RunConfig) -> &mut crate::fleet::pd::PdConfig {
    c.fleet.pd.get_or_insert_with(Default::default)
}

fn fitted(c: &mut RunConfig) -> &mut Fitted {
    c.cost.fitted.get_or_insert(Fitted {
        c0: 0.0,
        c_prefill: 0.0,
        c_decode: 0.0,
        c_attn: 0.0,
        c_ctx: 0.0,
    })
}

macro_rules! key {
    ([$($name:literal),+], $help:literal, $default:expr, $file:literal, $set:expr) => {
        Key {
            names: &[$($name),+],
            help: $help,
            default: $default,
            lmcache_file: $file,
            set: $set,
        }
    };
}

/// Every key, in the order `kvreplay keys` lists them.
pub static KEYS: &[Key] = &[
    key!(
        ["model"],
        "Hugging Face id with a shipped card, or a config.json path",
        || RunConfig::default().model,
        false,
        |c, v| {
            c.model = text(v)?.to_string();
            Ok(())
        }
    ),
    key!(
        ["gpu"],
        "a shipped GPU (H100, H200, B200, A100, A40, A10G, L4, L40, L40S, RTX4090, MI300X) or a GPU profile JSON path",
        || RunConfig::default().gpu,
        false,
        |c, v| {
            c.gpu = text(v)?.to_string();
            Ok(())
        }
    ),
    key!(
        ["tp", "tensor_parallel_size"],
        "tensor-parallel ranks",
        || "1".into(),
        false,
        |c, v| {
            c.engine.tensor_parallel_size = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["kv_cache_dtype"],
        "vLLM KV-cache element type: auto | fp8 | fp8_e4m3 | fp8_e5m2",
        || "auto".into(),
        false,
        |c, v| {
            const WANT: Want = "auto, fp8, fp8_e4m3 or fp8_e5m2";
            let s = text(v).map_err(|_| WANT)?.to_ascii_lowercase();
            crate::model::card::kv_cache_dtype_bytes(&s).ok_or(WANT)?;
            c.engine.kv_cache_dtype = Some(s);
            Ok(())
        }
    ),
    key!(
        ["enable_expert_parallel"],
        "vLLM expert parallelism: whole experts per rank, an all-to-all per MoE layer",
        || "false".into(),
        false,
        |c, v| {
            c.engine.enable_expert_parallel = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["block_size"],
        "vLLM KV block size in tokens",
        || DEFAULT_BLOCK_SIZE.to_string(),
        false,
        |c, v| {
            c.engine.block_size = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["max_num_batched_tokens"],
        "vLLM step token budget",
        || "by GPU: 8192 or 2048".into(),
        false,
        |c, v| {
            c.engine.max_num_batched_tokens = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["max_num_seqs"],
        "vLLM running-request limit",
        || "by GPU: 1024 or 256".into(),
        false,
        |c, v| {
            c.engine.max_num_seqs = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["max_model_len"],
        "longest prompt + output",
        || "the model's".into(),
        false,
        |c, v| {
            c.engine.max_model_len = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["gpu_memory_utilization"],
        "fraction of GPU memory vLLM may use",
        || DEFAULT_GPU_MEMORY_UTILIZATION.to_string(),
        false,
        |c, v| {
            c.engine.gpu_memory_utilization = Some(pos(v)?);
            Ok(())
        }
    ),
    key!(
        ["num_gpu_blocks"],
        "override the GPU KV block count",
        || "from memory".into(),
        false,
        |c, v| {
            c.engine.num_gpu_blocks = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["enable_prefix_caching"],
        "vLLM automatic prefix caching",
        || "true".into(),
        false,
        |c, v| {
            c.engine.enable_prefix_caching = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["tier"],
        "none | cpu | disk | remote | native",
        || "from the LMCache keys given, else none".into(),
        false,
        |c, v| {
            const WANT: Want = "none, cpu, disk, remote or native";
            c.tier = Some(
                match text(v).map_err(|_| WANT)?.to_ascii_lowercase().as_str() {
                    "none" => Tier::None,
                    "cpu" => Tier::Cpu,
                    "disk" => Tier::Disk,
                    "remote" => Tier::Remote,
                    "native" => Tier::Native,
                    _ => return Err(WANT),
                },
            );
            Ok(())
        }
    ),
    key!(
        ["chunk_size"],
        "LMCache chunk size in tokens",
        || LmCacheConfig::default().chunk_size.to_string(),
        true,
        |c, v| {
            c.lmcache.chunk_size = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["save_unfull_chunk"],
        "LMCache stores a trailing partial chunk",
        || LmCacheConfig::default().save_unfull_chunk.to_string(),
        true,
        |c, v| {
            c.lmcache.save_unfull_chunk = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["local_cpu"],
        "LMCache CPU tier on (tier remote)",
        || "true".into(),
        true,
        |c, v| {
            c.lmcache.local_cpu = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["max_local_cpu_size", "max_local_cpu_size_gb", "cpu_gb"],
        "LMCache CPU tier GiB per TP rank",
        || gib(LmCacheConfig::default().cpu_bytes),
        true,
        |c, v| {
            c.lmcache.max_local_cpu_size = Some(nonneg(v)?);
            Ok(())
        }
    ),
    key!(
        ["local_disk"],
        "LMCache disk tier on (a path or true)",
        || "false".into(),
        true,
        |c, v| {
            // A path turns the tier on; false/null turns it off.
            let on = match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty() && s != "false" && s != "None",
                other => boolean(other)?,
            };
            c.lmcache.local_disk = Some(on);
            Ok(())
        }
    ),
    key!(
        ["max_local_disk_size", "max_local_disk_size_gb", "disk_gb"],
        "LMCache disk tier GiB",
        || gib(LmCacheConfig::default().disk_bytes),
        true,
        |c, v| {
            c.lmcache.max_local_disk_size = Some(nonneg(v)?);
            Ok(())
        }
    ),
    key!(
        ["remote_url"],
        "LMCache remote store URL (redis://, lm://, mooncakestore://)",
        || RemoteConfig::DEFAULT_URL.into(),
        true,
        |c, v| {
            const WANT: Want = "a redis://, lm:// or mooncakestore:// URL";
            let url = text(v).map_err(|_| WANT)?;
            RemoteKind::from_url(url).ok_or(WANT)?;
            c.lmcache.remote_url = Some(url.into());
            Ok(())
        }
    ),
    key!(
        ["remote"],
        "remote store kind: redis | lmcache_server | mooncake_tcp",
        || "redis".into(),
        false,
        |c, v| {
            const WANT: Want = "redis, lmcache_server or mooncake_tcp";
            let url = match text(v).map_err(|_| WANT)?.to_ascii_lowercase().as_str() {
                "redis" => "redis://remote:6379",
                "lmcache_server" | "lm" => "lm://remote:65432",
                "mooncake_tcp" | "mooncake" => "mooncakestore://remote:50051",
                _ => return Err(WANT),
            };
            c.lmcache.remote_url = Some(url.into());
            Ok(())
        }
    ),
    key!(
        ["rtt_ms"],
        "round-trip time to the remote store, ms",
        || format!("{}", RemoteConfig::default().rtt_s * 1e3),
        false,
        |c, v| {
            c.rtt_s = nonneg(v)? / 1e3;
            Ok(())
        }
    ),
    key!(
        ["remote_serde"],
        "naive | cachegen",
        || "naive".into(),
        true,
        |c, v| {
            const WANT: Want = "naive or cachegen";
            let s = text(v).map_err(|_| WANT)?.to_ascii_lowercase();
            Serde::from_name(&s).ok_or(WANT)?;
            c.lmcache.remote_serde = Some(s);
            Ok(())
        }
    ),
    key!(
        ["remote_concurrency"],
        "remote operations in flight",
        || RemoteConfig::default().concurrency.to_string(),
        false,
        |c, v| {
            c.lmcache.remote_concurrency = Some(count(v)?);
            Ok(())
        }
    ),
    key!(
        ["remote_connections"],
        "serial (one connection, operations in order: lm://) | pool (remote_concurrency at once, lookups before queued puts: redis, mooncake)",
        || "by store: serial for lmcache_server, pool otherwise".into(),
        false,
        |c, v| {
            const WANT: Want = "serial or pool";
            let s = text(v).map_err(|_| WANT)?.to_ascii_lowercase();
            Connections::from_name(&s).ok_or(WANT)?;
            c.lmcache.remote_connections = Some(s);
            Ok(())
        }
    ),
    key!(
        ["remote_window_mib"],
        "TCP window of one connection to the remote store, MiB (a stream moves one window per round trip)",
        || format!("{}", DEFAULT_WINDOW_BYTES as f64 / (1u64 << 20) as f64),
        false,
        |c, v| {
            c.lmcache.remote_window_mib = Some(pos(v)?);
            Ok(())
        }
    ),
    key!(
        ["remote_size_gb"],
        "remote store capacity in GiB",
        || "unbounded".into(),
        false,
        |c, v| {
            c.lmcache.remote_size_gb = Some(pos(v)?);
            Ok(())
        }
    ),
    key!(
        ["enable_async_loading"],
        "LMCache asynchronous prefetch",
        || LmCacheConfig::default().enable_async_loading.to_string(),
        true,
        |c, v| {
            c.lmcache.enable_async_loading = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["use_layerwise"],
        "LMCache layer-wise pipelining",
        || LmCacheConfig::default().use_layerwise.to_string(),
        true,
        |c, v| {
            c.lmcache.use_layerwise = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["save_decode_cache"],
        "LMCache stores decode chunks too",
        || LmCacheConfig::default().save_decode_cache.to_string(),
        true,
        |c, v| {
            c.lmcache.save_decode_cache = Some(boolean(v)?);
            Ok(())
        }
    ),
    key!(
        ["kv_offloading_size", "kv_offloading_size_gb"],
        "vLLM native offload CPU GiB (tier native)",
        || RunConfig::default().native_gib.to_string(),
        false,
        |c, v| {
            c.native_gib = pos(v)?;
            Ok(())
        }
    ),
    key!(
        ["kv_offloading_backend"],
        "vLLM native offload: `native` sets tier native",
        || "-".into(),
        false,
        |c, v| {
            if text(v).map_err(|_| "native")? != "native" {
                return Err("native");
            }
            c.tier = Some(Tier::Native);
            Ok(())
        }
    ),
    key!(
        ["transfer_profile"],
        "transfer profile JSON written by `kvreplay calibrate`",
        || "spec defaults of the GPU".into(),
        false,
        |c, v| {
            c.cost.transfer_profile = Some(text(v)?.to_string());
            Ok(())
        }
    ),
    key!(
        ["qps_scale"],
        "multiply open-loop arrival rates (divide arrival times) by this",
        || RunConfig::default().arrivals.qps_scale.to_string(),
        false,
        |c, v| {
            c.arrivals.qps_scale = pos(v)?;
            Ok(())
        }
    ),
    key!(
        ["request_overhead_ms"],
        "server time per request before scheduling: HTTP, tokenization",
        || RunConfig::default()
            .arrivals
            .request_overhead_ms
            .to_string(),
        false,
        |c, v| {
            c.arrivals.request_overhead_ms = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["client_gap_ms"],
        "closed-loop clients' pause between a response and their next request (client-side work), ms",
        || RunConfig::default().arrivals.client_gap_ms.to_string(),
        false,
        |c, v| {
            c.arrivals.client_gap_ms = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["gpu_compute_efficiency"],
        "override the GPU profile's fraction of peak FLOP/s",
        || "the profile's".into(),
        false,
        |c, v| {
            c.cost.gpu.gpu_compute_efficiency = Some(fraction(v)?);
            Ok(())
        }
    ),
    key!(
        ["gpu_memory_efficiency"],
        "override the GPU profile's fraction of HBM bandwidth",
        || "the profile's".into(),
        false,
        |c, v| {
            c.cost.gpu.gpu_memory_efficiency = Some(fraction(v)?);
            Ok(())
        }
    ),
    key!(
        ["gpu_step_overhead_us"],
        "override the GPU profile's fixed time per step",
        || "the profile's".into(),
        false,
        |c, v| {
            c.cost.gpu.gpu_step_overhead_us = Some(nonneg(v)?);
            Ok(())
        }
    ),
    key!(
        ["gpu_per_seq_overhead_us"],
        "override the GPU profile's time per sequence per step",
        || "the profile's".into(),
        false,
        |c, v| {
            c.cost.gpu.gpu_per_seq_overhead_us = Some(nonneg(v)?);
            Ok(())
        }
    ),
    key!(
        ["replicas"],
        "vLLM replicas behind the router, each with its own GPU and local tiers",
        || RunConfig::default().fleet.replicas.to_string(),
        false,
        |c, v| {
            c.fleet.replicas = replicas(v)?;
            Ok(())
        }
    ),
    key!(
        ["pools"],
        "a heterogeneous fleet: a list of pools, each {count: N, key: value, ...} with the keys its replicas differ in (gpu, tp, engine flags, tiers, costs); sets replicas to their sum",
        || "none".into(),
        false,
        |c, v| {
            const WANT: Want = "a list of {count: N, key: value, ...}";
            let Value::Array(items) = v else {
                return Err(WANT);
            };
            let mut pools = Vec::with_capacity(items.len());
            for item in items {
                let Value::Object(m) = item else {
                    return Err(WANT);
                };
                let count = replicas(m.get("count").ok_or(WANT)?)?;
                let mut keys = m.clone();
                keys.remove("count");
                pools.push(super::PoolKeys { count, keys });
            }
            if pools.is_empty() {
                return Err(WANT);
            }
            let total: u64 = pools.iter().map(|p| p.count as u64).sum();
            c.fleet.replicas = replicas(&Value::from(total))?;
            c.pools = pools;
            Ok(())
        }
    ),
    key!(
        ["router"],
        "round_robin | vllm_dp | vllm_dp_classic | session | llm_d | oracle | dynamo | kvaware",
        || RunConfig::default().fleet.router.name().into(),
        false,
        |c, v| {
            const WANT: Want =
                "round_robin, vllm_dp, vllm_dp_classic, session, llm_d, oracle, dynamo or kvaware";
            c.fleet.router = RouterKind::from_name(text(v).map_err(|_| WANT)?).ok_or(WANT)?;
            Ok(())
        }
    ),
    key!(
        ["router_refresh_ms"],
        "how often the router's load signals refresh, ms (0: always current)",
        || RunConfig::default().fleet.refresh_ms.to_string(),
        false,
        |c, v| {
            c.fleet.refresh_ms = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_prefix_weight"],
        "llm_d: prefix-cache scorer weight",
        || RunConfig::default().fleet.weights.prefix.to_string(),
        false,
        |c, v| {
            c.fleet.weights.prefix = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_queue_weight"],
        "llm_d: queue scorer weight",
        || RunConfig::default().fleet.weights.queue.to_string(),
        false,
        |c, v| {
            c.fleet.weights.queue = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_kv_weight"],
        "llm_d: KV-utilisation scorer weight",
        || RunConfig::default().fleet.weights.kv.to_string(),
        false,
        |c, v| {
            c.fleet.weights.kv = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_lru_blocks"],
        "llm_d: blocks per replica in the router's prefix index",
        || RunConfig::default().fleet.lru_blocks.to_string(),
        false,
        |c, v| {
            c.fleet.lru_blocks = count(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_block_size"],
        "llm_d: tokens per block of the router's prefix hashes",
        || RunConfig::default().fleet.block_tokens.to_string(),
        false,
        |c, v| {
            c.fleet.block_tokens = count(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_seed"],
        "seed of the router's random tie-breaks",
        || RunConfig::default().fleet.seed.to_string(),
        false,
        |c, v| {
            c.fleet.seed = f64_of(v)
                .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 1.8e19)
                .ok_or("an integer >= 0")? as u64;
            Ok(())
        }
    ),
    key!(
        ["router_cache_view"],
        "where llm_d / dynamo learn what replicas cache: decisions (their own routing) | events (the engines' KV events, router_events_delay_ms late) | nothing (default: llm_d decisions, dynamo events)",
        || "router's own".into(),
        false,
        |c, v| {
            use crate::fleet::CacheView;
            c.fleet.cache_view = Some(match text(v)? {
                "decisions" => CacheView::Decisions,
                "events" => CacheView::Events,
                "nothing" => CacheView::Nothing,
                _ => return Err("decisions, events or nothing"),
            });
            Ok(())
        }
    ),
    key!(
        ["router_events_delay_ms"],
        "with router_cache_view=events: how long the engines' KV events take to reach the router after the step that made them, ms (0: it sees every cache as it is); with router=kvaware: how long LMCache's admit messages take to reach its controller",
        || RunConfig::default().fleet.events_delay_ms.to_string(),
        false,
        |c, v| {
            c.fleet.events_delay_ms = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["kv_aware_threshold"],
        "kvaware: prompt tokens the controller's instance may lack and still be chosen",
        || RunConfig::default().fleet.kv_aware_threshold.to_string(),
        false,
        |c, v| {
            c.fleet.kv_aware_threshold = f64_of(v)
                .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64)
                .ok_or("an integer >= 0")? as u32;
            Ok(())
        }
    ),
    key!(
        ["router_ttl_s"],
        "how long a decision-index entry lives after the routing that sent it, s (0: until the LRU evicts it; default: dynamo 120, llm_d 0)",
        || "router's own".into(),
        false,
        |c, v| {
            c.fleet.ttl_s = Some(nonneg(v)?);
            Ok(())
        }
    ),
    key!(
        ["router_overlap_weight"],
        "dynamo: weight of prefill blocks against decode blocks (0: load alone)",
        || RunConfig::default().fleet.overlap_weight.to_string(),
        false,
        |c, v| {
            c.fleet.overlap_weight = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["router_temperature"],
        "dynamo: softmax temperature of the replica choice (0: the lowest cost)",
        || RunConfig::default().fleet.temperature.to_string(),
        false,
        |c, v| {
            c.fleet.temperature = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["admission"],
        "admission in front of the router: always | token_bucket (prompt tokens from a bucket)",
        || "always".into(),
        false,
        |c, v| {
            use crate::fleet::admission::Admission;
            c.fleet.admission = match text(v)? {
                "always" => Admission::Always,
                "token_bucket" => match c.fleet.admission {
                    Admission::Always => Admission::BUCKET,
                    bucket => bucket,
                },
                _ => return Err("always or token_bucket"),
            };
            Ok(())
        }
    ),
    key!(
        ["admission_capacity"],
        "token bucket: prompt tokens it holds at most (setting it turns the bucket on)",
        || "10000".into(),
        false,
        |c, v| {
            let cap = pos(v)?;
            c.fleet.admission = bucket(c, Some(cap), None);
            Ok(())
        }
    ),
    key!(
        ["admission_refill"],
        "token bucket: prompt tokens added per second (setting it turns the bucket on)",
        || "1000".into(),
        false,
        |c, v| {
            let rate = nonneg(v)?;
            c.fleet.admission = bucket(c, None, Some(rate));
            Ok(())
        }
    ),
    key!(
        ["pd_prefill"],
        "disaggregated prefill/decode: prefill replicas (sets replicas to prefill + decode)",
        || "off".into(),
        false,
        |c, v| {
            let n = replicas(v)?;
            let p = pd(c);
            p.prefill = n;
            c.fleet.replicas = p.prefill + p.decode;
            Ok(())
        }
    ),
    key!(
        ["pd_decode"],
        "disaggregated prefill/decode: decode replicas (sets replicas to prefill + decode)",
        || "off".into(),
        false,
        |c, v| {
            let n = replicas(v)?;
            let p = pd(c);
            p.decode = n;
            c.fleet.replicas = p.prefill + p.decode;
            Ok(())
        }
    ),
    key!(
        ["pd_first_token"],
        "who streams the first token: decoder (vLLM's NIXL flow) | prefiller (LMCache's proxy)",
        || "decoder".into(),
        false,
        |c, v| {
            use crate::fleet::pd::FirstToken;
            pd(c).first_token = match text(v)? {
                "decoder" => FirstToken::Decoder,
                "prefiller" => FirstToken::Prefiller,
                _ => return Err("decoder or prefiller"),
            };
            Ok(())
        }
    ),
    key!(
        ["pd_threshold"],
        "disaggregate only requests missing more prompt tokens than this on their decoder (0: all)",
        || "0".into(),
        false,
        |c, v| {
            let n = f64_of(v)
                .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64)
                .ok_or("an integer >= 0")?;
            pd(c).threshold = n as u32;
            Ok(())
        }
    ),
    key!(
        ["pd_transfer_gbps"],
        "KV transfer bandwidth of a prefill replica's link, GB/s per rank",
        || crate::fleet::pd::PdConfig::default()
            .transfer_gbps
            .to_string(),
        false,
        |c, v| {
            let g = f64_of(v)
                .filter(|x| x.is_finite() && *x >= 1e-6 && *x <= 1e6)
                .ok_or("a number of GB/s from 1e-6 to 1e6")?;
            pd(c).transfer_gbps = g;
            Ok(())
        }
    ),
    key!(
        ["pd_transfer_latency_ms"],
        "fixed time per KV transfer, ms",
        || crate::fleet::pd::PdConfig::default().latency_ms.to_string(),
        false,
        |c, v| {
            let ms = f64_of(v)
                .filter(|x| x.is_finite() && *x >= 0.0 && *x <= 3.6e6)
                .ok_or("milliseconds from 0 to 3.6e6")?;
            pd(c).latency_ms = ms;
            Ok(())
        }
    ),
    key!(
        ["pd_transfer"],
        "what moves to the decoder: tail (what its prefix cache lacks, vLLM NIXL) | whole (the prompt)",
        || "tail".into(),
        false,
        |c, v| {
            pd(c).whole_prompt = match text(v)? {
                "tail" => false,
                "whole" => true,
                _ => return Err("tail or whole"),
            };
            Ok(())
        }
    ),
    key!(
        ["remote_shared"],
        "a fleet's replicas share one remote store (false: one store each)",
        || RunConfig::default().fleet.shared_store.to_string(),
        false,
        |c, v| {
            c.fleet.shared_store = boolean(v)?;
            Ok(())
        }
    ),
    key!(
        ["remote_store_gbps"],
        "bandwidth of a fleet's shared remote store, GB/s, which every replica's gets and puts share (default: the transfer profile's remote_gbps)",
        || "remote_gbps".into(),
        false,
        |c, v| {
            let g = f64_of(v)
                .filter(|x| x.is_finite() && *x >= 1e-6 && *x <= 1e6)
                .ok_or("a number of GB/s from 1e-6 to 1e6")?;
            c.fleet.store_gbps = Some(g);
            Ok(())
        }
    ),
    key!(
        ["replica_rtt_ms"],
        "round-trip times of the replicas to the remote store, ms, as a list (\"1;20\"): replica r takes entry r mod length (default: rtt_ms for all)",
        || "rtt_ms".into(),
        false,
        |c, v| {
            const WANT: Want = "a list of milliseconds >= 0, as [1, 20] or \"1;20\"";
            let items: Vec<Value> = match v {
                Value::Array(a) => a.clone(),
                Value::String(s) => s
                    .split([';', ' '])
                    .filter(|x| !x.is_empty())
                    .map(|x| x.parse::<f64>().map(Value::from).map_err(|_| WANT))
                    .collect::<std::result::Result<_, _>>()?,
                Value::Number(_) => vec![v.clone()],
                _ => return Err(WANT),
            };
            let ms = items
                .iter()
                .map(|x| f64_of(x).filter(|m| m.is_finite() && *m >= 0.0 && *m <= 3.6e6))
                .collect::<Option<Vec<f64>>>()
                .filter(|l| !l.is_empty())
                .ok_or(WANT)?;
            c.fleet.rtt_ms = ms;
            Ok(())
        }
    ),
    key!(
        ["step_c0_s"],
        "fitted step time: fixed seconds per step (any step_c_* replaces the roofline)",
        || "roofline".into(),
        false,
        |c, v| {
            fitted(c).c0 = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["step_c_prefill_s"],
        "fitted step time: seconds per prefill token",
        || "roofline".into(),
        false,
        |c, v| {
            fitted(c).c_prefill = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["step_c_decode_s"],
        "fitted step time: seconds per decoding sequence",
        || "roofline".into(),
        false,
        |c, v| {
            fitted(c).c_decode = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["step_c_attn_s"],
        "fitted step time: seconds per prefill attention pair",
        || "roofline".into(),
        false,
        |c, v| {
            fitted(c).c_attn = nonneg(v)?;
            Ok(())
        }
    ),
    key!(
        ["step_c_ctx_s"],
        "fitted step time: seconds per decode context token",
        || "roofline".into(),
        false,
        |c, v| {
            fitted(c).c_ctx = nonneg(v)?;
            Ok(())
        }
    ),
];

/// The key named `name` (or one of its aliases).
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.names.contains(&name))
}

/// Edit distance between two names (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known name nearest to `name`: the shortest that starts with it, else the one fewest
/// edits away.
pub fn nearest(name: &str) -> &'static str {
    let names = || KEYS.iter().flat_map(|k| k.names.iter().copied());
    names()
        .filter(|k| !name.is_empty() && k.starts_with(name))
        .min_by_key(|k| (k.len(), *k))
        .or_else(|| names().min_by_key(|k| (distance(name, k), *k)))
        .unwrap_or("model")
}

/// Sets key `name` of `c` to `v`; an unknown key or a bad value is one error naming the key.
pub fn set(c: &mut RunConfig, name: &str, v: &Value) -> Result<()> {
    let key = find(name).ok_or_else(|| {
        Error::Config(format!(
            "unknown key {name:?} (did you mean {:?}? `kvreplay keys` lists them all)",
            nearest(name)
        ))
    })?;
    (key.set)(c, v).map_err(|want| Error::Config(format!("{name}: expected {want}, found {v}")))
}

/// The table as `kvreplay keys` prints it: names, what each sets, its default.
pub fn help() -> String {
    let mut out = String::new();
    for k in KEYS {
        let names = k.names.join(" | ");
        out.push_str(&format!("{names:<52} {} ({})\n", k.help, (k.default)()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_key_names_the_nearest_known_one() {
        let mut c = RunConfig::default();
        let e = set(&mut c, "chunk_sise", &json!(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"chunk_sise\""), "{e}");
        assert!(e.contains("did you mean \"chunk_size\""), "{e}");
        assert_eq!(nearest("max_local_cpu_sise_gb"), "max_local_cpu_size_gb");
        assert_eq!(nearest("rtt"), "rtt_ms");
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn every_name_is_unique_and_every_default_reads_from_its_type() {
        let mut seen = std::collections::BTreeSet::new();
        for k in KEYS {
            for n in k.names {
                assert!(seen.insert(*n), "{n} listed twice");
            }
        }
        let h = help();
        assert!(h.contains("chunk_size") && h.contains("(256)"), "{h}");
        assert!(h.contains("max_local_cpu_size | max_local_cpu_size_gb | cpu_gb"));
        // The CPU tier's default comes from LMCache's own defaults (5 GiB).
        assert!(h.contains("LMCache CPU tier GiB per TP rank (5)"), "{h}");
    }
}

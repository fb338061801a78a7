//! Entry points for fuzzing: one function per parser of user input, each feeding arbitrary
//! bytes to it. None may panic on any input (an arithmetic overflow counts, since fuzz targets
//! are built with overflow checks); an `Err` is fine. Each libFuzzer target under `fuzz/` is one
//! call to one of these, and `tests/fuzz_corpus.rs` replays the committed seeds and regressions
//! through them on every `cargo test`.
//!
//! Everything here keeps one execution fast: generators run under lowered limits, simulations
//! take at most [`SIM_REQUESTS`] requests of at most [`SIM_TOKENS`] tokens in all, and nothing
//! reads a file that an input names.

use crate::config::{RunConfig, yaml};
use crate::cost::{GpuProfile, StepModel, TransferProfile};
use crate::engine::{EngineConfig, EngineFlags};
use crate::model::ModelCard;
use crate::trace::import::{Format, ImportOptions, import_from};
use crate::trace::{Trace, generate};
use serde_json::{Map, Value, json};
use std::borrow::Cow;

/// Requests simulated from an imported or read trace (its first ones).
pub const SIM_REQUESTS: usize = 50;

/// Tokens (prompt and output) those requests may hold in all; larger traces are not simulated.
pub const SIM_TOKENS: u64 = 20_000;

/// Requests and prompt runs a generator may build for one input.
const GEN_LIMITS: (u64, u64) = (200, 20_000);

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A byte of the input chosen by position from the end (0 for an empty input), to vary the
/// settings an input is used with.
fn byte(data: &[u8], from_end: usize) -> u8 {
    data.len().checked_sub(from_end + 1).map_or(0, |i| data[i])
}

/// Imports `data` as `format`, `strict` or not (and for llmperf open loop or with three
/// clients) as a byte of the input says; a trace imported goes through [`use_trace`].
pub fn import(format: Format, data: &[u8]) {
    let sel = byte(data, 2);
    let opts = ImportOptions {
        strict: sel & 1 == 1,
        clients: (format == Format::Llmperf && sel & 2 == 2).then_some(3),
        ..Default::default()
    };
    if let Ok((trace, _)) = import_from(format, &mut &data[..], "fuzz", &opts) {
        use_trace(&trace, data);
    }
}

/// Mooncake JSONL.
pub fn import_mooncake(data: &[u8]) {
    import(Format::Mooncake, data)
}

/// Azure LLM inference CSV.
pub fn import_azure(data: &[u8]) {
    import(Format::Azure, data)
}

/// BurstGPT CSV.
pub fn import_burstgpt(data: &[u8]) {
    import(Format::Burstgpt, data)
}

/// Qwen Bailian JSONL.
pub fn import_bailian(data: &[u8]) {
    import(Format::Bailian, data)
}

/// `vllm bench serve` results JSON.
pub fn import_vllm_bench(data: &[u8]) {
    import(Format::VllmBench, data)
}

/// llmperf individual responses JSON.
pub fn import_llmperf(data: &[u8]) {
    import(Format::Llmperf, data)
}

/// A token-id request log (JSONL).
pub fn import_token_ids(data: &[u8]) {
    import(Format::TokenIds, data)
}

/// The tokenizer the text formats are fuzzed with: a word-level one built in code over a few
/// words, with the small chat template of [`crate::trace::import::text_tokenizer::tiny`].
fn tiny_tokenizer() -> std::sync::Arc<crate::trace::import::text_tokenizer::TextTokenizer> {
    use std::sync::{Arc, OnceLock};
    static TOK: OnceLock<Arc<crate::trace::import::text_tokenizer::TextTokenizer>> =
        OnceLock::new();
    TOK.get_or_init(|| {
        Arc::new(crate::trace::import::text_tokenizer::tiny::chat(&[
            "hello", "world", "how", "are", "you", "fine", "a", "b",
        ]))
    })
    .clone()
}

/// Imports `data` as a text format (tokenized with [`tiny_tokenizer`]), strict or not and with
/// 1 to 4 clients as bytes of the input say; a trace imported goes through [`use_trace`].
fn import_text(format: Format, data: &[u8]) {
    let sel = byte(data, 2);
    let opts = ImportOptions {
        strict: sel & 1 == 1,
        clients: Some(1 + u32::from((sel >> 1) & 3)),
        think_ns: u64::from(byte(data, 1)) * 1_000_000,
        tokenizer: Some(tiny_tokenizer()),
        ..Default::default()
    };
    if let Ok((trace, _)) = import_from(format, &mut &data[..], "fuzz", &opts) {
        use_trace(&trace, data);
    }
}

/// An OpenAI request log (JSONL).
pub fn import_openai(data: &[u8]) {
    import_text(Format::Openai, data)
}

/// ShareGPT conversations (JSON array or JSONL).
pub fn import_sharegpt(data: &[u8]) {
    import_text(Format::Sharegpt, data)
}

/// A canonical JSONL trace.
pub fn trace_jsonl(data: &[u8]) {
    if let Ok(t) = crate::trace::jsonl::read_from(data, "fuzz.jsonl") {
        use_trace(&t, data);
    }
}

/// A canonical Parquet trace.
pub fn trace_parquet(data: &[u8]) {
    if let Ok(t) = crate::trace::parquet::read_bytes(data.to_vec(), "fuzz.parquet") {
        use_trace(&t, data);
    }
}

/// What kvreplay does with a trace it has read: `trace stats` at a block size taken from the
/// input (1 to 64 tokens, and the trace's own), and a short simulation of its first requests on
/// a small GPU with no offload, the LMCache CPU tier or vLLM's native offload.
pub fn use_trace(trace: &Trace, data: &[u8]) {
    let block = 1 + u32::from(byte(data, 0) % 64);
    let mut blocks = vec![block];
    blocks.extend(trace.meta.block_size.filter(|b| *b > 0));
    let stats = crate::trace::stats::TraceStats::of(trace, &blocks);
    let _ = stats.to_string();

    let n = trace.requests.len().min(SIM_REQUESTS);
    let head = &trace.requests[..n];
    let tokens = head.iter().fold(0u64, |a, r| {
        a.saturating_add(u64::from(r.input_len) + u64::from(r.output_len))
    });
    // The engine needs at least one output token per request, which the readers do not all
    // check yet: such traces are not simulated here.
    if tokens > SIM_TOKENS || head.iter().any(|r| r.output_len == 0) {
        return;
    }
    let sub: Cow<'_, Trace> = if n == trace.requests.len() {
        Cow::Borrowed(trace)
    } else {
        Cow::Owned(Trace {
            meta: trace.meta.clone(),
            requests: head.to_vec(),
        })
    };
    if sub.validate("fuzz").is_err() {
        return;
    }
    let sel = byte(data, 1);
    let mut cfg = RunConfig::default();
    let mut keys = json!({
        "block_size": block,
        "num_gpu_blocks": 4 + u32::from(sel / 4) % 61,
    });
    match sel % 4 {
        1 => {
            keys["tier"] = json!("cpu");
            keys["chunk_size"] = json!(block * 4);
            keys["max_local_cpu_size"] = json!(0.01);
        }
        2 => {
            keys["tier"] = json!("native");
            keys["kv_offloading_size"] = json!(0.01);
        }
        3 => {
            keys["enable_prefix_caching"] = json!(false);
        }
        _ => {}
    }
    let Value::Object(keys) = keys else {
        return;
    };
    if cfg.set_all(&keys).is_err() {
        return;
    }
    if let Ok(out) = crate::pipeline::run(&sub, &cfg) {
        let _ = out.summary;
    }
}

/// A JSON object, else a YAML file's top-level keys (as `--config` and `--grid` read files).
fn object_or_yaml(text: &str, file: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => yaml::parse(text, file).ok(),
    }
}

/// A YAML file: parsed, and applied as an `lmcache_config.yaml`.
pub fn yaml(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    if let Ok(entries) = yaml::entries(text, "fuzz.yaml") {
        let _ = yaml::parse(text, "fuzz.yaml");
        for e in &entries {
            let _ = e.value.to_string();
        }
    }
    let mut c = RunConfig::default();
    if c.apply_lmcache_yaml(text, "fuzz.yaml").is_ok() {
        let _ = c.offload();
    }
}

/// A `--config` file (JSON or YAML) through [`RunConfig`]: every key set, then the offload and,
/// when the model and GPU are shipped ones and no transfer profile file is named, the whole
/// setup (model card, GPU profile, engine).
pub fn run_config(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Some(map) = object_or_yaml(text, "fuzz.yaml") else {
        return;
    };
    let mut c = RunConfig::default();
    if c.set_all(&map).is_err() {
        return;
    }
    let _ = c.offload();
    let _ = c.effective_tier();
    let _ = c.to_json();
    let names_a_file = |s: &str| std::path::Path::new(s).exists();
    if c.cost.transfer_profile.is_some() || names_a_file(&c.model) || names_a_file(&c.gpu) {
        return;
    }
    let _ = c.setup();
}

/// A validation study: parsed, and each of its first runs' workloads generated (small ones
/// only; a multi-turn config named by path is not read).
pub fn study(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(s) = crate::validate::study::Study::parse(text, "fuzz.json") else {
        return;
    };
    for run in s.runs.iter().take(3) {
        let (w, _) = crate::validate::run_workload(&s, run);
        if s.kind == "vllm_multi_turn" && !w.get("config").is_some_and(Value::is_object) {
            continue;
        }
        let seed = w.get("seed").and_then(Value::as_u64).unwrap_or(0);
        let _ = generate::with_limits(GEN_LIMITS.0, GEN_LIMITS.1, || {
            generate::from_study(&s.kind, &w, seed, &s.file)
        });
    }
}

/// A transfer profile as `transfer_profile` and `calibrate` read it.
pub fn transfer_profile(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let _ = crate::calibrate::profile::ProfileFile::parse(text, "fuzz.json");
    let Ok(gpu) = GpuProfile::lookup(&RunConfig::default().gpu) else {
        return;
    };
    if let Ok(p) = TransferProfile::from_text(text, "fuzz.json", &gpu) {
        let _ = p.gpu_load_s(1 << 20, 4) + p.disk_read_s(1 << 20, 4) + p.remote_op_s(1, 1, 0.001);
    }
}

/// A GPU profile file, then an engine and a step model for a shipped model on it.
pub fn gpu_profile(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok((gpu, _)) = GpuProfile::from_json_str(text, "fuzz.json") else {
        return;
    };
    let Ok(card) = crate::model::lookup(&RunConfig::default().model) else {
        return;
    };
    let _ = EngineConfig::resolve(&card, &gpu, &EngineFlags::default());
    let _ = StepModel::roofline(&card, &gpu, 1);
    let _ = TransferProfile::spec_defaults(&gpu);
}

/// A model `config.json`, then everything derived from the card: parameter and KV sizes, FLOPs,
/// and an engine on a shipped GPU at tensor-parallel sizes 1 to 8.
pub fn model_card(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(card) = ModelCard::from_json_str(text, "fuzz", "fuzz/config.json") else {
        return;
    };
    let _ = card.params();
    let _ = card.active_matmul_params();
    let _ = card.flops_per_token(1 << 20);
    let Ok(gpu) = GpuProfile::lookup(&RunConfig::default().gpu) else {
        return;
    };
    let tp = 1 + u32::from(byte(data, 0) % 8);
    let _ = card.weight_bytes_per_rank(tp);
    let _ = card.kv_bytes_per_token(tp);
    let flags = EngineFlags {
        tensor_parallel_size: Some(tp),
        ..Default::default()
    };
    let _ = EngineConfig::resolve(&card, &gpu, &flags);
    let _ = StepModel::roofline(&card, &gpu, tp);
}

/// A multi-turn generator config (vLLM's `generate_conversations` JSON), then the workload it
/// describes (small ones only).
pub fn multi_turn_config(data: &[u8]) {
    use generate::multi_turn::{ConfigSource, Params, config_from_text, generate_in};
    let Some(text) = text(data) else {
        return;
    };
    let Ok(map) = config_from_text(text, "fuzz.json") else {
        return;
    };
    let p = Params {
        config: ConfigSource::Inline(map),
        ..Default::default()
    };
    let _ = generate::with_limits(GEN_LIMITS.0, GEN_LIMITS.1, || {
        generate_in(&p, u64::from(byte(data, 0)), "fuzz.json", "", None)
    });
}

/// A sweep grid file (JSON or YAML), and each line as a `--set KEY=V1,V2` and a `--shard K/N`.
pub fn sweep_grid(data: &[u8]) {
    use crate::sweep::{Grid, Shard};
    let Some(text) = text(data) else {
        return;
    };
    if let Some(map) = object_or_yaml(text, "fuzz.yaml") {
        let mut g = Grid::default();
        if g.add_object(&map).is_ok() && !g.is_empty() {
            let _ = g.point(0);
            let _ = g.point(g.len() - 1);
        }
    }
    let mut g = Grid::default();
    for line in text.lines() {
        let _ = g.add_arg(line);
        if let Ok(s) = Shard::parse(line) {
            let _ = s.owns(g.len());
        }
    }
    if !g.is_empty() {
        let _ = g.point(g.len() - 1);
    }
}

/// Each line as a `plan` SLO target.
pub fn plan_target(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let metrics = [("ttft_p99_s".to_string(), 1.0), ("output_tps".into(), 10.0)].into();
    for line in text.lines() {
        if let Ok(t) = crate::plan::Target::parse(line) {
            let _ = t.met(&metrics);
        }
    }
}

/// Each line as a `report --slo`.
#[cfg(feature = "plots")]
pub fn report_slo(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    for line in text.lines() {
        let _ = crate::report::html::parse_slo(line);
    }
}

/// Each line as a network-delay duration and as a rate.
pub fn duration_rate(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    for line in text.lines() {
        let _ = crate::netdelay::parse_duration(line);
        let _ = crate::netdelay::parse_rate(line);
    }
}

/// Each line as a `compare --variants` list, each variant's keys applied to a configuration.
pub fn compare_variants(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    for line in text.lines() {
        let Ok(vs) = crate::compare::parse_variants(line) else {
            continue;
        };
        for v in vs {
            let mut c = RunConfig::default();
            if c.set_all(&v.keys).is_ok() {
                let _ = c.offload();
            }
        }
    }
}

/// A streamed completion: lines through the SSE parser, each event's data as a chunk.
#[cfg(feature = "live")]
pub fn sse(data: &[u8]) {
    use crate::live::sse::{Chunk, SseParser};
    let text = String::from_utf8_lossy(data);
    let mut p = SseParser::default();
    for line in text.split_inclusive('\n') {
        if let Some(d) = p.line(line) {
            let _ = Chunk::parse(&d);
        }
    }
    if let Some(d) = p.finish() {
        let _ = Chunk::parse(&d);
    }
}

/// A Prometheus scrape: samples, counters, the difference from an empty and from a half scrape,
/// the prefix-cache summary, an info gauge's labels.
#[cfg(feature = "live")]
pub fn prom(data: &[u8]) {
    use crate::live::prom;
    let text = String::from_utf8_lossy(data);
    let _ = prom::parse(&text);
    let half = text.char_indices().nth(text.chars().count() / 2);
    let before = half.map_or("", |(i, _)| &text[..i]);
    let d = prom::deltas(before, &text);
    let _ = prom::prefix_cache(&d);
    let _ = prom::info_labels(&text, "vllm:cache_config_info");
}

/// Redis replies as the calibration's client reads them, the first byte choosing the sequence
/// of simple and bulk replies expected.
pub fn resp(data: &[u8]) {
    use crate::calibrate::resp::Replies;
    let Some((&pattern, rest)) = data.split_first() else {
        return;
    };
    let mut r = Replies::new(rest);
    let mut buf = Vec::new();
    for i in 0..64 {
        let ok = if pattern >> (i % 8) & 1 == 0 {
            r.simple().is_ok()
        } else {
            r.bulk(&mut buf).is_ok()
        };
        if !ok {
            break;
        }
    }
}

/// A fuzzing entry point.
pub type Entry = fn(&[u8]);

/// Every entry point by target name, for replaying corpora.
pub const TARGETS: &[(&str, Entry)] = &[
    ("import_mooncake", import_mooncake),
    ("import_azure", import_azure),
    ("import_burstgpt", import_burstgpt),
    ("import_bailian", import_bailian),
    ("import_vllm_bench", import_vllm_bench),
    ("import_llmperf", import_llmperf),
    ("import_token_ids", import_token_ids),
    ("import_openai", import_openai),
    ("import_sharegpt", import_sharegpt),
    ("trace_jsonl", trace_jsonl),
    ("trace_parquet", trace_parquet),
    ("yaml", yaml),
    ("run_config", run_config),
    ("study", study),
    ("transfer_profile", transfer_profile),
    ("gpu_profile", gpu_profile),
    ("model_card", model_card),
    ("multi_turn_config", multi_turn_config),
    ("sweep_grid", sweep_grid),
    ("plan_target", plan_target),
    #[cfg(feature = "plots")]
    ("report_slo", report_slo),
    ("duration_rate", duration_rate),
    ("compare_variants", compare_variants),
    #[cfg(feature = "live")]
    ("sse", sse),
    #[cfg(feature = "live")]
    ("prom", prom),
    ("resp", resp),
];

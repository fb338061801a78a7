//! Model cards: the shape of a model as its Hugging Face `config.json` states it, and what the
//! simulator derives from it (parameters, FLOPs per token, KV bytes per token per TP rank).
//!
//! Cards for the models users ask about most ship inside the binary (`models/cards/`), found by
//! Hugging Face id with forgiving spelling; any other model is a path to its `config.json`.

pub mod card;

pub use card::ModelCard;

use crate::error::{Error, Result};
use std::path::Path;

/// Shipped cards: (canonical Hugging Face id, config.json text).
const SHIPPED: &[(&str, &str)] = &[
    (
        "meta-llama/Llama-3.1-8B",
        include_str!("../../models/cards/meta-llama--Llama-3.1-8B.json"),
    ),
    (
        "meta-llama/Llama-3.1-70B",
        include_str!("../../models/cards/meta-llama--Llama-3.1-70B.json"),
    ),
    (
        "Qwen/Qwen3-0.6B",
        include_str!("../../models/cards/Qwen--Qwen3-0.6B.json"),
    ),
    (
        "Qwen/Qwen3-8B",
        include_str!("../../models/cards/Qwen--Qwen3-8B.json"),
    ),
    (
        "Qwen/Qwen3-30B-A3B",
        include_str!("../../models/cards/Qwen--Qwen3-30B-A3B.json"),
    ),
    (
        "openai/gpt-oss-120b",
        include_str!("../../models/cards/openai--gpt-oss-120b.json"),
    ),
    (
        "deepseek-ai/DeepSeek-V3",
        include_str!("../../models/cards/deepseek-ai--DeepSeek-V3.json"),
    ),
];

/// The key two spellings of one model share: lower case, organisation dropped, the older
/// `Meta-Llama-3.1` spelling folded into `Llama-3.1`, and `-Instruct`/`-Chat`/`-Base` dropped
/// (an instruct variant has the base model's shape).
pub fn normalise_id(id: &str) -> String {
    let mut s = id.trim().to_ascii_lowercase();
    if let Some(i) = s.rfind('/') {
        s = s[i + 1..].to_string();
    }
    if let Some(rest) = s.strip_prefix("meta-") {
        s = rest.to_string();
    }
    for suffix in ["-instruct", "-chat", "-base", "-hf"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest.to_string();
        }
    }
    s
}

/// Ids of the shipped cards.
pub fn shipped_ids() -> Vec<&'static str> {
    SHIPPED.iter().map(|(id, _)| *id).collect()
}

/// Finds a model: a shipped card by Hugging Face id, or a `config.json` path (a folder holding
/// one works too).
pub fn lookup(model: &str) -> Result<ModelCard> {
    let key = normalise_id(model);
    if let Some((id, text)) = SHIPPED.iter().find(|(id, _)| normalise_id(id) == key) {
        return ModelCard::from_json_str(
            text,
            id,
            &format!("models/cards/{}.json", id.replace('/', "--")),
        );
    }
    let p = Path::new(model);
    let file = if p.is_dir() {
        p.join("config.json")
    } else {
        p.to_path_buf()
    };
    if file.is_file() {
        let text =
            std::fs::read_to_string(&file).map_err(|e| Error::io(file.display().to_string(), e))?;
        let name = file
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_string());
        return ModelCard::from_json_str(&text, &name, &file.display().to_string());
    }
    Err(Error::Config(format!(
        "unknown model {model:?}: not a shipped card ({}) and not a config.json path",
        shipped_ids().join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_across_spellings() {
        for id in [
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B",
            "llama-3.1-8b",
        ] {
            assert_eq!(lookup(id).unwrap().name, "meta-llama/Llama-3.1-8B", "{id}");
        }
        assert_eq!(lookup("Meta-Llama-3.1-70B-Instruct").unwrap().layers, 80);
        assert_eq!(lookup("Qwen/Qwen3-0.6B").unwrap().hidden, 1024);
        let e = lookup("meta-llama/Llama-4-Scout").unwrap_err().to_string();
        assert!(
            e.contains("unknown model") && e.contains("Qwen/Qwen3-8B"),
            "{e}"
        );
    }

    #[test]
    fn published_kv_bytes_per_token() {
        let kib = |id: &str| lookup(id).unwrap().kv_bytes_per_token(1) as f64 / 1024.0;
        assert_eq!(kib("meta-llama/Llama-3.1-8B"), 128.0);
        assert_eq!(kib("meta-llama/Llama-3.1-70B"), 320.0);
        assert_eq!(kib("Qwen/Qwen3-8B"), 144.0);
        assert_eq!(kib("Qwen/Qwen3-0.6B"), 112.0);
        // 2 x 48 layers x 4 KV heads x 128 x 2 bytes; 2 x 36 x 8 x 64 x 2.
        assert_eq!(kib("Qwen/Qwen3-30B-A3B"), 96.0);
        assert_eq!(kib("openai/gpt-oss-120b"), 72.0);
    }

    #[test]
    fn mla_keeps_a_latent_per_token_on_every_rank() {
        // DeepSeek-V2's paper gives MLA's cache per token as (d_c + d_h^R) x layers elements;
        // DeepSeek-V3: (512 + 64) x 61 x 2 bytes = 70,272 bytes, not split by tensor parallelism
        // (vLLM replicates the latent on each rank).
        let c = lookup("deepseek-ai/DeepSeek-V3").unwrap();
        assert_eq!(c.kv_bytes_per_token(1), 70_272);
        assert_eq!(c.kv_bytes_per_token(8), 70_272);
        assert_eq!(c.with_kv_cache_dtype(Some(1)).kv_bytes_per_token(8), 35_136);
    }

    #[test]
    fn an_fp8_kv_cache_halves_the_bytes_per_token_and_tp_still_splits_them() {
        let c = |id: &str| lookup(id).unwrap().with_kv_cache_dtype(Some(1));
        assert_eq!(
            c("meta-llama/Llama-3.1-8B").kv_bytes_per_token(1),
            64 * 1024
        );
        // 70B: 320 KiB in bf16, 160 KiB in FP8, a quarter of that per rank at TP 4.
        assert_eq!(
            c("meta-llama/Llama-3.1-70B").kv_bytes_per_token(4),
            40 * 1024
        );
        // Weights keep their dtype.
        assert_eq!(
            c("meta-llama/Llama-3.1-8B").weight_bytes(),
            lookup("meta-llama/Llama-3.1-8B").unwrap().weight_bytes()
        );
        // GPU capacity doubles: on an H100 at utilisation 0.9, (0.9 x 79.19 GiB - 14.96 GiB of
        // weights - activations - non-torch) / block bytes: 27,922 blocks of 2 MiB, 55,845 of 1 MiB.
        let gpu = crate::cost::GpuProfile::lookup("H100").unwrap();
        let blocks = |card: &ModelCard| {
            crate::engine::EngineConfig::resolve(card, &gpu, &Default::default())
                .unwrap()
                .num_gpu_blocks
        };
        let bf16 = lookup("meta-llama/Llama-3.1-8B").unwrap();
        assert_eq!(blocks(&bf16), 27_922);
        assert_eq!(blocks(&c("meta-llama/Llama-3.1-8B")), 55_845);
    }

    #[test]
    fn quantized_weights_take_what_their_format_stores() {
        // gpt-oss-120b: MXFP4 (4 bits and an 8-bit scale per 32) on the experts only:
        // 36 layers x 128 experts x 3 x 2880 x 2880 = 114,661,785,600 weights at 0.53125
        // bytes, the other 2,127,... in bf16: about 60.7 GiB, which OpenAI ships to fit one
        // 80 GB GPU.
        let c = lookup("openai/gpt-oss-120b").unwrap();
        let experts = 36u64 * 128 * 3 * 2880 * 2880;
        assert_eq!(experts, 114_661_785_600);
        let want = (c.params() - experts) * 2 + (experts as f64 * 0.53125).ceil() as u64;
        assert_eq!(c.weight_bytes(), want);
        assert!((c.weight_bytes() as f64 / (1u64 << 30) as f64 - 60.69).abs() < 0.01);
        // DeepSeek-V3's FP8 checkpoint: every linear layer at one byte, embeddings and the LM
        // head (2 x 129,280 x 7,168) and norms in bf16.
        let d = lookup("deepseek-ai/DeepSeek-V3").unwrap();
        assert!(d.fp8_compute());
        let head_and_embed = 2 * 129_280u64 * 7_168;
        let norms = 61 * 2 * 7_168 + 7_168;
        let linear = d.params() - head_and_embed - norms;
        assert_eq!(d.weight_bytes(), linear + 2 * (head_and_embed + norms));
        // The Llama-3.1-8B card with a quantization_config.
        let quantized = |q: &str| {
            ModelCard::from_json_str(
                &SHIPPED[0].1.replace(
                    "\"vocab_size\"",
                    &format!("\"quantization_config\": {q}, \"vocab_size\""),
                ),
                "q",
                "c.json",
            )
        };
        // AWQ at 4 bits with a 16-bit scale per group of 128: 0.515625 bytes per weight.
        let awq = quantized(r#"{"quant_method": "awq", "bits": 4, "group_size": 128}"#).unwrap();
        assert_eq!(awq.quant.as_ref().unwrap().bytes_per_weight, 0.515625);
        let e = quantized(r#"{"quant_method": "bitsandbytes"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.json") && e.contains("quantization_config.quant_method"),
            "{e}"
        );
    }

    #[test]
    fn published_parameter_counts() {
        // Counts from the models' safetensors indexes / model cards.
        for (id, want) in [
            ("meta-llama/Llama-3.1-8B", 8_030_261_248u64),
            ("meta-llama/Llama-3.1-70B", 70_553_706_496),
            ("Qwen/Qwen3-8B", 8_190_735_360),
            ("Qwen/Qwen3-0.6B", 596_049_920),
        ] {
            assert_eq!(lookup(id).unwrap().params(), want, "{id}");
        }
        // Mixture-of-experts cards against their published totals and active counts (billions):
        // Qwen3-30B-A3B 30.5 / 3.3 and DeepSeek-V3 671 / 37 (the multi-token-prediction module
        // excluded, as in the paper) count the embedding table a token looks up; gpt-oss-120b's
        // 116.8 / 5.1 do not (its biases and attention sinks are not counted here).
        for (id, total, active, with_embed) in [
            ("Qwen/Qwen3-30B-A3B", 30.5, 3.3, true),
            ("openai/gpt-oss-120b", 116.8, 5.1, false),
            ("deepseek-ai/DeepSeek-V3", 671.0, 37.0, true),
        ] {
            let c = lookup(id).unwrap();
            let t = c.params() as f64 / 1e9;
            let embed = if with_embed {
                c.vocab as f64 * c.hidden as f64
            } else {
                0.0
            };
            let a = (c.active_matmul_params() as f64 + embed) / 1e9;
            assert!((t / total - 1.0).abs() < 0.003, "{id}: {t}");
            assert!((a / active - 1.0).abs() < 0.05, "{id}: {a}");
        }
        // DeepSeek-V3 by hand: embeddings and LM head 2 x 926,679,040; 61 x (MLA 187,107,328 +
        // norms 14,336); 3 dense MLPs of 396,361,728; 58 MoE layers of 256 experts x 44,040,192
        // + a shared one + a 7,168 x 256 router; the final norm.
        assert_eq!(
            lookup("deepseek-ai/DeepSeek-V3").unwrap().params(),
            2 * 926_679_040
                + 61 * (187_107_328 + 14_336)
                + 3 * 396_361_728
                + 58 * (257 * 44_040_192 + 7_168 * 256)
                + 7_168
        );
    }

    #[test]
    fn a_config_path_works_too() {
        let dir = std::env::temp_dir().join(format!("kvr-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), SHIPPED[2].1).unwrap();
        let c = lookup(dir.to_str().unwrap()).unwrap();
        assert_eq!(c.kv_bytes_per_token(1), 112 * 1024);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

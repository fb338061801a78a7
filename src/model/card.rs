//! One model's shape, read from a Hugging Face `config.json`, and the quantities the cost model
//! and the KV capacity come from.

use crate::error::{InputError, Result};
use crate::util::json::{Obj, parse_object};
use serde::Serialize;

/// Mixture-of-experts fields, when the config has them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moe {
    /// Routed experts per MoE layer.
    pub experts: u32,
    /// Experts each token is routed to.
    pub experts_per_token: u32,
    /// Intermediate size of one expert's MLP.
    pub expert_intermediate: u32,
    /// Intermediate size of the always-on shared expert(s), 0 when none.
    pub shared_intermediate: u32,
}

/// A model's architecture as far as serving cost is concerned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    /// Hugging Face id, or the folder name of a user's config.json.
    pub name: String,
    /// `model_type` (llama, qwen3, ...).
    pub model_type: String,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden size.
    pub hidden: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads (GQA).
    pub kv_heads: u32,
    /// Dimension of one head.
    pub head_dim: u32,
    /// Dense MLP intermediate size.
    pub intermediate: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// Bytes per weight and per KV element (bf16/fp16 2, fp32 4, fp8 1).
    pub dtype_bytes: u32,
    /// Whether the LM head shares the embedding matrix.
    pub tie_embeddings: bool,
    /// Biases on q, k and v projections (Qwen2).
    pub attention_bias: bool,
    /// Per-head RMS norms on q and k (Qwen3).
    pub qk_norm: bool,
    /// Longest context.
    pub max_position: u32,
    /// Mixture-of-experts shape; `None` for dense models.
    pub moe: Option<Moe>,
}

/// The largest value each size of a model card may take (any other size: 2^20): far above any
/// real model, low enough that a layer's parameters times the layers fit in 64 bits.
const LIMITS: [(&str, u32); 9] = [
    ("num_hidden_layers", 4096),
    ("hidden_size", 1 << 18),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 12),
    ("intermediate_size", 1 << 20),
    ("moe_intermediate_size", 1 << 20),
    ("shared_expert_intermediate_size", 1 << 20),
    ("vocab_size", 1 << 24),
];

/// Most experts a mixture-of-experts card may have.
const MAX_EXPERTS: u32 = 1024;

impl ModelCard {
    /// Parses config.json text; errors name `file` and the field.
    pub fn from_json_str(text: &str, name: &str, file: &str) -> Result<ModelCard> {
        let map = parse_object(text, file, 1)?;
        let top = Obj::new(&map, file, 0);
        // Multimodal configs nest the language model under text_config.
        let o = match top.get("text_config") {
            Some(_) => top.object("text_config", "text_config.")?,
            None => top,
        };
        if o.get("kv_lora_rank").is_some() {
            return Err(o
                .err(
                    "kv_lora_rank",
                    "multi-head latent attention (DeepSeek MLA) is not modelled",
                )
                .into());
        }
        // Every size is bounded well above any real model, so that the products the cost model
        // forms stay exact.
        let within = |k: &str, max: u32| -> std::result::Result<u32, InputError> {
            let v = o.u32(k)?;
            if v == 0 {
                Err(o.err(k, "must be positive"))
            } else if v > max {
                Err(o.err(
                    k,
                    format!("{v} is more than {max}, beyond any model kvreplay models"),
                ))
            } else {
                Ok(v)
            }
        };
        let positive =
            |k: &str| within(k, LIMITS.iter().find(|l| l.0 == k).map_or(1 << 20, |l| l.1));
        let hidden = positive("hidden_size")?;
        let heads = positive("num_attention_heads")?;
        let kv_heads = match o.get("num_key_value_heads") {
            Some(_) => positive("num_key_value_heads")?,
            None => heads,
        };
        if heads % kv_heads != 0 {
            return Err(o
                .err(
                    "num_key_value_heads",
                    format!("{kv_heads} does not divide {heads} heads"),
                )
                .into());
        }
        let head_dim = match o.get("head_dim") {
            Some(_) => positive("head_dim")?,
            None => {
                if hidden % heads != 0 {
                    return Err(o
                        .err(
                            "head_dim",
                            "missing, and hidden_size is not a multiple of the heads",
                        )
                        .into());
                }
                hidden / heads
            }
        };
        let dtype = o
            .opt_str("torch_dtype")?
            .or(o.opt_str("dtype")?)
            .unwrap_or("bfloat16");
        let dtype_bytes = match dtype {
            "bfloat16" | "float16" | "half" | "bf16" | "fp16" => 2,
            "float32" | "float" | "fp32" => 4,
            d if d.contains("float8") || d.contains("fp8") => 1,
            other => {
                return Err(o
                    .err("torch_dtype", format!("unknown dtype {other:?}"))
                    .into());
            }
        };
        let experts = match o.opt_u32("num_experts")? {
            Some(e) => Some(e),
            None => match o.opt_u32("num_local_experts")? {
                Some(e) => Some(e),
                None => o.opt_u32("n_routed_experts")?,
            },
        };
        if let Some(e) = experts.filter(|e| *e > MAX_EXPERTS) {
            return Err(o
                .err(
                    "num_experts",
                    format!("{e} is more than {MAX_EXPERTS} experts"),
                )
                .into());
        }
        let moe_intermediate = match o.get("moe_intermediate_size") {
            Some(_) => Some(positive("moe_intermediate_size")?),
            None => None,
        };
        let intermediate = positive("intermediate_size")?;
        let moe = match experts {
            Some(e) if e > 0 => {
                let k = positive("num_experts_per_tok")?;
                if k > e {
                    return Err(o
                        .err(
                            "num_experts_per_tok",
                            format!("{k} is more than the {e} experts"),
                        )
                        .into());
                }
                let shared = match o.get("shared_expert_intermediate_size") {
                    Some(_) => positive("shared_expert_intermediate_size")?,
                    None => {
                        let n = match o.get("n_shared_experts") {
                            Some(_) => within("n_shared_experts", MAX_EXPERTS)?,
                            None => 0,
                        };
                        n * moe_intermediate.unwrap_or(intermediate)
                    }
                };
                Some(Moe {
                    experts: e,
                    experts_per_token: k,
                    expert_intermediate: moe_intermediate.unwrap_or(intermediate),
                    shared_intermediate: shared,
                })
            }
            _ => None,
        };
        let model_type = o.opt_str("model_type")?.unwrap_or("").to_string();
        Ok(ModelCard {
            name: name.to_string(),
            qk_norm: model_type.starts_with("qwen3"),
            model_type,
            layers: positive("num_hidden_layers")?,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab: positive("vocab_size")?,
            dtype_bytes,
            tie_embeddings: o.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: o.opt_bool("attention_bias")?.unwrap_or(false),
            max_position: o.opt_u32("max_position_embeddings")?.unwrap_or(u32::MAX),
            moe,
        })
    }

    fn attn_params_per_layer(&self) -> u64 {
        let (h, q, kv) = (
            self.hidden as u64,
            (self.heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
        );
        let mut p = h * q + 2 * h * kv + q * h;
        if self.attention_bias {
            p += q + 2 * kv;
        }
        if self.qk_norm {
            p += 2 * self.head_dim as u64;
        }
        p
    }

    /// MLP parameters per layer: (all, active per token).
    fn mlp_params_per_layer(&self) -> (u64, u64) {
        let h = self.hidden as u64;
        match &self.moe {
            None => {
                let p = 3 * h * self.intermediate as u64;
                (p, p)
            }
            Some(m) => {
                let expert = 3 * h * m.expert_intermediate as u64;
                let shared = 3 * h * m.shared_intermediate as u64;
                let router = h * m.experts as u64;
                (
                    m.experts as u64 * expert + shared + router,
                    m.experts_per_token as u64 * expert + shared + router,
                )
            }
        }
    }

    fn embed_params(&self) -> u64 {
        self.vocab as u64 * self.hidden as u64
    }

    /// Total parameters (embeddings, layers, norms, LM head unless tied).
    pub fn params(&self) -> u64 {
        let norms = 2 * self.hidden as u64;
        let per_layer = self.attn_params_per_layer() + self.mlp_params_per_layer().0 + norms;
        let head = if self.tie_embeddings {
            0
        } else {
            self.embed_params()
        };
        self.embed_params() + self.layers as u64 * per_layer + self.hidden as u64 + head
    }

    /// Weight bytes held by one tensor-parallel rank (the embedding and LM head are split too).
    pub fn weight_bytes_per_rank(&self, tp: u32) -> u64 {
        self.params() * self.dtype_bytes as u64 / tp.max(1) as u64
    }

    /// Parameters a token passes through in matrix multiplies (LM head included, embedding
    /// lookup excluded; MoE counts the active experts).
    pub fn active_matmul_params(&self) -> u64 {
        let per_layer = self.attn_params_per_layer() + self.mlp_params_per_layer().1;
        self.layers as u64 * per_layer + self.embed_params()
    }

    /// FLOPs to process one token that attends to `context` tokens (itself included): 2 per
    /// weight, plus 4 x heads x head_dim per layer per attended token (scores and values).
    pub fn flops_per_token(&self, context: u64) -> f64 {
        2.0 * self.active_matmul_params() as f64
            + 4.0 * self.layers as f64 * self.heads as f64 * self.head_dim as f64 * context as f64
    }

    /// KV-cache heads one tensor-parallel rank holds: the heads are split across ranks, and
    /// replicated when there are fewer heads than ranks.
    pub fn kv_heads_per_rank(&self, tp: u32) -> u32 {
        let tp = tp.max(1);
        if self.kv_heads >= tp {
            self.kv_heads.div_ceil(tp)
        } else {
            1
        }
    }

    /// KV bytes per token on one tensor-parallel rank: 2 (K and V) x layers x KV heads per rank
    /// x head_dim x element bytes.
    pub fn kv_bytes_per_token(&self, tp: u32) -> u64 {
        2 * self.layers as u64
            * self.kv_heads_per_rank(tp) as u64
            * self.head_dim as u64
            * self.dtype_bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_name_the_field() {
        let e = ModelCard::from_json_str(r#"{"hidden_size": "big"}"#, "m", "c.json")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "c.json: hidden_size: expected a non-negative integer, found \"big\""
        );
        let e = ModelCard::from_json_str(
            r#"{"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 3,
                "intermediate_size": 1, "num_hidden_layers": 1, "vocab_size": 1}"#,
            "m",
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("num_key_value_heads: 3 does not divide 8"),
            "{e}"
        );
    }

    #[test]
    fn sizes_beyond_any_model_are_errors_not_overflows() {
        let card = |extra: &str| {
            ModelCard::from_json_str(
                &format!(
                    r#"{{"hidden_size": 4096, "num_attention_heads": 16, "intermediate_size": 14336,
                        "vocab_size": 128256, {extra}}}"#
                ),
                "m",
                "c.json",
            )
        };
        // 32,547,898 layers x 16 heads x 256 dims overflowed 32 bits in the FLOPs per token.
        let e = card(r#""num_hidden_layers": 32547898"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("num_hidden_layers: 32547898 is more than 4096"),
            "{e}"
        );
        let e =
            card(r#""num_hidden_layers": 2, "num_local_experts": 5000, "num_experts_per_tok": 2"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("5000 is more than 1024 experts"), "{e}");
        let e = card(r#""num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 9"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("num_experts_per_tok: 9 is more than the 8 experts"),
            "{e}"
        );
        // The largest allowed sizes still give finite, exact-enough costs.
        let big = card(r#""num_hidden_layers": 4096, "head_dim": 4096"#).unwrap();
        assert!(big.flops_per_token(1 << 20).is_finite());
    }

    #[test]
    fn moe_counts_active_experts_only() {
        // A Mixtral-8x7B-shaped config: 46.7B parameters, about 12.9B active.
        let c = ModelCard::from_json_str(
            r#"{"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                "intermediate_size": 14336, "num_hidden_layers": 32, "vocab_size": 32000,
                "num_local_experts": 8, "num_experts_per_tok": 2, "model_type": "mixtral"}"#,
            "mixtral",
            "c.json",
        )
        .unwrap();
        assert_eq!(c.params(), 46_702_792_704);
        // The quoted 12.9B active counts the embedding table, which a token only looks up.
        let active = (c.active_matmul_params() + 32_000 * 4096) as f64;
        assert!((active / 1e9 - 12.88).abs() < 0.01, "{active}");
        // FLOPs grow with context by 4 * layers * heads * head_dim per token attended.
        let d = c.flops_per_token(1001) - c.flops_per_token(1);
        assert_eq!(d, 4.0 * 32.0 * 32.0 * 128.0 * 1000.0);
    }

    #[test]
    fn tensor_parallel_splits_kv_heads() {
        let c = super::super::lookup("meta-llama/Llama-3.1-70B").unwrap();
        assert_eq!(c.kv_bytes_per_token(4), 320 * 1024 / 4);
        // 8 KV heads over 16 ranks: each rank keeps one (replicated).
        assert_eq!(c.kv_bytes_per_token(16), 320 * 1024 / 8);
    }
}

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

/// DeepSeek-style multi-head latent attention: the KV cache holds one compressed latent and one
/// shared rotary key per token and layer, the same on every tensor-parallel rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mla {
    /// Rank of the compressed KV latent (`kv_lora_rank`).
    pub kv_lora_rank: u32,
    /// Rank of the compressed query, when queries are compressed (`q_lora_rank`).
    pub q_lora_rank: Option<u32>,
    /// Rotary part of a query/key head (`qk_rope_head_dim`).
    pub qk_rope_head_dim: u32,
    /// Non-rotary part of a query/key head (`qk_nope_head_dim`).
    pub qk_nope_head_dim: u32,
}

/// Weights stored below the card's dtype (`quantization_config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quant {
    /// `quant_method` as the config names it (fp8, awq, gptq, mxfp4, ...).
    pub method: String,
    /// Bytes per quantized weight, group scales included.
    pub bytes_per_weight: f64,
    /// Only the experts' MLP weights are quantized (gpt-oss's MXFP4); else every linear layer.
    pub experts_only: bool,
    /// Matrix multiplies run at FP8 (weights and activations in FP8, as vLLM runs `fp8`
    /// checkpoints on GPUs with FP8 tensor cores).
    pub fp8_compute: bool,
}

/// Sliding-window attention on some layers (gpt-oss, Gemma 3, Mistral).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sliding {
    /// Tokens a sliding-window layer attends to.
    pub window: u32,
    /// Layers with a sliding window (the rest attend to the whole context).
    pub layers: u32,
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
    /// Bytes per weight and activation element of the model's dtype (bf16/fp16 2, fp32 4, fp8 1).
    pub dtype_bytes: u32,
    /// Bytes per KV-cache element: the model's dtype, or 1 with vLLM's `--kv-cache-dtype fp8`
    /// ([`ModelCard::with_kv_cache_dtype`]).
    pub kv_dtype_bytes: u32,
    /// Dimension of one value head (differs from `head_dim` under MLA).
    pub v_head_dim: u32,
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
    /// Leading layers with a dense MLP in a mixture-of-experts model (`first_k_dense_replace`).
    pub first_dense_layers: u32,
    /// Multi-head latent attention; `None` for multi-head / grouped-query attention.
    pub mla: Option<Mla>,
    /// Quantized weights; `None` when every weight is in the model's dtype.
    pub quant: Option<Quant>,
    /// Sliding-window layers, when the config has them.
    pub sliding: Option<Sliding>,
}

/// vLLM's `--kv-cache-dtype` values and the bytes per element each gives (`None`: the model's).
pub fn kv_cache_dtype_bytes(name: &str) -> Option<Option<u32>> {
    match name {
        "auto" => Some(None),
        "fp8" | "fp8_e4m3" | "fp8_e5m2" | "fp8_inc" | "fp8_ds_mla" => Some(Some(1)),
        "bfloat16" | "bf16" | "float16" | "half" => Some(Some(2)),
        _ => None,
    }
}

/// The largest value each size of a model card may take (any other size: 2^20): far above any
/// real model, low enough that a layer's parameters times the layers fit in 64 bits.
const LIMITS: [(&str, u32); 14] = [
    ("kv_lora_rank", 1 << 16),
    ("q_lora_rank", 1 << 16),
    ("qk_rope_head_dim", 1 << 12),
    ("qk_nope_head_dim", 1 << 12),
    ("v_head_dim", 1 << 12),
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

/// Reads a `quantization_config`: what the weights take and whether the matrix multiplies run
/// at FP8.
fn parse_quant(q: &Obj<'_>, dtype_bytes: u32) -> std::result::Result<Quant, InputError> {
    let method = q.str("quant_method")?.to_ascii_lowercase();
    let group = |default: u32| -> std::result::Result<f64, InputError> {
        Ok(match q.get("group_size") {
            Some(v) if v.as_i64().is_some_and(|g| g > 0) => v.as_i64().unwrap_or(1) as f64,
            _ => default as f64,
        })
    };
    let bits = |default: u32| -> std::result::Result<f64, InputError> {
        Ok(match q.opt_u32("bits")?.or(q.opt_u32("w_bit")?) {
            Some(b) if (2..=8).contains(&b) => b as f64,
            Some(b) => {
                return Err(q.err("bits", format!("{b} bits is not a weight width vLLM loads")));
            }
            None => default as f64,
        })
    };
    let (bytes_per_weight, experts_only, fp8_compute) = match method.as_str() {
        // FP8 weights (block scales of 128 x 128 are negligible); vLLM runs them in FP8.
        "fp8" | "fbgemm_fp8" | "modelopt" => (1.0, false, true),
        // Integer weights with one 16-bit scale per group (the default group of 128).
        "awq" | "gptq" | "awq_marlin" | "gptq_marlin" => {
            (bits(4)? / 8.0 + 2.0 / group(128)?, false, false)
        }
        // MXFP4: 4-bit values and one 8-bit scale per 32, on the experts only (gpt-oss).
        "mxfp4" => (4.25 / 8.0, true, false),
        other => {
            return Err(q.err(
                "quant_method",
                format!("{other:?} is not modelled (known: fp8, awq, gptq, mxfp4)"),
            ));
        }
    };
    if bytes_per_weight >= dtype_bytes as f64 {
        return Err(q.err(
            "quant_method",
            format!(
                "{method} weights would not be smaller than the model's {dtype_bytes}-byte dtype"
            ),
        ));
    }
    Ok(Quant {
        method,
        bytes_per_weight,
        experts_only,
        fp8_compute,
    })
}

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
        let mla = match o.get("kv_lora_rank") {
            Some(v) if !v.is_null() => Some(Mla {
                kv_lora_rank: positive("kv_lora_rank")?,
                q_lora_rank: match o.get("q_lora_rank") {
                    Some(q) if !q.is_null() => Some(positive("q_lora_rank")?),
                    _ => None,
                },
                qk_rope_head_dim: positive("qk_rope_head_dim")?,
                qk_nope_head_dim: positive("qk_nope_head_dim")?,
            }),
            _ => None,
        };
        let head_dim = match (&mla, o.get("head_dim")) {
            (Some(m), _) => m.qk_rope_head_dim + m.qk_nope_head_dim,
            (None, Some(_)) => positive("head_dim")?,
            (None, None) => {
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
        let v_head_dim = match (&mla, o.get("v_head_dim")) {
            (Some(_), _) | (None, Some(_)) => positive("v_head_dim")?,
            _ => head_dim,
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
        let first_dense_layers = match (&moe, o.opt_u32("first_k_dense_replace")?) {
            (Some(_), Some(k)) => k,
            _ => 0,
        };
        let layers = positive("num_hidden_layers")?;
        if first_dense_layers > layers {
            return Err(o
                .err(
                    "first_k_dense_replace",
                    format!("{first_dense_layers} is more than the {layers} layers"),
                )
                .into());
        }
        let quant = match top
            .get("quantization_config")
            .or(o.get("quantization_config"))
        {
            Some(v) if !v.is_null() => {
                let q = if top.get("quantization_config").is_some() {
                    top.object("quantization_config", "quantization_config.")?
                } else {
                    o.object("quantization_config", "quantization_config.")?
                };
                Some(parse_quant(&q, dtype_bytes)?)
            }
            _ => None,
        };
        let sliding = match o.get("sliding_window") {
            Some(v) if !v.is_null() && o.opt_bool("use_sliding_window")? != Some(false) => {
                let window = positive("sliding_window")?;
                // Which layers slide: `layer_types` when given,
                // or every layer but each `sliding_window_pattern`-th (Gemma 3), else every layer
                // (Mistral).
                let n = match (o.get("layer_types"), o.opt_u32("sliding_window_pattern")?) {
                    (Some(_), _) => o
                        .array("layer_types")?
                        .iter()
                        .filter(|t| t.as_str() == Some("sliding_attention"))
                        .count() as u32,
                    (None, Some(p)) if p > 0 => layers - layers / p,
                    _ => layers,
                };
                (n > 0 && window < o.opt_u32("max_position_embeddings")?.unwrap_or(u32::MAX))
                    .then_some(Sliding { window, layers: n })
            }
            _ => None,
        };
        Ok(ModelCard {
            name: name.to_string(),
            qk_norm: model_type.starts_with("qwen3"),
            model_type,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab: positive("vocab_size")?,
            dtype_bytes,
            kv_dtype_bytes: dtype_bytes,
            v_head_dim,
            tie_embeddings: o.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: o.opt_bool("attention_bias")?.unwrap_or(false),
            max_position: o.opt_u32("max_position_embeddings")?.unwrap_or(u32::MAX),
            moe,
            first_dense_layers,
            mla,
            quant,
            sliding,
        })
    }

    /// The card with its KV cache in `bytes` per element (vLLM's `--kv-cache-dtype`; `None`
    /// keeps the model's dtype).
    pub fn with_kv_cache_dtype(mut self, bytes: Option<u32>) -> Self {
        self.kv_dtype_bytes = bytes.unwrap_or(self.dtype_bytes);
        self
    }

    fn attn_params_per_layer(&self) -> u64 {
        if let Some(m) = &self.mla {
            let (h, heads) = (self.hidden as u64, self.heads as u64);
            let qk = (m.qk_nope_head_dim + m.qk_rope_head_dim) as u64;
            let q = match m.q_lora_rank {
                Some(r) => h * r as u64 + r as u64 + r as u64 * heads * qk,
                None => h * heads * qk,
            };
            let kv_lora = m.kv_lora_rank as u64;
            let kv = h * (kv_lora + m.qk_rope_head_dim as u64)
                + kv_lora
                + kv_lora * heads * (m.qk_nope_head_dim as u64 + self.v_head_dim as u64);
            return q + kv + heads * self.v_head_dim as u64 * h;
        }
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

    /// MLP parameters of all layers: (all, active per token), the leading dense layers of a
    /// mixture-of-experts model counted with the dense MLP.
    fn mlp_params(&self) -> (u64, u64) {
        let (all, active) = self.mlp_params_per_layer();
        let dense = self.first_dense_layers as u64;
        let moe = self.layers as u64 - dense;
        let d = 3 * self.hidden as u64 * self.intermediate as u64;
        (moe * all + dense * d, moe * active + dense * d)
    }

    /// Parameters in the routed experts' MLPs (what MXFP4 quantizes in gpt-oss).
    fn expert_params(&self) -> u64 {
        match &self.moe {
            None => 0,
            Some(m) => {
                (self.layers - self.first_dense_layers) as u64
                    * m.experts as u64
                    * 3
                    * self.hidden as u64
                    * m.expert_intermediate as u64
            }
        }
    }

    /// Total parameters (embeddings, layers, norms, LM head unless tied).
    pub fn params(&self) -> u64 {
        let norms = 2 * self.hidden as u64;
        let layers =
            self.layers as u64 * (self.attn_params_per_layer() + norms) + self.mlp_params().0;
        let head = if self.tie_embeddings {
            0
        } else {
            self.embed_params()
        };
        self.embed_params() + layers + self.hidden as u64 + head
    }

    /// Parameters stored quantized: every linear layer's (attention and MLP), or only the
    /// experts'; embeddings, the LM head and norms stay in the model's dtype.
    fn quantized_params(&self) -> u64 {
        match &self.quant {
            None => 0,
            Some(q) if q.experts_only => self.expert_params(),
            Some(_) => self.layers as u64 * self.attn_params_per_layer() + self.mlp_params().0,
        }
    }

    /// Bytes of all the weights.
    pub fn weight_bytes(&self) -> u64 {
        let full = self.params() * self.dtype_bytes as u64;
        match &self.quant {
            None => full,
            Some(q) => {
                let n = self.quantized_params();
                full - n * self.dtype_bytes as u64 + (n as f64 * q.bytes_per_weight).ceil() as u64
            }
        }
    }

    /// Bytes of the routed experts' weights (0 for a dense model).
    pub fn expert_weight_bytes(&self) -> u64 {
        let n = self.expert_params();
        match &self.quant {
            Some(q) => (n as f64 * q.bytes_per_weight).ceil() as u64,
            None => n * self.dtype_bytes as u64,
        }
    }

    /// The share of the routed experts one token passes through (`k / experts`; 0 when dense).
    pub fn expert_share(&self) -> f64 {
        self.moe
            .as_ref()
            .map_or(0.0, |m| m.experts_per_token as f64 / m.experts as f64)
    }

    /// Weight bytes held by one tensor-parallel rank (the embedding and LM head are split too).
    pub fn weight_bytes_per_rank(&self, tp: u32) -> u64 {
        self.weight_bytes() / tp.max(1) as u64
    }

    /// Parameters a token passes through in matrix multiplies (LM head included, embedding
    /// lookup excluded; MoE counts the active experts).
    pub fn active_matmul_params(&self) -> u64 {
        self.layers as u64 * self.attn_params_per_layer()
            + self.mlp_params().1
            + self.embed_params()
    }

    /// One line for each part of the model that vLLM runs and kvreplay does not model
    /// faithfully, saying what is assumed instead.
    pub fn modelling_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(sl) = &self.sliding {
            notes.push(format!(
                "{}: {} of {} layers attend to a {}-token sliding window; vLLM's hybrid KV-cache manager keeps only the window's blocks for them and caches prefixes per layer group, which is not modelled: KV per token, capacity and prefix hits are those of full attention on every layer (capacity under-estimated by up to {:.0} %)",
                self.name,
                sl.layers,
                self.layers,
                sl.window,
                100.0 * sl.layers as f64 / self.layers as f64
            ));
        }
        if self.mla.is_some() {
            notes.push(format!(
                "{}: multi-head latent attention's KV (latent + rotary key) is modelled exactly; its attention FLOPs are those of {} heads over the up-projected dims (vLLM's absorbed decode kernel works in the latent space instead)",
                self.name, self.heads
            ));
        }
        notes
    }

    /// Whether matrix multiplies run at FP8.
    pub fn fp8_compute(&self) -> bool {
        self.quant.as_ref().is_some_and(|q| q.fp8_compute)
    }

    /// FLOPs to process one token that attends to `context` tokens (itself included): 2 per
    /// weight, plus 4 x heads x head_dim per layer per attended token (scores and values).
    pub fn flops_per_token(&self, context: u64) -> f64 {
        2.0 * self.active_matmul_params() as f64 + self.attn_flops_per_pair() * context as f64
    }

    /// Attention FLOPs per (query token, attended token) pair over all layers: 2 per element
    /// of the scores (query-key head dim) and of the weighted values (value head dim), per
    /// head; 4 x heads x head_dim when the two dims agree.
    pub fn attn_flops_per_pair(&self) -> f64 {
        if self.v_head_dim == self.head_dim {
            4.0 * self.layers as f64 * self.heads as f64 * self.head_dim as f64
        } else {
            2.0 * self.layers as f64 * self.heads as f64 * (self.head_dim + self.v_head_dim) as f64
        }
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
    /// x head_dim x KV element bytes.
    ///
    /// Under MLA: the latent and the rotary key, (kv_lora_rank + qk_rope_head_dim) x layers x
    /// element bytes, on every rank alike (vLLM does not split the latent across ranks).
    pub fn kv_bytes_per_token(&self, tp: u32) -> u64 {
        if let Some(m) = &self.mla {
            return (m.kv_lora_rank + m.qk_rope_head_dim) as u64
                * self.layers as u64
                * self.kv_dtype_bytes as u64;
        }
        2 * self.layers as u64
            * self.kv_heads_per_rank(tp) as u64
            * self.head_dim as u64
            * self.kv_dtype_bytes as u64
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

    #[test]
    fn sliding_windows_are_read_and_announced_not_guessed() {
        let base = r#""hidden_size": 1024, "num_attention_heads": 8, "intermediate_size": 4096,
            "num_hidden_layers": 34, "vocab_size": 1000, "max_position_embeddings": 131072"#;
        let card = |extra: &str| {
            ModelCard::from_json_str(&format!("{{{base}, {extra}}}"), "m", "c.json").unwrap()
        };
        // Gemma 3: every 6th layer global, the other 29 of 34 slide over 1,024 tokens.
        let g = card(r#""sliding_window": 1024, "sliding_window_pattern": 6"#);
        assert_eq!(
            g.sliding,
            Some(Sliding {
                window: 1024,
                layers: 29
            })
        );
        // Qwen2.5 states a window it does not use.
        assert_eq!(
            card(r#""sliding_window": 4096, "use_sliding_window": false"#).sliding,
            None
        );
        // Mistral: every layer.
        assert_eq!(
            card(r#""sliding_window": 4096"#).sliding.unwrap().layers,
            34
        );
        // gpt-oss: layer_types alternate; the run says what it does not model, in one line.
        let o = super::super::lookup("openai/gpt-oss-120b").unwrap();
        assert_eq!(
            o.sliding,
            Some(Sliding {
                window: 128,
                layers: 18
            })
        );
        let notes = o.modelling_notes();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("18 of 36 layers") && notes[0].contains("not modelled"));
        assert!(!notes[0].contains('\n'));
        assert!(
            super::super::lookup("meta-llama/Llama-3.1-8B")
                .unwrap()
                .modelling_notes()
                .is_empty()
        );
    }
}

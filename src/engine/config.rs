//! vLLM engine settings and what vLLM derives from them: batch limits by GPU, KV capacity from
//! memory.

use crate::cost::GpuProfile;
use crate::error::{Error, Result};
use crate::model::ModelCard;
use serde::Serialize;

/// Flags a user may set; `None` means "as vLLM would choose".
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct EngineFlags {
    /// `--block-size` (default 16).
    pub block_size: Option<u32>,
    /// `--max-num-batched-tokens`.
    pub max_num_batched_tokens: Option<u32>,
    /// `--max-num-seqs`.
    pub max_num_seqs: Option<u32>,
    /// `--max-model-len` (default: the model's).
    pub max_model_len: Option<u32>,
    /// `--gpu-memory-utilization` (default 0.9).
    pub gpu_memory_utilization: Option<f64>,
    /// `--tensor-parallel-size` (default 1).
    pub tensor_parallel_size: Option<u32>,
    /// `--num-gpu-blocks-override`.
    pub num_gpu_blocks: Option<u32>,
    /// `--no-enable-prefix-caching` sets false.
    pub enable_prefix_caching: Option<bool>,
    /// `--kv-cache-dtype` (auto, fp8, fp8_e4m3, fp8_e5m2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_dtype: Option<String>,
    /// `--enable-expert-parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_expert_parallel: Option<bool>,
}

/// The engine's effective settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: u32,
    /// Token budget of one step.
    pub max_num_batched_tokens: u32,
    /// Most sequences running at once.
    pub max_num_seqs: u32,
    /// Longest sequence (prompt + output).
    pub max_model_len: u32,
    /// Automatic prefix caching.
    pub enable_prefix_caching: bool,
    /// Tensor-parallel ranks.
    pub tp: u32,
    /// KV blocks on each GPU.
    pub num_gpu_blocks: u32,
    /// KV bytes per token on one rank.
    pub kv_bytes_per_token: u64,
    /// How `num_gpu_blocks` was obtained, in words.
    pub kv_capacity_note: String,
}

/// Bytes in a GiB, as vLLM sizes memory.
pub const GIB: f64 = (1u64 << 30) as f64;

/// vLLM's default `--block-size`.
pub const DEFAULT_BLOCK_SIZE: u32 = 16;

/// The block sizes vLLM accepts (`BlockSize` in `vllm/config/cache.py`).
pub const BLOCK_SIZES: [u32; 7] = [1, 8, 16, 32, 64, 128, 256];

/// vLLM's default `--gpu-memory-utilization`.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;

impl EngineConfig {
    /// Resolves `flags` for `card` on `gpu` as vLLM's OpenAI API server does.
    ///
    /// KV capacity = (utilization x GPU memory - weights - activation peak - non-torch memory) /
    /// bytes per block. The activation peak is estimated from a profile run of
    /// `max_num_batched_tokens` tokens: hidden states, MLP intermediates and sampler logits;
    /// `--num-gpu-blocks-override` replaces the whole estimate.
    pub fn resolve(card: &ModelCard, gpu: &GpuProfile, flags: &EngineFlags) -> Result<Self> {
        let tp = flags.tensor_parallel_size.unwrap_or(1);
        if tp == 0 {
            return Err(Error::Config(
                "--tensor-parallel-size must be at least 1".into(),
            ));
        }
        let block_size = flags.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(Error::Config(format!(
                "--block-size {block_size}: vLLM accepts {}",
                BLOCK_SIZES.map(|b| b.to_string()).join(", ")
            )));
        }
        let (def_mbt, def_seqs) = if gpu.large_gpu_defaults {
            (8192, 1024)
        } else {
            (2048, 256)
        };
        let mbt = flags.max_num_batched_tokens.unwrap_or(def_mbt);
        let seqs = flags.max_num_seqs.unwrap_or(def_seqs);
        if mbt == 0 || seqs == 0 {
            return Err(Error::Config(
                "--max-num-batched-tokens and --max-num-seqs must be positive".into(),
            ));
        }
        let max_model_len = flags.max_model_len.unwrap_or(card.max_position);
        let util = flags
            .gpu_memory_utilization
            .unwrap_or(DEFAULT_GPU_MEMORY_UTILIZATION);
        if !(util > 0.0 && util <= 1.0) {
            return Err(Error::Config(format!(
                "--gpu-memory-utilization must be in (0, 1], got {util}"
            )));
        }
        let kv_bytes_per_token = card.kv_bytes_per_token(tp);
        let block_bytes = kv_bytes_per_token * block_size as u64;
        let (num_gpu_blocks, note) = match flags.num_gpu_blocks {
            Some(n) => (n, format!("{n} blocks (--num-gpu-blocks-override)")),
            None => {
                let weights = card.weight_bytes_per_rank(tp) as f64;
                let act = mbt as f64
                    * (4.0 * card.hidden as f64 + 2.0 * card.intermediate as f64 / tp as f64)
                    * card.dtype_bytes as f64
                    + seqs.min(mbt) as f64 * card.vocab as f64 * 4.0 / tp as f64;
                let non_torch = gpu.non_torch_gib * GIB;
                let avail = util * gpu.memory_bytes() - weights - act - non_torch;
                if avail < block_bytes as f64 {
                    return Err(Error::Config(format!(
                        "{} does not fit on {} at tp {tp}: weights {:.1} GiB, activations {:.1} GiB, \
                         {:.1} GiB usable at utilization {util}",
                        card.name,
                        gpu.name,
                        weights / GIB,
                        act / GIB,
                        util * gpu.memory_bytes() / GIB
                    )));
                }
                let n = (avail / block_bytes as f64).floor() as u32;
                (
                    n,
                    format!(
                        "{n} blocks = ({util} x {:.2} GiB - weights {:.2} GiB - activations {:.2} GiB \
                         - non-torch {:.2} GiB) / {} KiB per block",
                        gpu.memory_gib,
                        weights / GIB,
                        act / GIB,
                        non_torch / GIB,
                        block_bytes / 1024
                    ),
                )
            }
        };
        if num_gpu_blocks == 0 {
            return Err(Error::Config("the GPU KV cache has no blocks".into()));
        }
        Ok(EngineConfig {
            block_size,
            max_num_batched_tokens: mbt,
            max_num_seqs: seqs,
            max_model_len,
            enable_prefix_caching: flags.enable_prefix_caching.unwrap_or(true),
            tp,
            num_gpu_blocks,
            kv_bytes_per_token,
            kv_capacity_note: note,
        })
    }

    /// GPU KV capacity in tokens.
    pub fn kv_capacity_tokens(&self) -> u64 {
        self.num_gpu_blocks as u64 * self.block_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lookup;

    #[test]
    fn defaults_follow_the_gpu() {
        let card = lookup("meta-llama/Llama-3.1-8B").unwrap();
        let h = EngineConfig::resolve(
            &card,
            &GpuProfile::lookup("H100").unwrap(),
            &EngineFlags::default(),
        )
        .unwrap();
        assert_eq!(
            (h.max_num_batched_tokens, h.max_num_seqs, h.block_size),
            (8192, 1024, 16)
        );
        let a = EngineConfig::resolve(
            &card,
            &GpuProfile::lookup("A100").unwrap(),
            &EngineFlags::default(),
        )
        .unwrap();
        assert_eq!((a.max_num_batched_tokens, a.max_num_seqs), (2048, 256));
        // H100 80GB at 0.9: about 0.9 x 79.19 - 14.96 - ~1.2 - 0.6 = ~54.5 GiB of KV, ~446k tokens
        // of 128 KiB: less than long_doc_qa's 51 x 10,000 tokens.
        let tokens = h.kv_capacity_tokens();
        assert!((430_000..460_000).contains(&tokens), "{tokens}");
        assert!(tokens < 510_000);
    }

    #[test]
    fn overrides_and_impossible_fits() {
        let card = lookup("meta-llama/Llama-3.1-70B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let e = EngineConfig::resolve(&card, &gpu, &EngineFlags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
        let f = EngineFlags {
            tensor_parallel_size: Some(4),
            ..Default::default()
        };
        assert!(EngineConfig::resolve(&card, &gpu, &f).is_ok());
        let f = EngineFlags {
            num_gpu_blocks: Some(100),
            ..Default::default()
        };
        let c = EngineConfig::resolve(&lookup("Qwen/Qwen3-0.6B").unwrap(), &gpu, &f).unwrap();
        assert_eq!(c.kv_capacity_tokens(), 1600);
    }

    /// Regression: `block_size` 24 was accepted; vLLM refuses any size outside its `BlockSize`.
    #[test]
    fn a_block_size_vllm_refuses_is_an_error() {
        let card = lookup("meta-llama/Llama-3.1-8B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let with = |b| EngineFlags {
            block_size: Some(b),
            ..Default::default()
        };
        for b in [0, 3, 24, 48, 512] {
            let e = EngineConfig::resolve(&card, &gpu, &with(b))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "--block-size {b}: vLLM accepts 1, 8, 16, 32, 64, 128, 256"
                )),
                "{e}"
            );
        }
        for b in BLOCK_SIZES {
            assert_eq!(
                EngineConfig::resolve(&card, &gpu, &with(b))
                    .unwrap()
                    .block_size,
                b
            );
        }
    }
}

//! Engine step time from the batch's shape: a roofline over the model card and the GPU profile,
//! or fitted coefficients when a study or a calibration provides them.
//!
//! A step's cost is made of named parts: the forward pass (max of compute time and memory time),
//! tensor-parallel all-reduces, and fixed overheads per step and per sequence.

use super::hardware::GpuProfile;
use crate::model::ModelCard;
use serde::Serialize;

/// The shape of one engine step, in aggregates that can be updated in O(1) per request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchShape {
    /// New tokens of prefill chunks.
    pub prefill_tokens: u64,
    /// Sum over prefill chunks of the attention pairs: n*p + n(n+1)/2 for a chunk of n new
    /// tokens after p cached ones.
    pub prefill_attn_pairs: f64,
    /// KV tokens read by prefill chunks (p + n each).
    pub prefill_kv_tokens: u64,
    /// Sequences decoding one token.
    pub decode_seqs: u64,
    /// Sum over decoding sequences of the tokens attended (context + 1).
    pub decode_ctx: u64,
    /// Sequences in the batch.
    pub seqs: u64,
}

impl BatchShape {
    /// Adds a prefill chunk of `n` new tokens after `p` tokens already in the KV cache.
    pub fn add_prefill(&mut self, n: u64, p: u64) {
        self.prefill_tokens += n;
        self.prefill_attn_pairs += n as f64 * p as f64 + (n as f64) * (n as f64 + 1.0) / 2.0;
        self.prefill_kv_tokens += p + n;
        self.seqs += 1;
    }

    /// Adds a sequence decoding one token with `ctx` tokens before it.
    pub fn add_decode(&mut self, ctx: u64) {
        self.decode_seqs += 1;
        self.decode_ctx += ctx + 1;
        self.seqs += 1;
    }

    /// Whether the step does nothing.
    pub fn is_empty(&self) -> bool {
        self.seqs == 0
    }
}

/// Fitted linear step-time coefficients (seconds): `c0 + c_prefill * prefill_tokens +
/// c_decode * decode_seqs + c_attn * prefill_attn_pairs + c_ctx * decode_ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Fitted {
    /// Fixed seconds per step.
    pub c0: f64,
    /// Seconds per prefill token.
    pub c_prefill: f64,
    /// Seconds per decoding sequence.
    pub c_decode: f64,
    /// Seconds per prefill attention pair.
    pub c_attn: f64,
    /// Seconds per decode context token.
    pub c_ctx: f64,
}

/// Step-time model for one model on one GPU type at one tensor-parallel size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepModel {
    linear_flops_per_token: f64,
    attn_flops_per_pair: f64,
    weight_bytes: f64,
    kv_bytes_per_token: f64,
    flops_per_s: f64,
    /// The rate of the linear layers' FLOPs when it differs from `flops_per_s` (FP8).
    linear_flops_per_s: Option<f64>,
    /// Of `weight_bytes`, the routed experts' (0 for a dense model): a step reads only the
    /// experts its tokens were routed to.
    expert_weight_bytes: f64,
    /// The share of the experts one token is routed to.
    expert_share: f64,
    bytes_per_s: f64,
    allreduce_bytes_per_token: f64,
    interconnect_bytes_per_s: f64,
    allreduces_per_step: f64,
    step_overhead_s: f64,
    per_seq_overhead_s: f64,
    /// When set, replaces the roofline.
    pub fitted: Option<Fitted>,
}

/// Latency of one all-reduce launch across GPUs.
const ALLREDUCE_LATENCY_S: f64 = 10e-6;

impl StepModel {
    /// The roofline for `card` on `gpu` with `tp` ranks.
    pub fn roofline(card: &ModelCard, gpu: &GpuProfile, tp: u32) -> Self {
        let tp = tp.max(1) as f64;
        let comm = if tp > 1.0 {
            // Two all-reduces of hidden-size activations per layer; a ring moves 2(tp-1)/tp of
            // the data over each link.
            2.0 * card.hidden as f64 * card.dtype_bytes as f64 * 2.0 * (tp - 1.0) / tp
                * card.layers as f64
        } else {
            0.0
        };
        // FP8 checkpoints run their matrix multiplies at the GPU's FP8 peak where it has one.
        let linear_flops_per_s = match (card.fp8_compute(), gpu.peak_fp8_tflops) {
            (true, Some(p)) => Some(p * 1e12 * gpu.compute_efficiency),
            _ => None,
        };
        // Under MLA every rank keeps the whole latent; the heads are still split.
        StepModel {
            linear_flops_per_token: 2.0 * card.active_matmul_params() as f64 / tp,
            attn_flops_per_pair: card.attn_flops_per_pair() / tp,
            weight_bytes: card.weight_bytes() as f64 / tp,
            linear_flops_per_s,
            expert_weight_bytes: card.expert_weight_bytes() as f64 / tp,
            expert_share: card.expert_share(),
            kv_bytes_per_token: card.kv_bytes_per_token(tp as u32) as f64,
            flops_per_s: gpu.peak_tflops * 1e12 * gpu.compute_efficiency,
            bytes_per_s: gpu.hbm_gbps * 1e9 * gpu.memory_efficiency,
            allreduce_bytes_per_token: comm,
            interconnect_bytes_per_s: gpu.interconnect_gbps * 1e9,
            allreduces_per_step: if tp > 1.0 {
                2.0 * card.layers as f64
            } else {
                0.0
            },
            step_overhead_s: gpu.step_overhead_us * 1e-6,
            per_seq_overhead_s: gpu.per_seq_overhead_us * 1e-6,
            fitted: None,
        }
    }

    /// The same model with vLLM's `--enable-expert-parallel`: each rank holds whole experts
    /// instead of a slice of every one, so a mixture-of-experts layer's MLP all-reduce becomes an
    /// all-to-all that sends each token's hidden state to the ranks of its `k` experts and back:
    /// 2 x k x hidden x dtype bytes x (tp - 1) / tp per token and layer, where the all-reduce
    /// moved 2 x hidden x dtype x 2 (tp - 1) / tp. Compute and weight bytes per rank are
    /// unchanged (the experts are evenly spread). A dense model is unchanged.
    pub fn with_expert_parallel(mut self, card: &ModelCard, tp: u32) -> Self {
        let (Some(m), true) = (&card.moe, tp > 1) else {
            return self;
        };
        let tp = tp as f64;
        let act = card.hidden as f64 * card.dtype_bytes as f64;
        let moe_layers = (card.layers - card.first_dense_layers) as f64;
        let allreduce = act * 2.0 * (tp - 1.0) / tp;
        let all_to_all = 2.0 * m.experts_per_token as f64 * act * (tp - 1.0) / tp;
        self.allreduce_bytes_per_token += moe_layers * (all_to_all - allreduce);
        self
    }

    /// Seconds the forward pass of `b` takes.
    #[inline]
    pub fn step_s(&self, b: &BatchShape) -> f64 {
        if b.is_empty() {
            return 0.0;
        }
        if let Some(f) = &self.fitted {
            return (f.c0
                + f.c_prefill * b.prefill_tokens as f64
                + f.c_decode * b.decode_seqs as f64
                + f.c_attn * b.prefill_attn_pairs
                + f.c_ctx * b.decode_ctx as f64)
                .max(0.0);
        }
        let tokens = (b.prefill_tokens + b.decode_seqs) as f64;
        let flops = self.linear_flops_per_token * tokens
            + self.attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx as f64);
        // A mixture of experts reads the experts its tokens were routed to: with each token
        // choosing k of E, a share 1 - (1 - k/E)^tokens of them in expectation.
        let weights = if self.expert_weight_bytes > 0.0 {
            let touched = 1.0 - (1.0 - self.expert_share).powf(tokens);
            self.weight_bytes - self.expert_weight_bytes * (1.0 - touched)
        } else {
            self.weight_bytes
        };
        let bytes = weights
            + self.kv_bytes_per_token
                * (b.prefill_kv_tokens + b.decode_ctx + b.prefill_tokens) as f64;
        let compute = match self.linear_flops_per_s {
            None => flops / self.flops_per_s,
            Some(r) => {
                self.linear_flops_per_token * tokens / r
                    + self.attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx as f64)
                        / self.flops_per_s
            }
        };
        let forward = compute.max(bytes / self.bytes_per_s);
        let comm = if self.allreduces_per_step > 0.0 {
            self.allreduces_per_step * ALLREDUCE_LATENCY_S
                + self.allreduce_bytes_per_token * tokens / self.interconnect_bytes_per_s
        } else {
            0.0
        };
        forward + comm + self.step_overhead_s + self.per_seq_overhead_s * b.seqs as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lookup;

    fn h100_8b() -> StepModel {
        StepModel::roofline(
            &lookup("meta-llama/Llama-3.1-8B").unwrap(),
            &GpuProfile::lookup("H100").unwrap(),
            1,
        )
    }

    #[test]
    fn decode_is_memory_bound_and_prefill_compute_bound() {
        let m = h100_8b();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let overhead = gpu.step_overhead_us * 1e-6;
        // One decode token at short context: reading 16 GB of weights at the profile's
        // efficiency x 3352 GB/s.
        let mut d = BatchShape::default();
        d.add_decode(100);
        let want = 8_030_261_248.0 * 2.0 / (3352e9 * gpu.memory_efficiency) + overhead + 5e-6;
        let got = m.step_s(&d);
        assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        // A 8192-token prefill: ~2 x 7.5e9 x 8192 linear FLOPs plus attention, at the profile's
        // efficiency x 989 TF/s.
        let mut p = BatchShape::default();
        p.add_prefill(8192, 0);
        let card = lookup("meta-llama/Llama-3.1-8B").unwrap();
        let flops = 2.0 * card.active_matmul_params() as f64 * 8192.0
            + 4.0 * 32.0 * 32.0 * 128.0 * (8192.0 * 8193.0 / 2.0);
        let want = flops / (989.4e12 * gpu.compute_efficiency) + overhead + 5e-6;
        let got = m.step_s(&p);
        assert!((got - want).abs() / want < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn longer_context_costs_more_and_fitted_replaces_roofline() {
        let mut m = h100_8b();
        let mut a = BatchShape::default();
        a.add_prefill(512, 0);
        let mut b = BatchShape::default();
        b.add_prefill(512, 20_000);
        assert!(m.step_s(&b) > m.step_s(&a));
        m.fitted = Some(Fitted {
            c0: 0.01,
            c_prefill: 1e-5,
            c_decode: 2e-4,
            c_attn: 0.0,
            c_ctx: 0.0,
        });
        assert!((m.step_s(&a) - (0.01 + 512.0 * 1e-5)).abs() < 1e-12);
        assert_eq!(m.step_s(&BatchShape::default()), 0.0);
    }

    #[test]
    fn tensor_parallel_divides_work_and_adds_communication() {
        let card = lookup("meta-llama/Llama-3.1-70B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let (m1, m4) = (
            StepModel::roofline(&card, &gpu, 1),
            StepModel::roofline(&card, &gpu, 4),
        );
        let mut p = BatchShape::default();
        p.add_prefill(4096, 0);
        let (t1, t4) = (m1.step_s(&p), m4.step_s(&p));
        assert!(t4 < t1 / 3.0 && t4 > t1 / 4.0 - 0.01, "{t1} {t4}");
    }

    #[test]
    fn a_mixture_of_experts_reads_the_experts_its_tokens_chose() {
        // Qwen3-30B-A3B decoding one token: 8 of 128 experts, so 1/16 of the experts' weights
        // and all the rest; 128 tokens touch 1 - (15/16)^128 of them, almost all.
        let card = lookup("Qwen/Qwen3-30B-A3B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let m = StepModel::roofline(&card, &gpu, 1);
        let (all, experts) = (
            card.weight_bytes() as f64,
            card.expert_weight_bytes() as f64,
        );
        assert_eq!(experts, (48u64 * 128 * 3 * 2048 * 768 * 2) as f64);
        let read = |tokens: u64| {
            let mut b = BatchShape::default();
            for _ in 0..tokens {
                b.add_decode(0);
            }
            let overhead =
                gpu.step_overhead_us * 1e-6 + tokens as f64 * gpu.per_seq_overhead_us * 1e-6;
            let kv = tokens as f64 * card.kv_bytes_per_token(1) as f64;
            // Decode is memory-bound here: the step is its bytes at the HBM rate.
            (m.step_s(&b) - overhead) * gpu.hbm_gbps * 1e9 * gpu.memory_efficiency - kv
        };
        let one = all - experts + experts / 16.0;
        assert!((read(1) / one - 1.0).abs() < 1e-9, "{} vs {one}", read(1));
        let many = all - experts * (15.0f64 / 16.0).powi(128);
        assert!((read(128) / many - 1.0).abs() < 1e-9);
        // A dense model reads every weight whatever the batch.
        let dense = StepModel::roofline(&lookup("meta-llama/Llama-3.1-8B").unwrap(), &gpu, 1);
        assert_eq!(dense.expert_weight_bytes, 0.0);
    }

    #[test]
    fn expert_parallelism_trades_the_moe_all_reduce_for_an_all_to_all() {
        // Qwen3-30B-A3B at TP 4, a 1,024-token prefill: per token and MoE layer (48 of them)
        // the all-reduce moved 2,048 x 2 bytes x 2 x 3/4 = 6,144 bytes; the all-to-all sends it
        // to 8 experts and back, 2 x 8 x 4,096 x 3/4 = 49,152 bytes. 1,024 tokens x 48 layers x
        // 43,008 more bytes over 450 GB/s: 4.697 ms longer.
        let card = lookup("Qwen/Qwen3-30B-A3B").unwrap();
        let gpu = GpuProfile::lookup("H100").unwrap();
        let tp = StepModel::roofline(&card, &gpu, 4);
        let ep = tp.clone().with_expert_parallel(&card, 4);
        let mut b = BatchShape::default();
        b.add_prefill(1024, 0);
        let want = 1024.0 * 48.0 * 43_008.0 / 450e9;
        let got = ep.step_s(&b) - tp.step_s(&b);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // Dense models and a single rank are unchanged.
        let llama = lookup("meta-llama/Llama-3.1-8B").unwrap();
        let d = StepModel::roofline(&llama, &gpu, 4);
        assert_eq!(d.clone().with_expert_parallel(&llama, 4), d);
        let one = StepModel::roofline(&card, &gpu, 1);
        assert_eq!(one.clone().with_expert_parallel(&card, 1), one);
    }
}

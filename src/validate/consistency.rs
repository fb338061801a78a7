//! Ground truth checked before it is used: whether a run's published measurements hold together
//! under the setup its study states, before any prediction is compared with them.
//!
//! Each check uses only the measurements, the workload the study describes (generated as its
//! tool would, not simulated) and the model and GPU it names:
//!
//! - **Tokens**: two throughputs over one wall time fix the tokens per request or their ratio:
//!   `total_tps / output_tps` is `(input + output) / output` of the workload, `input_tps /
//!   total_tps` its input share, `output_tps x 60 / completed_per_min` its output tokens per
//!   request, `input_tps x 60 / completed_per_min` its input tokens per request. A run whose
//!   measurements imply tokens more than [`TOKEN_TOLERANCE`] away from the workload's does not
//!   describe that workload (or counts tokens differently).
//! - **Little's law** for a closed loop of `N` clients without think time: the requests in
//!   flight, `rate x mean latency`, are `N` while every client waits for its answer. The rate
//!   comes from `completed_per_min` or a token throughput over the workload's tokens per
//!   request; the mean latency from `e2e_mean`, or `ttft_mean + tpot_mean x (mean output - 1)`.
//!   Outside `N x (1 ± LITTLE_TOLERANCE)` the rate and the latency cannot both be right.
//! - **Peak compute**: the prompt tokens a run must have computed per second (its input
//!   throughput less every token the workload could possibly hit, at 2 FLOPs per weight each)
//!   cannot exceed the stated GPUs' peak FLOP/s; only when the study names its GPU.

use crate::cost::GpuProfile;
use crate::model::ModelCard;
use crate::trace::Trace;
use std::collections::BTreeMap;

/// Largest relative difference between the tokens a run's measurements imply and the
/// workload's (measurement rounding and a tool's own token counting stay well inside).
pub const TOKEN_TOLERANCE: f64 = 0.10;

/// Largest relative difference between `rate x mean latency` and the number of clients of a
/// closed loop (client-side gaps between requests and an approximate mean latency stay inside).
pub const LITTLE_TOLERANCE: f64 = 0.25;

/// What the checks know about a run besides its measurements.
pub struct Setup<'a> {
    /// The workload the run describes (its measured copy).
    pub trace: &'a Trace,
    /// The tool counts output tokens by tokenizing the answer's text with a tokenizer of its own
    /// (llmperf), so its output token counts are not the workload's: the output-token checks
    /// do not apply.
    pub tool_counts_output: bool,
    /// The model.
    pub card: &'a ModelCard,
    /// The GPU and tensor-parallel size, when the study names the GPU.
    pub gpu: Option<(&'a GpuProfile, u32)>,
}

/// Why the measurements `m` of a run do not hold together (empty: they do).
pub fn check(m: &BTreeMap<String, f64>, setup: &Setup) -> Vec<String> {
    let t = setup.trace;
    let mut out = Vec::new();
    let n = t.requests.len() as f64;
    if n == 0.0 {
        return out;
    }
    let inp = t.requests.iter().map(|r| r.input_len as f64).sum::<f64>() / n;
    let outp = t.requests.iter().map(|r| r.output_len as f64).sum::<f64>() / n;
    let get = |k: &str| m.get(k).copied().filter(|x| x.is_finite() && *x > 0.0);
    let output_tps = get("output_tps").or_else(|| get("output_throughput_tok_s"));
    let total_tps = get("total_tps");
    let input_tps = get("input_tps").or_else(|| Some(total_tps? - output_tps?));
    let per_min = get("completed_per_min").or_else(|| get("requests_per_min"));
    let off = |implied: f64, want: f64| (implied - want).abs() / want > TOKEN_TOLERANCE;

    // Tokens.
    if let (Some(tot), Some(o), false) = (total_tps, output_tps, setup.tool_counts_output) {
        let (implied, want) = ((tot - o) / o, inp / outp);
        if off(implied, want) {
            out.push(format!(
                "total_tps / output_tps = {:.3} implies {implied:.2} input tokens per output token; \
                 the workload has {want:.2}",
                tot / o
            ));
        }
    }
    if let (Some(i), Some(tot), None) = (get("input_tps"), total_tps, output_tps) {
        let (implied, want) = (i / tot, inp / (inp + outp));
        if off(implied, want) {
            out.push(format!(
                "input_tps / total_tps = {implied:.4}; the workload's input share is {want:.4}"
            ));
        }
    }
    if let Some(pm) = per_min {
        let rate = pm / 60.0;
        if let (Some(o), false) = (output_tps, setup.tool_counts_output) {
            let implied = o / rate;
            if off(implied, outp) {
                out.push(format!(
                    "output throughput / completed requests = {implied:.1} output tokens per \
                     request; the workload asks for {outp:.1}"
                ));
            }
        }
        if let Some(i) = get("input_tps") {
            let implied = i / rate;
            if off(implied, inp) {
                out.push(format!(
                    "input throughput / completed requests = {implied:.1} prompt tokens per \
                     request; the workload sends {inp:.1}"
                ));
            }
        }
    }

    // Little's law, for a closed loop without think time.
    let clients: u32 = t.meta.pools.iter().map(|p| p.clients).sum();
    let closed = !t.meta.pools.is_empty() && t.requests.iter().all(|r| r.pool.is_some());
    let thinks = t.requests.iter().any(|r| r.think_ns > 0);
    let mean_s = |name: &str| {
        get(&format!("{name}_mean_s")).or_else(|| get(&format!("{name}_mean_ms")).map(|x| x / 1e3))
    };
    // Requests per second: measured directly, else a throughput over the workload's tokens.
    let rate = per_min
        .map(|pm| (pm / 60.0, "completed_per_min".to_string()))
        .or_else(|| {
            input_tps
                .map(|i| {
                    (
                        i / inp,
                        format!("input throughput / {inp:.0} prompt tokens"),
                    )
                })
                .or_else(|| {
                    total_tps.map(|x| {
                        (
                            x / (inp + outp),
                            format!("total throughput / {:.0} tokens", inp + outp),
                        )
                    })
                })
        });
    let latency = mean_s("e2e")
        .map(|w| (w, "e2e_mean".to_string()))
        .or_else(|| {
            let ttft = mean_s("ttft")?;
            if outp <= 1.0 {
                return Some((ttft, "ttft_mean (one output token)".into()));
            }
            let tpot = mean_s("tpot")?;
            Some((
                ttft + tpot * (outp - 1.0),
                format!("ttft_mean + tpot_mean x {:.0}", outp - 1.0),
            ))
        });
    if let (true, false, Some((lambda, how_rate)), Some((w, how_w))) =
        (closed && clients > 0, thinks, rate, latency)
    {
        let in_flight = lambda * w;
        let c = clients as f64;
        if (in_flight - c).abs() / c > LITTLE_TOLERANCE {
            out.push(format!(
                "Little's law: {c:.0} closed-loop clients at {lambda:.3} requests/s ({how_rate}) \
                 imply a mean latency of {:.3} s, but {how_w} is {w:.3} s ({in_flight:.2} \
                 requests in flight, not {c:.0})",
                c / lambda
            ));
        }
    }

    // Peak compute.
    if let (Some((gpu, tp)), Some(i)) = (setup.gpu, input_tps) {
        let reusable = crate::trace::stats::reuse_fraction(t, 1);
        let computed = i * (1.0 - reusable);
        let flops = computed * 2.0 * setup.card.active_matmul_params() as f64;
        let peak = gpu.peak_tflops * 1e12 * tp.max(1) as f64;
        if flops > peak {
            out.push(format!(
                "{computed:.0} prompt tokens/s must be computed (input throughput less the {:.1} % \
                 any cache could hit): {:.0} TFLOP/s, above the {:.0} TFLOP/s peak of {} x {}",
                reusable * 100.0,
                flops / 1e12,
                peak / 1e12,
                tp.max(1),
                gpu.name
            ));
        }
    }
    out
}

/// Median and largest |relative error| of `errors`.
pub fn error_stats(mut errors: Vec<f64>) -> (Option<f64>, Option<f64>) {
    errors.sort_by(f64::total_cmp);
    (
        crate::util::stats::quantile_sorted(&errors, 0.5),
        errors.last().copied(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{pooled, req, trace};
    use crate::trace::Run;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// 10 closed-loop clients, 100 requests of 15,000 prompt tokens and 1 output token each.
    fn ten_clients() -> Trace {
        let reqs = (0..100)
            .map(|i| req(i, 0, vec![Run::new(i, 0, 15_000)], 1))
            .collect();
        pooled(reqs, 10)
    }

    fn setup<'a>(t: &'a Trace, card: &'a ModelCard) -> Setup<'a> {
        Setup {
            trace: t,
            tool_counts_output: false,
            card,
            gpu: None,
        }
    }

    #[test]
    fn littles_law_needs_the_clients_in_flight() {
        let card = crate::model::lookup("Qwen/Qwen3-8B").unwrap();
        let t = ten_clients();
        // 33,900 prompt tokens/s = 2.26 requests/s of 15,000 tokens: 10 clients without think
        // time wait 10 / 2.26 = 4.42 s each. A mean TTFT (= e2e, one output token) of 0.98 s
        // leaves 2.2 requests in flight: inconsistent.
        let bad = check(
            &m(&[("input_tps", 33_900.0), ("ttft_mean_ms", 980.0)]),
            &setup(&t, &card),
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("4.425 s") && bad[0].contains("2.21 requests"),
            "{bad:?}"
        );
        // 4.3 s: 9.7 in flight, within 25 %.
        let ok = check(
            &m(&[("input_tps", 33_900.0), ("ttft_mean_s", 4.3)]),
            &setup(&t, &card),
        );
        assert!(ok.is_empty(), "{ok:?}");
        // With think time the loop is not saturated: no check.
        let mut thinking = ten_clients();
        thinking.requests[5].think_ns = 1;
        let s = setup(&thinking, &card);
        assert!(check(&m(&[("input_tps", 33_900.0), ("ttft_mean_ms", 980.0)]), &s).is_empty());
        // An open loop: no check.
        let open = trace(
            t.requests
                .iter()
                .cloned()
                .map(|mut r| {
                    r.pool = None;
                    r
                })
                .collect(),
        );
        let s = setup(&open, &card);
        assert!(check(&m(&[("input_tps", 33_900.0), ("ttft_mean_ms", 980.0)]), &s).is_empty());
    }

    #[test]
    fn throughputs_must_imply_the_workloads_tokens() {
        let card = crate::model::lookup("Qwen/Qwen3-8B").unwrap();
        // 100 requests of 1,024 prompt and 128 output tokens, all at once.
        let t = trace(
            (0..100)
                .map(|i| req(i, 0, vec![Run::new(i, 0, 1024)], 128))
                .collect(),
        );
        let s = setup(&t, &card);
        // vllm bench on an RTX 4090: (5,212.32 - 579.86) / 579.86 = 7.99 prompt tokens per
        // output token, the workload's 1,024 / 128 = 8.
        assert!(check(&m(&[("total_tps", 5212.32), ("output_tps", 579.86)]), &s).is_empty());
        // 9.6 against 8: 20 % off.
        let bad = check(&m(&[("total_tps", 6146.56), ("output_tps", 579.86)]), &s);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("implies 9.60 input tokens per output token"),
            "{bad:?}"
        );
        // 229.76 output tokens/s at 189.99 requests/min: 72.6 tokens per request, not 128.
        let per_req = m(&[
            ("output_throughput_tok_s", 229.76),
            ("completed_per_min", 189.99),
        ]);
        let bad = check(&per_req, &s);
        assert!(
            bad.iter()
                .any(|b| b.contains("72.6 output tokens per request")),
            "{bad:?}"
        );
        // A tool counting output tokens its own way (llmperf) is not held to the workload's.
        let llmperf = Setup {
            tool_counts_output: true,
            ..setup(&t, &card)
        };
        assert!(check(&per_req, &llmperf).is_empty());
    }

    #[test]
    fn computed_prompt_tokens_cannot_outrun_the_gpus_peak() {
        let card = crate::model::lookup("Qwen/Qwen3-8B").unwrap();
        let gpu = GpuProfile::lookup("RTX4090").unwrap();
        // Unique prompts (nothing to hit): 2 x active weights FLOPs per prompt token.
        let t = trace(
            (0..10)
                .map(|i| req(i, 0, vec![Run::new(i, 0, 1024)], 128))
                .collect(),
        );
        let s = Setup {
            gpu: Some((&gpu, 1)),
            ..setup(&t, &card)
        };
        let flops = 2.0 * card.active_matmul_params() as f64;
        let peak_tokens = gpu.peak_tflops * 1e12 / flops;
        assert!(check(&m(&[("input_tps", 0.9 * peak_tokens)]), &s).is_empty());
        let bad = check(&m(&[("input_tps", 1.1 * peak_tokens)]), &s);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("above the 165 TFLOP/s peak of 1 x"),
            "{bad:?}"
        );
        // Two ranks double the peak.
        let tp2 = Setup {
            gpu: Some((&gpu, 2)),
            ..setup(&t, &card)
        };
        assert!(check(&m(&[("input_tps", 1.1 * peak_tokens)]), &tp2).is_empty());
        // When every prompt could be a hit (each sent twice), nothing must be computed.
        let mut twice = t.requests.clone();
        twice.extend(t.requests.iter().map(|r| {
            let mut c = r.clone();
            c.id += 100;
            c
        }));
        let tw = trace(twice);
        let s = Setup {
            gpu: Some((&gpu, 1)),
            ..setup(&tw, &card)
        };
        assert!(check(&m(&[("input_tps", 1.5 * peak_tokens)]), &s).is_empty());
    }
}

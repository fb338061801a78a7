//! The engine's must-hold properties on realistic workloads (issue: engine simulator).

use kvreplay::config::RunConfig;
use kvreplay::engine::request::{Phase, RejectReason, ReqState};
use kvreplay::sim::{SimResult, simulate};
use kvreplay::time::SimTime;
use kvreplay::trace::Trace;
use kvreplay::trace::generate::{llmperf, random};
use serde_json::json;

fn run(trace: &Trace, keys: serde_json::Value) -> SimResult {
    let mut c = RunConfig::default();
    c.set_all(keys.as_object().unwrap()).unwrap();
    let (setup, _, _) = c.setup().unwrap();
    simulate(trace, &setup).unwrap()
}

fn round(trace: &Trace, r: &SimResult, k: u32) -> Vec<ReqState> {
    r.reqs
        .iter()
        .zip(&trace.requests)
        .filter(|(_, q)| q.round == k)
        .map(|(s, _)| s.clone())
        .collect()
}

fn mean_ttft_s(reqs: &[ReqState]) -> f64 {
    reqs.iter()
        .map(|s| (s.first_token.unwrap() - s.arrival).as_secs_f64())
        .sum::<f64>()
        / reqs.len() as f64
}

fn hit_fraction(reqs: &[ReqState]) -> (f64, f64) {
    let total: u64 = reqs.iter().map(|s| s.prompt_len as u64).sum();
    let gpu: u64 = reqs.iter().map(|s| s.origin.gpu as u64).sum();
    let cpu: u64 = reqs.iter().map(|s| s.origin.cpu as u64).sum();
    (gpu as f64 / total as f64, cpu as f64 / total as f64)
}

/// The default comparison's workload: long_doc_qa with 51 documents of 10,000 tokens, tiled
/// once, 4 requests in flight.
fn long_doc_qa_51() -> Trace {
    kvreplay::compare::default_trace().unwrap()
}

#[test]
fn long_doc_qa_vllm_alone_reuses_nothing_and_a_66_gib_cpu_tier_hits_everything() {
    let t = long_doc_qa_51();
    let base = json!({"model": "meta-llama/Meta-Llama-3.1-8B-Instruct", "gpu": "H100"});
    let none = run(&t, base.clone());
    let q_none = round(&t, &none, 1);
    let (gpu, cpu) = hit_fraction(&q_none);
    // 51 x 10,000 tokens x 128 KiB exceed the GPU's ~446k-token KV cache, and tile order is
    // LRU's worst case: every document is evicted just before it comes back.
    assert!(gpu < 0.01, "GPU reuse {gpu}");
    assert_eq!(cpu, 0.0);

    let mut cfg = base.clone();
    cfg["tier"] = json!("cpu");
    cfg["max_local_cpu_size_gb"] = json!(66);
    cfg["chunk_size"] = json!(256);
    let lmc = run(&t, cfg);
    let q_lmc = round(&t, &lmc, 1);
    // 51 x 9,984 tokens (39 full chunks each) fit in 66 GiB: every query is a full chunk hit,
    // loaded from CPU; only the 16 tokens of the partial last chunk are computed.
    for s in &q_lmc {
        assert_eq!(s.origin.gpu + s.origin.cpu, 9_984, "{:?}", s.origin);
        assert_eq!(s.origin.computed, 16);
        assert!(s.bytes_loaded > 0);
    }
    let (ttft_none, ttft_lmc) = (mean_ttft_s(&q_none), mean_ttft_s(&q_lmc));
    assert!(ttft_lmc < ttft_none / 2.0, "{ttft_lmc} vs {ttft_none}");
    // Warmup stores cost a little on the critical path.
    let (w_none, w_lmc) = (
        mean_ttft_s(&round(&t, &none, 0)),
        mean_ttft_s(&round(&t, &lmc, 0)),
    );
    assert!(w_lmc > w_none, "{w_lmc} vs {w_none}");

    // 66e9 bytes (decimal) would not hold them: LRU thrashes and the hits vanish.
    let mut small = base;
    small["tier"] = json!("cpu");
    small["max_local_cpu_size_gb"] = json!(66e9 / (1u64 << 30) as f64);
    let thrash = run(&t, small);
    let (_, cpu) = hit_fraction(&round(&t, &thrash, 1));
    assert!(cpu < 0.05, "decimal 66 GB still hit {cpu}");
}

#[test]
fn offload_without_reuse_only_costs() {
    let p = random::Params {
        random_input_len: 2048,
        random_output_len: 64,
        num_prompts: 100,
        ..Default::default()
    };
    let t = random::generate(&p, 1).unwrap();
    let none = run(&t, json!({"model": "Qwen/Qwen3-8B", "gpu": "H100"}));
    // The batch fits in the KV cache: no preemption, whose recompute an offload could spare.
    assert_eq!(none.stats.preemptions, 0);
    for tier in ["cpu", "native"] {
        let off = run(
            &t,
            json!({"model": "Qwen/Qwen3-8B", "gpu": "H100", "tier": tier}),
        );
        let hits: u64 = off
            .reqs
            .iter()
            .map(|s| (s.origin.cpu + s.origin.gpu) as u64)
            .sum();
        assert_eq!(hits, 0, "{tier}");
        let ttft = |r: &SimResult| {
            r.reqs
                .iter()
                .map(|s| s.first_token.map(SimTime::as_ns).unwrap())
                .sum::<u64>()
        };
        assert!(ttft(&off) >= ttft(&none), "{tier}");
        assert!(off.end.as_ns() >= none.end.as_ns(), "{tier}");
    }
    // LMCache stores are on the critical path: strictly slower.
    let lmc = run(
        &t,
        json!({"model": "Qwen/Qwen3-8B", "gpu": "H100", "tier": "cpu"}),
    );
    assert!(lmc.end.as_ns() > none.end.as_ns());
}

#[test]
fn ttft_grows_with_remote_rtt() {
    let p = llmperf::Params {
        mean_input_tokens: 1024,
        stddev_input_tokens: 0,
        max_num_completed_requests: 20,
        num_concurrent_requests: 1,
        ..Default::default()
    };
    let t = llmperf::generate(&p, 3).unwrap();
    let mut last = 0.0;
    for rtt in [0.0, 10.0, 30.0, 50.0] {
        let r = run(
            &t,
            json!({"model": "Qwen/Qwen3-0.6B", "gpu": "H100", "tier": "remote", "remote": "redis",
                   "local_cpu": false, "rtt_ms": rtt}),
        );
        let ttft = r
            .reqs
            .iter()
            .map(|s| (s.first_token.unwrap() - s.arrival).as_ns() as f64)
            .sum::<f64>()
            / r.reqs.len() as f64;
        assert!(ttft > last, "rtt {rtt}: {ttft} <= {last}");
        last = ttft;
    }
}

#[test]
fn every_request_is_simulated_or_rejected_with_a_reason() {
    // Prompts longer than max_model_len are rejected, not dropped.
    let p = random::Params {
        random_input_len: 3000,
        random_range_ratio: 0.5,
        random_output_len: 16,
        num_prompts: 100,
        ..Default::default()
    };
    let t = random::generate(&p, 5).unwrap();
    let r = run(
        &t,
        json!({"model": "Qwen/Qwen3-0.6B", "gpu": "L40S", "max_model_len": 3000}),
    );
    let finished = r.reqs.iter().filter(|s| s.phase == Phase::Finished).count();
    let rejected: Vec<_> = r
        .reqs
        .iter()
        .filter(|s| s.phase == Phase::Rejected)
        .collect();
    assert_eq!(finished + rejected.len(), t.requests.len());
    assert!(!rejected.is_empty());
    for s in rejected {
        assert!(matches!(
            s.reject,
            Some(RejectReason::ExceedsMaxModelLen {
                max_model_len: 3000,
                ..
            })
        ));
        assert!(s.prompt_len + s.output_len > 3000);
    }
}

#[test]
fn shortcuts_leave_a_real_trace_unchanged() {
    use kvreplay::trace::import::{Format, ImportOptions, import};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces/mooncake_conversation_trace.jsonl");
    // Without the shared materials beside the checkout the test says so and skips, except in
    // CI, which must run it.
    if !path.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing",
            path.display()
        );
        eprintln!("skipped: {} is missing", path.display());
        return;
    }
    let (mut t, _) = import(Format::Mooncake, &path, &ImportOptions::default()).unwrap();
    t.requests.truncate(1000);
    let mut c = RunConfig::default();
    c.set_all(
        json!({"tier": "cpu", "max_local_cpu_size_gb": 20, "num_gpu_blocks": 20000})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let (mut setup, _, _) = c.setup().unwrap();
    let fast = simulate(&t, &setup).unwrap();
    setup.reference_mode = true;
    let slow = simulate(&t, &setup).unwrap();
    let key = |r: &SimResult| {
        r.reqs
            .iter()
            .map(|s| {
                (
                    s.first_token.map(SimTime::as_ns),
                    s.finish.map(SimTime::as_ns),
                    s.origin,
                    s.rehits,
                )
            })
            .collect::<Vec<_>>()
    };
    // Both the GPU prefix cache (at first admissions or, after preemptions, re-admissions) and
    // the CPU tier serve hits.
    assert!(
        fast.reqs
            .iter()
            .any(|s| s.origin.gpu > 0 || s.rehits.gpu > 0)
            && fast
                .reqs
                .iter()
                .any(|s| s.origin.cpu > 0 || s.rehits.external > 0)
    );
    assert_eq!(key(&fast), key(&slow));
}

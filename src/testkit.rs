//! Builders shared by the unit tests: requests, traces, and a simulation whose every step takes
//! exactly 10 ms (Llama-3.1-8B shapes on an H100, free transfers), so that expected times can be
//! worked out by hand.

use crate::cost::{Fitted, GpuProfile, StepModel, TransferProfile};
use crate::engine::{EngineConfig, EngineFlags};
use crate::model::lookup;
use crate::sim::{SimResult, SimSetup, simulate};
use crate::tiers::OffloadConfig;
use crate::tiers::lmcache::LmCacheConfig;
use crate::time::SimDuration;
use crate::trace::{Pool, Request, Run, Trace, TraceMeta};

/// One millisecond in nanoseconds.
pub const MS: u64 = 1_000_000;

/// Request `id` sent at `at_ms` with prompt `prompt` and `out` tokens to generate.
pub fn req(id: u64, at_ms: u64, prompt: Vec<Run>, out: u32) -> Request {
    Request::new(id, at_ms * MS, prompt, out)
}

/// Request `id` sent at `id` µs with prompt `runs` and 4 tokens to generate (the trace format
/// tests' request).
pub fn numbered(id: u64, runs: Vec<Run>) -> Request {
    Request::new(id, id * 1000, runs, 4)
}

/// An open-loop trace of `requests`.
pub fn trace(requests: Vec<Request>) -> Trace {
    Trace {
        meta: TraceMeta::new("test"),
        requests,
    }
}

/// A pool (id 0) of `clients` sending `requests` (sessions, rounds and think times as set).
pub fn pooled(mut requests: Vec<Request>, clients: u32) -> Trace {
    for r in &mut requests {
        r.pool = Some(0);
    }
    let mut t = trace(requests);
    t.meta.pools.push(Pool::new(0, clients));
    t
}

/// Step-time coefficients making every step take exactly 10 ms.
pub fn ten_ms_steps() -> Fitted {
    Fitted {
        c0: 0.010,
        c_prefill: 0.0,
        c_decode: 0.0,
        c_attn: 0.0,
        c_ctx: 0.0,
    }
}

/// Llama-3.1-8B on an H100 with every step taking exactly 10 ms, free transfers and KV usage
/// sampled every 10 ms.
pub fn setup(flags: EngineFlags, offload: OffloadConfig) -> SimSetup {
    let card = lookup("meta-llama/Llama-3.1-8B").unwrap();
    let gpu = GpuProfile::lookup("H100").unwrap();
    let engine = EngineConfig::resolve(&card, &gpu, &flags).unwrap();
    let mut step_model = StepModel::roofline(&card, &gpu, 1);
    step_model.fitted = Some(ten_ms_steps());
    let mut transfer = TransferProfile::spec_defaults(&gpu);
    transfer.chunk_overhead_us = 0.0;
    SimSetup {
        engine,
        offload,
        step_model,
        transfer,
        layers: card.layers,
        sample_interval: SimDuration::from_ns(10 * MS),
        reference_mode: false,
        request_overhead: SimDuration::ZERO,
        fleet: crate::fleet::FleetConfig::default(),
        pools: Vec::new(),
    }
}

/// LMCache with `chunk`-token chunks and a CPU tier of `gib` GiB.
pub fn lmcache_cpu(chunk: u32, gib: u64) -> OffloadConfig {
    OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: chunk,
        cpu_bytes: Some(gib << 30),
        ..Default::default()
    })
}

/// Simulates `t` on [`setup`] with `flags` and no offload.
pub fn run(t: &Trace, flags: EngineFlags) -> SimResult {
    simulate(t, &setup(flags, OffloadConfig::None)).unwrap()
}

/// One running sequence at a time, so that requests queue behind each other.
pub fn serial() -> EngineFlags {
    EngineFlags {
        max_num_seqs: Some(1),
        ..Default::default()
    }
}

/// Open loop, one at a time: A (out 2) and B (out 1) at 0 ms, C too long for
/// max_model_len 1000, D (out 3) at 100 ms with a measured TTFT and e2e.
pub fn mixed() -> (Trace, SimResult) {
    let mut reqs = vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 2),
        req(1, 0, vec![Run::new(2, 0, 100)], 1),
        req(2, 0, vec![Run::new(3, 0, 990)], 20),
        req(3, 100, vec![Run::new(4, 0, 100)], 3),
    ];
    reqs[3].measured.ttft_ns = Some(12 * MS);
    reqs[3].measured.e2e_ns = Some(35 * MS);
    reqs[3].session = Some(9);
    let t = trace(reqs);
    let f = EngineFlags {
        max_model_len: Some(1000),
        ..serial()
    };
    let r = run(&t, f);
    (t, r)
}

/// A file of the shared materials beside the checkout (`shared("validation/long-doc-qa.json")`),
/// or `None` when they are absent: the test then skips itself and says why. Where `CI` is set a
/// missing file fails the test instead, so that CI never skips silently.
pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: CI runs every test, so the shared materials must sit beside the checkout",
        p.display()
    );
    eprintln!(
        "skipped: {} is missing (the shared materials are not beside this checkout)",
        p.display()
    );
    None
}

/// A study of `../shared/validation` (see [`shared`]).
pub fn shared_study(name: &str) -> Option<std::path::PathBuf> {
    shared(&format!("validation/{name}"))
}

/// The published study files in `../shared/validation`.
pub const SHIPPED_STUDIES: [&str; 4] = [
    "cache-miss-random.json",
    "lmcache-network-rtt.json",
    "long-doc-qa.json",
    "multi-turn-prefill.json",
];

//! Fleet mechanisms against hand-computed cases.

use super::*;
use crate::engine::EngineFlags;
use crate::sim::{SimResult, simulate};
use crate::testkit::{MS, lmcache_cpu, req, setup, trace};
use crate::tiers::OffloadConfig;
use crate::time::SimTime;
use crate::trace::{Request, Run, Trace};

fn fleet(t: &Trace, replicas: u32, router: RouterKind, offload: OffloadConfig) -> SimResult {
    let mut s = setup(EngineFlags::default(), offload);
    s.fleet = FleetConfig {
        replicas,
        router,
        ..FleetConfig::default()
    };
    simulate(t, &s).unwrap()
}

/// What a request's run looked like, for comparing runs.
fn outcome(r: &crate::engine::request::ReqState) -> impl PartialEq + std::fmt::Debug {
    (
        r.arrival,
        r.scheduled,
        r.first_token,
        r.finish,
        r.origin,
        r.preemptions,
        r.itl_sum,
        r.itl_max,
    )
}

/// A small open-loop trace with shared prefixes, queueing and preemption-free load.
fn base_trace() -> Trace {
    let mut reqs = Vec::new();
    for i in 0..24u64 {
        let doc = Run::new(1 + i % 3, 0, 700);
        let own = Run::new(100 + i, 0, 50 + (i as u32 * 37) % 300);
        reqs.push(req(i, i * 7, vec![doc, own], 3 + (i as u32 % 5)));
    }
    trace(reqs)
}

/// `t` copied `n` times, interleaved (request i of copy k at position n*i + k), every copy
/// with content of its own.
fn interleaved(t: &Trace, n: u64) -> Trace {
    let mut reqs = Vec::new();
    for (i, r) in t.requests.iter().enumerate() {
        for k in 0..n {
            let runs = r
                .prompt
                .iter()
                .map(|x| Run::new(x.content + k * 1_000_000, x.offset, x.len))
                .collect();
            let mut c = Request::new(i as u64 * n + k, r.arrival_ns, runs, r.output_len);
            c.output_content = r.output_content + k * 1_000_000;
            reqs.push(c);
        }
    }
    trace(reqs)
}

#[test]
fn one_replica_is_the_single_engine_whatever_the_router() {
    let t = base_trace();
    let alone = simulate(&t, &setup(EngineFlags::default(), lmcache_cpu(256, 1))).unwrap();
    for router in RouterKind::ALL {
        let f = fleet(&t, 1, router, lmcache_cpu(256, 1));
        for (a, b) in alone.reqs.iter().zip(&f.reqs) {
            assert_eq!(outcome(a), outcome(b), "{router:?}");
        }
        assert_eq!(alone.stats, f.stats, "{router:?}");
        assert_eq!(alone.kv_samples, f.kv_samples, "{router:?}");
        assert!(f.replicas.is_empty() && f.replica_of.is_empty());
    }
}

/// N identical replicas under round-robin, fed N interleaved copies of a trace (each with its
/// own content): replica k serves copy k exactly as a single engine serves the trace.
#[test]
fn round_robin_replicas_each_replay_their_copy_as_one_engine_would() {
    let t = base_trace();
    for offload in [OffloadConfig::None, lmcache_cpu(256, 1)] {
        let alone = simulate(&t, &setup(EngineFlags::default(), offload.clone())).unwrap();
        let n = 3;
        let f = fleet(
            &interleaved(&t, n),
            n as u32,
            RouterKind::RoundRobin,
            offload,
        );
        assert_eq!(f.replicas.len(), 3);
        for (i, a) in alone.reqs.iter().enumerate() {
            for k in 0..n as usize {
                let j = i * n as usize + k;
                assert_eq!(f.replica_of[j], k as u32);
                assert_eq!(outcome(a), outcome(&f.reqs[j]), "request {i}, copy {k}");
            }
        }
        for r in &f.replicas {
            assert_eq!(r.stats, alone.stats);
            assert_eq!(r.kv_samples, alone.kv_samples);
        }
        // The fleet's counters are the replicas' added up.
        assert_eq!(f.stats.steps, 3 * alone.stats.steps);
        assert_eq!(f.num_gpu_blocks, 3 * alone.num_gpu_blocks);
    }
}

/// Three sessions of three turns on two replicas, one request at a time: every turn sends the
/// session's 512-token document and a new 64-token question.
fn sessions() -> Trace {
    let mut reqs = Vec::new();
    for turn in 0..3u64 {
        for s in 0..3u64 {
            let k = turn * 3 + s;
            let prompt = vec![Run::new(10 + s, 0, 512), Run::new(100 + k, 0, 64)];
            let mut r = req(k, k * 100, prompt, 2);
            r.session = Some(s);
            reqs.push(r);
        }
    }
    trace(reqs)
}

/// GPU prefix-cache hits (tokens) over the whole run.
fn gpu_hits(r: &SimResult) -> u32 {
    r.reqs.iter().map(|q| q.origin.gpu).sum()
}

/// Round-robin sends request k to replica k mod 2: session s's turns go to (s + turn) mod 2,
/// so only turn 2 finds its document (left by turn 0): 3 sessions x 512 tokens. Routers that
/// keep a session on one replica find it at turns 1 and 2: 3 x 2 x 512 tokens.
#[test]
fn a_cache_aware_router_finds_the_hits_from_events_or_its_decisions_and_none_from_nothing() {
    let t = sessions();
    let with = |router: RouterKind, view: CacheView| {
        let mut s = setup(EngineFlags::default(), OffloadConfig::None);
        s.fleet = FleetConfig {
            replicas: 2,
            router,
            cache_view: Some(view),
            ..FleetConfig::default()
        };
        gpu_hits(&simulate(&t, &s).unwrap())
    };
    for router in [RouterKind::LlmD, RouterKind::Dynamo] {
        for view in [CacheView::Events, CacheView::Decisions] {
            assert_eq!(with(router, view), 3 * 2 * 512, "{router:?} {view:?}");
        }
    }
    // Seeing nothing, Dynamo balances load alone: some turns land where their session's
    // prefix is not.
    assert!(with(RouterKind::Dynamo, CacheView::Nothing) < 3 * 2 * 512);
}

/// The same sessions with the KV events late. Request k is sent at 100k ms and its prefill
/// step (10 ms) caches its 36 blocks, published at its end. Turn t of session s is sent at
/// (3t + s) x 100 ms.
/// - 50 ms late: turn 0's events arrive 60 ms after its send, long before turn 1: the exact
///   view's hits.
/// - 350 ms late: turn 0's arrive at 360 ms after its send, after turn 1 was routed (300 ms)
///   but before turn 2 (600 ms), and turn 1's arrive after turn 2 was routed. Turn 1 is
///   placed blind; turn 2 goes where turn 0 went, its document a hit there (512 tokens).
/// - 1000 ms late: nothing arrives before the last request: the routing (and the hits) of
///   the router that sees nothing.
#[test]
fn late_kv_events_leave_the_router_blind_until_they_arrive() {
    let t = sessions();
    let run = |view: CacheView, delay_ms: f64| {
        let mut s = setup(EngineFlags::default(), OffloadConfig::None);
        s.fleet = FleetConfig {
            replicas: 2,
            router: RouterKind::Dynamo,
            cache_view: Some(view),
            events_delay_ms: delay_ms,
            ..FleetConfig::default()
        };
        simulate(&t, &s).unwrap()
    };
    assert_eq!(gpu_hits(&run(CacheView::Events, 50.0)), 3 * 2 * 512);
    let mid = run(CacheView::Events, 350.0);
    let on = |turn: usize, s: usize| mid.replica_of[turn * 3 + s];
    let lucky = (0..3).filter(|&s| on(1, s) == on(0, s)).count() as u32;
    for s in 0..3 {
        assert_eq!(on(2, s), on(0, s), "session {s}: turn 2 follows turn 0");
    }
    assert_eq!(gpu_hits(&mid), 3 * 512 + lucky * 512);
    // Turns 0 and 1 are placed exactly as by the router that sees nothing (same seed).
    let nothing = run(CacheView::Nothing, 0.0);
    assert_eq!(mid.replica_of[..6], nothing.replica_of[..6]);
    let blind = run(CacheView::Events, 1000.0);
    assert_eq!(blind.replica_of, nothing.replica_of);
    assert_eq!(gpu_hits(&blind), gpu_hits(&nothing));
}

#[test]
fn prefix_aware_and_session_routing_find_the_hits_round_robin_misses() {
    let t = sessions();
    let rr = fleet(&t, 2, RouterKind::RoundRobin, OffloadConfig::None);
    assert_eq!(gpu_hits(&rr), 3 * 512);
    for router in [
        RouterKind::Session,
        RouterKind::LlmD,
        RouterKind::Oracle,
        RouterKind::Dynamo,
    ] {
        let f = fleet(&t, 2, router, OffloadConfig::None);
        assert_eq!(gpu_hits(&f), 3 * 2 * 512, "{router:?}");
        // Every turn of a session on one replica.
        for s in 0..3 {
            let on: Vec<u32> = (0..3).map(|turn| f.replica_of[turn * 3 + s]).collect();
            assert!(on.iter().all(|r| *r == on[0]), "{router:?}: {on:?}");
        }
    }
}

/// Every request is finished or rejected, every prompt token comes from exactly one place, and
/// a rerun is identical, for every router.
#[test]
fn fleets_conserve_requests_and_tokens_and_rerun_identically() {
    let mut reqs = Vec::new();
    for i in 0..120u64 {
        let doc = Run::new(1 + i % 7, 0, 400 + (i as u32 % 5) * 100);
        let own = Run::new(1000 + i, 0, 30 + (i as u32 * 53) % 500);
        reqs.push(req(i, i * 3, vec![doc, own], 2 + (i as u32 % 40)));
    }
    // One request too long for the model: rejected with its reason.
    reqs.push(req(120, 10, vec![Run::new(9999, 0, 200_000)], 4));
    let t = trace(reqs);
    for router in RouterKind::ALL {
        let a = fleet(&t, 4, router, lmcache_cpu(256, 1));
        let b = fleet(&t, 4, router, lmcache_cpu(256, 1));
        let finished = a.reqs.iter().filter(|r| r.finish.is_some()).count();
        let rejected = a.reqs.iter().filter(|r| r.reject.is_some()).count();
        assert_eq!((finished, rejected), (120, 1), "{router:?}");
        for (q, r) in t.requests.iter().zip(&a.reqs) {
            if r.finish.is_some() {
                let o = r.origin;
                assert_eq!(o.gpu + o.cpu + o.disk + o.remote + o.computed, q.input_len);
            }
        }
        for (x, y) in a.reqs.iter().zip(&b.reqs) {
            assert_eq!(outcome(x), outcome(y), "{router:?}");
        }
        assert_eq!(a.replica_of, b.replica_of, "{router:?}");
        let steps: u64 = a.replicas.iter().map(|r| r.stats.steps).sum();
        assert_eq!(steps, a.stats.steps);
        assert!(a.end > SimTime::from_ns(360 * MS));
    }
}

/// The same accounting for a fleet of pools with different tiers (none, LMCache CPU, vLLM's
/// native offload) behind routers fed by late KV events, and by a controller.
#[test]
fn pooled_fleets_conserve_requests_and_tokens_and_rerun_identically() {
    use crate::config::RunConfig;
    use serde_json::json;
    let mut reqs = Vec::new();
    for i in 0..90u64 {
        let doc = Run::new(1 + i % 5, 0, 300 + (i as u32 % 4) * 200);
        let own = Run::new(1000 + i, 0, 20 + (i as u32 * 37) % 400);
        reqs.push(req(i, i * 4, vec![doc, own], 2 + (i as u32 % 30)));
    }
    let t = trace(reqs);
    for (router, view) in [
        ("llm_d", "events"),
        ("dynamo", "events"),
        ("kvaware", "events"),
    ] {
        let mut c = RunConfig::default();
        c.set("router", &json!(router)).unwrap();
        c.set("router_cache_view", &json!(view)).unwrap();
        c.set("router_events_delay_ms", &json!(30)).unwrap();
        c.set(
            "pools",
            &json!([
                {"count": 1},
                {"count": 2, "tier": "cpu", "max_local_cpu_size_gb": 1},
                {"count": 1, "tier": "native", "kv_offloading_size": 1},
            ]),
        )
        .unwrap();
        let s = c.setup().unwrap().0;
        let a = simulate(&t, &s).unwrap();
        let b = simulate(&t, &s).unwrap();
        assert_eq!(a.reqs.iter().filter(|r| r.finish.is_some()).count(), 90);
        for (q, r) in t.requests.iter().zip(&a.reqs) {
            let o = r.origin;
            assert_eq!(o.gpu + o.cpu + o.disk + o.remote + o.computed, q.input_len);
        }
        for (x, y) in a.reqs.iter().zip(&b.reqs) {
            assert_eq!(outcome(x), outcome(y), "{router}");
        }
        assert_eq!(a.replica_of, b.replica_of, "{router}");
        // Each pool's replicas have their pool's connector.
        let kinds: Vec<Option<&str>> = a
            .replicas
            .iter()
            .map(|r| match &r.connector_stats {
                None => None,
                Some(crate::connector::ConnectorStats::LmCache { .. }) => Some("lmcache"),
                Some(crate::connector::ConnectorStats::Native { .. }) => Some("native"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![None, Some("lmcache"), Some("lmcache"), Some("native")],
            "{router}"
        );
    }
}

/// A fleet's run writes which replica served each request, each replica's summary and usage
/// series, and reads back through the same types.
#[test]
fn a_fleet_run_writes_its_replicas() {
    let cfg = crate::config::RunConfig {
        fleet: FleetConfig {
            replicas: 2,
            ..FleetConfig::default()
        },
        ..Default::default()
    };
    let t = sessions();
    let out = crate::pipeline::run(&t, &cfg).unwrap();
    let dir = std::env::temp_dir().join(format!("kvr-fleet-{}", std::process::id()));
    crate::report::write_run(&dir, &out, &cfg.to_json()).unwrap();
    let recs = crate::report::parquet::read_requests(&dir.join("requests.parquet")).unwrap();
    // Round-robin: request k on replica k mod 2.
    let on: Vec<Option<u32>> = recs.iter().map(|r| r.replica).collect();
    assert_eq!(on, (0..9).map(|k| Some(k % 2)).collect::<Vec<_>>());
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["config"]["fleet"]["replicas"], 2);
    let s: crate::metrics::summary::RunSummary =
        serde_json::from_value(v["summary"].clone()).unwrap();
    let f = s.fleet.unwrap();
    assert_eq!(
        f.replicas.iter().map(|r| r.requests).collect::<Vec<_>>(),
        [5, 4]
    );
    assert_eq!(f.imbalance_requests, Some(5.0 / 4.5));
    let kv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kv_usage.json")).unwrap()).unwrap();
    assert_eq!(kv["replicas"].as_array().unwrap().len(), 2);
    assert!(crate::report::print_summary(&out.summary).contains("fleet        2 replicas"));
    // The HTML report plots each replica's load over time.
    let page = crate::report::html::report(&dir, &Default::default()).unwrap();
    assert!(page.contains("<h2>Replicas</h2>") && page.contains("Requests in flight"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A remote-only LMCache (no CPU tier): 256-token chunks, a Redis `rtt_ms` away, shared by the
/// fleet's replicas or not.
fn remote_only(rtt_ms: f64, shared: bool) -> OffloadConfig {
    use crate::tiers::lmcache::{LmCacheConfig, RemoteConfig};
    OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: 256,
        cpu_bytes: None,
        remote: Some(RemoteConfig {
            rtt_s: rtt_ms / 1e3,
            shared,
            ..RemoteConfig::default()
        }),
        ..LmCacheConfig::default()
    })
}

#[test]
fn a_prefix_one_replica_stored_is_loaded_by_another_from_the_shared_store() {
    // Request 0 (replica 0 under round-robin) computes a 1,024-token prompt and puts its four
    // chunks; request 1, the same prompt, goes to replica 1, whose GPU never saw it.
    let prompt = || vec![Run::new(9, 0, 1024)];
    let two = |gap_ms: u64, shared: bool| {
        let first = fleet(
            &trace(vec![req(0, 0, prompt(), 2)]),
            1,
            RouterKind::RoundRobin,
            remote_only(200.0, shared),
        );
        let ft_ms = first.reqs[0].first_token.unwrap().as_ns() / MS;
        let t = trace(vec![
            req(0, 0, prompt(), 2),
            req(1, ft_ms + gap_ms, prompt(), 2),
        ]);
        let r = fleet(&t, 2, RouterKind::RoundRobin, remote_only(200.0, shared));
        assert_eq!(r.replica_of, [0, 1]);
        r.reqs[1].origin
    };
    // Long after: every chunk is in the store; vLLM computes the last prompt token itself.
    let late = two(10_000, true);
    assert_eq!((late.remote, late.computed, late.gpu), (1023, 1, 0));
    // Right after request 0's first token, its puts still wait for their acknowledgements
    // (two 200 ms round trips each): nothing is visible yet.
    let early = two(1, true);
    assert_eq!((early.remote, early.computed), (0, 1024));
    // Stores of their own: replica 1 never sees replica 0's chunks.
    let apart = two(10_000, false);
    assert_eq!((apart.remote, apart.computed), (0, 1024));
}

/// One replica stores a 1,024-token prompt; 10 s later, `loaders` other replicas receive it at
/// the same instant and each loads its 4 chunks from the shared store (a 1 GB/s store, 5 ms
/// away). Each load's bytes (1,024 tokens x 131,072 bytes for Llama-3.1-8B: 2 x 32 layers x 8
/// KV heads x 128 x 2 bytes = 134,217,728 bytes, 134.2 ms at 1 GB/s) share the store with the
/// others': with two loaders each first token comes one data time later than alone (each load
/// moves its bytes in twice the time), with three two data times later; everything else
/// (lookups, round trips, deserialising, the GPU copy, the step) is each replica's own.
#[test]
fn replicas_loading_at_once_from_the_shared_store_each_take_their_data_time_times_their_number() {
    let prompt = || vec![Run::new(9, 0, 1024)];
    let ttfts = |loaders: u64| {
        let mut reqs = vec![req(0, 0, prompt(), 2)];
        reqs.extend((1..=loaders).map(|i| req(i, 10_000, prompt(), 2)));
        let mut s = setup(EngineFlags::default(), remote_only(5.0, true));
        s.transfer.remote_gbps = 1.0;
        s.fleet = FleetConfig {
            replicas: 1 + loaders as u32,
            router: RouterKind::RoundRobin,
            ..FleetConfig::default()
        };
        let r = simulate(&trace(reqs), &s).unwrap();
        r.reqs[1..]
            .iter()
            .map(|q| {
                assert_eq!((q.origin.remote, q.origin.computed), (1023, 1));
                (q.first_token.unwrap() - q.arrival).as_ns()
            })
            .collect::<Vec<u64>>()
    };
    let data_ns = 134_217_728u64;
    let alone = ttfts(1)[0];
    assert!(alone > data_ns, "{alone}");
    let near = |got: Vec<u64>, want: u64| {
        assert!(
            got.iter().all(|g| g.abs_diff(want) <= 2),
            "{got:?} vs {want}"
        );
    };
    near(ttfts(2), alone + data_ns);
    near(ttfts(3), alone + 2 * data_ns);
}

#[test]
fn a_token_bucket_refuses_what_it_cannot_pay_for_before_routing() {
    use crate::engine::request::RejectReason;
    // 1,000 tokens, 100 a second: 600 at 0 passes (400 left), 600 at 1 ms does not, 600 at
    // 3 s does (700 by then), 600 at 3.001 s does not (100 left).
    let p = |c: u64| vec![Run::new(c, 0, 600)];
    let t = trace(vec![
        req(0, 0, p(1), 2),
        req(1, 1, p(2), 2),
        req(2, 3000, p(3), 2),
        req(3, 3001, p(4), 2),
    ]);
    let mut s = setup(EngineFlags::default(), OffloadConfig::None);
    s.fleet = FleetConfig {
        replicas: 2,
        admission: admission::Admission::TokenBucket {
            capacity: 1000.0,
            refill_per_s: 100.0,
        },
        ..FleetConfig::default()
    };
    let r = simulate(&t, &s).unwrap();
    let rejects: Vec<Option<RejectReason>> = r.reqs.iter().map(|x| x.reject).collect();
    let no = Some(RejectReason::NotAdmitted);
    assert_eq!(rejects, [None, no, None, no]);
    assert!(r.reqs[1].first_token.is_none() && r.reqs[0].finish.is_some());
    // Round-robin saw only the admitted two: replicas 0 and 1.
    assert_eq!((r.replica_of[0], r.replica_of[2]), (0, 1));
    let steps: u64 = r.replicas.iter().map(|x| x.stats.steps).sum();
    assert_eq!(steps, r.stats.steps);
}

/// A disaggregated fleet of one prefill and one decode replica on [`setup`]'s 10 ms steps,
/// with a 10 GB/s link and 1 ms per transfer.
fn pd_fleet(t: &Trace, first_token: pd::FirstToken, threshold: u32) -> SimResult {
    let mut s = setup(EngineFlags::default(), OffloadConfig::None);
    s.fleet = FleetConfig {
        replicas: 2,
        pd: Some(pd::PdConfig {
            prefill: 1,
            decode: 1,
            first_token,
            threshold,
            transfer_gbps: 10.0,
            latency_ms: 1.0,
            whole_prompt: false,
        }),
        ..FleetConfig::default()
    };
    assert_eq!(s.engine.kv_bytes_per_token, 131_072, "Llama-3.1-8B, bf16");
    simulate(t, &s).unwrap()
}

#[test]
fn disaggregated_ttft_is_prefill_then_transfer_then_the_decoders_first_step() {
    // 1,024 prompt tokens, 4 to generate. Prefill replica: one 10 ms step from 0 (its one
    // token). Transfer: 1,024 x 128 KiB = 134,217,728 bytes at 10 GB/s = 13.4217728 ms, + 1 ms:
    // arrives at 24.4217728 ms. Decoder: recomputes the last prompt token and samples (10 ms),
    // then 3 decode steps.
    let t = trace(vec![req(0, 0, vec![Run::new(5, 0, 1024)], 4)]);
    let arrive = 24_421_773; // ns, rounded as SimDuration rounds
    let r = pd_fleet(&t, pd::FirstToken::Decoder, 0);
    let x = &r.reqs[0];
    assert_eq!(r.prefill_of, [0]);
    assert_eq!(r.replica_of, [1]);
    let ns = |t: Option<SimTime>| t.unwrap().as_ns();
    assert!(
        ns(x.first_token).abs_diff(arrive + 10 * MS) <= 1,
        "{:?}",
        x.first_token
    );
    assert!(
        ns(x.finish).abs_diff(arrive + 40 * MS) <= 1,
        "{:?}",
        x.finish
    );
    assert_eq!(x.scheduled, Some(SimTime::ZERO), "queued nowhere");
    // Where the prompt came from: computed, on the prefill replica.
    assert_eq!((x.origin.computed, x.origin.gpu), (1024, 0));
    assert_eq!(x.bytes_loaded, 1024 * 131_072);
    assert_eq!(x.num_output, 4);

    // The prefiller streams its token at the end of the prefill: TTFT 10 ms; the decoder's
    // tokens follow.
    let r = pd_fleet(&t, pd::FirstToken::Prefiller, 0);
    let x = &r.reqs[0];
    assert_eq!(ns(x.first_token), 10 * MS);
    assert!(ns(x.finish).abs_diff(arrive + 40 * MS) <= 1);
}

#[test]
fn transfers_leaving_one_prefill_replica_at_once_share_its_link() {
    // Two 1,024-token prompts prefill together on the one prefill replica (one 10 ms step),
    // then leave for two decoders at 10 ms over its 10 GB/s link: each moves its 134,217,728
    // bytes at half the link's rate, so both arrive at 10 + 2 x 13.4217728 + 1 = 37.8435456
    // ms (one after the other, the first would arrive at 24.4217728 ms), and each decoder's
    // first step ends 10 ms later.
    let p = |c: u64| vec![Run::new(c, 0, 1024)];
    let run = |second_ms: u64| {
        let t = trace(vec![req(0, 0, p(5), 2), req(1, second_ms, p(6), 2)]);
        let r = simulate(&t, &pd3()).unwrap();
        assert_eq!(
            (r.prefill_of.clone(), r.replica_of.clone()),
            (vec![0, 0], vec![1, 2])
        );
        r
    };
    let r = run(0);
    for x in &r.reqs {
        assert_eq!(
            x.scheduled,
            Some(SimTime::ZERO),
            "one prefill step for both"
        );
        let ft = x.first_token.unwrap().as_ns();
        assert!(ft.abs_diff(47_843_546) <= 1, "{ft}");
    }
    // The second prompt sent at 10 ms prefills from 10 to 20 ms. The first transfer, alone
    // from 10 ms, has 3.4217728 ms of its bytes left at 20 ms, which take twice that shared:
    // through at 26.8435456 ms, its decoder (told 24.4217728 ms at first) starts at
    // 27.8435456 and its token comes 10 ms later. The second has 10 ms of its bytes left when
    // the first is through: it arrives at 37.8435456 ms, its token at 47.8435456.
    let r = run(10);
    let ft: Vec<u64> = r
        .reqs
        .iter()
        .map(|x| x.first_token.unwrap().as_ns())
        .collect();
    assert!(ft[0].abs_diff(37_843_546) <= 1, "{ft:?}");
    assert!(ft[1].abs_diff(47_843_546) <= 1, "{ft:?}");
}

/// One prefill replica, two decoders, a 10 GB/s link and 1 ms per transfer.
fn pd3() -> crate::sim::SimSetup {
    let mut s = setup(EngineFlags::default(), OffloadConfig::None);
    s.fleet = FleetConfig {
        replicas: 3,
        pd: Some(pd::PdConfig {
            prefill: 1,
            decode: 2,
            transfer_gbps: 10.0,
            latency_ms: 1.0,
            ..pd::PdConfig::default()
        }),
        ..FleetConfig::default()
    };
    s
}

#[test]
fn the_decoder_receives_only_what_its_prefix_cache_lacks_and_a_threshold_keeps_cached_prompts() {
    // The same prompt twice, the second long after the first: the decoder's prefix cache holds
    // 63 of its 64 blocks (the last prompt token is never a hit).
    let p = || vec![Run::new(5, 0, 1024)];
    let t = trace(vec![req(0, 0, p(), 4), req(1, 5000, p(), 4)]);
    let r = pd_fleet(&t, pd::FirstToken::Decoder, 0);
    assert_eq!(r.prefill_of, [0, 0]);
    assert_eq!(
        r.reqs[1].bytes_loaded,
        16 * 131_072,
        "1,024 - 1,008 tokens moved"
    );
    // With a threshold of 100 uncached tokens, the second (16 uncached) stays on the decoder.
    let r = pd_fleet(&t, pd::FirstToken::Decoder, 100);
    assert_eq!(r.prefill_of, [0, u32::MAX]);
    let second = &r.reqs[1];
    assert_eq!((second.origin.gpu, second.origin.computed), (1008, 16));
    assert_eq!(second.bytes_loaded, 0);
    // Both: every request finished, every prompt token from exactly one place.
    for x in &r.reqs {
        let o = x.origin;
        assert_eq!(o.gpu + o.cpu + o.disk + o.remote + o.computed, 1024);
        assert!(x.finish.is_some());
    }
}

#[test]
fn disaggregated_fleets_conserve_requests_and_tokens_and_rerun_identically() {
    let mut reqs = Vec::new();
    for i in 0..80u64 {
        let doc = Run::new(1 + i % 5, 0, 300 + (i as u32 % 4) * 200);
        let own = Run::new(1000 + i, 0, 20 + (i as u32 * 41) % 300);
        reqs.push(req(i, i * 4, vec![doc, own], 1 + (i as u32 % 30)));
    }
    reqs.push(req(80, 10, vec![Run::new(9999, 0, 200_000)], 4));
    let t = trace(reqs);
    for router in RouterKind::ALL {
        for (first, threshold) in [
            (pd::FirstToken::Decoder, 0),
            (pd::FirstToken::Prefiller, 200),
        ] {
            let run = || {
                let mut s = setup(EngineFlags::default(), lmcache_cpu(256, 1));
                s.fleet = FleetConfig {
                    replicas: 5,
                    router,
                    pd: Some(pd::PdConfig {
                        prefill: 2,
                        decode: 3,
                        first_token: first,
                        threshold,
                        ..pd::PdConfig::default()
                    }),
                    ..FleetConfig::default()
                };
                simulate(&t, &s).unwrap()
            };
            let (a, b) = (run(), run());
            let finished = a.reqs.iter().filter(|r| r.finish.is_some()).count();
            let rejected = a.reqs.iter().filter(|r| r.reject.is_some()).count();
            assert_eq!((finished, rejected), (80, 1), "{router:?}");
            for (q, r) in t.requests.iter().zip(&a.reqs) {
                if r.finish.is_some() {
                    let o = r.origin;
                    assert_eq!(o.gpu + o.cpu + o.disk + o.remote + o.computed, q.input_len);
                    assert_eq!(r.num_output, q.output_len, "{router:?}");
                    assert!(r.first_token.unwrap() >= r.arrival);
                }
            }
            for (i, (x, y)) in a.reqs.iter().zip(&b.reqs).enumerate() {
                assert_eq!(outcome(x), outcome(y), "{router:?}");
                // Prefills on replicas 0-1, decodes on 2-4.
                assert!(a.prefill_of[i] == u32::MAX || a.prefill_of[i] < 2);
                assert!(i == 80 || a.replica_of[i] >= 2);
            }
            assert_eq!(a.prefill_of, b.prefill_of);
            let split = a.prefill_of.iter().filter(|p| **p != u32::MAX).count();
            if threshold == 0 {
                assert_eq!(split, 81, "{router:?}: every request disaggregated");
            } else {
                assert!(split > 0 && split < 81, "{router:?}: {split}");
            }
        }
    }
}

#[test]
fn each_replica_reaches_the_store_at_its_own_round_trip_time() {
    // Replica 0 is 0 ms from the store, replica 1 a second: a first lookup checks one chunk
    // (a miss), a round trip each, before the prefill can be scheduled.
    use crate::tiers::lmcache::{LmCacheConfig, RemoteConfig};
    let offload = OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: 256,
        cpu_bytes: None,
        remote: Some(RemoteConfig {
            shared: true,
            replica_rtt_s: vec![0.0, 1.0],
            ..RemoteConfig::default()
        }),
        ..LmCacheConfig::default()
    });
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 512)], 2),
        req(1, 0, vec![Run::new(2, 0, 512)], 2),
    ]);
    let r = fleet(&t, 2, RouterKind::RoundRobin, offload);
    assert_eq!(r.replica_of, [0, 1]);
    let ttft = |i: usize| r.reqs[i].first_token.unwrap().as_ns() / MS;
    assert!(ttft(0) < 100, "{}", ttft(0));
    assert!((1000..1100).contains(&ttft(1)), "{}", ttft(1));
}

/// A fleet of two pools given by keys, as a user writes them: one replica of 100 GPU blocks
/// stepping in 10 ms, one of 50 blocks stepping in 30 ms (fixed step times). Round-robin
/// sends request 0 to the first and request 1 to the second, both at 0 with one output token:
/// their first tokens come at 10 and 30 ms.
#[test]
fn pools_give_their_replicas_their_own_gpu_memory_and_step_times() {
    use crate::config::RunConfig;
    use serde_json::json;
    let mut c = RunConfig::default();
    c.set(
        "pools",
        &json!([
            {"count": 1, "num_gpu_blocks": 100, "step_c0_s": 0.010},
            {"count": 1, "num_gpu_blocks": 50, "step_c0_s": 0.030},
        ]),
    )
    .unwrap();
    assert_eq!(c.fleet.replicas, 2);
    let (s, _, _) = c.setup().unwrap();
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 64)], 1),
        req(1, 0, vec![Run::new(2, 0, 64)], 1),
    ]);
    let r = simulate(&t, &s).unwrap();
    assert_eq!(r.replica_of, vec![0, 1]);
    let ttft: Vec<u64> = r
        .reqs
        .iter()
        .map(|q| q.first_token.unwrap().as_ns() / MS)
        .collect();
    assert_eq!(ttft, vec![10, 30]);
    let blocks: Vec<u32> = r.replicas.iter().map(|x| x.num_gpu_blocks).collect();
    assert_eq!((blocks, r.num_gpu_blocks), (vec![100, 50], 150));
    assert_eq!(
        r.replicas.iter().map(|x| x.pool).collect::<Vec<_>>(),
        vec![Some(0), Some(1)]
    );
    assert_eq!(
        r.pools,
        vec![
            "num_gpu_blocks=100,step_c0_s=0.01",
            "num_gpu_blocks=50,step_c0_s=0.03"
        ]
    );
}

/// Pools that differ in nothing are the homogeneous fleet, request for request.
#[test]
fn pools_alike_are_the_plain_fleet() {
    use crate::config::RunConfig;
    use serde_json::json;
    let t = base_trace();
    for router in ["round_robin", "llm_d", "dynamo"] {
        let mut plain = RunConfig::default();
        plain.set("replicas", &json!(3)).unwrap();
        plain.set("router", &json!(router)).unwrap();
        plain.set("tier", &json!("cpu")).unwrap();
        let mut pooled = plain.clone();
        pooled
            .set("pools", &json!([{"count": 1}, {"count": 2, "tier": "cpu"}]))
            .unwrap();
        let a = simulate(&t, &plain.setup().unwrap().0).unwrap();
        let b = simulate(&t, &pooled.setup().unwrap().0).unwrap();
        assert_eq!(a.replica_of, b.replica_of, "{router}");
        let (oa, ob): (Vec<_>, Vec<_>) = (
            a.reqs.iter().map(outcome).collect(),
            b.reqs.iter().map(outcome).collect(),
        );
        assert_eq!(oa, ob, "{router}");
        assert_eq!(a.connector_stats, b.connector_stats, "{router}");
    }
}

#[test]
fn a_pool_key_that_belongs_to_the_fleet_or_is_unknown_is_one_error() {
    use crate::config::RunConfig;
    use serde_json::json;
    let err = |pools: serde_json::Value| {
        let mut c = RunConfig::default();
        c.set("pools", &pools).unwrap();
        c.setup().unwrap_err().to_string()
    };
    let e = err(json!([{"count": 1}, {"count": 1, "router": "llm_d"}]));
    assert!(
        e.contains("pools[1]: router is set for the whole fleet"),
        "{e}"
    );
    let e = err(json!([{"count": 1, "gpu_typo": "A100"}]));
    assert!(e.contains("pools[0]") && e.contains("gpu_typo"), "{e}");
    let e = err(json!([{"count": 1, "gpu": "B999"}]));
    assert!(
        e.contains("pools[0] (gpu=B999)") && e.contains("B999"),
        "{e}"
    );
    let mut c = RunConfig::default();
    assert!(
        c.set("pools", &json!([{"gpu": "A100"}])).is_err(),
        "a pool needs a count"
    );
    assert!(c.set("pools", &json!([])).is_err());
    c.set("pools", &json!([{"count": 2}])).unwrap();
    c.set("replicas", &json!(3)).unwrap();
    let e = c.setup().unwrap_err().to_string();
    assert!(
        e.contains("pools hold 2 replicas, but replicas is 3"),
        "{e}"
    );
}

/// Pools whose LMCache keys match (tensor-parallel layout, KV bytes, chunk size) share one
/// remote store; a pool of another TP layout has its own.
#[test]
fn pools_share_a_remote_store_only_when_their_keys_match() {
    use crate::config::RunConfig;
    use serde_json::json;
    let mut c = RunConfig::default();
    c.set("replicas", &json!(3)).unwrap();
    c.set("remote_url", &json!("redis://h:1")).unwrap();
    c.set("local_cpu", &json!(false)).unwrap();
    c.set(
        "pools",
        &json!([{"count": 1}, {"count": 1, "gpu": "A100"}, {"count": 1, "tp": 2}]),
    )
    .unwrap();
    let (s, _, _) = c.setup().unwrap();
    // One request stored by replica 0 (pool 0) at 0; the same prompt 10 s later on replica 1
    // (pool 1, same TP) loads it from the store (all but the last prompt token, which vLLM
    // always computes), on replica 2 (TP 2) it does not.
    let prompt = || vec![Run::new(7, 0, 1024)];
    let t = trace(vec![
        req(0, 0, prompt(), 1),
        req(1, 10_000, prompt(), 1),
        req(2, 20_000, prompt(), 1),
    ]);
    let r = simulate(&t, &s).unwrap();
    assert_eq!(r.replica_of, vec![0, 1, 2]);
    let remote: Vec<u32> = r.reqs.iter().map(|q| q.origin.remote).collect();
    assert_eq!(remote, vec![0, 1023, 0]);
}

/// production-stack's kvaware router on two replicas with LMCache CPU tiers of 256-token
/// chunks, no sessions (so its fallback is the fewest requests routed in the last minute):
/// - 0 s: document A (1,024 tokens = 4 chunks) + a question: nothing registered, fallback to
///   replica 0 (never used), whose prefill stores A's 4 chunks.
/// - 1 s: A + another question: the controller names replica 0 for 1,024 tokens, within
///   2,000 of the prompt: replica 0 (the fallback would have said replica 1).
/// - 2 s: document B: nothing registered: replica 1 (1 request in the window against 2).
/// - 3 s: A + 3,000 new tokens: 1,024 matched < 4,024 - 2,000: the fallback, replica 1
///   (1 request in the window against 2). With a threshold of 3,500, the controller's
///   replica 0.
/// - Admit messages 2 s late: at 1 s nothing is registered yet (replica 1), at 2 s B goes to
///   replica 0 (1 against 1, the lower index), at 3 s A is registered, first by replica 0,
///   but falls short: replica 1 (2 against 1).
#[test]
fn kvaware_follows_the_controller_unless_it_falls_short_by_the_threshold() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(7, 0, 1024), Run::new(100, 0, 100)], 2),
        req(
            1,
            1000,
            vec![Run::new(7, 0, 1024), Run::new(101, 0, 100)],
            2,
        ),
        req(
            2,
            2000,
            vec![Run::new(8, 0, 1024), Run::new(102, 0, 100)],
            2,
        ),
        req(
            3,
            3000,
            vec![Run::new(7, 0, 1024), Run::new(103, 0, 3000)],
            2,
        ),
    ]);
    let run = |threshold: u32, delay_ms: f64| {
        let mut s = setup(EngineFlags::default(), lmcache_cpu(256, 1));
        s.fleet = FleetConfig {
            replicas: 2,
            router: RouterKind::Kvaware,
            kv_aware_threshold: threshold,
            events_delay_ms: delay_ms,
            ..FleetConfig::default()
        };
        simulate(&t, &s).unwrap().replica_of
    };
    assert_eq!(run(2000, 0.0), vec![0, 0, 1, 1]);
    assert_eq!(run(3500, 0.0), vec![0, 0, 1, 0]);
    assert_eq!(run(2000, 2000.0), vec![0, 1, 0, 1]);
    // Without LMCache there is no controller: the fallback alone.
    let mut s = setup(EngineFlags::default(), OffloadConfig::None);
    s.fleet = FleetConfig {
        replicas: 2,
        router: RouterKind::Kvaware,
        ..FleetConfig::default()
    };
    assert_eq!(simulate(&t, &s).unwrap().replica_of, vec![0, 1, 0, 1]);
}

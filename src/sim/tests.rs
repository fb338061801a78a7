//! Mechanism tests: small traces whose hits, steps and times are computed by hand.

use super::*;
use crate::engine::EngineFlags;
use crate::testkit::{MS, lmcache_cpu, pooled, req, run, setup, trace};
use crate::tiers::lmcache::LmCacheConfig;
use crate::time::{SimDuration, SimTime};
use crate::trace::{Request, Run};

#[test]
fn one_request_prefill_then_decode_steps() {
    let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 100)], 3)]);
    let r = run(&t, EngineFlags::default());
    let s = &r.reqs[0];
    // Step 1 computes the prompt and samples token 1; steps 2 and 3 decode tokens 2 and 3.
    assert_eq!(r.stats.steps, 3);
    assert_eq!(s.first_token.map(SimTime::as_ns), Some(10 * MS));
    assert_eq!(s.finish.map(SimTime::as_ns), Some(30 * MS));
    assert_eq!((s.itl_sum.as_ns(), s.itl_max.as_ns()), (20 * MS, 10 * MS));
    assert_eq!(r.stats.prefill_tokens, 100);
    assert_eq!(r.stats.decode_tokens, 2);
    assert_eq!(s.origin.computed, 100);
}

#[test]
fn chunked_prefill_splits_a_long_prompt_by_the_token_budget() {
    let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 20_000)], 1)]);
    let r = run(&t, EngineFlags::default());
    // 8192 + 8192 + 3616: the first token comes at the end of the third step.
    assert_eq!(r.stats.steps, 3);
    assert_eq!(r.reqs[0].first_token.map(SimTime::as_ns), Some(30 * MS));
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(30 * MS));
}

#[test]
fn decodes_ride_along_a_prefill_in_the_same_step() {
    // Request 0 decodes while request 1 (arriving at 10 ms) prefills in the same steps.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 4),
        req(1, 10, vec![Run::new(2, 0, 10_000)], 1),
    ]);
    let f = EngineFlags {
        max_num_batched_tokens: Some(8192),
        ..Default::default()
    };
    let r = run(&t, f);
    // Step at 10 ms: request 0 decodes (1 token), request 1 gets 8191 tokens; at 20 ms request 0
    // decodes again and request 1 computes its last 1809 tokens.
    assert_eq!(r.reqs[1].first_token.map(SimTime::as_ns), Some(30 * MS));
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(40 * MS));
    assert_eq!(r.stats.steps, 4);
}

#[test]
fn gpu_prefix_cache_hits_full_blocks_up_to_prompt_minus_one() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 1),
        req(1, 50, vec![Run::new(1, 0, 100)], 1),
        req(2, 100, vec![Run::new(1, 0, 96)], 1),
    ]);
    let r = run(&t, EngineFlags::default());
    // 100 tokens: 6 full blocks (96 tokens) are cached and all are within prompt - 1.
    assert_eq!(r.reqs[1].origin.gpu, 96);
    assert_eq!(r.reqs[1].origin.computed, 4);
    // 96 tokens: a full hit would leave nothing to compute, so the last block is recomputed.
    assert_eq!(r.reqs[2].origin.gpu, 80);
    assert_eq!(r.reqs[2].origin.computed, 16);
}

#[test]
fn lmcache_cpu_tier_hits_full_chunks_and_loads_what_the_gpu_lacks() {
    // Prefix caching off, so every hit must come from LMCache.
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 600)], 1),
        req(1, 100, vec![Run::new(1, 0, 600)], 1),
        req(2, 200, vec![Run::new(7, 0, 200)], 1),
        req(3, 300, vec![Run::new(7, 0, 200)], 1),
    ]);
    let r = simulate(&t, &setup(f.clone(), lmcache_cpu(256, 5))).unwrap();
    // 600 tokens = 2 full chunks (512) + a partial chunk that is not saved.
    assert_eq!((r.reqs[1].origin.cpu, r.reqs[1].origin.computed), (512, 88));
    assert_eq!(r.reqs[1].bytes_loaded, 512 * 128 * 1024);
    assert_eq!(r.reqs[0].bytes_stored, 512 * 128 * 1024);
    // A 200-token prompt never hits at chunk 256 without save_unfull_chunk...
    assert_eq!(r.reqs[3].origin.cpu, 0);
    // ...and with it, the whole prompt but its last token is loaded.
    let unfull = OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: 256,
        save_unfull_chunk: true,
        cpu_bytes: Some(5 << 30),
        ..Default::default()
    });
    let r = simulate(&t, &setup(f, unfull)).unwrap();
    assert_eq!((r.reqs[3].origin.cpu, r.reqs[3].origin.computed), (199, 1));
}

#[test]
fn requests_scheduled_together_retrieve_one_after_another_before_the_step() {
    // Prefix caching off: two 512-token documents stored at 0, both asked again at 1 s and
    // scheduled in one step. Each retrieve is the hit but its last token (recomputed): 511
    // tokens x 128 KiB = 66,977,792 bytes at 1 GB/s, and 2 chunks (100 us of launch each):
    // 67,177,792 ns. LMCache runs them one after another, each synchronised, before the forward
    // pass, so both first tokens come at 1 s + 2 x 67,177,792 ns + the 10 ms step.
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let doc = |id, at, content| req(id, at, vec![Run::new(content, 0, 512)], 1);
    let mut s = setup(f, lmcache_cpu(256, 5));
    s.transfer.h2d_gbps = 1.0;
    s.transfer.chunk_overhead_us = 100.0;
    let both = trace(vec![
        doc(0, 0, 1),
        doc(1, 0, 2),
        doc(2, 1000, 1),
        doc(3, 1000, 2),
    ]);
    let r = simulate(&both, &s).unwrap();
    let one = 67_177_792u64;
    for i in [2, 3] {
        assert_eq!(r.reqs[i].origin.cpu, 511, "the last token is recomputed");
        let got = r.reqs[i].first_token.map(SimTime::as_ns).unwrap();
        let want = 1_000 * MS + 2 * one + 10 * MS;
        assert!(got.abs_diff(want) <= 2, "{got} vs {want}");
    }
    // Asked alone, a document's first token waits for its own retrieve only.
    let alone = trace(vec![doc(0, 0, 1), doc(1, 0, 2), doc(2, 1000, 1)]);
    let r = simulate(&alone, &s).unwrap();
    let got = r.reqs[2].first_token.map(SimTime::as_ns).unwrap();
    assert!(got.abs_diff(1_000 * MS + one + 10 * MS) <= 2, "{got}");
}

#[test]
fn remote_retrieves_of_one_step_add_up_once() {
    // The same as above from a Redis of the engine's own, 5 ms away: the two documents'
    // retrieves run one after another, so the step waits for twice one retrieve, not for the
    // first, then the first again with the second (regression: each retrieve was timed from
    // the step's start, the second including the first, and the engine added them up).
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let doc = |id, at, content| req(id, at, vec![Run::new(content, 0, 512)], 1);
    let remote = OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: 256,
        cpu_bytes: None,
        remote: Some(crate::tiers::lmcache::RemoteConfig {
            rtt_s: 0.005,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut s = setup(f, remote);
    s.transfer.remote_gbps = 1.0;
    let first_token = |t: &crate::trace::Trace| {
        let r = simulate(t, &s).unwrap();
        r.reqs[2].first_token.map(SimTime::as_ns).unwrap() - 1_000 * MS - 10 * MS
    };
    let alone = first_token(&trace(vec![doc(0, 0, 1), doc(1, 0, 2), doc(2, 1000, 1)]));
    let both = first_token(&trace(vec![
        doc(0, 0, 1),
        doc(1, 0, 2),
        doc(2, 1000, 1),
        doc(3, 1000, 2),
    ]));
    // Each retrieve: two 32 MiB gets (67 ms of bytes at 1 GB/s) and their round trips.
    assert!(alone > 67 * MS, "{alone}");
    let ratio = both as f64 / alone as f64;
    assert!((ratio - 2.0).abs() < 0.05, "{both} vs {alone}: {ratio}");
}

#[test]
fn lmcache_loads_only_beyond_the_gpu_hit() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 600)], 1),
        req(1, 100, vec![Run::new(1, 0, 600)], 1),
    ]);
    let r = simulate(&t, &setup(EngineFlags::default(), lmcache_cpu(256, 5))).unwrap();
    // The GPU still has 37 blocks (592 tokens); LMCache's 512 add nothing.
    assert_eq!(r.reqs[1].origin.gpu, 592);
    assert_eq!(r.reqs[1].origin.cpu, 0);
    assert_eq!(r.reqs[1].bytes_loaded, 0);
}

#[test]
fn conservation_every_prompt_token_has_one_origin() {
    let mut reqs = Vec::new();
    for i in 0..40u64 {
        let shared = Run::new(1, 0, 512 * (1 + i % 3) as u32);
        reqs.push(req(
            i,
            i * 5,
            vec![shared, Run::new(100 + i, 0, 300 + i as u32)],
            5,
        ));
    }
    let t = trace(reqs);
    let f = EngineFlags {
        num_gpu_blocks: Some(300),
        ..Default::default()
    };
    for off in [
        OffloadConfig::None,
        lmcache_cpu(256, 1),
        OffloadConfig::Native { cpu_bytes: 1 << 30 },
    ] {
        let r = simulate(&t, &setup(f.clone(), off)).unwrap();
        for (s, q) in r.reqs.iter().zip(&t.requests) {
            let o = s.origin;
            assert_eq!(o.gpu + o.cpu + o.disk + o.remote + o.computed, q.input_len);
            assert_eq!(s.phase, crate::engine::request::Phase::Finished);
        }
    }
}

#[test]
fn preemption_recomputes_the_last_running_request() {
    // 10 blocks of 16 tokens; two requests of 40-token prompts each decoding 60 tokens need
    // 7 blocks each by the end: the second running request is preempted and recomputed.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 40)], 60),
        req(1, 0, vec![Run::new(2, 0, 40)], 60),
    ]);
    let f = EngineFlags {
        num_gpu_blocks: Some(10),
        ..Default::default()
    };
    let r = run(&t, f);
    assert!(r.reqs[1].preemptions >= 1, "{:?}", r.reqs[1].preemptions);
    assert_eq!(r.reqs[0].preemptions, 0);
    assert!(r.reqs.iter().all(|s| s.num_output == 60));
    // Request 0 is never delayed: one token per 10 ms step.
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(600 * MS));
}

#[test]
fn a_preempted_requests_rehits_are_counted_apart_from_its_first_admission() {
    // 10 blocks of 16 tokens; two 64-token prompts of their own, 30 tokens each to generate.
    // Both prefill in one step (4 blocks each), take a 5th block at their first decode (10
    // used). When both have computed 80 tokens (64 + 16 generated; 17 generated, so 81 tokens
    // in the sequence), request 0 needs a 6th block: request 1 is preempted and frees its 5 full
    // blocks, last first, so request 0's 6th block evicts request 1's 5th (its tokens 64-80).
    // When request 0 finishes, request 1 is admitted again: it looks up its 81 tokens and finds
    // its 4 prompt blocks (64 tokens), computes the rest. Its first admission found nothing.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 64)], 30),
        req(1, 0, vec![Run::new(2, 0, 64)], 30),
    ]);
    let f = EngineFlags {
        num_gpu_blocks: Some(10),
        ..Default::default()
    };
    let r = run(&t, f);
    assert_eq!((r.reqs[0].preemptions, r.reqs[1].preemptions), (0, 1));
    for x in &r.reqs {
        assert_eq!(
            (x.origin.gpu, x.origin.computed),
            (0, 64),
            "first admission"
        );
    }
    use crate::engine::request::Rehits;
    assert_eq!(r.reqs[0].rehits, Rehits::default());
    assert_eq!(
        r.reqs[1].rehits,
        Rehits {
            queries: 81,
            gpu: 64,
            external: 0
        }
    );
    // Records, summary and metrics keep them apart: no hit at first admission, 64 of 81 when
    // admitted again; the Parquet file carries them back.
    use crate::metrics::record::records;
    use crate::metrics::summary::{PreemptionRehits, RunSummary};
    let recs = records(&t, &r);
    let s = RunSummary::new(&recs, &r);
    assert_eq!(s.hit_fractions.unwrap().gpu, 0.0);
    assert_eq!(
        s.preemption_rehits,
        PreemptionRehits {
            requests: 1,
            queries: 81,
            gpu_hits: 64,
            external_hits: 0
        }
    );
    assert_eq!(s.metric(&recs, "rehit_rate"), Some(64.0 / 81.0));
    assert_eq!(s.metric(&recs, "preempted_requests"), Some(1.0));
    let dir = std::env::temp_dir().join(format!("kvreplay-rehits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requests.parquet");
    crate::report::parquet::write_requests(&recs, &file).unwrap();
    let back = crate::report::parquet::read_requests(&file).unwrap();
    let q = |x: &crate::metrics::record::RequestRecord| {
        (
            x.preempted_queries,
            x.preempted_gpu_hits,
            x.preempted_external_hits,
        )
    };
    assert_eq!(
        back.iter().map(q).collect::<Vec<_>>(),
        [(0, 0, 0), (81, 64, 0)]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn closed_loop_clients_send_after_completion_plus_think_time() {
    let mut reqs: Vec<Request> = (0..4)
        .map(|i| req(i, 0, vec![Run::new(10 + i, 0, 50)], 2))
        .collect();
    for r in &mut reqs {
        r.session = Some(r.id % 2);
        r.think_ns = 5 * MS;
    }
    let t = pooled(reqs, 2);
    let r = run(&t, EngineFlags::default());
    // Requests 0 and 1 start together and finish at 20 ms; 2 and 3 are sent at 25 ms.
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(20 * MS));
    assert_eq!(r.reqs[2].arrival.as_ns(), 25 * MS);
    assert_eq!(r.reqs[3].arrival.as_ns(), 25 * MS);
    assert_eq!(r.reqs[3].finish.map(SimTime::as_ns), Some(45 * MS));
}

#[test]
fn rounds_are_barriers() {
    // Pool of 2 clients; round 0 has a long request and a short one; round 1's request waits
    // for both even though a client is free earlier.
    let mut reqs = vec![
        req(0, 0, vec![Run::new(1, 0, 50)], 10),
        req(1, 0, vec![Run::new(2, 0, 50)], 1),
        req(2, 0, vec![Run::new(3, 0, 50)], 1),
    ];
    reqs[2].round = 1;
    let t = pooled(reqs, 2);
    let r = run(&t, EngineFlags::default());
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(100 * MS));
    assert_eq!(r.reqs[2].arrival.as_ns(), 100 * MS);
}

#[test]
fn identical_inputs_give_identical_results() {
    let reqs: Vec<Request> = (0..30)
        .map(|i| {
            req(
                i,
                i * 3,
                vec![Run::new(i % 4, 0, 700), Run::new(50 + i, 0, 90)],
                7,
            )
        })
        .collect();
    let t = trace(reqs);
    let a = simulate(&t, &setup(EngineFlags::default(), lmcache_cpu(256, 1))).unwrap();
    let b = simulate(&t, &setup(EngineFlags::default(), lmcache_cpu(256, 1))).unwrap();
    let key = |r: &SimResult| {
        r.reqs
            .iter()
            .map(|s| {
                (
                    s.first_token.map(SimTime::as_ns),
                    s.finish.map(SimTime::as_ns),
                    s.origin,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
}

#[test]
fn shortcuts_leave_every_result_unchanged() {
    // Shared prefixes, a small GPU (evictions, blocked admissions, preemptions), LMCache and
    // native offload: the reference mode (index everything, rescan every attempt) must give the
    // same times and origins for every request.
    let mut reqs = Vec::new();
    for i in 0..120u64 {
        let shared = Run::new(1 + i % 5, 0, 256 * (1 + (i % 4) as u32));
        let tail = Run::new(1000 + i, 0, 40 + (i * 37 % 300) as u32);
        reqs.push(req(i, i * 7, vec![shared, tail], 20 + (i % 30) as u32));
    }
    let t = trace(reqs);
    let f = EngineFlags {
        num_gpu_blocks: Some(400),
        max_num_batched_tokens: Some(1024),
        ..Default::default()
    };
    for off in [
        OffloadConfig::None,
        lmcache_cpu(256, 1),
        OffloadConfig::Native { cpu_bytes: 1 << 30 },
    ] {
        let fast = simulate(&t, &setup(f.clone(), off.clone())).unwrap();
        let mut s = setup(f.clone(), off.clone());
        s.reference_mode = true;
        let slow = simulate(&t, &s).unwrap();
        assert!(
            fast.stats.preemptions > 0,
            "the case must exercise preemption"
        );
        assert!(
            fast.reqs.iter().any(|s| s.origin.gpu > 0),
            "and prefix hits"
        );
        assert_same_results(&fast, &slow, &format!("{off:?}"));
    }
}

/// Everything a run reports must agree between the engine with its shortcuts (`fast`) and its
/// reference mode (`slow`), except the count of steps run in stretches and GPU evictions (the
/// reference mode indexes, and so evicts, blocks no other request shares).
fn assert_same_results(fast: &SimResult, slow: &SimResult, what: &str) {
    let key = |r: &SimResult| {
        r.reqs
            .iter()
            .map(|s| {
                (
                    s.phase,
                    s.scheduled.map(SimTime::as_ns),
                    s.first_token.map(SimTime::as_ns),
                    s.finish.map(SimTime::as_ns),
                    s.origin,
                    s.rehits,
                    s.preemptions,
                    s.itl_sum.as_ns(),
                    s.itl_max.as_ns(),
                    s.bytes_loaded,
                    s.bytes_stored,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(fast), key(slow), "{what}");
    let mut fs = fast.stats.clone();
    fs.stretch_steps = 0;
    assert_eq!(fs, slow.stats, "{what}");
    assert_eq!(slow.stats.stretch_steps, 0, "{what}");
    assert_eq!(fast.itl_hist.count(), slow.itl_hist.count(), "{what}");
    assert_eq!(fast.itl_hist.mean(), slow.itl_hist.mean(), "{what}");
    for q in [0.5, 0.9, 0.99, 1.0] {
        assert_eq!(
            fast.itl_hist.quantile(q),
            slow.itl_hist.quantile(q),
            "{what}"
        );
    }
    let samples = |r: &SimResult| {
        r.kv_samples
            .iter()
            .map(|k| (k.t_s.to_bits(), k.used.to_bits(), k.running, k.waiting))
            .collect::<Vec<_>>()
    };
    assert_eq!(samples(fast), samples(slow), "{what}");
    assert_eq!(fast.connector_stats, slow.connector_stats, "{what}");
}

#[test]
fn a_waiting_request_is_looked_up_in_lmcache_once() {
    // 40 blocks of 16 tokens: request 0 (512 prompt tokens + 100 output) holds 32-39 of them
    // while it decodes, so request 1 (another 512-token prompt, 33 blocks) waits for several
    // steps. LMCache looks each request up once and keeps the result until it is scheduled.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 512)], 100),
        req(1, 5, vec![Run::new(2, 0, 512)], 1),
    ]);
    let f = EngineFlags {
        num_gpu_blocks: Some(40),
        ..Default::default()
    };
    let r = simulate(&t, &setup(f, lmcache_cpu(256, 1))).unwrap();
    // Request 1 could not start before request 0 finished.
    assert!(
        r.reqs[1].scheduled.map(SimTime::as_ns).unwrap()
            >= r.reqs[0].finish.map(SimTime::as_ns).unwrap()
    );
    assert!(r.stats.steps >= 100);
    let Some(ConnectorStats::LmCache { counters, .. }) = r.connector_stats else {
        panic!("{:?}", r.connector_stats)
    };
    assert_eq!(counters.lookups, 2);
}

/// [`setup`] with usage sampled once a second, so that decode-only stretches can run.
fn sparse_sampling(flags: EngineFlags, offload: crate::tiers::OffloadConfig) -> SimSetup {
    let mut s = setup(flags, offload);
    s.sample_interval = SimDuration::from_ns(1000 * MS);
    s
}

#[test]
fn a_decode_stretch_runs_in_one_call_with_the_same_times() {
    // 100 prompt tokens, 40 output tokens, alone: step 1 prefills and samples token 1; steps
    // 2-39 form one decode stretch (38 steps: the stretch stops before the last token); step 40
    // samples the last token. The blocks grow from 7 (100 tokens) to 9 (139 computed).
    let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 100)], 40)]);
    let r = simulate(
        &t,
        &sparse_sampling(EngineFlags::default(), crate::tiers::OffloadConfig::None),
    )
    .unwrap();
    let s = &r.reqs[0];
    assert_eq!(r.stats.steps, 40);
    assert_eq!(r.stats.stretch_steps, 38);
    assert_eq!(s.first_token.map(SimTime::as_ns), Some(10 * MS));
    assert_eq!(s.finish.map(SimTime::as_ns), Some(400 * MS));
    assert_eq!((s.itl_sum.as_ns(), s.itl_max.as_ns()), (390 * MS, 10 * MS));
    assert_eq!(r.itl_hist.count(), 39);
    assert_eq!(r.stats.decode_tokens, 39);
    assert_eq!(r.stats.peak_used_blocks, 9);
}

#[test]
fn decode_stretches_match_stepping_one_by_one() {
    // Conversations whose next turn carries the previous answer (so decoded blocks are shared
    // and registered during stretches), long answers, sparse arrivals, a GPU small enough to
    // preempt, an arrival landing inside a stretch; with and without offload. The reference
    // mode steps one by one; everything observable must agree.
    let mut reqs = Vec::new();
    for conv in 0..6u64 {
        let mut prompt = vec![Run::new(100 + conv, 0, 200 + 37 * conv as u32)];
        for turn in 0..4u64 {
            let id = conv * 4 + turn;
            let out = 150 + 53 * ((id * 7) % 5) as u32;
            let mut r = req(id, conv * 730 + turn * 2900, prompt.clone(), out);
            r.output_content = 5000 + id;
            prompt.push(Run::new(5000 + id, 0, out));
            prompt.push(Run::new(9000 + id, 0, 30));
            reqs.push(r);
        }
    }
    reqs.sort_by_key(|r| r.arrival_ns);
    let t = trace(reqs);
    for (blocks, off) in [
        (400, crate::tiers::OffloadConfig::None),
        (90, crate::tiers::OffloadConfig::None),
        (400, lmcache_cpu(64, 1)),
        (120, lmcache_cpu(64, 1)),
    ] {
        let f = EngineFlags {
            num_gpu_blocks: Some(blocks),
            ..Default::default()
        };
        let fast = simulate(&t, &sparse_sampling(f.clone(), off.clone())).unwrap();
        let mut s = sparse_sampling(f, off);
        s.reference_mode = true;
        let slow = simulate(&t, &s).unwrap();
        // With room, most steps run in stretches; when the GPU is short, some still do.
        let part = if blocks > 200 { 2 } else { 20 };
        assert!(
            fast.stats.stretch_steps * part > fast.stats.steps,
            "{blocks} blocks: {} of {} steps in stretches",
            fast.stats.stretch_steps,
            fast.stats.steps
        );
        if blocks < 200 {
            assert!(fast.stats.preemptions > 0, "{blocks} blocks must preempt");
        }
        // Hit by the next turn when first admitted, or (on a GPU short enough to preempt) by
        // the request itself when admitted again.
        assert!(
            fast.reqs
                .iter()
                .any(|r| r.origin.gpu > 300 || r.rehits.gpu > 300),
            "answers are hit"
        );
        assert_same_results(&fast, &slow, &format!("{blocks} blocks"));
    }
}

#[test]
fn random_traces_give_identical_results_with_and_without_shortcuts() {
    // Random small traces (shared prefixes, answers carried into later prompts, random sizes,
    // GPU sizes, budgets, offload and sampling): the shortcuts (the run-length block pool,
    // registering only what others share, decode stretches, block hashes computed beforehand
    // at the engine's block size or, ignored, at another) must change nothing observable.
    use crate::util::rng::Rng;
    let mut rng = Rng::new(0x5eed);
    let (mut stretched, mut preempted) = (0, 0);
    for case in 0..40 {
        let n = rng.range(5, 50);
        let mut reqs: Vec<Request> = Vec::new();
        let mut at = 0;
        for i in 0..n {
            let mut prompt = Vec::new();
            if rng.range(0, 3) > 0 {
                let len = 16 * rng.range(1, 20) as u32 + rng.range(0, 16) as u32;
                prompt.push(Run::new(1 + rng.range(0, 4), 0, len));
            }
            if i > 0 && rng.range(0, 2) == 0 {
                let j = rng.range(0, i - 1) as usize;
                let prev = &reqs[j];
                prompt.extend(prev.prompt.iter().copied());
                prompt.push(Run::new(prev.output_content, 0, prev.output_len));
            }
            prompt.push(Run::new(100 + i, 0, rng.range(1, 400) as u32));
            at += rng.range(0, 3000);
            reqs.push(req(i, at, prompt, rng.range(1, 300) as u32));
        }
        let t = trace(reqs);
        let f = EngineFlags {
            num_gpu_blocks: Some(rng.range(60, 600) as u32),
            max_num_batched_tokens: Some([256, 1024, 8192][rng.range(0, 2) as usize]),
            max_num_seqs: Some([4, 16, 256][rng.range(0, 2) as usize]),
            max_model_len: Some(100_000),
            ..Default::default()
        };
        let off = match rng.range(0, 3) {
            0 => crate::tiers::OffloadConfig::None,
            1 => lmcache_cpu([64, 256][rng.range(0, 1) as usize], 1),
            2 => lmcache_cpu(16, 1),
            _ => crate::tiers::OffloadConfig::Native { cpu_bytes: 1 << 28 },
        };
        let mut fast_setup = setup(f, off);
        fast_setup.sample_interval =
            SimDuration::from_ns([10 * MS, 1000 * MS][rng.range(0, 1) as usize]);
        let mut slow_setup = fast_setup.clone();
        slow_setup.reference_mode = true;
        let prep = super::TracePrep::new(&t, Some([16, 32][case % 2]));
        assert_eq!(fast_setup.engine.block_size, 16);
        let fast = super::simulate_shared(&t, &fast_setup, &prep).unwrap();
        let slow = simulate(&t, &slow_setup).unwrap();
        assert_same_results(&fast, &slow, &format!("case {case}"));
        stretched += u32::from(fast.stats.stretch_steps > 0);
        preempted += u32::from(fast.stats.preemptions > 0);
    }
    // The cases must exercise what they check.
    assert!(
        stretched >= 10 && preempted >= 5,
        "{stretched} stretched, {preempted} preempted"
    );
}

#[test]
fn a_blocked_request_waits_through_stretches_and_starts_when_room_is_freed() {
    // 60 blocks. Requests 0 (480 + 40 tokens, 30-33 blocks) and 2 (100 + 300 tokens) start at
    // once; request 1 (400 prompt tokens, 25 blocks) arrives at 20 ms and finds no room until
    // request 0 finishes and frees its blocks (none of them shared, so none registered).
    // Meanwhile decode stretches run with request 1 waiting; it must start at the very step
    // after request 0's last token, as it does stepping one by one.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 480)], 40),
        req(1, 20, vec![Run::new(2, 0, 400)], 5),
        req(2, 0, vec![Run::new(3, 0, 100)], 300),
    ]);
    let f = EngineFlags {
        num_gpu_blocks: Some(60),
        ..Default::default()
    };
    let fast = simulate(
        &t,
        &sparse_sampling(f.clone(), crate::tiers::OffloadConfig::None),
    )
    .unwrap();
    let mut s = sparse_sampling(f, crate::tiers::OffloadConfig::None);
    s.reference_mode = true;
    let slow = simulate(&t, &s).unwrap();
    // Request 0: prefill at step 1 (first token at 10 ms), 39 more tokens: done at 400 ms.
    assert_eq!(fast.reqs[0].finish.map(SimTime::as_ns), Some(400 * MS));
    assert_eq!(fast.reqs[1].scheduled.map(SimTime::as_ns), Some(400 * MS));
    assert!(
        fast.stats.stretch_steps > 20,
        "{}",
        fast.stats.stretch_steps
    );
    assert_same_results(&fast, &slow, "blocked");
}

/// The same-time order is the documented contract: phases first, then scheduling order, for
/// every replica alike; a replica's horizon ignores the other replicas' step ends.
#[test]
fn same_time_events_pop_in_phase_order_then_fifo() {
    let mut q = Queue::new(2);
    let t = SimTime::from_ns(5);
    let pushed = [
        Event::Wake { replica: 1 },
        Event::Submit { req: 7, replica: 0 },
        Event::Send { req: 2 },
        Event::ClientReady { pool: 0, client: 1 },
        Event::StepEnd { replica: 1 },
        Event::Send { req: 1 },
        Event::StepEnd { replica: 0 },
        Event::ClientReady { pool: 0, client: 0 },
    ];
    for e in pushed {
        q.push(t, e).unwrap();
    }
    q.push(SimTime::from_ns(4), Event::Wake { replica: 0 })
        .unwrap();
    q.push(SimTime::from_ns(3), Event::StepEnd { replica: 1 })
        .unwrap();
    // Replica 0 waits for its wake-up at 4; replica 1 for its step end at 3.
    assert_eq!((q.next_for(0).as_ns(), q.next_for(1).as_ns()), (4, 3));
    let popped: Vec<(u64, Event)> = std::iter::from_fn(|| q.pop())
        .map(|(t, e)| (t.as_ns(), e))
        .collect();
    assert_eq!(
        popped,
        vec![
            (3, Event::StepEnd { replica: 1 }),
            (4, Event::Wake { replica: 0 }),
            (5, Event::StepEnd { replica: 1 }),
            (5, Event::StepEnd { replica: 0 }),
            (5, Event::ClientReady { pool: 0, client: 1 }),
            (5, Event::ClientReady { pool: 0, client: 0 }),
            (5, Event::Send { req: 2 }),
            (5, Event::Send { req: 1 }),
            (5, Event::Submit { req: 7, replica: 0 }),
            (5, Event::Wake { replica: 1 }),
        ]
    );
    // The clock is at 5 ns now: an event at 4 ns is in the past.
    let e = q
        .push(SimTime::from_ns(4), Event::Wake { replica: 0 })
        .unwrap_err();
    assert!(matches!(e, Error::Invariant(_)), "{e}");
    assert!(e.to_string().contains("before the current time"), "{e}");
}

/// A request sent at the instant a step ends is scheduled by the step that starts then.
#[test]
fn a_request_sent_when_a_step_ends_joins_the_next_step() {
    // Request 0's prefill step ends at 10 ms; request 1 arrives exactly then.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 2),
        req(1, 10, vec![Run::new(2, 0, 100)], 1),
    ]);
    let r = run(&t, EngineFlags::default());
    assert_eq!(r.reqs[1].scheduled.map(SimTime::as_ns), Some(10 * MS));
    // One step (decode of 0 + prefill of 1) serves both: 2 steps in all.
    assert_eq!(r.stats.steps, 2);
    assert_eq!(r.reqs[1].first_token.map(SimTime::as_ns), Some(20 * MS));
}

/// vLLM's scheduler stalls when a request whose KV was loaded asynchronously holds the blocks
/// the request ahead of it in the waiting queue needs, and nothing runs to free any. The run
/// ends in a `Deadlock` error that says so, not in silently unfinished requests.
#[test]
fn a_stall_behind_asynchronously_loaded_blocks_is_a_deadlock_error() {
    // 10 GPU blocks of 16 tokens, no GPU prefix caching: R1's 5-block hit of content 1 comes
    // from the native CPU pool, which R0 filled.
    let f = EngineFlags {
        num_gpu_blocks: Some(10),
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let t = trace(vec![
        // R0 (t=0): 96 tokens of content 1, saved to the CPU pool after its step.
        req(0, 0, vec![Run::new(1, 0, 96)], 1),
        // R2 (t=20 ms): 64 tokens, then 60 decode steps growing a block every 16 tokens.
        req(1, 20, vec![Run::new(2, 0, 64)], 60),
        // R1 (t=30 ms): content 1 again; its 5-block hit loads asynchronously into the 5 free
        // blocks. R2 then cannot grow: it is preempted (to the front of the queue), recomputes
        // into the 5 free blocks, and at 81 tokens needs a 6th block that R1 holds.
        req(2, 30, vec![Run::new(1, 0, 96)], 1),
    ]);
    let s = setup(f, OffloadConfig::Native { cpu_bytes: 1 << 30 });
    let e = simulate(&t, &s).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Deadlock { unfinished: 2, .. }), "{text}");
    assert!(
        text.contains("0 running, 2 waiting (1 of them hold 5 of the GPU's 10 KV blocks"),
        "{text}"
    );
    // R2 holds nothing after its preemption and needs 6 blocks for its 81+ tokens; 5 are free.
    assert!(
        text.contains("5 blocks free; the first waiting request needs 6 more blocks"),
        "{text}"
    );
}

/// Regression: usage samples were one per simulated second, idle time included (two requests
/// 121 days apart wrote a 1.18 GB `kv_usage.json`). An idle gap now gives two samples.
#[test]
fn kv_samples_grow_with_steps_not_with_idle_time() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 2),
        req(1, 1_000_000, vec![Run::new(2, 0, 100)], 2),
    ]);
    let mut s = setup(EngineFlags::default(), OffloadConfig::None);
    s.sample_interval = SimDuration::from_ns(1000 * MS);
    let r = simulate(&t, &s).unwrap();
    // Steps start at 0 and 10 ms, then at 1000 s and 1000.01 s: the sample at 0, then for the
    // step at 1000 s the first (1 s) and the last (1000 s) of the instants it covers.
    let ts: Vec<f64> = r.kv_samples.iter().map(|k| k.t_s).collect();
    assert_eq!(ts, vec![0.0, 1.0, 1000.0]);
    assert_eq!(r.reqs[1].finish.map(SimTime::as_ns), Some(1_000_020 * MS));
}

/// Regression: near the end of time the sample clock wrapped and the run never ended.
#[test]
fn a_request_at_the_end_of_time_finishes() {
    let mut late = req(1, 0, vec![Run::new(2, 0, 100)], 3);
    late.arrival_ns = u64::MAX - 15 * MS;
    let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 100)], 1), late]);
    let r = simulate(&t, &setup(EngineFlags::default(), OffloadConfig::None)).unwrap();
    // Prefill ends at MAX - 5 ms; the two decode steps end at the end of time (saturated).
    assert_eq!(
        r.reqs[1].first_token.map(SimTime::as_ns),
        Some(u64::MAX - 5 * MS)
    );
    assert_eq!(r.reqs[1].finish, Some(SimTime::MAX));
    assert!(
        r.kv_samples.len() <= 2 * r.stats.steps as usize,
        "{}",
        r.kv_samples.len()
    );
}

/// Regression: a request with nothing to generate livelocked the engine for 446,653 steps and
/// then showed up as "unfinished"; vLLM refuses it (`max_tokens` must be at least 1).
#[test]
fn a_request_with_no_output_tokens_is_rejected_not_livelocked() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 100)], 0),
        req(1, 0, vec![Run::new(2, 0, 100)], 1),
    ]);
    let r = run(&t, EngineFlags::default());
    assert_eq!(r.reqs[0].reject, Some(RejectReason::NoOutputTokens));
    assert_eq!(r.reqs[1].finish.map(SimTime::as_ns), Some(10 * MS));
    assert_eq!(r.stats.steps, 1);
}

/// Regression: a think time of u64::MAX ns wrapped around to no think time at all.
#[test]
fn an_endless_think_time_does_not_wrap() {
    let mut reqs: Vec<Request> = (0..2)
        .map(|i| req(i, 0, vec![Run::new(10 + i, 0, 50)], 2))
        .collect();
    for r in &mut reqs {
        r.session = Some(0);
        r.think_ns = u64::MAX;
    }
    let r = run(&pooled(reqs, 1), EngineFlags::default());
    // Request 0 finishes at 20 ms; the client then thinks until the end of time.
    assert_eq!(r.reqs[0].finish.map(SimTime::as_ns), Some(20 * MS));
    assert_eq!(r.reqs[1].arrival, SimTime::MAX);
    assert_eq!(r.reqs[1].finish, Some(SimTime::MAX));
}

/// Regression: with asynchronous loading, a prefix larger than the CPU tier was prefetched from
/// disk, evicted by its own promotion before the request looked again, and prefetched again,
/// forever (memory grew without bound). A prefetch now pins what it brought for its request.
#[test]
fn an_async_prefetch_larger_than_the_cpu_tier_completes() {
    let chunk_bytes = 256 * 128 * 1024; // Llama-3.1-8B: 128 KiB of KV per token
    let off = OffloadConfig::LmCache(LmCacheConfig {
        chunk_size: 256,
        cpu_bytes: Some(2 * chunk_bytes),
        disk_bytes: Some(1 << 30),
        enable_async_loading: true,
        ..Default::default()
    });
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    // Both send the same 2,048-token document (8 chunks), then 100 tokens of their own.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 2048), Run::new(2, 0, 100)], 1),
        req(1, 1000, vec![Run::new(1, 0, 2048), Run::new(3, 0, 100)], 1),
    ]);
    let r = simulate(&t, &setup(f, off)).unwrap();
    // The CPU tier keeps only request 0's last 2 chunks; request 1 prefetches all 8 from disk
    // once and loads them from host memory.
    let o = r.reqs[1].origin;
    assert_eq!((o.cpu, o.disk, o.computed), (2048, 0, 100));
    assert!(r.reqs[1].finish.is_some());
}

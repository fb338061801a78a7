//! Timelines: the file is valid Trace Event Format, its steps and bytes are the run's, a cap is
//! stated, and it is deterministic and changes no other output.

use super::*;
use crate::engine::EngineFlags;
use crate::pipeline::Prepared;
use crate::sim::SimSetup;
use crate::testkit::{MS, lmcache_cpu, req, setup, trace};
use crate::tiers::OffloadConfig;
use crate::trace::{Run, Trace};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// A temporary file path unique to `name` (removed by the caller when done).
fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "kvreplay-timeline-{}-{name}.json",
        std::process::id()
    ))
}

/// Runs `t` on `s` with a timeline of at most `limit` records; the run and the parsed file.
fn timeline(
    t: &Trace,
    s: &SimSetup,
    limit: usize,
    name: &str,
) -> (RunOutput<'static>, Value, Vec<u8>) {
    let p = Prepared {
        trace: Cow::Owned(t.clone()),
        setup: s.clone(),
        gpu_provenance: String::new(),
    };
    let path = tmp(name);
    let (o, info) = p.run_with_timeline_limit(&path, limit).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    assert_eq!(
        v["traceEvents"].as_array().unwrap().len() as u64,
        info.events
    );
    (o, v, bytes)
}

/// Nanoseconds of a `ts` or `dur` in microseconds.
fn ns(x: &Value) -> i64 {
    (x.as_f64().expect("a number") * 1e3).round() as i64
}

/// Checks `v` against the Trace Event Format as Perfetto and chrome://tracing read it.
fn check_format(v: &Value) {
    let top = v.as_object().expect("an object");
    assert_eq!(top["displayTimeUnit"], "ms");
    assert!(top["otherData"].is_object());
    let events = top["traceEvents"]
        .as_array()
        .expect("traceEvents is an array");
    let mut slices: BTreeMap<(u64, u64), Vec<(i64, i64)>> = BTreeMap::new();
    let mut begins: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut used: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut pids_used: BTreeSet<u64> = BTreeSet::new();
    let (mut named_threads, mut named_pids) = (BTreeSet::new(), BTreeSet::new());
    for e in events {
        let name = e["name"].as_str().expect("name is a string");
        let ph = e["ph"].as_str().expect("ph is a string");
        let pid = e["pid"].as_u64().expect("pid is an integer");
        let tid = e["tid"].as_u64().expect("tid is an integer");
        let args = e["args"].as_object().expect("args is an object");
        if ph != "M" {
            assert!(e["ts"].is_number(), "ts of {e}");
            assert!(e["ts"].as_f64().unwrap() >= 0.0);
            pids_used.insert(pid);
        }
        match ph {
            "X" => {
                let dur = e["dur"].as_f64().expect("dur is a number");
                assert!(dur >= 0.0, "{e}");
                let start = ns(&e["ts"]);
                slices
                    .entry((pid, tid))
                    .or_default()
                    .push((start, start + ns(&e["dur"])));
                used.insert((pid, tid));
            }
            "B" => {
                *begins.entry((pid, tid)).or_default() += 1;
                used.insert((pid, tid));
            }
            "E" => {
                *begins.entry((pid, tid)).or_default() -= 1;
                used.insert((pid, tid));
            }
            "i" => {
                assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}");
                used.insert((pid, tid));
            }
            "C" => {
                assert!(!args.is_empty(), "{e}");
                assert!(
                    args.values().all(Value::is_number),
                    "counters are numeric: {e}"
                );
            }
            "M" => match name {
                "process_name" => {
                    named_pids.insert(pid);
                    assert!(args["name"].is_string());
                }
                "thread_name" => {
                    named_threads.insert((pid, tid));
                    assert!(args["name"].is_string());
                }
                "process_sort_index" | "thread_sort_index" => {
                    assert!(args["sort_index"].is_i64());
                }
                other => panic!("unknown metadata {other}"),
            },
            other => panic!("unexpected ph {other}"),
        }
    }
    assert!(begins.values().all(|&n| n == 0), "B and E balance");
    assert!(used.is_subset(&named_threads), "every track is named");
    assert!(pids_used.is_subset(&named_pids), "every process is named");
    // Slices on one track nest: sorted by start (longest first), each ends within the
    // enclosing one or starts after it ended.
    for (track, mut s) in slices {
        s.sort_by_key(|&(a, z)| (a, -z));
        let mut stack: Vec<i64> = Vec::new();
        for (a, z) in s {
            while stack.last().is_some_and(|&end| end <= a) {
                stack.pop();
            }
            if let Some(&end) = stack.last() {
                assert!(
                    z <= end,
                    "partial overlap on {track:?} at {a}..{z} (parent ends {end})"
                );
            }
            stack.push(z);
        }
    }
}

/// The X slices named `name`.
fn named<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == name)
        .collect()
}

/// A sampled usage interval that is long enough for one decode stretch.
fn sparse(flags: EngineFlags, offload: OffloadConfig) -> SimSetup {
    let mut s = setup(flags, offload);
    s.sample_interval = SimDuration::from_ns(1000 * MS);
    s
}

#[test]
fn a_prefill_a_decode_stretch_and_a_last_step_by_hand() {
    // 100 prompt tokens, 40 output tokens, 10 ms steps: step 1 prefills (first token at 10 ms),
    // steps 2-39 are one decode stretch (38 steps, 380 ms), step 40 decodes the last token.
    let t = trace(vec![req(0, 0, vec![Run::new(1, 0, 100)], 40)]);
    let (o, v, _) = timeline(
        &t,
        &sparse(EngineFlags::default(), OffloadConfig::None),
        1000,
        "hand",
    );
    check_format(&v);
    let steps = named(&v, "step");
    let stretches = named(&v, "decode stretch");
    assert_eq!((steps.len(), stretches.len()), (2, 1));
    let tokens = |e: &Value| {
        (
            e["args"]["prefill_tokens"].as_u64().unwrap(),
            e["args"]["decode_tokens"].as_u64().unwrap(),
            e["args"]["steps"].as_u64().unwrap(),
        )
    };
    assert_eq!(tokens(steps[0]), (100, 0, 1));
    assert_eq!(tokens(stretches[0]), (0, 38, 38));
    assert_eq!(tokens(steps[1]), (0, 1, 1));
    let span = |e: &Value| (ns(&e["ts"]), ns(&e["dur"]));
    assert_eq!(span(steps[0]), (0, 10 * MS as i64));
    assert_eq!(span(stretches[0]), (10 * MS as i64, 380 * MS as i64));
    assert_eq!(span(steps[1]), (390 * MS as i64, 10 * MS as i64));
    // The slices cover the engine's steps and busy time exactly.
    let all: Vec<&Value> = steps.iter().chain(&stretches).copied().collect();
    let n: u64 = all
        .iter()
        .map(|e| e["args"]["steps"].as_u64().unwrap())
        .sum();
    assert_eq!(n, o.result.stats.steps);
    let busy: i64 = all.iter().map(|e| ns(&e["dur"])).sum();
    assert_eq!(busy as u64, o.result.stats.busy.as_ns());
    // The request: queued for nothing, a 10 ms prefill, 390 ms of decode.
    let phases: Vec<i64> = ["prefill", "decode"]
        .iter()
        .map(|p| ns(&named(&v, p)[0]["dur"]))
        .collect();
    assert_eq!(phases, vec![10 * MS as i64, 390 * MS as i64]);
    assert!(named(&v, "queued").is_empty());
    assert_eq!(v["otherData"]["dropped_steps"], 0);
}

#[test]
fn loads_and_stores_add_up_to_the_runs_bytes_and_steps_to_their_parts() {
    // LMCache CPU tier, prefix caching off: request 1 loads request 0's two saved chunks.
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 600)], 1),
        req(1, 100, vec![Run::new(1, 0, 600)], 20),
        req(2, 200, vec![Run::new(7, 0, 300)], 30),
        req(3, 205, vec![Run::new(7, 0, 300)], 1),
    ]);
    let mut s = setup(f, lmcache_cpu(256, 5));
    // Real step times (the transfer parts are then a fraction of each step).
    s.step_model.fitted = None;
    let (o, v, _) = timeline(&t, &s, 1000, "bytes");
    check_format(&v);
    let sum = |name: &str, key: &str| -> u64 {
        named(&v, name)
            .iter()
            .map(|e| e["args"][key].as_u64().unwrap())
            .sum()
    };
    assert!(o.summary.bytes_loaded > 0 && o.summary.bytes_stored > 0);
    assert_eq!(
        sum("load", "bytes") + sum("async load", "bytes"),
        o.summary.bytes_loaded
    );
    assert_eq!(sum("store", "bytes"), o.summary.bytes_stored);
    assert_eq!(
        sum("load", "cpu_bytes") + sum("load", "disk_bytes") + sum("load", "remote_bytes"),
        sum("load", "bytes")
    );
    assert_eq!(sum("load", "bytes"), 512 * 128 * 1024 + 256 * 128 * 1024);
    // Every step's parts add up to it, in the args and as child slices.
    let steps = named(&v, "step");
    assert_eq!(
        steps.len() as u64 + sum("decode stretch", "steps"),
        o.result.stats.steps
    );
    let mut with_load = 0;
    for e in &steps {
        let a = &e["args"];
        let parts: f64 = ["lookup_s", "transfer_s", "forward_s"]
            .iter()
            .map(|k| a[k].as_f64().unwrap())
            .sum();
        assert!((parts * 1e9 - ns(&e["dur"]) as f64).abs() <= 1.0, "{e}");
        if a["load_s"].as_f64().unwrap() > 0.0 {
            with_load += 1;
        }
        let (start, end) = (ns(&e["ts"]), ns(&e["ts"]) + ns(&e["dur"]));
        let children: i64 = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["cat"] == "step part" && c["pid"] == e["pid"])
            .filter(|c| ns(&c["ts"]) >= start && ns(&c["ts"]) < end)
            .map(|c| ns(&c["dur"]))
            .sum();
        assert!((children - (end - start)).abs() <= 1, "{e}");
    }
    assert_eq!(with_load, 2, "requests 1 and 3 load");
    // A bandwidth counter rises while a load runs and falls back to zero.
    let h2d: Vec<f64> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "PCIe H2D GB/s")
        .map(|e| e["args"]["GB/s"].as_f64().unwrap())
        .collect();
    assert!(h2d.iter().any(|&x| x > 0.0));
    assert_eq!(h2d.last(), Some(&0.0));
}

#[test]
fn a_capped_run_says_what_it_left_out() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 20_000)], 1),
        req(1, 0, vec![Run::new(2, 0, 20_000)], 1),
    ]);
    let (o, v, _) = timeline(
        &t,
        &setup(EngineFlags::default(), OffloadConfig::None),
        2,
        "cap",
    );
    check_format(&v);
    assert!(o.result.stats.steps > 2);
    assert_eq!(named(&v, "step").len(), 2);
    assert_eq!(v["otherData"]["limit_per_replica"], 2);
    assert_eq!(v["otherData"]["dropped_steps"], o.result.stats.steps - 2);
    assert!(
        v["otherData"]["limit"]
            .as_str()
            .unwrap()
            .contains("at most 2 step records")
    );
}

#[test]
fn the_same_run_gives_the_same_bytes_and_recording_changes_nothing() {
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 600)], 30),
        req(1, 5, vec![Run::new(1, 0, 600)], 20),
        req(2, 7, vec![Run::new(3, 0, 900)], 10),
    ]);
    let s = setup(EngineFlags::default(), lmcache_cpu(256, 5));
    let (a, _, fa) = timeline(&t, &s, 1000, "det-a");
    let (_, _, fb) = timeline(&t, &s, 1000, "det-b");
    assert_eq!(fa, fb);
    let plain = Prepared {
        trace: Cow::Borrowed(&t),
        setup: s.clone(),
        gpu_provenance: String::new(),
    }
    .run()
    .unwrap();
    assert_eq!(a.summary, plain.summary);
    assert_eq!(a.records, plain.records);
    assert_eq!(a.result.kv_samples, plain.result.kv_samples);
    assert!(plain.result.step_logs.is_empty());
}

#[test]
fn a_fleet_has_a_process_per_replica() {
    let t = trace(
        (0..8)
            .map(|i| req(i, i * 3, vec![Run::new(i + 1, 0, 300)], 5))
            .collect(),
    );
    let mut s = setup(EngineFlags::default(), lmcache_cpu(256, 5));
    s.fleet.replicas = 2;
    let (o, v, _) = timeline(&t, &s, 1000, "fleet");
    check_format(&v);
    let names: Vec<&str> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["replica 0", "replica 1"]);
    let n: u64 = named(&v, "step")
        .iter()
        .chain(&named(&v, "decode stretch"))
        .map(|e| e["args"]["steps"].as_u64().unwrap())
        .sum();
    assert_eq!(n, o.result.stats.steps);
}

#[test]
fn disk_writes_and_remote_puts_are_the_tiers_stores() {
    // LMCache with CPU, disk and a remote store of its own: every saved chunk is written to the
    // disk and put to the remote store once; a request repeating a prompt loads it back.
    let f = EngineFlags {
        enable_prefix_caching: Some(false),
        ..Default::default()
    };
    let offload = OffloadConfig::LmCache(crate::tiers::lmcache::LmCacheConfig {
        chunk_size: 256,
        cpu_bytes: Some(1 << 30),
        disk_bytes: Some(4 << 30),
        remote: Some(crate::tiers::lmcache::RemoteConfig {
            rtt_s: 0.002,
            ..Default::default()
        }),
        ..Default::default()
    });
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 1024)], 3),
        req(1, 50, vec![Run::new(2, 0, 600)], 3),
        req(2, 2000, vec![Run::new(1, 0, 1024)], 3),
    ]);
    let (o, v, _) = timeline(&t, &setup(f, offload), 1000, "tiers");
    check_format(&v);
    let Some(crate::connector::ConnectorStats::LmCache { counters, .. }) = &o.summary.offload
    else {
        panic!("LMCache counters");
    };
    // 4 + 2 full chunks stored (request 2 hits its prompt's chunks, stored already).
    assert_eq!(counters.disk_stores, 6);
    assert_eq!(named(&v, "disk write").len() as u64, counters.disk_stores);
    assert_eq!(named(&v, "remote put").len() as u64, counters.remote_stores);
    let chunk = 256 * 128 * 1024;
    for e in named(&v, "disk write") {
        assert_eq!(e["args"]["bytes"], chunk);
        assert!(e["dur"].as_f64().unwrap() > 0.0);
    }
    let disk_rate = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "disk write GB/s")
        .count();
    assert!(disk_rate >= 2);
    let loads = named(&v, "load");
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0]["args"]["bytes"], 1023 * 128 * 1024);
}

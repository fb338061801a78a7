//! A simulated run as a Chrome / Perfetto trace (the Trace Event Format's JSON object form), so
//! that a run can be looked at step by step in ui.perfetto.dev or chrome://tracing.
//!
//! # Tracks
//! - One process per engine (per replica in a fleet; a disaggregated fleet's prefill and decode
//!   replicas named so), with:
//!   - `steps`: each engine step as a slice (args: prefill and decode tokens, requests, its parts
//!     in seconds, KV blocks used, running and waiting requests). A step's parts are child
//!     slices one after another: `lookup`, `load wait`, `forward`, `store wait`, or with
//!     layer-wise transfers `lookup`, `forward`, `transfer wait` (what the forward pass does not
//!     hide). A decode-only stretch (pure-decode steps the engine advances in one call) is one
//!     slice `decode stretch` with its step count in `steps`; its steps are not expanded.
//!   - `loads N`: loads into the GPU, one slice each (args: bytes, and bytes by source tier:
//!     CPU, disk, remote); blocking loads laid out one after another from the end of the step's
//!     lookups, asynchronous ones from their start to their completion. Overlapping loads go to
//!     further lanes.
//!   - `stores N`: saves out of the GPU (args: bytes), over their critical-path time; a save off
//!     the critical path is a zero-length slice, and a decode stretch's block-filling saves are
//!     one zero-length slice at its end.
//!   - `disk writes N`: LMCache's writes of stored chunks to its disk (args: bytes), over their
//!     time on the disk writers; `remote puts N`: its puts to a remote store, zero-length
//!     slices when they are handed to the store's client (args: bytes on the wire; their
//!     network time is not drawn).
//!   - counters: `disk write GB/s`, `PCIe H2D GB/s` and `PCIe D2H GB/s` (bytes of the loads and saves above over
//!     their time), `disk read GB/s` and `network read GB/s` (the disk and remote shares of a
//!     load, over that load's time), `GPU KV used` (fraction of blocks, at the run's usage
//!     samples) and `requests` (running, waiting).
//! - `requests`: the first [`REQUEST_SAMPLE`] requests by trace index, each a slice from its send
//!   to its last token with children `queued`, `prefill` (to its first token) and `decode`;
//!   a request that never ran is an instant `rejected`.
//!
//! # Size
//! At most `limit` step records, `limit` GPU load/save records and `limit` tier write records
//! ([`DEFAULT_LIMIT`] from the CLI) over the whole run, split evenly between replicas; what a replica does past its share is
//! left out and counted in `otherData` (`dropped_steps`, `dropped_transfers`). Each step gives
//! at most five slices, each transfer one slice and up to six counter points.
//!
//! Output is a pure function of the run: the same run gives the same bytes.

use crate::connector::{TierTokens, WriteTier};
use crate::engine::step_log::{Direction, StepKind, StepLog, StepRecord, TransferRecord};
use crate::error::{Error, Result};
use crate::pipeline::RunOutput;
use crate::sim::KvSample;
use crate::time::{SimDuration, SimTime};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// Step records and transfer records kept per run by default (each kind; split evenly between
/// replicas).
pub const DEFAULT_LIMIT: usize = 100_000;

/// Requests drawn on the `requests` track: the first this many by trace index.
pub const REQUEST_SAMPLE: usize = 200;

/// What a written timeline holds (printed by the CLI, returned to library callers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineInfo {
    /// Trace events written.
    pub events: u64,
    /// Step records kept per replica at most.
    pub limit_per_replica: usize,
    /// Steps left out (past the limit), all replicas together.
    pub dropped_steps: u64,
    /// Transfers left out (past the limit), all replicas together.
    pub dropped_transfers: u64,
    /// Requests drawn on the `requests` track.
    pub sampled_requests: usize,
}

/// One trace event, as the format has it.
#[derive(Serialize)]
struct Event {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    args: Value,
}

/// Microseconds, the format's unit, of a simulated instant.
fn us(t: SimTime) -> f64 {
    t.as_ns() as f64 / 1e3
}

/// The events in the order written, and the tracks they use.
struct Builder {
    events: Vec<Event>,
    /// (pid, tid, name, sort index) of every thread track used.
    threads: Vec<(u32, u32, String, u32)>,
}

impl Builder {
    fn slice(
        &mut self,
        name: impl Into<String>,
        cat: &'static str,
        (pid, tid): (u32, u32),
        start: SimTime,
        end: SimTime,
        args: Value,
    ) {
        self.events.push(Event {
            name: name.into(),
            cat: Some(cat),
            ph: "X",
            ts: us(start),
            dur: Some((end - start).as_ns() as f64 / 1e3),
            pid,
            tid,
            s: None,
            args,
        });
    }

    fn counter(&mut self, name: &str, pid: u32, t: SimTime, args: Value) {
        self.events.push(Event {
            name: name.into(),
            cat: None,
            ph: "C",
            ts: us(t),
            dur: None,
            pid,
            tid: 0,
            s: None,
            args,
        });
    }

    fn thread(&mut self, pid: u32, tid: u32, name: String) {
        if !self.threads.iter().any(|(p, t, ..)| *p == pid && *t == tid) {
            self.threads.push((pid, tid, name, tid));
        }
    }
}

/// Lanes of one kind of track: the first lane free at a slice's start takes it.
#[derive(Default)]
struct Lanes(Vec<SimTime>);

impl Lanes {
    /// The lane for a slice `[start, end]`.
    fn take(&mut self, start: SimTime, end: SimTime) -> u32 {
        let lane = match self.0.iter().position(|&free| free <= start) {
            Some(i) => i,
            None => {
                self.0.push(SimTime::ZERO);
                self.0.len() - 1
            }
        };
        self.0[lane] = end;
        lane as u32
    }
}

/// Thread ids within a replica's process.
const STEPS_TID: u32 = 1;
const LOADS_TID: u32 = 100;
const STORES_TID: u32 = 100_000;
const DISK_WRITES_TID: u32 = 200_000;
const REMOTE_PUTS_TID: u32 = 300_000;

/// A load's bytes by source tier (cpu, disk, remote): the disk and remote tokens' bytes, the
/// rest from host memory; they add up to the load's bytes.
fn by_tier(bytes: u64, tiers: &TierTokens, bytes_per_token: u64) -> (u64, u64, u64) {
    let disk = (tiers.disk as u64 * bytes_per_token).min(bytes);
    let remote = (tiers.remote as u64 * bytes_per_token).min(bytes - disk);
    (bytes - disk - remote, disk, remote)
}

/// The step's parts, one after another, as (name, seconds).
fn parts(s: &StepRecord) -> Vec<(&'static str, f64)> {
    match s.kind {
        StepKind::Stretch | StepKind::LookupOnly => Vec::new(),
        StepKind::Step if s.layerwise => vec![
            ("lookup", s.lookup_s),
            ("forward", s.forward_s),
            ("transfer wait", s.transfer_s),
        ],
        StepKind::Step => vec![
            ("lookup", s.lookup_s),
            ("load wait", s.load_s),
            ("forward", s.forward_s),
            ("store wait", s.store_s),
        ],
    }
}

/// A counter track of rates: each transfer adds its rate from its start to its end.
fn rate_counter(b: &mut Builder, name: &str, pid: u32, spans: &mut [(SimTime, SimTime, f64)]) {
    let mut points: Vec<(SimTime, i8, f64)> = Vec::with_capacity(spans.len() * 2);
    for &(s, e, gbps) in spans.iter() {
        if e > s && gbps > 0.0 {
            points.push((s, 1, gbps));
            points.push((e, -1, gbps));
        }
    }
    if points.is_empty() {
        return;
    }
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut active, mut sum) = (0i64, 0.0f64);
    let mut i = 0;
    while i < points.len() {
        let t = points[i].0;
        while i < points.len() && points[i].0 == t {
            active += points[i].1 as i64;
            sum += points[i].1 as f64 * points[i].2;
            i += 1;
        }
        if active == 0 {
            sum = 0.0;
        }
        b.counter(name, pid, t, json!({ "GB/s": sum.max(0.0) }));
    }
}

/// One replica's tracks.
fn replica_tracks(b: &mut Builder, pid: u32, log: &StepLog, samples: &[KvSample]) {
    b.thread(pid, STEPS_TID, "steps".into());
    for s in &log.steps {
        let (name, cat) = match s.kind {
            StepKind::Step => ("step", "step"),
            StepKind::Stretch => ("decode stretch", "step"),
            StepKind::LookupOnly => ("lookup only", "step"),
        };
        let args = json!({
            "steps": s.steps,
            "prefill_tokens": s.prefill_tokens,
            "decode_tokens": s.decode_tokens,
            "requests": s.requests,
            "lookup_s": s.lookup_s,
            "load_s": s.load_s,
            "forward_s": s.forward_s,
            "store_s": s.store_s,
            "transfer_s": s.transfer_s,
            "layerwise": s.layerwise,
            "bytes_stored": s.bytes_stored,
            "kv_blocks_used": s.used_blocks,
            "running": s.running,
            "waiting": s.waiting,
        });
        b.slice(name, cat, (pid, STEPS_TID), s.start, s.end, args);
        let mut cum = 0.0;
        let mut at = s.start;
        for (part, secs) in parts(s) {
            cum += secs;
            let next = (s.start + SimDuration::from_secs_f64(cum)).min(s.end);
            if next > at {
                b.slice(part, "step part", (pid, STEPS_TID), at, next, json!({}));
            }
            at = next;
        }
    }
    let (mut loads, mut stores) = (Lanes::default(), Lanes::default());
    let (mut h2d, mut d2h, mut disk, mut net) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // By start (stably), so that lanes never overlap.
    let mut order: Vec<&TransferRecord> = log.transfers.iter().collect();
    order.sort_by_key(|t| t.start);
    for t in order {
        let secs = (t.end - t.start).as_secs_f64();
        let gbps = |bytes: u64| {
            if secs > 0.0 {
                bytes as f64 / secs / 1e9
            } else {
                0.0
            }
        };
        match &t.dir {
            Direction::Load(tiers) => {
                let (c, d, r) = by_tier(t.bytes, tiers, log.bytes_per_token);
                let tid = LOADS_TID + loads.take(t.start, t.end);
                b.thread(pid, tid, format!("loads {}", tid - LOADS_TID));
                let args = json!({
                    "req": t.req, "bytes": t.bytes, "cpu_bytes": c, "disk_bytes": d,
                    "remote_bytes": r, "blocking": t.blocking,
                });
                let name = if t.blocking { "load" } else { "async load" };
                b.slice(name, "load", (pid, tid), t.start, t.end, args);
                h2d.push((t.start, t.end, gbps(t.bytes)));
                disk.push((t.start, t.end, gbps(d)));
                net.push((t.start, t.end, gbps(r)));
            }
            Direction::Store => {
                let tid = STORES_TID + stores.take(t.start, t.end);
                b.thread(pid, tid, format!("stores {}", tid - STORES_TID));
                let req = (t.req != u32::MAX).then_some(t.req);
                let args = json!({ "req": req, "bytes": t.bytes, "blocking": t.blocking });
                b.slice("store", "store", (pid, tid), t.start, t.end, args);
                d2h.push((t.start, t.end, gbps(t.bytes)));
            }
        }
    }
    let (mut disk_lanes, mut put_lanes) = (Lanes::default(), Lanes::default());
    let mut disk_w = Vec::new();
    let mut writes: Vec<_> = log.tier_writes.iter().collect();
    writes.sort_by_key(|w| w.start);
    for w in writes {
        let args = json!({ "bytes": w.bytes });
        match w.tier {
            WriteTier::Disk => {
                let tid = DISK_WRITES_TID + disk_lanes.take(w.start, w.end);
                b.thread(pid, tid, format!("disk writes {}", tid - DISK_WRITES_TID));
                b.slice("disk write", "tier write", (pid, tid), w.start, w.end, args);
                let secs = (w.end - w.start).as_secs_f64();
                if secs > 0.0 {
                    disk_w.push((w.start, w.end, w.bytes as f64 / secs / 1e9));
                }
            }
            WriteTier::Remote => {
                let tid = REMOTE_PUTS_TID + put_lanes.take(w.start, w.end);
                b.thread(pid, tid, format!("remote puts {}", tid - REMOTE_PUTS_TID));
                b.slice("remote put", "tier write", (pid, tid), w.start, w.end, args);
            }
        }
    }
    rate_counter(b, "disk write GB/s", pid, &mut disk_w);
    rate_counter(b, "PCIe H2D GB/s", pid, &mut h2d);
    rate_counter(b, "PCIe D2H GB/s", pid, &mut d2h);
    rate_counter(b, "disk read GB/s", pid, &mut disk);
    rate_counter(b, "network read GB/s", pid, &mut net);
    for s in samples {
        let t = SimTime::from_ns((s.t_s * 1e9).round() as u64);
        b.counter("GPU KV used", pid, t, json!({ "fraction": s.used }));
        b.counter(
            "requests",
            pid,
            t,
            json!({ "running": s.running, "waiting": s.waiting }),
        );
    }
}

/// The `requests` track: the first [`REQUEST_SAMPLE`] requests.
fn request_tracks(b: &mut Builder, pid: u32, o: &RunOutput<'_>) -> usize {
    let r = &o.result;
    let n = r.reqs.len().min(REQUEST_SAMPLE);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (r.reqs[i].arrival, i));
    let mut lanes = Lanes::default();
    for i in order {
        let st = &r.reqs[i];
        let q = &o.trace.requests[i];
        let args = json!({
            "id": q.id,
            "replica": r.replica_of.get(i),
            "prompt_tokens": st.prompt_len,
            "output_tokens": st.num_output,
            "preemptions": st.preemptions,
            "bytes_loaded": st.bytes_loaded,
            "bytes_stored": st.bytes_stored,
        });
        let Some(finish) = st.finish.filter(|_| st.first_token.is_some()) else {
            let tid = 1 + lanes.take(st.arrival, st.arrival);
            b.thread(pid, tid, format!("lane {}", tid - 1));
            b.events.push(Event {
                name: format!("req {} rejected", q.id),
                cat: Some("request"),
                ph: "i",
                ts: us(st.arrival),
                dur: None,
                pid,
                tid,
                s: Some("t"),
                args: json!({ "id": q.id, "reason": st.reject.as_ref().map(|x| format!("{x:?}")) }),
            });
            continue;
        };
        let start = st.arrival.min(finish);
        let tid = 1 + lanes.take(start, finish);
        b.thread(pid, tid, format!("lane {}", tid - 1));
        b.slice(
            format!("req {}", q.id),
            "request",
            (pid, tid),
            start,
            finish,
            args,
        );
        // Clamped one after another, so that the phases nest in the request.
        let sched = st.scheduled.unwrap_or(start).clamp(start, finish);
        let first = st.first_token.unwrap_or(sched).clamp(sched, finish);
        for (name, a, z) in [
            ("queued", start, sched),
            ("prefill", sched, first),
            ("decode", first, finish),
        ] {
            if z > a {
                b.slice(name, "request phase", (pid, tid), a, z, json!({}));
            }
        }
    }
    n
}

/// The name of replica `r` of `count` in the run `o`.
fn replica_name(o: &RunOutput<'_>, r: usize, count: usize) -> String {
    let pool = o
        .result
        .replicas
        .get(r)
        .and_then(|x| x.pool)
        .and_then(|p| o.result.pools.get(p as usize))
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    match &o.setup.fleet.pd {
        Some(pd) if count > 1 => {
            let np = pd.prefill.max(1) as usize;
            if r < np {
                format!("prefill replica {r}{pool}")
            } else {
                format!("decode replica {r}{pool}")
            }
        }
        _ if count == 1 => "engine".into(),
        _ => format!("replica {r}{pool}"),
    }
}

/// Writes run `o`'s timeline to `path`. The run must have been simulated with recording
/// (`sim::simulate_recorded`, as `Prepared::run_with_timeline` does); its step logs are
/// consumed (emptied) here.
pub fn write(path: &Path, o: &mut RunOutput<'_>) -> Result<TimelineInfo> {
    let logs = std::mem::take(&mut o.result.step_logs);
    if logs.is_empty() {
        return Err(Error::Config(
            "no step records: the run was simulated without recording (use \
             Prepared::run_with_timeline)"
                .into(),
        ));
    }
    let mut b = Builder {
        events: Vec::new(),
        threads: Vec::new(),
    };
    let count = logs.len();
    let mut processes = Vec::new();
    for (r, log) in logs.iter().enumerate() {
        let pid = r as u32 + 1;
        let samples: &[KvSample] = match o.result.replicas.get(r) {
            Some(rep) => &rep.kv_samples,
            None => &o.result.kv_samples,
        };
        replica_tracks(&mut b, pid, log, samples);
        processes.push((pid, replica_name(o, r, count)));
    }
    let req_pid = count as u32 + 1;
    let sampled = request_tracks(&mut b, req_pid, o);
    processes.push((
        req_pid,
        format!("requests (first {sampled} by trace index)"),
    ));
    let mut meta = Vec::new();
    for (pid, name) in &processes {
        meta.push(
            json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
            "args": {"name": name}}),
        );
        meta.push(
            json!({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
            "args": {"sort_index": pid}}),
        );
    }
    let mut threads = std::mem::take(&mut b.threads);
    threads.sort();
    for (pid, tid, name, sort) in &threads {
        meta.push(
            json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
            "args": {"name": name}}),
        );
        meta.push(
            json!({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
            "args": {"sort_index": sort}}),
        );
    }
    let info = TimelineInfo {
        events: (meta.len() + b.events.len()) as u64,
        limit_per_replica: logs[0].limit,
        dropped_steps: logs.iter().map(|l| l.dropped_steps).sum(),
        dropped_transfers: logs.iter().map(|l| l.dropped_transfers).sum(),
        sampled_requests: sampled,
    };
    let other = json!({
        "generator": "kvreplay",
        "time_unit": "ts and dur in microseconds of simulated time (the trace's clock)",
        "limit": format!(
            "at most {} step records, {} GPU load/save records and {} tier write records per \
             replica; later ones are left out and counted below (tier writes among \
             dropped_transfers)",
            info.limit_per_replica, info.limit_per_replica, info.limit_per_replica
        ),
        "limit_per_replica": info.limit_per_replica,
        "dropped_steps": info.dropped_steps,
        "dropped_transfers": info.dropped_transfers,
        "decode_stretches": "a stretch of pure-decode steps run in one engine call is one \
            'decode stretch' slice; its step count is args.steps",
        "request_sample": format!("the first {sampled} requests by trace index"),
        "requests_total": o.result.reqs.len(),
        "replicas": count,
    });
    let io = |e: std::io::Error| Error::io(path.display().to_string(), e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::new(file);
    let json_err = |e: serde_json::Error| Error::io(path.display().to_string(), e.into());
    w.write_all(b"{\"traceEvents\":[\n").map_err(io)?;
    let mut first = true;
    for m in &meta {
        if !first {
            w.write_all(b",\n").map_err(io)?;
        }
        first = false;
        serde_json::to_writer(&mut w, m).map_err(json_err)?;
    }
    for e in &b.events {
        if !first {
            w.write_all(b",\n").map_err(io)?;
        }
        first = false;
        serde_json::to_writer(&mut w, e).map_err(json_err)?;
    }
    w.write_all(b"\n],\"displayTimeUnit\":\"ms\",\"otherData\":")
        .map_err(io)?;
    serde_json::to_writer(&mut w, &other).map_err(json_err)?;
    w.write_all(b"}\n").map_err(io)?;
    w.flush().map_err(io)?;
    Ok(info)
}

#[cfg(test)]
mod tests;

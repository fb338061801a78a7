//! `kvreplay run` and `kvreplay compare`.

use super::sim_args::SimArgs;
use anyhow::{Context, Result};
use kvreplay::compare::{self, DEFAULT_VARIANTS};
use kvreplay::pipeline;
use kvreplay::trace::{self, Trace};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a command writes: `-o DIR`, else `output/<name>`.
pub fn out_dir(given: &Option<PathBuf>, name: &str) -> PathBuf {
    given
        .clone()
        .unwrap_or_else(|| Path::new("output").join(name))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into())
}

/// `kvreplay run`.
pub fn run(
    trace_path: &Path,
    args: &SimArgs,
    out: &Option<PathBuf>,
    interval_samples: Option<u32>,
    timeline: Option<&Path>,
) -> Result<()> {
    let t = trace::read(trace_path)?;
    let (cfg, notes) = args.run_config()?;
    for n in notes {
        eprintln!("note: {n}");
    }
    if let Ok(card) = kvreplay::model::lookup(&cfg.model) {
        for n in card.modelling_notes() {
            eprintln!("note: {n}");
        }
    }
    let last = t.requests.iter().map(|r| r.arrival_ns).max().unwrap_or(0);
    let (o, timeline_info) =
        kvreplay::util::progress::while_simulating("simulated s", last, || {
            let p = pipeline::prepare(&t, &cfg)?;
            match timeline {
                Some(path) => p.run_with_timeline(path).map(|(o, i)| (o, Some(i))),
                None => p.run().map(|o| (o, None)),
            }
        })?;
    let dir = out_dir(out, &stem(trace_path));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut config = cfg.to_json();
    config["trace"] = serde_json::json!(
        trace_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    );
    let prov = o.provenance();
    config["provenance"] = prov.clone();
    kvreplay::report::write_run(&dir, &o, &config)?;
    print!("{}", kvreplay::report::print_summary(&o.summary));
    print_provenance(&prov);
    if let Some(n) = interval_samples {
        let r = kvreplay::interval::intervals(&t, &cfg, n, 0)?;
        println!("intervals    {}", r.method);
        for m in [
            "ttft_mean_s",
            "ttft_p99_s",
            "tpot_mean_s",
            "e2e_p99_s",
            "output_tps",
        ] {
            if let Some(i) = r.metrics.get(m) {
                println!("  {m:<14} {:>12.4}  [{:.4}, {:.4}]", i.value, i.lo, i.hi);
            }
        }
        let f = dir.join("intervals.json");
        std::fs::write(&f, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let (Some(path), Some(i)) = (timeline, &timeline_info) {
        println!(
            "timeline     {} ({} events; at most {} step and transfer records per replica, {} \
             steps and {} transfers past that left out; first {} requests)",
            path.display(),
            i.events,
            i.limit_per_replica,
            i.dropped_steps,
            i.dropped_transfers,
            i.sampled_requests
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}

/// Says which inputs were measured and which are spec defaults.
pub fn print_provenance(p: &serde_json::Value) {
    println!(
        "inputs       step time: {}",
        p["step_time"].as_str().unwrap_or("?")
    );
    let measured: Vec<&String> = p["transfer_measured"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let spec: Vec<&str> = p["transfer_spec"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if measured.is_empty() {
        println!(
            "             transfer costs: all spec defaults (calibrate and pass --profile to measure them)"
        );
    } else {
        println!(
            "             transfer costs measured: {}; spec defaults: {}",
            measured
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            spec.join(", ")
        );
    }
}

fn secs(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// `kvreplay compare`; with no trace, the embedded default workload.
pub fn compare(
    trace_path: Option<&Path>,
    variants: Option<&str>,
    args: Option<&SimArgs>,
    out: &Option<PathBuf>,
) -> Result<()> {
    let (t, base, name): (Trace, _, String) = match trace_path {
        Some(p) => {
            let (cfg, notes) = args.context("flags")?.run_config()?;
            for n in notes {
                eprintln!("note: {n}");
            }
            (trace::read(p)?, cfg, stem(p))
        }
        None => {
            let mut cfg = compare::default_base();
            if let Some(a) = args {
                let (c, _) = a.run_config()?;
                cfg.model = c.model;
                cfg.gpu = c.gpu;
                cfg.engine = c.engine;
            }
            (compare::default_trace()?, cfg, "compare-default".into())
        }
    };
    let list = variants.unwrap_or(DEFAULT_VARIANTS);
    let vs = compare::parse_variants(list)?;
    let rounds = t.requests.iter().any(|r| r.round > 0);
    println!(
        "workload: {} ({} requests){}; model {}; GPU {}",
        t.meta.source,
        t.requests.len(),
        if trace_path.is_none() {
            " [embedded default: long_doc_qa 51 x 10,000 tokens, tile, 4 in flight]"
        } else {
            ""
        },
        base.model,
        base.gpu
    );
    let results = compare::compare(&t, &base, &vs)?;
    let dir = out_dir(out, &name);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<16} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>6} {:>6} {:>6} {:>6} {:>7}",
        "offload",
        "TTFT mean",
        "TTFT p99",
        if rounds { "query TTFT" } else { "TPOT mean" },
        "E2E mean",
        "wall s",
        "out tok/s",
        "gpu%",
        "cpu%",
        "disk%",
        "rem%",
        "rehit%"
    );
    let mut json_rows = Vec::new();
    for (v, cfg, o) in &results {
        let s = &o.summary;
        let m = |name: &str| s.metric(&o.records, name);
        let hits = s.hit_fractions.unwrap_or_default();
        let third = if rounds {
            m("query_ttft_mean_s")
        } else {
            m("tpot_mean_s")
        };
        let _ = writeln!(
            table,
            "{:<16} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10.0} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>7}",
            v.label,
            secs(m("ttft_mean_s")),
            secs(m("ttft_p99_s")),
            secs(third),
            secs(m("e2e_mean_s")),
            secs(s.duration_s),
            s.throughput.output_tps.unwrap_or(0.0),
            hits.gpu * 100.0,
            hits.cpu * 100.0,
            hits.disk * 100.0,
            hits.remote * 100.0,
            s.preemption_rehits
                .hit_rate()
                .map_or("-".into(), |r| format!("{:.1}", r * 100.0)),
        );
        let sub = dir.join(v.label.replace([':', '/'], "_"));
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        let mut config = cfg.to_json();
        config["provenance"] = o.provenance();
        kvreplay::report::write_run(&sub, o, &config)?;
        json_rows
            .push(serde_json::json!({"variant": v.label, "config": cfg.to_json(), "summary": s}));
    }
    print!("{table}");
    println!(
        "times in seconds; hit% = prompt tokens served by each tier at first admission (the rest \
         computed); rehit% = tokens preempted requests found again when re-admitted"
    );
    std::fs::write(dir.join("compare.txt"), &table)
        .with_context(|| format!("writing {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&json_rows)? + "\n";
    std::fs::write(dir.join("compare.json"), json)
        .with_context(|| format!("writing {}", dir.display()))?;
    println!("wrote {}", dir.display());
    Ok(())
}

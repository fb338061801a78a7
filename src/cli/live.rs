//! `kvreplay live`, `kvreplay live-compare` and `kvreplay live-fit`: replay a trace against a
//! running server, compare the result with a prediction, fit the server's step time.

use anyhow::{Context, Result};
use clap::Subcommand;
use kvreplay::live::{self, LiveOptions, tokens::TokenMap};
use kvreplay::trace;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The live-run subcommands.
#[derive(Subcommand)]
pub enum LiveCommand {
    /// Replay a trace against an OpenAI-compatible server (vLLM): prompts as token ids that share
    /// what the trace shares, streamed; writes requests.parquet (as `run`), live_requests.jsonl,
    /// summary.json and the server's /metrics before and after.
    Live {
        /// Server base URL, e.g. http://127.0.0.1:8000.
        #[arg(long)]
        endpoint: String,
        /// A kvreplay trace (.parquet or .jsonl).
        #[arg(long)]
        trace: PathBuf,
        /// Model name to request (default: the first one /v1/models lists).
        #[arg(long)]
        model: Option<String>,
        /// Token ids are drawn from [--first-id, --vocab): the model's vocabulary size, less any
        /// special tokens at its end.
        #[arg(long, default_value_t = 32000)]
        vocab: u32,
        /// First token id used (ids below are the tokenizer's special tokens).
        #[arg(long, default_value_t = 16)]
        first_id: u32,
        /// Limit per request, connect to last token, seconds.
        #[arg(long, default_value_t = 600.0)]
        timeout_s: f64,
        /// Send only the standard max_tokens (= the trace's output_len), without vLLM's
        /// min_tokens and ignore_eos: for servers without those extensions (answers may then be
        /// shorter than the trace says).
        #[arg(long)]
        max_tokens_from_trace: bool,
        /// Do not scrape /metrics.
        #[arg(long)]
        no_metrics: bool,
        /// Empty the server's prefix cache first (vLLM: POST /reset_prefix_cache, served when
        /// VLLM_SERVER_DEV_MODE=1).
        #[arg(long)]
        reset_prefix_cache: bool,
        /// Output folder (default output/live-<trace name>).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compare a live run (`kvreplay live`) with a prediction (`kvreplay run`) of the same trace:
    /// TTFT, TPOT, E2E per request and in aggregate, throughput, prefix-cache hit rates.
    LiveCompare {
        /// The live run's folder.
        #[arg(long)]
        live: PathBuf,
        /// The prediction's folder.
        #[arg(long)]
        against: PathBuf,
        /// Also write the full comparison as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Fit the step-time coefficients of the server's engine and its time per request to live
    /// runs (calibration traces); writes them as configuration keys for `run --config`.
    LiveFit {
        /// A live run's folder (repeatable).
        #[arg(long, required = true)]
        live: Vec<PathBuf>,
        /// The server's --max-num-batched-tokens.
        #[arg(long)]
        max_num_batched_tokens: u32,
        /// Write {"step_c0_s": ..., "request_overhead_ms": ...} here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs one of the live subcommands.
pub fn run(cmd: LiveCommand) -> Result<()> {
    match cmd {
        LiveCommand::Live {
            endpoint,
            trace,
            model,
            vocab,
            first_id,
            timeout_s,
            max_tokens_from_trace,
            no_metrics,
            reset_prefix_cache,
            output,
        } => {
            let tokens = TokenMap::new(vocab, first_id)
                .with_context(|| format!("--first-id {first_id} must be below --vocab {vocab}"))?;
            anyhow::ensure!(
                timeout_s.is_finite() && timeout_s > 0.0,
                "--timeout-s must be positive"
            );
            let t = trace::read(&trace)?;
            let stem = trace
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "trace".into());
            let dir = output.unwrap_or_else(|| Path::new("output").join(format!("live-{stem}")));
            let mut o = LiveOptions::new(endpoint);
            o.model = model;
            o.tokens = tokens;
            o.timeout = kvreplay::util::duration::checked_secs("--timeout-s", timeout_s, 86_400.0)
                .map_err(anyhow::Error::msg)?;
            o.exact_lengths = !max_tokens_from_trace;
            o.scrape_metrics = !no_metrics;
            o.reset_prefix_cache = reset_prefix_cache;
            let name = trace
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = live::run_live(&t, &o, &dir, &name)?;
            print_live(&out);
            println!("wrote {}", dir.display());
            Ok(())
        }
        LiveCommand::LiveCompare {
            live,
            against,
            json,
        } => {
            let c = live::compare_live(&live, &against)?;
            print!("{}", compare_table(&c));
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&c)? + "\n")
                    .with_context(|| format!("writing {}", p.display()))?;
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        LiveCommand::LiveFit {
            live,
            max_num_batched_tokens,
            output,
        } => {
            let runs: Vec<Vec<_>> = live
                .iter()
                .map(|d| live::compare::read_requests(&d.join("requests.parquet")))
                .collect::<kvreplay::error::Result<_>>()?;
            let refs: Vec<(&[_], u32)> = runs
                .iter()
                .map(|r| (r.as_slice(), max_num_batched_tokens))
                .collect();
            let s = live::fit::fit_step(&refs)
                .context("too few finished requests to fit the step time")?;
            let f = &s.fitted;
            println!(
                "step = {:.6} s + {:.3e} s/prefill token + {:.3e} s/decode seq + {:.3e} s/attn pair + {:.3e} s/ctx token",
                f.c0, f.c_prefill, f.c_decode, f.c_attn, f.c_ctx
            );
            println!("request overhead {:.2} ms", s.request_overhead_s * 1e3);
            println!(
                "fit over {} TTFT and {} E2E observations ({} dropped as outliers): r2 {:.4}, rmse {:.4} s, max rel error {:.1} %",
                s.ttft_rows,
                s.e2e_rows,
                s.dropped_rows,
                s.fit.r2,
                s.fit.rmse,
                s.fit.max_rel_error * 100.0
            );
            let keys = serde_json::json!({
                "step_c0_s": f.c0,
                "step_c_prefill_s": f.c_prefill,
                "step_c_decode_s": f.c_decode,
                "step_c_attn_s": f.c_attn,
                "step_c_ctx_s": f.c_ctx,
                "request_overhead_ms": s.request_overhead_s * 1e3,
            });
            if let Some(p) = output {
                std::fs::write(&p, serde_json::to_string_pretty(&keys)? + "\n")
                    .with_context(|| format!("writing {}", p.display()))?;
                println!("wrote {}", p.display());
            } else {
                println!("{keys}");
            }
            Ok(())
        }
    }
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{:.1}", x * 1e3))
        .unwrap_or_else(|| "-".into())
}

fn print_live(out: &Value) {
    let s = &out["summary"];
    println!(
        "requests     {} in, {} finished, {} failed {}",
        s["requests_in"], s["finished"], s["failed"], s["failed_by_reason"]
    );
    for (name, k) in [
        ("TTFT", "ttft"),
        ("TPOT", "tpot"),
        ("ITL", "itl"),
        ("E2E", "e2e"),
    ] {
        println!(
            "{name:<12} mean {} ms, p50 {} ms, p90 {} ms, p99 {} ms",
            ms(&s[k]["mean"]),
            ms(&s[k]["p50"]),
            ms(&s[k]["p90"]),
            ms(&s[k]["p99"])
        );
    }
    println!(
        "throughput   {:.1} output tok/s, {:.1} total tok/s over {:.2} s",
        s["output_tps"].as_f64().unwrap_or(0.0),
        s["total_tps"].as_f64().unwrap_or(0.0),
        s["duration_s"].as_f64().unwrap_or(0.0)
    );
    let pc = &out["server"]["prefix_cache"];
    if let Some(p) = pc["primary"].as_str() {
        let c = &pc["counters"][p];
        println!(
            "server       {p}: {} hits / {} queries = {}",
            c["hits"],
            c["queries"],
            c["hit_rate"]
                .as_f64()
                .map(|r| format!("{:.2} %", r * 100.0))
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{:+.1} %", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// The comparison as a text table.
pub fn compare_table(c: &Value) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let r = &c["requests"];
    let _ = writeln!(
        t,
        "requests: {} live, {} predicted, {} matched, {} finished on both",
        r["live"], r["predicted"], r["matched"], r["finished_both"]
    );
    let _ = writeln!(
        t,
        "{:<16} {:>12} {:>12} {:>9}",
        "metric", "predicted", "measured", "error"
    );
    for (name, k) in [("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E", "e2e")] {
        for st in ["mean", "p50", "p90", "p99"] {
            let a = &c["aggregate"][k][st];
            let _ = writeln!(
                t,
                "{:<16} {:>9} ms {:>9} ms {:>9}",
                format!("{name} {st}"),
                ms(&a["predicted"]),
                ms(&a["measured"]),
                pct(&a["rel_error"])
            );
        }
    }
    let tp = &c["throughput"];
    let num = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    for (label, k) in [
        ("output tok/s", "output_tps"),
        ("duration s", "duration_s"),
        ("requests/min", "requests_per_min"),
    ] {
        let _ = writeln!(
            t,
            "{:<16} {:>12} {:>12} {:>9}",
            label,
            num(&tp["predicted"][k]),
            num(&tp["measured"][k]),
            pct(&tp["rel_error"][k])
        );
    }
    let pe = &c["per_request_error"];
    let _ = writeln!(
        t,
        "per request, median |error|: TTFT {}, TPOT {}, E2E {}",
        pct(&pe["ttft"]["median_abs_rel_error"]),
        pct(&pe["tpot"]["median_abs_rel_error"]),
        pct(&pe["e2e"]["median_abs_rel_error"])
    );
    let h = &c["prefix_cache"];
    let frac = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{:.2} %", x * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        t,
        "prefix-cache hits: predicted {} ({} / {} tokens), server {} ({} / {}), reported {}; predicted - server {} pp",
        frac(&h["predicted_gpu_hit_fraction"]),
        h["predicted_hit_tokens"],
        h["predicted_query_tokens"],
        frac(&h["server_hit_rate"]),
        h["server_hits"],
        h["server_queries"],
        frac(&h["reported_cached_fraction"]),
        h["diff_pp_vs_server"]
            .as_f64()
            .map(|x| format!("{x:+.2}"))
            .unwrap_or_else(|| "-".into())
    );
    t
}

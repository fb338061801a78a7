//! The `kvreplay` command line: flags -> library calls; errors printed once, exit code 2.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kvreplay::trace::{self, import, stats::TraceStats};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
use cli::sim_args::SimArgs;

/// Trace-replay simulator for LLM serving with KV cache offloading (vLLM + LMCache).
#[derive(Parser)]
#[command(name = "kvreplay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace through one configuration; write per-request Parquet and a JSON summary.
    Run {
        /// A kvreplay trace (.parquet or .jsonl).
        #[arg(long)]
        trace: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
        /// Also give 95 % intervals from the measured spread of the transfer profile's inputs.
        #[arg(long)]
        interval: bool,
        /// Simulations for --interval.
        #[arg(long, default_value_t = 32)]
        samples: u32,
        /// Output folder (default output/<trace name>).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Also write the run as a Chrome / Perfetto trace (open in ui.perfetto.dev): steps,
        /// loads, stores, bandwidth and KV usage counters per engine, and the first 200
        /// requests. Bounded: at most 100,000 step records and 100,000 of each kind of transfer
        /// record (GPU loads and saves; disk writes and remote puts) per run, split between
        /// replicas; what is past the bound is left out, counted in the file and printed.
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
    },
    /// Replay a trace against a live server (`live`), compare with a prediction
    /// (`live-compare`), fit the server's step time (`live-fit`).
    #[cfg(feature = "live")]
    #[command(flatten)]
    Live(cli::live::LiveCommand),
    /// The same trace under several offload configurations side by side. With no --trace: the
    /// embedded default workload (long_doc_qa on Llama-3.1-8B / H100).
    Compare {
        /// A kvreplay trace; omit for the embedded default.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Comma-separated variants: none, cpu[:GiB], disk[:GiB], remote[:RTT_ms], native[:GiB], or configuration keys KEY=VALUE[+KEY=VALUE...] (e.g. router=round_robin,router=llm_d).
        #[arg(long)]
        variants: Option<String>,
        #[command(flatten)]
        sim: SimArgs,
        /// Output folder (default output/<trace name> or output/compare-default).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List the configuration keys accepted by --set, --config and studies.
    Keys,
    /// Capacity planning: max rate under SLOs, smallest tier for a target, chunk size for an RTT.
    #[command(subcommand)]
    Plan(cli::plan::PlanCommand),
    /// Run a trace under a grid of configurations in parallel; one Parquet row per point.
    Sweep {
        /// A kvreplay trace (.parquet or .jsonl).
        #[arg(long)]
        trace: PathBuf,
        /// A JSON or YAML file of grid axes: {KEY: [V1, V2], ...}.
        #[arg(long = "grid")]
        grid_file: Option<PathBuf>,
        /// Run only points K, K+N, ... (0 <= K < N), e.g. from a Slurm or Kubernetes array index.
        #[arg(long)]
        shard: Option<String>,
        /// Metric to sort the printed summary by.
        #[arg(long, default_value = "ttft_p99_s")]
        sort_by: String,
        /// Engine and cache settings shared by every point; here `--set KEY=V1,V2,...` adds a grid
        /// axis (keys as in `kvreplay keys`).
        #[command(flatten)]
        base: SimArgs,
        /// Output folder (default output/sweep-<trace name>).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    #[cfg(feature = "plots")]
    /// One self-contained HTML page (tables and plots) for a run, compare or sweep folder, or a
    /// `validate --json` file.
    Report {
        /// The folder (or validation JSON file) to report on.
        input: PathBuf,
        /// Output HTML file (default: DIR/report.html, or the JSON file's name with .html).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// For sweeps over qps_scale or request_rate: an SLO such as `ttft_p99_s<=2`, to mark
        /// the points that meet it and the largest sustainable rate.
        #[arg(long)]
        slo: Option<String>,
        /// Also write every plot into this folder as PNG and SVG.
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Predict every run of validation studies and compare with what was measured.
    Validate {
        /// Study files (the format of shared/validation).
        studies: Vec<PathBuf>,
        /// Write the comparison as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one row per study, run and metric as Parquet.
        #[arg(long)]
        parquet: Option<PathBuf>,
        /// Plot predicted vs measured to FILE.png and FILE.svg.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Compare a `kvreplay live` result folder (with --against) instead of studies.
        #[arg(long, requires = "against")]
        live: Option<PathBuf>,
        /// The `kvreplay run` folder predicting the same trace.
        #[arg(long, requires = "live")]
        against: Option<PathBuf>,
        /// Do not fit the open GPU parameters on fit runs.
        #[arg(long)]
        no_fit: bool,
    },
    /// Measure transfer paths and write them into a transfer profile (`run --profile`).
    #[command(subcommand)]
    Calibrate(cli::calibrate::CalibrateCommand),
    /// A TCP proxy adding a fixed round-trip delay (and optionally a rate limit).
    Netdelay {
        /// Address to listen on, e.g. 127.0.0.1:7000.
        #[arg(long)]
        listen: String,
        /// Address to forward to, e.g. 127.0.0.1:6379.
        #[arg(long)]
        upstream: String,
        /// Added round-trip time, e.g. 20ms (half each way).
        #[arg(long)]
        rtt: String,
        /// Rate limit per direction, tc style: 10gbit, 100mbps.
        #[arg(long)]
        rate: Option<String>,
    },
    /// Import, generate and inspect traces.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Inspect model cards.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure the simulator's own speed (release build recommended), or with `redis`, the
    /// calibration client against redis-benchmark and the delay proxy's accuracy.
    Bench {
        /// `redis` for the Redis client and proxy checks; omit for simulator speed.
        what: Option<String>,
        /// Redis URL for `bench redis` (default: start a local redis-server).
        #[arg(long)]
        url: Option<String>,
        /// Fewer points.
        #[arg(long)]
        quick: bool,
        /// Mooncake conversation trace to replay (JSONL as published).
        #[arg(long)]
        mooncake: Option<PathBuf>,
        /// Also simulate a generated trace of this many requests.
        #[arg(long)]
        generated: Option<u32>,
        /// Also time a sweep of this many configurations of the --mooncake trace (CPU tier size x
        /// chunk size), on all cores.
        #[arg(long)]
        sweep: Option<usize>,
        /// Repeats per figure (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: u32,
        /// Fleets: the --mooncake trace on 8 replicas behind llm-d's router, and a generated
        /// multi-turn trace of this many requests on 64 replicas.
        #[arg(long)]
        fleet: Option<u32>,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print a model's shape and derived figures (parameters, FLOPs, KV bytes per token).
    Show {
        /// A Hugging Face id with a shipped card, or a path to a config.json.
        model: String,
        /// Tensor-parallel ranks for the per-rank figures.
        #[arg(long, default_value_t = 1)]
        tp: u32,
        /// A GPU (shipped profile or JSON path): also print the KV capacity at vLLM's default
        /// memory utilisation.
        #[arg(long)]
        gpu: Option<String>,
        /// vLLM's `--kv-cache-dtype` (auto, fp8, fp8_e4m3, fp8_e5m2).
        #[arg(long, default_value = "auto")]
        kv_cache_dtype: String,
        /// Host memory, GiB: also print the largest LMCache CPU tier it allows.
        #[arg(long)]
        host_memory_gib: Option<f64>,
    },
    /// List the shipped model cards with their KV bytes per token and weights.
    List,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Convert another tool's trace or result file into a kvreplay trace.
    Import {
        /// The source format.
        #[arg(long, value_enum)]
        format: import::Format,
        /// The file to read.
        input: PathBuf,
        /// Output trace (.parquet or .jsonl).
        #[arg(short, long)]
        output: PathBuf,
        /// Stop at the first malformed record (default: skip it and count it).
        #[arg(long)]
        strict: bool,
        /// Tokens per hash id for formats that carry block hashes (default: the format's own).
        #[arg(long)]
        block_size: Option<u32>,
        /// llmperf results carry no start times: replay them as a closed loop of this many
        /// clients (llmperf's --num-concurrent-requests). Default: all sent at t=0. ShareGPT:
        /// the clients that take conversations (default 10).
        #[arg(long)]
        clients: Option<u32>,
        /// openai, sharegpt: the folder with the model's tokenizer.json and
        /// tokenizer_config.json (its chat_template, or a chat_template.jinja beside them).
        #[arg(long, value_name = "DIR")]
        tokenizer: Option<PathBuf>,
        /// sharegpt: seconds a client pauses between the turns of a conversation.
        #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
        think_time: f64,
    },
    /// Generate a workload (seeded, deterministic).
    Gen {
        #[command(subcommand)]
        kind: kvreplay::trace::generate::GenKind,
        /// Random seed.
        #[arg(long, global = true, default_value_t = 0)]
        seed: u64,
        /// Output trace (.parquet or .jsonl).
        #[arg(short, long, global = true)]
        output: Option<PathBuf>,
    },
    /// Print requests, duration, rate, length percentiles and reuse potential.
    Stats {
        /// A kvreplay trace (.parquet or .jsonl).
        file: PathBuf,
        /// Block size(s) for reuse potential (default: 16, 256 and the trace's own).
        #[arg(long)]
        block_size: Vec<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace(t) => run_trace(t),
        Command::Run {
            trace,
            sim,
            interval,
            samples,
            output,
            timeline,
        } => cli::run::run(
            &trace,
            &sim,
            &output,
            interval.then_some(samples),
            timeline.as_deref(),
        ),
        #[cfg(feature = "live")]
        Command::Live(c) => cli::live::run(c),
        Command::Compare {
            trace,
            variants,
            sim,
            output,
        } => cli::run::compare(trace.as_deref(), variants.as_deref(), Some(&sim), &output),
        Command::Keys => {
            print!("{}", kvreplay::config::keys::help());
            Ok(())
        }
        Command::Bench {
            what: Some(w),
            url,
            quick,
            ..
        } if w == "redis" => cli::calibrate::bench_redis(url, quick),
        Command::Bench { what: Some(w), .. } => {
            anyhow::bail!("bench {w:?}: expected `redis` or nothing")
        }
        Command::Bench {
            mooncake,
            generated,
            sweep,
            repeats,
            fleet,
            ..
        } => run_bench(mooncake, generated, sweep, repeats, fleet),
        Command::Calibrate(c) => cli::calibrate::calibrate(c),
        Command::Plan(p) => cli::plan::plan(p),
        Command::Sweep {
            trace,
            grid_file,
            shard,
            sort_by,
            mut base,
            output,
        } => {
            let out = output.unwrap_or_else(|| cli::sweep::default_out(&trace));
            let grid = std::mem::take(&mut base.set);
            cli::sweep::sweep(
                &trace,
                &grid,
                grid_file.as_deref(),
                &base,
                shard.as_deref(),
                &sort_by,
                &out,
            )
        }
        #[cfg(feature = "plots")]
        Command::Report {
            input,
            output,
            slo,
            plots,
        } => cli::report::report(&input, output, slo.as_deref(), plots),
        Command::Validate {
            live: Some(live),
            against: Some(against),
            json,
            ..
        } => {
            #[cfg(feature = "live")]
            {
                let c = kvreplay::live::compare_live(&live, &against)?;
                print!("{}", cli::live::compare_table(&c));
                if let Some(p) = json {
                    std::fs::write(&p, serde_json::to_string_pretty(&c)? + "\n")
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                Ok(())
            }
            #[cfg(not(feature = "live"))]
            {
                let _ = (live, against, json);
                Err(cli::without("live"))
            }
        }
        Command::Validate {
            studies,
            json,
            parquet,
            plot,
            no_fit,
            ..
        } => cli::validate::validate(&studies, json, parquet, plot, no_fit),
        Command::Netdelay {
            listen,
            upstream,
            rtt,
            rate,
        } => cli::calibrate::netdelay(&listen, &upstream, &rtt, rate.as_deref()),
        Command::Model(ModelCommand::List) => {
            println!(
                "{:<28} {:>10} {:>10} {:>12}  notes",
                "model", "params B", "weights GiB", "KV KiB/token"
            );
            for id in kvreplay::model::shipped_ids() {
                let c = kvreplay::model::lookup(id)?;
                let mut notes = Vec::new();
                if let Some(m) = &c.moe {
                    notes.push(format!("MoE {}/{} experts", m.experts_per_token, m.experts));
                }
                if c.mla.is_some() {
                    notes.push("MLA".to_string());
                }
                if let Some(q) = &c.quant {
                    notes.push(q.method.clone());
                }
                if let Some(sl) = &c.sliding {
                    notes.push(format!(
                        "sliding window {} on {} layers",
                        sl.window, sl.layers
                    ));
                }
                println!(
                    "{:<28} {:>10.2} {:>10.2} {:>12}  {}",
                    id,
                    c.params() as f64 / 1e9,
                    c.weight_bytes() as f64 / GIB,
                    c.kv_bytes_per_token(1) as f64 / 1024.0,
                    notes.join(", ")
                );
            }
            Ok(())
        }
        Command::Model(ModelCommand::Show {
            model,
            tp,
            gpu,
            kv_cache_dtype,
            host_memory_gib,
        }) => model_show(&model, tp, gpu.as_deref(), &kv_cache_dtype, host_memory_gib),
    }
}

use kvreplay::engine::config::GIB;

/// `kvreplay model show`.
fn model_show(
    model: &str,
    tp: u32,
    gpu: Option<&str>,
    kv_cache_dtype: &str,
    host_memory_gib: Option<f64>,
) -> Result<()> {
    anyhow::ensure!(tp > 0, "--tp must be at least 1");
    let kv_bytes =
        kvreplay::model::card::kv_cache_dtype_bytes(kv_cache_dtype).with_context(|| {
            format!("--kv-cache-dtype {kv_cache_dtype:?}: expected auto, fp8, fp8_e4m3 or fp8_e5m2")
        })?;
    let c = kvreplay::model::lookup(model)?.with_kv_cache_dtype(kv_bytes);
    println!("model               {} ({})", c.name, c.model_type);
    println!(
        "shape               {} layers, hidden {}, {} heads / {} KV heads x {}, MLP {}, vocab {}",
        c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab
    );
    if let Some(m) = &c.moe {
        println!(
            "experts             {} routed, {} per token, expert MLP {}, shared {}{}",
            m.experts,
            m.experts_per_token,
            m.expert_intermediate,
            m.shared_intermediate,
            if c.first_dense_layers > 0 {
                format!(", first {} layers dense", c.first_dense_layers)
            } else {
                String::new()
            }
        );
    }
    if let Some(m) = &c.mla {
        println!(
            "attention           MLA: KV latent {} + rotary key {} per layer, the same on every rank",
            m.kv_lora_rank, m.qk_rope_head_dim
        );
    }
    println!(
        "parameters          {:.3} B ({:.3} B active per token in matrix multiplies)",
        c.params() as f64 / 1e9,
        c.active_matmul_params() as f64 / 1e9
    );
    let dtype = match &c.quant {
        Some(q) => format!(
            "{} at {:.4} bytes per weight{}, the rest {} bytes",
            q.method,
            q.bytes_per_weight,
            if q.experts_only {
                " on the experts"
            } else {
                ""
            },
            c.dtype_bytes
        ),
        None => format!("{} bytes per element", c.dtype_bytes),
    };
    println!(
        "weights per rank    {:.2} GiB (tp {tp}, {dtype})",
        c.weight_bytes_per_rank(tp) as f64 / GIB
    );
    println!(
        "FLOPs per token     {:.3} GFLOP at context 1, +{:.1} kFLOP per context token",
        c.flops_per_token(1) / 1e9,
        (c.flops_per_token(1001) - c.flops_per_token(1)) / 1000.0 / 1e3
    );
    let kv = c.kv_bytes_per_token(tp);
    println!(
        "KV per token        {} KiB per rank (tp {tp}, {} byte{} per element)",
        kv as f64 / 1024.0,
        c.kv_dtype_bytes,
        if c.kv_dtype_bytes == 1 { "" } else { "s" }
    );
    if let Some(g) = gpu {
        let gpu = kvreplay::cost::GpuProfile::lookup(g)?;
        let flags = kvreplay::engine::EngineFlags {
            tensor_parallel_size: Some(tp),
            ..Default::default()
        };
        match kvreplay::engine::EngineConfig::resolve(&c, &gpu, &flags) {
            Ok(e) => println!(
                "KV capacity         {} tokens per rank on {} at utilisation 0.9 ({})",
                e.kv_capacity_tokens(),
                gpu.name,
                e.kv_capacity_note
            ),
            Err(e) => println!("KV capacity         none: {e}"),
        }
    }
    if let Some(h) = host_memory_gib {
        anyhow::ensure!(
            h.is_finite() && h > 0.0,
            "--host-memory-gib {h}: expected a positive size"
        );
        // LMCache pins max_local_cpu_size per rank; the OS and the serving processes keep a tenth.
        let per_rank = (h * 0.9 / tp as f64).floor();
        println!(
            "largest CPU tier    max_local_cpu_size {per_rank} GiB per rank = {} tokens ({h} GiB host, a tenth left to the OS and the serving processes, {tp} rank{} pinning theirs)",
            (per_rank * GIB / kv as f64).floor() as u64,
            if tp == 1 { "" } else { "s" }
        );
    }
    for n in c.modelling_notes() {
        println!("note                {n}");
    }
    Ok(())
}

fn run_trace(cmd: TraceCommand) -> Result<()> {
    match cmd {
        TraceCommand::Import {
            format,
            input,
            output,
            strict,
            block_size,
            clients,
            tokenizer,
            think_time,
        } => {
            let think_ns = kvreplay::util::json::seconds_to_ns(think_time)
                .context("--think-time must be a number of seconds, 0 or more")?;
            let tokenizer = tokenizer
                .map(|d| import::text_tokenizer::TextTokenizer::load(&d).map(std::sync::Arc::new))
                .transpose()?;
            let opts = import::ImportOptions {
                strict,
                block_size,
                clients,
                tokenizer,
                think_ns,
            };
            let (t, report) = import::import(format, &input, &opts)?;
            trace::write(&t, &output)?;
            eprintln!("{}: {report}", input.display());
            eprintln!(
                "wrote {} requests to {}",
                t.requests.len(),
                output.display()
            );
            Ok(())
        }
        TraceCommand::Gen { kind, seed, output } => {
            let output = output.context("--output (-o) is required: where to write the trace")?;
            let t = kvreplay::trace::generate::generate(&kind, seed)?;
            trace::write(&t, &output)?;
            eprintln!(
                "wrote {} requests to {}",
                t.requests.len(),
                output.display()
            );
            Ok(())
        }
        TraceCommand::Stats {
            file,
            block_size,
            json,
        } => {
            let t = trace::read(&file)?;
            let blocks = if block_size.is_empty() {
                let mut b = vec![16, 256];
                b.extend(t.meta.block_size);
                b.sort_unstable();
                b.dedup();
                b
            } else {
                block_size
            };
            if let Some(b) = blocks.iter().find(|b| **b == 0) {
                anyhow::bail!("--block-size must be positive, got {b}");
            }
            let s = TraceStats::of(&t, &blocks);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).context("serialising stats")?
                );
            } else {
                print!("{s}");
            }
            Ok(())
        }
    }
}

fn run_bench(
    mooncake: Option<PathBuf>,
    generated: Option<u32>,
    sweep: Option<usize>,
    repeats: u32,
    fleet: Option<u32>,
) -> Result<()> {
    use kvreplay::bench::measure;
    use kvreplay::config::{LmCacheKeys, RunConfig, Tier};
    let cfg = RunConfig {
        tier: Some(Tier::Cpu),
        lmcache: LmCacheKeys {
            max_local_cpu_size: Some(50.0),
            ..Default::default()
        },
        ..Default::default()
    };
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "simulation", "requests", "steps", "wall s", "requests/s", "RSS MiB"
    );
    let show = |f: kvreplay::bench::BenchFigure| {
        println!(
            "{:<44} {:>9} {:>9} {:>9.3} {:>11.0} {:>9.0}",
            f.name, f.requests, f.steps, f.wall_s, f.requests_per_s, f.peak_rss_mib
        );
    };
    if let Some(p) = mooncake {
        let t0 = std::time::Instant::now();
        let (t, _) = import::import(
            import::Format::Mooncake,
            &p,
            &import::ImportOptions::default(),
        )?;
        println!(
            "import {} requests: {:.3} s",
            t.requests.len(),
            t0.elapsed().as_secs_f64()
        );
        show(measure(
            "mooncake conversation, Llama-3.1-8B/H100, cpu 50GiB",
            &t,
            &cfg,
            repeats,
        )?);
        if fleet.is_some() {
            let mut c = cfg.clone();
            c.fleet.replicas = 8;
            c.fleet.router = kvreplay::fleet::RouterKind::LlmD;
            show(measure(
                "mooncake on 8 replicas, llm-d router, cpu 50GiB",
                &t,
                &c,
                repeats,
            )?);
        }
        if let Some(n) = sweep {
            let chunks = [64, 128, 256, 512, 1024];
            let sizes = n.div_ceil(chunks.len()).max(1);
            let mut grid = kvreplay::sweep::Grid::default();
            grid.add(
                "max_local_cpu_size_gb",
                (1..=sizes).map(|i| serde_json::json!(i * 8)).collect(),
            )?;
            grid.add(
                "chunk_size",
                chunks.iter().map(|c| serde_json::json!(c)).collect(),
            )?;
            let t0 = std::time::Instant::now();
            let all = kvreplay::sweep::Shard::ALL;
            let pts = kvreplay::sweep::run_grid(&t, &cfg, &grid, all, &|_, _| {})?;
            let s = t0.elapsed().as_secs_f64();
            println!(
                "sweep of {} configurations of the mooncake trace on {} threads: {:.2} s ({:.3} s each)",
                pts.len(),
                rayon::current_num_threads(),
                s,
                s / pts.len() as f64
            );
        }
    }
    if let Some(n) = generated {
        let p = kvreplay::trace::generate::random::Params {
            num_prompts: n,
            request_rate: kvreplay::trace::generate::random::RequestRate(50.0),
            ..Default::default()
        };
        let t = kvreplay::trace::generate::random::generate(&p, 0)?;
        show(measure(
            &format!("random {n} x 1024/128 at 50 req/s, cpu 50GiB"),
            &t,
            &cfg,
            1,
        )?);
        // Decode-heavy and lightly loaded: most steps run in decode-only stretches.
        let m = (n / 200).max(1);
        let p = kvreplay::trace::generate::random::Params {
            num_prompts: m,
            random_input_len: 256,
            random_output_len: 2048,
            request_rate: kvreplay::trace::generate::random::RequestRate(1.0),
            ..Default::default()
        };
        let t = kvreplay::trace::generate::random::generate(&p, 0)?;
        show(measure(
            &format!("random {m} x 256/2048 at 1 req/s, cpu 50GiB"),
            &t,
            &cfg,
            repeats,
        )?);
        show(kvreplay::bench::measure_mode(
            "  the same in reference mode (no shortcuts)",
            &t,
            &cfg,
            repeats,
            true,
        )?);
    }
    if let Some(n) = fleet {
        // vLLM's multi-turn benchmark config with enough conversations for about `n` requests
        // (7.5 per conversation on average), 16 clients per replica.
        let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"filetype": "generate_conversations", "text_files": ["pg1184.txt"],
                "prompt_input": {
                  "num_turns": {"distribution": "uniform", "min": 12, "max": 18},
                  "common_prefix_num_tokens": {"distribution": "constant", "value": 500},
                  "prefix_num_tokens": {"distribution": "lognormal", "mean": 6, "sigma": 4, "max": 1500},
                  "num_tokens": {"distribution": "uniform", "min": 120, "max": 160}},
                "prompt_output": {"num_tokens": {"distribution": "uniform", "min": 80, "max": 120}}}"#,
        )?;
        config.insert(
            "num_conversations".into(),
            (n as u64 * 2).div_ceil(15).max(1).into(),
        );
        let p = kvreplay::trace::generate::multi_turn::Params {
            config: kvreplay::trace::generate::multi_turn::ConfigSource::Inline(config),
            num_clients: 64 * 16,
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let t = kvreplay::trace::generate::multi_turn::generate(&p, 0)?;
        println!(
            "generate {} multi-turn requests: {:.3} s",
            t.requests.len(),
            t0.elapsed().as_secs_f64()
        );
        let mut c = cfg.clone();
        c.fleet.replicas = 64;
        c.fleet.router = kvreplay::fleet::RouterKind::LlmD;
        show(measure(
            &format!(
                "multi-turn {} on 64 replicas, llm-d, cpu 50GiB",
                t.requests.len()
            ),
            &t,
            &c,
            1,
        )?);
    }
    Ok(())
}

//! `kvreplay plan ...`.

use super::sim_args::SimArgs;
use anyhow::{Context, Result};
use clap::Subcommand;
use kvreplay::plan::{self, Plan, Target};
use std::path::PathBuf;

/// A capacity question.
#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Highest request rate (the trace's arrivals compressed) at which every SLO holds.
    Rate {
        /// A kvreplay trace with open-loop arrivals.
        #[arg(long)]
        trace: PathBuf,
        /// An SLO, repeatable: ttft_p99=2s, tpot_p99=50ms, e2e_p90=10s ...
        #[arg(long = "slo", required = true)]
        slos: Vec<String>,
        #[command(flatten)]
        sim: SimArgs,
        /// Write the answer and its evidence as JSON.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Smallest CPU (or, with --disk, disk) tier that reaches every target.
    TierSize {
        /// A kvreplay trace.
        #[arg(long)]
        trace: PathBuf,
        /// A target, repeatable: hit_rate_total=0.8, ttft_p99=1s ...
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// Size the disk tier (behind the configured CPU tier) instead of the CPU tier.
        #[arg(long)]
        disk: bool,
        /// Answer to within this many GiB.
        #[arg(long, default_value_t = 1.0)]
        resolution_gib: f64,
        #[command(flatten)]
        sim: SimArgs,
        /// Write the answer and its evidence as JSON.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Chunk size that minimises a metric with the remote store at a given RTT.
    Chunk {
        /// A kvreplay trace.
        #[arg(long = "trace")]
        trace: PathBuf,
        /// Round-trip time to the remote store, ms.
        #[arg(long = "at-rtt-ms")]
        at_rtt_ms: f64,
        /// Chunk sizes to compare.
        #[arg(long, value_delimiter = ',', default_value = "64,128,256,512,1024")]
        candidates: Vec<u32>,
        /// Metric to minimise.
        #[arg(long, default_value = "ttft_mean_s")]
        metric: String,
        #[command(flatten)]
        sim: SimArgs,
        /// Write the answer and its evidence as JSON.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Fewest GPUs (replicas x tensor-parallel ranks) behind a router meeting every SLO at the
    /// trace's own rate; with --routers and --cpu-gb lists, one answer per combination.
    Fleet {
        /// A kvreplay trace.
        #[arg(long)]
        trace: PathBuf,
        /// An SLO, repeatable: ttft_p99=2s, tpot_p99=50ms ...
        #[arg(long = "slo", required = true)]
        slos: Vec<String>,
        /// Routers to compare (default: the configured one, `--set router=...`); `--router R`
        /// names one.
        #[arg(long, alias = "router", value_delimiter = ',')]
        routers: Vec<String>,
        /// LMCache CPU tier sizes per replica to compare, GiB (0: none).
        #[arg(long = "cpu-gb", value_delimiter = ',')]
        cpu_gb: Vec<f64>,
        /// Search no further than this many replicas (at most 4096).
        #[arg(long, default_value_t = 256)]
        max_replicas: u32,
        /// Disaggregated prefill/decode: the fewest prefill + decode replicas (with the `pd_*`
        /// settings given by --set), searched one pool at a time.
        #[arg(long)]
        pd: bool,
        #[command(flatten)]
        sim: SimArgs,
        /// Write the answers and their evidence as JSON.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// What `plan fleet` compares and how far it searches.
struct FleetChoices<'a> {
    routers: &'a [String],
    cpu_gb: &'a [f64],
    max_replicas: u32,
    pd: bool,
}

/// `plan fleet`: one search per (router, CPU tier) combination, then the table of GPUs needed.
fn plan_fleet(
    trace: &std::path::Path,
    slos: &[String],
    FleetChoices {
        routers,
        cpu_gb,
        max_replicas,
        pd,
    }: FleetChoices<'_>,
    sim: &SimArgs,
    output: Option<PathBuf>,
) -> Result<()> {
    let t = kvreplay::trace::read(trace)?;
    let (base, _) = sim.run_config()?;
    anyhow::ensure!(
        base.pools.is_empty(),
        "plan fleet sizes a fleet of one kind of replica; `pools` (a heterogeneous fleet) cannot be searched yet: run each mix with `kvreplay run`, or compare mixes with `kvreplay compare`"
    );
    let slos = targets(slos)?;
    let routers: Vec<kvreplay::fleet::RouterKind> = if routers.is_empty() {
        vec![base.fleet.router]
    } else {
        routers
            .iter()
            .map(|r| {
                kvreplay::fleet::RouterKind::from_name(r).with_context(|| {
                    format!(
                        "--routers {r:?}: expected {}",
                        kvreplay::fleet::RouterKind::ALL
                            .map(|k| k.name())
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let tiers: Vec<Option<f64>> = if cpu_gb.is_empty() {
        vec![None]
    } else {
        for g in cpu_gb {
            anyhow::ensure!(
                g.is_finite() && *g >= 0.0,
                "--cpu-gb {g}: expected GiB >= 0"
            );
        }
        cpu_gb.iter().map(|g| Some(*g)).collect()
    };
    let mut answers = Vec::new();
    for &router in &routers {
        for &tier in &tiers {
            let mut cfg = base.clone();
            cfg.fleet.router = router;
            match tier {
                Some(g) if g > 0.0 => {
                    cfg.tier = Some(kvreplay::config::Tier::Cpu);
                    cfg.lmcache.max_local_cpu_size = Some(g);
                }
                Some(_) => cfg.tier = Some(kvreplay::config::Tier::None),
                None => {}
            }
            let p = if pd {
                let (passes, answer) = plan::fewest_pd(&t, &cfg, &slos, max_replicas)?;
                for p in &passes {
                    show(p, None)?;
                    println!();
                }
                let tp = cfg.engine.tensor_parallel_size.unwrap_or(1);
                let text = match answer {
                    Some((p, d)) => {
                        format!("{p} prefill + {d} decode replicas = {} GPUs", (p + d) * tp)
                    }
                    None => format!("not met even with {max_replicas} replicas per pool"),
                };
                println!("answer: {text}");
                println!();
                plan::Plan {
                    question: format!(
                        "fewest prefill + decode replicas ({} router), in {} passes",
                        router.name(),
                        passes.len()
                    ),
                    answer: answer.map(|(p, d)| (p + d) as f64),
                    answer_text: text,
                    evidence: passes.into_iter().flat_map(|p| p.evidence).collect(),
                }
            } else {
                let p = plan::fewest_replicas(&t, &cfg, &slos, max_replicas)?;
                show(&p, None)?;
                println!();
                p
            };
            answers.push((router, tier, p));
        }
    }
    if answers.len() > 1 {
        println!("{:<16} {:>8} {:>22}", "router", "CPU GiB", "GPUs needed");
        for (r, g, p) in &answers {
            println!(
                "{:<16} {:>8} {:>22}",
                r.name(),
                g.map_or("-".into(), |g| g.to_string()),
                p.answer_text
            );
        }
    }
    if let Some(o) = output {
        let rows: Vec<serde_json::Value> = answers
            .iter()
            .map(|(r, g, p)| serde_json::json!({"router": r.name(), "cpu_gb": g, "plan": p}))
            .collect();
        std::fs::write(&o, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", o.display()))?;
        println!("wrote {}", o.display());
    }
    Ok(())
}

fn show(p: &Plan, output: Option<PathBuf>) -> Result<()> {
    println!("question: {}", p.question);
    let mut names: Vec<&String> = p.evidence.iter().flat_map(|e| e.metrics.keys()).collect();
    names.sort();
    names.dedup();
    let shown = [
        "ttft_p99_s",
        "tpot_p99_s",
        "ttft_mean_s",
        "e2e_p90_s",
        "hit_rate_total",
        "output_tps",
    ];
    let cols: Vec<&str> = shown
        .iter()
        .copied()
        .filter(|c| names.iter().any(|n| n == c))
        .collect();
    print!("{:>12} {:>5}", "probe", "ok");
    for c in &cols {
        print!(" {c:>14}");
    }
    println!();
    for e in &p.evidence {
        print!("{:>12.4} {:>5}", e.x, if e.ok { "yes" } else { "no" });
        for c in &cols {
            print!(
                " {:>14}",
                e.metrics
                    .get(*c)
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        println!();
    }
    println!("answer: {}", p.answer_text);
    if let Some(o) = output {
        std::fs::write(&o, serde_json::to_string_pretty(p)? + "\n")
            .with_context(|| format!("writing {}", o.display()))?;
        println!("wrote {}", o.display());
    }
    Ok(())
}

fn targets(list: &[String]) -> Result<Vec<Target>> {
    list.iter()
        .map(|s| Target::parse(s).map_err(Into::into))
        .collect()
}

/// Answers a capacity question.
pub fn plan(cmd: PlanCommand) -> Result<()> {
    // Its probes counted on a terminal while the search runs.
    kvreplay::util::progress::while_planning("plan: probes", || plan_inner(cmd))
}

fn plan_inner(cmd: PlanCommand) -> Result<()> {
    match cmd {
        PlanCommand::Rate {
            trace,
            slos,
            sim,
            output,
        } => {
            let t = kvreplay::trace::read(&trace)?;
            let (cfg, _) = sim.run_config()?;
            show(&plan::max_rate(&t, &cfg, &targets(&slos)?)?, output)
        }
        PlanCommand::TierSize {
            trace,
            targets: ts,
            disk,
            resolution_gib,
            sim,
            output,
        } => {
            anyhow::ensure!(resolution_gib > 0.0, "--resolution-gib must be positive");
            let t = kvreplay::trace::read(&trace)?;
            let (mut cfg, _) = sim.run_config()?;
            let key = if disk {
                cfg.tier = Some(kvreplay::config::Tier::Disk);
                plan::Knob::DiskGib
            } else {
                if cfg.effective_tier() == kvreplay::config::Tier::None {
                    cfg.tier = Some(kvreplay::config::Tier::Cpu);
                }
                plan::Knob::CpuGib
            };
            show(
                &plan::smallest_tier(&t, &cfg, key, &targets(&ts)?, resolution_gib)?,
                output,
            )
        }
        PlanCommand::Fleet {
            trace,
            slos,
            routers,
            cpu_gb,
            max_replicas,
            pd,
            sim,
            output,
        } => {
            let choices = FleetChoices {
                routers: &routers,
                cpu_gb: &cpu_gb,
                max_replicas,
                pd,
            };
            plan_fleet(&trace, &slos, choices, &sim, output)
        }
        PlanCommand::Chunk {
            trace,
            at_rtt_ms,
            candidates,
            metric,
            sim,
            output,
        } => {
            let t = kvreplay::trace::read(&trace)?;
            let (cfg, _) = sim.run_config()?;
            show(
                &plan::best_chunk(&t, &cfg, at_rtt_ms, &candidates, &metric)?,
                output,
            )
        }
    }
}

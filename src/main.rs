//! The `kvreplay` command line: flags -> library calls; errors printed once, exit code 2.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kvreplay::trace::{self, import, stats::TraceStats};
use std::path::PathBuf;
use std::process::ExitCode;

/// Trace-replay simulator for LLM serving with KV cache offloading (vLLM + LMCache).
#[derive(Parser)]
#[command(name = "kvreplay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import, generate and inspect traces.
    #[command(subcommand)]
    Trace(TraceCommand),
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
    }
}

fn run_trace(cmd: TraceCommand) -> Result<()> {
    match cmd {
        TraceCommand::Import {
            format,
            input,
            output,
            strict,
            block_size,
        } => {
            let opts = import::ImportOptions { strict, block_size };
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

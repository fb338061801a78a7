//! `kvreplay calibrate ...`, `kvreplay netdelay` and `kvreplay bench redis`.

use anyhow::{Context, Result};
use clap::Subcommand;
use kvreplay::calibrate::profile::{ProfileFile, Section};
#[cfg(feature = "redis")]
use kvreplay::calibrate::redis::{self as cr, LocalRedis, RedisOptions};
use kvreplay::netdelay::{DelayProxy, DelaySpec, parse_duration, parse_rate};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to calibrate.
#[derive(Subcommand, Debug)]
pub enum CalibrateCommand {
    /// A Redis server: GET/SET in LMCache's chunk pattern across sizes and concurrency.
    Redis {
        /// redis://[:password@]host:port (omit with --start-local).
        #[arg(long)]
        url: Option<String>,
        /// Start a throw-away redis-server on loopback and measure it.
        #[arg(long)]
        start_local: bool,
        /// A reduced set of points (about 5 s).
        #[arg(long)]
        quick: bool,
        /// Also measure through the delay proxy at these RTTs (ms), e.g. 0,10,20,50.
        #[arg(long, value_delimiter = ',')]
        via_proxy_rtt: Vec<f64>,
        /// The proxy's TCP window (MiB per direction) for the gets and lookups interleaved with
        /// puts that --via-proxy-rtt also measures.
        #[arg(long, default_value_t = 3.0)]
        via_proxy_window_mib: f64,
        /// Profile to write or update.
        #[arg(short, long, default_value = "output/profile.json")]
        output: PathBuf,
    },
    /// Local disk: chunk files written and read, buffered and O_DIRECT, by queue depth.
    Disk {
        /// Folder on the disk to measure (files are removed afterwards).
        #[arg(long)]
        dir: PathBuf,
        /// Bytes per chunk file in MiB (default: 256 tokens of Llama-3.1-8B = 32 MiB).
        #[arg(long, default_value_t = 32)]
        chunk_mib: u64,
        /// A reduced set of points.
        #[arg(long)]
        quick: bool,
        /// Profile to write or update.
        #[arg(short, long, default_value = "output/profile.json")]
        output: PathBuf,
    },
    /// GPU KV copies: our gather/scatter kernels (GPU and pinned host) against memcpy baselines.
    Gpu {
        /// Model whose KV shapes are copied (shipped card id or config.json path).
        #[arg(long, default_value = "meta-llama/Llama-3.1-8B")]
        model: String,
        /// Tokens per chunk, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
        chunk_sizes: Vec<u32>,
        /// Fewer runs per point, FlashAttention layout only.
        #[arg(long)]
        quick: bool,
        /// Profile to write or update.
        #[arg(short, long, default_value = "output/profile.json")]
        output: PathBuf,
    },
    /// Host memory: memcpy bandwidth by size and threads.
    Host {
        /// A reduced set of points.
        #[arg(long)]
        quick: bool,
        /// Profile to write or update.
        #[arg(short, long, default_value = "output/profile.json")]
        output: PathBuf,
    },
}

fn save(output: &Path, name: &str, s: Section) -> Result<()> {
    let mut p = ProfileFile::read_or_new(output)?;
    println!("{}: {}", name, s.what);
    for (k, v) in &s.params {
        println!("  {k:<20} {v:.4}");
    }
    p.set_section(name, s);
    p.write(output)?;
    println!("wrote {}", output.display());
    Ok(())
}

#[cfg(feature = "redis")]
fn print_points(s: &Section) {
    if let Some(points) = s.points.as_array() {
        println!(
            "{:<10} {:>10} {:>4} {:>7} {:>6} {:>9} {:>9} {:>9} {:>10}",
            "op", "bytes", "c", "rtt ms", "n", "mean ms", "p50 ms", "p99 ms", "MB/s"
        );
        for p in points {
            println!(
                "{:<10} {:>10} {:>4} {:>7} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>10.1}",
                p["op"].as_str().unwrap_or(""),
                p["bytes"],
                p["concurrency"],
                p["via_rtt_ms"]
                    .as_f64()
                    .map(|r| format!("{r}"))
                    .unwrap_or_else(|| "-".into()),
                p["n"],
                p["mean_ms"].as_f64().unwrap_or(f64::NAN),
                p["p50_ms"].as_f64().unwrap_or(f64::NAN),
                p["p99_ms"].as_f64().unwrap_or(f64::NAN),
                p["mb_per_s"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
}

#[cfg(feature = "redis")]
fn print_rtt_check(s: &Section) {
    if let Some(rows) = s.fit["rtt_check"].as_array().filter(|r| !r.is_empty()) {
        println!("through the delay proxy: measured vs no-delay time + 2 round trips x RTT");
        for r in rows {
            println!(
                "  {:<10} {:>10} B  rtt {:>5} ms  measured {:>9.3} ms  predicted {:>9.3} ms  error {:>+6.2} %",
                r["op"].as_str().unwrap_or(""),
                r["bytes"],
                r["rtt_ms"],
                r["measured_ms"].as_f64().unwrap_or(f64::NAN),
                r["predicted_ms"].as_f64().unwrap_or(f64::NAN),
                r["error"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
        }
        for o in s.fit["proxy_overhead"].as_array().into_iter().flatten() {
            println!(
                "  proxy's own cost at {} B: {:.3} ms per round trip",
                o["bytes"],
                o["per_round_trip_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(rows) = s.fit["interleaved"].as_array().filter(|r| !r.is_empty()) {
        println!(
            "interleaved with a put: measured vs the connection model (no-delay time + what it adds at the RTT)"
        );
        for r in rows {
            println!(
                "  {:<14} {:>10} B  window {:>9} B  rtt {:>6} ms  measured {:>10.3} ms  predicted {:>10.3} ms  error {:>+6.2} %",
                r["pattern"].as_str().unwrap_or(""),
                r["bytes"],
                r["window_bytes"],
                r["rtt_ms"],
                r["measured_ms"].as_f64().unwrap_or(f64::NAN),
                r["predicted_ms"].as_f64().unwrap_or(f64::NAN),
                r["error"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
        }
    }
}

/// Runs a calibration.
pub fn calibrate(cmd: CalibrateCommand) -> Result<()> {
    // Where the profile goes is checked before anything is measured.
    let out = match &cmd {
        CalibrateCommand::Redis { output, .. }
        | CalibrateCommand::Disk { output, .. }
        | CalibrateCommand::Gpu { output, .. }
        | CalibrateCommand::Host { output, .. } => output,
    };
    ProfileFile::check_writable(out)?;
    // Ctrl-C stops between measurements and cleans up (keys, files) instead of killing them.
    kvreplay::util::interrupt::install();
    match cmd {
        CalibrateCommand::Redis {
            url,
            start_local,
            quick,
            via_proxy_rtt,
            via_proxy_window_mib,
            output,
        } => {
            if !(via_proxy_window_mib.is_finite() && via_proxy_window_mib > 0.0) {
                anyhow::bail!(
                    "--via-proxy-window-mib {via_proxy_window_mib}: expected a positive size"
                );
            }
            let window = ((via_proxy_window_mib * (1u64 << 20) as f64) as u64).max(1);
            calibrate_redis(url, start_local, quick, via_proxy_rtt, window, &output)
        }
        CalibrateCommand::Disk {
            dir,
            chunk_mib,
            quick,
            output,
        } => {
            anyhow::ensure!(chunk_mib > 0, "--chunk-mib must be positive");
            let o = kvreplay::calibrate::disk::DiskOptions {
                dir,
                chunk_bytes: chunk_mib << 20,
                quick,
            };
            let s = kvreplay::calibrate::disk::calibrate_disk(&o)?;
            save(&output, "disk", s)
        }
        CalibrateCommand::Gpu {
            model,
            chunk_sizes,
            quick,
            output,
        } => calibrate_gpu(model, chunk_sizes, quick, &output),
        CalibrateCommand::Host { quick, output } => {
            let s = kvreplay::calibrate::host::calibrate_host(quick)?;
            save(&output, "host", s)
        }
    }
}

/// `kvreplay calibrate redis`.
#[cfg(feature = "redis")]
fn calibrate_redis(
    url: Option<String>,
    start_local: bool,
    quick: bool,
    via_proxy_rtt: Vec<f64>,
    via_window_bytes: u64,
    output: &Path,
) -> Result<()> {
    {
        {
            let local = if start_local {
                Some(LocalRedis::start(&[])?)
            } else {
                None
            };
            let url = match (&local, url) {
                (Some(l), _) => l.url(),
                (None, Some(u)) => u,
                (None, None) => anyhow::bail!("give --url redis://host:port or --start-local"),
            };
            let mut o = if quick {
                RedisOptions::quick(&url)
            } else {
                RedisOptions::full(&url)
            };
            o.via_rtts_ms = via_proxy_rtt;
            o.via_window_bytes = via_window_bytes;
            let s = cr::calibrate_redis(&o)?;
            print_points(&s);
            print_rtt_check(&s);
            save(output, "redis", s)
        }
    }
}

/// `kvreplay calibrate redis` in a build without Redis.
#[cfg(not(feature = "redis"))]
fn calibrate_redis(
    _: Option<String>,
    _: bool,
    _: bool,
    _: Vec<f64>,
    _: u64,
    _: &Path,
) -> Result<()> {
    Err(super::without("redis"))
}

/// `kvreplay calibrate gpu`.
#[cfg(feature = "gpu")]
fn calibrate_gpu(model: String, chunk_sizes: Vec<u32>, quick: bool, output: &Path) -> Result<()> {
    {
        {
            if let Some(why) = kvreplay::gpu::calibrate::unavailable_reason() {
                anyhow::bail!(why);
            }
            let o = kvreplay::gpu::calibrate::GpuCalibOptions {
                model,
                chunk_sizes,
                quick,
                ..Default::default()
            };
            let s = kvreplay::gpu::calibrate::calibrate_gpu(&o)?;
            for line in kvreplay::gpu::calibrate::summary_lines(&s) {
                println!("{line}");
            }
            save(output, "gpu", s)
        }
    }
}

/// `kvreplay calibrate gpu` in a build without the GPU kernels.
#[cfg(not(feature = "gpu"))]
fn calibrate_gpu(_: String, _: Vec<u32>, _: bool, _: &Path) -> Result<()> {
    Err(super::without("gpu"))
}

/// `kvreplay netdelay`: runs the proxy until interrupted.
pub fn netdelay(listen: &str, upstream: &str, rtt: &str, rate: Option<&str>) -> Result<()> {
    let rtt = parse_duration(rtt)
        .map_err(anyhow::Error::msg)
        .context("--rtt")?;
    let rate = rate
        .map(parse_rate)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--rate")?;
    let listen = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: expected HOST:PORT"))?;
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(upstream)
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("--upstream {upstream:?}: expected HOST:PORT"))?;
    let p = DelayProxy::start(
        listen,
        upstream,
        DelaySpec {
            rtt,
            rate,
            window: None,
        },
    )
    .with_context(|| format!("listening on {listen}"))?;
    println!(
        "netdelay: {} -> {upstream}, +{:?} round trip{}; Ctrl-C to stop",
        p.local_addr(),
        rtt,
        rate.map(|r| format!(", {:.1} MB/s per direction", r / 1e6))
            .unwrap_or_default()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `kvreplay bench redis` in a build without Redis.
#[cfg(not(feature = "redis"))]
pub fn bench_redis(_: Option<String>, _: bool) -> Result<()> {
    Err(super::without("redis"))
}

/// `kvreplay bench redis`: our client against redis-benchmark, and the proxy's RTT accuracy.
#[cfg(feature = "redis")]
pub fn bench_redis(url: Option<String>, quick: bool) -> Result<()> {
    let local = if url.is_none() {
        Some(LocalRedis::start(&[])?)
    } else {
        None
    };
    let url = url.unwrap_or_else(|| local.as_ref().map(|l| l.url()).unwrap_or_default());
    let (sizes, conc, budget): (Vec<u64>, Vec<u32>, _) = if quick {
        (
            vec![4 << 10, 1 << 20, 32 << 20],
            vec![1, 4],
            Duration::from_millis(300),
        )
    } else {
        (
            vec![4 << 10, 64 << 10, 1 << 20, 4 << 20, 32 << 20],
            vec![1, 2, 4, 8],
            Duration::from_millis(1000),
        )
    };
    println!(
        "client throughput vs redis-benchmark on {} (target: ratio >= 0.90)",
        cr::redacted(&url)
    );
    println!(
        "{:<4} {:>10} {:>4} {:>12} {:>16} {:>7}",
        "op", "bytes", "c", "ours ops/s", "redis-bench ops/s", "ratio"
    );
    for r in cr::check_client(&url, &sizes, &conc, budget)? {
        println!(
            "{:<4} {:>10} {:>4} {:>12.1} {:>16.1} {:>7.3}",
            r.op, r.bytes, r.concurrency, r.ours_ops, r.redis_benchmark_ops, r.ratio
        );
    }
    let mut o = RedisOptions::quick(&url);
    o.sizes = vec![4 << 10, 1 << 20];
    o.concurrency = vec![1];
    o.via_rtts_ms = vec![0.0, 10.0, 20.0, 50.0];
    o.min_ops = if quick { 5 } else { 20 };
    let s = cr::calibrate_redis(&o)?;
    print_rtt_check(&s);
    Ok(())
}

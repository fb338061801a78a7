//! The human summary printed after a run: a compact table with fixed float formatting.

use crate::metrics::summary::{RunSummary, Stats};
use std::fmt::Write;

fn or_dash(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".into())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Bytes in binary units with one decimal.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

fn latency_row(out: &mut String, label: &str, s: &Option<Stats>) {
    let cell = |f: fn(&Stats) -> f64| or_dash(s.as_ref().map(f), |v| format!("{:.2}", v * 1e3));
    let _ = writeln!(
        out,
        "  {label:<10}{:>12}{:>12}{:>12}{:>12}{:>12}",
        cell(|s| s.mean),
        cell(|s| s.p50),
        cell(|s| s.p90),
        cell(|s| s.p99),
        cell(|s| s.max),
    );
}

/// The run's summary as a table for a terminal; identical summaries give identical text.
pub fn print_summary(s: &RunSummary) -> String {
    let mut o = String::new();
    let reasons = if s.rejected_by_reason.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = s
            .rejected_by_reason
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!(" ({})", parts.join(", "))
    };
    let _ = writeln!(
        o,
        "requests     in {} = simulated {} + rejected {}{reasons}",
        s.requests_in, s.simulated, s.rejected
    );
    let _ = writeln!(
        o,
        "duration     {}   steps {}   preemptions {}",
        or_dash(s.duration_s, |d| format!("{d:.3} s")),
        s.steps,
        s.preemptions
    );
    let _ = writeln!(
        o,
        "latency (ms) {:>10}{:>12}{:>12}{:>12}{:>12}",
        "mean", "p50", "p90", "p99", "max"
    );
    latency_row(&mut o, "TTFT", &s.ttft);
    latency_row(&mut o, "TPOT", &s.tpot);
    latency_row(&mut o, "ITL", &s.itl);
    latency_row(&mut o, "E2E", &s.e2e);
    latency_row(&mut o, "queue", &s.queue);
    let tps = |x: Option<f64>| or_dash(x, |v| format!("{v:.1}"));
    let _ = writeln!(
        o,
        "throughput   input {} tok/s   output {} tok/s   total {} tok/s   {} req/min",
        tps(s.throughput.input_tps),
        tps(s.throughput.output_tps),
        tps(s.throughput.total_tps),
        tps(s.throughput.requests_per_min)
    );
    let _ = writeln!(
        o,
        "tokens       input {}   output {}",
        s.throughput.input_tokens, s.throughput.output_tokens
    );
    match &s.hit_fractions {
        Some(h) => {
            let _ = writeln!(
                o,
                "prompt from  gpu {}   cpu {}   disk {}   remote {}   computed {}",
                pct(h.gpu),
                pct(h.cpu),
                pct(h.disk),
                pct(h.remote),
                pct(h.computed)
            );
        }
        None => {
            let _ = writeln!(o, "prompt from  -");
        }
    }
    let p = &s.preemption_rehits;
    if p.requests > 0 {
        let _ = writeln!(
            o,
            "re-admitted  {} preempted requests looked up {} tokens: gpu {}   connector {} (not in the hit rates above)",
            p.requests,
            p.queries,
            pct(p.gpu_hits as f64 / p.queries as f64),
            pct(p.external_hits as f64 / p.queries as f64)
        );
    }
    let _ = writeln!(
        o,
        "GPU KV       mean {}   peak {} of {} blocks   prefix-cache evictions {}",
        or_dash(s.kv_usage_mean, pct),
        pct(s.kv_usage_peak),
        s.num_gpu_blocks,
        s.gpu_evictions
    );
    let _ = writeln!(
        o,
        "offload      loaded {}   stored {}",
        bytes(s.bytes_loaded),
        bytes(s.bytes_stored)
    );
    if let Some(f) = &s.fleet {
        let ratio = |x: Option<f64>| or_dash(x, |v| format!("{v:.2}"));
        let _ = writeln!(
            o,
            "fleet        {} replicas   imbalance (max/mean) requests {}   tokens {}",
            f.replicas.len(),
            ratio(f.imbalance_requests),
            ratio(f.imbalance_tokens)
        );
        for (i, p) in f.pools.iter().enumerate() {
            let n = f
                .replicas
                .iter()
                .filter(|r| r.pool == Some(i as u32))
                .count();
            let _ = writeln!(o, "  pool {i}   {n} replicas   {p}");
        }
        for r in &f.replicas {
            let gpu = r.hit_fractions.map_or(0.0, |h| h.gpu);
            let pool = r.pool.map_or(String::new(), |p| format!("   pool {p}"));
            let _ = writeln!(
                o,
                "  replica {:<3} requests {:<7} tokens {:<10} GPU hits {}   KV mean {}{pool}",
                r.replica,
                r.requests,
                r.input_tokens + r.output_tokens,
                pct(gpu),
                or_dash(r.kv_usage_mean, pct)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
    }
}

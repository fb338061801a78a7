//! Axis and legend words for named metrics and configuration keys, with their units.

/// A named metric ([`crate::metrics::summary`]) in words with its unit, e.g.
/// `query_ttft_p99_s` -> `query-round TTFT p99 (s)`. Unknown names come back unchanged.
pub fn metric_label(name: &str) -> String {
    let (scope, rest) = if let Some(r) = name.strip_prefix("warmup_") {
        ("warmup-round ".to_string(), r)
    } else if let Some(r) = name.strip_prefix("query_") {
        ("query-round ".to_string(), r)
    } else if let Some(tail) = name.strip_prefix("round")
        && let Some((k, r)) = tail.split_once('_')
        && !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_digit())
    {
        (format!("round {k} "), r)
    } else {
        (String::new(), name)
    };
    let fixed = match rest {
        "output_tps" | "output_throughput_tok_s" => Some("output throughput (tok/s)"),
        "input_tps" => Some("prompt throughput (tok/s)"),
        "total_tps" => Some("prompt + output throughput (tok/s)"),
        "throughput_mean_tok_s" => Some("mean per-request output rate (tok/s)"),
        "request_throughput" => Some("request throughput (req/s)"),
        "completed_per_min" | "requests_per_min" => Some("completed requests (per min)"),
        "completed" => Some("completed requests"),
        "rejected" => Some("rejected requests"),
        "requests_in" => Some("requests"),
        "duration_s" => Some("wall time (s)"),
        "round_s" => Some("wall time (s)"),
        "hit_rate_gpu" => Some("GPU prefix-cache hit rate (fraction of prompt tokens)"),
        "hit_rate_cpu" => Some("CPU tier hit rate (fraction of prompt tokens)"),
        "hit_rate_disk" => Some("disk tier hit rate (fraction of prompt tokens)"),
        "hit_rate_remote" => Some("remote tier hit rate (fraction of prompt tokens)"),
        "hit_rate_total" => Some("prompt tokens not computed (fraction)"),
        _ => None,
    };
    if let Some(f) = fixed {
        return scope + f;
    }
    let mut parts = rest.rsplitn(3, '_');
    let (unit, stat, m) = match (parts.next(), parts.next(), parts.next()) {
        (Some(u), Some(s), Some(m)) => (u, s, m),
        _ => return name.to_string(),
    };
    let what = match m {
        "ttft" => "TTFT",
        "tpot" => "TPOT",
        "itl" => "ITL (e2e / output tokens)",
        "itlgap" => "inter-token gap",
        "e2e" => "E2E latency",
        "queue" => "queueing delay",
        _ => return name.to_string(),
    };
    if !matches!(unit, "s" | "ms")
        || !matches!(stat, "mean" | "min" | "max" | "p50" | "p90" | "p95" | "p99")
    {
        return name.to_string();
    }
    format!("{scope}{what} {stat} ({unit})")
}

/// A configuration key (a sweep parameter) in words with its unit, e.g. `rtt_ms` ->
/// `Redis round-trip time (ms)`. Unknown keys come back unchanged.
pub fn param_label(key: &str) -> String {
    match key {
        "rtt_ms" => "remote store round-trip time (ms)",
        "max_local_cpu_size" | "max_local_cpu_size_gb" | "cpu_gb" => {
            "LMCache CPU tier size (GiB per TP rank)"
        }
        "max_local_disk_size" | "max_local_disk_size_gb" | "disk_gb" => {
            "LMCache disk tier size (GiB)"
        }
        "kv_offloading_size" | "kv_offloading_size_gb" => "vLLM native offload size (GiB)",
        "chunk_size" => "LMCache chunk size (tokens)",
        "block_size" => "vLLM KV block size (tokens)",
        "qps_scale" => "request rate (× the trace's rate)",
        "request_rate" => "request rate (req/s)",
        "remote_concurrency" => "remote operations in flight",
        "remote_size_gb" => "remote store capacity (GiB)",
        "max_num_batched_tokens" => "step token budget (tokens)",
        "max_num_seqs" => "running-request limit",
        "gpu_memory_utilization" => "GPU memory utilisation (fraction)",
        "num_gpu_blocks" => "GPU KV blocks",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_params_read_as_words() {
        assert_eq!(metric_label("query_ttft_p99_s"), "query-round TTFT p99 (s)");
        assert_eq!(metric_label("ttft_mean_ms"), "TTFT mean (ms)");
        assert_eq!(
            metric_label("round2_e2e_p50_s"),
            "round 2 E2E latency p50 (s)"
        );
        assert_eq!(metric_label("output_tps"), "output throughput (tok/s)");
        assert_eq!(metric_label("whatever_x"), "whatever_x");
        assert_eq!(
            param_label("cpu_gb"),
            "LMCache CPU tier size (GiB per TP rank)"
        );
        assert_eq!(param_label("foo"), "foo");
    }
}

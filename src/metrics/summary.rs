//! The aggregates of a run, and the named metrics that `validate` matches against studies.
//!
//! # Definitions
//! Only **finished** requests enter latency statistics, token counts and hit fractions. The
//! **wall time** of a set of requests is from the first send among them (rejected sends count) to
//! the last finish among them, the way vllm bench and llmperf time a benchmark. Percentiles of
//! per-request values are numpy's default (linear interpolation between closest ranks,
//! [`quantile_sorted`]); percentiles of inter-token gaps come from the run's [`LogHistogram`] of
//! every gap (within 0.5 %, exact min, max and mean).
//!
//! # Named metrics
//! A name is `[<scope>_]<metric>`. The scope restricts every quantity to the requests of one
//! barrier round (their own wall time included): `warmup_` is round 0, `query_` is round 1,
//! `round<k>_` is round k. Without a scope the whole run counts. Unknown or undefined names
//! (no finished request, a zero wall time) give `None`.
//!
//! | metric | definition |
//! |---|---|
//! | `ttft_<stat>_<unit>` | time to first token: first token - send |
//! | `tpot_<stat>_<unit>` | time per output token after the first: (finish - first token) / (output_len - 1), requests with output_len > 1 (vllm bench TPOT) |
//! | `itl_<stat>_<unit>` | **llmperf's `inter_token_latency_s`**: per request e2e / output_len, so `itl_mean_s` is the mean over requests of e2e / output tokens, *not* the mean gap between tokens |
//! | `itlgap_<stat>_<unit>` | gaps between successive tokens of all requests (vllm bench ITL), from the histogram; with a scope only `mean` (sum of gaps / number of gaps) and `max` are defined |
//! | `e2e_<stat>_<unit>` | end-to-end latency: finish - send |
//! | `queue_<stat>_<unit>` | first scheduled - send |
//! | `output_tps`, `output_throughput_tok_s` | output tokens / wall time (vllm bench output throughput, llmperf `mean_output_throughput_token_per_s`) |
//! | `input_tps` | prompt tokens / wall time |
//! | `total_tps` | (prompt + output tokens) / wall time |
//! | `throughput_mean_tok_s` | mean over requests of output_len / e2e (llmperf `request_output_throughput_token_per_s`) |
//! | `request_throughput` | finished requests / wall time, per second |
//! | `completed_per_min`, `requests_per_min` | finished requests / wall time, per minute |
//! | `completed`, `rejected`, `requests_in` | request counts |
//! | `duration_s` | wall time, seconds |
//! | `warmup_round_s`, `query_round_s`, `round<k>_s` | wall time of that round, seconds |
//! | `hit_rate_gpu`, `hit_rate_cpu`, `hit_rate_disk`, `hit_rate_remote` | prompt tokens from that tier / all prompt tokens |
//! | `hit_rate_total` | prompt tokens not computed / all prompt tokens |
//!
//! `<stat>` is one of `mean`, `p50`, `p90`, `p95`, `p99`, `min`, `max`; `<unit>` is `s` or `ms`.
//! So a study's `ttft_mean_ms`, `ttft_p50_s`, `warmup_ttft_mean_s`, `query_round_s`,
//! `itl_mean_s` (llmperf), `throughput_mean_tok_s`, `output_throughput_tok_s`,
//! `completed_per_min`, `input_tps` and `total_tps` are all defined above.

use super::histogram::LogHistogram;
use super::record::RequestRecord;
use crate::sim::SimResult;
use crate::util::stats::quantile_sorted;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Distribution of a latency, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of values.
    pub n: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values` (NaN-free) with numpy-linear percentiles; `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |x| quantile_sorted(&v, x).expect("not empty");
        Some(Stats {
            n: v.len() as u64,
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            max: v[v.len() - 1],
        })
    }

    /// Statistics of a histogram of nanoseconds, in seconds; `None` when empty.
    pub fn of_hist(h: &LogHistogram) -> Option<Stats> {
        let q = |x| h.quantile(x).map(|v| v / 1e9);
        Some(Stats {
            n: h.count(),
            mean: h.mean()? / 1e9,
            min: q(0.0)?,
            p50: q(0.5)?,
            p90: q(0.9)?,
            p95: q(0.95)?,
            p99: q(0.99)?,
            max: q(1.0)?,
        })
    }

    /// The statistic named `mean`, `p50`, `p90`, `p95`, `p99`, `min` or `max`.
    pub fn get(&self, stat: &str) -> Option<f64> {
        Some(match stat {
            "mean" => self.mean,
            "min" => self.min,
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "max" => self.max,
            _ => return None,
        })
    }
}

/// Prompt tokens of finished requests by where they came from, as fractions of all of them; the
/// five sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HitFractions {
    /// GPU prefix cache.
    pub gpu: f64,
    /// Offload CPU tier.
    pub cpu: f64,
    /// LMCache disk.
    pub disk: f64,
    /// LMCache remote store.
    pub remote: f64,
    /// Computed by the forward pass.
    pub computed: f64,
}

impl HitFractions {
    /// Fraction of prompt tokens not computed.
    pub fn total(&self) -> f64 {
        self.gpu + self.cpu + self.disk + self.remote
    }
}

/// Finished requests' lookups when admitted again after a preemption, apart from the hit
/// fractions (which count first admissions): a preempted request re-hitting the blocks it
/// computed itself is not reuse (vLLM's `preempted_requests`, `preempted_queries`,
/// `preempted_hits`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PreemptionRehits {
    /// Requests admitted again after a preemption.
    pub requests: u64,
    /// Tokens they looked up then.
    pub queries: u64,
    /// Of them, found in the GPU prefix cache.
    pub gpu_hits: u64,
    /// Of them, supplied by the KV connector.
    pub external_hits: u64,
}

impl PreemptionRehits {
    /// Fraction of the re-admission lookups that hit (GPU or connector); `None` without any.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.queries > 0)
            .then(|| (self.gpu_hits + self.external_hits) as f64 / self.queries as f64)
    }
}

/// Tokens and rates of finished requests over a run's wall time, defined once for simulated
/// and live runs alike (flattened into their summaries' JSON).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Prompt tokens of finished requests.
    pub input_tokens: u64,
    /// Output tokens of finished requests.
    pub output_tokens: u64,
    /// Prompt tokens per second of wall time.
    #[serde(deserialize_with = "required")]
    pub input_tps: Option<f64>,
    /// Output tokens per second of wall time.
    #[serde(deserialize_with = "required")]
    pub output_tps: Option<f64>,
    /// Prompt plus output tokens per second of wall time.
    #[serde(deserialize_with = "required")]
    pub total_tps: Option<f64>,
    /// Finished requests per minute of wall time.
    #[serde(deserialize_with = "required")]
    pub requests_per_min: Option<f64>,
}

impl Throughput {
    /// Rates of `finished` requests with `input_tokens` and `output_tokens` over `wall_s`.
    pub fn over(input_tokens: u64, output_tokens: u64, finished: u64, wall_s: Option<f64>) -> Self {
        Throughput {
            input_tokens,
            output_tokens,
            input_tps: per(input_tokens, wall_s),
            output_tps: per(output_tokens, wall_s),
            total_tps: per(input_tokens + output_tokens, wall_s),
            requests_per_min: per(finished, wall_s).map(|x| x * 60.0),
        }
    }
}

/// First send of `records` to the last finish among them, seconds (`None` without a send or a
/// finished request).
pub fn wall_s<'a>(records: impl Iterator<Item = &'a RequestRecord> + Clone) -> Option<f64> {
    let start = records
        .clone()
        .filter_map(|r| r.arrival_s)
        .min_by(f64::total_cmp)?;
    let end = records
        .filter(|r| r.finished())
        .filter_map(|r| Some(r.arrival_s? + r.e2e_s?))
        .max_by(f64::total_cmp)?;
    Some(end - start)
}

/// Reads an `Option` field that must be present (as `null` when it has no value), so that a
/// renamed or missing field is an error rather than a silent `None`.
fn required<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// The aggregates of one run. Field order is the JSON order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Requests in the trace.
    pub requests_in: u64,
    /// Requests simulated to completion.
    pub simulated: u64,
    /// Requests not completed.
    pub rejected: u64,
    /// Rejected requests by kind of reason (see `Reason::kind`).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// First send to last finish, seconds.
    #[serde(deserialize_with = "required")]
    pub duration_s: Option<f64>,
    /// Time to first token.
    #[serde(deserialize_with = "required")]
    pub ttft: Option<Stats>,
    /// Time per output token after the first (requests with more than one output token).
    #[serde(deserialize_with = "required")]
    pub tpot: Option<Stats>,
    /// Gaps between successive tokens of all requests (histogram).
    #[serde(deserialize_with = "required")]
    pub itl: Option<Stats>,
    /// End-to-end latency.
    #[serde(deserialize_with = "required")]
    pub e2e: Option<Stats>,
    /// First scheduled - sent.
    #[serde(deserialize_with = "required")]
    pub queue: Option<Stats>,
    /// Tokens and rates of finished requests over the wall time.
    #[serde(flatten)]
    pub throughput: Throughput,
    /// Prompt tokens by origin at first admission, as fractions.
    #[serde(deserialize_with = "required")]
    pub hit_fractions: Option<HitFractions>,
    /// Lookups of preempted requests admitted again, apart from `hit_fractions`.
    #[serde(default)]
    pub preemption_rehits: PreemptionRehits,
    /// Bytes loaded into the GPU from offload tiers.
    pub bytes_loaded: u64,
    /// Bytes stored from the GPU into offload tiers.
    pub bytes_stored: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Engine steps.
    pub steps: u64,
    /// Tokens run through prefill.
    pub prefill_tokens: u64,
    /// Tokens decoded.
    pub decode_tokens: u64,
    /// Time the engine spent in steps, seconds.
    pub busy_s: f64,
    /// Time in connector lookups, blocking loads and critical-path stores, seconds.
    pub transfer_s: f64,
    /// GPU KV blocks.
    pub num_gpu_blocks: u32,
    /// Time-weighted mean fraction of GPU blocks in use over the wall time.
    #[serde(deserialize_with = "required")]
    pub kv_usage_mean: Option<f64>,
    /// Largest fraction of GPU blocks in use at once.
    pub kv_usage_peak: f64,
    /// GPU prefix-cache evictions of blocks that another request shares (blocks nothing else
    /// shares are never registered, since no other request could hit them, so their eviction
    /// is not counted).
    pub gpu_evictions: u64,
    /// The KV connector's counters (`null` without one).
    #[serde(deserialize_with = "required")]
    pub offload: Option<crate::connector::ConnectorStats>,
    /// A fleet's replicas one by one (absent for a single engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSummary>,
}

/// One replica's share of a fleet's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    /// Its index.
    pub replica: u32,
    /// Its pool in a heterogeneous fleet (an index into the fleet's `pools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<u32>,
    /// Its GPU KV blocks.
    pub num_gpu_blocks: u32,
    /// Requests it finished.
    pub requests: u64,
    /// Prompt tokens of those.
    pub input_tokens: u64,
    /// Tokens they generated.
    pub output_tokens: u64,
    /// Their prompt tokens by origin, as fractions.
    pub hit_fractions: Option<HitFractions>,
    /// Engine steps.
    pub steps: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Time-weighted mean fraction of its GPU blocks in use over the fleet's wall time.
    pub kv_usage_mean: Option<f64>,
    /// Largest fraction of its GPU blocks in use at once.
    pub kv_usage_peak: f64,
    /// Its GPU prefix-cache evictions.
    pub gpu_evictions: u64,
    /// Its connector's counters.
    pub offload: Option<crate::connector::ConnectorStats>,
}

/// A fleet's replicas and how evenly the router spread the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// Each replica.
    pub replicas: Vec<ReplicaSummary>,
    /// A heterogeneous fleet's pools, as given (their keys), in replica order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// Most requests on a replica / the mean (1 is even).
    pub imbalance_requests: Option<f64>,
    /// Most tokens (prompt + output) on a replica / the mean.
    pub imbalance_tokens: Option<f64>,
}

impl FleetSummary {
    /// Per replica, from the records (their `replica`, or their `prefill_replica`) and the
    /// replicas' counters.
    fn new(records: &[RequestRecord], result: &SimResult, dur_ns: u64) -> Option<FleetSummary> {
        if result.replicas.is_empty() {
            return None;
        }
        let replicas: Vec<ReplicaSummary> = result
            .replicas
            .iter()
            .enumerate()
            .map(|(i, rr)| {
                let mine: Vec<RequestRecord> = records
                    .iter()
                    // A prefill replica's are the requests it prefilled.
                    .filter(|r| r.replica == Some(i as u32) || r.prefill_replica == Some(i as u32))
                    .cloned()
                    .collect();
                let v = View::new(&mine, None);
                let blocks = rr.num_gpu_blocks.max(1) as f64;
                ReplicaSummary {
                    replica: i as u32,
                    pool: rr.pool,
                    num_gpu_blocks: rr.num_gpu_blocks,
                    requests: v.fin.len() as u64,
                    input_tokens: v.input_tokens(),
                    output_tokens: v.output_tokens(),
                    hit_fractions: v.hits(),
                    steps: rr.stats.steps,
                    preemptions: rr.stats.preemptions,
                    kv_usage_mean: (dur_ns > 0)
                        .then(|| rr.stats.used_block_ns / dur_ns as f64 / blocks),
                    kv_usage_peak: rr.stats.peak_used_blocks as f64 / blocks,
                    gpu_evictions: rr.gpu_evictions,
                    offload: rr.connector_stats.clone(),
                }
            })
            .collect();
        let ratio = |f: &dyn Fn(&ReplicaSummary) -> u64| {
            let xs: Vec<f64> = replicas.iter().map(|r| f(r) as f64).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            (mean > 0.0).then(|| xs.iter().copied().fold(0.0, f64::max) / mean)
        };
        Some(FleetSummary {
            imbalance_requests: ratio(&|r| r.requests),
            imbalance_tokens: ratio(&|r| r.input_tokens + r.output_tokens),
            replicas,
            pools: result.pools.clone(),
        })
    }
}

/// The records of one scope.
struct View<'a> {
    all: Vec<&'a RequestRecord>,
    fin: Vec<&'a RequestRecord>,
}

impl<'a> View<'a> {
    fn new(records: &'a [RequestRecord], round: Option<u32>) -> Self {
        let all: Vec<_> = records
            .iter()
            .filter(|r| round.is_none_or(|k| r.round == k))
            .collect();
        let fin = all.iter().copied().filter(|r| r.finished()).collect();
        View { all, fin }
    }

    fn stats(&self, f: impl Fn(&RequestRecord) -> Option<f64>) -> Option<Stats> {
        Stats::of(self.fin.iter().filter_map(|r| f(r)))
    }

    /// First send to last finish, seconds.
    fn wall_s(&self) -> Option<f64> {
        wall_s(self.all.iter().copied())
    }

    fn input_tokens(&self) -> u64 {
        self.fin.iter().map(|r| r.input_len as u64).sum()
    }

    fn output_tokens(&self) -> u64 {
        self.fin.iter().map(|r| r.output_len as u64).sum()
    }

    fn hits(&self) -> Option<HitFractions> {
        let total = self.input_tokens();
        if total == 0 {
            return None;
        }
        let frac = |f: fn(&RequestRecord) -> u32| {
            self.fin.iter().map(|r| f(r) as u64).sum::<u64>() as f64 / total as f64
        };
        Some(HitFractions {
            gpu: frac(|r| r.tokens_gpu),
            cpu: frac(|r| r.tokens_cpu),
            disk: frac(|r| r.tokens_disk),
            remote: frac(|r| r.tokens_remote),
            computed: frac(|r| r.tokens_computed),
        })
    }

    fn rehits(&self) -> PreemptionRehits {
        let mut p = PreemptionRehits::default();
        for r in self.fin.iter().filter(|r| r.preempted_queries > 0) {
            p.requests += 1;
            p.queries += r.preempted_queries as u64;
            p.gpu_hits += r.preempted_gpu_hits as u64;
            p.external_hits += r.preempted_external_hits as u64;
        }
        p
    }

    /// Per-request values of latency metric `m`.
    fn latency(&self, m: &str) -> Option<Option<Stats>> {
        Some(match m {
            "ttft" => self.stats(|r| r.ttft_s),
            "tpot" => self.stats(|r| r.tpot_s),
            "itl" => self.stats(RequestRecord::llmperf_itl_s),
            "e2e" => self.stats(|r| r.e2e_s),
            "queue" => self.stats(|r| r.queue_s),
            _ => return None,
        })
    }

    /// Mean and max of inter-token gaps from the per-request sums.
    fn gap(&self, stat: &str) -> Option<f64> {
        let with = self.fin.iter().filter(|r| r.itl_mean_s.is_some());
        match stat {
            "mean" => {
                let (mut sum, mut n) = (0.0, 0u64);
                for r in with {
                    let g = r.output_len as u64 - 1;
                    sum += r.itl_mean_s? * g as f64;
                    n += g;
                }
                (n > 0).then(|| sum / n as f64)
            }
            "max" => with.filter_map(|r| r.itl_max_s).max_by(f64::total_cmp),
            _ => None,
        }
    }
}

fn per(n: u64, wall: Option<f64>) -> Option<f64> {
    wall.filter(|w| *w > 0.0).map(|w| n as f64 / w)
}

/// Splits a round scope off a metric name.
fn split_scope(name: &str) -> (Option<u32>, &str) {
    if let Some(rest) = name.strip_prefix("warmup_") {
        return (Some(0), rest);
    }
    if let Some(rest) = name.strip_prefix("query_") {
        return (Some(1), rest);
    }
    if let Some(tail) = name.strip_prefix("round")
        && let Some((k, rest)) = tail.split_once('_')
        && !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_digit())
        && let Ok(k) = k.parse()
    {
        return (Some(k), rest);
    }
    (None, name)
}

impl RunSummary {
    /// Aggregates `records` (from [`super::record::records`]) and the engine's counters.
    pub fn new(records: &[RequestRecord], result: &SimResult) -> RunSummary {
        let v = View::new(records, None);
        let mut rejected_by_reason = BTreeMap::new();
        for r in v.all.iter().filter(|r| !r.finished()) {
            let kind = r.reject_reason.as_ref().map_or("", |r| r.kind());
            *rejected_by_reason.entry(kind.to_string()).or_insert(0u64) += 1;
        }
        let simulated = v.fin.len() as u64;
        let dur_ns = result.end.since(result.start).as_ns();
        let duration_s = (simulated > 0).then_some(dur_ns as f64 / 1e9);
        let (input_tokens, output_tokens) = (v.input_tokens(), v.output_tokens());
        let blocks = result.num_gpu_blocks.max(1) as f64;
        let st = &result.stats;
        RunSummary {
            requests_in: records.len() as u64,
            simulated,
            rejected: records.len() as u64 - simulated,
            rejected_by_reason,
            duration_s,
            ttft: v.stats(|r| r.ttft_s),
            tpot: v.stats(|r| r.tpot_s),
            itl: Stats::of_hist(&result.itl_hist),
            e2e: v.stats(|r| r.e2e_s),
            queue: v.stats(|r| r.queue_s),
            throughput: Throughput::over(input_tokens, output_tokens, simulated, duration_s),
            hit_fractions: v.hits(),
            preemption_rehits: v.rehits(),
            bytes_loaded: v.fin.iter().map(|r| r.bytes_loaded).sum(),
            bytes_stored: v.fin.iter().map(|r| r.bytes_stored).sum(),
            preemptions: st.preemptions,
            steps: st.steps,
            prefill_tokens: st.prefill_tokens,
            decode_tokens: st.decode_tokens,
            busy_s: st.busy.as_secs_f64(),
            transfer_s: st.transfer.as_secs_f64(),
            num_gpu_blocks: result.num_gpu_blocks,
            kv_usage_mean: (dur_ns > 0).then(|| st.used_block_ns / dur_ns as f64 / blocks),
            kv_usage_peak: st.peak_used_blocks as f64 / blocks,
            gpu_evictions: result.gpu_evictions,
            offload: result.connector_stats.clone(),
            fleet: FleetSummary::new(records, result, dur_ns),
        }
    }

    /// The value of the named metric (see the module documentation and [`metric_names_help`])
    /// over `records`, the records this summary was made from; `None` for an unknown name or an
    /// undefined value.
    pub fn metric(&self, records: &[RequestRecord], name: &str) -> Option<f64> {
        if let Some(k) = name
            .strip_prefix("round")
            .and_then(|t| t.strip_suffix("_s"))
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        {
            return View::new(records, Some(k.parse().ok()?)).wall_s();
        }
        let (scope, rest) = split_scope(name);
        let v = View::new(records, scope);
        // Whole-run rates use the summary's exact wall time; a round's its own.
        let wall = match scope {
            None => self.duration_s,
            Some(_) => v.wall_s(),
        };
        let fin = v.fin.len() as u64;
        let (inp, out) = (v.input_tokens(), v.output_tokens());
        let value = match rest {
            "round_s" if scope.is_some() => wall,
            "duration_s" => wall,
            "output_tps" | "output_throughput_tok_s" => per(out, wall),
            "input_tps" => per(inp, wall),
            "total_tps" => per(inp + out, wall),
            "throughput_mean_tok_s" => v.stats(RequestRecord::output_throughput).map(|s| s.mean),
            "request_throughput" => per(fin, wall),
            "completed_per_min" | "requests_per_min" => per(fin, wall).map(|x| x * 60.0),
            "completed" => Some(fin as f64),
            "rejected" => Some((v.all.len() as u64 - fin) as f64),
            "requests_in" => Some(v.all.len() as f64),
            "hit_rate_gpu" => v.hits().map(|h| h.gpu),
            "hit_rate_cpu" => v.hits().map(|h| h.cpu),
            "hit_rate_disk" => v.hits().map(|h| h.disk),
            "hit_rate_remote" => v.hits().map(|h| h.remote),
            "hit_rate_total" => v.hits().map(|h| h.total()),
            "rehit_rate" => v.rehits().hit_rate(),
            "preempted_requests" => Some(v.rehits().requests as f64),
            _ => {
                let mut parts = rest.rsplitn(3, '_');
                let (unit, stat, m) = (parts.next()?, parts.next()?, parts.next()?);
                let scale = match unit {
                    "s" => 1.0,
                    "ms" => 1e3,
                    _ => return None,
                };
                let x = if m == "itlgap" {
                    match scope {
                        None => self.itl?.get(stat)?,
                        Some(_) => v.gap(stat)?,
                    }
                } else {
                    v.latency(m)??.get(stat)?
                };
                Some(x * scale)
            }
        };
        value.filter(|x| x.is_finite())
    }
}

/// The named-metric grammar, for `--help` and error messages.
pub fn metric_names_help() -> &'static str {
    "Metric names: [<scope>_]<metric>\n\
     scope: warmup (round 0), query (round 1), round<k> (round k); none = whole run\n\
     latency: <m>_<stat>_<unit>\n\
     \x20 m: ttft, tpot, e2e, queue,\n\
     \x20    itl (llmperf inter_token_latency_s: per request e2e / output tokens),\n\
     \x20    itlgap (gaps between successive tokens; with a scope only mean and max)\n\
     \x20 stat: mean, p50, p90, p95, p99, min, max    unit: s, ms\n\
     throughput (per second of wall time = first send to last finish):\n\
     \x20 output_tps, output_throughput_tok_s, input_tps, total_tps, request_throughput,\n\
     \x20 completed_per_min, requests_per_min,\n\
     \x20 throughput_mean_tok_s (llmperf: mean over requests of output tokens / e2e)\n\
     wall time: duration_s, warmup_round_s, query_round_s, round<k>_s\n\
     counts: completed, rejected, requests_in\n\
     hit rates (fraction of prompt tokens at first admission): hit_rate_gpu, hit_rate_cpu,\n\
     \x20 hit_rate_disk, hit_rate_remote, hit_rate_total\n\
     preemptions: rehit_rate (fraction of the tokens preempted requests looked up when\n\
     \x20 admitted again that hit, GPU or connector), preempted_requests\n"
}

#[cfg(test)]
mod tests {
    use super::super::record::records;
    use super::*;
    use crate::engine::EngineFlags;
    use crate::sim::simulate;
    use crate::testkit::{lmcache_cpu, mixed, pooled, req, run, serial, setup, trace};
    use crate::trace::Run;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9 * b.abs().max(1.0))
    }

    /// Five one-token requests at 0 ms served one at a time: TTFT 10, 20, 30, 40, 50 ms.
    fn five() -> (Vec<RequestRecord>, RunSummary) {
        let t = trace(
            (0..5)
                .map(|i| req(i, 0, vec![Run::new(10 + i, 0, 100)], 1))
                .collect(),
        );
        let r = run(&t, serial());
        let rec = records(&t, &r);
        let s = RunSummary::new(&rec, &r);
        (rec, s)
    }

    #[test]
    fn summary_percentiles_are_numpy_linear() {
        let (rec, s) = five();
        let ttft = s.ttft.unwrap();
        assert_eq!(ttft.n, 5);
        assert!(close(Some(ttft.mean), 0.030));
        assert!(close(Some(ttft.p50), 0.030));
        // numpy.percentile([10,20,30,40,50], 90) = 46, 99 -> 49.6
        assert!(close(Some(ttft.p90), 0.046));
        assert!(close(Some(ttft.p99), 0.0496));
        assert!(close(Some(ttft.max), 0.050));
        let q = s.queue.unwrap();
        assert!(close(Some(q.mean), 0.020));
        assert_eq!(s.tpot, None);
        assert_eq!(s.itl, None);
        assert_eq!((s.requests_in, s.simulated, s.rejected), (5, 5, 0));
        assert!(close(s.duration_s, 0.050));
        let t = &s.throughput;
        assert_eq!((t.input_tokens, t.output_tokens), (500, 5));
        assert!(close(t.input_tps, 10_000.0));
        assert!(close(t.output_tps, 100.0));
        assert!(close(t.total_tps, 10_100.0));
        assert!(close(t.requests_per_min, 6000.0));
        assert_eq!(s.steps, 5);
        // One 100-token request (7 blocks) held through the whole run.
        let blocks = s.num_gpu_blocks as f64;
        assert!(close(Some(s.kv_usage_peak), 7.0 / blocks));
        assert!(close(s.kv_usage_mean, 7.0 / blocks));
        assert!(close(s.metric(&rec, "ttft_p90_ms"), 46.0));
        assert!(close(s.metric(&rec, "ttft_p95_s"), 0.048));
        assert!(close(s.metric(&rec, "ttft_min_ms"), 10.0));
        assert!(close(s.metric(&rec, "e2e_mean_ms"), 30.0));
        assert!(close(s.metric(&rec, "queue_max_s"), 0.040));
        assert!(close(s.metric(&rec, "completed_per_min"), 6000.0));
        assert!(close(s.metric(&rec, "request_throughput"), 100.0));
        assert!(close(s.metric(&rec, "output_throughput_tok_s"), 100.0));
        // Mean over requests of 1 / e2e: (100 + 50 + 33.3 + 25 + 20) / 5.
        let want = (100.0 + 50.0 + 100.0 / 3.0 + 25.0 + 20.0) / 5.0;
        assert!(close(s.metric(&rec, "throughput_mean_tok_s"), want));
        for bad in [
            "ttft_p42_ms",
            "ttft_mean_us",
            "foo_mean_s",
            "tpot_mean_ms",
            "round_s",
            "nonsense",
            "query_ttft_mean_s",
        ] {
            assert_eq!(s.metric(&rec, bad), None, "{bad}");
        }
    }

    #[test]
    fn llmperf_itl_is_e2e_over_output_tokens_not_the_mean_gap() {
        // A: out 2 at 0 (ttft 10, e2e 20 ms); B: out 1 queued behind A (e2e 30 ms); C rejected;
        // D: out 3 at 100 ms (e2e 30 ms).
        let (t, r) = mixed();
        let rec = records(&t, &r);
        let s = RunSummary::new(&rec, &r);
        // llmperf: mean of 20/2, 30/1, 30/3 = (10 + 30 + 10) / 3 ms.
        assert!(close(s.metric(&rec, "itl_mean_s"), 0.050 / 3.0));
        assert!(close(s.metric(&rec, "itl_max_ms"), 30.0));
        // Gaps: A has one of 10 ms, D two of 10 ms.
        assert!(close(s.metric(&rec, "itlgap_mean_ms"), 10.0));
        assert!(close(s.metric(&rec, "itlgap_p99_ms"), 10.0));
        assert!(close(s.metric(&rec, "round0_itlgap_mean_ms"), 10.0));
        assert_eq!(s.metric(&rec, "round0_itlgap_p50_ms"), None);
        assert_eq!(s.itl.unwrap().n, 3);
        // TPOT over A and D.
        assert!(close(s.metric(&rec, "tpot_mean_ms"), 10.0));
        assert_eq!(s.tpot.unwrap().n, 2);
        assert_eq!((s.simulated, s.rejected), (3, 1));
        assert_eq!(
            s.rejected_by_reason,
            BTreeMap::from([("exceeds max_model_len".to_string(), 1)])
        );
        // Wall time 0 -> 130 ms; output 2 + 1 + 3 tokens.
        assert!(close(s.duration_s, 0.130));
        assert!(close(s.metric(&rec, "output_tps"), 6.0 / 0.130));
        assert!(close(s.metric(&rec, "completed"), 3.0));
        assert!(close(s.metric(&rec, "rejected"), 1.0));
        assert!(close(s.metric(&rec, "requests_in"), 4.0));
    }

    #[test]
    fn round_prefixes_scope_to_one_round() {
        // 2 clients. Round 0: 10 tokens and 1 token (both at 0). Round 1 starts at 100 ms:
        // 3 tokens and 1 token.
        let mut reqs = vec![
            req(0, 0, vec![Run::new(1, 0, 50)], 10),
            req(1, 0, vec![Run::new(2, 0, 50)], 1),
            req(2, 0, vec![Run::new(3, 0, 50)], 3),
            req(3, 0, vec![Run::new(4, 0, 50)], 1),
        ];
        reqs[2].round = 1;
        reqs[3].round = 1;
        let t = pooled(reqs, 2);
        let r = run(&t, EngineFlags::default());
        let rec = records(&t, &r);
        let s = RunSummary::new(&rec, &r);
        assert!(close(s.metric(&rec, "warmup_round_s"), 0.100));
        assert!(close(s.metric(&rec, "round0_s"), 0.100));
        assert!(close(s.metric(&rec, "query_round_s"), 0.030));
        assert!(close(s.metric(&rec, "round1_s"), 0.030));
        assert!(close(s.metric(&rec, "round1_duration_s"), 0.030));
        assert_eq!(s.metric(&rec, "round2_s"), None);
        assert!(close(s.metric(&rec, "duration_s"), 0.130));
        // Round 0: e2e 100 and 10 ms; round 1: 30 and 10 ms.
        assert!(close(s.metric(&rec, "warmup_e2e_mean_ms"), 55.0));
        assert!(close(s.metric(&rec, "query_e2e_mean_s"), 0.020));
        assert!(close(s.metric(&rec, "round1_e2e_max_ms"), 30.0));
        assert!(close(s.metric(&rec, "warmup_ttft_mean_s"), 0.010));
        assert!(close(s.metric(&rec, "query_output_tps"), 4.0 / 0.030));
        assert!(close(s.metric(&rec, "warmup_output_tps"), 11.0 / 0.100));
        assert!(close(s.metric(&rec, "query_completed"), 2.0));
        assert!(close(s.metric(&rec, "round1_hit_rate_total"), 0.0));
        assert!(close(s.metric(&rec, "e2e_mean_ms"), 37.5));
    }

    #[test]
    fn hit_fractions_sum_to_one() {
        // GPU prefix cache: the second copy of a 100-token prompt hits 96 tokens.
        let t = trace(vec![
            req(0, 0, vec![Run::new(1, 0, 100)], 1),
            req(1, 50, vec![Run::new(1, 0, 100)], 1),
        ]);
        let r = run(&t, EngineFlags::default());
        let rec = records(&t, &r);
        let s = RunSummary::new(&rec, &r);
        let h = s.hit_fractions.unwrap();
        assert!(close(Some(h.gpu), 0.48));
        assert!(close(Some(h.computed), 0.52));
        assert!(close(s.metric(&rec, "hit_rate_total"), 0.48));
        assert!(close(s.metric(&rec, "hit_rate_cpu"), 0.0));
        // LMCache CPU with the GPU prefix cache off: 512 of 1600 prompt tokens from CPU.
        let f = EngineFlags {
            enable_prefix_caching: Some(false),
            ..Default::default()
        };
        let t = trace(vec![
            req(0, 0, vec![Run::new(1, 0, 600)], 1),
            req(1, 100, vec![Run::new(1, 0, 600)], 1),
            req(2, 200, vec![Run::new(7, 0, 200)], 1),
            req(3, 300, vec![Run::new(7, 0, 200)], 1),
        ]);
        let r = simulate(&t, &setup(f, lmcache_cpu(256, 5))).unwrap();
        let rec = records(&t, &r);
        let s = RunSummary::new(&rec, &r);
        let h = s.hit_fractions.unwrap();
        assert!(close(Some(h.cpu), 0.32));
        assert!(close(s.metric(&rec, "hit_rate_cpu"), 0.32));
        assert_eq!((h.gpu, h.disk, h.remote), (0.0, 0.0, 0.0));
        assert!((h.gpu + h.cpu + h.disk + h.remote + h.computed - 1.0).abs() < 1e-12);
        assert_eq!(s.bytes_loaded, 512 * 128 * 1024);
        assert!(s.bytes_stored >= 512 * 128 * 1024);
        assert!(matches!(
            s.offload,
            Some(crate::connector::ConnectorStats::LmCache { .. })
        ));
        // The summary reads back as itself (the report reads summary.json through this type).
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RunSummary>(&text).unwrap(), s);
    }

    #[test]
    fn metric_names_and_scopes() {
        assert!(metric_names_help().contains("itlgap"));
        assert_eq!(
            split_scope("round12_ttft_mean_s"),
            (Some(12), "ttft_mean_s")
        );
        assert_eq!(split_scope("roundx_ttft"), (None, "roundx_ttft"));
    }
}

//! Fitting an engine's step time from live runs: the coefficients of
//! [`Fitted`](crate::cost::Fitted), `step = c0 + c_prefill * prefill tokens + c_decode * decoding
//! sequences + c_attn * prefill attention pairs + c_ctx * decode context tokens`.
//!
//! A live run shows requests, not steps, so each finished request gives two observations built
//! from the measured timeline of every request (send, first token, last token):
//!
//! - **TTFT** = the server's time per request outside the steps (HTTP, input processing, the
//!   first chunk's trip back; the simulator's `request_overhead_ms`) plus the steps of its
//!   prefill: `ceil(new / max_num_batched_tokens)` chunks of its `new = input_len - tokens_gpu`
//!   uncached tokens after its `tokens_gpu` cached ones (their tokens and attention pairs
//!   exactly), plus what other requests add to those steps: a request decoding during a
//!   fraction `o` of the prefill adds `o` decoding sequences (and its mid-answer context) to
//!   each of them, and a request whose own prefill overlaps by a fraction `q` adds `q` of its
//!   prefill tokens and pairs.
//! - **E2E** = its TTFT plus `output_len - 1` decode steps, each with its own decoding sequence
//!   at its mid-answer context, the other requests decoding during a fraction of its decode
//!   phase, and the prefills overlapping that phase spread over its steps. E2E rather than the
//!   mean gap between chunks, because a busy API server streams tokens in bursts (the first
//!   chunk late, the rest at once), which leaves the sum intact but not the parts.
//!
//! The overlaps are exact for calibration traces made for it (one request at a time over a range
//! of prompt lengths; k identical requests at once for each k) and an approximation otherwise.
//! The fit is least squares on relative residuals (a 30 ms TTFT counts as much as a 1 s E2E),
//! each observation weighted by `1 / max(y, a quarter of the median y of its kind)`; a
//! coefficient that comes out negative, or whose feature never varies, is fixed at 0 and the rest
//! refitted; then observations whose weighted residual exceeds `max(25 %, 3 x the median)` (a
//! request delayed by something else: a recompilation, a burst, the client's own scheduling) are
//! dropped and the fit is repeated once. Overheads per token outside the engine step
//! (detokenising, streaming) end up in the step coefficients, which is what a prediction of
//! client-side times needs.

use crate::calibrate::fit::{LinearFit, weighted_ls};
use crate::cost::Fitted;
use crate::metrics::record::RequestRecord;
use serde::Serialize;

/// Feature names: [`Fitted`]'s coefficients in order, then the per-request overhead.
pub const NAMES: [&str; 6] = [
    "c0",
    "c_prefill",
    "c_decode",
    "c_attn",
    "c_ctx",
    "request_overhead",
];

/// The fitted coefficients and the fit's quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepFit {
    /// Coefficients, seconds.
    pub fitted: Fitted,
    /// Server time per request outside the steps, seconds.
    pub request_overhead_s: f64,
    /// The regression over the coefficients kept (names, standard errors, residuals).
    pub fit: LinearFit,
    /// TTFT observations.
    pub ttft_rows: usize,
    /// E2E observations.
    pub e2e_rows: usize,
    /// Observations left out of the final fit as outliers.
    pub dropped_rows: usize,
}

struct Span {
    send: f64,
    first: f64,
    last: f64,
    new: f64,
    pairs: f64,
    chunks: f64,
    out: u32,
    ctx_mid: f64,
}

/// Attention pairs and chunks of a prefill of `new` tokens after `cached`, in chunks of `mbt`.
fn prefill_shape(new: u64, cached: u64, mbt: u64) -> (f64, f64) {
    let (mut pairs, mut chunks, mut done) = (0.0, 0.0, 0u64);
    while done < new {
        let n = (new - done).min(mbt.max(1));
        let p = cached + done;
        pairs += n as f64 * p as f64 + (n as f64) * (n as f64 + 1.0) / 2.0;
        chunks += 1.0;
        done += n;
    }
    (pairs, chunks)
}

fn overlap(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0.0)
}

/// One observation: features (in [`NAMES`] order) and seconds.
pub type Row = (Vec<f64>, f64);

/// The observation rows of one live run's records: (features, seconds) pairs, TTFT rows and
/// E2E rows.
pub fn rows(records: &[RequestRecord], mbt: u32) -> (Vec<Row>, Vec<Row>) {
    let spans: Vec<Span> = records
        .iter()
        .filter(|r| r.finished())
        .filter_map(|r| {
            let send = r.arrival_s?;
            let cached = r.tokens_gpu.min(r.input_len.saturating_sub(1)) as u64;
            let new = r.input_len as u64 - cached;
            let (pairs, chunks) = prefill_shape(new, cached, mbt as u64);
            Some(Span {
                send,
                first: send + r.ttft_s?,
                last: send + r.e2e_s?,
                new: new as f64,
                pairs,
                chunks,
                out: r.output_len,
                ctx_mid: r.input_len as f64 + r.output_len as f64 / 2.0,
            })
        })
        .collect();
    let (mut ttft, mut e2e) = (Vec::new(), Vec::new());
    for (i, s) in spans.iter().enumerate() {
        let pre = (s.send, s.first);
        let dec = (s.first, s.last);
        // TTFT.
        let mut x = vec![s.chunks, s.new, 0.0, s.pairs, 0.0, 1.0];
        let plen = pre.1 - pre.0;
        for (j, t) in spans.iter().enumerate() {
            if j == i || plen <= 0.0 {
                continue;
            }
            let o = overlap(pre, (t.first, t.last)) / plen;
            x[2] += o * s.chunks;
            x[4] += o * s.chunks * (t.ctx_mid + 1.0);
            let tp = t.first - t.send;
            if tp > 0.0 {
                let q = overlap(pre, (t.send, t.first)) / tp;
                x[1] += q * t.new;
                x[3] += q * t.pairs;
            }
        }
        if plen > 0.0 {
            ttft.push((x, plen));
        }
        // E2E: the TTFT's steps plus out - 1 decode steps.
        if s.out < 2 || dec.1 <= dec.0 || plen <= 0.0 {
            continue;
        }
        let steps = (s.out - 1) as f64;
        let dlen = dec.1 - dec.0;
        let mut g = [1.0, 0.0, 1.0, 0.0, s.ctx_mid + 1.0, 0.0];
        for (j, t) in spans.iter().enumerate() {
            if j == i {
                continue;
            }
            let o = overlap(dec, (t.first, t.last)) / dlen;
            g[2] += o;
            g[4] += o * (t.ctx_mid + 1.0);
            let tp = t.first - t.send;
            if tp > 0.0 {
                let q = overlap(dec, (t.send, t.first)) / tp;
                g[1] += q * t.new / steps;
                g[3] += q * t.pairs / steps;
            }
        }
        let x = ttft.last().expect("pushed above").0.clone();
        let x = x.iter().zip(g).map(|(a, b)| a + steps * b).collect();
        e2e.push((x, s.last - s.send));
    }
    (ttft, e2e)
}

/// Weighted least squares over the features that vary, with every coefficient kept >= 0 (a
/// negative one is fixed at 0 and the rest refitted): the fit and the features kept.
fn nonneg_fit(rows: &[(&Row, f64)]) -> Option<(LinearFit, Vec<usize>)> {
    let mut keep: Vec<usize> = (0..NAMES.len())
        .filter(|&j| rows.iter().any(|((x, _), _)| x[j] != 0.0))
        .collect();
    loop {
        if keep.is_empty() || rows.len() <= keep.len() {
            return None;
        }
        let names: Vec<&str> = keep.iter().map(|&j| NAMES[j]).collect();
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|((r, _), _)| keep.iter().map(|&j| r[j]).collect())
            .collect();
        let y: Vec<f64> = rows.iter().map(|((_, y), _)| *y).collect();
        let w: Vec<f64> = rows.iter().map(|(_, w)| *w).collect();
        let f = weighted_ls(&names, &x, &y, &w)?;
        match (0..keep.len())
            .filter(|&k| f.coef[k] < 0.0)
            .min_by(|&a, &b| f.coef[a].total_cmp(&f.coef[b]))
        {
            Some(worst) => {
                keep.remove(worst);
            }
            None => return Some((f, keep)),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Rows with their weights: `1 / max(y, median(y) / 4)`.
fn weighted(rows: &[Row]) -> Vec<(&Row, f64)> {
    let floor = median(rows.iter().map(|r| r.1).collect()) / 4.0;
    rows.iter()
        .filter(|r| r.1 > 0.0)
        .map(|r| (r, 1.0 / r.1.max(floor)))
        .collect()
}

/// Fits the step-time coefficients and the time per request to the records of one or more live
/// runs, each with the server's `max_num_batched_tokens` (see the module doc). `None` when there
/// are too few observations.
pub fn fit_step(runs: &[(&[RequestRecord], u32)]) -> Option<StepFit> {
    let (mut t, mut e) = (Vec::new(), Vec::new());
    for (recs, mbt) in runs {
        let (a, b) = rows(recs, *mbt);
        t.extend(a);
        e.extend(b);
    }
    let mut all = weighted(&t);
    all.extend(weighted(&e));
    let (f, keep) = nonneg_fit(&all)?;
    let res = |(r, w): &(&Row, f64)| {
        let pred: f64 = keep.iter().zip(&f.coef).map(|(&j, c)| r.0[j] * c).sum();
        ((pred - r.1) * w).abs()
    };
    let limit = (3.0 * median(all.iter().map(res).collect())).max(0.25);
    let kept: Vec<(&Row, f64)> = all.iter().copied().filter(|r| res(r) <= limit).collect();
    let dropped = all.len() - kept.len();
    let (f, _) = if dropped > 0 {
        nonneg_fit(&kept)?
    } else {
        (f, keep)
    };
    let c = |n: &str| f.get(n).unwrap_or(0.0);
    Some(StepFit {
        fitted: Fitted {
            c0: c("c0"),
            c_prefill: c("c_prefill"),
            c_decode: c("c_decode"),
            c_attn: c("c_attn"),
            c_ctx: c("c_ctx"),
        },
        request_overhead_s: c("request_overhead"),
        fit: f,
        ttft_rows: t.len(),
        e2e_rows: e.len(),
        dropped_rows: dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::Status;

    fn rec(id: u64, send: f64, input: u32, out: u32, ttft: f64, e2e: f64) -> RequestRecord {
        RequestRecord {
            id,
            round: 0,
            session: None,
            status: Status::Finished,
            reject_reason: None,
            arrival_s: Some(send),
            queue_s: None,
            ttft_s: Some(ttft),
            tpot_s: None,
            itl_mean_s: None,
            itl_max_s: None,
            e2e_s: Some(e2e),
            input_len: input,
            output_len: out,
            tokens_gpu: 0,
            tokens_cpu: 0,
            tokens_disk: 0,
            tokens_remote: 0,
            tokens_computed: input,
            bytes_loaded: 0,
            bytes_stored: 0,
            preemptions: 0,
            preempted_queries: 0,
            preempted_gpu_hits: 0,
            preempted_external_hits: 0,
            measured_ttft_s: None,
            measured_e2e_s: None,
            replica: None,
            prefill_replica: None,
        }
    }

    #[test]
    fn recovers_coefficients_of_an_exact_engine() {
        // An engine with 6 ms per request outside the steps, c0 = 4 ms, 20 us per prefill token, 1 ms per decoding sequence,
        // 1 ns per attention pair and 50 ns per context token; mbt 1024.
        let f = Fitted {
            c0: 0.004,
            c_prefill: 20e-6,
            c_decode: 0.001,
            c_attn: 1e-9,
            c_ctx: 50e-9,
        };
        let mbt = 1024;
        let mut recs = Vec::new();
        let mut t = 0.0;
        // One at a time: prompts of 100..4000 tokens, 20 tokens out.
        for (i, len) in [100u32, 400, 800, 1500, 2000, 3000, 4000]
            .iter()
            .enumerate()
        {
            let (pairs, chunks) = prefill_shape(*len as u64, 0, mbt);
            let ttft = 0.006 + f.c0 * chunks + f.c_prefill * *len as f64 + f.c_attn * pairs;
            let gap = f.c0 + f.c_decode + f.c_ctx * (*len as f64 + 10.0 + 1.0);
            let e2e = ttft + 19.0 * gap;
            recs.push(rec(i as u64, t, *len, 20, ttft, e2e));
            t += e2e + 0.5;
        }
        // k at once, decode-dominated: 16-token prompts, 200 out; the prefills run in one step.
        let mut id = 100;
        for k in [2u32, 4, 8] {
            let (pairs, _) = prefill_shape(16, 0, mbt);
            let ttft = 0.006 + f.c0 + f.c_prefill * 16.0 * k as f64 + f.c_attn * pairs * k as f64;
            let gap = f.c0 + f.c_decode * k as f64 + f.c_ctx * k as f64 * (16.0 + 100.0 + 1.0);
            for _ in 0..k {
                recs.push(rec(id, t, 16, 200, ttft, ttft + 199.0 * gap));
                id += 1;
            }
            t += ttft + 199.0 * gap + 0.5;
        }
        let s = fit_step(&[(&recs, mbt as u32)]).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 0.02 * b.abs() + 1e-12;
        assert!(close(s.fitted.c0, f.c0), "{:?}", s.fitted);
        assert!(close(s.fitted.c_prefill, f.c_prefill), "{:?}", s.fitted);
        assert!(close(s.fitted.c_decode, f.c_decode), "{:?}", s.fitted);
        assert!(close(s.fitted.c_ctx, f.c_ctx), "{:?}", s.fitted);
        assert!(close(s.request_overhead_s, 0.006), "{s:?}");
        assert!(s.fit.max_rel_error < 0.02);
        assert_eq!((s.ttft_rows, s.e2e_rows), (recs.len(), recs.len()));
        assert_eq!(s.dropped_rows, 0);
        // A request delayed by something else: dropped as an outlier (TTFT and E2E). One whose
        // tokens came in a burst: its E2E is still right.
        let mut noisy = recs.clone();
        noisy[3].ttft_s = noisy[3].ttft_s.map(|x| x + 0.2);
        noisy[3].e2e_s = noisy[3].e2e_s.map(|x| x + 0.2);
        let ttft16 = 0.006 + f.c0 + f.c_prefill * 16.0 + f.c_attn * 136.0;
        let gap16 = f.c0 + f.c_decode + f.c_ctx * (16.0 + 1.5 + 1.0);
        let e2e16 = ttft16 + 2.0 * gap16;
        noisy.push(rec(500, t, 16, 3, e2e16 - 1e-5, e2e16));
        let n = fit_step(&[(&noisy, mbt as u32)]).unwrap();
        assert_eq!((n.ttft_rows, n.e2e_rows), (recs.len() + 1, recs.len() + 1));
        // The delayed request's TTFT and E2E, the burst's TTFT.
        assert_eq!(n.dropped_rows, 3, "{n:?}");
        assert!(close(n.fitted.c_decode, f.c_decode), "{:?}", n.fitted);
        assert!(close(n.fitted.c_prefill, f.c_prefill), "{:?}", n.fitted);
        // Nothing to fit.
        assert!(fit_step(&[(&recs[..1], 1024)]).is_none());
    }
}

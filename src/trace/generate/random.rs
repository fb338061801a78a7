//! `vllm bench serve --dataset-name random`: prompts of uniformly random length (with an optional
//! prefix shared by all), sent at gamma-distributed arrival times, optionally under a cap on
//! concurrent requests.
//!
//! What the tool does (`vllm/benchmarks/datasets/random.py`, `vllm/benchmarks/serve.py`): input
//! and output lengths are integers uniform in `[floor(L(1-r)), ceil(L(1+r))]`, both ends included
//! (outputs at least 1), all inputs drawn before all outputs; a prompt is `random_prefix_len`
//! tokens shared by every request followed by a body of consecutive vocabulary ids from a random
//! offset (sharing nothing). `ignore_eos` is forced, so outputs are exact. Arrivals: with rate
//! `inf` all requests start at once; otherwise request j waits a gap drawn from
//! Gamma(shape = burstiness, scale = 1/(rate * burstiness)) (request 0 too), the gaps are summed
//! and the sums rescaled so that the last send time is exactly N / rate. `--max-concurrency C`
//! puts every request behind a FIFO semaphore of C.
//!
//! Here: the prefix is one run of one content id, each body one run of fresh content; arrivals in
//! nanoseconds as above (the gamma draws use scale 1, which the rescale divides out); with
//! `max_concurrency` one [`Pool`] of C clients holds every request, each its own unit, which
//! gives open-loop arrivals with a client cap; without it requests are open loop.
//!
//! Simplifications: lengths count server tokens directly (vLLM subtracts the tokenizer's special
//! tokens, such as a BOS, from `random_input_len` and the server adds them back, which shifts the
//! range ends by at most one token); the decode/re-encode adjustment of each prompt is not
//! modelled; ramp-up strategies and warmup requests are not supported.

use super::{Ids, bad, check_requests, meta, request};
use crate::error::Result;
use crate::trace::{Pool, Run, Trace};
use crate::util::rng::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Requests per second; infinite means all requests are sent at once. Written `"inf"` or a
/// number (the flag takes a string, as vLLM's does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRate(pub f64);

impl RequestRate {
    /// All requests at once.
    pub const INF: RequestRate = RequestRate(f64::INFINITY);
}

impl FromStr for RequestRate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity") {
            return Ok(RequestRate::INF);
        }
        t.parse::<f64>().map(RequestRate).map_err(|_| {
            format!("expected \"inf\" or a number of requests per second, got \"{s}\"")
        })
    }
}

impl fmt::Display for RequestRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == f64::INFINITY {
            write!(f, "inf")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for RequestRate {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for RequestRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(D::Error::custom),
            serde_json::Value::Number(n) => Ok(RequestRate(n.as_f64().unwrap_or(f64::NAN))),
            other => Err(D::Error::custom(format!(
                "expected \"inf\" or a number of requests per second, found {}",
                crate::util::json::kind(&other)
            ))),
        }
    }
}

/// The random dataset's and the arrival process's parameters (`vllm bench serve` flags).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Nominal prompt length (without the prefix).
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: u32,
    /// Nominal number of tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub random_output_len: u32,
    /// Lengths are uniform in [L(1-r), L(1+r)]; r in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Tokens of a prefix shared by every prompt.
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: u32,
    /// Requests.
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: u32,
    /// Requests per second, or "inf" to send all at once.
    #[arg(long, default_value = "inf")]
    pub request_rate: RequestRate,
    /// Gamma shape of the gaps: 1 is a Poisson process, lower is burstier.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Requests in flight at most (no cap when absent).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            random_input_len: 1024,
            random_output_len: 128,
            random_range_ratio: 0.0,
            random_prefix_len: 0,
            num_prompts: 1000,
            request_rate: RequestRate::INF,
            burstiness: 1.0,
            max_concurrency: None,
        }
    }
}

/// `[floor(len(1-r)), ceil(len(1+r))]`.
fn bounds(len: u32, r: f64) -> (u64, u64) {
    let l = len as f64;
    (
        (l * (1.0 - r)).floor() as u64,
        (l * (1.0 + r)).ceil() as u64,
    )
}

/// Send times in nanoseconds (see the module documentation).
fn arrivals(p: &Params, seed: u64) -> Vec<u64> {
    let n = p.num_prompts as usize;
    let rate = p.request_rate.0;
    if rate == f64::INFINITY {
        return vec![0; n];
    }
    let mut rng = Rng::stream(seed, "random.arrivals");
    let mut cum = Vec::with_capacity(n);
    let mut t = 0.0f64;
    for _ in 0..n {
        // The scale 1/(rate * burstiness) cancels in the rescale below.
        t += if p.burstiness == f64::INFINITY {
            1.0
        } else {
            rng.gamma(p.burstiness, 1.0)
        };
        cum.push(t);
    }
    let last = t;
    if last <= 0.0 {
        return vec![0; n];
    }
    let target_s = n as f64 / rate;
    // j = n-1 gives last/last = 1 exactly, so the last send is exactly N / rate.
    cum.iter()
        .map(|&c| (c / last * target_s * 1e9).round() as u64)
        .collect()
}

/// Generates the random dataset's workload.
pub fn generate(p: &Params, seed: u64) -> Result<Trace> {
    let r = p.random_range_ratio;
    if !(0.0..1.0).contains(&r) {
        return Err(bad(
            "random_range_ratio",
            format!("must be in [0, 1), got {r}"),
        ));
    }
    if p.num_prompts == 0 {
        return Err(bad("num_prompts", "must be at least 1"));
    }
    check_requests(p.num_prompts as u64, "num_prompts")?;
    let rate = p.request_rate.0;
    if rate.is_nan() || rate <= 0.0 {
        return Err(bad(
            "request_rate",
            format!("must be \"inf\" or above 0, got {rate}"),
        ));
    }
    if rate.is_finite() && p.num_prompts as f64 / rate > 1.0e10 {
        return Err(bad(
            "request_rate",
            format!(
                "{} requests at {rate}/s would take over 300 years",
                p.num_prompts
            ),
        ));
    }
    if p.burstiness.is_nan() || p.burstiness <= 0.0 {
        return Err(bad(
            "burstiness",
            format!("must be above 0, got {}", p.burstiness),
        ));
    }
    if p.max_concurrency == Some(0) {
        return Err(bad("max_concurrency", "must be at least 1"));
    }
    let (in_lo, in_hi) = bounds(p.random_input_len, r);
    let prefix = p.random_prefix_len as u64;
    if prefix + in_lo < 1 {
        return Err(bad(
            "random_input_len",
            "with random_prefix_len and random_range_ratio, prompts could be empty",
        ));
    }
    if prefix + in_hi > u32::MAX as u64 {
        return Err(bad(
            "random_input_len",
            "with random_prefix_len and random_range_ratio, prompts could exceed 4294967295 tokens",
        ));
    }
    let (out_lo, out_hi) = bounds(p.random_output_len, r);
    let (out_lo, out_hi) = (out_lo.max(1), out_hi.max(1));
    if out_hi > u32::MAX as u64 {
        return Err(bad(
            "random_output_len",
            "outputs could exceed 4294967295 tokens",
        ));
    }

    let n = p.num_prompts as usize;
    let mut rng = Rng::stream(seed, "random.lengths");
    let inputs: Vec<u64> = (0..n).map(|_| rng.range(in_lo, in_hi)).collect();
    let outputs: Vec<u64> = (0..n).map(|_| rng.range(out_lo, out_hi)).collect();
    let times = arrivals(p, seed);

    let mut ids = Ids::new();
    let prefix_id = ids.fresh();
    let pool = p.max_concurrency.map(|c| Pool::new(0, c));
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let mut prompt = Vec::with_capacity(2);
        if prefix > 0 {
            prompt.push(Run::new(prefix_id, 0, prefix as u32));
        }
        let body = ids.fresh();
        if inputs[i] > 0 {
            prompt.push(Run::new(body, 0, inputs[i] as u32));
        }
        let mut req = request(i as u64, prompt, outputs[i] as u32)?;
        req.arrival_ns = times[i];
        req.pool = pool.as_ref().map(|p| p.id);
        requests.push(req);
    }
    Ok(Trace {
        meta: meta("random", p, seed, pool.into_iter().collect()),
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::generate::testutil::{
        assert_clap_defaults, assert_refused, assert_seeded, assert_serde_defaults, parse_flags,
    };

    #[test]
    fn clap_defaults_equal_default() {
        assert_clap_defaults::<Params>();
        let p: Params =
            parse_flags(&["x", "--request-rate", "2.5", "--max-concurrency", "4"]).unwrap();
        assert_eq!(p.request_rate, RequestRate(2.5));
        assert_eq!(p.max_concurrency, Some(4));
        assert!(parse_flags::<Params>(&["x", "--request-rate", "fast"]).is_err());
        assert_serde_defaults::<Params>();
        let p: Params = serde_json::from_str(r#"{"request_rate": "inf"}"#).unwrap();
        assert_eq!(p.request_rate, RequestRate::INF);
        let p: Params = serde_json::from_str(r#"{"request_rate": 4}"#).unwrap();
        assert_eq!(p.request_rate, RequestRate(4.0));
        assert!(serde_json::from_str::<Params>(r#"{"request_rate": true}"#).is_err());
        // Round trip through the written parameters.
        let v = serde_json::to_value(Params::default()).unwrap();
        assert_eq!(v["request_rate"], serde_json::json!("inf"));
        assert_eq!(
            serde_json::from_value::<Params>(v).unwrap(),
            Params::default()
        );
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let p = Params {
            random_input_len: 10,
            random_output_len: 4,
            random_range_ratio: 0.25,
            num_prompts: 3000,
            ..Default::default()
        };
        let t = generate(&p, 3).unwrap();
        t.validate("t").unwrap();
        // floor(7.5) = 7, ceil(12.5) = 13; floor(3) = 3, ceil(5) = 5.
        let ins: std::collections::BTreeSet<u32> = t.requests.iter().map(|r| r.input_len).collect();
        let outs: std::collections::BTreeSet<u32> =
            t.requests.iter().map(|r| r.output_len).collect();
        assert_eq!(ins, (7..=13).collect());
        assert_eq!(outs, (3..=5).collect());
        // Ratio 0: fixed lengths; an output length of 0 becomes 1.
        let t = generate(
            &Params {
                random_output_len: 0,
                num_prompts: 5,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert!(
            t.requests
                .iter()
                .all(|r| r.input_len == 1024 && r.output_len == 1)
        );
    }

    #[test]
    fn prefix_is_shared_and_bodies_are_not() {
        let p = Params {
            random_input_len: 20,
            random_prefix_len: 8,
            num_prompts: 4,
            ..Default::default()
        };
        let t = generate(&p, 0).unwrap();
        t.validate("t").unwrap();
        let first = t.requests[0].prompt[0];
        let mut bodies = std::collections::HashSet::new();
        for r in &t.requests {
            assert_eq!(r.input_len, 28);
            assert_eq!(r.prompt.len(), 2);
            assert_eq!(r.prompt[0], first);
            assert_eq!(r.prompt[0].len, 8);
            assert!(bodies.insert(r.prompt[1].content));
            assert_ne!(r.prompt[1].content, first.content);
        }
        // Without a prefix the prompt is the body alone.
        let t = generate(
            &Params {
                num_prompts: 2,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert!(t.requests.iter().all(|r| r.prompt.len() == 1));
    }

    #[test]
    fn arrivals_inf_are_zero_and_finite_rates_end_at_n_over_rate() {
        let t = generate(
            &Params {
                num_prompts: 5,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert!(
            t.requests
                .iter()
                .all(|r| r.arrival_ns == 0 && r.pool.is_none())
        );
        assert!(!t.is_closed_loop());
        for (b, rate, n) in [
            (1.0, 4.0, 10u32),
            (0.3, 7.0, 100),
            (5.0, 0.5, 3),
            (f64::INFINITY, 2.0, 4),
        ] {
            let p = Params {
                num_prompts: n,
                request_rate: RequestRate(rate),
                burstiness: b,
                ..Default::default()
            };
            let t = generate(&p, 11).unwrap();
            t.validate("t").unwrap();
            let times: Vec<u64> = t.requests.iter().map(|r| r.arrival_ns).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(
                *times.last().unwrap(),
                (n as f64 / rate * 1e9).round() as u64
            );
            assert!(times[0] > 0, "request 0 also waits a gap");
            if b == f64::INFINITY {
                assert_eq!(
                    times,
                    [500_000_000, 1_000_000_000, 1_500_000_000, 2_000_000_000]
                );
            }
        }
    }

    #[test]
    fn max_concurrency_puts_every_request_in_one_pool() {
        let p = Params {
            num_prompts: 6,
            request_rate: RequestRate(3.0),
            max_concurrency: Some(2),
            ..Default::default()
        };
        let t = generate(&p, 0).unwrap();
        t.validate("t").unwrap();
        assert_eq!(
            t.meta.pools,
            vec![Pool {
                id: 0,
                clients: 2,
                sessions_per_client: 1,
                early_stop: false
            }]
        );
        assert!(
            t.requests
                .iter()
                .all(|r| r.pool == Some(0) && r.session.is_none())
        );
        assert_eq!(t.requests[5].arrival_ns, 2_000_000_000);
    }

    #[test]
    fn deterministic_per_seed() {
        let p = Params {
            num_prompts: 50,
            random_range_ratio: 0.5,
            request_rate: RequestRate(10.0),
            ..Default::default()
        };
        assert_seeded(generate, &p, 1, 2);
    }

    #[test]
    fn bad_params_are_named() {
        let cases = [
            (
                Params {
                    random_range_ratio: 1.0,
                    ..Default::default()
                },
                "random_range_ratio (--random-range-ratio)",
            ),
            (
                Params {
                    random_range_ratio: -0.1,
                    ..Default::default()
                },
                "--random-range-ratio",
            ),
            (
                Params {
                    random_range_ratio: f64::NAN,
                    ..Default::default()
                },
                "--random-range-ratio",
            ),
            (
                Params {
                    num_prompts: 0,
                    ..Default::default()
                },
                "--num-prompts",
            ),
            (
                Params {
                    request_rate: RequestRate(0.0),
                    ..Default::default()
                },
                "--request-rate",
            ),
            (
                Params {
                    request_rate: RequestRate(f64::NAN),
                    ..Default::default()
                },
                "--request-rate",
            ),
            (
                Params {
                    request_rate: RequestRate(1e-300),
                    ..Default::default()
                },
                "--request-rate",
            ),
            (
                Params {
                    burstiness: 0.0,
                    ..Default::default()
                },
                "--burstiness",
            ),
            (
                Params {
                    burstiness: f64::NAN,
                    ..Default::default()
                },
                "--burstiness",
            ),
            (
                Params {
                    max_concurrency: Some(0),
                    ..Default::default()
                },
                "--max-concurrency",
            ),
            (
                Params {
                    random_input_len: 0,
                    ..Default::default()
                },
                "--random-input-len",
            ),
            (
                Params {
                    random_input_len: u32::MAX,
                    random_range_ratio: 0.5,
                    ..Default::default()
                },
                "--random-input-len",
            ),
        ];
        assert_refused(generate, cases);
        // A prefix alone is a valid prompt (bodies may be empty).
        let t = generate(
            &Params {
                random_input_len: 0,
                random_prefix_len: 4,
                num_prompts: 2,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        t.validate("t").unwrap();
        assert_eq!(t.requests[0].prompt, t.requests[1].prompt);
        // Tiny or huge burstiness: no panic.
        for b in [1e-300, 1e300] {
            let p = Params {
                num_prompts: 5,
                request_rate: RequestRate(1.0),
                burstiness: b,
                ..Default::default()
            };
            generate(&p, 0).unwrap().validate("t").unwrap();
        }
    }
}

//! Admission in front of the router: every request (`admission=always`), or a token bucket
//! (`admission=token_bucket`) as inference-sim/BLIS models it: a request costs its prompt
//! tokens, the bucket holds at most `admission_capacity` tokens (full at the start) and refills
//! at `admission_refill` tokens per second; a request the bucket cannot pay for is refused
//! (rejected with its reason, never routed).

use crate::time::SimTime;
use serde::{Deserialize, Serialize};

/// The admission policy (the `admission` key and its settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Every request is admitted.
    Always,
    /// A token bucket charged the prompt tokens of each request.
    TokenBucket {
        /// Tokens it holds at most (and at the start).
        capacity: f64,
        /// Tokens added per second.
        refill_per_s: f64,
    },
}

impl Admission {
    /// BLIS's token-bucket defaults: 10,000 tokens, 1,000 tokens a second.
    pub const BUCKET: Admission = Admission::TokenBucket {
        capacity: 10_000.0,
        refill_per_s: 1_000.0,
    };

    /// (capacity, refill per second) of its token bucket: BLIS's defaults when it admits every
    /// request.
    pub fn bucket(self) -> (f64, f64) {
        match self {
            Admission::TokenBucket {
                capacity,
                refill_per_s,
            } => (capacity, refill_per_s),
            Admission::Always => Admission::BUCKET.bucket(),
        }
    }
}

/// A token bucket's state over a run.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    refill_per_s: f64,
    tokens: f64,
    at: SimTime,
}

impl Bucket {
    /// The bucket `policy` describes (full), or none when every request is admitted.
    pub fn new(policy: Admission) -> Option<Bucket> {
        match policy {
            Admission::Always => None,
            Admission::TokenBucket {
                capacity,
                refill_per_s,
            } => Some(Bucket {
                capacity,
                refill_per_s,
                tokens: capacity,
                at: SimTime::ZERO,
            }),
        }
    }

    /// Whether a prompt of `tokens` sent at `now` is admitted (and then paid for).
    pub fn admit(&mut self, now: SimTime, tokens: u32) -> bool {
        if now > self.at {
            let refill = (now - self.at).as_secs_f64() * self.refill_per_s;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.at = now;
        }
        let cost = tokens as f64;
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bucket_pays_prompts_from_what_it_refilled() {
        let mut b = Bucket::new(Admission::TokenBucket {
            capacity: 1000.0,
            refill_per_s: 100.0,
        })
        .unwrap();
        let at = |ms: u64| SimTime::from_ns(ms * 1_000_000);
        // Full at the start: 600 then 400 pass, the next 1 token does not.
        assert!(b.admit(at(0), 600));
        assert!(b.admit(at(0), 400));
        assert!(!b.admit(at(0), 1));
        // 2.5 s later it holds 250: a 300-token prompt waits no more, it is refused; 250 pass.
        assert!(!b.admit(at(2500), 300));
        assert!(b.admit(at(2500), 250));
        // An hour idle refills to the capacity, not beyond.
        assert!(!b.admit(at(3_600_000), 1001));
        assert!(b.admit(at(3_600_000), 1000));
        assert!(Bucket::new(Admission::Always).is_none());
    }
}

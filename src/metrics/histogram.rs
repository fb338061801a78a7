//! A log-binned histogram of durations: percentiles of millions of inter-token gaps without
//! keeping them, to within 0.5 % relative error.

// Log-linear bins (as HDR histograms): values below 2^SUB_BITS have a bin each; above, each
// power of two is split into 2^SUB_BITS bins, so a bin is at most 1/128 = 0.8 % wide. The bin
// comes from the value's leading bit and the next SUB_BITS bits: no logarithm per token.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BINS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

fn bin_of(x: u64) -> usize {
    if x < SUB {
        return x as usize;
    }
    let e = 63 - x.leading_zeros(); // floor(log2 x) >= SUB_BITS
    let shift = e - SUB_BITS;
    let sub = (x >> shift) & (SUB - 1);
    (SUB + (shift as u64) * SUB + sub) as usize
}

/// The smallest value in bin `b` and the bin's width.
fn bin_range(b: usize) -> (f64, f64) {
    let b = b as u64;
    if b < SUB {
        return (b as f64, 1.0);
    }
    let shift = (b - SUB) / SUB;
    let sub = (b - SUB) % SUB;
    let lo = ((SUB + sub) << shift) as f64;
    (lo, (1u64 << shift) as f64)
}

/// Counts of durations in nanoseconds.
#[derive(Debug, Clone)]
pub struct LogHistogram {
    counts: Vec<u64>,
    n: u64,
    /// Exact (an integer), so that adding `count` equal values at once or one by one gives the
    /// same histogram: the engine adds a decode stretch's gaps in one call.
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: vec![0; BINS],
            n: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl LogHistogram {
    /// Adds `count` observations of `x` ns.
    pub fn add(&mut self, x: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.n += count;
        self.sum += u128::from(x) * u128::from(count);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.counts[bin_of(x)] += count;
    }

    /// Adds every observation of `other` (a fleet's replicas into one histogram).
    pub fn merge(&mut self, other: &LogHistogram) {
        if other.n == 0 {
            return;
        }
        self.n += other.n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean, exact.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// The `q` quantile (0..=1): the middle of its bin (within 0.4 %), clamped to the exact min
    /// and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.n - 1) as f64).round() as u64;
        if rank == 0 {
            return Some(self.min as f64);
        }
        if rank == self.n - 1 {
            return Some(self.max as f64);
        }
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let (lo, width) = bin_range(b);
                let mid = lo + (width - 1.0) / 2.0;
                return Some(mid.clamp(self.min as f64, self.max as f64));
            }
        }
        Some(self.max as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_half_a_percent() {
        let mut h = LogHistogram::default();
        for x in 1..=10_000u64 {
            h.add(x * 1000, 1);
        }
        for (q, want) in [(0.5, 5_000_500.0), (0.99, 9_900_010.0), (0.9, 9_000_100.0)] {
            let got = h.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.005, "q {q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(0.0), Some(1000.0));
        assert_eq!(h.quantile(1.0), Some(10_000_000.0));
        assert_eq!(h.mean(), Some(5_000_500.0));
        h.add(0, 3);
        assert_eq!(h.count(), 10_003);
        assert_eq!(h.quantile(0.0), Some(0.0));
    }

    #[test]
    fn bins_cover_every_value_exactly_once() {
        for x in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1 << 20,
            (1 << 20) + 12345,
            1 << 52,
        ] {
            let (lo, width) = bin_range(bin_of(x));
            assert!(
                lo <= x as f64 && (x as f64) < lo + width,
                "{x}: [{lo}, {})",
                lo + width
            );
            if x >= 128 {
                assert!(width / lo <= 1.0 / 128.0 + 1e-12);
            }
        }
        assert_eq!(bin_of(u64::MAX), BINS - 1);
        assert_eq!(LogHistogram::default().quantile(0.5), None);
    }
}

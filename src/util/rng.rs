//! Seeded randomness that kvreplay owns: xoshiro256** seeded through splitmix64, and the
//! distributions the generators need.
//!
//! Written here rather than taken from a crate so that a seed produces the same trace with every
//! kvreplay build, on every platform, forever (the determinism promise), and so that each
//! distribution's parameterisation is stated next to its code.

/// A deterministic pseudo-random generator (xoshiro256**).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng {
            s: [
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
            ],
        }
    }

    /// An independent stream for one component (`"lengths"`, `"arrivals"`), so that adding draws
    /// to one component does not shift another's.
    pub fn stream(seed: u64, name: &str) -> Self {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x1000_0000_01b3);
        }
        Rng::new(seed ^ h.rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take a logarithm of.
    fn f64_open0(&mut self) -> f64 {
        1.0 - self.f64()
    }

    /// Uniform integer in `[lo, hi]`, both ends included (unbiased).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        let n = span + 1;
        // Lemire's method with rejection.
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return lo + (m >> 64) as u64;
            }
        }
    }

    /// Uniform float in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Standard normal (Box-Muller, one value per call so that the stream position is simple).
    pub fn std_normal(&mut self) -> f64 {
        let u1 = self.f64_open0();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Normal with `mean` and standard deviation `sd`.
    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        mean + sd * self.std_normal()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.f64_open0().ln()
    }

    /// Log-normal: `exp(N(mu, sigma))`.
    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.std_normal()).exp()
    }

    /// Gamma with `shape` k > 0 and `scale` theta (mean k * theta), Marsaglia and Tsang.
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        assert!(
            shape > 0.0 && scale > 0.0,
            "gamma needs shape > 0 and scale > 0"
        );
        if shape < 1.0 {
            // Boost: G(k) = G(k + 1) * U^(1/k).
            let u = self.f64_open0();
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.std_normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.f64_open0();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }

    /// Poisson with mean `lambda` (inversion for small means, a normal-free rejection method of
    /// Hörmann (PTRS) for large ones).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        assert!(
            lambda >= 0.0 && lambda.is_finite(),
            "poisson needs a finite lambda >= 0"
        );
        if lambda == 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let mut k = 0u64;
            let mut p = 1.0;
            loop {
                p *= self.f64();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.f64() - 0.5;
            let v = self.f64_open0();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if (v.ln() + invalpha.ln() - (a / (us * us) + b).ln())
                <= -lambda + k * loglam - ln_gamma(k + 1.0)
            {
                return k as u64;
            }
        }
    }

    /// Zipf on 1, 2, 3, ... with exponent `a` > 1: P(k) proportional to k^-a (the rejection
    /// method of Devroye, as numpy uses).
    pub fn zipf(&mut self, a: f64) -> u64 {
        assert!(a > 1.0, "zipf needs an exponent above 1");
        let am1 = a - 1.0;
        let b = 2f64.powf(am1);
        loop {
            let u = 1.0 - self.f64();
            let v = self.f64();
            let x = u.powf(-1.0 / am1).floor();
            if !(1.0..=9.0e18).contains(&x) {
                continue;
            }
            let t = (1.0 + 1.0 / x).powf(am1);
            if v * x * (t - 1.0) / (b - 1.0) <= t / b {
                return x as u64;
            }
        }
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.range(0, i as u64) as usize;
            v.swap(i, j);
        }
    }
}

/// ln Γ(x) for x > 0 (Lanczos approximation), used by the Poisson sampler.
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (
            m,
            xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::stream(7, "x").next_u64(),
            Rng::stream(7, "y").next_u64()
        );
        // Pinned value: a change to the generator would change every trace kvreplay makes.
        assert_eq!(Rng::new(0).next_u64(), 0x99ec_5f36_cb75_f2b4);
    }

    #[test]
    fn range_is_inclusive_and_uniform() {
        let mut r = Rng::new(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[(r.range(10, 13) - 10) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(r.range(5, 5), 5);
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let (m, v) = mean_var(&(0..n).map(|_| r.normal(10.0, 3.0)).collect::<Vec<_>>());
        assert!(
            (m - 10.0).abs() < 0.03 && (v - 9.0).abs() < 0.15,
            "normal {m} {v}"
        );
        let (m, _) = mean_var(&(0..n).map(|_| r.exponential(2.0)).collect::<Vec<_>>());
        assert!((m - 2.0).abs() < 0.02, "exp {m}");
        for (k, th) in [(0.5, 2.0), (1.0, 1.0), (4.0, 0.25)] {
            let (m, v) = mean_var(&(0..n).map(|_| r.gamma(k, th)).collect::<Vec<_>>());
            assert!(
                (m - k * th).abs() < 0.02 * (k * th).max(1.0),
                "gamma mean {k} {m}"
            );
            assert!(
                (v - k * th * th).abs() < 0.05 * (k * th * th).max(1.0),
                "gamma var {k} {v}"
            );
        }
        let (m, _) = mean_var(&(0..n).map(|_| r.lognormal(1.0, 0.5)).collect::<Vec<_>>());
        let want = (1.0f64 + 0.125).exp();
        assert!((m - want).abs() < 0.02 * want, "lognormal {m} {want}");
        for lam in [3.0, 100.0] {
            let (m, v) = mean_var(&(0..n).map(|_| r.poisson(lam) as f64).collect::<Vec<_>>());
            assert!(
                (m - lam).abs() < 0.02 * lam && (v - lam).abs() < 0.05 * lam,
                "poisson {lam} {m} {v}"
            );
        }
        // Zipf(2): P(1) = 1/zeta(2) = 6/pi^2.
        let ones = (0..n).filter(|_| r.zipf(2.0) == 1).count() as f64 / n as f64;
        assert!(
            (ones - 6.0 / std::f64::consts::PI.powi(2)).abs() < 0.005,
            "zipf {ones}"
        );
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (x, f) in [(1.0, 1.0f64), (5.0, 24.0), (11.0, 3_628_800.0)] {
            assert!((ln_gamma(x) - f.ln()).abs() < 1e-10);
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        Rng::new(3).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}

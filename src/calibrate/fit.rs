//! Ordinary least squares with standard errors and 95 % confidence intervals, for fitting cost
//! models such as `time = a + round_trips x RTT + bytes / bandwidth` to measurements.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A fitted linear model `y = sum_j coef_j x_j`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinearFit {
    /// Names of the features (columns of x).
    pub names: Vec<String>,
    /// Fitted coefficients.
    pub coef: Vec<f64>,
    /// Standard errors of the coefficients.
    pub stderr: Vec<f64>,
    /// 95 % confidence half-widths of the coefficients.
    pub ci95: Vec<f64>,
    /// Root mean square of the residuals.
    pub rmse: f64,
    /// Largest residual relative to its observation.
    pub max_rel_error: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Observations.
    pub n: usize,
}

/// Solves `a x = b` for a small dense system; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let pivot_row = a[col].clone();
        let pivot_b = b[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
                b[r] -= f * pivot_b;
            }
        }
    }
    Some((0..n).map(|i| b[i] / a[i][i]).collect())
}

fn inverse(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut cols = Vec::with_capacity(n);
    for j in 0..n {
        let e: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == j))).collect();
        cols.push(solve(a.to_vec(), e)?);
    }
    Some(
        (0..n)
            .map(|i| (0..n).map(|j| cols[j][i]).collect())
            .collect(),
    )
}

/// Fits `y ~ x` with row weights `w` (each row's residual counts `w` times); residual
/// statistics are reported on the original, unweighted scale.
pub fn weighted_ls(names: &[&str], x: &[Vec<f64>], y: &[f64], w: &[f64]) -> Option<LinearFit> {
    if w.len() != y.len() {
        return None;
    }
    let xw: Vec<Vec<f64>> = x
        .iter()
        .zip(w)
        .map(|(r, w)| r.iter().map(|v| v * w).collect())
        .collect();
    let yw: Vec<f64> = y.iter().zip(w).map(|(y, w)| y * w).collect();
    let mut f = ols(names, &xw, &yw)?;
    let pred = |r: &Vec<f64>| r.iter().zip(&f.coef).map(|(a, b)| a * b).sum::<f64>();
    let resid: Vec<f64> = x.iter().zip(y).map(|(r, yv)| yv - pred(r)).collect();
    let sse: f64 = resid.iter().map(|e| e * e).sum();
    f.rmse = (sse / y.len() as f64).sqrt();
    f.max_rel_error = resid
        .iter()
        .zip(y)
        .map(|(e, yv)| if *yv != 0.0 { (e / yv).abs() } else { 0.0 })
        .fold(0.0, f64::max);
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let sst: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    f.r2 = if sst > 0.0 { 1.0 - sse / sst } else { 1.0 };
    Some(f)
}

/// Fits `y ~ x` minimising relative rather than absolute residuals (each row weighted by
/// `1 / y`), so that a 4 KiB point counts as much as a 32 MiB one.
pub fn relative_ls(names: &[&str], x: &[Vec<f64>], y: &[f64]) -> Option<LinearFit> {
    if y.iter().any(|v| *v <= 0.0) {
        return None;
    }
    let w: Vec<f64> = y.iter().map(|v| 1.0 / v).collect();
    weighted_ls(names, x, y, &w)
}

/// Fits `y ~ x` (rows of features); `None` when there are no more rows than features or the
/// features are collinear.
pub fn ols(names: &[&str], x: &[Vec<f64>], y: &[f64]) -> Option<LinearFit> {
    let (n, k) = (y.len(), names.len());
    if n <= k || x.len() != n || x.iter().any(|r| r.len() != k) {
        return None;
    }
    // Scale columns to unit magnitude so that bytes (1e7) and counts (1) condition well.
    let scale: Vec<f64> = (0..k)
        .map(|j| x.iter().map(|r| r[j].abs()).fold(0.0, f64::max).max(1e-300))
        .collect();
    let xs: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&scale).map(|(v, s)| v / s).collect())
        .collect();
    let xtx: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| xs.iter().map(|r| r[i] * r[j]).sum())
                .collect()
        })
        .collect();
    let xty: Vec<f64> = (0..k)
        .map(|i| xs.iter().zip(y).map(|(r, yv)| r[i] * yv).sum())
        .collect();
    let beta_s = solve(xtx.clone(), xty)?;
    let inv = inverse(&xtx)?;
    let resid: Vec<f64> = xs
        .iter()
        .zip(y)
        .map(|(r, yv)| yv - r.iter().zip(&beta_s).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let sse: f64 = resid.iter().map(|e| e * e).sum();
    let dof = (n - k) as f64;
    let sigma2 = sse / dof;
    let mean_y = y.iter().sum::<f64>() / n as f64;
    let sst: f64 = y.iter().map(|v| (v - mean_y).powi(2)).sum();
    let t = StudentsT::new(0.0, 1.0, dof).ok()?.inverse_cdf(0.975);
    let stderr: Vec<f64> = (0..k)
        .map(|j| (sigma2 * inv[j][j]).max(0.0).sqrt() / scale[j])
        .collect();
    Some(LinearFit {
        names: names.iter().map(|s| s.to_string()).collect(),
        coef: beta_s.iter().zip(&scale).map(|(b, s)| b / s).collect(),
        ci95: stderr.iter().map(|s| s * t).collect(),
        stderr,
        rmse: (sse / n as f64).sqrt(),
        max_rel_error: resid
            .iter()
            .zip(y)
            .map(|(e, yv)| if *yv != 0.0 { (e / yv).abs() } else { 0.0 })
            .fold(0.0, f64::max),
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 1.0 },
        n,
    })
}

impl LinearFit {
    /// The coefficient named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.coef[i])
    }

    /// The 95 % half-width of the coefficient named `name`.
    pub fn ci(&self, name: &str) -> Option<f64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.ci95[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn recovers_known_coefficients_with_honest_intervals() {
        // time = 0.2 ms + 2 x RTT + bytes / 0.5 GB/s, with 1 % noise.
        let mut rng = Rng::new(4);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for rtt in [0.0, 0.01, 0.02, 0.05] {
            for bytes in [4096.0, 1e6, 8e6, 32e6] {
                let t = 2e-4 + 2.0 * rtt + bytes / 0.5e9;
                x.push(vec![1.0, rtt, bytes]);
                y.push(t * (1.0 + 0.01 * rng.std_normal()));
            }
        }
        let f = ols(&["a", "round_trips", "s_per_byte"], &x, &y).unwrap();
        assert!((f.get("round_trips").unwrap() - 2.0).abs() < 0.1, "{f:?}");
        assert!(
            (1.0 / f.get("s_per_byte").unwrap() / 0.5e9 - 1.0).abs() < 0.03,
            "{f:?}"
        );
        // The true value lies within the interval.
        assert!((f.get("round_trips").unwrap() - 2.0).abs() <= f.ci("round_trips").unwrap() * 1.5);
        assert!(f.r2 > 0.99 && f.n == 16);
    }

    #[test]
    fn relative_fit_keeps_small_points_accurate() {
        // 50 us + bytes / 0.4 GB/s with 2 % multiplicative noise over sizes 4 KiB .. 32 MiB: the
        // intercept comes back positive and near 50 us, which plain least squares loses to the
        // largest point's noise.
        let mut rng = Rng::new(11);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            for b in [4096.0, 65536.0, 1048576.0, 8388608.0, 33554432.0] {
                x.push(vec![1.0, b]);
                y.push((50e-6 + b / 0.4e9) * (1.0 + 0.02 * rng.std_normal()));
            }
        }
        let f = relative_ls(&["a", "s_per_byte"], &x, &y).unwrap();
        assert!((f.get("a").unwrap() / 50e-6 - 1.0).abs() < 0.1, "{f:?}");
        assert!(
            (1.0 / f.get("s_per_byte").unwrap() / 0.4e9 - 1.0).abs() < 0.05,
            "{f:?}"
        );
        assert!(f.max_rel_error < 0.1);
    }

    #[test]
    fn refuses_underdetermined_or_collinear_data() {
        assert!(ols(&["a", "b"], &[vec![1.0, 1.0], vec![1.0, 2.0]], &[1.0, 2.0]).is_none());
        let x = vec![vec![1.0, 2.0], vec![2.0, 4.0], vec![3.0, 6.0]];
        assert!(ols(&["a", "b"], &x, &[1.0, 2.0, 3.0]).is_none());
    }
}

//! Nelder-Mead minimisation for the few free parameters a study leaves open. Derivative-free,
//! because each evaluation is a set of simulations; deterministic for a given start.

/// Minimises `f` from `x0` with initial steps `step`; returns (best point, best value,
/// evaluations).
pub fn nelder_mead(
    f: impl Fn(&[f64]) -> f64,
    x0: &[f64],
    step: &[f64],
    max_evals: usize,
    tol: f64,
) -> (Vec<f64>, f64, usize) {
    let n = x0.len();
    let evals = std::cell::Cell::new(0usize);
    let eval = |x: &[f64]| {
        evals.set(evals.get() + 1);
        let v = f(x);
        if v.is_finite() { v } else { f64::INFINITY }
    };
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((x0.to_vec(), eval(x0)));
    for i in 0..n {
        let mut x = x0.to_vec();
        x[i] += step[i];
        let v = eval(&x);
        simplex.push((x, v));
    }
    while evals.get() < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        if (worst - best).abs() <= tol * (best.abs() + tol) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|(x, _)| x[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (simplex[n].0[j] - centroid[j]))
                .collect()
        };
        let xr = along(-1.0);
        let fr = eval(&xr);
        if fr < simplex[0].1 {
            let xe = along(-2.0);
            let fe = eval(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let (xc, fc) = if fr < simplex[n].1 {
                let x = along(-0.5);
                let v = eval(&x);
                (x, v)
            } else {
                let x = along(0.5);
                let v = eval(&x);
                (x, v)
            };
            if fc < simplex[n].1.min(fr) {
                simplex[n] = (xc, fc);
            } else {
                // Shrink towards the best point.
                let b = simplex[0].0.clone();
                for item in simplex.iter_mut().skip(1) {
                    let x: Vec<f64> = item
                        .0
                        .iter()
                        .zip(&b)
                        .map(|(xi, bi)| bi + 0.5 * (xi - bi))
                        .collect();
                    let v = eval(&x);
                    *item = (x, v);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (x, v) = simplex.swap_remove(0);
    (x, v, evals.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_shifted_bowl_and_rosenbrock() {
        let (x, v, _) = nelder_mead(
            |x| (x[0] - 3.0).powi(2) + 10.0 * (x[1] + 1.0).powi(2),
            &[0.0, 0.0],
            &[1.0, 1.0],
            500,
            1e-12,
        );
        assert!(
            (x[0] - 3.0).abs() < 1e-3 && (x[1] + 1.0).abs() < 1e-3 && v < 1e-6,
            "{x:?}"
        );
        let rosen = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let (x, _, evals) = nelder_mead(rosen, &[-1.2, 1.0], &[0.5, 0.5], 2000, 1e-14);
        assert!(
            (x[0] - 1.0).abs() < 1e-2 && (x[1] - 1.0).abs() < 2e-2,
            "{x:?}"
        );
        assert!(evals <= 2000);
    }
}

//! Ridge regression, the simple learned baseline of the alignment model.

/// A linear model `w . x + b` fitted by ridge regression (the bias is not penalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    /// Weights.
    pub w: Vec<f64>,
    /// Intercept.
    pub b: f64,
}

impl Ridge {
    /// Fits on rows `x` and targets `y` with penalty `lambda` by solving the normal
    /// equations (centred data, so the intercept is the target mean adjusted for the
    /// feature means). `None` when there is no data.
    pub fn fit(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Option<Ridge> {
        let n = x.len();
        let d = x.first()?.len();
        if n == 0 || y.len() != n {
            return None;
        }
        let mx: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let my = y.iter().sum::<f64>() / n as f64;
        let mut a = vec![0.0; d * d];
        let mut rhs = vec![0.0; d];
        for (r, &t) in x.iter().zip(y) {
            let c: Vec<f64> = r.iter().zip(&mx).map(|(v, m)| v - m).collect();
            for i in 0..d {
                rhs[i] += c[i] * (t - my);
                for j in i..d {
                    a[i * d + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                a[i * d + j] = a[j * d + i];
            }
            a[i * d + i] += lambda;
        }
        let w = solve_spd(&mut a, &mut rhs, d)?;
        let b = my - w.iter().zip(&mx).map(|(w, m)| w * m).sum::<f64>();
        Some(Ridge { w, b })
    }

    /// The prediction for one row.
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.b + self.w.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }
}

/// Solves `A w = r` for a symmetric positive definite `A` (Cholesky); `None` if it is not.
fn solve_spd(a: &mut [f64], r: &mut [f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 {
            return None;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    for i in 0..d {
        let mut s = r[i];
        for k in 0..i {
            s -= a[i * d + k] * r[k];
        }
        r[i] = s / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut s = r[i];
        for k in i + 1..d {
            s -= a[k * d + i] * r[k];
        }
        r[i] = s / a[i * d + i];
    }
    Some(r.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_function() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![i as f64 * 0.1, ((i * 7) % 11) as f64])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 2.0 * r[0] - 0.5 * r[1] + 3.0).collect();
        let m = Ridge::fit(&x, &y, 1e-9).unwrap();
        assert!(
            (m.w[0] - 2.0).abs() < 1e-6 && (m.w[1] + 0.5).abs() < 1e-6 && (m.b - 3.0).abs() < 1e-6
        );
        assert!((m.predict(&[1.0, 1.0]) - 4.5).abs() < 1e-6);
        // A strong penalty shrinks the weights towards the mean prediction.
        let s = Ridge::fit(&x, &y, 1e9).unwrap();
        assert!(s.w.iter().all(|w| w.abs() < 1e-3));
        assert!(Ridge::fit(&[], &[], 1.0).is_none());
    }
}

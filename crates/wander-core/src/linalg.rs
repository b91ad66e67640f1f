//! Small dense linear algebra for the taxonomy's behavioural embedding and the simulator's
//! low-rank world: sparse-dense products, Gram-Schmidt, and the Jacobi eigen-solver for small
//! symmetric matrices. It lives at the bottom of the stack so that neither needs the other
//! (the simulator no longer pulls in the taxonomy and its BERT dependencies).

/// A sparse matrix in row form: `rows[i]` lists `(column, value)`.
pub type Sparse = Vec<Vec<(u32, f32)>>;

/// `A X` for sparse `A` (n x n) and dense column-major `X` (n x k, `x[c * n + r]`).
///
/// Each output entry is summed over its row's entries in their stored order, exactly as a
/// plain triple loop would, so the result is bit for bit the same on any number of threads;
/// the work reads `X` row-major (one cache line per nonzero instead of `k` far apart) and
/// splits the rows over every core. At 200k items and tens of millions of nonzeros this
/// product was most of the taxonomy stage.
pub fn sparse_mul(a: &Sparse, x: &[f64], k: usize) -> Vec<f64> {
    let n = a.len();
    let mut xt = vec![0.0; n * k];
    for j in 0..k {
        for r in 0..n {
            xt[r * k + j] = x[j * n + r];
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n / 256)
        .max(1);
    let chunk = n.div_ceil(threads).max(1);
    let rows_of = |rows: std::ops::Range<usize>| -> Vec<f64> {
        let mut acc = vec![0.0; rows.len() * k];
        for (i, row) in a[rows].iter().enumerate() {
            let out = &mut acc[i * k..(i + 1) * k];
            for &(c, v) in row {
                let v = v as f64;
                let xr = &xt[c as usize * k..(c as usize + 1) * k];
                for (o, &xv) in out.iter_mut().zip(xr) {
                    *o += v * xv;
                }
            }
        }
        acc
    };
    let parts: Vec<(usize, Vec<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let rows = start..(start + chunk).min(n);
                let rows_of = &rows_of;
                scope.spawn(move || (start, rows_of(rows)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a sparse product worker panicked"))
            .collect()
    });
    let mut out = vec![0.0; n * k];
    for (start, acc) in parts {
        for (i, row) in acc.chunks_exact(k.max(1)).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                out[j * n + start + i] = v;
            }
        }
    }
    out
}

/// Orthonormalises the `k` columns of column-major `x` (n x k) in place (modified
/// Gram-Schmidt; a column that vanishes is left at zero).
pub fn orthonormalize(x: &mut [f64], n: usize, k: usize) {
    for j in 0..k {
        for p in 0..j {
            let dot: f64 = (0..n).map(|r| x[j * n + r] * x[p * n + r]).sum();
            for r in 0..n {
                x[j * n + r] -= dot * x[p * n + r];
            }
        }
        let norm: f64 = (0..n)
            .map(|r| x[j * n + r] * x[j * n + r])
            .sum::<f64>()
            .sqrt();
        if norm > 1e-12 {
            for r in 0..n {
                x[j * n + r] /= norm;
            }
        } else {
            for r in 0..n {
                x[j * n + r] = 0.0;
            }
        }
    }
}

/// Eigen-decomposition of a symmetric `k x k` matrix (row-major) by cyclic Jacobi
/// rotations: eigenvalues (descending) and matching eigenvectors as columns (row-major).
pub fn symmetric_eigen(m: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum();
        if off < 1e-20 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let arp = a[r * k + p];
                    let arq = a[r * k + q];
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let apr = a[p * k + r];
                    let aqr = a[q * k + r];
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let vrp = v[r * k + p];
                    let vrq = v[r * k + q];
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&x, &y| a[y * k + y].total_cmp(&a[x * k + x]).then(x.cmp(&y)));
    let values = order.iter().map(|&i| a[i * k + i]).collect();
    let mut vectors = vec![0.0; k * k];
    for (new, &old) in order.iter().enumerate() {
        for r in 0..k {
            vectors[r * k + new] = v[r * k + old];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparse_product_is_the_plain_triple_loop_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        let (n, k) = (1500, 7);
        let a: Sparse = (0..n)
            .map(|_| {
                (0..(rng.below(9)))
                    .map(|_| (rng.below(n) as u32, rng.normal() as f32))
                    .collect()
            })
            .collect();
        let x: Vec<f64> = (0..n * k).map(|_| rng.normal()).collect();
        let mut want = vec![0.0; n * k];
        for (r, row) in a.iter().enumerate() {
            for &(c, v) in row {
                for j in 0..k {
                    want[j * n + r] += v as f64 * x[j * n + c as usize];
                }
            }
        }
        let got = sparse_mul(&a, &x, k);
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits()));
    }

    #[test]
    fn jacobi_recovers_a_known_spectrum() {
        // [[2,1],[1,2]] has eigenvalues 3 and 1.
        let (vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-10 && (vals[1] - 1.0).abs() < 1e-10);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vecs[0].abs() - s).abs() < 1e-10 && (vecs[2].abs() - s).abs() < 1e-10);
    }

    #[test]
    fn gram_schmidt_gives_orthonormal_columns() {
        let mut x = vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        orthonormalize(&mut x, 3, 2);
        let dot: f64 = (0..3).map(|r| x[r] * x[3 + r]).sum();
        let n0: f64 = (0..3).map(|r| x[r] * x[r]).sum();
        assert!(dot.abs() < 1e-12 && (n0 - 1.0).abs() < 1e-12);
    }
}

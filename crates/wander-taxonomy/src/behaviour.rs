//! Behavioural item embeddings: positive PMI over a co-consumption window, factorised by a
//! randomized truncated SVD (Halko, Martinsson and Tropp, SIAM Review 2011, algorithm 4.4).

use std::collections::HashMap;

use wander_core::rng::Rng;
use wander_data::{Dataset, Split};

use crate::linalg::{orthonormalize, sparse_mul, symmetric_eigen, Sparse};

/// Co-consumption counts: how often items `a != b` were consumed positively within `window`
/// positions of each other in a user's training sequence, counted in both directions.
pub fn co_consumption(ds: &Dataset, window: usize) -> HashMap<(u32, u32), f64> {
    let it = &ds.interactions;
    let mut pairs: HashMap<(u32, u32), f64> = HashMap::new();
    let mut start = 0;
    while start < it.len() {
        let mut end = start;
        while end < it.len() && it.user[end] == it.user[start] {
            end += 1;
        }
        let seq: Vec<u32> = (start..end)
            .filter(|&k| it.positive[k] && it.split[k] == Split::Train)
            .map(|k| it.item[k])
            .collect();
        for i in 0..seq.len() {
            for j in i + 1..(i + 1 + window).min(seq.len()) {
                if seq[i] != seq[j] {
                    *pairs.entry((seq[i], seq[j])).or_default() += 1.0;
                    *pairs.entry((seq[j], seq[i])).or_default() += 1.0;
                }
            }
        }
        start = end;
    }
    pairs
}

/// PPMI matrix of items that the same user consumed positively within `window` positions of
/// each other, in the training period.
pub fn ppmi(ds: &Dataset, window: usize) -> Sparse {
    ppmi_from_counts(ds.items.len(), &co_consumption(ds, window))
}

/// PPMI matrix of `n` items from co-consumption counts.
pub fn ppmi_from_counts(n: usize, pairs: &HashMap<(u32, u32), f64>) -> Sparse {
    let mut row_sum = vec![0.0f64; n];
    let mut total = 0.0;
    for (&(a, _), &c) in pairs {
        row_sum[a as usize] += c;
        total += c;
    }
    let mut rows: Sparse = vec![Vec::new(); n];
    for (&(a, b), &c) in pairs {
        let pmi = (c * total / (row_sum[a as usize] * row_sum[b as usize])).ln();
        if pmi > 0.0 {
            rows[a as usize].push((b, pmi as f32));
        }
    }
    for r in &mut rows {
        r.sort_by_key(|e| e.0);
    }
    rows
}

/// Rank-`dim` embeddings `U sqrt(S)` of the symmetric PPMI matrix, one unit vector per item
/// (zero for items without co-consumption).
pub fn embeddings(a: &Sparse, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let n = a.len();
    let l = (dim + 10).min(n);
    let mut rng = Rng::new(seed);
    let mut y: Vec<f64> = (0..n * l).map(|_| rng.normal()).collect();
    y = sparse_mul(a, &y, l);
    orthonormalize(&mut y, n, l);
    for _ in 0..3 {
        y = sparse_mul(a, &y, l);
        orthonormalize(&mut y, n, l);
    }
    // B = Q^T A Q is l x l and symmetric because A is; its eigenvectors rotate Q into U.
    let aq = sparse_mul(a, &y, l);
    let mut b = vec![0.0; l * l];
    for i in 0..l {
        for j in 0..l {
            b[i * l + j] = (0..n).map(|r| y[i * n + r] * aq[j * n + r]).sum();
        }
    }
    for i in 0..l {
        for j in 0..i {
            let m = 0.5 * (b[i * l + j] + b[j * l + i]);
            b[i * l + j] = m;
            b[j * l + i] = m;
        }
    }
    let (values, vectors) = symmetric_eigen(&b, l);
    let k = dim.min(l);
    (0..n)
        .map(|r| {
            let mut v: Vec<f32> = (0..k)
                .map(|c| {
                    let u: f64 = (0..l).map(|j| y[j * n + r] * vectors[j * l + c]).sum();
                    (u * values[c].max(0.0).sqrt()) as f32
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}

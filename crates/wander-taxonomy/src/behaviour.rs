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
    let mut counts = CoConsumption::new(window);
    for k in 0..it.len() {
        counts.push(it.user[k], it.item[k], it.positive[k], it.split[k]);
    }
    counts.finish()
}

/// [`co_consumption`] one interaction at a time, for a log streamed in its stored order
/// (grouped by user, in time order within a user): it holds one user's training sequence
/// and the counts, not the log. A user met again after another's interactions starts a new
/// sequence, as in [`co_consumption`].
#[derive(Debug, Clone)]
pub struct CoConsumption {
    window: usize,
    user: Option<u32>,
    /// The current user's positive training items, in order.
    sequence: Vec<u32>,
    pairs: HashMap<(u32, u32), f64>,
}

impl CoConsumption {
    /// Counts within `window` positions.
    pub fn new(window: usize) -> Self {
        CoConsumption {
            window,
            user: None,
            sequence: Vec::new(),
            pairs: HashMap::new(),
        }
    }

    /// Feeds the next interaction.
    pub fn push(&mut self, user: u32, item: u32, positive: bool, split: Split) {
        if self.user != Some(user) {
            self.count_sequence();
            self.user = Some(user);
        }
        if positive && split == Split::Train {
            self.sequence.push(item);
        }
    }

    fn count_sequence(&mut self) {
        let seq = &self.sequence;
        for i in 0..seq.len() {
            for j in i + 1..(i + 1 + self.window).min(seq.len()) {
                if seq[i] != seq[j] {
                    *self.pairs.entry((seq[i], seq[j])).or_default() += 1.0;
                    *self.pairs.entry((seq[j], seq[i])).or_default() += 1.0;
                }
            }
        }
        self.sequence.clear();
    }

    /// The counts.
    pub fn finish(mut self) -> HashMap<(u32, u32), f64> {
        self.count_sequence();
        self.pairs
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts before they streamed: each user's run gathered, then its windows counted.
    fn by_runs(ds: &Dataset, window: usize) -> HashMap<(u32, u32), f64> {
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

    proptest::proptest! {
        #[test]
        fn streamed_counts_equal_the_per_user_runs(
            log in proptest::collection::vec((0u32..4, 0u32..7, proptest::bool::weighted(0.7), 0u8..3), 0..150),
            window in 1usize..5,
        ) {
            let mut it = wander_data::Interactions::default();
            for &(u, i, p, s) in &log {
                it.user.push(u);
                it.item.push(i);
                it.positive.push(p);
                it.split.push(Split::from_u8(s).unwrap());
            }
            let ds = Dataset { interactions: it, ..Dataset::default() };
            proptest::prop_assert_eq!(co_consumption(&ds, window), by_runs(&ds, window));
        }
    }
}

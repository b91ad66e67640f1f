//! Cluster-restricted retrieval: the best items inside the planner's chosen clusters for a
//! user vector, never an item the user has seen and never one outside those clusters.
//!
//! The exact scan scores every item of the target clusters. The approximate index (for
//! catalogues of millions) scores int8-quantised embeddings first and rescores the best
//! `rerank x n` exactly; its recall against the exact scan is reported by `eval items`.

use serde::Serialize;

/// One retrieved item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Model item id (dataset index + 1).
    pub item: u32,
    /// Dot-product score.
    pub score: f32,
}

/// How candidates inside the clusters are scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Index {
    /// Every item exactly.
    Exact,
    /// int8 scores first, the best `rerank x n` rescored exactly.
    Quantized {
        /// Candidates rescored per wanted item.
        rerank: usize,
    },
}

/// Item embeddings grouped by cluster.
#[derive(Debug, Clone)]
pub struct Retriever {
    dim: usize,
    item: Vec<f32>,
    by_cluster: Vec<Vec<u32>>,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Retriever {
    /// From item embeddings `[vocab, dim]` (row 0 padding) and each model id's cluster
    /// (`cluster_of[id]`, ignored for id 0).
    pub fn new(item: Vec<f32>, dim: usize, cluster_of: &[u32], n_clusters: usize) -> Self {
        let mut by_cluster = vec![Vec::new(); n_clusters];
        for (id, &c) in cluster_of.iter().enumerate().skip(1) {
            if (c as usize) < n_clusters {
                by_cluster[c as usize].push(id as u32);
            }
        }
        let mut codes = Vec::with_capacity(item.len());
        let mut scales = Vec::with_capacity(item.len() / dim.max(1));
        for row in item.chunks(dim.max(1)) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales.push(scale);
            codes.extend(
                row.iter()
                    .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
            );
        }
        Retriever {
            dim,
            item,
            by_cluster,
            codes,
            scales,
        }
    }

    /// Items of a cluster (model ids).
    pub fn cluster_items(&self, cluster: u32) -> &[u32] {
        self.by_cluster
            .get(cluster as usize)
            .map_or(&[], Vec::as_slice)
    }

    fn exact(&self, user: &[f32], id: u32) -> f32 {
        let d = self.dim;
        self.item[id as usize * d..(id as usize + 1) * d]
            .iter()
            .zip(user)
            .map(|(a, b)| a * b)
            .sum()
    }

    /// [`Self::exact`] for many items, with the same bits: each item's dot product is still
    /// one sum in order, but eight items' sums advance side by side instead of one chain of
    /// dependent adds at a time.
    fn exact_many(&self, user: &[f32], ids: &[u32]) -> Vec<f32> {
        const GROUP: usize = 8;
        let d = self.dim;
        let user = &user[..d];
        let mut out = Vec::with_capacity(ids.len());
        let mut groups = ids.chunks_exact(GROUP);
        for group in &mut groups {
            let rows: [&[f32]; GROUP] =
                std::array::from_fn(|j| &self.item[group[j] as usize * d..][..d]);
            // As `.sum()` would: from -0.0, along the embedding in order.
            let mut acc = [-0.0f32; GROUP];
            for (c, &u) in user.iter().enumerate() {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a += row[c] * u;
                }
            }
            out.extend_from_slice(&acc);
        }
        out.extend(groups.remainder().iter().map(|&id| self.exact(user, id)));
        out
    }

    fn approx(&self, user_q: &[i32], id: u32) -> i32 {
        let d = self.dim;
        self.codes[id as usize * d..(id as usize + 1) * d]
            .iter()
            .zip(user_q)
            .map(|(&a, &b)| a as i32 * b)
            .sum()
    }

    /// The `n` best items of `clusters` for `user`, excluding `seen` (sorted model ids);
    /// best first, ties by lower id.
    pub fn top_n(
        &self,
        user: &[f32],
        clusters: &[u32],
        seen: &[u32],
        n: usize,
        index: Index,
    ) -> Vec<Hit> {
        let mut cand: Vec<u32> = Vec::new();
        for (i, &c) in clusters.iter().enumerate() {
            if clusters[..i].contains(&c) {
                continue;
            }
            cand.extend(
                self.cluster_items(c)
                    .iter()
                    .copied()
                    .filter(|id| seen.binary_search(id).is_err()),
            );
        }
        let mut scored: Vec<Hit> = match index {
            Index::Exact => cand
                .iter()
                .zip(self.exact_many(user, &cand))
                .map(|(&item, score)| Hit { item, score })
                .collect(),
            Index::Quantized { rerank } => {
                let umax = user.iter().fold(0f32, |m, v| m.max(v.abs()));
                let us = if umax > 0.0 { umax / 127.0 } else { 1.0 };
                let uq: Vec<i32> = user.iter().map(|v| (v / us).round() as i32).collect();
                let mut rough: Vec<(f32, u32)> = cand
                    .iter()
                    .map(|&id| (self.approx(&uq, id) as f32 * self.scales[id as usize], id))
                    .collect();
                let keep = (rerank.max(1) * n).min(rough.len());
                if keep < rough.len() {
                    rough.select_nth_unstable_by(keep, |a, b| {
                        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                    });
                    rough.truncate(keep);
                }
                rough
                    .iter()
                    .map(|&(_, id)| Hit {
                        item: id,
                        score: self.exact(user, id),
                    })
                    .collect()
            }
        };
        let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item));
        if n < scored.len() {
            scored.select_nth_unstable_by(n, order);
            scored.truncate(n);
        }
        scored.sort_by(order);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup(n_items: usize, dim: usize, n_clusters: usize, seed: u64) -> (Retriever, Vec<u32>) {
        let mut rng = wander_core::rng::Rng::new(seed);
        let item: Vec<f32> = (0..(n_items + 1) * dim)
            .map(|_| rng.normal() as f32)
            .collect();
        let cluster_of: Vec<u32> = (0..=n_items)
            .map(|_| rng.below(n_clusters) as u32)
            .collect();
        (
            Retriever::new(item, dim, &cluster_of, n_clusters),
            cluster_of,
        )
    }

    proptest! {
        /// Never an item outside the target clusters, never a seen one, sorted, at most n.
        #[test]
        fn restricted_and_unseen(seed in 0u64..500, n in 1usize..20, k in 1usize..4, quant in proptest::bool::ANY) {
            let (r, cluster_of) = setup(200, 8, 10, seed);
            let mut rng = wander_core::rng::Rng::new(seed ^ 9);
            let clusters: Vec<u32> = (0..k).map(|_| rng.below(10) as u32).collect();
            let mut seen: Vec<u32> = (0..30).map(|_| 1 + rng.below(200) as u32).collect();
            seen.sort_unstable();
            seen.dedup();
            let user: Vec<f32> = (0..8).map(|_| rng.normal() as f32).collect();
            let index = if quant { Index::Quantized { rerank: 2 } } else { Index::Exact };
            let hits = r.top_n(&user, &clusters, &seen, n, index);
            prop_assert!(hits.len() <= n);
            for h in &hits {
                prop_assert!(clusters.contains(&cluster_of[h.item as usize]));
                prop_assert!(seen.binary_search(&h.item).is_err());
                prop_assert!(h.item != 0);
            }
            for w in hits.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            if !quant {
                // Exact: nothing eligible outside the result scores higher than its last.
                let avail: usize = clusters.iter().collect::<std::collections::BTreeSet<_>>().iter().map(|&&c| r.cluster_items(c).iter().filter(|id| seen.binary_search(id).is_err()).count()).sum();
                prop_assert_eq!(hits.len(), n.min(avail));
            }
        }
    }

    #[test]
    fn scoring_many_items_gives_each_items_own_bits() {
        let (r, _) = setup(300, 24, 3, 5);
        let mut rng = wander_core::rng::Rng::new(6);
        let user: Vec<f32> = (0..24).map(|_| rng.normal() as f32).collect();
        for n in [0usize, 1, 7, 8, 9, 17, 300] {
            let ids: Vec<u32> = (0..n).map(|_| 1 + rng.below(300) as u32).collect();
            let many = r.exact_many(&user, &ids);
            assert_eq!(many.len(), n);
            for (&id, s) in ids.iter().zip(&many) {
                assert_eq!(s.to_bits(), r.exact(&user, id).to_bits(), "item {id}");
            }
        }
    }

    #[test]
    fn quantized_recall_is_high() {
        let (r, _) = setup(2000, 32, 4, 1);
        let mut rng = wander_core::rng::Rng::new(2);
        let mut found = 0;
        let mut total = 0;
        for _ in 0..50 {
            let user: Vec<f32> = (0..32).map(|_| rng.normal() as f32).collect();
            let exact = r.top_n(&user, &[0, 1], &[], 10, Index::Exact);
            let approx = r.top_n(&user, &[0, 1], &[], 10, Index::Quantized { rerank: 4 });
            total += exact.len();
            found += exact
                .iter()
                .filter(|h| approx.iter().any(|a| a.item == h.item))
                .count();
        }
        assert!(found as f64 / total as f64 > 0.95, "{found}/{total}");
    }
}

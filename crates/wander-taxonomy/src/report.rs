//! The taxonomy report: sizes, coherence against a random assignment, genre purity, and
//! each cluster's description with its most popular items.

use serde::Serialize;
use wander_core::rng::Rng;
use wander_data::{Dataset, Split};

use crate::Taxonomy;

/// Figures of a taxonomy (the `taxonomy` stage's `--json`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TaxonomyReport {
    /// Number of coarse clusters.
    pub coarse_clusters: usize,
    /// Number of fine clusters.
    pub fine_clusters: usize,
    /// Fine cluster sizes: min, median, max.
    pub fine_size_min_median_max: [usize; 3],
    /// Fine cluster size histogram: counts of clusters with 1-4, 5-9, 10-19, 20-49, 50-99, 100+ items.
    pub fine_size_histogram: [usize; 6],
    /// Mean intra-cluster cosine over mean inter-cluster cosine of the fine level, on the
    /// text embeddings.
    pub coherence_text: f64,
    /// The same ratio for a random assignment with the same sizes.
    pub coherence_text_random: f64,
    /// The same ratio on the mixed (clustering) embeddings.
    pub coherence_mixed: f64,
    /// ... and for a random assignment.
    pub coherence_mixed_random: f64,
    /// coherence_text / coherence_text_random.
    pub coherence_text_lift: f64,
    /// Size-weighted mean over fine clusters of the share of members that carry the
    /// cluster's most common genre (1 = every member shares a genre).
    pub genre_purity: f64,
    /// The same for a random assignment with the same sizes.
    pub genre_purity_random: f64,
    /// Whether every fine description is unique (after normalisation) and parses back.
    pub descriptions_unique: bool,
    /// Share of the release year's variance that lies between fine clusters (eta squared;
    /// items without a year left out): how much the clusters sort items by era.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era_share: Option<f64>,
    /// The same for a random assignment with the same sizes (about (k - 1) / (n - 1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era_share_random: Option<f64>,
    /// Share of the variance of log(1 + training interactions) between fine clusters: how
    /// much the clusters sort items by popularity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_share: Option<f64>,
    /// The same for a random assignment with the same sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_share_random: Option<f64>,
}

/// Share of the variance of `values` that lies between the clusters of `assign` (eta
/// squared: between-cluster sum of squares over the total), over the items that have a
/// value; `None` when fewer than two have one or they do not vary.
pub fn between_cluster_share(values: &[Option<f64>], assign: &[u32], k: usize) -> Option<f64> {
    let mut sum = vec![0.0f64; k];
    let mut count = vec![0.0f64; k];
    let (mut total, mut n) = (0.0, 0.0);
    for (v, &c) in values.iter().zip(assign) {
        if let (Some(v), Some(s)) = (v, sum.get_mut(c as usize)) {
            *s += v;
            count[c as usize] += 1.0;
            total += v;
            n += 1.0;
        }
    }
    if n < 2.0 {
        return None;
    }
    let mean = total / n;
    let ss_total: f64 = values.iter().flatten().map(|v| (v - mean).powi(2)).sum();
    if !(ss_total > 0.0) {
        return None;
    }
    let ss_between: f64 = sum
        .iter()
        .zip(&count)
        .filter(|(_, &c)| c > 0.0)
        .map(|(s, &c)| c * (s / c - mean).powi(2))
        .sum();
    Some(ss_between / ss_total)
}

/// Each item's interactions in the training period: the popularity the report weighs
/// clusters by (computed in memory here; an engine's `GROUP BY item` gives the same).
pub fn train_interactions(ds: &Dataset) -> Vec<u64> {
    let mut pop = vec![0u64; ds.items.len()];
    for (i, &s) in ds.interactions.item.iter().zip(&ds.interactions.split) {
        if s == Split::Train {
            pop[*i as usize] += 1;
        }
    }
    pop
}

/// Release years and log(1 + training interactions) of the items, for
/// [`between_cluster_share`].
pub fn era_and_popularity(
    items: &[wander_data::Item],
    train_interactions: &[u64],
) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
    (
        items.iter().map(|it| it.year.map(f64::from)).collect(),
        train_interactions
            .iter()
            .map(|&p| Some((p as f64).ln_1p()))
            .collect(),
    )
}

/// `(intra mean cosine) / (inter mean cosine)` for unit vectors, using
/// `sum_{i,j in C} cos(i, j) = |sum_{i in C} v_i|^2` (O(n d), no pair loop). Meaningful when
/// the mean inter-cluster cosine is clearly positive, as for sentence embeddings; NaN when it
/// is zero.
pub fn coherence(vectors: &[Vec<f32>], assign: &[u32], k: usize) -> f64 {
    let dim = vectors.first().map(|v| v.len()).unwrap_or(0);
    let mut sums = vec![vec![0.0f64; dim]; k];
    let mut counts = vec![0usize; k];
    let mut total = vec![0.0f64; dim];
    for (v, &c) in vectors.iter().zip(assign) {
        counts[c as usize] += 1;
        for d in 0..dim {
            sums[c as usize][d] += v[d] as f64;
            total[d] += v[d] as f64;
        }
    }
    let sq = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>();
    let n = vectors.len() as f64;
    let norms: f64 = vectors
        .iter()
        .map(|v| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>())
        .sum();
    let intra_sum: f64 = sums.iter().map(|s| sq(s)).sum::<f64>() - norms;
    let intra_pairs: f64 = counts
        .iter()
        .map(|&c| (c * c.saturating_sub(1)) as f64)
        .sum();
    let all_sum = sq(&total) - norms;
    let all_pairs = n * (n - 1.0);
    let intra = intra_sum / intra_pairs.max(1.0);
    let inter = (all_sum - intra_sum) / (all_pairs - intra_pairs).max(1.0);
    if inter.abs() < 1e-12 {
        f64::NAN
    } else {
        intra / inter
    }
}

fn purity(ds: &Dataset, assign: &[u32], k: usize) -> f64 {
    let mut genre_counts: Vec<std::collections::BTreeMap<&str, usize>> =
        vec![Default::default(); k];
    let mut sizes = vec![0usize; k];
    for (item, &c) in ds.items.iter().zip(assign) {
        sizes[c as usize] += 1;
        for g in &item.genres {
            *genre_counts[c as usize].entry(g.as_str()).or_default() += 1;
        }
    }
    let n: usize = sizes.iter().sum();
    genre_counts
        .iter()
        .map(|m| m.values().copied().max().unwrap_or(0))
        .sum::<usize>() as f64
        / n.max(1) as f64
}

fn shuffled(assign: &[u32], seed: u64) -> Vec<u32> {
    let mut a = assign.to_vec();
    Rng::new(seed).shuffle(&mut a);
    a
}

/// How well descriptions name their clusters: each description's embedding is compared
/// (cosine) with every cluster's mean item embedding; a description retrieves its cluster
/// when its own cluster's is the most similar.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DescriptionRetrieval {
    /// Share of clusters whose description retrieves them.
    pub accuracy: f64,
    /// Mean over clusters of the own cluster's rank among all (1 = retrieved).
    pub mean_rank: f64,
    /// Clusters.
    pub clusters: usize,
}

/// [`DescriptionRetrieval`] of `descriptions` (one embedding per cluster) against the
/// clusters of `assign` over the items' `text` embeddings. A cluster without items ranks
/// last.
pub fn description_retrieval(
    descriptions: &[Vec<f32>],
    text: &[Vec<f32>],
    assign: &[u32],
) -> DescriptionRetrieval {
    let k = descriptions.len();
    let d = text.first().map_or(0, Vec::len);
    let mut centroids = vec![vec![0.0f64; d]; k];
    for (v, &c) in text.iter().zip(assign) {
        if let Some(cen) = centroids.get_mut(c as usize) {
            for (s, x) in cen.iter_mut().zip(v) {
                *s += f64::from(*x);
            }
        }
    }
    let unit = |v: Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            v.into_iter().map(|x| x / n).collect()
        } else {
            v
        }
    };
    let centroids: Vec<Vec<f64>> = centroids.into_iter().map(unit).collect();
    let mut hits = 0usize;
    let mut rank_sum = 0.0;
    for (c, q) in descriptions.iter().enumerate() {
        let q = unit(q.iter().map(|&x| f64::from(x)).collect());
        let sims: Vec<f64> = centroids
            .iter()
            .map(|cen| {
                if cen.iter().all(|&x| x == 0.0) {
                    f64::NEG_INFINITY
                } else {
                    cen.iter().zip(&q).map(|(a, b)| a * b).sum()
                }
            })
            .collect();
        // Ties count against the cluster: a description as near to another cluster does not
        // name its own.
        let rank = 1 + sims
            .iter()
            .enumerate()
            .filter(|&(o, s)| o != c && *s >= sims[c])
            .count();
        hits += usize::from(rank == 1);
        rank_sum += rank as f64;
    }
    DescriptionRetrieval {
        accuracy: hits as f64 / k.max(1) as f64,
        mean_rank: rank_sum / k.max(1) as f64,
        clusters: k,
    }
}

/// Computes the report and renders it as Markdown. Of the log it reads only each item's
/// training interactions (`train_interactions`, see [`train_interactions`]); `ds` gives the
/// catalogue.
///
/// # Panics
/// If `train_interactions` does not have one entry per item of `ds`.
pub fn report(
    ds: &Dataset,
    train_interactions: &[u64],
    tax: &Taxonomy,
    text: &[Vec<f32>],
    mixed: &[Vec<f32>],
    seed: u64,
) -> (TaxonomyReport, String) {
    let k = tax.fine.len();
    let mut sizes: Vec<usize> = tax.fine.iter().map(|c| c.size).collect();
    sizes.sort_unstable();
    let mut hist = [0usize; 6];
    for &s in &sizes {
        hist[match s {
            0..=4 => 0,
            5..=9 => 1,
            10..=19 => 2,
            20..=49 => 3,
            50..=99 => 4,
            _ => 5,
        }] += 1;
    }
    let random = shuffled(&tax.item_fine, seed ^ 0x5eed);
    let (ct, ctr) = (
        coherence(text, &tax.item_fine, k),
        coherence(text, &random, k),
    );
    let index = tax.index();
    let unique = tax
        .planner_clusters()
        .iter()
        .all(|c| index.parse(&c.description) == Some(c.id))
        && tax
            .fine
            .iter()
            .map(|c| crate::describe::normalize(&c.description))
            .collect::<std::collections::HashSet<_>>()
            .len()
            == k;
    let r = TaxonomyReport {
        coarse_clusters: tax.coarse.len(),
        fine_clusters: k,
        fine_size_min_median_max: [sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1]],
        fine_size_histogram: hist,
        coherence_text: ct,
        coherence_text_random: ctr,
        coherence_mixed: coherence(mixed, &tax.item_fine, k),
        coherence_mixed_random: coherence(mixed, &random, k),
        coherence_text_lift: ct / ctr,
        genre_purity: purity(ds, &tax.item_fine, k),
        genre_purity_random: purity(ds, &random, k),
        descriptions_unique: unique,
        era_share: None,
        era_share_random: None,
        popularity_share: None,
        popularity_share_random: None,
    };
    assert_eq!(
        train_interactions.len(),
        ds.items.len(),
        "one training-interaction count per item"
    );
    let (years, popularity) = era_and_popularity(&ds.items, train_interactions);
    let mut r = r;
    r.era_share = between_cluster_share(&years, &tax.item_fine, k);
    r.era_share_random = between_cluster_share(&years, &random, k);
    r.popularity_share = between_cluster_share(&popularity, &tax.item_fine, k);
    r.popularity_share_random = between_cluster_share(&popularity, &random, k);
    let pop = train_interactions;
    let mut md = String::new();
    md.push_str("# Taxonomy report\n\n");
    md.push_str(&format!(
        "{} coarse and {} fine clusters over {} items; planner level: {}.\n\n",
        r.coarse_clusters,
        k,
        ds.items.len(),
        tax.planner_level
    ));
    md.push_str("| figure | clusters | random assignment, same sizes |\n|---|---|---|\n");
    md.push_str(&format!(
        "| coherence (intra / inter mean cosine), text embeddings | {:.3} | {:.3} |\n",
        r.coherence_text, r.coherence_text_random
    ));
    md.push_str(&format!(
        "| coherence, mixed embeddings | {:.3} | {:.3} |\n",
        r.coherence_mixed, r.coherence_mixed_random
    ));
    md.push_str(&format!(
        "| genre purity | {:.3} | {:.3} |\n",
        r.genre_purity, r.genre_purity_random
    ));
    let share = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    md.push_str(&format!(
        "| era: share of the release year's variance between clusters | {} | {} |\n| popularity: share of log(1 + training interactions) variance between clusters | {} | {} |\n\n",
        share(r.era_share), share(r.era_share_random), share(r.popularity_share), share(r.popularity_share_random)
    ));
    md.push_str(&format!("Fine sizes: min {}, median {}, max {}; histogram (1-4, 5-9, 10-19, 20-49, 50-99, 100+): {:?}.\n\n", r.fine_size_min_median_max[0], r.fine_size_min_median_max[1], r.fine_size_min_median_max[2], hist));
    md.push_str(
        "| fine | coarse | size | description | five most popular items |\n|---|---|---|---|---|\n",
    );
    for c in &tax.fine {
        let mut members: Vec<usize> = (0..ds.items.len())
            .filter(|&i| tax.item_fine[i] == c.id)
            .collect();
        members.sort_by(|&a, &b| pop[b].cmp(&pop[a]).then(a.cmp(&b)));
        let top: Vec<String> = members
            .iter()
            .take(5)
            .map(|&i| ds.items[i].title.replace('|', "/"))
            .collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.id,
            c.parent.unwrap_or(0),
            c.size,
            c.description,
            top.join("; ")
        ));
    }
    (r, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_cluster_share_is_eta_squared() {
        // Cluster means 1 and 3 around a grand mean of 2: between SS 4 of a total SS 8.
        let v = [Some(0.0), Some(2.0), Some(2.0), Some(4.0), None];
        let s = between_cluster_share(&v, &[0, 0, 1, 1, 1], 2).unwrap();
        assert!((s - 4.0 / 8.0).abs() < 1e-12, "{s}");
        assert_eq!(
            between_cluster_share(&[Some(1.0), Some(1.0)], &[0, 1], 2),
            None
        );
        assert_eq!(between_cluster_share(&[Some(1.0), None], &[0, 1], 2), None);
        let perfect = between_cluster_share(&[Some(1.0), Some(1.0), Some(5.0)], &[0, 0, 1], 2);
        assert_eq!(perfect, Some(1.0));
    }

    #[test]
    fn a_description_retrieves_its_cluster_when_its_centroid_is_nearest() {
        // Two clusters along the axes; the third cluster has no items.
        let text = vec![
            vec![1.0, 0.1],
            vec![0.9, 0.0],
            vec![0.0, 1.0],
            vec![0.1, 0.8],
        ];
        let assign = [0, 0, 1, 1];
        let descriptions = vec![vec![1.0, 0.0], vec![1.0, 0.2], vec![0.0, 1.0]];
        let r = description_retrieval(&descriptions, &text, &assign);
        // Cluster 0 retrieved; cluster 1's description is nearer cluster 0 (rank 2); cluster
        // 2 has no items, so nothing retrieves it (rank 3, behind both).
        assert_eq!(r.clusters, 3);
        assert!((r.accuracy - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!((r.mean_rank - 2.0).abs() < 1e-12, "{r:?}");
    }
}

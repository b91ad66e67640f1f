//! The interest-cluster taxonomy: the vocabulary both LLMs of wander speak.
//!
//! Items are embedded from their metadata text (all-MiniLM-L6-v2 in candle) and from how
//! people consume them (PPMI over a co-consumption window, truncated SVD), mixed by
//! `taxonomy.text_weight`, and clustered in two nested levels with seeded k-means++. Each
//! cluster is described by keywords chosen by class-based TF-IDF, unique within its level,
//! and [`describe::DescriptionIndex`] maps a description back to its cluster.
#![deny(missing_docs)]

pub mod assign;
pub mod behaviour;
pub mod describe;
pub mod embed;
pub mod kmeans;
pub use wander_core::linalg;
mod report;

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use serde::{Deserialize, Serialize};
use wander_core::config::{DescribeScheme, TaxonomyConfig};
use wander_core::rng::Rng;
use wander_data::Dataset;

pub use report::{
    between_cluster_share, description_retrieval, era_and_popularity, report, train_interactions,
    DescriptionRetrieval, TaxonomyReport,
};

/// Errors of building or reading a taxonomy.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    /// A model file is missing or unreadable.
    #[error("{}: {message}", path.display())]
    Model {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// Filesystem or artifact error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
    /// Reading the dataset failed.
    #[error(transparent)]
    Data(#[from] wander_data::DataError),
}

/// Result alias for [`TaxonomyError`].
pub type Result<T, E = TaxonomyError> = std::result::Result<T, E>;

/// One interest cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Id within its level (0-based).
    pub id: u32,
    /// `coarse` or `fine`.
    pub level: String,
    /// Coarse parent of a fine cluster.
    pub parent: Option<u32>,
    /// Keywords, best first.
    pub keywords: Vec<String>,
    /// The description the LLMs read and write (keywords joined by ", ").
    pub description: String,
    /// Number of items.
    pub size: usize,
    /// Mean of the members' (mixed) embeddings.
    pub centroid: Vec<f32>,
}

/// A two-level taxonomy and the item-to-cluster maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taxonomy {
    /// Coarse clusters.
    pub coarse: Vec<Cluster>,
    /// Fine clusters, each nested in one coarse cluster.
    pub fine: Vec<Cluster>,
    /// Coarse cluster of each item.
    pub item_coarse: Vec<u32>,
    /// Fine cluster of each item.
    pub item_fine: Vec<u32>,
    /// `coarse` or `fine`: the level the planner uses.
    pub planner_level: wander_core::config::PlannerLevel,
}

impl Taxonomy {
    /// The planner level's clusters.
    pub fn planner_clusters(&self) -> &[Cluster] {
        if self.planner_level == wander_core::config::PlannerLevel::Coarse {
            &self.coarse
        } else {
            &self.fine
        }
    }

    /// The planner-level cluster of every item.
    pub fn planner_assign(&self) -> &[u32] {
        if self.planner_level == wander_core::config::PlannerLevel::Coarse {
            &self.item_coarse
        } else {
            &self.item_fine
        }
    }

    /// Each fine cluster's coarse parent; a fine cluster without one, or with one that is
    /// not a coarse cluster, is an error (a damaged `clusters.json`).
    pub fn fine_parents(&self) -> Result<Vec<u32>> {
        self.fine
            .iter()
            .map(|c| match c.parent {
                Some(p) if (p as usize) < self.coarse.len() => Ok(p),
                other => Err(TaxonomyError::Invalid(format!(
                    "fine cluster {} has parent {other:?}, not one of the {} coarse clusters",
                    c.id,
                    self.coarse.len()
                ))),
            })
            .collect()
    }

    /// Appends items placed into the existing clusters (items that arrived after the
    /// taxonomy was built, in the order of their dense indices): cluster ids, descriptions
    /// and centroids stay as they are, the sizes count the new members.
    pub fn append_items(&mut self, placements: &[assign::Placement]) {
        for p in placements {
            self.item_fine.push(p.fine);
            self.item_coarse.push(p.coarse);
            self.fine[p.fine as usize].size += 1;
            self.coarse[p.coarse as usize].size += 1;
        }
    }

    /// Parser from description text to planner-level cluster id.
    pub fn index(&self) -> describe::DescriptionIndex {
        describe::DescriptionIndex::new(
            self.planner_clusters()
                .iter()
                .map(|c| (c.id, c.description.as_str())),
        )
    }
}

/// The text embedded for an item: title, year, genres, tags and free text.
pub fn item_text(item: &wander_data::Item) -> String {
    let mut s = item.title.clone();
    if let Some(y) = item.year {
        s.push_str(&format!(" ({y})"));
    }
    if !item.genres.is_empty() {
        s.push_str(&format!(". Genres: {}", item.genres.join(", ")));
    }
    if !item.tags.is_empty() {
        s.push_str(&format!(
            ". Tags: {}",
            item.tags
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !item.text.is_empty() {
        s.push_str(". ");
        s.push_str(&item.text);
    }
    s
}

/// Concatenates `sqrt(w) * text` and `sqrt(1 - w) * behaviour` (both unit vectors), so that
/// cosine similarity of the mix is the weighted sum of the two cosines; re-normalised.
pub fn mix(text: &[Vec<f32>], behaviour: &[Vec<f32>], text_weight: f64) -> Vec<Vec<f32>> {
    let (a, b) = (text_weight.sqrt() as f32, (1.0 - text_weight).sqrt() as f32);
    text.iter()
        .zip(behaviour)
        .map(|(t, h)| {
            let mut v: Vec<f32> = t
                .iter()
                .map(|x| x * a)
                .chain(h.iter().map(|x| x * b))
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
            }
            v
        })
        .collect()
}

fn centroid(points: &[Vec<f32>], members: &[usize]) -> Vec<f32> {
    let dim = points.first().map(|p| p.len()).unwrap_or(0);
    let mut c = vec![0.0f64; dim];
    for &m in members {
        for (s, x) in c.iter_mut().zip(&points[m]) {
            *s += *x as f64;
        }
    }
    c.iter()
        .map(|s| (s / members.len().max(1) as f64) as f32)
        .collect()
}

/// Keywords and a unique description for each of `n_clusters` clusters of `items` under
/// `assign`, by `scheme`; `vectors` (the clustering's) pick the exemplars' central items.
pub fn describe_clusters(
    scheme: DescribeScheme,
    items: &[wander_data::Item],
    assign: &[u32],
    vectors: &[Vec<f32>],
    n_clusters: usize,
    keywords: usize,
) -> Vec<(Vec<String>, String)> {
    match scheme {
        DescribeScheme::Tfidf => describe::unique_descriptions(
            &describe::ranked_terms(items, assign, n_clusters),
            keywords,
        ),
        DescribeScheme::Facets => describe::unique_descriptions(
            &describe::ranked_facets(items, assign, n_clusters),
            keywords,
        ),
        // Without the sentence model at hand (`describe_clusters_embedded` has it), a
        // discriminative description starts as an exemplar one.
        DescribeScheme::Exemplars | DescribeScheme::Discriminative => {
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_clusters];
            for (i, &c) in assign.iter().enumerate() {
                members[c as usize].push(i);
            }
            let central: Vec<Vec<usize>> = members
                .into_iter()
                .map(|mem| {
                    let cen = centroid(vectors, &mem);
                    let mut by_distance: Vec<(f64, usize)> = mem
                        .iter()
                        .map(|&i| {
                            let d: f64 = vectors[i]
                                .iter()
                                .zip(&cen)
                                .map(|(x, y)| f64::from(x - y).powi(2))
                                .sum();
                            (d, i)
                        })
                        .collect();
                    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    by_distance.into_iter().map(|(_, i)| i).collect()
                })
                .collect();
            describe::exemplar_descriptions(
                items,
                &describe::ranked_facets(items, assign, n_clusters),
                &central,
                keywords,
                EXEMPLAR_TITLES,
            )
        }
    }
}

/// Titles in an exemplar description.
const EXEMPLAR_TITLES: usize = 2;

/// The titles a discriminative description chooses from, per cluster: its members whose
/// own text embeddings are most clearly nearer their cluster than any other.
const DISCRIMINATIVE_POOL: usize = 12;

/// The sentence model on new texts, failing with a [`TaxonomyError`].
pub type EmbedTexts<'a> = describe::Embed<'a, TaxonomyError>;

/// One level of clusters as the description schemes read it.
#[derive(Debug, Clone, Copy)]
pub struct Level<'a> {
    /// The items.
    pub items: &'a [wander_data::Item],
    /// Each item's cluster.
    pub assign: &'a [u32],
    /// The clustering's item vectors (the exemplars' central items).
    pub vectors: &'a [Vec<f32>],
    /// The items' text embeddings (the sentence model's).
    pub text: &'a [Vec<f32>],
    /// Clusters at the level.
    pub n_clusters: usize,
}

/// Keywords and a unique description for each cluster by `scheme`, with the sentence model
/// at hand: [`DescribeScheme::Discriminative`] needs it (`text`: the items' text embeddings;
/// `embed`: the same model on new texts); every other scheme is [`describe_clusters`].
pub fn describe_clusters_embedded(
    scheme: DescribeScheme,
    level: &Level<'_>,
    keywords: usize,
    embed: &mut EmbedTexts<'_>,
) -> Result<Vec<(Vec<String>, String)>> {
    let Level {
        items,
        assign,
        vectors,
        text,
        n_clusters,
    } = *level;
    if scheme != DescribeScheme::Discriminative {
        return Ok(describe_clusters(
            scheme, items, assign, vectors, n_clusters, keywords,
        ));
    }
    let centroids = describe::unit_centroids(text, assign, n_clusters);
    let mut ranked: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n_clusters];
    for (i, (&c, v)) in assign.iter().zip(text).enumerate() {
        let m = describe::retrieval_margin(v, &centroids, c as usize);
        ranked[c as usize].push((if m.is_finite() { m } else { f64::NEG_INFINITY }, i));
    }
    let candidates: Vec<Vec<String>> = ranked
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut seen = std::collections::HashSet::new();
            r.into_iter()
                .map(|(_, i)| describe::display_title(&items[i].title))
                .filter(|t| !t.is_empty() && seen.insert(t.clone()))
                .take(DISCRIMINATIVE_POOL)
                .collect()
        })
        .collect();
    describe::discriminative_descriptions(
        &describe::ranked_facets(items, assign, n_clusters),
        &candidates,
        &centroids,
        keywords.saturating_sub(EXEMPLAR_TITLES),
        EXEMPLAR_TITLES,
        embed,
    )
}

/// Redescribes both levels of `tax` by `scheme` with the sentence model at hand
/// ([`describe_clusters_embedded`]); [`build`] alone, which has no sentence model, describes
/// [`DescribeScheme::Discriminative`] clusters by exemplars.
pub fn redescribe(
    tax: &mut Taxonomy,
    scheme: DescribeScheme,
    items: &[wander_data::Item],
    vectors: &[Vec<f32>],
    text: &[Vec<f32>],
    keywords: usize,
    embed: &mut EmbedTexts<'_>,
) -> Result<()> {
    for (clusters, assign) in [
        (&mut tax.coarse, &tax.item_coarse),
        (&mut tax.fine, &tax.item_fine),
    ] {
        let level = Level {
            items,
            assign,
            vectors,
            text,
            n_clusters: clusters.len(),
        };
        let described = describe_clusters_embedded(scheme, &level, keywords, embed)?;
        for (c, (kw, desc)) in clusters.iter_mut().zip(described) {
            c.keywords = kw;
            c.description = desc;
        }
    }
    Ok(())
}

/// Description retrieval on items the descriptions never saw: every cluster's members are
/// split in two halves (seeded), the descriptions are made by `scheme` from the first half's
/// items alone (their metadata, centroids and titles), and each description must retrieve
/// its cluster among the second half's mean item-text embeddings, and the other way round
/// (the two figures averaged: one split of clusters of a few dozen items is noisy). A
/// scheme that chooses its words by the retrieval measure itself (discriminative) is judged
/// fairly only this way.
pub fn held_out_retrieval(
    scheme: DescribeScheme,
    level: &Level<'_>,
    keywords: usize,
    seed: u64,
    embed: &mut EmbedTexts<'_>,
) -> Result<DescriptionRetrieval> {
    let n_clusters = level.n_clusters;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_clusters];
    for (i, &c) in level.assign.iter().enumerate() {
        members[c as usize].push(i);
    }
    let mut rng = Rng::new(seed ^ 0x5eed_4a1f);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for mut m in members {
        rng.shuffle(&mut m);
        let half = m.len().div_ceil(2);
        first.extend_from_slice(&m[..half]);
        second.extend_from_slice(&m[half..]);
    }
    first.sort_unstable();
    second.sort_unstable();
    // The two halves, each as owned copies of the level's columns.
    let pick = |idx: &[usize]| {
        let items: Vec<wander_data::Item> = idx.iter().map(|&i| level.items[i].clone()).collect();
        let assign: Vec<u32> = idx.iter().map(|&i| level.assign[i]).collect();
        let vectors: Vec<Vec<f32>> = idx.iter().map(|&i| level.vectors[i].clone()).collect();
        let text: Vec<Vec<f32>> = idx.iter().map(|&i| level.text[i].clone()).collect();
        (items, assign, vectors, text)
    };
    let halves = [pick(&first), pick(&second)];
    let mut both = Vec::with_capacity(2);
    for (from, to) in [(0, 1), (1, 0)] {
        let (items_a, assign_a, vectors_a, text_a) = &halves[from];
        let (_, assign_b, _, text_b) = &halves[to];
        let half = Level {
            items: items_a,
            assign: assign_a,
            vectors: vectors_a,
            text: text_a,
            n_clusters,
        };
        let described = describe_clusters_embedded(scheme, &half, keywords, embed)?;
        let descriptions: Vec<String> = described.into_iter().map(|(_, d)| d).collect();
        let desc_vectors = embed(&descriptions)?;
        both.push(description_retrieval(&desc_vectors, text_b, assign_b));
    }
    Ok(DescriptionRetrieval {
        accuracy: (both[0].accuracy + both[1].accuracy) / 2.0,
        mean_rank: (both[0].mean_rank + both[1].mean_rank) / 2.0,
        clusters: n_clusters,
    })
}

/// Builds the two-level taxonomy from item vectors.
pub fn build(
    ds: &Dataset,
    vectors: &[Vec<f32>],
    cfg: &TaxonomyConfig,
    seed: u64,
) -> Result<Taxonomy> {
    let n = vectors.len();
    if n < cfg.fine_clusters {
        return Err(TaxonomyError::Invalid(format!(
            "{n} items cannot form {} fine clusters; lower taxonomy.fine_clusters",
            cfg.fine_clusters
        )));
    }
    if let Some(i) = vectors
        .iter()
        .position(|v| v.iter().any(|x| !x.is_finite()))
    {
        return Err(TaxonomyError::Invalid(format!(
            "the embedding of item {} (row {i}) is not finite; delete the embedding cache (taxonomy.cache_dir) and rerun",
            ds.items.get(i).map_or("?", |it| it.id.as_str())
        )));
    }
    // Identical vectors (items whose text and behaviour are the same) cannot be told apart:
    // k-means would return empty clusters.
    let distinct = vectors
        .iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < cfg.fine_clusters || distinct < cfg.coarse_clusters {
        return Err(TaxonomyError::Invalid(format!(
            "only {distinct} of the {n} items have distinct embeddings (items with the same title, genres and tags look alike); lower taxonomy.fine_clusters and taxonomy.coarse_clusters to at most {distinct}, or give the items more distinct text"
        )));
    }
    let mut rng = Rng::new(seed);
    let all: Vec<&[f32]> = vectors.iter().map(|v| v.as_slice()).collect();
    let coarse = kmeans::kmeans(
        &all,
        cfg.coarse_clusters,
        cfg.restarts,
        cfg.max_iterations,
        &mut rng,
    );
    let kc = coarse.centroids.len();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); kc];
    for (i, &c) in coarse.assign.iter().enumerate() {
        members[c].push(i);
    }
    // Fine clusters per coarse cluster, in proportion to size (largest remainders).
    let quota: Vec<f64> = members
        .iter()
        .map(|m| cfg.fine_clusters as f64 * m.len() as f64 / n as f64)
        .collect();
    let mut alloc: Vec<usize> = quota
        .iter()
        .zip(&members)
        .map(|(q, m)| (q.floor() as usize).max(1).min(m.len()))
        .collect();
    let mut order: Vec<usize> = (0..kc).collect();
    order.sort_by(|&a, &b| {
        (quota[b] - quota[b].floor())
            .total_cmp(&(quota[a] - quota[a].floor()))
            .then(a.cmp(&b))
    });
    let mut k = 0;
    while alloc.iter().sum::<usize>() < cfg.fine_clusters && k < 10 * kc {
        let c = order[k % kc];
        if alloc[c] < members[c].len() {
            alloc[c] += 1;
        }
        k += 1;
    }
    let mut item_coarse = vec![0u32; n];
    let mut item_fine = vec![0u32; n];
    let mut fine_members: Vec<(u32, Vec<usize>)> = Vec::new();
    for (c, mem) in members.iter().enumerate() {
        for &i in mem {
            item_coarse[i] = c as u32;
        }
        if mem.is_empty() {
            continue;
        }
        let pts: Vec<&[f32]> = mem.iter().map(|&i| vectors[i].as_slice()).collect();
        let sub = kmeans::kmeans(&pts, alloc[c], cfg.restarts, cfg.max_iterations, &mut rng);
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); sub.centroids.len()];
        for (j, &a) in sub.assign.iter().enumerate() {
            groups[a].push(mem[j]);
        }
        // Merge tiny clusters into the nearest sibling (by centroid), smallest first.
        loop {
            let live: Vec<usize> = (0..groups.len())
                .filter(|&g| !groups[g].is_empty())
                .collect();
            let Some(&small) = live
                .iter()
                .filter(|&&g| groups[g].len() < cfg.min_cluster_size)
                .min_by_key(|&&g| (groups[g].len(), g))
            else {
                break;
            };
            if live.len() < 2 {
                break;
            }
            let cs = centroid(vectors, &groups[small]);
            let target = *live
                .iter()
                .filter(|&&g| g != small)
                .min_by(|&&a, &&b| {
                    let da: f64 = centroid(vectors, &groups[a])
                        .iter()
                        .zip(&cs)
                        .map(|(x, y)| ((x - y) as f64).powi(2))
                        .sum();
                    let db: f64 = centroid(vectors, &groups[b])
                        .iter()
                        .zip(&cs)
                        .map(|(x, y)| ((x - y) as f64).powi(2))
                        .sum();
                    da.total_cmp(&db).then(a.cmp(&b))
                })
                .expect("two live groups");
            let moved = std::mem::take(&mut groups[small]);
            groups[target].extend(moved);
            groups[target].sort_unstable();
        }
        for g in groups.into_iter().filter(|g| !g.is_empty()) {
            fine_members.push((c as u32, g));
        }
    }
    let mut fine = Vec::with_capacity(fine_members.len());
    for (id, (parent, mem)) in fine_members.iter().enumerate() {
        for &i in mem {
            item_fine[i] = id as u32;
        }
        fine.push(Cluster {
            id: id as u32,
            level: "fine".into(),
            parent: Some(*parent),
            keywords: vec![],
            description: String::new(),
            size: mem.len(),
            centroid: centroid(vectors, mem),
        });
    }
    let mut coarse_clusters: Vec<Cluster> = members
        .iter()
        .enumerate()
        .map(|(c, mem)| Cluster {
            id: c as u32,
            level: "coarse".into(),
            parent: None,
            keywords: vec![],
            description: String::new(),
            size: mem.len(),
            centroid: centroid(vectors, mem),
        })
        .collect();
    for (clusters, assign) in [
        (&mut coarse_clusters, &item_coarse),
        (&mut fine, &item_fine),
    ] {
        let described = describe_clusters(
            cfg.describe,
            &ds.items,
            assign,
            vectors,
            clusters.len(),
            cfg.keywords,
        );
        for (c, (kw, desc)) in clusters.iter_mut().zip(described) {
            c.keywords = kw;
            c.description = desc;
        }
    }
    Ok(Taxonomy {
        coarse: coarse_clusters,
        fine,
        item_coarse,
        item_fine,
        planner_level: cfg.planner_level,
    })
}

/// Name of the clusters file in the taxonomy stage.
pub const CLUSTERS_FILE: &str = "clusters.json";
/// Name of the item-to-cluster map in the taxonomy stage.
pub const ITEM_CLUSTERS_FILE: &str = "item_clusters.parquet";

/// Writes the taxonomy: `clusters.json` (both levels, the planner level and the maps) and
/// `item_clusters.parquet` (item, item_id, coarse, fine).
pub fn write(
    stage: &wander_core::artifact::StageWriter,
    tax: &Taxonomy,
    ds: &Dataset,
) -> Result<()> {
    stage.write_json(CLUSTERS_FILE, tax)?;
    let path = stage.path(ITEM_CLUSTERS_FILE)?;
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "item",
            Arc::new(UInt32Array::from(
                (0..tax.item_fine.len() as u32).collect::<Vec<_>>(),
            )),
        ),
        (
            "item_id",
            Arc::new(StringArray::from(
                ds.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "coarse",
            Arc::new(UInt32Array::from(tax.item_coarse.clone())),
        ),
        ("fine", Arc::new(UInt32Array::from(tax.item_fine.clone()))),
    ];
    let batch =
        RecordBatch::try_from_iter(cols).map_err(|e| TaxonomyError::Invalid(e.to_string()))?;
    let file = std::fs::File::create(&path).map_err(|e| wander_core::CoreError::io(&path, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .map_err(|e| TaxonomyError::Invalid(format!("{}: {e}", path.display())))?;
    w.write(&batch)
        .map_err(|e| TaxonomyError::Invalid(format!("{}: {e}", path.display())))?;
    w.close()
        .map_err(|e| TaxonomyError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// Reads a taxonomy from a verified stage.
pub fn read(stage: &wander_core::artifact::StageReader) -> Result<Taxonomy> {
    Ok(stage.read_json(CLUSTERS_FILE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: u32, level: &str, parent: Option<u32>) -> Cluster {
        Cluster {
            id,
            level: level.into(),
            parent,
            keywords: vec![],
            description: format!("c{id}"),
            size: 1,
            centroid: vec![],
        }
    }

    #[test]
    fn fine_parents_refuses_a_missing_or_unknown_parent() {
        let mut t = Taxonomy {
            coarse: vec![cluster(0, "coarse", None), cluster(1, "coarse", None)],
            fine: vec![cluster(0, "fine", Some(1)), cluster(1, "fine", Some(0))],
            item_coarse: vec![1, 0],
            item_fine: vec![0, 1],
            planner_level: wander_core::config::PlannerLevel::Fine,
        };
        assert_eq!(t.fine_parents().unwrap(), [1, 0]);
        t.fine[1].parent = None;
        assert!(t
            .fine_parents()
            .unwrap_err()
            .to_string()
            .contains("fine cluster 1"));
        t.fine[1].parent = Some(2);
        assert!(t.fine_parents().is_err());
    }
}

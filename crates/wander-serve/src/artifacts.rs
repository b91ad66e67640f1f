//! What the service serves from: one run's verified artifacts, and the request logic on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wander_bundle::retrieve::{Index, Retriever};
use wander_bundle::sasrec::CpuSasRec;
use wander_bundle::ServingBundle;
use wander_core::config::{Config, PositiveRule};
use wander_table::ExplorationTable;

use crate::{ApiError, ServeError};

/// A cluster as the API shows it (as the bundle holds it).
pub use wander_bundle::ClusterEntry as ClusterInfo;

/// Limits a request must respect.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest history.
    pub max_history: usize,
    /// Most clusters.
    pub max_clusters: usize,
    /// Most items.
    pub max_items: usize,
}

/// An item id as sent: a string or a number.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum ItemId {
    /// `"50"`
    Text(String),
    /// `50`
    Number(u64),
}

impl ItemId {
    fn as_string(&self) -> String {
        match self {
            ItemId::Text(s) => s.clone(),
            ItemId::Number(n) => n.to_string(),
        }
    }
}

/// One history entry: an item id, or an object with the id and a feedback value.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum HistoryEntry {
    /// Just the item (counts as positive engagement).
    Plain(ItemId),
    /// The item and the feedback value of the configured positive rule's column.
    Full {
        /// Item id.
        item: ItemId,
        /// Feedback value; entries failing the positive rule do not shape the interests.
        feedback: Option<f64>,
    },
}

// Both are read by hand rather than derived as untagged enums: serde buffers every untagged
// value before trying its variants, once per history entry and again for the id inside, and
// reports a mismatch only as "did not match any variant". Read directly, a request parses in
// one pass and a bad entry is named for what it is.
impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor { id_only: true })
            .map(|e| match e {
                HistoryEntry::Plain(id) => id,
                HistoryEntry::Full { item, .. } => item,
            })
    }
}

impl<'de> Deserialize<'de> for HistoryEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor { id_only: false })
    }
}

/// Reads a history entry, or with `id_only` just an item id.
struct EntryVisitor {
    id_only: bool,
}

impl<'de> serde::de::Visitor<'de> for EntryVisitor {
    type Value = HistoryEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.id_only {
            f.write_str("an item id (a string or a non-negative integer)")
        } else {
            f.write_str(
                "a history entry: an item id (a string or a non-negative integer) or an object {\"item\": id, \"feedback\": number}",
            )
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(HistoryEntry::Plain(ItemId::Text(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(HistoryEntry::Plain(ItemId::Text(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(HistoryEntry::Plain(ItemId::Number(v)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.id_only {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        }
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Item,
            Feedback,
            // Other fields are ignored, as they were when this was derived.
            #[serde(other)]
            Other,
        }
        let mut item: Option<ItemId> = None;
        let mut feedback: Option<Option<f64>> = None;
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Item if item.is_some() => {
                    return Err(serde::de::Error::duplicate_field("item"))
                }
                Field::Item => item = Some(map.next_value()?),
                Field::Feedback if feedback.is_some() => {
                    return Err(serde::de::Error::duplicate_field("feedback"))
                }
                Field::Feedback => feedback = Some(map.next_value()?),
                Field::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let item = item.ok_or_else(|| serde::de::Error::missing_field("item"))?;
        Ok(HistoryEntry::Full {
            item,
            feedback: feedback.flatten(),
        })
    }
}

/// `POST /v1/explore` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreRequest {
    /// Recent items, oldest first: ids, or {item, feedback} objects; entries whose
    /// feedback fails the configured positive rule do not shape the interests.
    pub history: Vec<HistoryEntry>,
    /// Novel clusters wanted.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1)]
    pub clusters: usize,
    /// Items wanted in total.
    #[serde(default = "ten")]
    #[schema(default = 10, minimum = 0)]
    pub items: usize,
}

fn one() -> usize {
    1
}
fn ten() -> usize {
    10
}

/// A chosen novel cluster.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChosenCluster {
    /// Id.
    pub id: u32,
    /// Description.
    pub description: String,
    /// Alignment score (predicted collective feedback); null for fallbacks.
    pub alignment_score: Option<f32>,
}

/// A served item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServedItem {
    /// Item id as in the catalogue.
    pub id: String,
    /// Title.
    pub title: String,
    /// Cluster it belongs to.
    pub cluster: u32,
    /// Item-policy score (SASRec dot product; popularity count when the history is empty).
    pub score: f32,
}

/// Why the clusters did not come from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Fewer than two distinct clusters of positive engagement in the history: the most
    /// engaged-with clusters the user has not shown are served instead.
    ColdStart,
    /// The history pair has no row in the table (same fallback).
    PairNotInTable,
}

/// `POST /v1/explore` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExploreResponse {
    /// The user's last two distinct clusters of positive engagement, older first.
    pub history_clusters: Vec<ChosenCluster>,
    /// Novel clusters to explore, best first.
    pub clusters: Vec<ChosenCluster>,
    /// Items from those clusters, best first.
    pub items: Vec<ServedItem>,
    /// `null` when the clusters come from the table.
    pub fallback: Option<Fallback>,
    /// History entries whose item id is not in the catalogue (ignored).
    pub unknown_items: usize,
    /// Version of the exploration table (checksum of its manifest).
    pub table_version: String,
}

/// One run's serving bundle, verified against its manifest, with the lookups requests need.
pub struct Artifacts {
    /// The table's version (checksum of the precompute manifest it came from).
    pub version: String,
    /// The run directory they came from, links resolved (a published version's folder).
    pub run_dir: PathBuf,
    table: ExplorationTable,
    clusters: Vec<ClusterInfo>,
    item_ids: Vec<String>,
    titles: Vec<String>,
    by_id: HashMap<String, u32>,
    item_cluster: Vec<u32>,
    model: CpuSasRec,
    retriever: Retriever,
    index: Index,
    popularity: Vec<f32>,
    popular_clusters: Vec<u32>,
    positive: PositiveRule,
}

impl Artifacts {
    /// Loads and verifies the serving bundle of `run_dir` (written by `wander bundle`, or
    /// a version `wander publish` made of it); any checksum or consistency failure refuses
    /// the whole run.
    pub fn load(run_dir: &Path, config: &Config) -> Result<Self, ServeError> {
        if !run_dir.is_dir() {
            return Err(ServeError::Artifacts(format!(
                "{}: run directory not found (run.dir); run the pipeline first",
                run_dir.display()
            )));
        }
        // Resolved once: a `current` link switched to another version while this loads
        // cannot mix two versions' files.
        let run_dir = &std::fs::canonicalize(run_dir)
            .map_err(|e| ServeError::Artifacts(format!("{}: {e}", run_dir.display())))?;
        let bundle = ServingBundle::read(run_dir)?;
        let catalogue = bundle.catalogue;
        let model = bundle.model;
        let item_cluster: Vec<u32> = catalogue.items.iter().map(|i| i.cluster).collect();
        let mut cluster_of = vec![u32::MAX; model.cfg.vocab];
        for (i, &c) in item_cluster.iter().enumerate() {
            cluster_of[i + 1] = c;
        }
        let retriever = Retriever::new(
            model.item.clone(),
            model.cfg.dim,
            &cluster_of,
            catalogue.clusters.len(),
        );
        // Indexed by model id (0 is padding).
        let popularity: Vec<f32> = std::iter::once(0.0)
            .chain(catalogue.items.iter().map(|i| i.positives as f32))
            .collect();
        let popular_clusters = catalogue.clusters_by_engagement();
        let item_ids: Vec<String> = catalogue.items.iter().map(|i| i.id.clone()).collect();
        let by_id = item_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        Ok(Artifacts {
            version: catalogue.table_version,
            run_dir: run_dir.to_path_buf(),
            table: bundle.table,
            titles: catalogue.items.into_iter().map(|i| i.title).collect(),
            clusters: catalogue.clusters,
            item_ids,
            by_id,
            item_cluster,
            model,
            retriever,
            index: if config.items.index == wander_core::config::IndexKind::Quantized {
                Index::Quantized {
                    rerank: config.items.rerank,
                }
            } else {
                Index::Exact
            },
            popularity,
            popular_clusters,
            positive: config.data.positive_rule()?,
        })
    }

    /// A cluster by id.
    pub fn cluster(&self, id: u32) -> Option<&ClusterInfo> {
        self.clusters.get(id as usize)
    }

    /// Number of clusters.
    pub fn n_clusters(&self) -> usize {
        self.clusters.len()
    }

    /// A history that reaches the exploration table: the most popular item of each of the
    /// two most engaged-with clusters, the less popular cluster first. Empty when the run
    /// has fewer than two clusters with a positive training engagement.
    pub fn example_history(&self) -> Vec<String> {
        let mut history: Vec<String> = self
            .popular_clusters
            .iter()
            .take(2)
            .filter_map(|&c| {
                (0..self.item_ids.len())
                    .filter(|&i| self.item_cluster[i] == c && self.popularity[i + 1] > 0.0)
                    .max_by(|&a, &b| {
                        self.popularity[a + 1]
                            .total_cmp(&self.popularity[b + 1])
                            .then(b.cmp(&a))
                    })
                    .map(|i| self.item_ids[i].clone())
            })
            .collect();
        if history.len() < 2 {
            history.clear();
        }
        history.reverse();
        history
    }

    fn chosen(&self, id: u32, score: Option<f32>) -> ChosenCluster {
        ChosenCluster {
            id,
            description: self.clusters[id as usize].description.clone(),
            alignment_score: score,
        }
    }

    /// Answers one exploration request.
    pub fn explore(
        &self,
        req: &ExploreRequest,
        limits: &Limits,
    ) -> Result<ExploreResponse, ApiError> {
        if req.history.len() > limits.max_history {
            return Err(ApiError::unprocessable(
                "history_too_long",
                format!(
                    "history has {} entries; at most {} are accepted",
                    req.history.len(),
                    limits.max_history
                ),
            ));
        }
        if req.clusters == 0 || req.clusters > limits.max_clusters {
            return Err(ApiError::unprocessable(
                "invalid_clusters",
                format!(
                    "`clusters` must be 1 to {}, not {}",
                    limits.max_clusters, req.clusters
                ),
            ));
        }
        if req.items > limits.max_items {
            return Err(ApiError::unprocessable(
                "invalid_items",
                format!(
                    "`items` must be 0 to {}, not {}",
                    limits.max_items, req.items
                ),
            ));
        }
        let mut unknown = 0;
        let mut model_ids = Vec::with_capacity(req.history.len());
        let mut interest: Vec<u32> = Vec::new();
        for e in &req.history {
            let (id, feedback) = match e {
                HistoryEntry::Plain(id) => (id, None),
                HistoryEntry::Full { item, feedback } => (item, *feedback),
            };
            if let Some(f) = feedback {
                if !f.is_finite() {
                    return Err(ApiError::unprocessable(
                        "invalid_feedback",
                        "feedback values must be finite numbers".into(),
                    ));
                }
            }
            let Some(&idx) = self.by_id.get(&id.as_string()) else {
                unknown += 1;
                continue;
            };
            model_ids.push(idx + 1);
            if feedback.is_none_or(|f| self.positive.holds(f)) {
                let c = self.item_cluster[idx as usize];
                if interest.last() != Some(&c) {
                    interest.push(c);
                }
            }
        }
        let history_clusters: Vec<u32> = interest[interest.len().saturating_sub(2)..].to_vec();
        let mut fallback = None;
        let mut chosen: Vec<ChosenCluster> = Vec::new();
        if let [c1, c2] = history_clusters[..] {
            for ch in self.table.get(c1, c2).iter().take(req.clusters) {
                chosen.push(self.chosen(ch.cluster, Some(ch.alignment)));
            }
            if chosen.is_empty() {
                fallback = Some(Fallback::PairNotInTable);
            }
        } else {
            fallback = Some(Fallback::ColdStart);
        }
        if chosen.is_empty() {
            // Documented fallback: the most engaged-with clusters the user has not shown.
            for &c in self
                .popular_clusters
                .iter()
                .filter(|c| !history_clusters.contains(c))
                .take(req.clusters)
            {
                chosen.push(self.chosen(c, None));
            }
        }
        let targets: Vec<u32> = chosen.iter().map(|c| c.id).collect();
        let mut seen = model_ids.clone();
        seen.sort_unstable();
        seen.dedup();
        let hits = if req.items == 0 {
            Vec::new()
        } else if model_ids.is_empty() {
            let mut cand: Vec<(u32, f32)> = targets
                .iter()
                .flat_map(|&c| {
                    self.retriever
                        .cluster_items(c)
                        .iter()
                        .map(|&id| (id, self.popularity[id as usize]))
                })
                .collect();
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(req.items);
            cand
        } else {
            let user = self.model.user_vector(&model_ids);
            self.retriever
                .top_n(&user, &targets, &seen, req.items, self.index)
                .into_iter()
                .map(|h| (h.item, h.score))
                .collect()
        };
        let items = hits
            .into_iter()
            .map(|(id, score)| {
                let i = id as usize - 1;
                ServedItem {
                    id: self.item_ids[i].clone(),
                    title: self.titles[i].clone(),
                    cluster: self.item_cluster[i],
                    score,
                }
            })
            .collect();
        Ok(ExploreResponse {
            history_clusters: history_clusters
                .iter()
                .map(|&c| self.chosen(c, None))
                .collect(),
            clusters: chosen,
            items,
            fallback,
            unknown_items: unknown,
            table_version: self.version.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(history: &str) -> Result<Vec<HistoryEntry>, String> {
        serde_json::from_str::<ExploreRequest>(&format!("{{\"history\": {history}}}"))
            .map(|r| r.history)
            .map_err(|e| e.to_string())
    }

    fn shown(e: &HistoryEntry) -> (String, Option<f64>, bool) {
        match e {
            HistoryEntry::Plain(id) => (id.as_string(), None, false),
            HistoryEntry::Full { item, feedback } => (item.as_string(), *feedback, true),
        }
    }

    #[test]
    fn every_documented_form_of_an_entry_parses() {
        let got = parse(r#"["a1", 2, {"item": "3", "feedback": 4.5}, {"item": 5}, {"item": "6", "feedback": null, "note": [1]}]"#).unwrap();
        let got: Vec<_> = got.iter().map(shown).collect();
        assert_eq!(
            got,
            vec![
                ("a1".into(), None, false),
                ("2".into(), None, false),
                ("3".into(), Some(4.5), true),
                ("5".into(), None, true),
                ("6".into(), None, true),
            ]
        );
    }

    #[test]
    fn a_bad_entry_is_named_for_what_it_is() {
        for (history, want) in [
            ("[-1]", "history entry"),
            ("[1.5]", "history entry"),
            ("[true]", "history entry"),
            ("[[1]]", "history entry"),
            (r#"[{"feedback": 1}]"#, "missing field `item`"),
            (r#"[{"item": {"item": 1}}]"#, "an item id"),
            (r#"[{"item": 1, "item": 2}]"#, "duplicate field `item`"),
            (r#"[{"item": 1, "feedback": "x"}]"#, "f64"),
        ] {
            let e = parse(history).unwrap_err();
            assert!(e.contains(want), "{history}: {e}");
        }
    }

    proptest! {
        /// Whatever mix of ids and objects a client sends comes back as sent.
        #[test]
        fn entries_round_trip(entries in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), 0u64..1_000_000, proptest::option::of((-4000i32..4000).prop_map(|v| f64::from(v) / 4.0))),
            0..20,
        )) {
            let mut json = Vec::new();
            let mut want = Vec::new();
            for (text, object, n, feedback) in &entries {
                let id = if *text { serde_json::json!(format!("i{n}")) } else { serde_json::json!(n) };
                let id_str = if *text { format!("i{n}") } else { n.to_string() };
                if *object {
                    json.push(serde_json::json!({"item": id, "feedback": feedback}));
                    want.push((id_str, *feedback, true));
                } else {
                    json.push(id);
                    want.push((id_str, None, false));
                }
            }
            let got = parse(&serde_json::Value::Array(json).to_string()).unwrap();
            prop_assert_eq!(got.iter().map(shown).collect::<Vec<_>>(), want);
        }
    }
}

/// What identifies the bundle `run_dir` holds now: the folder it resolves to and a hash of
/// its bundle manifest (which names every file's checksum). `None` while it cannot be read.
pub fn bundle_signature(run_dir: &Path) -> Option<(PathBuf, u64)> {
    use std::hash::{Hash, Hasher};
    let dir = std::fs::canonicalize(run_dir).ok()?;
    let manifest = std::fs::read(
        dir.join(wander_bundle::FOLDER)
            .join(wander_core::artifact::MANIFEST),
    )
    .ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    manifest.hash(&mut h);
    Some((dir, h.finish()))
}

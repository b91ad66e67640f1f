//! The serving bundle: everything `wander serve` reads from a run, written by the `bundle`
//! stage into one folder with its manifest, so that the service needs no ML crate and a
//! deployment copies one folder.
//!
//! | file | holds |
//! |---|---|
//! | `table.bin` | the exploration table (a copy of precompute's, checksummed) |
//! | `catalogue.json` | clusters, items (id, title, cluster), positive training engagements per item, the SASRec shape, the table's version |
//! | `sasrec.safetensors` | the item model's weights (F32, the trainer's names) |
//!
//! The [`sasrec`] module runs the item model in plain Rust and [`retrieve`] finds the best
//! items inside chosen clusters; both are also what offline evaluation uses.
#![deny(missing_docs)]

pub mod retrieve;
pub mod sasrec;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wander_core::artifact::{RunDir, StageWriter};
use wander_table::ExplorationTable;

use sasrec::{CpuSasRec, SasRecConfig};

/// The folder of the run directory the bundle lives in.
pub const FOLDER: &str = "bundle";
/// The exploration table.
pub const TABLE: &str = "table.bin";
/// The catalogue.
pub const CATALOGUE: &str = "catalogue.json";
/// The item model's weights.
pub const SASREC: &str = "sasrec.safetensors";
/// The version of `catalogue.json`'s layout this build reads and writes.
pub const CATALOGUE_FORMAT: u32 = 1;

/// Errors reading or writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Inconsistent or malformed content; the message names the file.
    #[error("{0}")]
    Invalid(String),
    /// Filesystem or manifest error (a corrupt file is refused here).
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
    /// The table's bytes are invalid.
    #[error(transparent)]
    Table(#[from] wander_table::TableError),
}

/// A cluster of the planner's level as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEntry {
    /// Planner-level id (its index).
    pub id: u32,
    /// The description the planner reads and writes.
    pub description: String,
    /// Keywords, best first.
    pub keywords: Vec<String>,
    /// Items in the cluster.
    pub size: usize,
}

/// An item as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemEntry {
    /// The id in the user's catalogue.
    pub id: String,
    /// Title.
    pub title: String,
    /// Its planner-level cluster.
    pub cluster: u32,
    /// Positive engagements in the training period (ranks items for an empty history and
    /// clusters for the fallback).
    pub positives: u64,
}

/// `catalogue.json`: what the service shows and looks up besides the table and the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    /// [`CATALOGUE_FORMAT`] of the writer.
    pub format: u32,
    /// The table's version: the checksum of the precompute manifest it was copied from.
    pub table_version: String,
    /// The planner's clusters, by id.
    pub clusters: Vec<ClusterEntry>,
    /// The items, by dataset index (model id minus one).
    pub items: Vec<ItemEntry>,
    /// The item model's shape.
    pub sasrec: SasRecConfig,
}

impl Catalogue {
    /// Checks that the parts agree: cluster ids are their indices, every item's cluster
    /// exists, the model's vocabulary is the catalogue plus padding.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Invalid(format!("{CATALOGUE}: {m}")));
        if self.format != CATALOGUE_FORMAT {
            return bad(format!(
                "format {} is not {CATALOGUE_FORMAT}; rerun `wander bundle --force`",
                self.format
            ));
        }
        if let Some((i, c)) = self
            .clusters
            .iter()
            .enumerate()
            .find(|(i, c)| c.id as usize != *i)
        {
            return bad(format!("cluster {i} has id {}", c.id));
        }
        if let Some(item) = self
            .items
            .iter()
            .find(|it| it.cluster as usize >= self.clusters.len())
        {
            return bad(format!(
                "item `{}` is in cluster {}, but there are {} clusters",
                item.id,
                item.cluster,
                self.clusters.len()
            ));
        }
        if self.sasrec.vocab != self.items.len() + 1 {
            return bad(format!(
                "the item model knows {} items, the catalogue has {}",
                self.sasrec.vocab.saturating_sub(1),
                self.items.len()
            ));
        }
        Ok(())
    }

    /// Planner-level clusters by positive training engagements, most first (ties by id).
    pub fn clusters_by_engagement(&self) -> Vec<u32> {
        let mut engaged = vec![0u64; self.clusters.len()];
        for it in &self.items {
            engaged[it.cluster as usize] += it.positives;
        }
        let mut order: Vec<u32> = (0..self.clusters.len() as u32).collect();
        order.sort_by(|a, b| {
            engaged[*b as usize]
                .cmp(&engaged[*a as usize])
                .then(a.cmp(b))
        });
        order
    }
}

/// Writes a bundle into a stage writer: the catalogue, and copies of the table and the
/// item model's weights. The table is parsed first, so a bundle never holds a table that
/// does not read back or disagrees with the catalogue.
pub fn write(
    writer: &StageWriter,
    catalogue: &Catalogue,
    table: &Path,
    sasrec_weights: &Path,
) -> Result<(), BundleError> {
    catalogue.validate()?;
    let parsed = ExplorationTable::read(table)?;
    check_table(&parsed, catalogue)?;
    CpuSasRec::read_safetensors(sasrec_weights, catalogue.sasrec)?;
    for (from, name) in [(table, TABLE), (sasrec_weights, SASREC)] {
        let to = writer.path(name)?;
        std::fs::copy(from, &to).map_err(|e| wander_core::CoreError::io(&to, e))?;
    }
    writer.write_json(CATALOGUE, catalogue)?;
    Ok(())
}

fn check_table(table: &ExplorationTable, catalogue: &Catalogue) -> Result<(), BundleError> {
    if table.n_clusters() as usize != catalogue.clusters.len() {
        return Err(BundleError::Invalid(format!(
            "the table has {} clusters, the catalogue {}: artifacts of different runs",
            table.n_clusters(),
            catalogue.clusters.len()
        )));
    }
    Ok(())
}

/// A bundle read back and verified: every file matched its manifest checksum, the parts
/// agree with each other.
#[derive(Debug, Clone)]
pub struct ServingBundle {
    /// The folder it was read from.
    pub dir: PathBuf,
    /// The exploration table.
    pub table: ExplorationTable,
    /// Clusters and items.
    pub catalogue: Catalogue,
    /// The item model.
    pub model: CpuSasRec,
}

impl ServingBundle {
    /// Reads the bundle of the run directory `run_dir`.
    pub fn read(run_dir: &Path) -> Result<Self, BundleError> {
        let run = RunDir::open(run_dir)?;
        let stage = run.read(FOLDER)?;
        let catalogue: Catalogue = stage.read_json(CATALOGUE)?;
        catalogue.validate()?;
        let table = ExplorationTable::read(&stage.path(TABLE)?)?;
        check_table(&table, &catalogue)?;
        let model = CpuSasRec::read_safetensors(&stage.path(SASREC)?, catalogue.sasrec)?;
        Ok(ServingBundle {
            dir: run.stage_dir(FOLDER),
            table,
            catalogue,
            model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_table::Choice;

    fn shape() -> SasRecConfig {
        SasRecConfig {
            vocab: 4,
            max_len: 3,
            dim: 4,
            layers: 1,
            heads: 2,
            dropout: 0.0,
        }
    }

    fn catalogue() -> Catalogue {
        let cluster = |id: u32| ClusterEntry {
            id,
            description: format!("cluster {id}"),
            keywords: vec![format!("k{id}")],
            size: 1,
        };
        let item = |id: &str, cluster: u32, positives: u64| ItemEntry {
            id: id.into(),
            title: format!("title {id}"),
            cluster,
            positives,
        };
        Catalogue {
            format: CATALOGUE_FORMAT,
            table_version: "v1".into(),
            clusters: vec![cluster(0), cluster(1), cluster(2)],
            items: vec![item("a", 0, 1), item("b", 2, 5), item("c", 1, 5)],
            sasrec: shape(),
        }
    }

    /// Writes the trainer's layout (F32, its names) with seeded values.
    fn write_weights(path: &Path, cfg: &SasRecConfig, skip: Option<&str>) {
        let mut rng = wander_core::rng::Rng::new(7);
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = sasrec::weight_shapes(cfg)
            .into_iter()
            .filter(|(n, _)| Some(n.as_str()) != skip)
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                let bytes = (0..len)
                    .flat_map(|_| ((rng.next_f64() as f32) - 0.5).to_le_bytes())
                    .collect();
                (n, shape, bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, b)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap();
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn table(n_clusters: u32) -> ExplorationTable {
        let mut t = ExplorationTable::new(n_clusters, 2);
        let choice = |cluster| Choice {
            cluster,
            alignment: 0.5,
            novelty_prob: 0.25,
            frequency: 3,
        };
        t.set(0, 1, vec![choice(2)]).unwrap();
        t
    }

    #[test]
    fn a_written_bundle_reads_back_and_a_flipped_byte_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("table.bin"), table(3).to_bytes()).unwrap();
        write_weights(&src.join("w.safetensors"), &shape(), None);
        let run = RunDir::open(tmp.path().join("run")).unwrap();
        let writer = run.begin(FOLDER).unwrap();
        write(
            &writer,
            &catalogue(),
            &src.join("table.bin"),
            &src.join("w.safetensors"),
        )
        .unwrap();
        writer
            .commit(
                serde_json::json!({}),
                Default::default(),
                serde_json::json!({}),
            )
            .unwrap();

        let bundle = ServingBundle::read(run.root()).unwrap();
        assert_eq!(bundle.catalogue, catalogue());
        assert_eq!(bundle.table.get(0, 1)[0].cluster, 2);
        let user = bundle.model.user_vector(&[1, 2]);
        assert_eq!(user.len(), 4);
        assert!(user.iter().all(|v| v.is_finite()));
        // Ties on engagement go to the lower id.
        assert_eq!(bundle.catalogue.clusters_by_engagement(), vec![1, 2, 0]);

        let path = run.stage_dir(FOLDER).join(SASREC);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = ServingBundle::read(run.root()).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn parts_that_disagree_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let weights = tmp.path().join("w.safetensors");
        write_weights(&weights, &shape(), None);
        let table_path = tmp.path().join("table.bin");
        let run = RunDir::open(tmp.path().join("run")).unwrap();
        let attempt = |cat: &Catalogue, table_clusters: u32, weights: &Path| {
            std::fs::write(&table_path, table(table_clusters).to_bytes()).unwrap();
            let writer = run.begin(FOLDER).unwrap();
            write(&writer, cat, &table_path, weights)
                .unwrap_err()
                .to_string()
        };
        let err = attempt(&catalogue(), 4, &weights);
        assert!(
            err.contains("the table has 4 clusters, the catalogue 3"),
            "{err}"
        );
        let mut cat = catalogue();
        cat.items[1].cluster = 7;
        assert!(attempt(&cat, 3, &weights).contains("item `b` is in cluster 7"));
        let mut cat = catalogue();
        cat.sasrec.vocab = 9;
        assert!(attempt(&cat, 3, &weights).contains("the item model knows 8 items"));
        let partial = tmp.path().join("partial.safetensors");
        write_weights(&partial, &shape(), Some("l0.wq"));
        let err = attempt(&catalogue(), 3, &partial);
        assert!(err.contains("lacks `l0.wq`"), "{err}");
        let nan = tmp.path().join("nan.safetensors");
        write_weights(&nan, &shape(), None);
        let mut bytes = std::fs::read(&nan).unwrap();
        let end = bytes.len();
        bytes[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&nan, bytes).unwrap();
        let err = attempt(&catalogue(), 3, &nan);
        assert!(err.contains("holds a non-finite value (NaN)"), "{err}");
        let mut cat = catalogue();
        cat.sasrec.max_len = 5;
        let err = attempt(&cat, 3, &weights);
        assert!(
            err.contains("`pos` has shape [3, 4], expected [5, 4]"),
            "{err}"
        );
    }
}

//! Loading, validating and splitting interaction logs and item catalogues.
//!
//! Loaders read MovieLens (RecBole atomic files, the GroupLens 100K layout, latest-small)
//! and a generic CSV/Parquet layout into one [`Dataset`] with dense ids. Every malformed row
//! is reported with file, line, column and value ([`DataError`]), or skipped and counted when
//! the configuration says so. The dataset is stored as Parquet and split two ways: a global
//! temporal split and leave-last-out.
#![deny(missing_docs)]

mod error;
mod external;
mod formats;
mod parquet_io;
mod rebase;
mod split;
pub mod synth;
mod text;

pub use error::DataError;
pub use formats::{ingest, load, IngestPhase, Ingested};
pub use parquet_io::{
    catalogue_size, feedback_columns, for_each_event, for_each_valued_event, read_catalogue,
    read_dataset, write_dataset, CatalogueSize, Event, INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE,
};
pub use rebase::{concat, for_each_concat_event, rebase, write_concat, Rebased};
pub use split::{leave_last_out, temporal_split, Split};

use serde::Serialize;

/// One catalogue item.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    /// The id in the source data.
    pub id: String,
    /// Display title (without the year for MovieLens).
    pub title: String,
    /// Release year, when the source has one.
    pub year: Option<i32>,
    /// Genres (MovieLens) or categories.
    pub genres: Vec<String>,
    /// Free-form tags, most frequent first.
    pub tags: Vec<String>,
    /// Free text (description), possibly empty.
    pub text: String,
}

/// Interactions in column form, sorted by user, then time, then input order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interactions {
    /// Dense user index.
    pub user: Vec<u32>,
    /// Dense item index.
    pub item: Vec<u32>,
    /// Unix seconds.
    pub timestamp: Vec<i64>,
    /// Numeric feedback columns, parallel to [`Dataset::feedback_columns`].
    pub feedback: Vec<Vec<f64>>,
    /// Whether the positive-engagement rule holds.
    pub positive: Vec<bool>,
    /// Global temporal split.
    pub split: Vec<Split>,
    /// Leave-last-out split.
    pub loo_split: Vec<Split>,
}

impl Interactions {
    /// Number of interactions.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

/// A validated dataset with dense ids.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    /// Original user ids, indexed by dense user index.
    pub users: Vec<String>,
    /// Items, indexed by dense item index (catalogue order).
    pub items: Vec<Item>,
    /// Names of the numeric feedback columns.
    pub feedback_columns: Vec<String>,
    /// The interactions.
    pub interactions: Interactions,
}

/// How many rows were skipped, by reason (only in `on_error = "skip"` mode).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SkipCounts {
    /// Total skipped rows.
    pub skipped_rows: usize,
    /// Skipped rows by reason.
    pub by_reason: std::collections::BTreeMap<String, usize>,
    /// The first few skipped rows' messages, for the log.
    pub examples: Vec<String>,
}

impl SkipCounts {
    pub(crate) fn record(&mut self, err: &DataError) {
        self.skipped_rows += 1;
        *self.by_reason.entry(err.reason().to_string()).or_default() += 1;
        if self.examples.len() < 5 {
            self.examples.push(err.to_string());
        }
    }
}

/// Summary figures of a dataset (the `ingest` stage's `--json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Distinct users.
    pub users: usize,
    /// Catalogue items.
    pub items: usize,
    /// Items with at least one interaction.
    pub items_with_interactions: usize,
    /// Interactions.
    pub interactions: usize,
    /// Interactions satisfying the positive rule.
    pub positives: usize,
    /// positives / interactions.
    pub positive_rate: f64,
    /// interactions / (users * items).
    pub density: f64,
    /// Earliest timestamp (unix seconds).
    pub time_min: i64,
    /// Latest timestamp (unix seconds).
    pub time_max: i64,
    /// Temporal split sizes: train, valid, test.
    pub temporal_split: [usize; 3],
    /// Leave-last-out sizes: train, valid, test.
    pub leave_last_out: [usize; 3],
    /// Feedback columns found.
    pub feedback_columns: Vec<String>,
}

impl Dataset {
    /// Computes the summary figures.
    pub fn stats(&self) -> Stats {
        let n = self.interactions.len();
        let positives = self.interactions.positive.iter().filter(|p| **p).count();
        let mut seen = vec![false; self.items.len()];
        for &i in &self.interactions.item {
            seen[i as usize] = true;
        }
        let count = |s: &[Split]| {
            let mut c = [0usize; 3];
            for x in s {
                c[*x as usize] += 1;
            }
            c
        };
        Stats {
            users: self.users.len(),
            items: self.items.len(),
            items_with_interactions: seen.iter().filter(|s| **s).count(),
            interactions: n,
            positives,
            positive_rate: if n == 0 {
                0.0
            } else {
                positives as f64 / n as f64
            },
            density: if self.users.is_empty() || self.items.is_empty() {
                0.0
            } else {
                n as f64 / (self.users.len() as f64 * self.items.len() as f64)
            },
            time_min: self
                .interactions
                .timestamp
                .iter()
                .copied()
                .min()
                .unwrap_or(0),
            time_max: self
                .interactions
                .timestamp
                .iter()
                .copied()
                .max()
                .unwrap_or(0),
            temporal_split: count(&self.interactions.split),
            leave_last_out: count(&self.interactions.loo_split),
            feedback_columns: self.feedback_columns.clone(),
        }
    }

    /// Index of a feedback column by name.
    pub fn feedback_index(&self, name: &str) -> Option<usize> {
        self.feedback_columns.iter().position(|c| c == name)
    }
}

/// The files [`load`] will read for this configuration, for input checksums before loading.
pub fn input_files(
    cfg: &wander_core::config::DataConfig,
    root: &std::path::Path,
) -> Vec<std::path::PathBuf> {
    use wander_core::config::DataFormat;
    let names: Vec<String> = match cfg.format {
        DataFormat::Recbole => std::fs::read_dir(root)
            .map(|d| {
                let mut v: Vec<String> = d
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".inter") || n.ends_with(".item"))
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default(),
        DataFormat::Movielens100k => vec!["u.data".into(), "u.item".into()],
        DataFormat::MovielensLatest => {
            vec!["ratings.csv".into(), "movies.csv".into(), "tags.csv".into()]
        }
        DataFormat::Generic => vec![cfg.interactions.clone(), cfg.items.clone()],
    };
    names
        .into_iter()
        .map(|n| root.join(n))
        .filter(|p| p.is_file())
        .collect()
}

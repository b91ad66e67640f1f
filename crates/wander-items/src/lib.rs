//! The item policy of wander (the low level of P1's hierarchy): a SASRec sequence
//! recommender trained in candle, full-ranking leave-last-out evaluation, and retrieval of
//! the best items inside the clusters the planner chose.
#![deny(missing_docs)]

pub mod eval;
pub mod model;
/// Cluster-restricted retrieval (in `wander-bundle`, which serving reads without candle).
pub use wander_bundle::retrieve;
pub mod train;

/// Errors of the item policy.
#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    /// Invalid input or configuration.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Filesystem or artifact error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
    /// The inference path refused the weights.
    #[error(transparent)]
    Bundle(#[from] wander_bundle::BundleError),
}

/// Result alias for [`ItemsError`].
pub type Result<T, E = ItemsError> = std::result::Result<T, E>;

/// Each user's item sequence under the leave-last-out split, as model ids (dataset item
/// index + 1; 0 is padding).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sequences {
    /// Training items per user, oldest first.
    pub train: Vec<Vec<u32>>,
    /// The validation item (second to last) per user.
    pub valid: Vec<Option<u32>>,
    /// The test item (last) per user.
    pub test: Vec<Option<u32>>,
    /// Catalogue size plus one.
    pub vocab: usize,
}

impl Sequences {
    /// From a dataset's interactions (all of them, implicit feedback; grouped by user in
    /// time order) and their leave-last-out split.
    pub fn from_dataset(ds: &wander_data::Dataset) -> Self {
        let it = &ds.interactions;
        let n_users = ds.users.len();
        let mut s = Sequences {
            train: vec![Vec::new(); n_users],
            valid: vec![None; n_users],
            test: vec![None; n_users],
            vocab: ds.items.len() + 1,
        };
        for k in 0..it.len() {
            let (u, i) = (it.user[k] as usize, it.item[k] + 1);
            match it.loo_split[k] {
                wander_data::Split::Train => s.train[u].push(i),
                wander_data::Split::Valid => s.valid[u] = Some(i),
                wander_data::Split::Test => s.test[u] = Some(i),
            }
        }
        s
    }

    /// Training interaction counts per model id (the popularity baseline's scores).
    pub fn popularity(&self) -> Vec<f32> {
        let mut c = vec![0f32; self.vocab];
        for s in &self.train {
            for &i in s {
                c[i as usize] += 1.0;
            }
        }
        c
    }
}

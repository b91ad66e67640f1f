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
    /// Empty sequences for `users` users and a catalogue of `items` items.
    pub fn empty(users: usize, items: usize) -> Self {
        Sequences {
            train: vec![Vec::new(); users],
            valid: vec![None; users],
            test: vec![None; users],
            vocab: items + 1,
        }
    }

    /// From a dataset's interactions (all of them, implicit feedback; grouped by user in
    /// time order) and their leave-last-out split.
    pub fn from_dataset(ds: &wander_data::Dataset) -> Self {
        let it = &ds.interactions;
        let mut s = Sequences::empty(ds.users.len(), ds.items.len());
        for k in 0..it.len() {
            s.place(it.user[k] as usize, it.item[k] + 1, it.loo_split[k]);
        }
        s
    }

    fn place(&mut self, user: usize, id: u32, split: wander_data::Split) {
        match split {
            wander_data::Split::Train => self.train[user].push(id),
            wander_data::Split::Valid => self.valid[user] = Some(id),
            wander_data::Split::Test => self.test[user] = Some(id),
        }
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

/// Builds [`Sequences`] from a stored log streamed in its order (user, then time; see
/// [`wander_data::for_each_event`]) without the log in memory: 4 bytes a training event.
/// A user's consecutive events are gathered first and stored in one exact allocation, so
/// the sequences carry no growth slack.
#[derive(Debug)]
pub struct SequencesBuilder {
    seqs: Sequences,
    users: usize,
    current: Option<u32>,
    run: Vec<u32>,
}

impl SequencesBuilder {
    /// For a catalogue of `users` users and `items` items.
    pub fn new(users: usize, items: usize) -> Self {
        SequencesBuilder {
            seqs: Sequences::empty(users, items),
            users,
            current: None,
            run: Vec::new(),
        }
    }

    /// Adds one event (dataset indices). Events of a user may come in any order relative to
    /// other users' (a user seen again continues the sequence), but within a user in time
    /// order.
    pub fn push(&mut self, user: u32, item: u32, split: wander_data::Split) -> Result<()> {
        if user as usize >= self.users || item as usize + 1 >= self.seqs.vocab {
            return Err(ItemsError::Invalid(format!(
                "an event names user {user} and item {item}, but the catalogue has {} users and {} items: artifacts of different runs",
                self.users,
                self.seqs.vocab - 1
            )));
        }
        if self.current != Some(user) {
            self.flush();
            self.current = Some(user);
        }
        match split {
            wander_data::Split::Train => self.run.push(item + 1),
            other => self.seqs.place(user as usize, item + 1, other),
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(u) = self.current {
            let train = &mut self.seqs.train[u as usize];
            train.reserve_exact(self.run.len());
            train.extend_from_slice(&self.run);
            self.run.clear();
        }
    }

    /// The sequences.
    pub fn finish(mut self) -> Sequences {
        self.flush();
        self.seqs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_data::Split;

    #[test]
    fn the_builder_gives_what_the_dataset_gives_in_any_user_order() {
        let mut ds = wander_data::Dataset {
            users: (0..4).map(|u| u.to_string()).collect(),
            items: vec![wander_data::Item::default(); 6],
            ..Default::default()
        };
        // User 2's events come in two runs, split by user 0's.
        let events = [
            (2, 1, Split::Train),
            (2, 3, Split::Train),
            (0, 5, Split::Train),
            (0, 4, Split::Valid),
            (2, 0, Split::Train),
            (2, 2, Split::Valid),
            (2, 5, Split::Test),
            (3, 1, Split::Test),
        ];
        let it = &mut ds.interactions;
        for &(u, i, s) in &events {
            it.user.push(u);
            it.item.push(i);
            it.loo_split.push(s);
        }
        let mut b = SequencesBuilder::new(4, 6);
        for &(u, i, s) in &events {
            b.push(u, i, s).unwrap();
        }
        let built = b.finish();
        assert_eq!(built, Sequences::from_dataset(&ds));
        assert_eq!(built.train[2], vec![2, 4, 1]);
        assert_eq!(
            (built.valid[2], built.test[2], built.test[1]),
            (Some(3), Some(6), None)
        );
        let mut b = SequencesBuilder::new(4, 6);
        let err = b.push(1, 6, Split::Train).unwrap_err().to_string();
        assert!(err.contains("item 6") && err.contains("6 items"), "{err}");
        assert!(b.push(4, 0, Split::Train).is_err());
    }
}

//! A newer window of the same log on the ids of an earlier one (issue 19, refresh): users
//! and items keep the dense indices they had, the ones the earlier window never saw are
//! appended, so everything built on the earlier indices (clusters, models, tables) stays
//! valid for the newer data.

use std::collections::HashMap;

use wander_core::artifact::{StageReader, StageWriter};

use crate::external::{split_cuts, SortedRowSink};
use crate::parquet_io::{
    catalogue_size, feedback_columns, for_each_event, for_each_event_with_feedback,
    write_catalogue, InteractionsWriter,
};
use crate::split::split_at;
use crate::{DataError, Dataset, Event, Interactions, Stats, INTERACTIONS_FILE};

/// A newer dataset re-indexed onto a base one.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebased {
    /// The newer window: the base's users and items first, in their order, then the new ones.
    pub dataset: Dataset,
    /// Indices (in `dataset`) of the items the base catalogue lacks, ascending.
    pub new_items: Vec<u32>,
    /// Indices (in `dataset`) of the users the base log lacks, ascending.
    pub new_users: Vec<u32>,
}

/// Re-indexes `newer` onto `base`'s users and items. An item the base catalogue has keeps
/// the base's record (its title, genres and text: descriptions persist across refreshes);
/// new items and users are appended in `newer`'s order. Interactions stay sorted by user,
/// then time, then the newer log's order.
pub fn rebase(base: &Dataset, newer: Dataset) -> Rebased {
    let item_index: HashMap<&str, u32> = base
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i as u32))
        .collect();
    let mut items = base.items.clone();
    let mut new_items = Vec::new();
    let item_map: Vec<u32> = newer
        .items
        .iter()
        .map(|it| match item_index.get(it.id.as_str()) {
            Some(&i) => i,
            None => {
                new_items.push(items.len() as u32);
                items.push(it.clone());
                (items.len() - 1) as u32
            }
        })
        .collect();
    let user_index: HashMap<&str, u32> = base
        .users
        .iter()
        .enumerate()
        .map(|(u, id)| (id.as_str(), u as u32))
        .collect();
    let mut users = base.users.clone();
    let mut new_users = Vec::new();
    let user_map: Vec<u32> = newer
        .users
        .iter()
        .map(|id| match user_index.get(id.as_str()) {
            Some(&u) => u,
            None => {
                new_users.push(users.len() as u32);
                users.push(id.clone());
                (users.len() - 1) as u32
            }
        })
        .collect();
    let it = newer.interactions;
    let user: Vec<u32> = it.user.iter().map(|&u| user_map[u as usize]).collect();
    let mut order: Vec<usize> = (0..user.len()).collect();
    order.sort_by_key(|&k| (user[k], it.timestamp[k], k));
    let pick = |v: &[u32]| order.iter().map(|&k| v[k]).collect::<Vec<u32>>();
    let interactions = Interactions {
        user: pick(&user),
        item: order
            .iter()
            .map(|&k| item_map[it.item[k] as usize])
            .collect(),
        timestamp: order.iter().map(|&k| it.timestamp[k]).collect(),
        feedback: it
            .feedback
            .iter()
            .map(|col| order.iter().map(|&k| col[k]).collect())
            .collect(),
        positive: order.iter().map(|&k| it.positive[k]).collect(),
        split: order.iter().map(|&k| it.split[k]).collect(),
        loo_split: order.iter().map(|&k| it.loo_split[k]).collect(),
    };
    Rebased {
        dataset: Dataset {
            users,
            items,
            feedback_columns: newer.feedback_columns,
            interactions,
        },
        new_items,
        new_users,
    }
}

/// The base log followed by a rebased newer window as one log (users' histories run on
/// across the boundary), sorted by user, then time, base rows before newer ones at equal
/// times; the second value marks each row that came from `newer`. Both must have the same
/// feedback columns, and `newer` must be rebased onto `base` (its users and items extend
/// the base's).
pub fn concat(base: &Dataset, newer: &Dataset) -> Result<(Dataset, Vec<bool>), String> {
    if base.feedback_columns != newer.feedback_columns {
        return Err(format!(
            "the feedback columns differ: [{}] before, [{}] in the newer window",
            base.feedback_columns.join(", "),
            newer.feedback_columns.join(", ")
        ));
    }
    let extends = |a: &[String], b: &[String]| b.len() >= a.len() && b[..a.len()] == *a;
    let same_items = newer.items.len() >= base.items.len()
        && newer.items[..base.items.len()]
            .iter()
            .zip(&base.items)
            .all(|(a, b)| a.id == b.id);
    if !extends(&base.users, &newer.users) || !same_items {
        return Err("the newer window is not re-indexed onto the base's users and items".into());
    }
    let (a, b) = (&base.interactions, &newer.interactions);
    let n = a.len() + b.len();
    let at = |k: usize| {
        if k < a.len() {
            (a, k)
        } else {
            (b, k - a.len())
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&k| {
        let (src, i) = at(k);
        (src.user[i], src.timestamp[i], k)
    });
    let col = |f: &dyn Fn(&Interactions, usize) -> u32| -> Vec<u32> {
        order
            .iter()
            .map(|&k| {
                let (src, i) = at(k);
                f(src, i)
            })
            .collect()
    };
    let interactions = Interactions {
        user: col(&|s, i| s.user[i]),
        item: col(&|s, i| s.item[i]),
        timestamp: order.iter().map(|&k| at(k).0.timestamp[at(k).1]).collect(),
        feedback: (0..base.feedback_columns.len())
            .map(|c| {
                order
                    .iter()
                    .map(|&k| at(k).0.feedback[c][at(k).1])
                    .collect()
            })
            .collect(),
        positive: order.iter().map(|&k| at(k).0.positive[at(k).1]).collect(),
        split: order.iter().map(|&k| at(k).0.split[at(k).1]).collect(),
        loo_split: order.iter().map(|&k| at(k).0.loo_split[at(k).1]).collect(),
    };
    let from_newer = order.iter().map(|&k| k >= a.len()).collect();
    Ok((
        Dataset {
            users: newer.users.clone(),
            items: newer.items.clone(),
            feedback_columns: newer.feedback_columns.clone(),
            interactions,
        },
        from_newer,
    ))
}

/// [`concat`] as a stream: visits the events of the base log stored in `base` and of the
/// rebased window `newer`, in [`concat`]'s order, each with whether it came from `newer`;
/// the base log is read one record batch at a time, so only `newer` is in memory. Refuses
/// a window with other feedback columns, or one whose users and items do not extend the
/// stored catalogue's.
pub fn for_each_concat_event(
    base: &StageReader,
    newer: &Dataset,
    mut visit: impl FnMut(Event, bool),
) -> Result<u64, DataError> {
    concat_scan(base, newer, false, |e, _, from_newer| visit(e, from_newer))
}

/// [`for_each_concat_event`], with every feedback value of each event when `values`.
fn concat_scan(
    base: &StageReader,
    newer: &Dataset,
    values: bool,
    mut visit: impl FnMut(Event, &[f64], bool),
) -> Result<u64, DataError> {
    let columns = feedback_columns(base)?;
    let stored = || base.path(INTERACTIONS_FILE).unwrap_or_default();
    if columns != newer.feedback_columns {
        return Err(DataError::Parquet {
            file: stored(),
            message: format!(
                "the feedback columns differ: [{}] before, [{}] in the newer window",
                columns.join(", "),
                newer.feedback_columns.join(", ")
            ),
        });
    }
    let size = catalogue_size(base)?;
    if newer.users.len() < size.users || newer.items.len() < size.items {
        return Err(DataError::Parquet {
            file: stored(),
            message: "the newer window is not re-indexed onto the base's users and items".into(),
        });
    }
    let it = &newer.interactions;
    let event = |k: usize| Event {
        user: it.user[k],
        item: it.item[k],
        timestamp: it.timestamp[k],
        positive: it.positive[k],
        split: it.split[k],
        loo_split: it.loo_split[k],
    };
    let mut row_values = vec![0.0; if values { columns.len() } else { 0 }];
    let mut emit = |k: usize, visit: &mut dyn FnMut(Event, &[f64], bool)| {
        for (slot, col) in row_values.iter_mut().zip(&it.feedback) {
            *slot = col[k];
        }
        visit(event(k), &row_values, true);
    };
    let mut next = 0usize;
    let on_base = |e: Event, v: &[f64]| {
        // At equal user and time the base's events come first, as in `concat`.
        while next < it.len() && (it.user[next], it.timestamp[next]) < (e.user, e.timestamp) {
            emit(next, &mut visit);
            next += 1;
        }
        visit(e, v, false);
    };
    let mut visited = if values {
        for_each_event_with_feedback(base, on_base)?
    } else {
        let mut on_base = on_base;
        for_each_event(base, |e| on_base(e, &[]))?
    };
    while next < it.len() {
        emit(next, &mut visit);
        next += 1;
    }
    visited += it.len() as u64;
    Ok(visited)
}

/// [`concat`] split again in time and written as a dataset: the stored base log and the
/// rebased window `newer` as one log, the temporal split recomputed over it at
/// `valid`/`test` and leave-last-out per user, written into `stage` with `newer`'s users and
/// items; each event keeps its positive flag. The base log is streamed (a few passes for the
/// split's cuts, one to write), so memory holds `newer` and one row group, not the log.
pub fn write_concat(
    base: &StageReader,
    newer: &Dataset,
    stage: &StageWriter,
    (valid, test): (f64, f64),
) -> Result<Stats, DataError> {
    let (mut n, mut min, mut max) = (0u64, i64::MAX, i64::MIN);
    for_each_concat_event(base, newer, |e, _| {
        n += 1;
        min = min.min(e.timestamp);
        max = max.max(e.timestamp);
    })?;
    if n == 0 {
        return Err(DataError::Empty {
            file: base.path(INTERACTIONS_FILE)?,
        });
    }
    let cuts = split_cuts(
        |visit| for_each_concat_event(base, newer, |e, _| visit(e.timestamp)).map(|_| ()),
        n,
        (min, max),
        (valid, test),
    )?
    .ok_or_else(|| DataError::Parquet {
        file: base.path(INTERACTIONS_FILE).unwrap_or_default(),
        message: "the stored log changed while it was read".into(),
    })?;
    let width = newer.feedback_columns.len();
    let mut writer = InteractionsWriter::new(stage, &newer.feedback_columns)?;
    let mut sink = SortedRowSink::new(&mut writer, width, newer.items.len());
    let mut failed = None;
    concat_scan(base, newer, true, |e, values, _| {
        if failed.is_none() {
            let row = (e.user, e.item, e.timestamp);
            if let Err(err) = sink.push(row, values, e.positive, split_at(e.timestamp, cuts)) {
                failed = Some(err);
            }
        }
    })?;
    if let Some(err) = failed {
        return Err(err);
    }
    let merged = sink.finish()?;
    writer.finish()?;
    write_catalogue(stage, &newer.items, &newer.users)?;
    let rows = merged.interactions;
    let (users, items) = (newer.users.len(), newer.items.len());
    Ok(Stats {
        users,
        items,
        items_with_interactions: merged.items_seen.iter().filter(|s| **s).count(),
        interactions: rows,
        positives: merged.positives,
        positive_rate: merged.positives as f64 / rows as f64,
        density: rows as f64 / (users as f64 * items as f64),
        time_min: merged.time_min,
        time_max: merged.time_max,
        temporal_split: merged.temporal_split,
        leave_last_out: merged.leave_last_out,
        feedback_columns: newer.feedback_columns.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, Split};

    fn item(id: &str, title: &str) -> Item {
        Item {
            id: id.into(),
            title: title.into(),
            ..Item::default()
        }
    }

    fn dataset(users: &[&str], items: &[Item], rows: &[(u32, u32, i64)]) -> Dataset {
        let n = rows.len();
        Dataset {
            users: users.iter().map(|s| s.to_string()).collect(),
            items: items.to_vec(),
            feedback_columns: vec!["rating".into()],
            interactions: Interactions {
                user: rows.iter().map(|r| r.0).collect(),
                item: rows.iter().map(|r| r.1).collect(),
                timestamp: rows.iter().map(|r| r.2).collect(),
                feedback: vec![rows.iter().map(|r| r.2 as f64).collect()],
                positive: vec![true; n],
                split: vec![Split::Train; n],
                loo_split: vec![Split::Train; n],
            },
        }
    }

    #[test]
    fn known_ids_keep_their_indices_and_new_ones_are_appended() {
        let base = dataset(
            &["u1", "u2"],
            &[item("a", "Alpha"), item("b", "Beta")],
            &[(0, 0, 1), (1, 1, 2)],
        );
        // The newer catalogue lists b before a, renames b and adds c; user u3 is new and
        // sorts before u2 in the newer window's own indices.
        let newer = dataset(
            &["u3", "u2"],
            &[
                item("b", "Beta, renamed"),
                item("c", "Gamma"),
                item("a", "Alpha"),
            ],
            &[(0, 1, 10), (1, 0, 11), (1, 2, 9)],
        );
        let r = rebase(&base, newer);
        let ids: Vec<&str> = r.dataset.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            r.dataset.items[1].title, "Beta",
            "the base's record persists"
        );
        assert_eq!(r.new_items, [2]);
        assert_eq!(r.dataset.users, ["u1", "u2", "u3"]);
        assert_eq!(r.new_users, [2]);
        let it = &r.dataset.interactions;
        // u2 (index 1) first, by time: a at 9, b at 11; then u3 with c at 10.
        assert_eq!(it.user, [1, 1, 2]);
        assert_eq!(it.item, [0, 1, 2]);
        assert_eq!(it.timestamp, [9, 11, 10]);
        assert_eq!(it.feedback[0], [9.0, 11.0, 10.0]);
    }

    #[test]
    fn concat_runs_histories_across_the_boundary_and_marks_newer_rows() {
        let base = dataset(
            &["u1", "u2"],
            &[item("a", "A"), item("b", "B")],
            &[(0, 0, 1), (1, 1, 2)],
        );
        let newer = dataset(
            &["u2", "u1"],
            &[item("a", "A"), item("b", "B")],
            &[(0, 0, 5), (1, 1, 3)],
        );
        let r = rebase(&base, newer);
        let (all, from_newer) = concat(&base, &r.dataset).unwrap();
        assert_eq!(all.interactions.user, [0, 0, 1, 1]);
        assert_eq!(all.interactions.timestamp, [1, 3, 2, 5]);
        assert_eq!(from_newer, [false, true, false, true]);
        let mut other = r.dataset.clone();
        other.feedback_columns = vec!["watch_ratio".into()];
        assert!(concat(&base, &other)
            .unwrap_err()
            .contains("feedback columns"));
        let unrelated = dataset(&["x"], &[item("z", "Z")], &[(0, 0, 1)]);
        assert!(concat(&base, &unrelated).is_err());
    }
}

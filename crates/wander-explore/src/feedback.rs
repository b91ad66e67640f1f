//! Collective feedback labels for the alignment model (P2): how users who had interests
//! `(c1, c2)` liked their engagement with a novel cluster `c`, aggregated over all of them.
//!
//! Unlike the novelty model's transitions, *every* interaction counts here, positive or not:
//! a label is a rate of positive feedback (or a mean feedback value), so the negatives are
//! what give it meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wander_data::{Dataset, Split};

use crate::{ExploreError, Result};

/// One engagement with a cluster outside the user's current two interests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    /// User.
    pub user: u32,
    /// Older of the user's two most recent distinct positively engaged clusters.
    pub c1: u32,
    /// The most recent one.
    pub c2: u32,
    /// The novel cluster engaged with (not in `{c1, c2}`).
    pub next: u32,
    /// Whether the engagement was positive (the configured rule).
    pub positive: bool,
    /// The feedback column's value.
    pub value: f64,
    /// Period of the engagement.
    pub split: Split,
}

/// Mines feedback events. Each user's interactions are read in time order; the user's
/// interest state is the last two distinct clusters of *positive* engagement. Every
/// interaction (positive or not) with a cluster outside that state, once the state has two
/// clusters, is an event; a positive one then moves the state on.
pub fn events(ds: &Dataset, item_cluster: &[u32], feedback_column: usize) -> Vec<FeedbackEvent> {
    let it = &ds.interactions;
    let values = it.feedback.get(feedback_column);
    let mut miner = EventMiner::new(item_cluster);
    (0..it.len())
        .filter_map(|k| {
            miner.push(
                it.user[k],
                it.item[k],
                it.positive[k],
                values.map_or(f64::NAN, |v| v[k]),
                it.split[k],
            )
        })
        .collect()
}

/// [`events`] one interaction at a time, for a log streamed in its stored order (grouped by
/// user, in time order within a user), so the log need not be in memory. A user met again
/// after another's interactions starts afresh, as in [`events`].
#[derive(Debug, Clone)]
pub struct EventMiner<'a> {
    item_cluster: &'a [u32],
    user: Option<u32>,
    /// The user's interest state: the last two distinct positively engaged clusters.
    state: (Option<u32>, Option<u32>),
}

impl<'a> EventMiner<'a> {
    /// A miner over items' clusters.
    pub fn new(item_cluster: &'a [u32]) -> Self {
        EventMiner {
            item_cluster,
            user: None,
            state: (None, None),
        }
    }

    /// Feeds the next interaction (`value`: the feedback column's); returns the feedback
    /// event it makes, if any.
    ///
    /// # Panics
    /// If `item` has no cluster in `item_cluster`.
    pub fn push(
        &mut self,
        user: u32,
        item: u32,
        positive: bool,
        value: f64,
        split: Split,
    ) -> Option<FeedbackEvent> {
        if self.user != Some(user) {
            self.user = Some(user);
            self.state = (None, None);
        }
        let c = self.item_cluster[item as usize];
        let (c1, c2) = self.state;
        let made = match (c1, c2) {
            (Some(a), Some(b)) if c != a && c != b => Some(FeedbackEvent {
                user,
                c1: a,
                c2: b,
                next: c,
                positive,
                value,
                split,
            }),
            _ => None,
        };
        if positive && c2 != Some(c) {
            self.state = (c2, Some(c));
        }
        made
    }
}

pub use wander_core::config::{FeedbackNormalize as Normalize, FeedbackSignal as Signal};

/// Label settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelConfig {
    /// Aggregated signal.
    pub signal: Signal,
    /// Weight of the scaled value in [`Signal::Mixed`].
    pub value_weight: f64,
    /// Normalisation.
    pub normalize: Normalize,
    /// Triples seen from fewer distinct users get no label.
    pub min_users: usize,
    /// Labels are rounded to multiples of this (0: no rounding).
    pub round: f64,
    /// Pseudo-users at the candidate's global rate added to each label (0: none).
    pub shrinkage: f64,
}

/// How one event becomes the number a label averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventSignal {
    /// 1 for a positive engagement, 0 otherwise.
    Positive,
    /// The feedback column's value; events without one are skipped.
    Value,
    /// `(1 - value_weight) x positive + value_weight x (value - lo) / (hi - lo)`; events
    /// without a value are skipped.
    Mixed {
        /// Weight of the scaled value.
        value_weight: f64,
        /// Smallest value over the events.
        lo: f64,
        /// Largest value over the events.
        hi: f64,
    },
}

impl EventSignal {
    /// The per-event signal of `signal`; a mixed one takes its value range from `events`
    /// (every period, so the scale is the same in each).
    pub fn new(signal: Signal, value_weight: f64, events: &[FeedbackEvent]) -> Result<Self> {
        Ok(match signal {
            Signal::Positive => EventSignal::Positive,
            Signal::Value => EventSignal::Value,
            Signal::Mixed => {
                if !(0.0..=1.0).contains(&value_weight) {
                    return Err(ExploreError::Invalid(format!(
                        "feedback.value_weight must be in [0, 1], not {value_weight}"
                    )));
                }
                let (lo, hi) = events
                    .iter()
                    .map(|e| e.value)
                    .filter(|v| v.is_finite())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    });
                if !(hi > lo) {
                    return Err(ExploreError::Invalid(format!(
                        "feedback.signal = \"mixed\" needs a data.feedback value that varies over the feedback events (its range is [{lo}, {hi}])"
                    )));
                }
                EventSignal::Mixed {
                    value_weight,
                    lo,
                    hi,
                }
            }
        })
    }

    /// The event's number, or `None` when the event lacks the value the signal reads.
    pub fn of(&self, e: &FeedbackEvent) -> Option<f64> {
        let positive = f64::from(u8::from(e.positive));
        match *self {
            EventSignal::Positive => Some(positive),
            EventSignal::Value => e.value.is_finite().then_some(e.value),
            EventSignal::Mixed {
                value_weight,
                lo,
                hi,
            } => e.value.is_finite().then(|| {
                (1.0 - value_weight) * positive + value_weight * (e.value - lo) / (hi - lo)
            }),
        }
    }
}

/// One collective-feedback label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// History cluster (older).
    pub c1: u32,
    /// History cluster (recent).
    pub c2: u32,
    /// Candidate novel cluster.
    pub next: u32,
    /// The normalised, rounded label.
    pub label: f64,
    /// The aggregated rate before normalisation: the mean over users of each user's mean
    /// signal, so no single heavy user dominates.
    pub rate: f64,
    /// Distinct users behind it.
    pub users: u32,
    /// Events behind it.
    pub events: u32,
}

/// Users who had the signal sum `s` over `n` engagements with `next` from state `(c1, c2)`
/// in one period: the sufficient statistics of a label. Any engine that groups the events by
/// `(c1, c2, next, user)` and then by `(c1, c2, next, s, n)` produces exactly these, so labels
/// computed from them do not depend on how the events were summed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelPart {
    /// History cluster (older).
    pub c1: u32,
    /// History cluster (recent).
    pub c2: u32,
    /// Candidate novel cluster.
    pub next: u32,
    /// One user's signal sum.
    pub s: f64,
    /// That user's engagements.
    pub n: u32,
    /// Users with exactly this `(s, n)`.
    pub users: u32,
}

/// Sorts parts into their canonical order: `(c1, c2, next, s, n)`.
pub fn sort_parts(parts: &mut [LabelPart]) {
    parts.sort_unstable_by(|x, y| {
        (x.c1, x.c2, x.next)
            .cmp(&(y.c1, y.c2, y.next))
            .then(x.s.total_cmp(&y.s))
            .then(x.n.cmp(&y.n))
    });
}

/// One period's label parts from the events, in canonical order.
///
/// The events are sorted by triple and user rather than gathered in a map of maps: at tens
/// of millions of events a tree node per (triple, user) took about 10 GiB, a sorted row 24
/// bytes. The sort is stable, so each user's values add up in log order, as before.
pub fn label_parts(events: &[FeedbackEvent], split: Split, signal: &EventSignal) -> Vec<LabelPart> {
    let mut rows: Vec<((u32, u32, u32), u32, f64)> = events
        .iter()
        .filter(|e| e.split == split)
        .filter_map(|e| signal.of(e).map(|v| ((e.c1, e.c2, e.next), e.user, v)))
        .collect();
    rows.sort_by_key(|&(triple, user, _)| (triple, user));
    let mut parts = Vec::new();
    let mut stats: Vec<(f64, u32)> = Vec::new();
    for of_triple in rows.chunk_by(|a, b| a.0 == b.0) {
        let (c1, c2, next) = of_triple[0].0;
        // (sum, count) per user, in user order.
        stats.clear();
        stats.extend(of_triple.chunk_by(|a, b| a.1 == b.1).map(|of_user| {
            let sum = of_user.iter().fold(0.0, |sum, row| sum + row.2);
            (sum, of_user.len() as u32)
        }));
        stats.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(s, n) in &stats {
            count_user(&mut parts, (c1, c2, next), s, n);
        }
    }
    parts
}

/// Adds one user's `(sum, count)` for a triple to `parts`, whose last part it joins when it
/// has the same triple and values (users of one triple arrive sorted by those values).
fn count_user(parts: &mut Vec<LabelPart>, (c1, c2, next): (u32, u32, u32), s: f64, n: u32) {
    match parts.last_mut() {
        Some(LabelPart {
            c1: p1,
            c2: p2,
            next: pn,
            s: ps,
            n: pk,
            users,
        }) if (*p1, *p2, *pn, *pk) == (c1, c2, next, n) && ps.total_cmp(&s).is_eq() => *users += 1,
        _ => parts.push(LabelPart {
            c1,
            c2,
            next,
            s,
            n,
            users: 1,
        }),
    }
}

/// Per-cluster rate of the signal over all events of a period (mean over events), from the
/// period's label parts.
pub fn cluster_rates(parts: &[LabelPart], n_clusters: usize) -> Vec<f64> {
    let mut sum = vec![0.0; n_clusters];
    let mut count = vec![0.0; n_clusters];
    for p in parts {
        sum[p.next as usize] += p.s * f64::from(p.users);
        count[p.next as usize] += f64::from(p.n) * f64::from(p.users);
    }
    sum.iter()
        .zip(&count)
        .map(|(s, c)| if *c > 0.0 { s / c } else { f64::NAN })
        .collect()
}

/// Aggregates one period's events into labels, sorted by `(c1, c2, next)`.
pub fn labels(
    events: &[FeedbackEvent],
    split: Split,
    cfg: &LabelConfig,
    n_clusters: usize,
) -> Result<Vec<Label>> {
    let signal = EventSignal::new(cfg.signal, cfg.value_weight, events)?;
    labels_from_parts(&label_parts(events, split, &signal), cfg, n_clusters)
}

/// Labels from one period's parts (in canonical order, see [`sort_parts`]), sorted by
/// `(c1, c2, next)`. The rate is the mean over users of each user's mean signal.
pub fn labels_from_parts(
    parts: &[LabelPart],
    cfg: &LabelConfig,
    n_clusters: usize,
) -> Result<Vec<Label>> {
    if cfg.round < 0.0 || !cfg.round.is_finite() {
        return Err(ExploreError::Invalid(format!(
            "feedback.round must be a finite number >= 0, not {}",
            cfg.round
        )));
    }
    if !(cfg.shrinkage >= 0.0 && cfg.shrinkage.is_finite()) {
        return Err(ExploreError::Invalid(format!(
            "feedback.shrinkage must be a finite number >= 0, not {}",
            cfg.shrinkage
        )));
    }
    if let Some(p) = parts.iter().find(|p| p.next as usize >= n_clusters) {
        return Err(ExploreError::Invalid(format!(
            "label part names cluster {} but there are {n_clusters} clusters",
            p.next
        )));
    }
    let global = cluster_rates(parts, n_clusters);
    let mut out: Vec<Label> = Vec::new();
    let mut start = 0;
    while start < parts.len() {
        let key = (parts[start].c1, parts[start].c2, parts[start].next);
        let mut end = start;
        let (mut users, mut events, mut sum) = (0u32, 0u32, 0.0f64);
        while end < parts.len() && (parts[end].c1, parts[end].c2, parts[end].next) == key {
            let p = &parts[end];
            users += p.users;
            events += p.n * p.users;
            sum += f64::from(p.users) * (p.s / f64::from(p.n));
            end += 1;
        }
        if users as usize >= cfg.min_users.max(1) {
            let rate = sum / f64::from(users);
            let label = if cfg.shrinkage > 0.0 {
                (sum + cfg.shrinkage * global[key.2 as usize]) / (f64::from(users) + cfg.shrinkage)
            } else {
                rate
            };
            out.push(Label {
                c1: key.0,
                c2: key.1,
                next: key.2,
                label,
                rate,
                users,
                events,
            });
        }
        start = end;
    }
    match cfg.normalize {
        Normalize::Raw => {}
        Normalize::Relative => {
            for l in &mut out {
                l.label -= global[l.next as usize];
            }
        }
        Normalize::Percentile => {
            let rates: Vec<f64> = out.iter().map(|l| l.label).collect();
            let ranks = crate::metrics::average_ranks(&rates);
            let denom = (out.len().max(2) - 1) as f64;
            for (l, r) in out.iter_mut().zip(ranks) {
                l.label = r / denom;
            }
        }
    }
    if cfg.round > 0.0 {
        for l in &mut out {
            l.label = (l.label / cfg.round).round() * cfg.round;
        }
    }
    Ok(out)
}

/// A pairwise preference: after `(c1, c2)`, users liked `better` more than `worse`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    /// History cluster (older).
    pub c1: u32,
    /// History cluster (recent).
    pub c2: u32,
    /// Preferred candidate.
    pub better: u32,
    /// The other one.
    pub worse: u32,
    /// Label difference.
    pub margin: f64,
}

/// Pairwise examples: every two labels of the same history pair that differ by more than
/// `margin`.
pub fn preferences(labels: &[Label], margin: f64) -> Vec<Preference> {
    let mut out = Vec::new();
    let Ok(()) = try_for_each_preference(labels, margin, |p| {
        out.push(p);
        Ok::<(), std::convert::Infallible>(())
    });
    out
}

/// How many [`preferences`] the labels make, without holding them (they grow with the square
/// of the candidates per history pair).
pub fn preference_count(labels: &[Label], margin: f64) -> usize {
    let mut n = 0;
    let Ok(()) = try_for_each_preference(labels, margin, |_| {
        n += 1;
        Ok::<(), std::convert::Infallible>(())
    });
    n
}

/// Each of [`preferences`] in turn, in the same order, stopping at the first error of `visit`.
pub fn try_for_each_preference<E>(
    labels: &[Label],
    margin: f64,
    mut visit: impl FnMut(Preference) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    for of_pair in labels.chunk_by(|a, b| (a.c1, a.c2) == (b.c1, b.c2)) {
        for a in of_pair {
            for b in of_pair {
                if a.label - b.label > margin {
                    visit(Preference {
                        c1: a.c1,
                        c2: a.c2,
                        better: a.next,
                        worse: b.next,
                        margin: a.label - b.label,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// A seeded share of the `n` clusters whose labels training withholds as candidates, so that
/// evaluation can measure how a model scores candidates it never saw (at least one cluster
/// when `share > 0`, never all of them).
pub fn held_out_candidates(n: usize, share: f64, seed: u64) -> std::collections::BTreeSet<u32> {
    if n < 2 || !(share > 0.0) {
        return Default::default();
    }
    let k = ((n as f64 * share).round() as usize).clamp(1, n - 1);
    let mut ids: Vec<u32> = (0..n as u32).collect();
    wander_core::rng::Rng::new(seed ^ 0x5eed_c0de).shuffle(&mut ids);
    ids.into_iter().take(k).collect()
}

/// Labels grouped by history pair, in `(c1, c2)` order: one alignment training prompt each.
pub fn by_pair(labels: &[Label]) -> Vec<((u32, u32), Vec<(u32, f64)>)> {
    let mut m: BTreeMap<(u32, u32), Vec<(u32, f64)>> = BTreeMap::new();
    for l in labels {
        m.entry((l.c1, l.c2)).or_default().push((l.next, l.label));
    }
    m.into_iter().collect()
}

/// The system message of the alignment model's prompt.
pub const ALIGNMENT_SYSTEM: &str =
    "You judge how much users with these interests enjoy each new interest.";

/// System message of the candidate-conditioned alignment model.
pub const ALIGNMENT_CANDIDATE_SYSTEM: &str =
    "You judge how much users with these interests enjoy a new interest.";

/// Most levels a label written as text may take.
pub const MAX_LABEL_LEVELS: usize = 1001;

/// The levels of a label written as text (P2: labels rounded to a fixed interval): every
/// multiple of `round` from the lowest to the highest of `labels` after rounding, each with
/// its text at the interval's decimals (`0.35` for 0.05, `0.3` for 0.1).
pub fn label_levels(
    round: f64,
    labels: impl IntoIterator<Item = f64>,
) -> Result<Vec<(f64, String)>> {
    if !(round > 0.0 && round.is_finite()) {
        return Err(ExploreError::Invalid(format!(
            "a label written as text needs feedback.round above 0, not {round}"
        )));
    }
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for l in labels {
        if !l.is_finite() {
            return Err(ExploreError::Invalid(format!("a non-finite label ({l})")));
        }
        let k = (l / round).round() as i64;
        lo = lo.min(k);
        hi = hi.max(k);
    }
    if lo > hi {
        return Err(ExploreError::Invalid(
            "no labels to take text levels from".into(),
        ));
    }
    // One level more than the labels span when they are all equal: a text label needs two.
    let hi = hi.max(lo + 1);
    let count = (hi - lo + 1) as usize;
    if count > MAX_LABEL_LEVELS {
        return Err(ExploreError::Invalid(format!(
            "labels span {count} levels of feedback.round = {round} (at most {MAX_LABEL_LEVELS}): raise feedback.round"
        )));
    }
    let decimals = (0..=9)
        .find(|&d| {
            let scaled = round * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-9 * scaled.max(1.0)
        })
        .unwrap_or(9) as usize;
    Ok((lo..=hi)
        .map(|k| {
            let v = k as f64 * round;
            // `+ 0.0` turns -0.0 into 0.0, so zero never prints as "-0.00".
            let v = (v * 10f64.powi(decimals as i32)).round() / 10f64.powi(decimals as i32) + 0.0;
            (v, format!("{v:.decimals$}"))
        })
        .collect())
}

/// The user message of the candidate-conditioned alignment model: the history pair, then
/// the candidate last, so that the prompts of one pair differ only in their last tokens.
pub fn candidate_message(d1: &str, d2: &str, candidate: &str) -> String {
    format!("Recent interests: {d1}; then {d2}. How much will they enjoy this new interest: {candidate}")
}

/// One label as a JSON line for other trainers: the descriptions and the label.
pub fn label_line(l: &Label, describe: impl Fn(u32) -> String) -> String {
    serde_json::json!({
        "history": [describe(l.c1), describe(l.c2)],
        "candidate": describe(l.next),
        "label": l.label, "rate": l.rate, "users": l.users, "events": l.events,
        "c1": l.c1, "c2": l.c2, "next": l.next,
    })
    .to_string()
}

/// Each of `labels`' triples' own training label in `train`, shrunk towards the candidate's
/// rate `means[next]` by `k` pseudo-users; the rate itself where the triple has none.
pub fn remembered_labels(train: &[Label], labels: &[Label], means: &[f64], k: f64) -> Vec<f64> {
    let seen: BTreeMap<(u32, u32, u32), (f64, f64)> = train
        .iter()
        .map(|l| ((l.c1, l.c2, l.next), (l.label, f64::from(l.users))))
        .collect();
    labels
        .iter()
        .map(|l| {
            let prior = means[l.next as usize];
            match seen.get(&(l.c1, l.c2, l.next)) {
                Some(&(y, users)) if users + k > 0.0 => (users * y + k * prior) / (users + k),
                _ => prior,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_label_levels_follow_the_rounding_interval() {
        let l = label_levels(0.05, [0.1, 0.35, 0.2]).unwrap();
        let texts: Vec<&str> = l.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["0.10", "0.15", "0.20", "0.25", "0.30", "0.35"]);
        assert!((l[5].0 - 0.35).abs() < 1e-12);
        let l = label_levels(0.1, [-0.2, 0.04]).unwrap();
        let texts: Vec<&str> = l.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["-0.2", "-0.1", "0.0"]);
        let l = label_levels(1.0, [3.0]).unwrap();
        assert_eq!(l, vec![(3.0, "3".to_string()), (4.0, "4".to_string())]);
        assert!(label_levels(0.0, [0.5]).is_err());
        assert!(label_levels(0.05, []).is_err());
        assert!(label_levels(0.05, [f64::NAN]).is_err());
        assert!(label_levels(1e-6, [0.0, 1.0]).is_err());
    }

    #[test]
    fn held_out_candidates_are_a_seeded_strict_subset() {
        let a = held_out_candidates(64, 0.1, 3);
        assert_eq!(a.len(), 6);
        assert_eq!(a, held_out_candidates(64, 0.1, 3));
        assert_ne!(a, held_out_candidates(64, 0.1, 4));
        assert!(a.iter().all(|&c| c < 64));
        assert!(held_out_candidates(64, 0.0, 3).is_empty());
        assert_eq!(held_out_candidates(4, 0.9, 3).len(), 3);
        assert_eq!(held_out_candidates(4, 0.01, 3).len(), 1);
    }
    use wander_data::{Interactions, Item};

    fn dataset(rows: &[(u32, u32, bool, f64)]) -> Dataset {
        let n = rows.len();
        Dataset {
            users: vec!["a".into(), "b".into()],
            items: (0..10)
                .map(|i| Item {
                    id: i.to_string(),
                    ..Default::default()
                })
                .collect(),
            feedback_columns: vec!["rating".into()],
            interactions: Interactions {
                user: rows.iter().map(|r| r.0).collect(),
                item: rows.iter().map(|r| r.1).collect(),
                timestamp: (0..n as i64).collect(),
                feedback: vec![rows.iter().map(|r| r.3).collect()],
                positive: rows.iter().map(|r| r.2).collect(),
                split: vec![Split::Train; n],
                loo_split: vec![Split::Train; n],
            },
        }
    }

    #[test]
    fn events_follow_the_positive_interest_state() {
        // Items map to clusters 0..9 one to one. User 0: +0 +1 -2 +2 -0 +3.
        let ds = dataset(&[
            (0, 0, true, 5.0),
            (0, 1, true, 4.0),
            (0, 2, false, 2.0),
            (0, 2, true, 4.0),
            (0, 0, false, 1.0),
            (0, 3, true, 5.0),
            (1, 4, true, 5.0),
        ]);
        let clusters: Vec<u32> = (0..10).collect();
        let ev = events(&ds, &clusters, 0);
        let got: Vec<(u32, u32, u32, bool)> = ev
            .iter()
            .map(|e| (e.c1, e.c2, e.next, e.positive))
            .collect();
        // State (0,1): -2 and +2 are events; state becomes (1,2): -0 is an event, +3 too.
        assert_eq!(
            got,
            vec![
                (0, 1, 2, false),
                (0, 1, 2, true),
                (1, 2, 0, false),
                (1, 2, 3, true)
            ]
        );
        let cfg = LabelConfig {
            signal: Signal::Positive,
            value_weight: 0.5,
            normalize: Normalize::Raw,
            min_users: 1,
            round: 0.0,
            shrinkage: 0.0,
        };
        let l = labels(&ev, Split::Train, &cfg, 10).unwrap();
        assert_eq!(
            (l[0].c1, l[0].c2, l[0].next, l[0].rate, l[0].events),
            (0, 1, 2, 0.5, 2)
        );
        let v = labels(
            &ev,
            Split::Train,
            &LabelConfig {
                signal: Signal::Value,
                ..cfg
            },
            10,
        )
        .unwrap();
        assert_eq!(v[0].rate, 3.0);
        let r = labels(
            &ev,
            Split::Train,
            &LabelConfig {
                normalize: Normalize::Relative,
                ..cfg
            },
            10,
        )
        .unwrap();
        // Cluster 2's global rate is 0.5 (one of two), so the relative label is 0.
        assert_eq!(r[0].label, 0.0);
        let none = labels(
            &ev,
            Split::Train,
            &LabelConfig {
                min_users: 2,
                ..cfg
            },
            10,
        )
        .unwrap();
        assert!(none.is_empty());
        let p = preferences(&l, 0.1);
        let got: Vec<(u32, u32, u32, u32)> =
            p.iter().map(|p| (p.c1, p.c2, p.better, p.worse)).collect();
        assert_eq!(got, vec![(1, 2, 3, 0)]);
        assert!(labels(&ev, Split::Train, &LabelConfig { round: -1.0, ..cfg }, 10).is_err());
    }

    #[test]
    fn rounding_percentiles_and_preferences() {
        let mk = |next, rate| Label {
            c1: 0,
            c2: 1,
            next,
            label: rate,
            rate,
            users: 1,
            events: 1,
        };
        let ls = vec![mk(2, 0.9), mk(3, 0.2), mk(4, 0.5)];
        let p = preferences(&ls, 0.25);
        let got: Vec<(u32, u32)> = p.iter().map(|p| (p.better, p.worse)).collect();
        assert_eq!(got, vec![(2, 3), (2, 4), (4, 3)]);
        let grouped = by_pair(&ls);
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].1.len(), 3);
    }

    #[test]
    fn a_mixed_signal_weighs_the_positive_flag_and_the_scaled_value() {
        // Events of user 0 after state (0, 1): -2 (rating 2), +2 (rating 4); after (1, 2):
        // -0 (rating 1), +3 (rating 5). The ratings over the events span [1, 5].
        let ds = dataset(&[
            (0, 0, true, 5.0),
            (0, 1, true, 4.0),
            (0, 2, false, 2.0),
            (0, 2, true, 4.0),
            (0, 0, false, 1.0),
            (0, 3, true, 5.0),
        ]);
        let ev = events(&ds, &(0..10).collect::<Vec<u32>>(), 0);
        let cfg = |value_weight| LabelConfig {
            signal: Signal::Mixed,
            value_weight,
            normalize: Normalize::Raw,
            min_users: 1,
            round: 0.0,
            shrinkage: 0.0,
        };
        let rate = |w: f64| labels(&ev, Split::Train, &cfg(w), 10).unwrap()[0].rate;
        // (0.5 x 0 + 0.5 x 0.25 + 0.5 x 1 + 0.5 x 0.75) / 2.
        assert!((rate(0.5) - 0.5).abs() < 1e-12);
        // Weight 0 is the positive rate; weight 1 the value scaled to [0, 1].
        assert_eq!(rate(0.0), 0.5);
        assert!((rate(1.0) - 0.5).abs() < 1e-12);
        let last = |w: f64| labels(&ev, Split::Train, &cfg(w), 10).unwrap()[2].rate;
        assert_eq!((last(0.0), last(1.0)), (1.0, 1.0));
        assert!(labels(&ev, Split::Train, &cfg(1.5), 10).is_err());
        // A value that never varies cannot be scaled: a clear error, not NaN labels.
        let flat = dataset(&[(0, 0, true, 3.0), (0, 1, true, 3.0), (0, 2, false, 3.0)]);
        let ev = events(&flat, &(0..10).collect::<Vec<u32>>(), 0);
        let e = labels(&ev, Split::Train, &cfg(0.5), 10).unwrap_err();
        assert!(e.to_string().contains("varies"), "{e}");
    }

    #[test]
    fn shrinkage_moves_labels_from_few_users_towards_the_candidate_rate() {
        let part = |c1, c2, s, users| LabelPart {
            c1,
            c2,
            next: 2,
            s,
            n: 1,
            users,
        };
        // One user liked cluster 2 after (0, 1); three did not after (5, 6): its global rate
        // over the period's events is 1 / 4.
        let parts = vec![part(0, 1, 1.0, 1), part(5, 6, 0.0, 3)];
        let cfg = LabelConfig {
            signal: Signal::Positive,
            value_weight: 0.5,
            normalize: Normalize::Raw,
            min_users: 1,
            round: 0.0,
            shrinkage: 2.0,
        };
        let l = labels_from_parts(&parts, &cfg, 10).unwrap();
        // (1 + 2 x 0.25) / 3 and (0 + 2 x 0.25) / 5; the raw rates are kept beside them.
        assert!((l[0].label - 0.5).abs() < 1e-12 && l[0].rate == 1.0);
        assert!((l[1].label - 0.1).abs() < 1e-12 && l[1].rate == 0.0);
        let relative = labels_from_parts(
            &parts,
            &LabelConfig {
                normalize: Normalize::Relative,
                ..cfg
            },
            10,
        )
        .unwrap();
        assert!((relative[0].label - 0.25).abs() < 1e-12);
        assert!((relative[1].label + 0.15).abs() < 1e-12);
        // No shrinkage: the label is the rate.
        let plain = labels_from_parts(
            &parts,
            &LabelConfig {
                shrinkage: 0.0,
                ..cfg
            },
            10,
        )
        .unwrap();
        assert_eq!((plain[0].label, plain[1].label), (1.0, 0.0));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(labels_from_parts(
                &parts,
                &LabelConfig {
                    shrinkage: bad,
                    ..cfg
                },
                10
            )
            .is_err());
        }
    }

    #[test]
    fn a_remembered_label_is_shrunk_towards_the_candidates_rate() {
        let l = |c1, c2, next, label, users| Label {
            c1,
            c2,
            next,
            label,
            rate: label,
            users,
            events: users,
        };
        let train = [l(0, 1, 2, 1.0, 3), l(0, 1, 3, 0.0, 1)];
        let means = [0.5, 0.5, 0.4, 0.6];
        let test = [l(0, 1, 2, 0.0, 9), l(0, 1, 3, 0.0, 9), l(1, 0, 2, 0.0, 9)];
        let none = remembered_labels(&train, &test, &means, 0.0);
        assert_eq!(
            none,
            vec![1.0, 0.0, 0.4],
            "the label itself; the rate where there is none"
        );
        let some = remembered_labels(&train, &test, &means, 3.0);
        assert!((some[0] - (3.0 + 3.0 * 0.4) / 6.0).abs() < 1e-12);
        assert!((some[1] - (3.0 * 0.6) / 4.0).abs() < 1e-12);
        let all = remembered_labels(&train, &test, &means, 1e9);
        assert!(all
            .iter()
            .zip([0.4, 0.6, 0.4])
            .all(|(a, b)| (a - b).abs() < 1e-6));
    }

    /// The miner before it streamed: each user's run of interactions in one loop.
    fn by_runs(ds: &Dataset, item_cluster: &[u32], column: usize) -> Vec<FeedbackEvent> {
        let it = &ds.interactions;
        let values = it.feedback.get(column);
        let mut out = Vec::new();
        let mut start = 0;
        while start < it.len() {
            let mut end = start;
            while end < it.len() && it.user[end] == it.user[start] {
                end += 1;
            }
            let (mut c1, mut c2): (Option<u32>, Option<u32>) = (None, None);
            for k in start..end {
                let c = item_cluster[it.item[k] as usize];
                if let (Some(a), Some(b)) = (c1, c2) {
                    if c != a && c != b {
                        out.push(FeedbackEvent {
                            user: it.user[k],
                            c1: a,
                            c2: b,
                            next: c,
                            positive: it.positive[k],
                            value: values.map_or(f64::NAN, |v| v[k]),
                            split: it.split[k],
                        });
                    }
                }
                if it.positive[k] && c2 != Some(c) {
                    c1 = c2;
                    c2 = Some(c);
                }
            }
            start = end;
        }
        out
    }

    /// The map-of-maps aggregation `label_parts` replaced (its merging step shared): the oracle.
    fn label_parts_by_maps(
        events: &[FeedbackEvent],
        split: Split,
        signal: &EventSignal,
    ) -> Vec<LabelPart> {
        // (c1, c2, next) -> user -> (sum, count)
        let mut per: BTreeMap<(u32, u32, u32), BTreeMap<u32, (f64, u32)>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.split == split) {
            if let Some(v) = signal.of(e) {
                let s = per
                    .entry((e.c1, e.c2, e.next))
                    .or_default()
                    .entry(e.user)
                    .or_default();
                s.0 += v;
                s.1 += 1;
            }
        }
        let mut parts = Vec::new();
        for ((c1, c2, next), users) in per {
            let mut stats: Vec<(f64, u32)> = users.into_values().collect();
            stats.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (s, n) in stats {
                count_user(&mut parts, (c1, c2, next), s, n);
            }
        }
        parts
    }

    proptest::proptest! {
        /// Sorting rows gives the parts of the map of maps, to the bit, for each signal: ties
        /// in sums, several events of one user, events of other periods and without values.
        #[test]
        fn label_parts_by_sorting_equal_the_map_of_maps(
            raw in proptest::collection::vec((0u32..5, 0u32..3, 0u32..3, 0u32..4, proptest::bool::ANY, 0u8..5, 0u8..3), 0..300),
        ) {
            let events: Vec<FeedbackEvent> = raw.iter().map(|&(user, c1, c2, next, positive, v, split)| FeedbackEvent {
                user, c1, c2, next, positive,
                value: if v == 4 { f64::NAN } else { f64::from(v) * 0.3 },
                split: Split::from_u8(split).unwrap(),
            }).collect();
            let signals = [
                EventSignal::Positive,
                EventSignal::Value,
                EventSignal::Mixed { value_weight: 0.3, lo: 0.0, hi: 0.9 },
            ];
            let bits = |parts: Vec<LabelPart>| -> Vec<(u32, u32, u32, u64, u32, u32)> {
                parts.iter().map(|p| (p.c1, p.c2, p.next, p.s.to_bits(), p.n, p.users)).collect()
            };
            for signal in &signals {
                for split in [Split::Train, Split::Valid, Split::Test] {
                    proptest::prop_assert_eq!(
                        bits(label_parts(&events, split, signal)),
                        bits(label_parts_by_maps(&events, split, signal))
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_streaming_miner_finds_what_the_user_runs_find(
            log in proptest::collection::vec((0u32..4, 0u32..9, proptest::bool::weighted(0.6), 0u8..3, 0u8..6), 0..200),
            clusters in proptest::collection::vec(0u32..4, 9),
        ) {
            let mut it = wander_data::Interactions { feedback: vec![Vec::new()], ..Default::default() };
            for &(u, i, p, s, v) in &log {
                it.user.push(u);
                it.item.push(i);
                it.positive.push(p);
                it.split.push(Split::from_u8(s).unwrap());
                it.feedback[0].push(f64::from(v) * 0.5);
            }
            let ds = Dataset { interactions: it, ..Dataset::default() };
            proptest::prop_assert_eq!(events(&ds, &clusters, 0), by_runs(&ds, &clusters, 0));
        }
    }
}

//! Drift of cluster transitions over calendar periods (F1, "Refresh"): how much a history
//! pair's most frequent successors change from one period to the next, how much of a
//! transition table that drift rewrites, and what refreshing the table buys on the period
//! after it (a replay: tables fitted on earlier periods predict each next period).
//!
//! Everything here counts transitions; no model is involved. It measures how fast the
//! targets a novelty model is fine-tuned on go stale, which is what decides how often a
//! deployed system must refresh.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{bootstrap, hit_at, Estimate};
use crate::transitions::{PairCounts, Transition};

/// The calendar period of each timestamp: `(t - min) / period_seconds`, so period 0 starts
/// at the earliest timestamp. Empty input gives no periods.
pub fn period_of(timestamps: &[i64], period_seconds: i64) -> Vec<u32> {
    let Some(&start) = timestamps.iter().min() else {
        return Vec::new();
    };
    timestamps
        .iter()
        .map(|&t| period_at(start, t, period_seconds))
        .collect()
}

/// The period of time `t` in a log that starts at `start` (see [`period_of`]).
pub fn period_at(start: i64, t: i64, period_seconds: i64) -> u32 {
    ((t - start) / period_seconds.max(1)) as u32
}

/// Counts per `(c1, c2)` of each next cluster, over the transitions whose period lies in
/// `periods`.
pub fn counts_in(dated: &[(Transition, u32)], periods: std::ops::Range<u32>) -> PairCounts {
    let mut m: PairCounts = BTreeMap::new();
    for (t, _) in dated.iter().filter(|(_, p)| periods.contains(p)) {
        *m.entry((t.c1, t.c2))
            .or_default()
            .entry(t.next)
            .or_default() += 1;
    }
    m
}

/// The `k` most frequent next clusters, most frequent first; ties go to the smaller id so
/// the result does not depend on map order.
pub fn top_successors(next: &BTreeMap<u32, u32>, k: usize) -> Vec<u32> {
    let mut ranked: Vec<(u32, u32)> = next.iter().map(|(&c, &n)| (c, n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().take(k).map(|(c, _)| c).collect()
}

/// |a ∩ b| / |a ∪ b| of two sets given as lists without repeats; 1 for two empty lists
/// (they agree).
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let inter = a.iter().filter(|x| b.contains(x)).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The top-`k` successor Jaccard of every pair seen at least `min_support` times in both
/// periods, in pair order.
pub fn successor_jaccard(
    before: &PairCounts,
    after: &PairCounts,
    k: usize,
    min_support: u32,
) -> Vec<f64> {
    let support = |m: &BTreeMap<u32, u32>| m.values().sum::<u32>();
    before
        .iter()
        .filter_map(|(pair, a)| {
            let b = after.get(pair)?;
            (support(a) >= min_support && support(b) >= min_support)
                .then(|| jaccard(&top_successors(a, k), &top_successors(b, k)))
        })
        .collect()
}

/// A transition table: each pair's ranked successors, and the window's most frequent
/// targets for pairs it never saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountTable {
    ranked: BTreeMap<(u32, u32), Vec<u32>>,
    popular: Vec<u32>,
}

impl CountTable {
    /// The table of a window's counts.
    pub fn fit(counts: &PairCounts) -> Self {
        let mut per_target: BTreeMap<u32, u32> = BTreeMap::new();
        for next in counts.values() {
            for (&c, &n) in next {
                *per_target.entry(c).or_default() += n;
            }
        }
        CountTable {
            ranked: counts
                .iter()
                .map(|(&pair, next)| (pair, top_successors(next, usize::MAX)))
                .collect(),
            popular: top_successors(&per_target, usize::MAX),
        }
    }

    /// The first `k` clusters served after `(c1, c2)`: the pair's successors, then the
    /// window's popular targets, never `c1`, `c2` or a repeat. `hint` (a cluster to put
    /// first, such as the pair's most frequent recent successor) leads when given.
    pub fn serve(&self, c1: u32, c2: u32, k: usize, hint: Option<u32>) -> Vec<u32> {
        let own = self.ranked.get(&(c1, c2)).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::with_capacity(k);
        for c in hint
            .into_iter()
            .chain(own.iter().copied())
            .chain(self.popular.iter().copied())
        {
            if out.len() == k {
                break;
            }
            if c != c1 && c != c2 && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// The pair's most frequent successor in this window.
    pub fn top(&self, c1: u32, c2: u32) -> Option<u32> {
        self.ranked.get(&(c1, c2)).and_then(|r| r.first().copied())
    }

    /// Share of the pairs ranked in both tables whose most frequent successor differs, and
    /// how many such pairs there are.
    pub fn top1_changed(&self, newer: &CountTable) -> (f64, usize) {
        let mut both = 0usize;
        let mut changed = 0usize;
        for (pair, ranked) in &self.ranked {
            if let Some(other) = newer.ranked.get(pair) {
                both += 1;
                changed += usize::from(ranked.first() != other.first());
            }
        }
        (changed as f64 / both.max(1) as f64, both)
    }
}

/// The tables a replay compares, each predicting period `p` from what it was fitted on.
pub const REPLAY_STRATEGIES: [&str; 4] =
    ["stale", "refreshed", "last_period", "refreshed_recent_hint"];

/// Settings of [`analyse`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftSettings {
    /// Top-k successors compared (F1: 5) and the hit@k cut.
    pub k: usize,
    /// A pair enters the Jaccard only with at least this many transitions in both periods.
    pub min_support: u32,
    /// Periods the stale table is fitted on; the replay predicts each later period.
    pub warmup: u32,
    /// Bootstrap resamples.
    pub rounds: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

/// One calendar period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodFigures {
    /// Period index (0: the one holding the earliest interaction).
    pub period: u32,
    /// Transitions whose next cluster was entered in it.
    pub transitions: usize,
    /// Distinct history pairs among them.
    pub pairs: usize,
}

/// Drift from one period to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    /// The later period.
    pub period: u32,
    /// Pairs with enough support in both periods.
    pub pairs: usize,
    /// Mean top-k successor Jaccard over them (NaN without pairs).
    #[serde(deserialize_with = "crate::metrics::nan_if_null")]
    pub successor_jaccard: f64,
    /// The same with the two periods' transitions shuffled between them (sizes kept): what
    /// sampling noise alone gives when nothing drifts.
    #[serde(deserialize_with = "crate::metrics::nan_if_null")]
    pub shuffled_jaccard: f64,
    /// Share of the refreshed table's pairs whose top-1 successor the refresh changed.
    #[serde(deserialize_with = "crate::metrics::nan_if_null")]
    pub table_top1_changed: f64,
}

/// One strategy of the replay, pooled over every predicted period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayFigures {
    /// Hit@1 over events.
    pub hit_at_1: Estimate,
    /// Hit@k over events.
    pub hit_at_k: Estimate,
    /// Hit@k minus the stale table's, paired by event.
    pub hit_at_k_vs_stale: Estimate,
    /// Hit@k per predicted period, in period order.
    pub hit_at_k_by_period: Vec<f64>,
}

/// What [`analyse`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Every period, in order.
    pub periods: Vec<PeriodFigures>,
    /// Each consecutive pair of periods.
    pub steps: Vec<StepFigures>,
    /// The top-k successor Jaccard pooled over every (pair, step) with support (F1 reports
    /// 0.17 month over month on its platform).
    #[serde(deserialize_with = "crate::metrics::nan_if_null")]
    pub successor_jaccard: f64,
    /// The (pair, step) count it rests on.
    pub jaccard_pairs: usize,
    /// The pooled Jaccard with each step's transitions shuffled between its two periods:
    /// the no-drift baseline. Drift is the gap between the two.
    #[serde(deserialize_with = "crate::metrics::nan_if_null")]
    pub shuffled_successor_jaccard: f64,
    /// The predicted periods.
    pub replay_periods: Vec<u32>,
    /// Transitions predicted in the replay.
    pub replay_events: usize,
    /// Per strategy of [`REPLAY_STRATEGIES`].
    pub replay: BTreeMap<String, ReplayFigures>,
}

/// Drift and replay over transitions tagged with their period (`0..n_periods`).
pub fn analyse(dated: &[(Transition, u32)], n_periods: u32, s: &DriftSettings) -> DriftReport {
    let per_period: Vec<PairCounts> = (0..n_periods).map(|p| counts_in(dated, p..p + 1)).collect();
    let periods = per_period
        .iter()
        .enumerate()
        .map(|(p, c)| PeriodFigures {
            period: p as u32,
            transitions: c
                .values()
                .flat_map(|m| m.values())
                .map(|&n| n as usize)
                .sum(),
            pairs: c.len(),
        })
        .collect();
    let mut pooled = Vec::new();
    let mut pooled_shuffled = Vec::new();
    let mut steps = Vec::new();
    let mut refreshed_before = CountTable::fit(&per_period.first().cloned().unwrap_or_default());
    for p in 1..n_periods {
        let scores = successor_jaccard(
            &per_period[p as usize - 1],
            &per_period[p as usize],
            s.k,
            s.min_support,
        );
        let shuffled = shuffled_jaccard(dated, p, s, s.seed ^ u64::from(p));
        let refreshed = CountTable::fit(&counts_in(dated, 0..p + 1));
        let (changed, _) = refreshed_before.top1_changed(&refreshed);
        steps.push(StepFigures {
            period: p,
            pairs: scores.len(),
            successor_jaccard: mean(&scores),
            shuffled_jaccard: mean(&shuffled),
            table_top1_changed: changed,
        });
        pooled.extend(scores);
        pooled_shuffled.extend(shuffled);
        refreshed_before = refreshed;
    }

    let warmup = s.warmup.max(1);
    let stale = CountTable::fit(&counts_in(dated, 0..warmup));
    let replay_periods: Vec<u32> = (warmup..n_periods)
        .filter(|p| dated.iter().any(|(_, q)| q == p))
        .collect();
    // hits[strategy] = (hit@1, hit@k) per event; by_period[strategy] = hit@k per period
    let mut hits: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); REPLAY_STRATEGIES.len()];
    let mut by_period: Vec<Vec<f64>> = vec![Vec::new(); REPLAY_STRATEGIES.len()];
    for &p in &replay_periods {
        let refreshed = CountTable::fit(&counts_in(dated, 0..p));
        let last = CountTable::fit(&counts_in(dated, p - 1..p));
        let mut period_hits = vec![Vec::new(); REPLAY_STRATEGIES.len()];
        for (t, _) in dated.iter().filter(|(_, q)| *q == p) {
            let lists = [
                stale.serve(t.c1, t.c2, s.k, None),
                refreshed.serve(t.c1, t.c2, s.k, None),
                last.serve(t.c1, t.c2, s.k, None),
                refreshed.serve(t.c1, t.c2, s.k, last.top(t.c1, t.c2)),
            ];
            for (i, list) in lists.iter().enumerate() {
                hits[i].0.push(hit_at(list, t.next, 1));
                hits[i].1.push(hit_at(list, t.next, s.k));
                period_hits[i].push(hit_at(list, t.next, s.k));
            }
        }
        for (i, h) in period_hits.iter().enumerate() {
            by_period[i].push(mean(h));
        }
    }
    let stale_k = hits[0].1.clone();
    let replay = REPLAY_STRATEGIES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let diff: Vec<f64> = hits[i].1.iter().zip(&stale_k).map(|(a, b)| a - b).collect();
            let est = |v: &[f64], salt: u64| bootstrap(v, s.rounds, s.seed ^ salt);
            (
                name.to_string(),
                ReplayFigures {
                    hit_at_1: est(&hits[i].0, 1),
                    hit_at_k: est(&hits[i].1, 2),
                    hit_at_k_vs_stale: est(&diff, 3),
                    hit_at_k_by_period: by_period[i].clone(),
                },
            )
        })
        .collect();
    DriftReport {
        periods,
        steps,
        successor_jaccard: mean(&pooled),
        jaccard_pairs: pooled.len(),
        shuffled_successor_jaccard: mean(&pooled_shuffled),
        replay_events: stale_k.len(),
        replay_periods,
        replay,
    }
}

/// [`successor_jaccard`] of periods `p - 1` and `p` after their transitions are dealt back
/// to the two periods at random, each keeping its size.
fn shuffled_jaccard(dated: &[(Transition, u32)], p: u32, s: &DriftSettings, seed: u64) -> Vec<f64> {
    let mut both: Vec<Transition> = dated
        .iter()
        .filter(|(_, q)| *q + 1 == p || *q == p)
        .map(|(t, _)| *t)
        .collect();
    let before = dated.iter().filter(|(_, q)| *q + 1 == p).count();
    wander_core::rng::Rng::new(seed).shuffle(&mut both);
    let relabelled: Vec<(Transition, u32)> = both
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, u32::from(i >= before)))
        .collect();
    successor_jaccard(
        &counts_in(&relabelled, 0..1),
        &counts_in(&relabelled, 1..2),
        s.k,
        s.min_support,
    )
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_data::Split;

    fn at(c1: u32, c2: u32, next: u32, period: u32) -> (Transition, u32) {
        (
            Transition {
                user: 0,
                c1,
                c2,
                next,
                split: Split::Train,
            },
            period,
        )
    }

    proptest::proptest! {
        #[test]
        fn jaccard_is_symmetric_bounded_and_one_on_itself(
            a in proptest::collection::btree_set(0u32..12, 0..8),
            b in proptest::collection::btree_set(0u32..12, 0..8),
        ) {
            let (a, b): (Vec<u32>, Vec<u32>) = (a.into_iter().collect(), b.into_iter().collect());
            let j = jaccard(&a, &b);
            proptest::prop_assert!((0.0..=1.0).contains(&j));
            proptest::prop_assert_eq!(j, jaccard(&b, &a));
            proptest::prop_assert_eq!(jaccard(&a, &a), 1.0);
        }

        #[test]
        fn served_lists_are_distinct_novel_and_at_most_k_long(
            triples in proptest::collection::vec((0u32..6, 0u32..6, 0u32..6), 0..40),
            c1 in 0u32..6, c2 in 0u32..6, k in 0usize..8, hint in proptest::option::of(0u32..6),
        ) {
            let mut counts: PairCounts = BTreeMap::new();
            for (a, b, n) in triples {
                *counts.entry((a, b)).or_default().entry(n).or_default() += 1;
            }
            let list = CountTable::fit(&counts).serve(c1, c2, k, hint);
            proptest::prop_assert!(list.len() <= k);
            proptest::prop_assert!(!list.contains(&c1) && !list.contains(&c2));
            let distinct: std::collections::BTreeSet<_> = list.iter().collect();
            proptest::prop_assert_eq!(distinct.len(), list.len());
        }
    }

    #[test]
    fn periods_start_at_the_earliest_timestamp() {
        assert_eq!(
            period_of(&[100, 50, 149, 150, 250], 100),
            vec![0, 0, 0, 1, 2]
        );
        assert!(period_of(&[], 10).is_empty());
    }

    #[test]
    fn top_successors_break_ties_by_id_and_jaccard_counts_the_overlap() {
        let next = BTreeMap::from([(7, 2), (3, 2), (9, 5), (1, 1)]);
        assert_eq!(top_successors(&next, 3), vec![9, 3, 7]);
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[]), 1.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
    }

    #[test]
    fn jaccard_skips_pairs_without_support_in_both_periods() {
        let before: PairCounts = BTreeMap::from([
            ((0, 1), BTreeMap::from([(2, 3), (3, 1)])),
            ((4, 5), BTreeMap::from([(6, 1)])),
        ]);
        let after: PairCounts = BTreeMap::from([
            ((0, 1), BTreeMap::from([(2, 1), (8, 3)])),
            ((4, 5), BTreeMap::from([(6, 9)])),
        ]);
        // only (0, 1) has 4 transitions in both; its top-2 sets {2, 3} and {8, 2}
        assert_eq!(successor_jaccard(&before, &after, 2, 4), vec![1.0 / 3.0]);
        assert_eq!(successor_jaccard(&before, &after, 2, 1).len(), 2);
    }

    #[test]
    fn served_lists_skip_the_history_and_fill_from_popular_targets() {
        let table = CountTable::fit(&BTreeMap::from([
            ((0, 1), BTreeMap::from([(2, 1)])),
            ((3, 4), BTreeMap::from([(0, 5), (5, 2)])),
        ]));
        // (0, 1)'s own successor, then the popular targets 0 (its history), 5, 2 (served)
        assert_eq!(table.serve(0, 1, 3, None), vec![2, 5]);
        assert_eq!(table.serve(9, 0, 2, None), vec![5, 2]);
        assert_eq!(table.serve(3, 4, 2, Some(2)), vec![2, 0]);
        assert_eq!(table.top(3, 4), Some(0));
        assert_eq!(table.top(1, 1), None);
    }

    #[test]
    fn a_refreshed_table_beats_a_stale_one_when_successors_move() {
        // period 0: pair (0, 1) goes to 2; from period 1 on it goes to 3
        let mut dated = vec![at(0, 1, 2, 0); 10];
        for p in 1..4 {
            dated.extend(std::iter::repeat_n(at(0, 1, 3, p), 10 + p as usize));
        }
        let s = DriftSettings {
            k: 1,
            min_support: 5,
            warmup: 1,
            rounds: 50,
            seed: 1,
        };
        let r = analyse(&dated, 4, &s);
        assert_eq!(r.periods.len(), 4);
        assert_eq!(r.periods[2].transitions, 12);
        assert_eq!(r.steps[0].successor_jaccard, 0.0);
        assert_eq!(r.steps[1].successor_jaccard, 1.0);
        assert_eq!(r.jaccard_pairs, 3);
        // periods 2 and 3 both go to 3 only: a shuffle between them changes nothing
        assert_eq!(r.steps[2].shuffled_jaccard, 1.0);
        assert_eq!(r.replay_periods, vec![1, 2, 3]);
        assert_eq!(r.replay_events, 11 + 12 + 13);
        assert_eq!(r.replay["stale"].hit_at_k.mean, 0.0);
        // period 1: the refreshed table still ranks 2 first (10 against 0), period 2 on: 3
        assert_eq!(
            r.replay["refreshed"].hit_at_k_by_period,
            vec![0.0, 1.0, 1.0]
        );
        assert_eq!(
            r.replay["last_period"].hit_at_k_by_period,
            vec![0.0, 1.0, 1.0]
        );
        assert_eq!(r.replay["refreshed_recent_hint"].hit_at_k.mean, 25.0 / 36.0);
        // the cumulative table's top-1 flips once, when period 1 is added (11 against 10)
        assert_eq!(r.steps[0].table_top1_changed, 1.0);
        assert_eq!(r.steps[1].table_top1_changed, 0.0);
    }
}

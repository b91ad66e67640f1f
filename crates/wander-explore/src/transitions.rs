//! Cluster transitions `(c1, c2) -> c_next` from users' positive engagement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wander_data::{Dataset, Split};

/// One observed transition: a user's last two distinct clusters and the next novel one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// User.
    pub user: u32,
    /// Older of the two history clusters.
    pub c1: u32,
    /// Most recent history cluster.
    pub c2: u32,
    /// The next cluster, not in {c1, c2}.
    pub next: u32,
    /// Period of the engagement with `next` (temporal split).
    pub split: Split,
}

/// Mines transitions. For each user, positive interactions in time order are mapped to
/// clusters and consecutive repeats removed (P1: "remove repeated cluster ids"); every run of
/// three consecutive entries `(c1, c2, c3)` with `c3` not in `{c1, c2}` is a transition,
/// labelled with the period of the engagement that made `c3`. Users whose collapsed
/// sequence is shorter than 2 give none.
pub fn mine(ds: &Dataset, item_cluster: &[u32]) -> Vec<Transition> {
    mine_tagged(ds, item_cluster, |_| ())
        .into_iter()
        .map(|(t, ())| t)
        .collect()
}

/// [`mine`], each transition with `tag(k)` of the interaction `k` that made its next
/// cluster (e.g. a calendar period from its timestamp).
pub fn mine_tagged<T: Copy>(
    ds: &Dataset,
    item_cluster: &[u32],
    tag: impl Fn(usize) -> T,
) -> Vec<(Transition, T)> {
    let it = &ds.interactions;
    let mut miner = Miner::new(item_cluster);
    (0..it.len())
        .filter_map(|k| {
            miner
                .push(it.user[k], it.item[k], it.positive[k], it.split[k])
                .map(|t| (t, tag(k)))
        })
        .collect()
}

/// [`mine`] one interaction at a time, for a log streamed in its stored order (grouped by
/// user, in time order within a user), so the log need not be in memory. A user's
/// interactions are one run: a user met again after another's starts afresh, as in [`mine`].
#[derive(Debug, Clone)]
pub struct Miner<'a> {
    item_cluster: &'a [u32],
    user: Option<u32>,
    /// The user's collapsed sequence's last two clusters, the latest last.
    recent: [Option<u32>; 2],
}

impl<'a> Miner<'a> {
    /// A miner over items' clusters.
    pub fn new(item_cluster: &'a [u32]) -> Self {
        Miner {
            item_cluster,
            user: None,
            recent: [None, None],
        }
    }

    /// Feeds the next interaction; returns the transition it completes, if any.
    ///
    /// # Panics
    /// If `item` has no cluster in `item_cluster`.
    pub fn push(
        &mut self,
        user: u32,
        item: u32,
        positive: bool,
        split: Split,
    ) -> Option<Transition> {
        if self.user != Some(user) {
            self.user = Some(user);
            self.recent = [None, None];
        }
        if !positive {
            return None;
        }
        let c = self.item_cluster[item as usize];
        if self.recent[1] == Some(c) {
            return None;
        }
        let made = match self.recent {
            [Some(c1), Some(c2)] if c != c1 => Some(Transition {
                user,
                c1,
                c2,
                next: c,
                split,
            }),
            _ => None,
        };
        self.recent = [self.recent[1], Some(c)];
        made
    }
}

/// Counts of next clusters per history pair.
pub type PairCounts = BTreeMap<(u32, u32), BTreeMap<u32, u32>>;

/// Counts per `(c1, c2)` of each next cluster, for one period.
pub fn counts(transitions: &[Transition], split: Split) -> PairCounts {
    let mut m: PairCounts = BTreeMap::new();
    for t in transitions.iter().filter(|t| t.split == split) {
        *m.entry((t.c1, t.c2))
            .or_default()
            .entry(t.next)
            .or_default() += 1;
    }
    m
}

/// The `budget` history pairs with the most transitions in `split` (ties to the lower
/// pair), in pair order: the pairs that carry the traffic, for a table too large to
/// precompute whole (the rest are served by the fallback).
pub fn pairs_by_traffic(
    transitions: &[Transition],
    split: Split,
    budget: usize,
) -> Vec<(u32, u32)> {
    let mut traffic: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for t in transitions.iter().filter(|t| t.split == split) {
        *traffic.entry((t.c1, t.c2)).or_default() += 1;
    }
    let mut ranked: Vec<((u32, u32), usize)> = traffic.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(budget);
    let mut pairs: Vec<(u32, u32)> = ranked.into_iter().map(|(p, _)| p).collect();
    pairs.sort_unstable();
    pairs
}

/// Summary of one period's transitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionStats {
    /// Transitions.
    pub transitions: usize,
    /// Distinct `(c1, c2)` pairs.
    pub pairs: usize,
    /// Distinct `(c1, c2, next)` triples.
    pub triples: usize,
    /// Share of transitions whose target is among the 10% most frequent targets.
    pub top10pct_target_share: f64,
}

/// Figures of a period's counts (`n_clusters` sizes the top-10% cut).
pub fn stats(c: &PairCounts, n_clusters: usize) -> TransitionStats {
    let mut per_target = vec![0usize; n_clusters];
    let mut total = 0;
    let mut triples = 0;
    for targets in c.values() {
        for (&t, &n) in targets {
            per_target[t as usize] += n as usize;
            total += n as usize;
            triples += 1;
        }
    }
    per_target.sort_unstable_by(|a, b| b.cmp(a));
    let top = (n_clusters as f64 * 0.1).ceil() as usize;
    TransitionStats {
        transitions: total,
        pairs: c.len(),
        triples,
        top10pct_target_share: per_target.iter().take(top).sum::<usize>() as f64
            / total.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn traffic_keeps_the_busiest_pairs_of_the_period_in_pair_order() {
        let t = |c1, c2, next, split| Transition {
            user: 0,
            c1,
            c2,
            next,
            split,
        };
        let ts = [
            t(3, 4, 1, Split::Train),
            t(3, 4, 2, Split::Train),
            t(3, 4, 0, Split::Train),
            t(0, 1, 2, Split::Train),
            t(0, 1, 3, Split::Train),
            t(1, 0, 2, Split::Train),
            t(2, 0, 1, Split::Train),
            t(2, 0, 1, Split::Test),
            t(2, 0, 3, Split::Test),
        ];
        assert_eq!(pairs_by_traffic(&ts, Split::Train, 2), [(0, 1), (3, 4)]);
        // One transition each for (1, 0) and (2, 0) in training: the lower pair wins.
        assert_eq!(
            pairs_by_traffic(&ts, Split::Train, 3),
            [(0, 1), (1, 0), (3, 4)]
        );
        assert_eq!(pairs_by_traffic(&ts, Split::Test, 9), [(2, 0)]);
        assert!(pairs_by_traffic(&ts, Split::Valid, 9).is_empty());
    }

    use super::*;
    use wander_data::{Interactions, Item};

    #[test]
    fn hand_example() {
        // One user, positive items mapped to clusters 0 0 1 2 1 3 (and one negative 5).
        let clusters = [0u32, 0, 1, 2, 1, 3, 5];
        let n = clusters.len();
        let ds = Dataset {
            users: vec!["u".into()],
            items: (0..n)
                .map(|i| Item {
                    id: i.to_string(),
                    ..Default::default()
                })
                .collect(),
            feedback_columns: vec![],
            interactions: Interactions {
                user: vec![0; n],
                item: (0..n as u32).collect(),
                timestamp: (0..n as i64).collect(),
                feedback: vec![],
                positive: vec![true, true, true, true, true, true, false],
                split: vec![Split::Train; n],
                loo_split: vec![Split::Train; n],
            },
        };
        let t = mine(&ds, &clusters);
        // Collapsed: 0 1 2 1 3 -> (0,1,2) yes; (1,2,1) no (1 in history); (2,1,3) yes.
        let triples: Vec<(u32, u32, u32)> = t.iter().map(|t| (t.c1, t.c2, t.next)).collect();
        assert_eq!(triples, vec![(0, 1, 2), (2, 1, 3)]);
        let c = counts(&t, Split::Train);
        assert_eq!(c[&(0, 1)][&2], 1);
        let s = stats(&c, 10);
        assert_eq!((s.transitions, s.pairs, s.triples), (2, 2, 2));
        assert!((s.top10pct_target_share - 0.5).abs() < 1e-12);
    }

    /// The miner before it streamed: each user's positive clusters collapsed, then every
    /// window of three whose last is new to the first two.
    fn by_windows(ds: &Dataset, item_cluster: &[u32]) -> Vec<Transition> {
        let it = &ds.interactions;
        let mut out = Vec::new();
        let mut start = 0;
        while start < it.len() {
            let mut end = start;
            while end < it.len() && it.user[end] == it.user[start] {
                end += 1;
            }
            let mut seq: Vec<(u32, usize)> = Vec::new();
            for k in start..end {
                let c = item_cluster[it.item[k] as usize];
                if it.positive[k] && seq.last().is_none_or(|(last, _)| *last != c) {
                    seq.push((c, k));
                }
            }
            for w in seq.windows(3) {
                let (c1, c2, (c3, k)) = (w[0].0, w[1].0, w[2]);
                if c3 != c1 && c3 != c2 {
                    out.push(Transition {
                        user: it.user[start],
                        c1,
                        c2,
                        next: c3,
                        split: it.split[k],
                    });
                }
            }
            start = end;
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn the_streaming_miner_finds_what_the_windows_find(
            events in proptest::collection::vec((0u32..4, 0u32..9, proptest::bool::weighted(0.7), 0u8..3), 0..200),
            clusters in proptest::collection::vec(0u32..4, 9),
        ) {
            let mut it = Interactions::default();
            for &(u, i, p, s) in &events {
                it.user.push(u);
                it.item.push(i);
                it.positive.push(p);
                it.split.push(Split::from_u8(s).unwrap());
            }
            let ds = Dataset { interactions: it, ..Dataset::default() };
            proptest::prop_assert_eq!(mine(&ds, &clusters), by_windows(&ds, &clusters));
        }
    }
}

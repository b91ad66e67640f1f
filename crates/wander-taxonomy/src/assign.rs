//! Placing items that arrive after the taxonomy was built (issue 19, "stable taxonomy"):
//! each new item goes to the existing fine cluster whose members' text is nearest its own,
//! and to that cluster's coarse parent, so cluster ids, descriptions and both models stay
//! valid. Re-clustering is a separate, explicit step.
//!
//! The comparison is in the sentence model's space alone: a new item has no consumption
//! yet, so the behaviour half of the mixed embedding the clusters were built in is unknown
//! for it, and its text vector cannot be compared with mixed centroids.

use wander_core::config::PlacementRule;

use crate::describe::{similarities, unit_centroids};
use crate::{Result, TaxonomyError};

/// Where a new item was placed, and how clearly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Fine cluster.
    pub fine: u32,
    /// Its coarse parent.
    pub coarse: u32,
    /// Cosine similarity to the fine cluster's unit text centroid.
    pub similarity: f64,
    /// The rule's score for the chosen cluster minus the runner-up's (0 with a single
    /// candidate): the centroid's cosine, or the neighbours' share of the vote. Small
    /// margins are the items a later re-clustering would most likely move.
    pub margin: f64,
}

/// The fine clusters' text centroids, from the items the taxonomy was built on.
#[derive(Debug, Clone)]
pub struct ItemPlacer {
    centroids: Vec<Vec<f64>>,
    parents: Vec<u32>,
    /// The built items' unit text vectors and fine clusters, for the neighbour vote.
    members: Vec<Vec<f64>>,
    member_fine: Vec<u32>,
}

impl ItemPlacer {
    /// From the built items' text embeddings, their fine clusters and each fine cluster's
    /// coarse parent. Every fine cluster must have a member and the vectors one dimension.
    pub fn new(text: &[Vec<f32>], item_fine: &[u32], fine_parent: &[u32]) -> Result<Self> {
        if text.len() != item_fine.len() {
            return Err(TaxonomyError::Invalid(format!(
                "{} text vectors for {} items",
                text.len(),
                item_fine.len()
            )));
        }
        let dim = text.first().map_or(0, Vec::len);
        if let Some(k) = text.iter().position(|v| v.len() != dim) {
            return Err(TaxonomyError::Invalid(format!(
                "item {k}'s text vector has {} dimensions, the first item's {dim}",
                text[k].len()
            )));
        }
        if let Some(k) = text.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(TaxonomyError::Invalid(format!(
                "item {k}'s text vector is not finite"
            )));
        }
        let n = fine_parent.len();
        if let Some(&c) = item_fine.iter().find(|&&c| c as usize >= n) {
            return Err(TaxonomyError::Invalid(format!(
                "an item is in fine cluster {c}, but there are {n}"
            )));
        }
        let centroids = unit_centroids(text, item_fine, n);
        if let Some(c) = centroids.iter().position(|v| v.iter().all(|&x| x == 0.0)) {
            return Err(TaxonomyError::Invalid(format!(
                "fine cluster {c} has no members, or their text vectors cancel out: nothing to place new items by"
            )));
        }
        let members = text
            .iter()
            .map(|v| {
                let n = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                v.iter()
                    .map(|&x| if n > 0.0 { f64::from(x) / n } else { 0.0 })
                    .collect()
            })
            .collect();
        Ok(ItemPlacer {
            centroids,
            parents: fine_parent.to_vec(),
            members,
            member_fine: item_fine.to_vec(),
        })
    }

    /// Number of fine clusters.
    pub fn clusters(&self) -> usize {
        self.centroids.len()
    }

    /// The nearest fine cluster of a new item's text vector; ties go to the lower id. A
    /// vector of another dimension, zero or not finite is an error naming `item`.
    pub fn place(&self, item: &str, v: &[f32]) -> Result<Placement> {
        self.place_by(PlacementRule::Centroid, 1, item, v, None)
    }

    /// Places a new item by `rule`: the nearest centroid to its text vector; a vote of the
    /// `k` built items nearest by cosine, each weighted by its (positive) similarity; or
    /// `consumption`, its co-consumption votes over the clusters ([`CoConsumption::votes`]),
    /// where it has them, else the centroid. Ties go to the lower cluster id. Errors as
    /// [`ItemPlacer::place`], and for votes of the wrong length.
    pub fn place_by(
        &self,
        rule: PlacementRule,
        k: usize,
        item: &str,
        v: &[f32],
        consumption: Option<&[f64]>,
    ) -> Result<Placement> {
        if let Some(votes) = consumption {
            if votes.len() != self.centroids.len() || votes.iter().any(|x| !x.is_finite()) {
                return Err(TaxonomyError::Invalid(format!(
                    "new item {item}: {} consumption votes for {} clusters, or not finite",
                    votes.len(),
                    self.centroids.len()
                )));
            }
        }
        let dim = self.centroids.first().map_or(0, Vec::len);
        if v.len() != dim {
            return Err(TaxonomyError::Invalid(format!(
                "new item {item}: text vector of {} dimensions, the taxonomy's {dim}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(TaxonomyError::Invalid(format!(
                "new item {item}: text vector is not finite"
            )));
        }
        if v.iter().all(|&x| x == 0.0) {
            return Err(TaxonomyError::Invalid(format!(
                "new item {item}: text vector is zero (no text to place it by)"
            )));
        }
        let to_centroids = similarities(v, &self.centroids);
        let scores = match (rule, consumption) {
            (PlacementRule::Consumption, Some(votes)) => votes.to_vec(),
            (PlacementRule::Centroid | PlacementRule::Consumption, _) => to_centroids.clone(),
            (PlacementRule::Neighbours, _) => {
                let mut near: Vec<(usize, f64)> = similarities(v, &self.members)
                    .into_iter()
                    .enumerate()
                    .collect();
                let k = k.clamp(1, near.len());
                near.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut votes = vec![0.0f64; self.centroids.len()];
                for &(m, s) in &near[..k] {
                    votes[self.member_fine[m] as usize] += s.max(0.0);
                }
                let total: f64 = votes.iter().sum();
                if total > 0.0 {
                    votes.iter_mut().for_each(|x| *x /= total);
                    votes
                } else {
                    // No neighbour is on the item's side at all: the centroids decide.
                    to_centroids.clone()
                }
            }
        };
        let mut best = (0usize, f64::NEG_INFINITY);
        let mut second = f64::NEG_INFINITY;
        for (c, s) in scores.into_iter().enumerate() {
            if s > best.1 {
                second = best.1;
                best = (c, s);
            } else if s > second {
                second = s;
            }
        }
        let margin = if second.is_finite() {
            best.1 - second
        } else {
            0.0
        };
        Ok(Placement {
            fine: best.0 as u32,
            coarse: self.parents[best.0],
            similarity: to_centroids[best.0],
            margin,
        })
    }
}

/// Who engaged positively with what: each item's users and each user's items, distinct.
#[derive(Debug, Clone, PartialEq)]
pub struct CoConsumption {
    item_users: Vec<Vec<u32>>,
    user_items: Vec<Vec<u32>>,
}

impl CoConsumption {
    /// From an interaction log in columns (`n_items` items; user ids dense).
    pub fn new(n_items: usize, user: &[u32], item: &[u32], positive: &[bool]) -> Self {
        let mut b = CoConsumption::builder(n_items);
        for ((&u, &i), &p) in user.iter().zip(item).zip(positive) {
            b.push(u, i, p);
        }
        b.finish()
    }

    /// [`CoConsumption::new`] one interaction at a time, in any order, for a streamed log:
    /// it holds two ids a positive interaction, not the log.
    pub fn builder(n_items: usize) -> CoConsumptionBuilder {
        CoConsumptionBuilder {
            item_users: vec![Vec::new(); n_items],
            user_items: Vec::new(),
        }
    }

    /// Distinct users who engaged positively with `item`.
    pub fn users_of(&self, item: u32) -> usize {
        self.item_users.get(item as usize).map_or(0, Vec::len)
    }

    /// Shares over `n_clusters` of where `item`'s users' other engagements lie: each of its
    /// users with another engaged item of known cluster (`known`) casts one vote, split over
    /// the clusters of those items. `None` when fewer than `min_users` users vote.
    pub fn votes(
        &self,
        item: u32,
        known: impl Fn(u32) -> Option<u32>,
        n_clusters: usize,
        min_users: usize,
    ) -> Option<Vec<f64>> {
        let mut votes = vec![0.0f64; n_clusters];
        let mut voters = 0usize;
        for &u in self.item_users.get(item as usize)? {
            let clusters: Vec<u32> = self.user_items[u as usize]
                .iter()
                .filter(|&&j| j != item)
                .filter_map(|&j| known(j))
                .filter(|&c| (c as usize) < n_clusters)
                .collect();
            if clusters.is_empty() {
                continue;
            }
            voters += 1;
            let w = 1.0 / clusters.len() as f64;
            for c in clusters {
                votes[c as usize] += w;
            }
        }
        (voters >= min_users.max(1)).then(|| {
            votes.iter_mut().for_each(|x| *x /= voters as f64);
            votes
        })
    }
}

/// Collects a [`CoConsumption`] from interactions pushed one at a time.
#[derive(Debug, Clone)]
pub struct CoConsumptionBuilder {
    item_users: Vec<Vec<u32>>,
    user_items: Vec<Vec<u32>>,
}

impl CoConsumptionBuilder {
    /// Feeds one interaction (ignored unless positive and of a known item).
    pub fn push(&mut self, user: u32, item: u32, positive: bool) {
        // Every user seen has a row, as in the whole-log constructor.
        if self.user_items.len() <= user as usize {
            self.user_items.resize(user as usize + 1, Vec::new());
        }
        if positive && (item as usize) < self.item_users.len() {
            self.item_users[item as usize].push(user);
            self.user_items[user as usize].push(item);
        }
    }

    /// The distinct users of each item and items of each user.
    pub fn finish(mut self) -> CoConsumption {
        for v in self.item_users.iter_mut().chain(self.user_items.iter_mut()) {
            v.sort_unstable();
            v.dedup();
        }
        CoConsumption {
            item_users: self.item_users,
            user_items: self.user_items,
        }
    }
}

/// How a placement is made: the rule, the neighbour count, and for `consumption` the
/// fewest voting users and who engaged with what.
#[derive(Debug, Clone, Copy)]
pub struct PlacementSettings<'a> {
    /// The rule.
    pub rule: PlacementRule,
    /// Built items that vote under `neighbours`.
    pub neighbours: usize,
    /// Users an item needs to be placed by consumption (else by its text centroid).
    pub min_users: usize,
    /// The log's co-consumption (needed by `consumption`; without it, the centroid).
    pub consumption: Option<&'a CoConsumption>,
}

/// How well text-only placement recovers the clusters of items whose clusters are known:
/// a share of each fine cluster's members (never its last one) is held out, the placer is
/// built from the rest, and each held-out item is placed by its text alone.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlacementCheck {
    /// Items held out.
    pub held_out: usize,
    /// Share placed in their own fine cluster.
    pub fine_accuracy: f64,
    /// Share placed under their own coarse cluster.
    pub coarse_accuracy: f64,
    /// Share of the held-out items in their most common fine cluster: what always naming
    /// one cluster would score.
    pub majority_fine_accuracy: f64,
    /// Mean margin of the placements (the rule's score minus the runner-up's).
    pub mean_margin: f64,
    /// Placements made by consumption votes (the rest by text).
    pub by_consumption: usize,
}

/// The [`PlacementCheck`] of a built taxonomy under a placement rule (and its neighbour
/// count): `fraction` of every fine cluster with at least two members held out (seeded), at
/// least one each; the same items for every rule. The clusters were built from mixed
/// text and behaviour vectors, so this measures what a new item, which has text but no
/// consumption, can be expected to get.
pub fn held_out_check(
    text: &[Vec<f32>],
    item_fine: &[u32],
    fine_parent: &[u32],
    settings: PlacementSettings<'_>,
    fraction: f64,
    seed: u64,
) -> Result<PlacementCheck> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(TaxonomyError::Invalid(format!(
            "the held-out fraction must lie strictly between 0 and 1, not {fraction}"
        )));
    }
    if text.len() != item_fine.len() {
        return Err(TaxonomyError::Invalid(format!(
            "{} text vectors for {} items",
            text.len(),
            item_fine.len()
        )));
    }
    let n = fine_parent.len();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &c) in item_fine.iter().enumerate() {
        members
            .get_mut(c as usize)
            .ok_or_else(|| {
                TaxonomyError::Invalid(format!("an item is in fine cluster {c}, but there are {n}"))
            })?
            .push(i);
    }
    let mut rng = wander_core::rng::Rng::new(seed);
    let mut held = vec![false; item_fine.len()];
    for m in members.iter_mut().filter(|m| m.len() >= 2) {
        rng.shuffle(m);
        let take = ((m.len() as f64 * fraction).round() as usize).clamp(1, m.len() - 1);
        for &i in &m[..take] {
            held[i] = true;
        }
    }
    let keep: Vec<usize> = (0..item_fine.len()).filter(|&i| !held[i]).collect();
    let kept_text: Vec<Vec<f32>> = keep.iter().map(|&i| text[i].clone()).collect();
    let kept_fine: Vec<u32> = keep.iter().map(|&i| item_fine[i]).collect();
    let placer = ItemPlacer::new(&kept_text, &kept_fine, fine_parent)?;
    let (mut fine_hits, mut coarse_hits, mut margin, mut count) = (0usize, 0usize, 0.0, 0usize);
    let mut per_cluster = vec![0usize; n];
    let mut by_consumption = 0usize;
    for i in (0..item_fine.len()).filter(|&i| held[i]) {
        let votes = match (settings.rule, settings.consumption) {
            (PlacementRule::Consumption, Some(co)) => co.votes(
                i as u32,
                |j| (!held.get(j as usize).copied().unwrap_or(true)).then(|| item_fine[j as usize]),
                n,
                settings.min_users,
            ),
            _ => None,
        };
        by_consumption += usize::from(votes.is_some());
        let p = placer.place_by(
            settings.rule,
            settings.neighbours,
            &format!("held-out item {i}"),
            &text[i],
            votes.as_deref(),
        )?;
        let own = item_fine[i];
        fine_hits += usize::from(p.fine == own);
        coarse_hits += usize::from(p.coarse == fine_parent[own as usize]);
        margin += p.margin;
        per_cluster[own as usize] += 1;
        count += 1;
    }
    let share = |k: usize| {
        if count == 0 {
            0.0
        } else {
            k as f64 / count as f64
        }
    };
    Ok(PlacementCheck {
        held_out: count,
        fine_accuracy: share(fine_hits),
        coarse_accuracy: share(coarse_hits),
        majority_fine_accuracy: share(per_cluster.iter().copied().max().unwrap_or(0)),
        mean_margin: if count == 0 {
            0.0
        } else {
            margin / count as f64
        },
        by_consumption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn placer() -> ItemPlacer {
        // Fine 0 and 1 under coarse 0, fine 2 under coarse 1.
        let text = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.9, 0.1, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
            vec![0.1, 0.0, 0.9],
        ];
        ItemPlacer::new(&text, &[0, 0, 1, 2, 2], &[0, 0, 1]).unwrap()
    }

    #[test]
    fn a_new_item_goes_to_the_nearest_members_cluster_and_its_parent() {
        let p = placer();
        let got = p.place("new-1", &[0.0, 0.2, 3.0]).unwrap();
        assert_eq!((got.fine, got.coarse), (2, 1));
        assert!(got.similarity > 0.9 && got.margin > 0.5, "{got:?}");
        let got = p.place("new-2", &[0.1, 1.0, 0.0]).unwrap();
        assert_eq!((got.fine, got.coarse), (1, 0));
    }

    #[test]
    fn an_even_split_goes_to_the_lower_id_with_zero_margin() {
        let text = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let p = ItemPlacer::new(&text, &[0, 1], &[0, 0]).unwrap();
        let got = p.place("x", &[1.0, 1.0]).unwrap();
        assert_eq!(got.fine, 0);
        assert!(got.margin.abs() < 1e-12);
    }

    #[test]
    fn bad_vectors_and_maps_are_errors_naming_what_is_wrong() {
        let p = placer();
        let e = p.place("new-7", &[f32::NAN, 0.0, 0.0]).unwrap_err();
        assert!(e.to_string().contains("new-7") && e.to_string().contains("finite"));
        assert!(p
            .place("z", &[0.0, 0.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("zero"));
        assert!(p
            .place("d", &[1.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("dimensions"));
        let empty = ItemPlacer::new(&[vec![1.0, 0.0]], &[0], &[0, 0]).unwrap_err();
        assert!(empty.to_string().contains("fine cluster 1"), "{empty}");
        let out = ItemPlacer::new(&[vec![1.0, 0.0]], &[3], &[0]).unwrap_err();
        assert!(out.to_string().contains("fine cluster 3"), "{out}");
        let ragged = ItemPlacer::new(&[vec![1.0, 0.0], vec![1.0]], &[0, 0], &[0]).unwrap_err();
        assert!(ragged.to_string().contains("item 1"), "{ragged}");
    }

    #[test]
    fn the_held_out_check_recovers_well_separated_clusters() {
        // Three tight clusters around the axes; every held-out item goes home.
        let mut text = Vec::new();
        let mut fine = Vec::new();
        for c in 0..3u32 {
            for k in 0..10 {
                let mut v = vec![0.05 * k as f32; 3];
                v[c as usize] = 1.0;
                text.push(v);
                fine.push(c);
            }
        }
        let centroid = PlacementSettings {
            rule: PlacementRule::Centroid,
            neighbours: 1,
            min_users: 1,
            consumption: None,
        };
        let check = held_out_check(&text, &fine, &[0, 0, 1], centroid, 0.2, 7).unwrap();
        assert_eq!(check.held_out, 6, "two of each cluster's ten");
        assert_eq!(check.fine_accuracy, 1.0);
        assert_eq!(check.coarse_accuracy, 1.0);
        assert!((check.majority_fine_accuracy - 1.0 / 3.0).abs() < 1e-12);
        // Labels that ignore the text: placement is no better than chance can make it.
        let shuffled: Vec<u32> = (0..30u32).map(|i| i % 3).collect();
        let noise = held_out_check(&text, &shuffled, &[0, 0, 1], centroid, 0.2, 7).unwrap();
        assert!(noise.fine_accuracy < 1.0, "{noise:?}");
        let vote = held_out_check(
            &text,
            &fine,
            &[0, 0, 1],
            PlacementSettings {
                rule: PlacementRule::Neighbours,
                neighbours: 3,
                ..centroid
            },
            0.2,
            7,
        )
        .unwrap();
        assert_eq!(vote.fine_accuracy, 1.0);
        assert!(held_out_check(&text, &fine, &[0, 0, 1], centroid, 1.0, 7).is_err());
        assert!(held_out_check(&text, &fine, &[0, 0, 1], centroid, f64::NAN, 7).is_err());
    }

    #[test]
    fn consumption_votes_follow_what_an_items_users_also_engaged_with() {
        // Items 0-1 in fine 0, 2-3 in fine 1; item 4 is new. Users 0 and 1 engaged with it
        // and with fine 1's items, user 2 with it and item 0; user 3 only negatively.
        let user = [0, 0, 0, 1, 1, 2, 2, 3, 3];
        let item = [4, 2, 3, 4, 3, 4, 0, 4, 1];
        let positive = [true, true, true, true, true, true, true, false, true];
        let co = CoConsumption::new(5, &user, &item, &positive);
        assert_eq!(co.users_of(4), 3);
        let known = |j: u32| [Some(0), Some(0), Some(1), Some(1), None][j as usize];
        let votes = co.votes(4, known, 2, 3).unwrap();
        assert!(
            (votes[0] - 1.0 / 3.0).abs() < 1e-12 && (votes[1] - 2.0 / 3.0).abs() < 1e-12,
            "{votes:?}"
        );
        assert!(
            co.votes(4, known, 2, 4).is_none(),
            "three voters, four needed"
        );
        // Its text says fine 0; its users say fine 1.
        let text = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let p = ItemPlacer::new(&text, &[0, 0, 1, 1], &[0, 1]).unwrap();
        let by_text = p
            .place_by(PlacementRule::Consumption, 1, "new", &[1.0, 0.0], None)
            .unwrap();
        assert_eq!(by_text.fine, 0, "no votes: the centroid");
        let got = p
            .place_by(
                PlacementRule::Consumption,
                1,
                "new",
                &[1.0, 0.0],
                Some(&votes),
            )
            .unwrap();
        assert_eq!((got.fine, got.coarse), (1, 1));
        assert!((got.margin - 1.0 / 3.0).abs() < 1e-12);
        assert!(p
            .place_by(
                PlacementRule::Consumption,
                1,
                "new",
                &[1.0, 0.0],
                Some(&[0.5])
            )
            .is_err());
    }

    #[test]
    fn neighbours_follow_a_cluster_that_no_centroid_summarises() {
        // Fine 0 is two tight groups on two axes: its centroid lies between them, farther
        // from a probe at x than fine 1's single item, yet the probe's nearest neighbours
        // are fine 0's.
        let text = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.98, 0.02, 0.0],
            vec![0.0, 0.0, 1.0],
            vec![0.02, 0.0, 0.98],
            vec![0.7, 0.0, 0.5],
            vec![0.0, 1.0, 0.0],
        ];
        let p = ItemPlacer::new(&text, &[0, 0, 0, 0, 1, 2], &[0, 0, 1]).unwrap();
        let probe = [1.0, 0.0, 0.05];
        assert_eq!(p.place("x", &probe).unwrap().fine, 1, "the centroid rule");
        let got = p
            .place_by(PlacementRule::Neighbours, 2, "x", &probe, None)
            .unwrap();
        assert_eq!((got.fine, got.coarse), (0, 0));
        assert!(
            (got.margin - 1.0).abs() < 1e-12,
            "both votes for fine 0: {got:?}"
        );
    }

    proptest! {
        /// Placing a built item's own vector back finds a cluster at least as near as its
        /// own, and the similarity is a cosine.
        #[test]
        fn placement_is_the_nearest_centroid(
            seed in proptest::collection::vec(-1.0f32..1.0, 24),
            probe in proptest::collection::vec(-1.0f32..1.0, 3),
        ) {
            let text: Vec<Vec<f32>> = seed.chunks(3).map(|c| c.to_vec()).collect();
            let assign: Vec<u32> = (0..text.len() as u32).map(|i| i % 4).collect();
            let p = match ItemPlacer::new(&text, &assign, &[0, 0, 1, 1]) {
                Ok(p) => p,
                Err(_) => return Ok(()), // a cluster whose members cancel out
            };
            prop_assume!(probe.iter().any(|&x| x != 0.0));
            let vote = p.place_by(PlacementRule::Neighbours, 3, "p", &probe, None).unwrap();
            prop_assert!(vote.margin >= 0.0 && vote.margin <= 1.0 + 1e-9);
            prop_assert_eq!(vote.coarse, [0, 0, 1, 1][vote.fine as usize]);
            let got = p.place("p", &probe).unwrap();
            prop_assert!(got.similarity <= 1.0 + 1e-9 && got.similarity >= -1.0 - 1e-9);
            prop_assert!(got.margin >= 0.0);
            prop_assert_eq!(got.coarse, [0, 0, 1, 1][got.fine as usize]);
            let centroids = unit_centroids(&text, &assign, 4);
            let norm = probe.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            for c in &centroids {
                let s = c.iter().zip(&probe).map(|(a, &b)| a * f64::from(b)).sum::<f64>() / norm;
                prop_assert!(s <= got.similarity + 1e-9);
            }
        }
    }
}

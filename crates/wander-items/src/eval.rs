//! Full-ranking evaluation: every catalogue item is a candidate, the user's already-seen
//! items are removed, and ties are broken by item id (lower id ranks first), so results are
//! exact and reproducible.

use serde::Serialize;

use crate::Sequences;

/// Which held-out item is the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The second-to-last item; history = training items.
    Valid,
    /// The last item; history = training items and the validation item.
    Test,
}

/// Per-user values and their means at cutoff `k`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankingMetrics {
    /// Cutoff.
    pub k: usize,
    /// Users evaluated (those with a target).
    pub users: usize,
    /// Mean NDCG@k (one relevant item: 1 / log2(rank + 1) within the cutoff).
    pub ndcg: f64,
    /// Mean Recall@k (= hit rate with one relevant item).
    pub recall: f64,
    /// Mean MRR@k (1 / rank within the cutoff).
    pub mrr: f64,
    /// The target's rank (1-based) per evaluated user.
    #[serde(skip)]
    pub ranks: Vec<usize>,
}

impl RankingMetrics {
    /// Metrics from 1-based ranks.
    pub fn from_ranks(ranks: Vec<usize>, k: usize) -> Self {
        let n = ranks.len().max(1) as f64;
        let ndcg = ranks.iter().map(|&r| ndcg_at(r, k)).sum::<f64>() / n;
        let recall = ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
        let mrr = ranks
            .iter()
            .map(|&r| if r <= k { 1.0 / r as f64 } else { 0.0 })
            .sum::<f64>()
            / n;
        RankingMetrics {
            k,
            users: ranks.len(),
            ndcg,
            recall,
            mrr,
            ranks,
        }
    }
}

/// NDCG@k of one relevant item at 1-based `rank`.
pub fn ndcg_at(rank: usize, k: usize) -> f64 {
    if rank >= 1 && rank <= k {
        1.0 / (rank as f64 + 1.0).log2()
    } else {
        0.0
    }
}

/// Rank (1-based) of `target` among the items `1..scores.len()` not in `seen` (sorted):
/// one plus the number of items scoring higher, or equal with a lower id.
/// A non-finite target score ranks last (a diverged model scores 0, never 1).
pub fn rank_of(scores: &[f32], target: u32, seen: &[u32]) -> usize {
    let st = scores[target as usize];
    let candidate = |i: u32| i != target && seen.binary_search(&i).is_err();
    if !st.is_finite() {
        return 1 + (1..scores.len() as u32).filter(|&i| candidate(i)).count();
    }
    let mut rank = 1;
    for (i, &s) in scores.iter().enumerate().skip(1) {
        let i = i as u32;
        if i == target || seen.binary_search(&i).is_ok() {
            continue;
        }
        if s > st || (s == st && i < target) {
            rank += 1;
        }
    }
    rank
}

/// Ranks of every user's target, scoring with `score(history) -> scores over all ids`.
/// Users are split into `batch_size` chunks over `threads` threads; each user's result
/// depends only on that user, so the metrics are identical for any batch size or thread
/// count.
pub fn ranks<F>(
    seqs: &Sequences,
    target: Target,
    score: F,
    batch_size: usize,
    threads: usize,
) -> Vec<usize>
where
    F: Fn(&[u32]) -> Vec<f32> + Sync,
{
    ranks_of(
        seqs,
        target,
        &users_with(seqs, target),
        score,
        batch_size,
        threads,
    )
}

/// The users that have `target`, in index order.
pub fn users_with(seqs: &Sequences, target: Target) -> Vec<usize> {
    (0..seqs.train.len())
        .filter(|&u| match target {
            Target::Valid => seqs.valid[u].is_some(),
            Target::Test => seqs.test[u].is_some(),
        })
        .collect()
}

/// At most `cap` of `users` (all of them when `cap` is 0 or not below their number),
/// drawn without replacement by `seed` and returned in index order: full ranking costs a
/// pass over the catalogue per user, so a million users are judged on a sample.
pub fn sample_users(users: Vec<usize>, cap: usize, seed: u64) -> Vec<usize> {
    if cap == 0 || cap >= users.len() {
        return users;
    }
    let mut drawn = users;
    wander_core::rng::Rng::new(seed).shuffle(&mut drawn);
    drawn.truncate(cap);
    drawn.sort_unstable();
    drawn
}

/// [`ranks`] for the given users only (each must have `target`).
///
/// # Panics
/// If a user lacks the target: the caller selects them with [`users_with`].
pub fn ranks_of<F>(
    seqs: &Sequences,
    target: Target,
    users: &[usize],
    score: F,
    batch_size: usize,
    threads: usize,
) -> Vec<usize>
where
    F: Fn(&[u32]) -> Vec<f32> + Sync,
{
    let batches: Vec<&[usize]> = users.chunks(batch_size.max(1)).collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); batches.len()];
    let threads = threads.max(1);
    std::thread::scope(|s| {
        let mut slots: Vec<&mut Vec<usize>> = out.iter_mut().collect();
        let mut work: Vec<Vec<(&[usize], &mut Vec<usize>)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (i, (b, slot)) in batches.iter().zip(slots.drain(..)).enumerate() {
            work[i % threads].push((b, slot));
        }
        for list in work {
            let score = &score;
            s.spawn(move || {
                for (batch, slot) in list {
                    for &u in batch {
                        let mut history = seqs.train[u].clone();
                        let t = match target {
                            Target::Valid => seqs.valid[u].expect("filtered"),
                            Target::Test => {
                                if let Some(v) = seqs.valid[u] {
                                    history.push(v);
                                }
                                seqs.test[u].expect("filtered")
                            }
                        };
                        let scores = score(&history);
                        let mut seen = history.clone();
                        seen.sort_unstable();
                        seen.dedup();
                        seen.retain(|&i| i != t);
                        slot.push(rank_of(&scores, t, &seen));
                    }
                }
            });
        }
    });
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_target_score_ranks_last() {
        // Items 1..=5; 3 is seen; the target is 2.
        let mut scores = vec![0.0, 0.1, f32::NAN, 0.3, 0.4, 0.5];
        assert_eq!(
            rank_of(&scores, 2, &[3]),
            4,
            "after the 3 other unseen items"
        );
        scores = vec![f32::NAN; 6];
        assert_eq!(rank_of(&scores, 2, &[]), 5);
        assert_eq!(ndcg_at(rank_of(&scores, 2, &[]), 10), 1.0 / 6f64.log2());
        scores = vec![0.0, 0.1, 0.2, f32::INFINITY, 0.4, 0.5];
        assert_eq!(rank_of(&scores, 3, &[]), 5, "inf is not a score either");
    }
    use proptest::prelude::*;

    #[test]
    fn hand_computed_example() {
        // Items 1..=5 (0 is padding). Scores: 1:0.9 2:0.5 3:0.5 4:0.1 5:0.8.
        let scores = [0.0, 0.9, 0.5, 0.5, 0.1, 0.8];
        // Target 3, nothing seen: 1 and 5 score higher, 2 ties with a lower id -> rank 4.
        assert_eq!(rank_of(&scores, 3, &[]), 4);
        // Seen item 1 is removed -> rank 3.
        assert_eq!(rank_of(&scores, 3, &[1]), 3);
        assert_eq!(rank_of(&scores, 2, &[]), 3);
        let m = RankingMetrics::from_ranks(vec![1, 3, 20], 10);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.mrr - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((m.ndcg - (1.0 + 1.0 / 4f64.log2()) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn identical_for_any_batch_size_and_thread_count() {
        let seqs = Sequences {
            train: (0..40u32)
                .map(|u| (1..=(u % 7 + 1)).map(|k| (u * 3 + k) % 30 + 1).collect())
                .collect(),
            valid: (0..40u32).map(|u| Some(u % 30 + 1)).collect(),
            test: (0..40u32)
                .map(|u| {
                    if u % 5 == 0 {
                        None
                    } else {
                        Some((u * 7) % 30 + 1)
                    }
                })
                .collect(),
            vocab: 31,
        };
        let score = |h: &[u32]| -> Vec<f32> {
            (0..31u32)
                .map(|i| ((i * 37 + h.len() as u32 * 11) % 13) as f32)
                .collect()
        };
        let base = ranks(&seqs, Target::Test, score, 1, 1);
        assert_eq!(base.len(), 32);
        for (b, t) in [(7, 2), (64, 3), (3, 1)] {
            assert_eq!(ranks(&seqs, Target::Test, score, b, t), base);
        }
        // A sample ranks the same users as the whole does, and only them.
        let all = users_with(&seqs, Target::Test);
        let some = sample_users(all.clone(), 10, 7);
        assert_eq!(some.len(), 10);
        assert!(some.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_users(all.clone(), 10, 7), some, "seeded");
        assert_ne!(sample_users(all.clone(), 10, 8), some);
        assert_eq!(sample_users(all.clone(), 0, 7), all);
        assert_eq!(sample_users(all.clone(), 99, 7), all);
        let sampled = ranks_of(&seqs, Target::Test, &some, score, 4, 2);
        let expected: Vec<usize> = some
            .iter()
            .map(|u| base[all.iter().position(|a| a == u).unwrap()])
            .collect();
        assert_eq!(sampled, expected);
    }

    proptest! {
        #[test]
        fn rank_is_within_the_candidate_count(scores in proptest::collection::vec(-3.0f32..3.0, 2..40), t in 1usize..40) {
            let t = (t % (scores.len() - 1) + 1) as u32;
            let r = rank_of(&scores, t, &[]);
            prop_assert!(r >= 1 && r <= scores.len() - 1);
            let m = RankingMetrics::from_ranks(vec![r], 10);
            prop_assert!(m.ndcg <= 1.0 && m.mrr <= 1.0 && m.ndcg >= m.mrr * 0.0);
        }
    }
}

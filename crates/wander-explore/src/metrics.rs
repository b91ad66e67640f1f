//! Offline metrics of next-cluster predictions, with bootstrap intervals.

use serde::Serialize;
use wander_core::rng::Rng;

/// A figure with its 95% percentile-bootstrap interval over evaluation events. Undefined
/// (no events) is NaN, written as JSON `null` and read back as NaN.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct Estimate {
    /// Mean over events.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// 2.5th percentile of the bootstrap means.
    #[serde(deserialize_with = "nan_if_null")]
    pub lo: f64,
    /// 97.5th percentile of the bootstrap means.
    #[serde(deserialize_with = "nan_if_null")]
    pub hi: f64,
}

pub use wander_core::float::nan_if_null;

/// Mean and 95% percentile bootstrap interval (Efron and Tibshirani, 1993, ch. 13) of
/// per-event values, resampling events with replacement `rounds` times.
pub fn bootstrap(values: &[f64], rounds: usize, seed: u64) -> Estimate {
    let n = values.len();
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = Rng::new(seed);
    let levels = (n > DRAW_COUNTS_ABOVE).then(|| levels_of(values)).flatten();
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| match &levels {
            Some(levels) => resampled_mean_of_levels(levels, n as u64, &mut rng),
            None => (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64,
        })
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Estimate {
        mean,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Above this many values, [`bootstrap`] draws a resample of values that take at most
/// [`MAX_LEVELS`] distinct values (hits, differences of hits) as its counts of each value,
/// from their multinomial distribution: the same distribution of resampled means as drawing
/// the values one by one, in O(levels log n) a round instead of O(n), which at tens of
/// millions of replayed events was most of `eval drift`. Below it the values are drawn one by
/// one as always, so every figure of a log of this size or less is what it was.
pub const DRAW_COUNTS_ABOVE: usize = 1 << 20;

/// The most distinct values a sample may take for [`bootstrap`] to draw it by counts.
pub const MAX_LEVELS: usize = 16;

/// The distinct values of `values` (by bit pattern) with their counts, in order of first
/// appearance; `None` past [`MAX_LEVELS`].
fn levels_of(values: &[f64]) -> Option<Vec<(f64, u64)>> {
    let mut levels: Vec<(f64, u64)> = Vec::new();
    for &v in values {
        match levels.iter().position(|(x, _)| x.to_bits() == v.to_bits()) {
            Some(at) => levels[at].1 += 1,
            None if levels.len() < MAX_LEVELS => levels.push((v, 1)),
            None => return None,
        }
    }
    Some(levels)
}

/// The mean of `n` values drawn with replacement from a sample of `n` summarised by its
/// levels: each level's count is binomial in the draws not yet given to earlier levels,
/// with its share of the sample not yet visited (the multinomial, one margin at a time).
fn resampled_mean_of_levels(levels: &[(f64, u64)], n: u64, rng: &mut Rng) -> f64 {
    let (mut draws_left, mut sample_left, mut sum) = (n, n, 0.0);
    for (i, &(value, count)) in levels.iter().enumerate() {
        let drawn = if i + 1 == levels.len() {
            draws_left
        } else {
            rng.binomial(draws_left, count as f64 / sample_left as f64)
        };
        sum += drawn as f64 * value;
        draws_left -= drawn;
        sample_left -= count;
    }
    sum / n as f64
}

/// 1 if `truth` is among the first `k` of `ranked`, else 0 (hit rate / recall@k with one
/// relevant item).
pub fn hit_at(ranked: &[u32], truth: u32, k: usize) -> f64 {
    f64::from(ranked.iter().take(k).any(|&c| c == truth))
}

/// Novelty of a recommended cluster: `-log2 p(c)`, with `p(c)` its share of training
/// transitions as a target (Zhou et al., PNAS 2010, "mean self-information"); unseen
/// clusters get half a count.
pub fn self_information(cluster: u32, target_counts: &[u64]) -> f64 {
    let total: u64 = target_counts.iter().sum();
    let c = target_counts.get(cluster as usize).copied().unwrap_or(0) as f64;
    -((c.max(0.5)) / (total.max(1) as f64)).log2()
}

/// Ranks (1-based) with ties sharing their average rank.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson correlation; NaN when either side is constant or there are fewer than 2 values.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (x[i] - mx, y[i] - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation: Pearson's on average ranks (ties handled).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Kendall's tau-b: (concordant - discordant) pairs over the geometric mean of the pairs
/// untied in each variable; 1 when `x` and `y` order the items alike, -1 when reversed, NaN
/// when either is constant or fewer than two items are given.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (mut concordant, mut discordant, mut untied_x, mut untied_y) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).signum() * f64::from(u8::from(x[i] != x[j]));
            let dy = (y[i] - y[j]).signum() * f64::from(u8::from(y[i] != y[j]));
            untied_x += dx.abs();
            untied_y += dy.abs();
            let d = dx * dy;
            if d > 0.0 {
                concordant += 1.0;
            } else if d < 0.0 {
                discordant += 1.0;
            }
        }
    }
    let denom = (untied_x * untied_y).sqrt();
    if denom > 0.0 {
        (concordant - discordant) / denom
    } else {
        f64::NAN
    }
}

/// The indices of each group's members, groups in order of their first member.
fn members_in_order<K: Ord + Copy>(groups: &[K]) -> Vec<Vec<usize>> {
    let mut slot: std::collections::BTreeMap<K, usize> = Default::default();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, &g) in groups.iter().enumerate() {
        let k = *slot.entry(g).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[k].push(i);
    }
    members
}

/// Spearman correlation inside each group (e.g. the candidates of one history pair, which is
/// what best-of-n has to rank), for every group with at least `min_size` members whose
/// `truth` is not constant; groups in order of their first member. A prediction constant
/// within a group ranks nothing there and counts as 0.
pub fn within_group_spearman<K: Ord + Copy>(
    groups: &[K],
    pred: &[f64],
    truth: &[f64],
    min_size: usize,
) -> Vec<f64> {
    members_in_order(groups)
        .into_iter()
        .filter_map(|idx| {
            let idx = &idx;
            let t: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
            let p: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
            let varies = |v: &[f64]| v.iter().any(|x| x != &v[0]);
            (idx.len() >= min_size && varies(&t)).then(|| {
                let r = spearman(&p, &t);
                if r.is_finite() {
                    r
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// Pairwise concordance inside each group: for every group, `(concordant, comparable)`
/// over the pairs of its members whose `truth` differs, a pair counting 1 when `pred` orders
/// it the same way and 1/2 when `pred` ties it. Groups with no comparable pair are left
/// out; groups in order of their first member. Unlike a within-group correlation it uses
/// every group with two differing labels.
pub fn within_group_concordance<K: Ord + Copy>(
    groups: &[K],
    pred: &[f64],
    truth: &[f64],
) -> Vec<(f64, f64)> {
    members_in_order(groups)
        .into_iter()
        .filter_map(|idx| {
            let idx = &idx;
            let (mut concordant, mut comparable) = (0.0, 0.0);
            for (a, &i) in idx.iter().enumerate() {
                for &j in &idx[a + 1..] {
                    if truth[i] == truth[j] {
                        continue;
                    }
                    comparable += 1.0;
                    let agree = (pred[i] - pred[j]) * (truth[i] - truth[j]);
                    concordant += if agree > 0.0 {
                        1.0
                    } else if pred[i] == pred[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            (comparable > 0.0).then_some((concordant, comparable))
        })
        .collect()
}

/// Ratio of sums `sum(a) / sum(b)` over `parts` with a 95% percentile bootstrap interval
/// resampling the parts (e.g. history pairs) with replacement.
pub fn bootstrap_ratio(parts: &[(f64, f64)], rounds: usize, seed: u64) -> Estimate {
    let ratio = |sample: &mut dyn Iterator<Item = (f64, f64)>| {
        let (a, b) = sample.fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
        a / b
    };
    let n = parts.len();
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = ratio(&mut parts.iter().copied());
    let mut rng = Rng::new(seed);
    let mut draws: Vec<f64> = (0..rounds.max(1))
        .map(|_| ratio(&mut (0..n).map(|_| parts[rng.below(n)])))
        .collect();
    draws.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| draws[((draws.len() - 1) as f64 * q).round() as usize];
    Estimate {
        mean,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Area under the ROC curve of `scores` for binary `positive` labels (Mann-Whitney U with
/// ties counted one half); NaN without both classes.
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let ranks = average_ranks(scores);
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Mean absolute error.
pub fn mae(pred: &[f64], truth: &[f64]) -> f64 {
    let n = pred.len().min(truth.len());
    pred.iter()
        .zip(truth)
        .map(|(p, t)| (p - t).abs())
        .sum::<f64>()
        / n.max(1) as f64
}

/// A statistic of paired data with a 95% percentile-bootstrap interval, resampling the
/// pairs (for correlations and AUC, which are not means of per-event values).
pub fn bootstrap_paired(
    x: &[f64],
    y: &[f64],
    stat: impl Fn(&[f64], &[f64]) -> f64,
    rounds: usize,
    seed: u64,
) -> Estimate {
    let n = x.len().min(y.len());
    let value = stat(&x[..n], &y[..n]);
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mut rng = Rng::new(seed);
    let mut stats: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let k = rng.below(n);
                a.push(x[k]);
                b.push(y[k]);
            }
            stat(&a, &b)
        })
        .filter(|v| v.is_finite())
        .collect();
    if stats.is_empty() {
        return Estimate {
            mean: value,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    stats.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    Estimate {
        mean: value,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Shannon entropy in bits of a distribution given by non-negative weights.
pub fn entropy_bits(weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    weights
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| {
            let p = w / total;
            -p * p.log2()
        })
        .sum()
}

/// The probability that two independent draws from a distribution given by log-weights
/// agree, Σ p²: F1's "repeated prompts agree" figure, computed exactly from the model's
/// distribution instead of from repeated samples. 0 for no finite weight.
pub fn repeat_agreement(logprobs: &[f64]) -> f64 {
    let max = logprobs
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return 0.0;
    }
    let weights: Vec<f64> = logprobs
        .iter()
        .map(|&l| if l.is_finite() { (l - max).exp() } else { 0.0 })
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| (w / total).powi(2)).sum()
}

/// A method's within-pair gains over a baseline on the same pairs: the mean difference of
/// their per-pair Spearman correlations, and the difference of their pooled concordances
/// (bootstrap over pairs in both). `None` where the two were not measured on the same pairs.
pub fn paired_within_group_gains(
    per_pair: &[f64],
    base_per_pair: &[f64],
    parts: &[(f64, f64)],
    base_parts: &[(f64, f64)],
    rounds: usize,
    seed: u64,
) -> (Option<Estimate>, Option<Estimate>) {
    let spearman_gain =
        (per_pair.len() == base_per_pair.len() && !per_pair.is_empty()).then(|| {
            let diffs: Vec<f64> = per_pair
                .iter()
                .zip(base_per_pair)
                .map(|(a, b)| a - b)
                .collect();
            bootstrap(&diffs, rounds, seed)
        });
    let same_pairs =
        parts.len() == base_parts.len() && parts.iter().zip(base_parts).all(|(a, b)| a.1 == b.1);
    let concordance_gain = (same_pairs && !parts.is_empty()).then(|| {
        let diffs: Vec<(f64, f64)> = parts
            .iter()
            .zip(base_parts)
            .map(|(a, b)| (a.0 - b.0, a.1))
            .collect();
        bootstrap_ratio(&diffs, rounds, seed ^ 1)
    });
    (spearman_gain, concordance_gain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Above the threshold a sample of few values is resampled by counts: its resampled means
    /// have the spread and centre of drawing one by one (both against the analytic standard
    /// error of a mean), and their interval is the same to a few percent of its width.
    #[test]
    fn resampling_by_counts_matches_drawing_one_by_one() {
        let n = DRAW_COUNTS_ABOVE + 1;
        let mut r = wander_core::rng::Rng::new(9);
        // Paired differences of hits: -1, 0 or 1, mostly 0, a slight lean to 1.
        let values: Vec<f64> = (0..n)
            .map(|_| match r.below(100) {
                0..=6 => -1.0,
                7..=16 => 1.0,
                _ => 0.0,
            })
            .collect();
        let mean = values.iter().sum::<f64>() / n as f64;
        let se =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64 / n as f64).sqrt();
        let rounds = 300;
        let levels = levels_of(&values).expect("three levels");
        assert_eq!(levels.len(), 3);
        let mut rng = wander_core::rng::Rng::new(1);
        let by_counts: Vec<f64> = (0..rounds)
            .map(|_| resampled_mean_of_levels(&levels, n as u64, &mut rng))
            .collect();
        let one_by_one: Vec<f64> = (0..rounds)
            .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
            .collect();
        for draws in [&by_counts, &one_by_one] {
            let m = draws.iter().sum::<f64>() / rounds as f64;
            let sd =
                (draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (rounds - 1) as f64).sqrt();
            assert!(
                (m - mean).abs() < 4.0 * se / (rounds as f64).sqrt(),
                "centre {m} against {mean}"
            );
            assert!((sd / se - 1.0).abs() < 0.15, "spread {sd} against {se}");
        }
        let e = bootstrap(&values, 1_000, 4);
        assert_eq!(e.mean, mean);
        let half = 1.96 * se;
        assert!(
            (e.lo - (mean - half)).abs() < 0.1 * half && (e.hi - (mean + half)).abs() < 0.1 * half,
            "{e:?} against {mean} +- {half}"
        );
    }

    #[test]
    fn levels_are_counted_by_value_and_refused_past_the_limit() {
        assert_eq!(
            levels_of(&[1.0, 0.0, 1.0, -0.0]),
            Some(vec![(1.0, 2), (0.0, 1), (-0.0, 1)])
        );
        let many: Vec<f64> = (0..=MAX_LEVELS).map(|i| i as f64).collect();
        assert_eq!(levels_of(&many), None);
        assert!(levels_of(&many[..MAX_LEVELS]).is_some());
    }

    #[test]
    fn within_group_spearman_ranks_inside_each_group() {
        let groups = [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4];
        let truth = [0.1, 0.5, 0.9, 0.3, 0.2, 0.1, 0.4, 0.6, 0.5, 0.5, 0.5];
        // Group 1 in order, group 2 reversed; 3 is too small, 4 has constant truth.
        let pred = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0, 1.0, 1.0, 2.0, 3.0];
        let r = within_group_spearman(&groups, &pred, &truth, 3);
        assert_eq!(r.len(), 2);
        assert!(
            (r[0] - 1.0).abs() < 1e-12 && (r[1] + 1.0).abs() < 1e-12,
            "{r:?}"
        );
        // A global offset per group changes nothing; a constant prediction counts 0.
        let constant = [5.0; 11];
        assert_eq!(
            within_group_spearman(&groups, &constant, &truth, 3),
            vec![0.0, 0.0]
        );
    }

    proptest::proptest! {
        #[test]
        fn within_group_spearman_is_bounded(
            values in proptest::collection::vec((0u8..4, -1.0f64..1.0, -1.0f64..1.0), 0..60)
        ) {
            let groups: Vec<u8> = values.iter().map(|v| v.0).collect();
            let pred: Vec<f64> = values.iter().map(|v| v.1).collect();
            let truth: Vec<f64> = values.iter().map(|v| v.2).collect();
            for r in within_group_spearman(&groups, &pred, &truth, 3) {
                proptest::prop_assert!(r.is_finite() && (-1.0 - 1e-9..=1.0 + 1e-9).contains(&r));
            }
        }
    }
    use proptest::prelude::*;

    #[test]
    fn repeat_agreement_of_known_distributions() {
        let uniform = [(0.25f64).ln(); 4];
        assert!((repeat_agreement(&uniform) - 0.25).abs() < 1e-12);
        assert!((repeat_agreement(&[0.0, f64::NEG_INFINITY]) - 1.0).abs() < 1e-12);
        // unnormalised: weights 3 and 1 are p = 0.75 and 0.25
        assert!((repeat_agreement(&[3f64.ln() + 7.0, 7.0]) - 0.625).abs() < 1e-12);
        assert_eq!(repeat_agreement(&[f64::NEG_INFINITY]), 0.0);
    }

    #[test]
    fn hand_values() {
        assert_eq!(hit_at(&[3, 1, 2], 1, 1), 0.0);
        assert_eq!(hit_at(&[3, 1, 2], 1, 2), 1.0);
        assert!((self_information(0, &[1, 1, 2]) - 2.0).abs() < 1e-12);
        let e = bootstrap(&[1.0, 0.0, 1.0, 0.0], 2000, 1);
        assert_eq!(e.mean, 0.5);
        assert!(e.lo < 0.5 && e.hi > 0.5);
    }

    #[test]
    fn rank_statistics_by_hand() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        // Positives 0.9, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 0.5 + 1 = 3.5 of 4.
        assert!((auc(&[0.9, 0.4, 0.4, 0.1], &[true, true, false, false]) - 0.875).abs() < 1e-12);
        assert!(auc(&[0.1], &[true]).is_nan());
        assert!((mae(&[1.0, 2.0], &[2.0, 2.0]) - 0.5).abs() < 1e-12);
        assert!((entropy_bits(&[1.0, 1.0, 0.0]) - 1.0).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn auc_is_one_minus_auc_of_negated_scores(v in proptest::collection::vec((0.0f64..1.0, proptest::bool::ANY), 2..40)) {
            let s: Vec<f64> = v.iter().map(|x| x.0).collect();
            let p: Vec<bool> = v.iter().map(|x| x.1).collect();
            let a = auc(&s, &p);
            let neg: Vec<f64> = s.iter().map(|x| -x).collect();
            let b = auc(&neg, &p);
            if a.is_finite() {
                prop_assert!((a + b - 1.0).abs() < 1e-9);
                prop_assert!((0.0..=1.0).contains(&a));
            }
        }

        #[test]
        fn spearman_is_bounded_and_symmetric(v in proptest::collection::vec((-5.0f64..5.0, -5.0f64..5.0), 2..40)) {
            let x: Vec<f64> = v.iter().map(|p| p.0).collect();
            let y: Vec<f64> = v.iter().map(|p| p.1).collect();
            let r = spearman(&x, &y);
            if r.is_finite() {
                prop_assert!((-1.0 - 1e-9..=1.0 + 1e-9).contains(&r));
                prop_assert!((r - spearman(&y, &x)).abs() < 1e-9);
            }
        }

        #[test]
        fn bootstrap_interval_brackets_the_mean(v in proptest::collection::vec(0.0f64..1.0, 1..50)) {
            let e = bootstrap(&v, 200, 3);
            prop_assert!(e.lo <= e.mean + 1e-12 && e.mean <= e.hi + 1e-12);
            prop_assert!(e.lo >= 0.0 && e.hi <= 1.0);
        }
    }

    #[test]
    fn kendall_tau_counts_concordant_pairs() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(kendall_tau_b(&x, &[10.0, 20.0, 30.0, 40.0]), 1.0);
        assert_eq!(kendall_tau_b(&x, &[4.0, 3.0, 2.0, 1.0]), -1.0);
        // One swapped neighbour: 5 concordant, 1 discordant of 6.
        assert!((kendall_tau_b(&x, &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
        // A tie in y: 5 untied pairs in y, 6 in x; 4 concordant, 1 discordant.
        let t = kendall_tau_b(&x, &[1.0, 1.0, 3.0, 2.0]);
        assert!((t - 3.0 / 30f64.sqrt()).abs() < 1e-12, "{t}");
        assert!(kendall_tau_b(&x, &[5.0; 4]).is_nan());
        assert!(kendall_tau_b(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn within_group_concordance_counts_ordered_candidate_pairs() {
        // Group 0: labels 1 < 2 < 3, predictions agree on two of three pairs. Group 1: one
        // comparable pair, tied prediction. Group 2: equal labels, nothing comparable.
        let groups = [0, 0, 0, 1, 1, 2, 2];
        let truth = [1.0, 2.0, 3.0, 0.0, 1.0, 5.0, 5.0];
        let pred = [0.1, 0.3, 0.2, 0.4, 0.4, 0.0, 1.0];
        let c = within_group_concordance(&groups, &pred, &truth);
        assert_eq!(c, vec![(2.0, 3.0), (0.5, 1.0)]);
        let e = bootstrap_ratio(&c, 200, 1);
        assert!((e.mean - 2.5 / 4.0).abs() < 1e-12);
        assert!(e.lo <= e.mean && e.mean <= e.hi);
        // Perfect predictions order every pair.
        let perfect = within_group_concordance(&groups, &truth, &truth);
        assert_eq!(bootstrap_ratio(&perfect, 50, 2).mean, 1.0);
        assert!(bootstrap_ratio(&[], 10, 3).mean.is_nan());
    }

    #[test]
    fn paired_gains_are_differences_on_the_same_groups() {
        let (g, c) = paired_within_group_gains(
            &[0.5, 0.2, 0.9],
            &[0.4, 0.2, 0.6],
            &[(2.0, 3.0), (1.0, 1.0)],
            &[(1.5, 3.0), (1.0, 1.0)],
            200,
            1,
        );
        let g = g.unwrap();
        assert!((g.mean - (0.1 + 0.0 + 0.3) / 3.0).abs() < 1e-12);
        assert!(g.lo <= g.mean && g.mean <= g.hi);
        assert!((c.unwrap().mean - 0.5 / 4.0).abs() < 1e-12);
        // Not the same groups (another count of candidate pairs, or of groups): no gain.
        let (g, c) =
            paired_within_group_gains(&[0.5], &[0.4, 0.1], &[(1.0, 2.0)], &[(1.0, 3.0)], 10, 1);
        assert!(g.is_none() && c.is_none());
    }
}

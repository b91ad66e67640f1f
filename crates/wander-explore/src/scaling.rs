//! Inference-time scaling (P2): best-of-n selection of novelty-model proposals by the
//! alignment model, exactly and by sampling.

use wander_core::rng::Rng;

pub use wander_table::Choice;

/// Draws `n` proposals from `probs` (indices into it) with `rng`: inverse-CDF sampling.
pub fn draw(probs: &[f64], n: usize, rng: &mut Rng) -> Vec<usize> {
    let total: f64 = probs.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.next_f64() * total;
            for (i, &p) in probs.iter().enumerate() {
                if u < p {
                    return i;
                }
                u -= p;
            }
            probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
        })
        .collect()
}

/// Counts per index of `draws` over `len` candidates.
pub fn frequencies(draws: &[usize], len: usize) -> Vec<u32> {
    let mut f = vec![0u32; len];
    for &d in draws {
        f[d] += 1;
    }
    f
}

/// Order of candidates by descending score, ties by index (the fixed tie rule everywhere).
pub fn by_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// The best `k` distinct proposals by alignment score (P2's best-of-n keeps the first).
/// Returns indices into the candidates.
pub fn best_k(freq: &[u32], scores: &[f64], k: usize) -> Vec<usize> {
    by_score(scores)
        .into_iter()
        .filter(|&i| freq[i] > 0)
        .take(k)
        .collect()
}

/// One history pair's entry of the exploration table.
#[derive(Debug, Clone, PartialEq)]
pub struct PairChoice {
    /// The kept clusters, best first, each with its score, probability and frequency.
    pub choices: Vec<wander_table::Choice>,
    /// How often each cluster was proposed, with the history clusters' proposals removed.
    pub frequency: Vec<u32>,
    /// Whether nothing novel was proposed, so the best-aligned novel clusters were kept.
    pub fallback: bool,
}

/// P2's best-of-n choice for the history pair `(c1, c2)`: proposals of `c1` or `c2` are
/// dropped (they are not novel), the remaining distinct proposals are ranked by alignment
/// score and the best `top_k` kept. When no novel cluster was proposed, the `top_k`
/// best-aligned novel clusters are kept instead (with frequency 0) and `fallback` is set.
/// `frequency`, `probs` and `alignment` are indexed by cluster.
pub fn choose_best_of_n(
    (c1, c2): (u32, u32),
    mut frequency: Vec<u32>,
    probs: &[f64],
    alignment: &[f32],
    top_k: usize,
) -> PairChoice {
    for history in [c1, c2] {
        if let Some(f) = frequency.get_mut(history as usize) {
            *f = 0;
        }
    }
    let scores: Vec<f64> = alignment.iter().map(|&v| v as f64).collect();
    let mut kept = best_k(&frequency, &scores, top_k);
    let fallback = kept.is_empty();
    if fallback {
        let novel: Vec<u32> = (0..alignment.len() as u32)
            .map(|c| u32::from(c != c1 && c != c2))
            .collect();
        kept = best_k(&novel, &scores, top_k);
    }
    let choices = kept
        .iter()
        .map(|&c| wander_table::Choice {
            cluster: c as u32,
            alignment: alignment[c],
            novelty_prob: probs[c] as f32,
            frequency: frequency[c],
        })
        .collect();
    PairChoice {
        choices,
        frequency,
        fallback,
    }
}

/// The most frequent proposal (novelty-only selection), ties by higher probability and
/// then index.
pub fn most_frequent(freq: &[u32], probs: &[f64]) -> Option<usize> {
    (0..freq.len()).filter(|&i| freq[i] > 0).max_by(|&a, &b| {
        freq[a]
            .cmp(&freq[b])
            .then(probs[a].total_cmp(&probs[b]))
            .then(b.cmp(&a))
    })
}

/// The exact distribution of best-of-n's pick: the probability, for each candidate, that
/// it is the best-scored among `n` independent draws from `probs`. With candidates in score
/// order and `S` the mass of the better ones, candidate `i` wins when no draw hits a better
/// one and at least one hits it: `(1 - S)^n - (1 - S - p_i)^n`. No sampling noise, any `n`.
pub fn best_of_n_exact(probs: &[f64], scores: &[f64], n: u32) -> Vec<f64> {
    let total: f64 = probs.iter().sum();
    let mut out = vec![0.0; probs.len()];
    if total <= 0.0 {
        return out;
    }
    let mut better = 0.0f64;
    for i in by_score(scores) {
        let p = probs[i] / total;
        let a = (1.0 - better).max(0.0);
        let b = (1.0 - better - p).max(0.0);
        out[i] = a.powi(n as i32) - b.powi(n as i32);
        better += p;
    }
    out
}

/// One history pair's stored proposal sequence: the `draws` i.i.d. proposals the precompute
/// made from the novelty model's distribution (in order; the table's best-of-n used the
/// first `precompute.n`). Written when only the proposals were scored, so the evaluations
/// can measure best-of-n on them instead of drawing proposals they have no scores for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairDraws {
    /// The history pair.
    pub c1: u32,
    /// The history pair's second cluster.
    pub c2: u32,
    /// The proposed clusters, in the order drawn.
    pub draws: Vec<u32>,
}

/// `C(a, n) / C(d, n)`: the probability that a uniformly random `n`-subset of `d` positions
/// lies inside a given `a` of them.
fn subset_inside(a: usize, d: usize, n: usize) -> f64 {
    if a < n {
        return 0.0;
    }
    (0..n).map(|j| (a - j) as f64 / (d - j) as f64).product()
}

/// [`best_of_n_exact`] for a stored sample: the probability, for each of `len` candidates,
/// that it is the best-scored proposal of a uniformly random `n`-subset of `draws`. The
/// draws are i.i.d. from the proposal distribution, so every such subset is itself `n`
/// i.i.d. proposals: averaging over all of them (exactly, with hypergeometric rather than
/// binomial terms) is an unbiased estimate of best-of-n's pick without drawing a proposal
/// that has no score. Candidates never drawn get 0; `n` is at most `draws.len()`.
pub fn best_of_subset_exact(draws: &[u32], scores: &[f64], n: usize, len: usize) -> Vec<f64> {
    let d = draws.len();
    let mut out = vec![0.0; len];
    if n == 0 || n > d {
        return out;
    }
    let mut count = vec![0usize; len];
    for &c in draws {
        count[c as usize] += 1;
    }
    // Positions not holding a better-scored candidate.
    let mut rest = d;
    for i in by_score(scores) {
        if count[i] == 0 {
            continue;
        }
        out[i] = subset_inside(rest, d, n) - subset_inside(rest - count[i], d, n);
        rest -= count[i];
    }
    out
}

/// A uniformly random `n`-subset of `draws` (partial Fisher-Yates), as frequencies over
/// `len` candidates.
pub fn subset_frequencies(draws: &[u32], n: usize, len: usize, rng: &mut Rng) -> Vec<u32> {
    let mut pos: Vec<u32> = draws.to_vec();
    let n = n.min(pos.len());
    for j in 0..n {
        let k = j + rng.below(pos.len() - j);
        pos.swap(j, k);
    }
    let mut f = vec![0u32; len];
    for &c in &pos[..n] {
        f[c as usize] += 1;
    }
    f
}

/// One point of the frontier that ranking with a share of the candidate's global rate
/// traces: best-of-n's figures when the rate enters the ranking with `weight`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrontierPoint {
    /// The rate's weight in the ranking (1: the whole alignment score, P2's ranking).
    pub weight: f64,
    /// Mean held-out collective feedback of the served cluster.
    pub feedback: f64,
    /// Mean self-information of the served cluster (bits).
    pub novelty: f64,
    /// Entropy of the served clusters (bits).
    pub diversity: f64,
}

/// Which weight [`choose_prior_weight`] took, and whether it met the exploration goals.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PriorWeightChoice {
    /// The chosen weight.
    pub weight: f64,
    /// Whether it serves clusters at least as novel as co-occurrence's and at most
    /// `max_diversity_gap` bits less diverse; when no weight does, the choice is the most
    /// diverse of those novel enough (else the most novel), and this is false.
    pub meets_goals: bool,
}

/// The share of the candidate's global rate to rank by, chosen on a period the evaluation
/// does not report on: of the weights whose served clusters are at least as novel as
/// co-occurrence's (`cooc_novelty`) and whose entropy is within `max_diversity_gap` bits of
/// co-occurrence's (`cooc_diversity`), the one with the highest held-out feedback (ties: the
/// larger weight, the ranking closer to P2's). Exploration first: if no weight meets both,
/// the most diverse of the novel-enough ones, else the most novel. `None` for no finite point.
pub fn choose_prior_weight(
    points: &[FrontierPoint],
    cooc_novelty: f64,
    cooc_diversity: f64,
    max_diversity_gap: f64,
) -> Option<PriorWeightChoice> {
    let finite: Vec<&FrontierPoint> = points
        .iter()
        .filter(|p| {
            [p.weight, p.feedback, p.novelty, p.diversity]
                .iter()
                .all(|v| v.is_finite())
        })
        .collect();
    let novel_enough = |p: &&&FrontierPoint| p.novelty >= cooc_novelty;
    let diverse_enough = |p: &&&FrontierPoint| p.diversity >= cooc_diversity - max_diversity_gap;
    let larger_weight = |a: &&FrontierPoint, b: &&FrontierPoint| a.weight.total_cmp(&b.weight);
    let best = finite
        .iter()
        .filter(novel_enough)
        .filter(diverse_enough)
        .max_by(|a, b| a.feedback.total_cmp(&b.feedback).then(larger_weight(a, b)));
    if let Some(p) = best {
        return Some(PriorWeightChoice {
            weight: p.weight,
            meets_goals: true,
        });
    }
    finite
        .iter()
        .filter(novel_enough)
        .max_by(|a, b| {
            a.diversity
                .total_cmp(&b.diversity)
                .then(larger_weight(a, b))
        })
        .or_else(|| {
            finite
                .iter()
                .max_by(|a, b| a.novelty.total_cmp(&b.novelty).then(larger_weight(a, b)))
        })
        .map(|p| PriorWeightChoice {
            weight: p.weight,
            meets_goals: false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(weight: f64, meets_goals: bool) -> Option<PriorWeightChoice> {
        Some(PriorWeightChoice {
            weight,
            meets_goals,
        })
    }

    fn point(weight: f64, feedback: f64, novelty: f64, diversity: f64) -> FrontierPoint {
        FrontierPoint {
            weight,
            feedback,
            novelty,
            diversity,
        }
    }

    #[test]
    fn the_prior_weight_is_the_best_feedback_among_those_that_explore() {
        let points = [
            point(1.0, 0.80, 4.2, 1.9), // P2's ranking: best feedback, collapsed
            point(0.5, 0.79, 4.4, 2.6),
            point(0.0, 0.75, 4.9, 3.0),
        ];
        assert_eq!(
            choose_prior_weight(&points, 4.3, 3.5, 1.0),
            chosen(0.5, true)
        );
        // A stricter diversity goal leaves only the residual ranking.
        assert_eq!(
            choose_prior_weight(&points, 4.3, 3.5, 0.6),
            chosen(0.0, true)
        );
    }

    #[test]
    fn without_a_weight_that_meets_the_goals_exploration_decides() {
        let points = [
            point(1.0, 0.80, 4.2, 1.9),
            point(0.1, 0.81, 4.6, 2.2),
            point(0.0, 0.79, 4.9, 2.4),
        ];
        // None within 1 bit of 3.6: the most diverse of the novel enough.
        assert_eq!(
            choose_prior_weight(&points, 4.3, 3.6, 1.0),
            chosen(0.0, false)
        );
        // None novel enough: the most novel.
        assert_eq!(
            choose_prior_weight(&points, 5.0, 3.6, 1.0),
            chosen(0.0, false)
        );
        // Ties in feedback go to the larger weight.
        let tied = [point(0.5, 0.8, 4.5, 3.0), point(0.25, 0.8, 4.5, 3.0)];
        assert_eq!(
            choose_prior_weight(&tied, 4.3, 3.5, 1.0).unwrap().weight,
            0.5
        );
    }

    #[test]
    fn non_finite_points_are_never_chosen() {
        let points = [point(1.0, f64::NAN, 9.0, 9.0), point(0.5, 0.7, 4.5, 3.0)];
        assert_eq!(
            choose_prior_weight(&points, 4.3, 3.5, 1.0).unwrap().weight,
            0.5
        );
        assert_eq!(choose_prior_weight(&points[..1], 4.3, 3.5, 1.0), None);
    }

    #[test]
    fn best_of_n_drops_history_ranks_by_score_and_keeps_top_k() {
        // Cluster 0 and 1 are the history; 0 has the best score and was proposed most.
        let freq = vec![5, 1, 2, 0, 1, 3];
        let probs = [0.3, 0.1, 0.2, 0.1, 0.1, 0.2];
        let align = [0.99, 0.9, 0.5, 0.95, 0.7, 0.6];
        let c = choose_best_of_n((0, 1), freq, &probs, &align, 2);
        assert!(!c.fallback);
        let kept: Vec<u32> = c.choices.iter().map(|x| x.cluster).collect();
        assert_eq!(
            kept,
            vec![4, 5],
            "3 has the best novel score but was never proposed"
        );
        assert_eq!(c.frequency, vec![0, 0, 2, 0, 1, 3]);
        assert_eq!(c.choices[0].frequency, 1);
        assert_eq!(c.choices[1].novelty_prob, 0.2);
        assert_eq!(c.choices[1].alignment, 0.6);
    }

    #[test]
    fn best_of_n_falls_back_to_best_aligned_novel_clusters() {
        let freq = vec![4, 4, 0, 0];
        let align = [0.9, 0.8, 0.1, 0.7];
        let c = choose_best_of_n((0, 1), freq, &[0.5, 0.5, 0.0, 0.0], &align, 3);
        assert!(c.fallback);
        let kept: Vec<(u32, u32)> = c.choices.iter().map(|x| (x.cluster, x.frequency)).collect();
        assert_eq!(
            kept,
            vec![(3, 0), (2, 0)],
            "novel clusters only, by score, frequency 0"
        );
    }

    #[test]
    fn exact_best_of_n_matches_monte_carlo() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        let scores = [0.1, 0.9, 0.4, 0.95];
        for n in [1u32, 2, 4, 16] {
            let exact = best_of_n_exact(&probs, &scores, n);
            assert!((exact.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            let mut rng = Rng::new(n as u64);
            let rounds = 20_000;
            let mut hits = [0usize; 4];
            for _ in 0..rounds {
                let f = frequencies(&draw(&probs, n as usize, &mut rng), 4);
                hits[best_k(&f, &scores, 1)[0]] += 1;
            }
            for i in 0..4 {
                let mc = hits[i] as f64 / rounds as f64;
                assert!(
                    (mc - exact[i]).abs() < 0.015,
                    "n={n} i={i}: {mc} vs {}",
                    exact[i]
                );
            }
        }
        // n = 1 is plain sampling.
        let one = best_of_n_exact(&probs, &scores, 1);
        for i in 0..4 {
            assert!((one[i] - probs[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn selection_rules() {
        let f = [0, 3, 3, 1];
        let p = [0.4, 0.2, 0.3, 0.1];
        assert_eq!(most_frequent(&f, &p), Some(2));
        assert_eq!(best_k(&f, &[9.0, 0.1, 0.5, 0.7], 2), vec![3, 2]);
        assert_eq!(most_frequent(&[0, 0], &[0.5, 0.5]), None);
    }

    #[test]
    fn subset_best_of_n_is_exact_over_subsets() {
        let draws = [2u32, 0, 1, 2, 3, 2, 1, 0];
        let scores = [0.1, 0.9, 0.4, 0.95];
        for n in 1..=draws.len() {
            let exact = best_of_subset_exact(&draws, &scores, n, 4);
            assert!((exact.iter().sum::<f64>() - 1.0).abs() < 1e-12, "n={n}");
            // Enumerate every n-subset of the 8 positions.
            let mut hits = [0usize; 4];
            let mut subsets = 0usize;
            for mask in 0u32..(1 << draws.len()) {
                if mask.count_ones() as usize != n {
                    continue;
                }
                subsets += 1;
                let mut f = vec![0u32; 4];
                for (j, &c) in draws.iter().enumerate() {
                    if mask >> j & 1 == 1 {
                        f[c as usize] += 1;
                    }
                }
                hits[best_k(&f, &scores, 1)[0]] += 1;
            }
            for i in 0..4 {
                let e = hits[i] as f64 / subsets as f64;
                assert!(
                    (e - exact[i]).abs() < 1e-12,
                    "n={n} i={i}: {e} vs {}",
                    exact[i]
                );
            }
        }
        // All draws: the best-scored drawn candidate, always.
        assert_eq!(
            best_of_subset_exact(&draws, &scores, 8, 4),
            vec![0.0, 0.0, 0.0, 1.0]
        );
        // n = 1: the sample's frequencies.
        let one = best_of_subset_exact(&draws, &scores, 1, 4);
        assert_eq!(one, vec![0.25, 0.25, 0.375, 0.125]);
        assert!(best_of_subset_exact(&draws, &scores, 9, 4)
            .iter()
            .all(|&v| v == 0.0));
    }

    #[test]
    fn subset_frequencies_take_n_of_the_draws() {
        let draws = [2u32, 0, 1, 2, 3, 2, 1, 0];
        let mut rng = Rng::new(5);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            let f = subset_frequencies(&draws, 3, 4, &mut rng);
            assert_eq!(f.iter().sum::<u32>(), 3);
            for c in 0..4 {
                assert!(f[c] as usize <= draws.iter().filter(|&&d| d as usize == c).count());
                seen[c] += f[c] as usize;
            }
        }
        // Each position is in a 3-subset with probability 3/8: cluster 2 (3 of 8) 4500 times.
        assert!((seen[2] as f64 - 4500.0).abs() < 200.0, "{seen:?}");
        assert_eq!(subset_frequencies(&draws, 8, 4, &mut rng), vec![2, 2, 3, 1]);
    }
}

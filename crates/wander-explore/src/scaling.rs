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

#[cfg(test)]
mod tests {
    use super::*;

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
}

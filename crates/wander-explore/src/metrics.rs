//! Offline metrics of next-cluster predictions, with bootstrap intervals.

use serde::Serialize;
use wander_core::rng::Rng;

/// A figure with its 95% percentile-bootstrap interval over evaluation events.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    /// Mean over events.
    pub mean: f64,
    /// 2.5th percentile of the bootstrap means.
    pub lo: f64,
    /// 97.5th percentile of the bootstrap means.
    pub hi: f64,
}

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
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Estimate {
        mean,
        lo: at(0.025),
        hi: at(0.975),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_values() {
        assert_eq!(hit_at(&[3, 1, 2], 1, 1), 0.0);
        assert_eq!(hit_at(&[3, 1, 2], 1, 2), 1.0);
        assert!((self_information(0, &[1, 1, 2]) - 2.0).abs() < 1e-12);
        let e = bootstrap(&[1.0, 0.0, 1.0, 0.0], 2000, 1);
        assert_eq!(e.mean, 0.5);
        assert!(e.lo < 0.5 && e.hi > 0.5);
    }

    proptest! {
        #[test]
        fn bootstrap_interval_brackets_the_mean(v in proptest::collection::vec(0.0f64..1.0, 1..50)) {
            let e = bootstrap(&v, 200, 3);
            prop_assert!(e.lo <= e.mean + 1e-12 && e.mean <= e.hi + 1e-12);
            prop_assert!(e.lo >= 0.0 && e.hi <= 1.0);
        }
    }
}

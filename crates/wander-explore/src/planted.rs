//! A synthetic feedback world with a planted, history-dependent signal: the test that an
//! alignment model can learn what P2's best-of-n needs (ranking the candidates of one
//! history), independent of any dataset.
//!
//! Sixteen interest clusters in four families, each described in words ("music: jazz,
//! saxophone, swing"). A candidate's label depends on how it relates to the history: high
//! when it shares the family of the recent cluster, medium when it shares the older one's,
//! low otherwise. Every cluster is a candidate equally often after every kind of history, so
//! each candidate's global rate is the same up to noise and carries no within-pair signal: a
//! model scores above the global rate only by reading history and candidate together.

use wander_core::rng::Rng;

use crate::feedback::Label;

/// The families and their clusters' words: families differ in topic, clusters of one family
/// share no word but the family's name.
const FAMILIES: [(&str, [&str; 4]); 4] = [
    (
        "music",
        [
            "jazz, saxophone, swing",
            "opera, soprano, aria",
            "punk rock, electric guitar, drums",
            "hip hop, rap, beats",
        ],
    ),
    (
        "sports",
        [
            "football, goals, stadium",
            "tennis, racket, serve",
            "cycling, mountain bike, race",
            "swimming, pool, freestyle",
        ],
    ),
    (
        "cooking",
        [
            "baking, bread, pastry",
            "barbecue, grill, smoked meat",
            "vegan recipes, salads, tofu",
            "italian pasta, pizza, tomato",
        ],
    ),
    (
        "science",
        [
            "astronomy, planets, telescopes",
            "chemistry, experiments, molecules",
            "robotics, machines, sensors",
            "dinosaurs, fossils, paleontology",
        ],
    ),
];

/// The label of a candidate of the recent cluster's family, of the older one's, of neither.
pub const PLANTED_LABELS: [f64; 3] = [0.8, 0.5, 0.2];

/// Labels around [`PLANTED_LABELS`] get Gaussian noise of this standard deviation.
pub const PLANTED_NOISE: f64 = 0.05;

/// The planted world: descriptions, each cluster's family, and labels on training and
/// held-out history pairs (no held-out pair has a training label).
#[derive(Debug, Clone)]
pub struct PlantedWorld {
    /// Each cluster's description ("family: words").
    pub descriptions: Vec<String>,
    /// Each cluster's family index.
    pub family: Vec<usize>,
    /// Labels of the training pairs.
    pub train: Vec<Label>,
    /// Labels of the held-out pairs.
    pub test: Vec<Label>,
}

/// The noiseless label of candidate `next` after history `(c1, c2)`.
pub fn planted_label(family: &[usize], c1: u32, c2: u32, next: u32) -> f64 {
    let f = |c: u32| family[c as usize];
    if f(next) == f(c2) {
        PLANTED_LABELS[0]
    } else if f(next) == f(c1) {
        PLANTED_LABELS[1]
    } else {
        PLANTED_LABELS[2]
    }
}

/// Builds the world: every ordered pair of distinct clusters is a history; `held_out` of them
/// (a seeded share) are test pairs. Each pair labels every cluster outside it as a candidate.
pub fn planted_world(seed: u64, held_out: f64) -> PlantedWorld {
    let mut descriptions = Vec::new();
    let mut family = Vec::new();
    for (f, (name, clusters)) in FAMILIES.iter().enumerate() {
        for words in clusters {
            descriptions.push(format!("{name}: {words}"));
            family.push(f);
        }
    }
    let n = descriptions.len() as u32;
    let mut pairs: Vec<(u32, u32)> = (0..n)
        .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
        .collect();
    let mut rng = Rng::new(seed);
    rng.shuffle(&mut pairs);
    let n_test = ((pairs.len() as f64) * held_out.clamp(0.0, 1.0)).round() as usize;
    let mut label_pairs = |pairs: &[(u32, u32)]| -> Vec<Label> {
        let mut out = Vec::new();
        for &(c1, c2) in pairs {
            for next in (0..n).filter(|&c| c != c1 && c != c2) {
                let label = (planted_label(&family, c1, c2, next) + PLANTED_NOISE * rng.normal())
                    .clamp(0.0, 1.0);
                out.push(Label {
                    c1,
                    c2,
                    next,
                    label,
                    rate: label,
                    users: 1,
                    events: 1,
                });
            }
        }
        out
    };
    let test = label_pairs(&pairs[..n_test]);
    let train = label_pairs(&pairs[n_test..]);
    PlantedWorld {
        descriptions,
        family,
        train,
        test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::within_group_spearman;

    #[test]
    fn held_out_pairs_are_disjoint_from_training_pairs() {
        let w = planted_world(7, 0.25);
        let train: std::collections::BTreeSet<_> = w.train.iter().map(|l| (l.c1, l.c2)).collect();
        assert!(w.test.iter().all(|l| !train.contains(&(l.c1, l.c2))));
        assert_eq!(w.descriptions.len(), 16);
        assert_eq!((w.train.len() + w.test.len()) / 14, 16 * 15);
        assert_eq!(w.test.len() / 14, 60);
    }

    #[test]
    fn the_signal_is_in_the_relation_not_in_the_candidate() {
        let w = planted_world(3, 0.25);
        // Each candidate's mean training label is the same up to noise and sampling.
        let mut sum = vec![0.0; 16];
        let mut count = vec![0.0; 16];
        for l in &w.train {
            sum[l.next as usize] += l.label;
            count[l.next as usize] += 1.0;
        }
        let means: Vec<f64> = sum.iter().zip(&count).map(|(s, c)| s / c).collect();
        let (lo, hi) = means
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &m| (a.min(m), b.max(m)));
        assert!(hi - lo < 0.06, "{means:?}");
        // The planted rule itself ranks the held-out candidates almost perfectly; the global
        // rate does not.
        let groups: Vec<(u32, u32)> = w.test.iter().map(|l| (l.c1, l.c2)).collect();
        let truth: Vec<f64> = w.test.iter().map(|l| l.label).collect();
        let rule: Vec<f64> = w
            .test
            .iter()
            .map(|l| planted_label(&w.family, l.c1, l.c2, l.next))
            .collect();
        let global: Vec<f64> = w.test.iter().map(|l| means[l.next as usize]).collect();
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean(within_group_spearman(&groups, &rule, &truth, 3)) > 0.8);
        assert!(mean(within_group_spearman(&groups, &global, &truth, 3)).abs() < 0.2);
    }

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let (a, b) = (planted_world(5, 0.25), planted_world(5, 0.25));
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
    }
}

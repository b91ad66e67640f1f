//! Evaluation inputs shared by `wander eval scaling` and `wander eval` (the harness): the
//! held-out transitions, each strategy's per-pair serving distribution, held-out collective
//! feedback.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use wander_core::artifact::RunDir;
use wander_explore::feedback::Label;
use wander_explore::scaling;
use wander_explore::transitions::Transition;

use crate::artifacts::*;
use crate::stages::precompute::read_scores;
use crate::StageId;

/// Per pair: P(chosen = c) (top-1) and P(c in the top k), over all clusters.
pub(crate) type Dist = (Vec<f64>, Vec<f64>);

/// Best-of-n (top-1 exact, top-k by `draws` simulated proposal sets) and novelty-only
/// (most frequent proposal) distributions per pair for one n. Proposals of the history
/// clusters are dropped: they can never be chosen, and a draw of only those leaves nothing.
/// A pair whose stored proposals are in `stored` (only they were scored) takes its
/// proposal sets as subsets of them: top-1 exactly over every n-subset, the rest from
/// `draws` random subsets.
#[allow(clippy::too_many_arguments)]
pub(crate) fn llm_dists(
    scores: &PairScores,
    stored: &BTreeMap<(u32, u32), Vec<u32>>,
    pairs: &BTreeSet<(u32, u32)>,
    n: usize,
    k: usize,
    draws: usize,
    seed: u64,
    m: usize,
    bar: Option<&wander_core::progress::Bar>,
) -> (BTreeMap<(u32, u32), Dist>, BTreeMap<(u32, u32), Dist>) {
    let mut best = BTreeMap::new();
    let mut freq_only = BTreeMap::new();
    for &p in pairs {
        let (probs, align) = &scores[&p];
        let mut align = align.clone();
        align[p.0 as usize] = f64::NEG_INFINITY;
        align[p.1 as usize] = f64::NEG_INFINITY;
        // One proposal needs no alignment score: n = 1 stays exact under the novelty model.
        let from_stored = if n > 1 { stored.get(&p) } else { None };
        let mut top1 = match from_stored {
            Some(d) => scaling::best_of_subset_exact(d, &align, n, m),
            None => scaling::best_of_n_exact(probs, &align, n as u32),
        };
        top1[p.0 as usize] = 0.0;
        top1[p.1 as usize] = 0.0;
        let mut rng = wander_core::rng::Rng::new(seed)
            .fork(((p.0 as u64) << 32 | p.1 as u64) ^ ((n as u64) << 48));
        let (mut topk, mut f1, mut fk) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        let unit = 1.0 / draws.max(1) as f64;
        for _ in 0..draws.max(1) {
            let mut f = match from_stored {
                Some(d) => scaling::subset_frequencies(d, n, m, &mut rng),
                None => scaling::frequencies(&scaling::draw(probs, n, &mut rng), m),
            };
            f[p.0 as usize] = 0;
            f[p.1 as usize] = 0;
            for c in scaling::best_k(&f, &align, k) {
                topk[c] += unit;
            }
            let fscore: Vec<f64> = f
                .iter()
                .zip(probs)
                .map(|(&q, &pr)| q as f64 + pr * 1e-6)
                .collect();
            let by_f = scaling::best_k(&f, &fscore, k);
            if let Some(&c) = by_f.first() {
                f1[c] += unit;
            }
            for c in by_f {
                fk[c] += unit;
            }
        }
        best.insert(p, (top1, topk));
        freq_only.insert(p, (f1, fk));
        if let Some(b) = bar {
            b.inc(1);
        }
    }
    (best, freq_only)
}

/// A deterministic ranking per pair as a distribution: `score(pair, c)`, history clusters
/// excluded, ties by id.
pub(crate) fn ranked_dists(
    pairs: &BTreeSet<(u32, u32)>,
    k: usize,
    m: usize,
    score: impl Fn((u32, u32), u32) -> f64,
) -> BTreeMap<(u32, u32), Dist> {
    pairs
        .iter()
        .map(|&p| {
            let s: Vec<f64> = (0..m as u32)
                .map(|c| {
                    if c == p.0 || c == p.1 {
                        f64::NEG_INFINITY
                    } else {
                        score(p, c)
                    }
                })
                .collect();
            let order = scaling::by_score(&s);
            let (mut t1, mut tk) = (vec![0.0; m], vec![0.0; m]);
            t1[order[0]] = 1.0;
            for &c in order.iter().take(k) {
                tk[c] = 1.0;
            }
            (p, (t1, tk))
        })
        .collect()
}

/// Co-occurrence: the training period's most frequent next clusters (popularity breaks ties).
pub(crate) fn cooc_dists(
    train: &wander_explore::transitions::PairCounts,
    target_counts: &[u64],
    pairs: &BTreeSet<(u32, u32)>,
    k: usize,
    m: usize,
) -> BTreeMap<(u32, u32), Dist> {
    ranked_dists(pairs, k, m, |p, c| {
        train.get(&p).and_then(|x| x.get(&c)).copied().unwrap_or(0) as f64 * 1e9
            + target_counts[c as usize] as f64
    })
}

/// What the offline evaluations of the exploration slot read: every pair's proposal
/// probabilities and alignment scores, training transition counts, the test-period events
/// whose pair is in the table, and the test-period collective feedback labels.
/// Each history pair's proposal probabilities and alignment scores, indexed by cluster.
pub(crate) type PairScores = BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)>;

pub(crate) struct HeldOut {
    pub scores: PairScores,
    /// Each pair's stored proposals, when the precompute scored only those (else empty).
    pub stored: BTreeMap<(u32, u32), Vec<u32>>,
    /// How many proposals each stored pair has (0 when none are stored).
    pub stored_draws: usize,
    pub train: wander_explore::transitions::PairCounts,
    pub target_counts: Vec<u64>,
    pub events: Vec<Transition>,
    pub label_of: BTreeMap<(u32, u32, u32), f64>,
}

/// Refuses an n larger than the stored proposals of a table that scored only those.
pub(crate) fn check_stored_n(held: &HeldOut, n: usize) -> crate::Result<()> {
    if !held.stored.is_empty() && n > held.stored_draws {
        bail!(
            "best-of-{n} cannot be measured on this table: it scored only each pair's proposals and kept {} of them (precompute.n and precompute.scaling_n when it ran); rerun `wander precompute --force` with this configuration",
            held.stored_draws
        );
    }
    Ok(())
}

pub(crate) fn held_out(run: &RunDir, m: usize) -> crate::Result<HeldOut> {
    let held = held_out_in(run, m, wander_data::Split::Test)?;
    if held.events.is_empty() {
        bail!("no test transitions whose history pair is in the table");
    }
    Ok(held)
}

/// [`held_out`] on another period's transitions and labels: the validation period, to
/// choose a setting without looking at the test period. Its events may be empty.
pub(crate) fn held_out_in(
    run: &RunDir,
    m: usize,
    period: wander_data::Split,
) -> crate::Result<HeldOut> {
    let pre = open(run, StageId::Precompute)?;
    let scores = read_scores(&pre.path(SCORES)?, m)?;
    let stored: BTreeMap<(u32, u32), Vec<u32>> = pre
        .json_if_written(DRAWS)?
        .unwrap_or_default()
        .into_iter()
        .map(|d| ((d.c1, d.c2), d.draws))
        .collect();
    if let Some((&(c1, c2), _)) = scores
        .iter()
        .find(|(p, (_, a))| !stored.contains_key(p) && a.iter().any(|v| v.is_nan()))
    {
        bail!(
            "the table of this run scored only each pair's proposals (precompute.score = \"proposals\"; pair ({c1}, {c2}) has unscored clusters) and kept no proposals to evaluate on (only the exact mode keeps them), and this evaluation draws other proposal sets, which needs every cluster's alignment score: run `wander precompute --force` with precompute.mode = \"exact\" or precompute.score = \"all\""
        );
    }
    if let Some((&(c1, c2), d)) = stored
        .iter()
        .find(|(_, d)| d.iter().any(|&c| c as usize >= m))
    {
        bail!(
            "{}: pair ({c1}, {c2}) holds a proposal outside the {m} clusters ({d:?}); rerun `wander precompute --force`",
            DRAWS.file()
        );
    }
    let stored_draws = stored.values().map(Vec::len).min().unwrap_or(0);
    let all: Vec<Transition> = open(run, StageId::Transitions)?.json(TRANSITIONS)?;
    let train = wander_explore::transitions::counts(&all, wander_data::Split::Train);
    let mut target_counts = vec![0u64; m];
    for t in train.values() {
        for (&c, &k) in t {
            target_counts[c as usize] += k as u64;
        }
    }
    let events: Vec<Transition> = all
        .iter()
        .copied()
        .filter(|t| t.split == period && scores.contains_key(&(t.c1, t.c2)))
        .collect();
    let labels: Vec<Label> =
        open(run, StageId::Feedback)?.json(crate::artifacts::labels(period))?;
    let label_of = labels
        .iter()
        .map(|l| ((l.c1, l.c2, l.next), l.label))
        .collect();
    Ok(HeldOut {
        scores,
        stored,
        stored_draws,
        train,
        target_counts,
        events,
        label_of,
    })
}

/// Users a triple needs to count on the fixed held-out yardstick (`heldout_feedback_raw`):
/// the user cut of the labels before the default took every triple shrunk, so that tables
/// judged before and after that change can be compared.
pub const FIXED_YARDSTICK_USERS: u32 = 3;

/// The fixed yardstick's labels from one period's labels: the raw rate of each triple with
/// at least [`FIXED_YARDSTICK_USERS`] users, rounded to `round` (0: not rounded). With
/// `normalize = "raw"` these equal the labels that `min_users = 3, shrinkage = 0` writes.
pub(crate) fn raw_labels(
    labels: &[wander_explore::feedback::Label],
    round: f64,
) -> BTreeMap<(u32, u32, u32), f64> {
    labels
        .iter()
        .filter(|l| l.users >= FIXED_YARDSTICK_USERS)
        .map(|l| {
            let r = if round > 0.0 {
                (l.rate / round).round() * round
            } else {
                l.rate
            };
            ((l.c1, l.c2, l.next), r)
        })
        .collect()
}

/// Held-out collective feedback of the cluster served after `e`'s pair: the test-period
/// label of each possible choice weighted by its probability, over the choices that have a
/// label (`None` when almost none do).
pub(crate) fn heldout_feedback(
    top1: &[f64],
    e: &Transition,
    label_of: &BTreeMap<(u32, u32, u32), f64>,
) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (c, p) in top1.iter().enumerate() {
        if let Some(l) = label_of.get(&(e.c1, e.c2, c as u32)) {
            num += p * l;
            den += p;
        }
    }
    (den > 1e-3).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_explore::feedback::Label;

    fn label(next: u32, label: f64, rate: f64, users: u32) -> Label {
        Label {
            c1: 0,
            c2: 1,
            next,
            label,
            rate,
            users,
            events: users,
        }
    }

    /// The fixed yardstick keeps the triples seen from enough users, at their raw rate
    /// rounded like the labels, whatever shrinkage made of their labels.
    #[test]
    fn the_fixed_yardstick_is_the_raw_rate_of_triples_with_enough_users() {
        let labels = [
            label(2, 0.70, 0.0, 1),  // one user, shrunk a long way: not on the yardstick
            label(3, 0.55, 0.52, 3), // three users: the raw rate, rounded
            label(4, 0.80, 0.9333, 9),
        ];
        let raw = raw_labels(&labels, 0.05);
        assert_eq!(raw.len(), 2);
        assert!((raw[&(0, 1, 3)] - 0.50).abs() < 1e-12);
        assert!((raw[&(0, 1, 4)] - 0.95).abs() < 1e-12);
        let unrounded = raw_labels(&labels, 0.0);
        assert_eq!(unrounded[&(0, 1, 4)], 0.9333);
    }
}

//! `wander eval scaling`: best-of-n for several n against novelty-only selection and co-
//! occurrence.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_explore::metrics::bootstrap;
use wander_explore::metrics::entropy_bits;
use wander_explore::metrics::self_information;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::eval::cooc_dists;
use crate::eval::held_out;
use crate::eval::held_out_in;
use crate::eval::heldout_feedback;
use crate::eval::llm_dists;
use crate::eval::Dist;
use crate::eval::HeldOut;
use crate::eval::PairScores;
use crate::summaries::PriorWeightSelection;
use crate::summaries::ScalingFigures;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;
use wander_explore::metrics::Estimate;
use wander_explore::scaling::choose_prior_weight;
use wander_explore::scaling::FrontierPoint;

/// One figure of a strategy's row.
type Metric = fn(&ScalingFigures) -> Estimate;

/// The configuration `wander eval scaling` depends on.
pub(crate) fn eval_scaling_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.precompute;
    json!({"scaling_n": cfg.scaling_n, "scaling_draws": cfg.scaling_draws, "bootstrap_rounds": cfg.bootstrap_rounds, "top_k": cfg.top_k, "seed": ctx.config.run.seed})
}

/// `wander eval scaling`.
pub fn eval_scaling(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.precompute;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::EvalScaling.inputs())?;
    let seed = ctx.config.run.seed;
    let slice = eval_scaling_slice(ctx);
    let stage_dir = run.stage_dir(StageId::EvalScaling.folder());
    let outcome = run.run_stage(StageId::EvalScaling.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let pre = open(&run, StageId::Precompute)?;
        let pre_summary = crate::summaries::read::<crate::summaries::PrecomputeSummary>(StageId::Precompute, &pre.manifest().summary)?;
        let m = pre_summary.clusters;
        // The weight the table's scores already carry the prior with (1: the whole score).
        let table_weight = pre_summary.prior_weight;
        let stored_weight = table_weight.unwrap_or(1.0);
        let held = held_out(&run, m)?;
        for &n in &cfg.scaling_n {
            crate::eval::check_stored_n(&held, n)?;
        }
        let stored_draws = held.stored_draws;
        let HeldOut { scores, stored, train, target_counts, events, label_of, .. } = held;
        let k = cfg.top_k;
        let rounds = cfg.bootstrap_rounds;
        let pairs: BTreeSet<(u32, u32)> = events.iter().map(|e| (e.c1, e.c2)).collect();
        let mut strategies: Vec<(String, BTreeMap<(u32, u32), Dist>)> = Vec::new();
        let bar = wander_core::progress::bar((cfg.scaling_n.len() * pairs.len()) as u64, "scaling", "pairs");
        for &n in &cfg.scaling_n {
            let (best, freq_only) = llm_dists(&scores, &stored, &pairs, n, k, cfg.scaling_draws, seed, m, Some(&bar));
            strategies.push((format!("best_of_{n}"), best));
            strategies.push((format!("novelty_only_{n}"), freq_only));
        }
        bar.finish_and_clear();
        // P2 ranks proposals by the predicted label, which is mostly the candidate's own
        // global rate, so the same globally liked clusters win after most histories. The
        // same n proposals ranked with the candidate's mean training label partly or wholly
        // taken out of the score show what that costs and what the history-conditional part
        // alone picks.
        let n_max = *cfg.scaling_n.iter().max().unwrap_or(&1);
        // The rate a model trained over it adds to its score (its own offsets, which is what
        // `precompute.prior_weight` takes shares of); for other models, the candidate's mean
        // training label.
        // (A table can come without a trained alignment model in this run: a hand-made one.)
        let trained_here = run.stage_dir(StageId::TrainAlignment.folder()).exists();
        let prior_kind = if trained_here { crate::stages::alignment::trained(&run)?.prior() } else { wander_core::config::AlignmentPrior::Learned };
        let prior = match prior_kind {
            wander_core::config::AlignmentPrior::Offset => open(&run, StageId::TrainAlignment)?.json(ALIGNMENT_OFFSETS)?,
            wander_core::config::AlignmentPrior::Learned => {
                let train_labels: Vec<wander_explore::feedback::Label> = open(&run, StageId::Feedback)?.json(LABELS_TRAIN)?;
                crate::stages::alignment::cluster_means(&train_labels, m)
            }
        };
        if prior.len() != m {
            bail!("the alignment model's offsets hold {} clusters, the table {m}: artifacts of different runs", prior.len());
        }
        // Every weight but the table's own (its rows are the `best_of_n` ones).
        let weights = std::iter::once(1.0).chain(PRIOR_WEIGHTS).filter(|&w| w != stored_weight);
        for weight in weights {
            let adjusted = reweigh_prior(&scores, &prior, stored_weight, weight);
            let (best, _) = llm_dists(&adjusted, &stored, &pairs, n_max, k, cfg.scaling_draws, seed, m, None);
            strategies.push((format!("best_of_{n_max}_prior_weight_{weight}"), best));
        }
        let cooc = cooc_dists(&train, &target_counts, &pairs, k, m);
        strategies.push(("cooccurrence".into(), cooc));
        let mut results = BTreeMap::new();
        let mut rows = Vec::new();
        for (si, (name, dist)) in strategies.iter().enumerate() {
            let entry = figures(dist, &events, &label_of, &target_counts, k, rounds, (seed, si as u64 * 16));
            rows.push((name.clone(), entry.clone()));
            results.insert(name.clone(), entry);
        }
        // The prior's weight chosen on the validation period, which the rows above never
        // saw: the test rows then report what that choice gives, not the best of five.
        let choice = choose_on_validation(&run, m, &scores, &stored, &prior, stored_weight, &train, &target_counts, cfg, seed)?;
        let fmt = |v: &Estimate| format!("{:.3} [{:.3}, {:.3}]", v.mean, v.lo, v.hi);
        let hit_k = |e: &ScalingFigures| e.hit_at_k.get(&format!("hit_at_{k}")).copied().unwrap_or(e.hit_at_1);
        // The figures the claim and the plot read, by field (no name that could miss).
        let hit_1: Metric = |e| e.hit_at_1;
        let feedback: Metric = |e| e.heldout_feedback;
        let novelty: Metric = |e| e.novelty_bits;
        let mut md = format!(
            "# Inference-time scaling: best-of-n\n\nProtocol: {} test-period transitions over {} history pairs; for each pair, the novelty model's exact proposal distribution (precompute `{}` mode, temperature {}) and the alignment model's scores from the precompute stage. best_of_n: the best-aligned of n proposals (top-1 exact; top-{k} from {} draws); novelty_only_n: the most frequent of n proposals; cooccurrence: the training period's most frequent next clusters. Held-out feedback: the test-period collective feedback label of the chosen cluster after that pair, averaged over the choice's probability where such a label exists. 95% bootstrap intervals over events ({rounds} resamples). Diversity: entropy (bits) of the served clusters over all events.\n\n| strategy | hit@1 | hit@{k} | held-out feedback | novelty (bits) | diversity (bits) |\n|---|---|---|---|---|---|\n",
            events.len(), pairs.len(), cfg.mode, cfg.temperature, cfg.scaling_draws
        );
        if stored_draws > 0 {
            md.insert_str(md.find("\n\n| strategy").unwrap_or(md.len()), &format!(" The precompute scored only each pair's proposals (`precompute.score = \"proposals\"`) and kept its {stored_draws} draws: for n > 1, best-of-n and novelty-only take their n proposals as subsets of those draws (each subset is n i.i.d. proposals; top-1 exactly over all n-subsets, top-{k} and novelty-only from {} random subsets), a pair's {stored_draws} draws are one realisation, so the figures carry sampling noise that the intervals over events do not show (least for small n; at n = {stored_draws}, one proposal set per pair; `precompute.draws` keeps more).", cfg.scaling_draws));
        }
        for (name, e) in &rows {
            md.push_str(&format!("| {name} | {} | {} | {} | {} | {:.2} |\n", fmt(&e.hit_at_1), fmt(&hit_k(e)), fmt(&e.heldout_feedback), fmt(&e.novelty_bits), e.diversity_bits));
        }
        md.push_str(&match table_weight {
            None => format!("\n`best_of_{n_max}_prior_weight_w`: the same {n_max} proposals ranked by the alignment score minus (1 - w) x the candidate's global rate (the model's own offsets when it was trained over them, else the candidate's mean training label): w = 1 is P2's ranking (`best_of_{n_max}`), w = 0 ranks by what the model says the history adds to the candidate's rate alone.\n"),
            Some(w) => format!("\nThe table ranks by the alignment score less {:.2} x the candidate's global rate (`precompute.prior_weight = {w}`), and so does every `best_of_n` and `novelty_only_n` row here. `best_of_{n_max}_prior_weight_w`: the same {n_max} proposals ranked by the alignment score minus (1 - w) x the rate instead (the table's scores with the rate added back; the model's own offsets): w = 1 is P2's ranking by the whole score.\n", 1.0 - w),
        });
        md.push_str(&match &choice {
            Some(c) => validation_markdown(c, n_max, stored_weight, prior_kind == wander_core::config::AlignmentPrior::Offset),
            None => "\nNo validation-period transition with a label falls on the table's pairs (or none gives a finite figure), so no prior weight was chosen on validation.\n".into(),
        });
        let get = |name: &str, m: Metric| results.get(name).map_or(f64::NAN, |e| m(e).mean);
        let n_min = *cfg.scaling_n.iter().min().unwrap_or(&1);
        let (lo, hi) = (format!("best_of_{n_min}"), format!("best_of_{n_max}"));
        let claim = crate::summaries::ScalingClaim {
            hit_at_1_gain: get(&hi, hit_1) - get(&lo, hit_1),
            feedback_gain: get(&hi, feedback) - get(&lo, feedback),
            novelty_above_cooccurrence: get(&hi, novelty) > get("cooccurrence", novelty),
        };
        md.push_str(&format!(
            "\nThe method's claim (best-of-n raises relevance over n = {n_min} while novelty stays above co-occurrence): hit@1 {:+.3}, held-out feedback {:+.4} from n = {n_min} to n = {n_max}; novelty at n = {n_max} {:.2} bits vs co-occurrence {:.2}.\n\n![scaling](scaling.svg)\n",
            claim.hit_at_1_gain, claim.feedback_gain, get(&hi, novelty), get("cooccurrence", novelty)
        ));
        let series = |prefix: &str, m: Metric| -> Vec<(f64, f64, f64, f64)> {
            cfg.scaling_n.iter().map(|&n| {
                let e = results.get(&format!("{prefix}{n}")).map_or(Estimate { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN }, |e| m(e));
                (n as f64, e.mean, e.lo, e.hi)
            }).collect()
        };
        let svg = wander_explore::plot::panels(&[
            wander_explore::plot::Panel { title: "hit@1 of held-out next cluster".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", hit_1)), ("novelty only (most frequent)".into(), series("novelty_only_", hit_1))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", hit_1))) },
            wander_explore::plot::Panel { title: "held-out collective feedback".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", feedback)), ("novelty only (most frequent)".into(), series("novelty_only_", feedback))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", feedback))) },
            wander_explore::plot::Panel { title: "novelty (bits)".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", novelty)), ("novelty only (most frequent)".into(), series("novelty_only_", novelty))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", novelty))) },
        ]);
        w.write_bytes("scaling.svg", svg.as_bytes())?;
        report_md(StageId::EvalScaling).write(w, md.as_bytes())?;
        crate::summaries::record(&crate::summaries::EvalScalingSummary {
            events: events.len(),
            pairs: pairs.len(),
            strategies: results,
            claim,
            prior_weight_choice: choice,
            report: stage_dir.join("report.md"),
            plot: stage_dir.join("scaling.svg"),
        })
    })
    .context("eval scaling failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::EvalScaling, &outcome))
}

/// Largest gap in bits between the served clusters' entropy and co-occurrence's that still
/// counts as exploring (issue 17's goal: within 1 bit).
const MAX_DIVERSITY_GAP_BITS: f64 = 1.0;

/// One strategy's figures over `events`: hit rates, held-out feedback, novelty (bootstrap
/// intervals over events, seeded by `seed` xor `salt` and the next three salts) and the
/// served clusters' entropy.
fn figures(
    dist: &BTreeMap<(u32, u32), Dist>,
    events: &[wander_explore::transitions::Transition],
    label_of: &BTreeMap<(u32, u32, u32), f64>,
    target_counts: &[u64],
    k: usize,
    rounds: usize,
    (seed, salt): (u64, u64),
) -> ScalingFigures {
    let m = target_counts.len();
    let (mut h1, mut hk, mut fbk, mut nov) = (vec![], vec![], vec![], vec![]);
    let mut served = vec![0.0; m];
    for e in events {
        let (t1, tk) = &dist[&(e.c1, e.c2)];
        h1.push(t1[e.next as usize]);
        hk.push(tk[e.next as usize]);
        // Of the cluster served when one is (a draw of only c1 and c2 serves none).
        let mass: f64 = t1.iter().sum();
        nov.push(if mass > 0.0 {
            t1.iter()
                .enumerate()
                .map(|(c, p)| p * self_information(c as u32, target_counts))
                .sum::<f64>()
                / mass
        } else {
            0.0
        });
        fbk.extend(heldout_feedback(t1, e, label_of));
        for (c, p) in t1.iter().enumerate() {
            served[c] += p;
        }
    }
    ScalingFigures {
        hit_at_1: bootstrap(&h1, rounds, seed ^ salt),
        hit_at_k: BTreeMap::from([(
            format!("hit_at_{k}"),
            bootstrap(&hk, rounds, seed ^ (salt + 1)),
        )]),
        heldout_feedback: bootstrap(&fbk, rounds, seed ^ (salt + 2)),
        feedback_events: fbk.len(),
        novelty_bits: bootstrap(&nov, rounds, seed ^ (salt + 3)),
        diversity_bits: entropy_bits(&served),
    }
}

/// best-of-n at the largest n with the prior at every weight, and co-occurrence, on the
/// validation period's transitions and labels; the weight [`choose_prior_weight`] takes
/// (`None` when no validation transition with a label falls on the table's pairs).
#[allow(clippy::too_many_arguments)]
fn choose_on_validation(
    run: &RunDir,
    m: usize,
    scores: &PairScores,
    stored: &BTreeMap<(u32, u32), Vec<u32>>,
    prior: &[f64],
    stored_weight: f64,
    train: &wander_explore::transitions::PairCounts,
    target_counts: &[u64],
    cfg: &wander_core::config::PrecomputeConfig,
    seed: u64,
) -> crate::Result<Option<PriorWeightSelection>> {
    let valid = held_out_in(run, m, wander_data::Split::Valid)
        .context("choosing precompute.prior_weight on the validation period")?;
    if valid.events.is_empty() || valid.label_of.is_empty() {
        return Ok(None);
    }
    let pairs: BTreeSet<(u32, u32)> = valid.events.iter().map(|e| (e.c1, e.c2)).collect();
    let n_max = *cfg.scaling_n.iter().max().unwrap_or(&1);
    let k = cfg.top_k;
    // Point estimates only: the choice reads means, the intervals belong to the test rows.
    let rounds = 0;
    let mut points = Vec::new();
    for weight in std::iter::once(1.0).chain(PRIOR_WEIGHTS) {
        let adjusted = reweigh_prior(scores, prior, stored_weight, weight);
        let (best, _) = llm_dists(
            &adjusted,
            stored,
            &pairs,
            n_max,
            k,
            cfg.scaling_draws,
            seed,
            m,
            None,
        );
        let f = figures(
            &best,
            &valid.events,
            &valid.label_of,
            target_counts,
            k,
            rounds,
            (seed, 0),
        );
        points.push(FrontierPoint {
            weight,
            feedback: f.heldout_feedback.mean,
            novelty: f.novelty_bits.mean,
            diversity: f.diversity_bits,
        });
    }
    let cooc = figures(
        &cooc_dists(train, target_counts, &pairs, k, m),
        &valid.events,
        &valid.label_of,
        target_counts,
        k,
        rounds,
        (seed, 0),
    );
    let Some(choice) = choose_prior_weight(
        &points,
        cooc.novelty_bits.mean,
        cooc.diversity_bits,
        MAX_DIVERSITY_GAP_BITS,
    ) else {
        return Ok(None);
    };
    Ok(Some(PriorWeightSelection {
        weight: choice.weight,
        meets_goals: choice.meets_goals,
        events: valid.events.len(),
        points,
        cooccurrence_novelty: cooc.novelty_bits.mean,
        cooccurrence_diversity: cooc.diversity_bits,
        max_diversity_gap: MAX_DIVERSITY_GAP_BITS,
    }))
}

/// The report's paragraph on the weight chosen on validation.
/// `servable`: whether the run's alignment model carries the rate as its own offset, which
/// `precompute.prior_weight` below 1 needs.
fn validation_markdown(
    c: &PriorWeightSelection,
    n_max: usize,
    stored_weight: f64,
    servable: bool,
) -> String {
    let mut md = format!(
        "\n## The prior's weight, chosen on the validation period\n\nbest-of-{n_max} on the {} validation-period transitions (between training and test; labels of that period), co-occurrence there: novelty {:.2} bits, diversity {:.2} bits. The rule: of the weights whose served clusters are at least as novel as co-occurrence's and at most {:.1} bit less diverse, the one with the highest held-out feedback; if none, the most diverse of the novel enough.\n\n| weight | held-out feedback | novelty (bits) | diversity (bits) |\n|---|---|---|---|\n",
        c.events, c.cooccurrence_novelty, c.cooccurrence_diversity, c.max_diversity_gap
    );
    for p in &c.points {
        md.push_str(&format!(
            "| {} | {:.3} | {:.2} | {:.2} |\n",
            p.weight, p.feedback, p.novelty, p.diversity
        ));
    }
    let row = if c.weight == stored_weight {
        format!("best_of_{n_max}")
    } else {
        format!("best_of_{n_max}_prior_weight_{}", c.weight)
    };
    let serve = if servable || c.weight == 1.0 {
        format!("To serve it: `precompute.prior_weight = {}`.", c.weight)
    } else {
        "Serving a weight below 1 needs a model trained over the rate (`alignment.arch = \"candidate\"`, `alignment.prior = \"offset\"`); this run's rows take out the candidates' mean training labels instead.".to_string()
    };
    md.push_str(&format!(
        "\nChosen: **{}** ({}); its test-period figures are the `{row}` row above. {serve}\n",
        c.weight,
        if c.meets_goals {
            "meets both exploration goals on validation"
        } else {
            "no weight met both exploration goals on validation"
        },
    ));
    md
}

/// Weights of the candidate's global rate in the extra best-of-n rankings of
/// `wander eval scaling` (1 is the score itself, the table's ranking).
const PRIOR_WEIGHTS: [f64; 4] = [0.5, 0.25, 0.1, 0.0];

/// Every pair's ranking scores with the prior's weight moved from `from` to `to`: a score
/// `s - (1 - from) x prior[candidate]` becomes `s - (1 - to) x prior[candidate]` (`from = 1`
/// for the whole score); the proposal probabilities unchanged.
fn reweigh_prior(scores: &PairScores, prior: &[f64], from: f64, to: f64) -> PairScores {
    scores
        .iter()
        .map(|(&pair, (probs, align))| {
            let adjusted = align
                .iter()
                .zip(prior)
                .map(|(a, p)| a + (to - from) * p)
                .collect();
            (pair, (probs.clone(), adjusted))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_the_prior_out_reranks_by_the_rest() {
        let scores = BTreeMap::from([((0, 1), (vec![0.5, 0.5, 0.0], vec![0.9, 0.5, f64::NAN]))]);
        let prior = [0.8, 0.2, 0.5];
        let full = reweigh_prior(&scores, &prior, 1.0, 1.0);
        assert_eq!(full[&(0, 1)].1[..2], [0.9, 0.5]);
        let none = &reweigh_prior(&scores, &prior, 1.0, 0.0)[&(0, 1)];
        assert!((none.1[0] - 0.1).abs() < 1e-12 && (none.1[1] - 0.3).abs() < 1e-12);
        assert!(none.1[2].is_nan(), "an unscored cluster stays unscored");
        assert_eq!(none.0, vec![0.5, 0.5, 0.0]);
        // A table stored at weight 0 gives back the whole score at weight 1.
        let back =
            &reweigh_prior(&BTreeMap::from([((0, 1), none.clone())]), &prior, 0.0, 1.0)[&(0, 1)];
        assert!((back.1[0] - 0.9).abs() < 1e-12 && (back.1[1] - 0.5).abs() < 1e-12);
    }
}

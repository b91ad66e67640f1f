//! `wander eval`: every exploration-slot strategy on the held-out period, under one protocol.

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
use crate::eval::heldout_feedback;
use crate::eval::llm_dists;
use crate::eval::ranked_dists;
use crate::eval::Dist;
use crate::eval::HeldOut;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64).powi(2);
        bb += (*y as f64).powi(2);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// The configuration `wander eval` depends on.
pub(crate) fn eval_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.precompute;
    json!({"n": cfg.n, "draws": cfg.scaling_draws, "bootstrap_rounds": cfg.bootstrap_rounds, "top_k": cfg.top_k, "seed": ctx.config.run.seed})
}

/// `wander eval`.
pub fn eval_all(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.precompute;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::Eval.inputs())?;
    let seed = ctx.config.run.seed;
    let slice = eval_slice(ctx);
    let stage_dir = run.stage_dir(StageId::Eval.folder());
    let outcome = run.run_stage(StageId::Eval.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let m = tax.planner_clusters().len();
        let centroids: Vec<Vec<f32>> = tax.planner_clusters().iter().map(|c| c.centroid.clone()).collect();
        // Cosine distances between clusters, once: the intra-list diversity below visits
        // every pair of clusters per event (at 128 clusters and 310k events, hours).
        let distance: Vec<Vec<f64>> = (0..m).map(|i| (0..m).map(|j| 1.0 - cosine(&centroids[i], &centroids[j])).collect()).collect();
        let held = held_out(&run, m)?;
        crate::eval::check_stored_n(&held, cfg.n)?;
        let stored_draws = held.stored_draws;
        let HeldOut { scores, stored, train, target_counts, events, label_of, .. } = held;
        // The other periods' labels judge the same served clusters: how the ordering of the
        // strategies moves between the period they are built from and the held-out one.
        let labels_in = |split| -> crate::Result<BTreeMap<(u32, u32, u32), f64>> {
            let labels: Vec<wander_explore::feedback::Label> = open(&run, StageId::Feedback)?.json(labels(split))?;
            Ok(labels.into_iter().map(|l| ((l.c1, l.c2, l.next), l.label)).collect())
        };
        let train_labels = labels_in(wander_data::Split::Train)?;
        let valid_labels = labels_in(wander_data::Split::Valid)?;
        // The yardstick that does not move with the label settings (see `raw_labels`).
        let test_raw = crate::eval::raw_labels(
            &open(&run, StageId::Feedback)?.json(labels(wander_data::Split::Test))?,
            ctx.config.feedback.round,
        );
        let k = cfg.top_k;
        let rounds = cfg.bootstrap_rounds;
        let pairs: BTreeSet<(u32, u32)> = events.iter().map(|e| (e.c1, e.c2)).collect();
        let uniform = 1.0 / (m as f64 - 2.0);
        let random: BTreeMap<(u32, u32), Dist> = pairs.iter().map(|&p| {
            let t1: Vec<f64> = (0..m as u32).map(|c| if c == p.0 || c == p.1 { 0.0 } else { uniform }).collect();
            let tk = t1.iter().map(|v| (v * k as f64).min(1.0)).collect();
            (p, (t1, tk))
        }).collect();
        let popular = ranked_dists(&pairs, k, m, |_, c| target_counts[c as usize] as f64);
        let cooc = cooc_dists(&train, &target_counts, &pairs, k, m);
        let (novelty1, _) = llm_dists(&scores, &stored, &pairs, 1, k, cfg.scaling_draws, seed, m, None);
        let (best, _) = llm_dists(&scores, &stored, &pairs, cfg.n, k, cfg.scaling_draws, seed, m, None);
        let strategies: Vec<(String, Option<&BTreeMap<(u32, u32), Dist>>)> = vec![
            ("random_novel".into(), Some(&random)),
            ("popular_novel".into(), Some(&popular)),
            ("cooccurrence".into(), Some(&cooc)),
            ("novelty_only_n1".into(), Some(&novelty1)),
            (format!("best_of_{}", cfg.n), Some(&best)),
            ("oracle".into(), None),
        ];
        let mut results = BTreeMap::new();
        let metrics = ["hit_at_1", "hit_at_k", "heldout_feedback", "novelty_bits", "out_of_loop", "validity"];
        let mut md = format!(
            "# Exploration strategies on the held-out period\n\nProtocol: global temporal split (test = latest {:.0}% of interactions; seed {seed}); {} test-period transitions (a user's two most recent distinct positively engaged clusters and the next new one) over {} history pairs; each strategy serves the exploration slot for the pair. LLM strategies use the exact proposal distributions of the precompute stage (`{}` mode, temperature {}), top-{k} lists from {} simulated proposal sets. 95% percentile-bootstrap intervals over events ({rounds} resamples).\n\n| strategy | hit@1 | hit@{k} | held-out feedback | novelty (bits) | out-of-loop | validity | coverage | diversity (bits) | intra-list diversity | unique user-cluster hits |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
            100.0 * ctx.config.data.test_fraction, events.len(), pairs.len(), cfg.mode, cfg.temperature, cfg.scaling_draws
        );
        if stored_draws > 0 {
            md.insert_str(md.find("\n\n| strategy").unwrap_or(md.len()), &format!(" The precompute scored only each pair's proposals (`precompute.score = \"proposals\"`): best-of-{} takes its proposals as subsets of the {stored_draws} kept draws (top-1 exactly over all subsets).", cfg.n));
        }
        for (si, (name, dist)) in strategies.iter().enumerate() {
            let mut vals: Vec<Vec<f64>> = vec![Vec::new(); metrics.len()];
            let (mut by_train, mut by_valid, mut by_raw) = (Vec::new(), Vec::new(), Vec::new());
            let mut served = vec![0.0; m];
            let mut pair_hits: BTreeMap<(u32, u32), f64> = BTreeMap::new();
            let mut ild = Vec::new();
            // A served distribution's diversity depends on its history pair only.
            let mut ild_of_pair: BTreeMap<(u32, u32), Option<f64>> = BTreeMap::new();
            for e in &events {
                let oracle;
                let (t1, tk): (&[f64], &[f64]) = match dist {
                    Some(d) => {
                        let (t1, tk) = &d[&(e.c1, e.c2)];
                        (t1, tk)
                    }
                    None => {
                        // Oracle: serves the cluster the user actually went to next.
                        let mut t1 = vec![0.0; m];
                        t1[e.next as usize] = 1.0;
                        oracle = t1;
                        (&oracle, &oracle)
                    }
                };
                vals[0].push(t1[e.next as usize]);
                vals[1].push(tk[e.next as usize]);
                vals[2].extend(heldout_feedback(&t1, e, &label_of));
                by_train.extend(heldout_feedback(&t1, e, &train_labels));
                by_valid.extend(heldout_feedback(&t1, e, &valid_labels));
                by_raw.extend(heldout_feedback(&t1, e, &test_raw));
                let mass: f64 = t1.iter().sum();
                vals[3].push(if mass > 0.0 { t1.iter().enumerate().map(|(c, p)| p * self_information(c as u32, &target_counts)).sum::<f64>() / mass } else { 0.0 });
                let seen = train.get(&(e.c1, e.c2));
                vals[4].push(if mass > 0.0 { t1.iter().enumerate().filter(|(c, _)| seen.is_none_or(|s| !s.contains_key(&(*c as u32)))).map(|(_, p)| p).sum::<f64>() / mass } else { 0.0 });
                vals[5].push(mass);
                for (c, p) in t1.iter().enumerate() {
                    served[c] += p;
                }
                // Expected distinct (user, cluster) engagements the slot would have produced.
                let miss = pair_hits.entry((e.user, e.next)).or_insert(1.0);
                *miss *= 1.0 - t1[e.next as usize];
                if dist.is_some() {
                    let of_pair = *ild_of_pair.entry((e.c1, e.c2)).or_insert_with(|| {
                        let (mut num, mut den) = (0.0, 0.0);
                        for i in 0..m {
                            for j in i + 1..m {
                                let w = tk[i] * tk[j];
                                if w > 0.0 {
                                    num += w * distance[i][j];
                                    den += w;
                                }
                            }
                        }
                        (den > 0.0).then(|| num / den)
                    });
                    ild.extend(of_pair);
                }
            }
            let coverage = served.iter().filter(|&&s| s >= 1.0).count();
            let unique = pair_hits.values().map(|miss| 1.0 - miss).sum::<f64>();
            let est = |mi: usize| bootstrap(&vals[mi], rounds, seed ^ (si as u64 * 16 + mi as u64));
            let entry = crate::summaries::StrategyFigures {
                hit_at_1: est(0),
                hit_at_k: est(1),
                heldout_feedback: est(2),
                train_label_feedback: Some(bootstrap(&by_train, rounds, seed ^ (si as u64 * 16 + 14))),
                valid_label_feedback: Some(bootstrap(&by_valid, rounds, seed ^ (si as u64 * 16 + 15))),
                heldout_feedback_raw: Some(bootstrap(&by_raw, rounds, seed ^ (si as u64 * 16 + 13))),
                novelty_bits: est(3),
                out_of_loop: est(4),
                validity: est(5),
                coverage_clusters: coverage,
                diversity_bits: entropy_bits(&served),
                intra_list_diversity: if ild.is_empty() { f64::NAN } else { ild.iter().sum::<f64>() / ild.len() as f64 },
                unique_user_cluster_hits: unique,
            };
            let cell = |v: &wander_explore::metrics::Estimate| format!("{:.3} [{:.3}, {:.3}]", v.mean, v.lo, v.hi);
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {coverage} | {:.2} | {} | {unique:.0} |\n",
                cell(&entry.hit_at_1), cell(&entry.hit_at_k), cell(&entry.heldout_feedback), cell(&entry.novelty_bits), cell(&entry.out_of_loop), cell(&entry.validity), entropy_bits(&served),
                if entry.intra_list_diversity.is_nan() { "n/a".to_string() } else { format!("{:.3}", entry.intra_list_diversity) }
            ));
            results.insert(name.clone(), entry);
        }
        md.push_str(&format!("\nThe same served clusters on the same test events, judged by each period's feedback labels (where the triple has one): the training period is the world the models (and `wander simulate`) are built from; a strategy whose rank moves between the columns gains or loses with the period, not only with what it serves. The last column is a yardstick that does not move with `[feedback]`'s shrinkage or user cut: the test period's raw rate of each triple seen from at least {} users, rounded like the labels (the labels of `min_users = 3`, `shrinkage = 0`).\n\n| strategy | training labels | validation labels | test labels (held-out feedback) | test, raw rate of triples with at least {} users |\n|---|---|---|---|---|\n", crate::eval::FIXED_YARDSTICK_USERS, crate::eval::FIXED_YARDSTICK_USERS));
        for (name, r) in &results {
            let cell = |v: &Option<wander_explore::metrics::Estimate>| v.as_ref().map_or("-".to_string(), |v| format!("{:.3} [{:.3}, {:.3}]", v.mean, v.lo, v.hi));
            md.push_str(&format!("| {name} | {} | {} | {:.3} [{:.3}, {:.3}] | {} |\n", cell(&r.train_label_feedback), cell(&r.valid_label_feedback), r.heldout_feedback.mean, r.heldout_feedback.lo, r.heldout_feedback.hi, cell(&r.heldout_feedback_raw)));
        }
        md.push_str(&format!("\nDefinitions and sources: hit@k = share of events whose actual next cluster is among the strategy's top k (hit rate; with the top-1 served, hit@1); held-out feedback = the test-period collective feedback label (feedback stage; P2's alignment target) of the served cluster after that pair, where one exists; novelty = mean self-information -log2 p(c) of the served cluster, p from training target frequencies (Zhou et al., PNAS 2010); out-of-loop = share of served clusters that never followed that pair in training (P1's motivation: leaving the feedback loop); validity = share of events where the strategy served a valid novel cluster (LLM proposals of a history cluster are dropped; if all n are, nothing is served); coverage = clusters served at least once in expectation (catalogue coverage, Ge et al., RecSys 2010); diversity = entropy of the served clusters over events; intra-list diversity = mean pairwise (1 - cosine) of the top-{k} clusters' centroid embeddings (Ziegler et al., WWW 2005), with inclusion probabilities as weights for randomised lists; unique user-cluster hits = expected number of distinct (user, cluster) pairs the slot would have matched (P2's exploration-diversity figure). The oracle serves the actual next cluster: an upper bound for hit rates only.\n"));
        report_md(StageId::Eval).write(w, md.as_bytes())?;
        crate::summaries::record(&crate::summaries::EvalSummary {
            events: events.len(),
            pairs: pairs.len(),
            strategies: results,
            report: stage_dir.join("report.md"),
        })
    })
    .context("eval failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Eval, &outcome))
}

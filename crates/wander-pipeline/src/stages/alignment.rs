//! `wander train alignment` and `wander eval alignment`: the alignment model (P2) and its
//! evaluation against the candidate's global rate and a ridge baseline.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::AlignmentArch;
use wander_core::config::AlignmentOutput;
use wander_core::config::AlignmentPrior;
use wander_explore::feedback;
use wander_explore::feedback::Label;
use wander_explore::metrics::auc;
use wander_explore::metrics::bootstrap;
use wander_explore::metrics::bootstrap_paired;
use wander_explore::metrics::bootstrap_ratio;
use wander_explore::metrics::mae;
use wander_explore::metrics::spearman;
use wander_explore::metrics::within_group_concordance;
use wander_explore::metrics::within_group_spearman;
use wander_explore::metrics::Estimate;
use wander_explore::planner::{AlignmentScorer, CandidateScorer};
use wander_llm::readout::LabelLevels;
use wander_llm::readout::Readout;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::model_and_inputs;
use crate::common::model_q8;
use crate::common::report;
use crate::llm::alignment_prompts;
use crate::llm::load_models;
use crate::llm::lora_train_config;
use crate::llm::run_trainer;
use crate::log;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

fn alignment_examples(
    tok: &wander_llm::tokenizer::Tokenizer,
    descriptions: &[String],
    labels: &[Label],
    pairwise_margin: Option<f32>,
) -> crate::Result<Vec<wander_llm::train::Example>> {
    let mut out = Vec::new();
    for ((c1, c2), targets) in feedback::by_pair(labels) {
        let targets: Vec<(u32, f32)> = targets.into_iter().map(|(c, l)| (c, l as f32)).collect();
        if let Some(m) = pairwise_margin {
            let has_pair = targets
                .iter()
                .any(|a| targets.iter().any(|b| a.1 - b.1 > m));
            if !has_pair {
                continue;
            }
        }
        out.push(wander_llm::train::Example {
            prompt: tok.chat_prompt(
                feedback::ALIGNMENT_SYSTEM,
                &wander_explore::sft::user_message(
                    &descriptions[c1 as usize],
                    &descriptions[c2 as usize],
                ),
            )?,
            answer: Vec::new(),
            label: 0.0,
            targets,
            candidates: Vec::new(),
        });
    }
    Ok(out)
}

/// One example per history pair for the candidate-conditioned model: each label's prompt
/// holds the history pair and the candidate's description; the pair's prompts share their
/// history tokens, which run once, and the candidates' suffixes run as one batch.
pub(crate) fn candidate_examples(
    tok: &wander_llm::tokenizer::Tokenizer,
    descriptions: &[String],
    labels: &[Label],
) -> crate::Result<Vec<wander_llm::train::Example>> {
    candidate_examples_where(tok, descriptions, &candidate_units(labels, 0), |_| true)
}

/// A history pair with some of its candidates `(next, label)`: one training example.
pub(crate) type CandidateUnit = ((u32, u32), Vec<(u32, f64)>);

/// The labels grouped by history pair, in pair order, each pair's candidates split into
/// units of at most `max_candidates` (0: one unit a pair). The memory of a training step
/// grows with the candidates of its examples: about 98 a pair at 128 clusters and 50M
/// events, where the passes over whole pairs reached 10-11 GiB.
pub(crate) fn candidate_units(labels: &[Label], max_candidates: usize) -> Vec<CandidateUnit> {
    feedback::by_pair(labels)
        .into_iter()
        .flat_map(|(pair, candidates)| {
            let size = if max_candidates == 0 {
                candidates.len().max(1)
            } else {
                max_candidates
            };
            candidates
                .chunks(size)
                .map(|c| (pair, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One example per unit, with only the units that `read` selects (by index) tokenized, the
/// others [`wander_llm::train::Example::unread`]: at tens of millions of events a short run
/// visits a few hundred of a million labels, and tokenizing them all took most of its time.
pub(crate) fn candidate_examples_where(
    tok: &wander_llm::tokenizer::Tokenizer,
    descriptions: &[String],
    units: &[CandidateUnit],
    read: impl Fn(usize) -> bool,
) -> crate::Result<Vec<wander_llm::train::Example>> {
    let d = |c: u32| descriptions[c as usize].as_str();
    units
        .iter()
        .enumerate()
        .map(|(i, ((c1, c2), candidates))| {
            if !read(i) {
                return Ok(wander_llm::train::Example::unread());
            }
            let prompts = candidates
                .iter()
                .map(|&(next, label)| {
                    let prompt = tok.chat_prompt(
                        feedback::ALIGNMENT_CANDIDATE_SYSTEM,
                        &feedback::candidate_message(d(*c1), d(*c2), d(next)),
                    )?;
                    Ok((prompt, label as f32))
                })
                .collect::<crate::Result<Vec<_>>>()?;
            Ok(wander_llm::train::Example::shared_prefix(prompts)?)
        })
        .collect()
}

/// The levels of a label written as text (`alignment.output = "text"`): the multiples of
/// `round` that `labels` span, each as the answer tokens the model writes.
pub(crate) fn text_levels(
    tok: &wander_llm::tokenizer::Tokenizer,
    round: f64,
    labels: &[Label],
) -> crate::Result<LabelLevels> {
    let levels = feedback::label_levels(round, labels.iter().map(|l| l.label))?
        .into_iter()
        .map(|(value, text)| Ok((value as f32, text.clone(), tok.answer(&text)?)))
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(LabelLevels::new(levels)?)
}

/// How the model being trained reads its label out: a fresh scalar head (starting at
/// `mean`, so that the model learns what history and candidate add to it) or the levels
/// of its text label; and the objective that trains it.
pub(crate) fn candidate_readout(
    output: AlignmentOutput,
    hidden: usize,
    device: &candle_core::Device,
    mean: f64,
    levels: impl FnOnce() -> crate::Result<LabelLevels>,
) -> crate::Result<(Readout, wander_llm::train::Objective)> {
    Ok(match output {
        AlignmentOutput::Scalar => {
            let head = wander_llm::model::ScoreHead::new(hidden, 1, device)?;
            head.set_bias(&[mean as f32])?;
            (
                Readout::Head(head.clone()),
                wander_llm::train::Objective::Regression(head),
            )
        }
        AlignmentOutput::Text => {
            let levels = levels()?;
            (
                Readout::Text(levels.clone()),
                wander_llm::train::Objective::Text(levels),
            )
        }
    })
}

/// The candidate-reading model's prediction for each label's triple, with a progress bar.
pub(crate) fn score_labels(
    scorer: &CandidateScorer,
    labels: &[Label],
    bar_label: &str,
) -> crate::Result<Vec<f64>> {
    let triples: Vec<(u32, u32, u32)> = labels.iter().map(|l| (l.c1, l.c2, l.next)).collect();
    let bar = wander_core::progress::bar(triples.len() as u64, bar_label, "triples");
    let mut out = Vec::with_capacity(triples.len());
    // Labels come sorted by pair, so a chunk holds few pairs and each pair's tokens run once.
    for chunk in triples.chunks(128) {
        out.extend(scorer.scores(chunk)?.into_iter().map(f64::from));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Mean train label of each candidate cluster (the global mean where it has none): the
/// "c_next's global rate" baseline in label units, and the head's starting bias.
pub(crate) fn cluster_means(labels: &[Label], n: usize) -> Vec<f64> {
    let mut sum = vec![0.0; n];
    let mut count = vec![0.0; n];
    for l in labels {
        sum[l.next as usize] += l.label;
        count[l.next as usize] += 1.0;
    }
    let global = labels.iter().map(|l| l.label).sum::<f64>() / labels.len().max(1) as f64;
    sum.iter()
        .zip(&count)
        .map(|(s, c)| if *c > 0.0 { s / c } else { global })
        .collect()
}

/// The LoRA schedule of `[alignment]`.
fn alignment_train_config(ctx: &StageContext) -> wander_llm::train::TrainConfig {
    let cfg = &ctx.config.alignment;
    lora_train_config(
        cfg.steps,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.lr,
        cfg.warmup_steps,
        cfg.eval_every,
        cfg.checkpoint_every,
        ctx.config.run.seed,
    )
}

/// The configuration `wander train alignment` depends on.
pub(crate) fn train_alignment_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.alignment;
    let mut slice = json!({"train": alignment_train_config(ctx), "lora": ctx.config.llm.lora, "objective": cfg.objective, "head_lr": cfg.head_lr, "pairwise_margin": ctx.config.feedback.pairwise_margin, "eval_prompts": cfg.eval_prompts});
    if cfg.arch == AlignmentArch::Candidate {
        // Only then, so that runs of the per-cluster head made before `arch` existed stay fresh.
        slice["arch"] = json!(cfg.arch);
    }
    if cfg.output == AlignmentOutput::Text {
        slice["output"] = json!(cfg.output);
        slice["round"] = json!(ctx.config.feedback.round);
    }
    if cfg.holdout_candidates > 0.0 {
        slice["holdout_candidates"] = json!(cfg.holdout_candidates);
    }
    if cfg.arch == AlignmentArch::Candidate && cfg.max_candidates > 0 {
        slice["max_candidates"] = json!(cfg.max_candidates);
    }
    if cfg.prior == AlignmentPrior::Offset {
        slice["prior"] = json!(cfg.prior);
    }
    slice
}

/// The configuration `wander eval alignment` depends on.
pub(crate) fn eval_alignment_slice(ctx: &StageContext) -> Value {
    let mut slice = json!({"bootstrap_rounds": ctx.config.alignment.bootstrap_rounds, "seed": ctx.config.run.seed});
    // Only where it samples, so that evaluations made before the key stay fresh.
    if ctx.config.alignment.eval_pairs > 0 {
        slice["eval_pairs"] = json!(ctx.config.alignment.eval_pairs);
    }
    crate::llm::add_alignment_products(ctx, &mut slice);
    slice
}

/// The parent alignment model that `alignment.warm_start` names: its adapter, and its head
/// where it reads out through one; checked against this run's base model, LoRA shape,
/// architecture, readout and prior. `None`: a fresh model.
fn warm_start_alignment(
    ctx: &StageContext,
    base_model_sha256: &str,
) -> crate::Result<Option<(std::path::PathBuf, Option<std::path::PathBuf>)>> {
    let slice = train_alignment_slice(ctx);
    let Some(parent) = crate::llm::warm_start_parent(
        "alignment.warm_start",
        &ctx.config.alignment.warm_start,
        StageId::TrainAlignment,
        &slice,
        &[
            ("lora", "[llm.lora] shape"),
            ("arch", "architecture (alignment.arch)"),
            ("output", "readout (alignment.output)"),
            ("prior", "prior (alignment.prior)"),
            ("objective", "objective (alignment.objective)"),
        ],
        base_model_sha256,
    )?
    else {
        return Ok(None);
    };
    let head = match ctx.config.alignment.output {
        AlignmentOutput::Scalar => Some(parent.path(ALIGNMENT_HEAD)?),
        AlignmentOutput::Text => None,
    };
    Ok(Some((parent.path(ALIGNMENT_ADAPTER)?, head)))
}

/// `wander train alignment`.
pub fn train_alignment(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.alignment;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let (q8, mut inputs) = model_and_inputs(ctx, &run, StageId::TrainAlignment)?;
    let base_sum = inputs
        .get(&q8.display().to_string())
        .cloned()
        .unwrap_or_default();
    let warm = warm_start_alignment(ctx, &base_sum)?;
    if let Some((adapter, head)) = &warm {
        // The parent's weights are inputs like the base model's: a retrained parent makes
        // this model stale.
        for file in std::iter::once(adapter).chain(head) {
            inputs.insert(
                format!("warm_start:{}", file.display()),
                wander_core::hash::sha256_file(file)?,
            );
        }
    }
    let train_cfg = alignment_train_config(ctx);
    let candidate = cfg.arch == AlignmentArch::Candidate;
    let slice = train_alignment_slice(ctx);
    let checkpoints = run.root().join(".checkpoints/alignment");
    let outcome = run.run_stage(StageId::TrainAlignment.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let descriptions: Vec<String> = tax.planner_clusters().iter().map(|c| c.description.clone()).collect();
        let stage = open(&run, StageId::Feedback)?;
        let held = feedback::held_out_candidates(descriptions.len(), cfg.holdout_candidates, ctx.config.run.seed);
        let seen = |l: &Label| !held.contains(&l.next);
        let train_labels: Vec<Label> = stage.json(LABELS_TRAIN)?.into_iter().filter(seen).collect();
        let valid_labels: Vec<Label> = stage.json(LABELS_VALID)?.into_iter().filter(seen).collect();
        let (tok, mut model, params) = crate::llm::trainable_model(ctx, &q8)?;
        if let Some((adapter, _)) = &warm {
            model.load_lora(adapter)?;
            log(format!("warm start: the LoRA adapter starts from {}", adapter.display()));
        }
        let pairwise = (cfg.objective == wander_core::config::AlignmentObjective::Pairwise)
            .then_some(ctx.config.feedback.pairwise_margin as f32);
        // With the offset prior the model learns only what the history adds to each
        // candidate's global rate (the same rate the `cluster_global_rate` baseline predicts).
        let offsets = (candidate && cfg.prior == AlignmentPrior::Offset).then(|| cluster_means(&train_labels, descriptions.len()));
        let targets = |labels: &[Label]| -> Vec<Label> {
            match &offsets {
                Some(o) => labels.iter().map(|l| Label { label: l.label - o[l.next as usize], ..*l }).collect(),
                None => labels.to_vec(),
            }
        };
        // The periodic eval loss runs every validation prompt: a seeded sample bounds its cost
        // (the candidate architecture has one prompt per label, several times the pairs).
        fn sample<T>(mut eval: Vec<T>, at_most: usize, seed: u64) -> Vec<T> {
            if eval.len() > at_most {
                wander_core::rng::Rng::new(seed).shuffle(&mut eval);
                eval.truncate(at_most);
            }
            eval
        }
        let (at_most, seed) = (cfg.eval_prompts, ctx.config.run.seed);
        let (train, eval) = if candidate {
            // Only the pairs the run reads are tokenized: the steps' visits, and the sample
            // of validation pairs (the same shuffle on their indices picks the same pairs).
            let units = candidate_units(&targets(&train_labels), cfg.max_candidates);
            let read = train_cfg.visited(units.len());
            let train = candidate_examples_where(&tok, &descriptions, &units, |i| read[i])?;
            let units = candidate_units(&targets(&valid_labels), cfg.max_candidates);
            let sampled = sample((0..units.len()).collect::<Vec<usize>>(), at_most, seed);
            let mut chosen = vec![false; units.len()];
            sampled.iter().for_each(|&i| chosen[i] = true);
            let mut all = candidate_examples_where(&tok, &descriptions, &units, |i| chosen[i])?;
            let eval = sampled.iter().map(|&i| std::mem::replace(&mut all[i], wander_llm::train::Example::unread())).collect();
            (train, eval)
        } else {
            (alignment_examples(&tok, &descriptions, &train_labels, pairwise)?, sample(alignment_examples(&tok, &descriptions, &valid_labels, pairwise)?, at_most, seed))
        };
        if train.is_empty() {
            bail!("no training labels: lower feedback.min_users or check data.positive (feedback stage has 0 train labels)");
        }
        let (readout, objective) = if candidate {
            let mean = targets(&train_labels).iter().map(|l| l.label).sum::<f64>() / train_labels.len() as f64;
            candidate_readout(cfg.output, model.cfg.hidden, model.device(), mean, || text_levels(&tok, ctx.config.feedback.round, &train_labels))?
        } else {
            let head = wander_llm::model::ScoreHead::new(model.cfg.hidden, descriptions.len(), model.device())?;
            if pairwise.is_none() {
                let means = cluster_means(&train_labels, descriptions.len());
                head.set_bias(&means.iter().map(|&m| m as f32).collect::<Vec<_>>())?;
            }
            let objective = match pairwise {
                Some(margin) => wander_llm::train::Objective::Pairwise { head: head.clone(), margin },
                None => wander_llm::train::Objective::Regression(head.clone()),
            };
            (Readout::Head(head), objective)
        };
        if let (Some((_, Some(path))), Readout::Head(head)) = (&warm, &readout) {
            // The parent's head replaces the fresh one's values (its bias included: the
            // parent's mean label, not this window's), so training continues the parent.
            let parent = wander_llm::model::ScoreHead::load(path, model.device())?;
            for ((name, ours), (_, theirs)) in head.tensors().iter().zip(parent.tensors()) {
                let values: Vec<f32> = theirs.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(wander_llm::LlmError::from)?;
                if values.iter().any(|v| !v.is_finite()) {
                    bail!("alignment.warm_start: {}: the parent's head `{name}` holds NaN or infinite values", path.display());
                }
                if ours.shape() != theirs.shape() {
                    bail!("alignment.warm_start: the parent's head `{name}` is {:?}, this run's {:?} (another number of clusters?)", theirs.shape().dims(), ours.shape().dims());
                }
                ours.set(theirs.as_tensor())?;
            }
        }
        let head_tensors = match &readout {
            Readout::Head(head) => head.tensors(),
            Readout::Text(_) => Vec::new(),
        };
        let all_params: Vec<_> = params.into_iter().chain(head_tensors).collect();
        let mut trainer = wander_llm::train::Trainer::new(&model, objective, all_params, train_cfg.clone(), tok.im_end, Some(&checkpoints))?;
        trainer.set_lr_scale("head.", cfg.head_lr / cfg.lr);
        let initial_eval = trainer.initial_eval_loss(&eval)?;
        let report = run_trainer(&mut trainer, &train, &eval, train_cfg.steps, "align")?;
        model.save_lora(&ALIGNMENT_ADAPTER.path_in(w)?)?;
        let readout_file = match &readout {
            Readout::Head(head) => {
                head.save(&ALIGNMENT_HEAD.path_in(w)?)?;
                ALIGNMENT_HEAD.file()
            }
            Readout::Text(levels) => {
                ALIGNMENT_LEVELS.write(w, levels)?;
                ALIGNMENT_LEVELS.file()
            }
        };
        if let Some(o) = &offsets {
            ALIGNMENT_OFFSETS.write(w, o)?;
        }
        w.write_json(train_report(StageId::TrainAlignment).file(), &report.history())?;
        crate::common::remove_scratch(&checkpoints);
        let pairs = train_labels.iter().map(|l| (l.c1, l.c2)).collect::<BTreeSet<_>>().len();
        crate::summaries::record(&crate::summaries::TrainAlignmentSummary {
            steps: report.steps,
            pairs,
            labels: train_labels.len(),
            objective: cfg.objective,
            first_loss: report.losses.first().copied(),
            final_loss: report.losses.last().copied(),
            initial_eval_loss: initial_eval,
            eval_losses: report.eval_losses.clone(),
            tokens_per_s: report.tokens_per_second(),
            resumed_from: report.resumed_from,
            adapter: ALIGNMENT_ADAPTER.file().into(),
            head: readout_file.into(),
            output: matches!(readout, Readout::Text(_)).then_some(AlignmentOutput::Text),
            arch: candidate.then_some(cfg.arch),
            prompts: candidate.then_some(train_labels.len()),
            holdout_candidates: held.iter().copied().collect(),
            prior: offsets.is_some().then_some(AlignmentPrior::Offset),
            warm_start: warm.as_ref().map(|(adapter, _)| adapter.clone()),
        })
    })
    .context("train alignment failed; earlier artifacts are unchanged and a rerun resumes from the last checkpoint")?;
    Ok(report(StageId::TrainAlignment, &outcome))
}

/// Held-out pairs with fewer labels than this give no within-pair correlation.
const WITHIN_PAIR_MIN: usize = 3;

/// The architecture the run's alignment model was trained with (its manifest records it;
/// runs from before `alignment.arch` existed are the per-cluster head).
pub(crate) fn trained_arch(run: &RunDir) -> crate::Result<AlignmentArch> {
    Ok(trained(run)?.arch())
}

/// The summary the alignment model's training recorded.
pub(crate) fn trained(run: &RunDir) -> crate::Result<crate::summaries::TrainAlignmentSummary> {
    let stage = open(run, StageId::TrainAlignment)?;
    crate::summaries::read(StageId::TrainAlignment, &stage.manifest().summary)
}

/// Seeded Gaussian random projection of cluster centroids to `dim` dimensions.
fn project(centroids: &[Vec<f32>], dim: usize, seed: u64) -> Vec<Vec<f64>> {
    let d = centroids.first().map_or(0, Vec::len);
    let mut rng = wander_core::rng::Rng::new(seed);
    let r: Vec<f64> = (0..d * dim)
        .map(|_| rng.normal() / (dim as f64).sqrt())
        .collect();
    centroids
        .iter()
        .map(|c| {
            (0..dim)
                .map(|j| (0..d).map(|i| c[i] as f64 * r[i * dim + j]).sum())
                .collect()
        })
        .collect()
}

fn linear_features(p: &[Vec<f64>], l: &Label) -> Vec<f64> {
    let (a, b, c) = (&p[l.c1 as usize], &p[l.c2 as usize], &p[l.next as usize]);
    let mut f: Vec<f64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let hist = f.clone();
    f.extend(c.iter().copied());
    f.extend(hist.iter().zip(c).map(|(h, x)| h * x));
    f
}

/// The shrinkages (pseudo-users) `triple_train_label` may pick, the default first.
const MEMORY_GRID: [f64; 6] = [10.0, 0.0, 1.0, 3.0, 30.0, 100.0];

/// Pseudo-users of shrinkage for the `triple_train_label` baseline, picked by squared error
/// on the validation labels (the first of the grid when there are none).
fn memory_shrinkage(train: &[Label], valid: &[Label], means: &[f64]) -> f64 {
    MEMORY_GRID
        .into_iter()
        .map(|k| {
            let pred = feedback::remembered_labels(train, valid, means, k);
            let err: f64 = pred
                .iter()
                .zip(valid)
                .map(|(p, l)| (p - l.label).powi(2))
                .sum();
            (err, k)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(MEMORY_GRID[0], |(_, k)| k)
}

/// `wander eval alignment`.
pub fn eval_alignment(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let inputs = manifests(&run, StageId::EvalAlignment.inputs())?;
    let rounds = ctx.config.alignment.bootstrap_rounds;
    let seed = ctx.config.run.seed;
    let slice = eval_alignment_slice(ctx);
    let stage_dir = run.stage_dir(StageId::EvalAlignment.folder());
    let outcome = run.run_stage(StageId::EvalAlignment.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let stage = open(&run, StageId::Feedback)?;
        // Candidates that training withheld (alignment.holdout_candidates) are unseen for the
        // baselines too.
        let held: BTreeSet<u32> = trained(&run)?.holdout_candidates.into_iter().collect();
        let seen = |l: &Label| !held.contains(&l.next);
        let train: Vec<Label> = stage.json(LABELS_TRAIN)?.into_iter().filter(seen).collect();
        let valid: Vec<Label> = stage.json(LABELS_VALID)?.into_iter().filter(seen).collect();
        let mut test: Vec<Label> = stage.json(LABELS_TEST)?;
        if test.is_empty() {
            bail!("no held-out labels in the test period: lower feedback.min_users");
        }
        let eval_pairs = ctx.config.alignment.eval_pairs;
        let all_pairs: Vec<(u32, u32)> = test.iter().map(|l| (l.c1, l.c2)).collect::<BTreeSet<_>>().into_iter().collect();
        if eval_pairs > 0 && all_pairs.len() > eval_pairs {
            let mut chosen = all_pairs.clone();
            wander_core::rng::Rng::new(seed).shuffle(&mut chosen);
            let chosen: BTreeSet<(u32, u32)> = chosen.into_iter().take(eval_pairs).collect();
            test.retain(|l| chosen.contains(&(l.c1, l.c2)));
            crate::log(format!("eval alignment: a seeded sample of {eval_pairs} of the {} held-out history pairs (alignment.eval_pairs), {} labels", all_pairs.len(), test.len()));
        }
        let models = load_models(ctx, &run, &q8, false)?;
        let n = models.descriptions.len();
        let pairs: Vec<(u32, u32)> = test.iter().map(|l| (l.c1, l.c2)).collect::<BTreeSet<_>>().into_iter().collect();
        // What was trained decides how it is read (not the current config).
        let arch = trained_arch(&run)?;
        let llm: Vec<f64> = match arch {
            AlignmentArch::ClusterHead => {
                let prompts = alignment_prompts(&models, &pairs)?;
                let scorer = AlignmentScorer::new(&models.alignment, models.readout.head()?, &prompts)?;
                let bar = wander_core::progress::bar(pairs.len() as u64, "eval", "pairs");
                let mut llm_scores: BTreeMap<(u32, u32), Vec<f32>> = BTreeMap::new();
                for chunk in pairs.chunks(16) {
                    for (p, s) in chunk.iter().zip(scorer.scores(chunk)?) {
                        llm_scores.insert(*p, s);
                    }
                    bar.inc(chunk.len() as u64);
                }
                bar.finish_and_clear();
                test.iter().map(|l| llm_scores[&(l.c1, l.c2)][l.next as usize] as f64).collect()
            }
            AlignmentArch::Candidate => {
                score_labels(&models.candidate_scorer()?, &test, "eval")?
            }
        };
        let truth: Vec<f64> = test.iter().map(|l| l.label).collect();
        let means = cluster_means(&train, n);
        let global: Vec<f64> = test.iter().map(|l| means[l.next as usize]).collect();
        // Linear model over the clusters' centroid embeddings (projected to 32 dimensions):
        // [e1 + e2, e_next, (e1 + e2) * e_next], ridge penalty picked on the validation labels.
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let centroids: Vec<Vec<f32>> = tax.planner_clusters().iter().map(|c| c.centroid.clone()).collect();
        let proj = project(&centroids, 32, seed);
        let xs: Vec<Vec<f64>> = train.iter().map(|l| linear_features(&proj, l)).collect();
        let ys: Vec<f64> = train.iter().map(|l| l.label).collect();
        let mut best: Option<(f64, f64, wander_explore::linear::Ridge)> = None;
        for lambda in [0.01, 0.1, 1.0, 10.0, 100.0] {
            if let Some(m) = wander_explore::linear::Ridge::fit(&xs, &ys, lambda) {
                let err = if valid.is_empty() { 0.0 } else {
                    valid.iter().map(|l| (m.predict(&linear_features(&proj, l)) - l.label).powi(2)).sum::<f64>() / valid.len() as f64
                };
                if best.as_ref().is_none_or(|b| err < b.0) {
                    best = Some((err, lambda, m));
                }
            }
        }
        let (_, lambda, ridge) = best.context("the ridge baseline could not be fitted")?;
        let linear: Vec<f64> = test.iter().map(|l| ridge.predict(&linear_features(&proj, l))).collect();
        // The triple's own training label, shrunk towards the candidate's rate by k
        // pseudo-users (k picked on the validation labels): what a model that memorised every
        // training label would say. If it cannot rank a history's candidates better than the
        // global rate, the training labels' history-conditional part does not carry over to
        // the test period, and no model trained on them can be expected to.
        let memory_k = memory_shrinkage(&train, &valid, &means);
        let memory: Vec<f64> = feedback::remembered_labels(&train, &test, &means, memory_k);
        let scorers: [(&str, &[f64]); 4] = [("alignment_llm", &llm), ("cluster_global_rate", &global), ("linear_embeddings", &linear), ("triple_train_label", &memory)];
        let mut sorted = truth.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        let mut overall = BTreeMap::new();
        let mut md = format!(
            "# Alignment model: offline evaluation\n\nProtocol: collective feedback labels (`{}` signal, `{}` normalisation, at least {} users, rounded to {}) of the held-out test period: {} (c1, c2, candidate) triples over {} history pairs{}. The model was trained on {} training-period labels. Above-median for AUC: label > {median:.3}. 95% intervals: percentile bootstrap over triples ({rounds} resamples).\n\n| method | Spearman | AUC (above median) | MAE |\n|---|---|---|---|\n",
            serde_json::to_value(ctx.config.feedback.signal)?.as_str().unwrap_or(""), serde_json::to_value(ctx.config.feedback.normalize)?.as_str().unwrap_or(""), ctx.config.feedback.min_users, ctx.config.feedback.round, test.len(), pairs.len(),
            if pairs.len() < all_pairs.len() { format!(" (a seeded sample of the {} held-out pairs: `alignment.eval_pairs`)", all_pairs.len()) } else { String::new() },
            train.len()
        );
        let above: Vec<f64> = truth.iter().map(|&t| f64::from(u8::from(t > median))).collect();
        let fmt = |e: &Estimate| format!("{:.3} [{:.3}, {:.3}]", e.mean, e.lo, e.hi);
        let mut spear = BTreeMap::new();
        for &(name, pred) in &scorers {
            let s = bootstrap_paired(pred, &truth, spearman, rounds, seed ^ 11);
            let a = bootstrap_paired(pred, &above, |p, y| auc(p, &y.iter().map(|&v| v > 0.5).collect::<Vec<_>>()), rounds, seed ^ 12);
            let errs: Vec<f64> = pred.iter().zip(&truth).map(|(p, t)| (p - t).abs()).collect();
            let m = bootstrap(&errs, rounds, seed ^ 13);
            debug_assert!((m.mean - mae(pred, &truth)).abs() < 1e-9);
            md.push_str(&format!("| {name} | {} | {} | {} |\n", fmt(&s), fmt(&a), fmt(&m)));
            spear.insert(name, s);
            overall.insert(name, (s, a, m));
        }
        // The history-conditional part: what a method knows beyond the candidate's global
        // rate, which is all the global rate knows (its relative prediction is constant, so it
        // ranks nothing: 0).
        md.push_str("\n### The history-conditional part\n\nRelative label: the held-out label minus the candidate's mean training label (its global rate; the mean label for a candidate without training labels). Each method's relative prediction is its prediction minus the same. Spearman between the two says how well a method ranks what the history changes about a candidate's appeal; best-of-n among candidates of one history needs exactly that. A constant relative prediction counts 0.\n\n| method | Spearman, relative labels |\n|---|---|\n");
        let rel_truth: Vec<f64> = truth.iter().zip(&global).map(|(t, g)| t - g).collect();
        let spearman_or_zero = |p: &[f64], y: &[f64]| {
            let r = spearman(p, y);
            if r.is_nan() { 0.0 } else { r }
        };
        let mut relative = BTreeMap::new();
        for &(name, pred) in &scorers {
            let rel_pred: Vec<f64> = pred.iter().zip(&global).map(|(p, g)| p - g).collect();
            let r = bootstrap_paired(&rel_pred, &rel_truth, spearman_or_zero, rounds, seed ^ 17);
            md.push_str(&format!("| {name} | {} |\n", fmt(&r)));
            relative.insert(name, r);
        }
        let beats = |other: &str| spear["alignment_llm"].lo > spear[other].hi;
        let verdict = if beats("cluster_global_rate") && beats("linear_embeddings") {
            "The alignment LLM ranks held-out feedback better than both baselines (Spearman intervals do not overlap).".to_string()
        } else if spear["alignment_llm"].mean > spear["cluster_global_rate"].mean.max(spear["linear_embeddings"].mean) {
            "The alignment LLM has the highest Spearman correlation, but its interval overlaps a baseline's: it does not clearly beat them.".to_string()
        } else {
            "The alignment LLM does NOT beat the baselines on Spearman correlation with held-out feedback.".to_string()
        };
        // Ranking the candidates of one pair is what best-of-n needs; and a model that only
        // learned each candidate's appeal cannot predict candidates or pairs it never saw.
        let pair_of: Vec<(u32, u32)> = test.iter().map(|l| (l.c1, l.c2)).collect();
        let trained_pairs: BTreeSet<(u32, u32)> = train.iter().map(|l| (l.c1, l.c2)).collect();
        let trained_candidates: BTreeSet<u32> = train.iter().map(|l| l.next).collect();
        let new_pair: Vec<usize> = (0..test.len()).filter(|&i| !trained_pairs.contains(&pair_of[i])).collect();
        let new_candidate: Vec<usize> = (0..test.len()).filter(|&i| !trained_candidates.contains(&test[i].next)).collect();
        let subset = |pred: &[f64], idx: &[usize], salt: u64| -> Option<Estimate> {
            (idx.len() >= 5).then(|| {
                let p: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
                let t: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
                bootstrap_paired(&p, &t, spearman, rounds, seed ^ salt)
            })
        };
        let show = |e: &Option<Estimate>| e.as_ref().map_or("-".to_string(), &fmt);
        let mut within_pairs = 0;
        let mut concordance_counts = (0, 0);
        md.push_str(&format!(
            "\n### Within a history pair, and on what training never saw\n\nWithin-pair Spearman: the rank correlation between predictions and labels among the candidates of one history pair, for every held-out pair with at least {WITHIN_PAIR_MIN} labels that are not all equal, averaged over those pairs (95% interval: bootstrap over pairs). Within-pair concordance, which uses every held-out pair with two differing labels: the share of candidate pairs of one history that the method orders as the labels do (a tied prediction counts one half; 0.5 is chance), pooled over pairs (95% interval: bootstrap over history pairs). A prediction constant within a pair counts 0. Held-out pairs: {} triples whose history pair has no training label. Held-out candidates: {} triples whose candidate has no training label (the global rate then falls back to the mean label){}. `-`: fewer than 5 triples.\n\n| method | within-pair Spearman | its gain over the global rate (paired) | within-pair concordance | its gain over the global rate (paired) | Spearman, held-out pairs | Spearman, held-out candidates |\n|---|---|---|---|---|---|---|\n",
            new_pair.len(), new_candidate.len(),
            if held.is_empty() { String::new() } else { format!("; {} clusters were withheld from training by design (alignment.holdout_candidates: {})", held.len(), held.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")) }
        ));
        let mut methods = BTreeMap::new();
        let mut gains = BTreeMap::new();
        // The global rate's own within-pair figures, pair by pair: a method's gain over it is
        // measured on the same pairs and candidate pairs (which of them count depends on the
        // labels only), so the bootstrap is over the paired differences.
        let global_per_pair = within_group_spearman(&pair_of, &global, &truth, WITHIN_PAIR_MIN);
        let global_parts = within_group_concordance(&pair_of, &global, &truth);
        for &(name, pred) in &scorers {
            let per_pair = within_group_spearman(&pair_of, pred, &truth, WITHIN_PAIR_MIN);
            within_pairs = per_pair.len();
            let within = bootstrap(&per_pair, rounds, seed ^ 14);
            let (hp, hc) = (subset(pred, &new_pair, 15), subset(pred, &new_candidate, 16));
            let parts = within_group_concordance(&pair_of, pred, &truth);
            let candidate_pairs = parts.iter().map(|p| p.1).sum::<f64>() as usize;
            concordance_counts = (parts.len(), candidate_pairs);
            let concordance = bootstrap_ratio(&parts, rounds, seed ^ 18);
            let (within_gain, concordance_gain) = if name == "cluster_global_rate" {
                (None, None)
            } else {
                wander_explore::metrics::paired_within_group_gains(&per_pair, &global_per_pair, &parts, &global_parts, rounds, seed ^ 19)
            };
            md.push_str(&format!("| {name} | {} ({} pairs) | {} | {} ({} candidate pairs of {} histories) | {} | {} | {} |\n", fmt(&within), per_pair.len(), show(&within_gain), fmt(&concordance), candidate_pairs, parts.len(), show(&concordance_gain), show(&hp), show(&hc)));
            let (spearman, auc_above_median, mae) = overall[name];
            methods.insert(name.to_string(), crate::summaries::AlignmentFigures {
                spearman,
                auc_above_median,
                mae,
                within_pair_spearman: within,
                spearman_heldout_pairs: hp,
                spearman_heldout_candidates: hc,
                spearman_relative: relative.get(name).copied(),
                within_pair_concordance: Some(concordance),
                within_pair_gain: within_gain,
                concordance_gain,
            });
            gains.insert(name, within_gain);
        }
        let within_verdict = match gains.get("alignment_llm").copied().flatten() {
            Some(g) if g.lo > 0.0 => format!("Within a history pair the alignment LLM ranks candidates better than the global rate: paired gain in within-pair Spearman {} (interval above 0).", fmt(&g)),
            Some(g) => format!("Within a history pair the alignment LLM does NOT rank candidates measurably better than the global rate: paired gain in within-pair Spearman {} (interval reaches 0).", fmt(&g)),
            None => "Too few held-out pairs to compare rankings within a pair.".to_string(),
        };
        let verdict = format!("{verdict} {within_verdict}");
        let memory_note = if memory_k >= MEMORY_GRID.iter().copied().fold(0.0, f64::max) {
            " The validation labels chose the largest shrinkage on offer: they prefer the candidate's global rate to the triple's own training label."
        } else {
            ""
        };
        md.push_str(&format!("\n{verdict}\n\nBaselines: `cluster_global_rate` predicts the candidate's mean training label whatever the history (a popularity-of-satisfaction prior); `linear_embeddings` is ridge regression (penalty {lambda} picked on validation labels) on [e1 + e2, e_c, (e1 + e2) * e_c], e = the cluster's centroid embedding under a seeded random projection to 32 dimensions. `triple_train_label` is the same (c1, c2, candidate)'s own training label, shrunk towards the candidate's global rate by {memory_k} pseudo-users (picked on validation labels; the global rate where the triple has no training label): a model that memorised every training label; it shows how much of the history-conditional part of the labels carries over from the training period to the test period.{memory_note} Spearman: rank correlation with ties averaged; AUC: Mann-Whitney with ties one half; MAE in label units.\n"));
        report_md(StageId::EvalAlignment).write(w, md.as_bytes())?;
        let preds: Vec<Value> = test.iter().zip(&llm).zip(&global).zip(&linear).map(|(((l, a), g), r)| json!({"c1": l.c1, "c2": l.c2, "next": l.next, "label": l.label, "alignment_llm": a, "cluster_global_rate": g, "linear_embeddings": r})).collect();
        w.write_json("predictions.json", &preds)?;
        crate::summaries::record(&crate::summaries::EvalAlignmentSummary {
            triples: test.len(),
            pairs: pairs.len(),
            arch,
            within_pair_pairs: within_pairs,
            concordance_counts: Some(concordance_counts),
            heldout_pair_triples: new_pair.len(),
            heldout_candidate_triples: new_candidate.len(),
            holdout_candidates: held.iter().copied().collect(),
            methods,
            ridge_lambda: lambda,
            memory_shrinkage: Some(memory_k),
            verdict,
            report: stage_dir.join("report.md"),
        })
    })
    .context("eval alignment failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::EvalAlignment, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(c1: u32, c2: u32, next: u32) -> Label {
        Label {
            c1,
            c2,
            next,
            label: f64::from(next) / 10.0,
            rate: 0.5,
            users: 3,
            events: 3,
        }
    }

    /// A pair's candidates split in order into units of at most the limit; without one, a
    /// unit a pair, as the examples were before the limit existed.
    #[test]
    fn candidate_units_split_each_pair_in_order() {
        let labels: Vec<Label> = [
            (0, 1, 2),
            (0, 1, 3),
            (0, 1, 4),
            (0, 1, 5),
            (0, 1, 6),
            (2, 0, 1),
            (2, 0, 3),
        ]
        .iter()
        .map(|&(a, b, c)| label(a, b, c))
        .collect();
        let nexts = |units: &[CandidateUnit]| -> Vec<((u32, u32), Vec<u32>)> {
            units
                .iter()
                .map(|(p, c)| (*p, c.iter().map(|&(n, _)| n).collect()))
                .collect()
        };
        assert_eq!(
            nexts(&candidate_units(&labels, 2)),
            vec![
                ((0, 1), vec![2, 3]),
                ((0, 1), vec![4, 5]),
                ((0, 1), vec![6]),
                ((2, 0), vec![1, 3])
            ]
        );
        assert_eq!(
            nexts(&candidate_units(&labels, 0)),
            vec![((0, 1), vec![2, 3, 4, 5, 6]), ((2, 0), vec![1, 3])]
        );
        let units = candidate_units(&labels, 3);
        assert_eq!(
            units.iter().map(|(_, c)| c.len()).sum::<usize>(),
            labels.len()
        );
        assert_eq!(units[0].1[1], (3, 0.3));
    }
}

//! Stages of the alignment half of the method (P2): collective feedback labels, the
//! alignment model, best-of-n precompute of the exploration table, and their evaluation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wander_core::artifact::RunDir;
use wander_core::hash::sha256_file;
use wander_explore::feedback::{self, Label, LabelConfig};
use wander_explore::metrics::{
    auc, bootstrap, bootstrap_paired, entropy_bits, mae, self_information, spearman, Estimate,
};
use wander_explore::planner::{AlignmentScorer, NoveltyScorer, PairPrompts};
use wander_explore::scaling;
use wander_explore::transitions::Transition;
use wander_table::{Choice, ExplorationTable};

use crate::stages::{model_q8, report};
use crate::{log, Ctx};

fn label_config(ctx: &Ctx) -> LabelConfig {
    let f = &ctx.config.feedback;
    LabelConfig {
        signal: f.signal,
        normalize: f.normalize,
        min_users: f.min_users,
        round: f.round,
    }
}

pub(crate) fn manifests(run: &RunDir, stages: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
    stages
        .iter()
        .map(|s| Ok((format!("{s}/manifest.json"), run.manifest_checksum(s)?)))
        .collect()
}

/// `wander feedback`.
pub fn feedback_stage(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, &["ingest", "taxonomy"])?;
    let slice = json!({"feedback": ctx.config.feedback, "column": ctx.config.data.feedback});
    let cfg = label_config(ctx);
    let margin = ctx.config.feedback.pairwise_margin;
    let outcome = run.run_stage("feedback", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let ds = wander_data::read_dataset(&run.read("ingest")?)?;
        let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
        let clusters = tax.planner_clusters();
        let column = ds.feedback_columns.iter().position(|c| *c == ctx.config.data.feedback);
        if column.is_none() && cfg.signal == feedback::Signal::Value {
            bail!(
                "config: data.feedback: column `{}` is not in the data (columns: {}); feedback.signal = \"value\" needs it",
                ctx.config.data.feedback,
                ds.feedback_columns.join(", ")
            );
        }
        let events = feedback::events(&ds, tax.planner_assign(), column.unwrap_or(usize::MAX));
        let mut summary = serde_json::Map::new();
        let describe = |c: u32| clusters[c as usize].description.clone();
        for (name, split) in [
            ("train", wander_data::Split::Train),
            ("valid", wander_data::Split::Valid),
            ("test", wander_data::Split::Test),
        ] {
            let labels = feedback::labels(&events, split, &cfg, clusters.len())?;
            let n_events = events.iter().filter(|e| e.split == split as u8).count();
            let positive = events.iter().filter(|e| e.split == split as u8 && e.positive).count();
            let values: Vec<f64> = labels.iter().map(|l| l.label).collect();
            let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
            let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt();
            let pairs: BTreeSet<(u32, u32)> = labels.iter().map(|l| (l.c1, l.c2)).collect();
            let prefs = feedback::preferences(&labels, margin);
            summary.insert(name.into(), json!({
                "events": n_events, "positive_events": positive, "labels": labels.len(), "pairs": pairs.len(),
                "label_mean": mean, "label_sd": sd, "preferences": prefs.len(),
            }));
            w.write_json(&format!("labels_{name}.json"), &labels)?;
            if name == "train" {
                let lines: String = labels.iter().map(|l| feedback::label_line(l, describe) + "\n").collect();
                w.write_bytes("pointwise_train.jsonl", lines.as_bytes())?;
                let lines: String = prefs
                    .iter()
                    .map(|p| {
                        json!({"history": [describe(p.c1), describe(p.c2)], "better": describe(p.better), "worse": describe(p.worse), "margin": p.margin}).to_string() + "\n"
                    })
                    .collect();
                w.write_bytes("pairwise_train.jsonl", lines.as_bytes())?;
            }
        }
        summary.insert("signal".into(), json!(cfg.signal));
        summary.insert("normalize".into(), json!(cfg.normalize));
        summary.insert("min_users".into(), json!(cfg.min_users));
        Ok(Value::Object(summary))
    })
    .context("feedback failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("feedback", &outcome))
}

fn alignment_examples(
    tok: &wander_llm::tokenizer::Tokenizer,
    descriptions: &[String],
    labels: &[Label],
    pairwise_margin: Option<f32>,
) -> anyhow::Result<Vec<wander_llm::train::Example>> {
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
        });
    }
    Ok(out)
}

/// Mean train label of each candidate cluster (the global mean where it has none): the
/// "c_next's global rate" baseline in label units, and the head's starting bias.
fn cluster_means(labels: &[Label], n: usize) -> Vec<f64> {
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

/// `wander train alignment`.
pub fn train_alignment(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let cfg = &ctx.config.alignment;
    let lora = &ctx.config.llm.lora;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let mut inputs = manifests(&run, &["taxonomy", "feedback"])?;
    inputs.insert(q8.display().to_string(), sha256_file(&q8)?);
    let train_cfg = lora_train_config(
        cfg.steps,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.lr,
        cfg.warmup_steps,
        cfg.eval_every,
        cfg.checkpoint_every,
        ctx.config.run.seed,
    );
    let slice = json!({"train": train_cfg, "lora": lora, "objective": cfg.objective, "head_lr": cfg.head_lr, "pairwise_margin": ctx.config.feedback.pairwise_margin});
    let checkpoints = run.root().join(".checkpoints/alignment");
    let outcome = run.run_stage("train_alignment", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
        let descriptions: Vec<String> = tax.planner_clusters().iter().map(|c| c.description.clone()).collect();
        let stage = run.read("feedback")?;
        let train_labels: Vec<Label> = stage.read_json("labels_train.json")?;
        let valid_labels: Vec<Label> = stage.read_json("labels_valid.json")?;
        let (tok, model, params) = crate::align::trainable_model(ctx, &q8)?;
        let pairwise = (cfg.objective == wander_core::config::AlignmentObjective::Pairwise)
            .then_some(ctx.config.feedback.pairwise_margin as f32);
        let train = alignment_examples(&tok, &descriptions, &train_labels, pairwise)?;
        let eval = alignment_examples(&tok, &descriptions, &valid_labels, pairwise)?;
        if train.is_empty() {
            bail!("no training labels: lower feedback.min_users or check data.positive (feedback stage has 0 train labels)");
        }
        let head = wander_llm::model::ScoreHead::new(model.cfg.hidden, descriptions.len())?;
        let means = cluster_means(&train_labels, descriptions.len());
        if pairwise.is_none() {
            head.set_bias(&means.iter().map(|&m| m as f32).collect::<Vec<_>>())?;
        }
        let objective = match pairwise {
            Some(margin) => wander_llm::train::Objective::Pairwise { head: head.clone(), margin },
            None => wander_llm::train::Objective::Regression(head.clone()),
        };
        let all_params: Vec<_> = params.into_iter().chain(head.tensors()).collect();
        let mut trainer = wander_llm::train::Trainer::new(&model, objective, all_params, train_cfg.clone(), tok.im_end, Some(&checkpoints))?;
        trainer.set_lr_scale("head.", cfg.head_lr / cfg.lr);
        let initial_eval = if eval.is_empty() { f64::NAN } else { trainer.eval_loss(&eval)? };
        let report = run_trainer(&mut trainer, &train, &eval, train_cfg.steps, "align")?;
        model.save_lora(&w.path("adapter.safetensors")?)?;
        head.save(&w.path("head.safetensors")?)?;
        w.write_json("train_report.json", &report)?;
        let _ = std::fs::remove_dir_all(&checkpoints);
        Ok(json!({
            "steps": report.steps,
            "pairs": train.len(),
            "labels": train_labels.len(),
            "objective": cfg.objective,
            "first_loss": report.losses.first(),
            "final_loss": report.losses.last(),
            "initial_eval_loss": initial_eval,
            "eval_losses": report.eval_losses,
            "tokens_per_s": report.tokens_per_second(),
            "resumed_from": report.resumed_from,
            "adapter": "adapter.safetensors",
            "head": "head.safetensors",
        }))
    })
    .context("train alignment failed; earlier artifacts are unchanged and a rerun resumes from the last checkpoint")?;
    Ok(report("train_alignment", &outcome))
}

/// The inference models of a run: the novelty model and the alignment model (adapters
/// merged), the tokenizer and the cluster descriptions.
struct Models {
    tok: wander_llm::tokenizer::Tokenizer,
    novelty: wander_llm::model::Llama,
    alignment: wander_llm::model::Llama,
    head: wander_llm::model::ScoreHead,
    descriptions: Vec<String>,
    answers: Vec<Vec<u32>>,
}

fn load_models(ctx: &Ctx, run: &RunDir, q8: &Path, with_novelty: bool) -> anyhow::Result<Models> {
    let lora = &ctx.config.llm.lora;
    let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
    let descriptions: Vec<String> = tax
        .planner_clusters()
        .iter()
        .map(|c| c.description.clone())
        .collect();
    let mut g = wander_llm::gguf::GgufFile::open(q8)?;
    let tok = wander_llm::tokenizer::Tokenizer::from_gguf(&g)?;
    let base = wander_llm::model::Llama::from_gguf(&mut g, true)?;
    let merged = |stage: &str| -> anyhow::Result<wander_llm::model::Llama> {
        let mut m = base.clone();
        m.attach_lora(
            &lora.targets,
            lora.rank,
            lora.alpha,
            0.0,
            ctx.config.run.seed,
        )?;
        m.load_lora(&run.read(stage)?.path("adapter.safetensors")?)?;
        m.merge_lora()?;
        Ok(m)
    };
    let alignment = merged("train_alignment")?;
    let head = wander_llm::model::ScoreHead::load(
        &run.read("train_alignment")?.path("head.safetensors")?,
    )?;
    let novelty = if with_novelty {
        merged("train_novelty")?
    } else {
        base
    };
    let answers = descriptions
        .iter()
        .map(|d| tok.answer(d))
        .collect::<Result<_, _>>()?;
    Ok(Models {
        tok,
        novelty,
        alignment,
        head,
        descriptions,
        answers,
    })
}

fn alignment_prompts(m: &Models, pairs: &[(u32, u32)]) -> anyhow::Result<PairPrompts> {
    Ok(PairPrompts::new(
        &m.tok,
        feedback::ALIGNMENT_SYSTEM,
        wander_explore::sft::user_message,
        &m.descriptions,
        pairs,
    )?)
}

fn novelty_prompts(m: &Models, pairs: &[(u32, u32)]) -> anyhow::Result<PairPrompts> {
    Ok(PairPrompts::new(
        &m.tok,
        wander_explore::sft::SYSTEM,
        wander_explore::sft::user_message,
        &m.descriptions,
        pairs,
    )?)
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

/// `wander eval alignment`.
pub fn eval_alignment(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let inputs = manifests(&run, &["taxonomy", "feedback", "train_alignment"])?;
    let rounds = ctx.config.alignment.bootstrap_rounds;
    let seed = ctx.config.run.seed;
    let slice = json!({"bootstrap_rounds": rounds, "seed": seed});
    let stage_dir = run.stage_dir("eval_alignment");
    let outcome = run.run_stage("eval_alignment", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let stage = run.read("feedback")?;
        let train: Vec<Label> = stage.read_json("labels_train.json")?;
        let valid: Vec<Label> = stage.read_json("labels_valid.json")?;
        let test: Vec<Label> = stage.read_json("labels_test.json")?;
        if test.is_empty() {
            bail!("no held-out labels in the test period: lower feedback.min_users");
        }
        let models = load_models(ctx, &run, &q8, false)?;
        let n = models.descriptions.len();
        let pairs: Vec<(u32, u32)> = test.iter().map(|l| (l.c1, l.c2)).collect::<BTreeSet<_>>().into_iter().collect();
        let prompts = alignment_prompts(&models, &pairs)?;
        let scorer = AlignmentScorer::new(&models.alignment, &models.head, &prompts)?;
        let bar = wander_core::progress::bar(pairs.len() as u64, "eval", "pairs");
        let mut llm_scores: BTreeMap<(u32, u32), Vec<f32>> = BTreeMap::new();
        for chunk in pairs.chunks(16) {
            for (p, s) in chunk.iter().zip(scorer.scores(chunk)?) {
                llm_scores.insert(*p, s);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let truth: Vec<f64> = test.iter().map(|l| l.label).collect();
        let llm: Vec<f64> = test.iter().map(|l| llm_scores[&(l.c1, l.c2)][l.next as usize] as f64).collect();
        let means = cluster_means(&train, n);
        let global: Vec<f64> = test.iter().map(|l| means[l.next as usize]).collect();
        // Linear model over the clusters' centroid embeddings (projected to 32 dimensions):
        // [e1 + e2, e_next, (e1 + e2) * e_next], ridge penalty picked on the validation labels.
        let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
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
        let mut sorted = truth.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        let mut methods = serde_json::Map::new();
        let mut md = format!(
            "# Alignment model: offline evaluation\n\nProtocol: collective feedback labels (`{}` signal, `{}` normalisation, at least {} users, rounded to {}) of the held-out test period: {} (c1, c2, candidate) triples over {} history pairs. The model was trained on {} training-period labels. Above-median for AUC: label > {median:.3}. 95% intervals: percentile bootstrap over triples ({rounds} resamples).\n\n| method | Spearman | AUC (above median) | MAE |\n|---|---|---|---|\n",
            serde_json::to_value(ctx.config.feedback.signal)?.as_str().unwrap_or(""), serde_json::to_value(ctx.config.feedback.normalize)?.as_str().unwrap_or(""), ctx.config.feedback.min_users, ctx.config.feedback.round, test.len(), pairs.len(), train.len()
        );
        let above: Vec<f64> = truth.iter().map(|&t| f64::from(u8::from(t > median))).collect();
        let fmt = |e: &Estimate| format!("{:.3} [{:.3}, {:.3}]", e.mean, e.lo, e.hi);
        let mut spear = BTreeMap::new();
        for (name, pred) in [("alignment_llm", &llm), ("cluster_global_rate", &global), ("linear_embeddings", &linear)] {
            let s = bootstrap_paired(pred, &truth, spearman, rounds, seed ^ 11);
            let a = bootstrap_paired(pred, &above, |p, y| auc(p, &y.iter().map(|&v| v > 0.5).collect::<Vec<_>>()), rounds, seed ^ 12);
            let errs: Vec<f64> = pred.iter().zip(&truth).map(|(p, t)| (p - t).abs()).collect();
            let m = bootstrap(&errs, rounds, seed ^ 13);
            debug_assert!((m.mean - mae(pred, &truth)).abs() < 1e-9);
            md.push_str(&format!("| {name} | {} | {} | {} |\n", fmt(&s), fmt(&a), fmt(&m)));
            spear.insert(name, s);
            methods.insert(name.into(), json!({"spearman": s, "auc_above_median": a, "mae": m}));
        }
        let beats = |other: &str| spear["alignment_llm"].lo > spear[other].hi;
        let verdict = if beats("cluster_global_rate") && beats("linear_embeddings") {
            "The alignment LLM ranks held-out feedback better than both baselines (Spearman intervals do not overlap).".to_string()
        } else if spear["alignment_llm"].mean > spear["cluster_global_rate"].mean.max(spear["linear_embeddings"].mean) {
            "The alignment LLM has the highest Spearman correlation, but its interval overlaps a baseline's: it does not clearly beat them.".to_string()
        } else {
            "The alignment LLM does NOT beat the baselines on Spearman correlation with held-out feedback.".to_string()
        };
        md.push_str(&format!("\n{verdict}\n\nBaselines: `cluster_global_rate` predicts the candidate's mean training label whatever the history (a popularity-of-satisfaction prior); `linear_embeddings` is ridge regression (penalty {lambda} picked on validation labels) on [e1 + e2, e_c, (e1 + e2) * e_c], e = the cluster's centroid embedding under a seeded random projection to 32 dimensions. Spearman: rank correlation with ties averaged; AUC: Mann-Whitney with ties one half; MAE in label units.\n"));
        w.write_bytes("report.md", md.as_bytes())?;
        let preds: Vec<Value> = test.iter().zip(&llm).zip(&global).zip(&linear).map(|(((l, a), g), r)| json!({"c1": l.c1, "c2": l.c2, "next": l.next, "label": l.label, "alignment_llm": a, "cluster_global_rate": g, "linear_embeddings": r})).collect();
        w.write_json("predictions.json", &preds)?;
        Ok(json!({"triples": test.len(), "pairs": pairs.len(), "methods": methods, "ridge_lambda": lambda, "verdict": verdict, "report": stage_dir.join("report.md")}))
    })
    .context("eval alignment failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("eval_alignment", &outcome))
}

/// One pair's precomputed scores and choices.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairRecord {
    c1: u32,
    c2: u32,
    /// Novelty-model proposal probability of every cluster (0 for c1, c2).
    novelty: Vec<f32>,
    /// Alignment score of every cluster.
    alignment: Vec<f32>,
    choices: Vec<Choice>,
    fallback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chunk {
    key: String,
    index: usize,
    seconds: f64,
    records: Vec<PairRecord>,
}

/// A `--shard i/N` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected i/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: shard index `{i}` is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: shard count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("`{s}`: need 0 <= i < N"));
        }
        Ok(Shard { index, count })
    }
}

fn precompute_pairs(ctx: &Ctx, run: &RunDir, n: u32) -> anyhow::Result<Vec<(u32, u32)>> {
    if ctx.config.precompute.pairs == "observed" {
        let all: Vec<Transition> = run.read("transitions")?.read_json("transitions.json")?;
        let set: BTreeSet<(u32, u32)> = all
            .iter()
            .filter(|t| t.split == wander_data::Split::Train as u8)
            .map(|t| (t.c1, t.c2))
            .collect();
        Ok(set.into_iter().collect())
    } else {
        Ok((0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect())
    }
}

/// `wander precompute [--shard i/N] [--merge]`.
pub fn precompute(
    ctx: &Ctx,
    force: bool,
    shard: Option<Shard>,
    merge_only: bool,
) -> anyhow::Result<Value> {
    let cfg = &ctx.config.precompute;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let mut inputs = manifests(
        &run,
        &[
            "taxonomy",
            "transitions",
            "train_novelty",
            "train_alignment",
        ],
    )?;
    inputs.insert(q8.display().to_string(), sha256_file(&q8)?);
    let slice = json!({"scorer": "full-trie-v2", "precompute": {"pairs": cfg.pairs, "mode": cfg.mode, "n": cfg.n, "temperature": cfg.temperature, "top_k": cfg.top_k, "chunk_pairs": cfg.chunk_pairs}, "seed": ctx.config.run.seed});
    let key = wander_core::hash::sha256_hex(
        serde_json::to_string(&json!({"slice": slice, "inputs": inputs}))?.as_bytes(),
    );
    let work = run
        .root()
        .join(".work")
        .join(format!("precompute-{}", &key[..16]));
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let chunk_path = |i: usize| work.join(format!("chunk-{i:05}.json"));
    let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
    let m = tax.planner_clusters().len() as u32;
    let pairs = precompute_pairs(ctx, &run, m)?;
    let chunks: Vec<&[(u32, u32)]> = pairs.chunks(cfg.chunk_pairs).collect();
    let done = |i: usize| -> bool {
        std::fs::read(chunk_path(i))
            .ok()
            .and_then(|b| serde_json::from_slice::<Chunk>(&b).ok())
            .is_some_and(|c| c.key == key && c.index == i)
    };
    let shard = shard.unwrap_or(Shard { index: 0, count: 1 });
    if !merge_only {
        if shard.count == 1 && !force {
            if let wander_core::artifact::Freshness::Fresh(_) =
                run.freshness("precompute", &slice, &inputs)
            {
                let outcome = run.run_stage(
                    "precompute",
                    slice,
                    inputs,
                    false,
                    |_| -> anyhow::Result<Value> { unreachable!("fresh") },
                )?;
                return Ok(report("precompute", &outcome));
            }
        }
        let mine: Vec<usize> = (0..chunks.len())
            .filter(|i| i % shard.count == shard.index)
            .collect();
        let todo: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| force || !done(i))
            .collect();
        let todo_pairs: usize = todo.iter().map(|&i| chunks[i].len()).sum();
        log(format!(
            "precompute shard {}/{}: {} of {} pairs to do ({} chunks already done), {} mode, n = {}",
            shard.index, shard.count, todo_pairs, mine.iter().map(|&i| chunks[i].len()).sum::<usize>(), mine.len() - todo.len(), cfg.mode, cfg.n
        ));
        if !todo.is_empty() {
            let models = load_models(ctx, &run, &q8, true)?;
            let nprompts = novelty_prompts(&models, &pairs)?;
            let aprompts = alignment_prompts(&models, &pairs)?;
            let novelty = NoveltyScorer::new(&models.novelty, &nprompts, &models.answers)?;
            let align = AlignmentScorer::new(&models.alignment, &models.head, &aprompts)?;
            let trie = wander_llm::generate::Trie::new(&models.answers)?;
            let bar = wander_core::progress::bar(todo_pairs as u64, "precompute", "pairs");
            let started = std::time::Instant::now();
            for &ci in &todo {
                let t0 = std::time::Instant::now();
                let scores = align.scores(chunks[ci])?;
                let all_probs = novelty.probs_all(chunks[ci], cfg.temperature, 16)?;
                let mut records = Vec::with_capacity(chunks[ci].len());
                for (k, (&(c1, c2), alignment)) in chunks[ci].iter().zip(scores).enumerate() {
                    let mut rng = wander_core::rng::Rng::new(ctx.config.run.seed)
                        .fork(((c1 as u64) << 32) | c2 as u64);
                    // Proposals of the history clusters are not novel: dropped.
                    let (probs, freq) = if cfg.mode == "sample" {
                        let probs = all_probs[k].clone();
                        let mut prompt = nprompts.prefix.clone();
                        prompt.extend_from_slice(nprompts.suffix(c1, c2)?);
                        let params = wander_llm::generate::SampleParams {
                            n: cfg.n,
                            temperature: cfg.temperature,
                            top_p: 1.0,
                            seed: rng.next_u64(),
                            max_new_tokens: 32,
                        };
                        let (samples, _) = wander_llm::generate::sample(
                            &models.novelty,
                            &prompt,
                            &params,
                            Some(&trie),
                            models.tok.im_end,
                        )?;
                        let mut f = vec![0u32; m as usize];
                        for s in samples.iter().filter_map(|s| s.answer) {
                            f[s] += 1;
                        }
                        (probs, f)
                    } else {
                        let probs = all_probs[k].clone();
                        let f = scaling::frequencies(
                            &scaling::draw(&probs, cfg.n, &mut rng),
                            m as usize,
                        );
                        (probs, f)
                    };
                    let mut freq = freq;
                    freq[c1 as usize] = 0;
                    freq[c2 as usize] = 0;
                    let score64: Vec<f64> = alignment.iter().map(|&v| v as f64).collect();
                    let mut kept = scaling::best_k(&freq, &score64, cfg.top_k);
                    let fallback = kept.is_empty();
                    if fallback {
                        // Nothing valid was proposed: the best-aligned novel clusters.
                        let novel: Vec<u32> = (0..m)
                            .map(|c| if c == c1 || c == c2 { 0 } else { 1 })
                            .collect();
                        kept = scaling::best_k(&novel, &score64, cfg.top_k);
                    }
                    let choices = kept
                        .iter()
                        .map(|&c| Choice {
                            cluster: c as u32,
                            alignment: alignment[c],
                            novelty_prob: probs[c] as f32,
                            frequency: freq[c],
                        })
                        .collect();
                    records.push(PairRecord {
                        c1,
                        c2,
                        novelty: probs.iter().map(|&p| p as f32).collect(),
                        alignment,
                        choices,
                        fallback,
                    });
                    bar.inc(1);
                }
                let chunk = Chunk {
                    key: key.clone(),
                    index: ci,
                    seconds: t0.elapsed().as_secs_f64(),
                    records,
                };
                wander_core::artifact::atomic_write(&chunk_path(ci), &serde_json::to_vec(&chunk)?)?;
            }
            bar.finish_and_clear();
            log(format!(
                "{} pairs in {:.0} s ({:.2} pairs/s)",
                todo_pairs,
                started.elapsed().as_secs_f64(),
                todo_pairs as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
        if shard.count > 1 {
            let missing: Vec<usize> = (0..chunks.len()).filter(|&i| !done(i)).collect();
            return Ok(
                json!({"stage": "precompute", "shard": format!("{}/{}", shard.index, shard.count), "pairs_done": todo_pairs, "chunks_missing_overall": missing.len(), "work_dir": work, "next": if missing.is_empty() { "all shards done: run `wander precompute --merge`" } else { "wait for the other shards, then run `wander precompute --merge`" }}),
            );
        }
    }
    let outcome = run.run_stage("precompute", slice, inputs, true, |w| -> anyhow::Result<Value> {
        let missing: Vec<usize> = (0..chunks.len()).filter(|&i| !done(i)).collect();
        if !missing.is_empty() {
            bail!("{} of {} chunks are not computed yet (first missing: chunk {} in {}); run the missing shards (chunk i belongs to shard i mod N) or `wander precompute` without --shard", missing.len(), chunks.len(), missing[0], work.display());
        }
        let mut table = ExplorationTable::new(m, cfg.top_k as u32);
        let mut seconds = 0.0;
        let (mut sc1, mut sc2, mut scl, mut snov, mut sal) = (vec![], vec![], vec![], vec![], vec![]);
        let mut fallbacks = 0;
        for i in 0..chunks.len() {
            let c: Chunk = serde_json::from_slice(&std::fs::read(chunk_path(i))?)?;
            seconds += c.seconds;
            for r in c.records {
                fallbacks += usize::from(r.fallback);
                table.set(r.c1, r.c2, r.choices).map_err(anyhow::Error::msg)?;
                for c in 0..m {
                    sc1.push(r.c1);
                    sc2.push(r.c2);
                    scl.push(c);
                    snov.push(r.novelty[c as usize]);
                    sal.push(r.alignment[c as usize]);
                }
            }
        }
        w.write_bytes("table.bin", &table.to_bytes())?;
        table.write_parquet(&w.path("table.parquet")?)?;
        write_scores(&w.path("scores.parquet")?, sc1, sc2, scl, snov, sal)?;
        let models: BTreeMap<String, String> = ["train_novelty", "train_alignment"].iter().map(|s| Ok((s.to_string(), run.read(s)?.manifest().outputs.iter().map(|(k, v)| format!("{k}:{}", v.sha256)).collect::<Vec<_>>().join(",")))).collect::<anyhow::Result<_>>()?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(json!({
            "pairs": table.pairs(), "clusters": m, "mode": cfg.mode, "n": cfg.n, "temperature": cfg.temperature, "top_k": cfg.top_k,
            "fallbacks": fallbacks, "compute_seconds": seconds, "pairs_per_s": table.pairs() as f64 / seconds.max(1e-9),
            "model_checksums": models, "table": "table.bin",
        }))
    })
    .context("precompute failed; computed chunks are kept and a rerun continues from them")?;
    Ok(report("precompute", &outcome))
}

fn write_scores(
    path: &Path,
    c1: Vec<u32>,
    c2: Vec<u32>,
    cl: Vec<u32>,
    nov: Vec<f32>,
    al: Vec<f32>,
) -> anyhow::Result<()> {
    use arrow_array::{ArrayRef, Float32Array, RecordBatch, UInt32Array};
    use std::sync::Arc;
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("c1", Arc::new(UInt32Array::from(c1))),
        ("c2", Arc::new(UInt32Array::from(c2))),
        ("cluster", Arc::new(UInt32Array::from(cl))),
        ("novelty_prob", Arc::new(Float32Array::from(nov))),
        ("alignment_score", Arc::new(Float32Array::from(al))),
    ];
    let batch = RecordBatch::try_from_iter(cols)?;
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Per pair: (novelty probabilities, alignment scores), read from `scores.parquet`.
pub(crate) fn read_scores(
    path: &Path,
    m: usize,
) -> anyhow::Result<BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, UInt32Type};
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out: BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("{}: no column `{name}`", path.display()))
        };
        let c1 = col("c1")?.as_primitive::<UInt32Type>().clone();
        let c2 = col("c2")?.as_primitive::<UInt32Type>().clone();
        let cl = col("cluster")?.as_primitive::<UInt32Type>().clone();
        let nov = col("novelty_prob")?.as_primitive::<Float32Type>().clone();
        let al = col("alignment_score")?
            .as_primitive::<Float32Type>()
            .clone();
        for i in 0..batch.num_rows() {
            let e = out
                .entry((c1.value(i), c2.value(i)))
                .or_insert_with(|| (vec![0.0; m], vec![f64::NEG_INFINITY; m]));
            let c = cl.value(i) as usize;
            if c >= m {
                bail!("{}: row {i}: cluster {c} outside {m}", path.display());
            }
            e.0[c] = nov.value(i) as f64;
            e.1[c] = al.value(i) as f64;
        }
    }
    Ok(out)
}

/// `wander eval scaling`.
pub fn eval_scaling(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let cfg = &ctx.config.precompute;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, &["transitions", "feedback", "precompute"])?;
    let seed = ctx.config.run.seed;
    let slice = json!({"scaling_n": cfg.scaling_n, "scaling_draws": cfg.scaling_draws, "bootstrap_rounds": cfg.bootstrap_rounds, "top_k": cfg.top_k, "seed": seed});
    let stage_dir = run.stage_dir("eval_scaling");
    let outcome = run.run_stage("eval_scaling", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let pre = run.read("precompute")?;
        let m = pre.manifest().summary["clusters"].as_u64().context("precompute summary lacks `clusters`")? as usize;
        let HeldOut { scores, train, target_counts, events, label_of } = held_out(&run, m)?;
        let k = cfg.top_k;
        let rounds = cfg.bootstrap_rounds;
        let pairs: BTreeSet<(u32, u32)> = events.iter().map(|e| (e.c1, e.c2)).collect();
        let mut strategies: Vec<(String, BTreeMap<(u32, u32), Dist>)> = Vec::new();
        let bar = wander_core::progress::bar((cfg.scaling_n.len() * pairs.len()) as u64, "scaling", "pairs");
        for &n in &cfg.scaling_n {
            let (best, freq_only) = llm_dists(&scores, &pairs, n, k, cfg.scaling_draws, seed, m, Some(&bar));
            strategies.push((format!("best_of_{n}"), best));
            strategies.push((format!("novelty_only_{n}"), freq_only));
        }
        bar.finish_and_clear();
        let cooc = cooc_dists(&train, &target_counts, &pairs, k, m);
        strategies.push(("cooccurrence".into(), cooc));
        let mut results = serde_json::Map::new();
        let mut rows = Vec::new();
        for (si, (name, dist)) in strategies.iter().enumerate() {
            let (mut h1, mut hk, mut fbk, mut nov) = (vec![], vec![], vec![], vec![]);
            let mut served = vec![0.0; m];
            for e in &events {
                let (t1, tk) = &dist[&(e.c1, e.c2)];
                h1.push(t1[e.next as usize]);
                hk.push(tk[e.next as usize]);
                // Of the cluster served when one is (a draw of only c1 and c2 serves none).
                let mass: f64 = t1.iter().sum();
                nov.push(if mass > 0.0 { t1.iter().enumerate().map(|(c, p)| p * self_information(c as u32, &target_counts)).sum::<f64>() / mass } else { 0.0 });
                fbk.extend(heldout_feedback(&t1, e, &label_of));
                for (c, p) in t1.iter().enumerate() {
                    served[c] += p;
                }
            }
            let s = si as u64 * 16;
            let entry = json!({
                "hit_at_1": bootstrap(&h1, rounds, seed ^ s), format!("hit_at_{k}"): bootstrap(&hk, rounds, seed ^ (s + 1)),
                "heldout_feedback": bootstrap(&fbk, rounds, seed ^ (s + 2)), "feedback_events": fbk.len(),
                "novelty_bits": bootstrap(&nov, rounds, seed ^ (s + 3)), "diversity_bits": entropy_bits(&served),
            });
            rows.push((name.clone(), entry.clone()));
            results.insert(name.clone(), entry);
        }
        let fmt = |v: &Value| format!("{:.3} [{:.3}, {:.3}]", v["mean"].as_f64().unwrap_or(f64::NAN), v["lo"].as_f64().unwrap_or(f64::NAN), v["hi"].as_f64().unwrap_or(f64::NAN));
        let mut md = format!(
            "# Inference-time scaling: best-of-n\n\nProtocol: {} test-period transitions over {} history pairs; for each pair, the novelty model's exact proposal distribution (precompute `{}` mode, temperature {}) and the alignment model's scores from the precompute stage. best_of_n: the best-aligned of n proposals (top-1 exact; top-{k} from {} draws); novelty_only_n: the most frequent of n proposals; cooccurrence: the training period's most frequent next clusters. Held-out feedback: the test-period collective feedback label of the chosen cluster after that pair, averaged over the choice's probability where such a label exists. 95% bootstrap intervals over events ({rounds} resamples). Diversity: entropy (bits) of the served clusters over all events.\n\n| strategy | hit@1 | hit@{k} | held-out feedback | novelty (bits) | diversity (bits) |\n|---|---|---|---|---|---|\n",
            events.len(), pairs.len(), cfg.mode, cfg.temperature, cfg.scaling_draws
        );
        for (name, e) in &rows {
            md.push_str(&format!("| {name} | {} | {} | {} | {} | {:.2} |\n", fmt(&e["hit_at_1"]), fmt(&e[format!("hit_at_{k}")]), fmt(&e["heldout_feedback"]), fmt(&e["novelty_bits"]), e["diversity_bits"].as_f64().unwrap_or(f64::NAN)));
        }
        let get = |name: &str, metric: &str| results.get(name).map(|e| e[metric]["mean"].as_f64().unwrap_or(f64::NAN)).unwrap_or(f64::NAN);
        let n_max = *cfg.scaling_n.iter().max().unwrap_or(&1);
        let n_min = *cfg.scaling_n.iter().min().unwrap_or(&1);
        let (lo, hi) = (format!("best_of_{n_min}"), format!("best_of_{n_max}"));
        let claim = json!({
            "hit_at_1_gain": get(&hi, "hit_at_1") - get(&lo, "hit_at_1"),
            "feedback_gain": get(&hi, "heldout_feedback") - get(&lo, "heldout_feedback"),
            "novelty_above_cooccurrence": get(&hi, "novelty_bits") > get("cooccurrence", "novelty_bits"),
        });
        md.push_str(&format!(
            "\nThe method's claim (best-of-n raises relevance over n = {n_min} while novelty stays above co-occurrence): hit@1 {:+.3}, held-out feedback {:+.4} from n = {n_min} to n = {n_max}; novelty at n = {n_max} {:.2} bits vs co-occurrence {:.2}.\n\n![scaling](scaling.svg)\n",
            claim["hit_at_1_gain"].as_f64().unwrap_or(f64::NAN), claim["feedback_gain"].as_f64().unwrap_or(f64::NAN), get(&hi, "novelty_bits"), get("cooccurrence", "novelty_bits")
        ));
        let series = |prefix: &str, metric: &str| -> Vec<(f64, f64, f64, f64)> {
            cfg.scaling_n.iter().map(|&n| {
                let e = &results[&format!("{prefix}{n}")][metric];
                (n as f64, e["mean"].as_f64().unwrap_or(f64::NAN), e["lo"].as_f64().unwrap_or(f64::NAN), e["hi"].as_f64().unwrap_or(f64::NAN))
            }).collect()
        };
        let svg = wander_explore::plot::panels(&[
            wander_explore::plot::Panel { title: "hit@1 of held-out next cluster".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", "hit_at_1")), ("novelty only (most frequent)".into(), series("novelty_only_", "hit_at_1"))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", "hit_at_1"))) },
            wander_explore::plot::Panel { title: "held-out collective feedback".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", "heldout_feedback")), ("novelty only (most frequent)".into(), series("novelty_only_", "heldout_feedback"))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", "heldout_feedback"))) },
            wander_explore::plot::Panel { title: "novelty (bits)".into(), x_label: "n (log2)".into(), log2_x: true,
                series: vec![("best-of-n (alignment)".into(), series("best_of_", "novelty_bits")), ("novelty only (most frequent)".into(), series("novelty_only_", "novelty_bits"))],
                reference: Some(("co-occurrence".into(), get("cooccurrence", "novelty_bits"))) },
        ]);
        w.write_bytes("scaling.svg", svg.as_bytes())?;
        w.write_bytes("report.md", md.as_bytes())?;
        Ok(json!({"events": events.len(), "pairs": pairs.len(), "strategies": results, "claim": claim, "report": stage_dir.join("report.md"), "plot": stage_dir.join("scaling.svg")}))
    })
    .context("eval scaling failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("eval_scaling", &outcome))
}

/// Per pair: P(chosen = c) (top-1) and P(c in the top k), over all clusters.
pub(crate) type Dist = (Vec<f64>, Vec<f64>);

/// Best-of-n (top-1 exact, top-k by `draws` simulated proposal sets) and novelty-only
/// (most frequent proposal) distributions per pair for one n. Proposals of the history
/// clusters are dropped: they can never be chosen, and a draw of only those leaves nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn llm_dists(
    scores: &BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)>,
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
        let mut top1 = scaling::best_of_n_exact(probs, &align, n as u32);
        top1[p.0 as usize] = 0.0;
        top1[p.1 as usize] = 0.0;
        let mut rng = wander_core::rng::Rng::new(seed)
            .fork(((p.0 as u64) << 32 | p.1 as u64) ^ ((n as u64) << 48));
        let (mut topk, mut f1, mut fk) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        let unit = 1.0 / draws.max(1) as f64;
        for _ in 0..draws.max(1) {
            let mut f = scaling::frequencies(&scaling::draw(probs, n, &mut rng), m);
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
pub(crate) struct HeldOut {
    pub scores: BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)>,
    pub train: wander_explore::transitions::PairCounts,
    pub target_counts: Vec<u64>,
    pub events: Vec<Transition>,
    pub label_of: BTreeMap<(u32, u32, u32), f64>,
}

pub(crate) fn held_out(run: &RunDir, m: usize) -> anyhow::Result<HeldOut> {
    let scores = read_scores(&run.read("precompute")?.path("scores.parquet")?, m)?;
    let all: Vec<Transition> = run.read("transitions")?.read_json("transitions.json")?;
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
        .filter(|t| t.split == wander_data::Split::Test as u8 && scores.contains_key(&(t.c1, t.c2)))
        .collect();
    if events.is_empty() {
        bail!("no test transitions whose history pair is in the table");
    }
    let labels: Vec<Label> = run.read("feedback")?.read_json("labels_test.json")?;
    let label_of = labels
        .iter()
        .map(|l| ((l.c1, l.c2, l.next), l.label))
        .collect();
    Ok(HeldOut {
        scores,
        train,
        target_counts,
        events,
        label_of,
    })
}

/// The optimisation settings shared by the LoRA trainings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lora_train_config(
    steps: usize,
    batch_size: usize,
    grad_accum: usize,
    lr: f64,
    warmup_steps: usize,
    eval_every: usize,
    checkpoint_every: usize,
    seed: u64,
) -> wander_llm::train::TrainConfig {
    wander_llm::train::TrainConfig {
        steps,
        batch_size,
        grad_accum,
        lr,
        warmup_steps,
        min_lr_ratio: 0.1,
        weight_decay: 0.0,
        eval_every,
        checkpoint_every,
        seed,
    }
}

/// Runs a trainer with a progress bar and says when it resumed.
pub(crate) fn run_trainer(
    trainer: &mut wander_llm::train::Trainer<'_>,
    train: &[wander_llm::train::Example],
    eval: &[wander_llm::train::Example],
    steps: usize,
    label: &str,
) -> anyhow::Result<wander_llm::train::TrainReport> {
    let bar = wander_core::progress::bar(steps as u64, label, "steps");
    let report = trainer.run(train, eval, None, Some(&bar))?;
    bar.finish_and_clear();
    if report.resumed_from > 0 {
        log(format!(
            "resumed from the checkpoint at step {}",
            report.resumed_from
        ));
    }
    Ok(report)
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

/// The tokenizer and a trainable SmolLM2 (f32 weights) with fresh LoRA adapters of
/// `[llm.lora]`, and the adapters' tensors.
pub(crate) fn trainable_model(
    ctx: &Ctx,
    q8: &Path,
) -> anyhow::Result<(
    wander_llm::tokenizer::Tokenizer,
    wander_llm::model::Llama,
    Vec<(String, wander_llm::Var)>,
)> {
    let lora = &ctx.config.llm.lora;
    let mut g = wander_llm::gguf::GgufFile::open(q8)?;
    let tok = wander_llm::tokenizer::Tokenizer::from_gguf(&g)?;
    let mut model = wander_llm::model::Llama::from_gguf(&mut g, false)?;
    let params = model.attach_lora(
        &lora.targets,
        lora.rank,
        lora.alpha,
        lora.dropout,
        ctx.config.run.seed,
    )?;
    Ok((tok, model, params))
}

//! SASRec training: next-item prediction at every position, full-softmax cross-entropy or a
//! sampled softmax, Adam, early stopping on validation NDCG@10, and checkpoints after every
//! epoch from which a killed run resumes exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use wander_core::rng::Rng;
use wander_optim::{AdamW, AdamWConfig};

use crate::eval::{ranks_of, RankingMetrics, Target};
use crate::model::{SasRec, SasRecConfig};
use crate::{ItemsError, Result, Sequences};

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// Softmax over the whole catalogue.
    Full,
    /// Softmax over the target and this many uniformly drawn negatives shared by the batch.
    Sampled(usize),
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Most epochs.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation NDCG@10.
    pub patience: usize,
    /// Users per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Loss.
    pub loss: Loss,
    /// Seed of the initialisation, batch order and dropout.
    pub seed: u64,
    /// Threads for the validation ranking.
    pub eval_threads: usize,
    /// Most users an epoch trains on, a fresh seeded draw each epoch (0 = every user).
    #[serde(default)]
    pub users_per_epoch: usize,
    /// Most users the validation ranks after each epoch, one seeded draw for the whole run
    /// (0 = every user with a validation item).
    #[serde(default)]
    pub valid_users: usize,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10.
    pub valid_ndcg10: f64,
    /// Seconds of training (without validation).
    pub train_seconds: f64,
    /// Seconds of validation.
    pub eval_seconds: f64,
}

/// Result of a training run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TrainReport {
    /// Every epoch so far.
    pub epochs: Vec<EpochReport>,
    /// Epoch of the best validation NDCG@10 (its weights are the result).
    pub best_epoch: usize,
    /// That NDCG@10.
    pub best_valid_ndcg10: f64,
    /// Whether early stopping ended it.
    pub early_stopped: bool,
    /// Epochs restored from a checkpoint.
    pub resumed_from: usize,
}

/// One epoch's results without its timings.
#[derive(Debug, Clone, Serialize)]
pub struct EpochHistory {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10.
    pub valid_ndcg10: f64,
}

/// What a run learned, without the facts of the process that ran it (timings, resume
/// point): the same bytes whether or not the run was killed and resumed.
#[derive(Debug, Clone, Serialize)]
pub struct TrainHistory {
    /// Every epoch.
    pub epochs: Vec<EpochHistory>,
    /// Epoch of the best validation NDCG@10 (its weights are the result).
    pub best_epoch: usize,
    /// That NDCG@10.
    pub best_valid_ndcg10: f64,
    /// Whether early stopping ended it.
    pub early_stopped: bool,
}

impl TrainReport {
    /// The run's history, for the stage's `train_report.json`.
    pub fn history(&self) -> TrainHistory {
        TrainHistory {
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochHistory {
                    epoch: e.epoch,
                    loss: e.loss,
                    valid_ndcg10: e.valid_ndcg10,
                })
                .collect(),
            best_epoch: self.best_epoch,
            best_valid_ndcg10: self.best_valid_ndcg10,
            early_stopped: self.early_stopped,
        }
    }
}

/// The random stream of the validation sample, apart from the epochs' streams (1, 2, ...).
const VALID_SAMPLE_STREAM: u64 = u64::MAX;

/// SASRec's optimizer: Adam with the paper's betas (0.9, 0.98), no weight decay.
const ADAM: AdamWConfig = AdamWConfig {
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-9,
    weight_decay: 0.0,
};

/// One Adam step on every tensor of `model` that has a gradient.
fn adam_step(
    adam: &mut AdamW,
    vars: &[Var],
    grads: &candle_core::backprop::GradStore,
    lr: f64,
) -> Result<()> {
    let lrs = vec![lr; vars.len()];
    adam.step(vars, |i| grads.get(vars[i].as_tensor()).cloned(), &lrs)?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Meta {
    model: SasRecConfig,
    train: TrainConfig,
    report: TrainReport,
    adam_t: usize,
}

/// Trains SASRec on `seqs`, validating every epoch; returns the best epoch's model. With a
/// checkpoint folder, resumes from the last finished epoch of the same configuration.
pub fn train(
    seqs: &Sequences,
    model_cfg: SasRecConfig,
    cfg: &TrainConfig,
    checkpoint_dir: Option<&Path>,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<(SasRec, TrainReport)> {
    if cfg.batch_size == 0 || cfg.max_epochs == 0 {
        return Err(ItemsError::Invalid(
            "items: batch_size and max_epochs must be at least 1".into(),
        ));
    }
    let users: Vec<usize> = (0..seqs.train.len())
        .filter(|&u| seqs.train[u].len() >= 2)
        .collect();
    if users.is_empty() {
        return Err(ItemsError::Invalid(
            "no user has two training interactions".into(),
        ));
    }
    let model = SasRec::new(model_cfg, cfg.seed)?;
    let vars: Vec<Var> = model.vars().iter().map(|(_, v)| v.clone()).collect();
    let mut adam = AdamW::new(&vars, ADAM)?;
    let mut report = TrainReport::default();
    let mut best_vars: Option<Vec<Tensor>> = None;
    if let Some(dir) = checkpoint_dir {
        if let Some((r, t, vars, m, v, bv)) = load_checkpoint(dir, &model_cfg, cfg)? {
            for ((_, var), value) in model.vars().iter().zip(&vars) {
                var.set(value)?;
            }
            adam.restore(t, m, v)?;
            report = r;
            report.resumed_from = report.epochs.len();
            best_vars = Some(bv);
        }
    }
    let restore_best = |model: &SasRec, bv: &Option<Vec<Tensor>>| -> Result<SasRec> {
        let out = model.clone_detached()?;
        if let Some(bv) = bv {
            for ((_, var), value) in out.vars().iter().zip(bv) {
                var.set(value)?;
            }
        }
        Ok(out)
    };
    let valid_users = crate::eval::sample_users(
        crate::eval::users_with(seqs, Target::Valid),
        cfg.valid_users,
        Rng::new(cfg.seed).fork(VALID_SAMPLE_STREAM).next_u64(),
    );
    let mut since_best = report.epochs.len().saturating_sub(report.best_epoch);
    while report.epochs.len() < cfg.max_epochs
        && !(report.best_epoch > 0 && since_best >= cfg.patience)
    {
        let epoch = report.epochs.len() + 1;
        let t0 = Instant::now();
        let mut order = users.clone();
        Rng::new(cfg.seed).fork(epoch as u64).shuffle(&mut order);
        if cfg.users_per_epoch > 0 {
            order.truncate(cfg.users_per_epoch);
        }
        let mut total = 0.0;
        let mut batches = 0;
        for (bi, batch) in order.chunks(cfg.batch_size).enumerate() {
            let seed = Rng::new(cfg.seed)
                .fork(((epoch as u64) << 32) | bi as u64)
                .next_u64();
            let loss = batch_loss(&model, seqs, batch, cfg.loss, seed)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(ItemsError::Invalid(format!(
                    "training diverged: the loss at epoch {epoch}, batch {} is {value}; lower items.lr",
                    bi + 1
                )));
            }
            total += value;
            batches += 1;
            let grads = loss.backward()?;
            adam_step(&mut adam, &vars, &grads, cfg.lr)?;
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let cpu = model.to_cpu()?;
        let r = ranks_of(
            seqs,
            Target::Valid,
            &valid_users,
            |h| full_scores(&cpu, h),
            64,
            cfg.eval_threads,
        );
        let ndcg = RankingMetrics::from_ranks(r, 10).ndcg;
        let e = EpochReport {
            epoch,
            loss: total / batches.max(1) as f64,
            valid_ndcg10: ndcg,
            train_seconds,
            eval_seconds: t1.elapsed().as_secs_f64(),
        };
        on_epoch(&e);
        report.epochs.push(e);
        if ndcg > report.best_valid_ndcg10 || report.best_epoch == 0 {
            report.best_valid_ndcg10 = ndcg;
            report.best_epoch = epoch;
            best_vars = Some(
                model
                    .vars()
                    .iter()
                    .map(|(_, v)| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            );
            since_best = 0;
        } else {
            since_best += 1;
        }
        if let Some(dir) = checkpoint_dir {
            save_checkpoint(
                dir,
                &model,
                &adam,
                &report,
                cfg,
                best_vars.as_deref().unwrap_or(&[]),
            )?;
        }
    }
    report.early_stopped = report.epochs.len() < cfg.max_epochs;
    let result = restore_best(&model, &best_vars)?;
    Ok((result, report))
}

/// Scores of every model id for a history (plain-Rust inference).
pub fn full_scores(model: &crate::model::CpuSasRec, history: &[u32]) -> Vec<f32> {
    let u = model.user_vector(history);
    let d = model.cfg.dim;
    model
        .item
        .chunks(d)
        .map(|e| e.iter().zip(&u).map(|(a, b)| a * b).sum())
        .collect()
}

/// Loss of one batch of users (differentiable).
pub fn batch_loss(
    model: &SasRec,
    seqs: &Sequences,
    users: &[usize],
    loss: Loss,
    seed: u64,
) -> Result<Tensor> {
    let max_len = model.cfg.max_len;
    let rows: Vec<&[u32]> = users
        .iter()
        .map(|&u| {
            let s = &seqs.train[u];
            &s[s.len().saturating_sub(max_len + 1)..]
        })
        .collect();
    let t = rows.iter().map(|r| r.len() - 1).max().unwrap_or(1);
    let b = rows.len();
    let mut input = vec![0u32; b * t];
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (r, s) in rows.iter().enumerate() {
        let n = s.len() - 1;
        let pad = t - n;
        for k in 0..n {
            input[r * t + pad + k] = s[k];
            positions.push((r * t + pad + k) as u32);
            targets.push(s[k + 1]);
        }
    }
    let input = Tensor::from_vec(input, (b, t), &Device::Cpu)?;
    let h = model.forward(&input, Some((seed, model.cfg.dropout)))?;
    let h = h
        .reshape((b * t, model.cfg.dim))?
        .index_select(&Tensor::new(positions.as_slice(), &Device::Cpu)?, 0)?;
    match loss {
        Loss::Full => {
            let logits = model.scores(&h)?;
            let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
            Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
        }
        Loss::Sampled(k) => {
            let mut rng = Rng::new(seed ^ 0x5eed);
            let vocab = model.cfg.vocab;
            let negs: Vec<u32> = (0..k.max(1))
                .map(|_| 1 + rng.below(vocab - 1) as u32)
                .collect();
            let pos_logit = (h.clone() * model.item_rows(&targets)?)?.sum_keepdim(1)?; // [n, 1]
            let neg_logits = model.scores_of(&h, &negs)?; // [n, k]
                                                          // A negative that is the row's own target is no negative.
            let mut mask = vec![0f32; targets.len() * negs.len()];
            for (r, &tg) in targets.iter().enumerate() {
                for (j, &ng) in negs.iter().enumerate() {
                    if ng == tg {
                        mask[r * negs.len() + j] = -1e9;
                    }
                }
            }
            let neg_logits =
                (neg_logits + Tensor::from_vec(mask, (targets.len(), negs.len()), &Device::Cpu)?)?;
            let logits = Tensor::cat(&[&pos_logit, &neg_logits], 1)?;
            let zero = Tensor::zeros(targets.len(), candle_core::DType::U32, &Device::Cpu)?;
            Ok(candle_nn::loss::cross_entropy(&logits, &zero)?)
        }
    }
}

fn ckpt(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn save_checkpoint(
    dir: &Path,
    model: &SasRec,
    adam: &AdamW,
    report: &TrainReport,
    cfg: &TrainConfig,
    best: &[Tensor],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ItemsError::Core(wander_core::CoreError::io(dir, e)))?;
    let mut map = std::collections::HashMap::new();
    let (m, v) = adam.moments();
    for (i, (name, var)) in model.vars().iter().enumerate() {
        map.insert(format!("param.{name}"), var.as_tensor().clone());
        map.insert(format!("m.{name}"), m[i].clone());
        map.insert(format!("v.{name}"), v[i].clone());
        if let Some(b) = best.get(i) {
            map.insert(format!("best.{name}"), b.clone());
        }
    }
    let st = ckpt(dir, "checkpoint.safetensors");
    let tmp = wander_core::artifact::temp_sibling(&st);
    candle_core::safetensors::save(&map, &tmp)?;
    let _ = std::fs::remove_file(ckpt(dir, "checkpoint.json"));
    std::fs::rename(&tmp, &st).map_err(|e| ItemsError::Core(wander_core::CoreError::io(&st, e)))?;
    let meta = Meta {
        model: model.cfg,
        train: cfg.clone(),
        report: report.clone(),
        adam_t: adam.steps(),
    };
    let bytes = serde_json::to_vec(&meta).map_err(|e| ItemsError::Invalid(e.to_string()))?;
    wander_core::artifact::atomic_write(&ckpt(dir, "checkpoint.json"), &bytes)?;
    Ok(())
}

type Restored = (
    TrainReport,
    usize,
    Vec<Tensor>,
    Vec<Tensor>,
    Vec<Tensor>,
    Vec<Tensor>,
);

fn load_checkpoint(
    dir: &Path,
    model_cfg: &SasRecConfig,
    cfg: &TrainConfig,
) -> Result<Option<Restored>> {
    let Ok(bytes) = std::fs::read(ckpt(dir, "checkpoint.json")) else {
        return Ok(None);
    };
    let Ok(meta) = serde_json::from_slice::<Meta>(&bytes) else {
        return Ok(None);
    };
    if &meta.model != model_cfg || &meta.train != cfg {
        return Ok(None);
    }
    let t = candle_core::safetensors::load(ckpt(dir, "checkpoint.safetensors"), &Device::Cpu)?;
    let names: Vec<String> = SasRec::new(*model_cfg, 0)?
        .vars()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let get = |p: &str| -> Result<Vec<Tensor>> {
        names
            .iter()
            .map(|n| {
                t.get(&format!("{p}.{n}")).cloned().ok_or_else(|| {
                    ItemsError::Invalid(format!("{}: checkpoint lacks {p}.{n}", dir.display()))
                })
            })
            .collect()
    };
    Ok(Some((
        meta.report,
        meta.adam_t,
        get("param")?,
        get("m")?,
        get("v")?,
        get("best")?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ranks;

    /// Users cycle through item patterns; SASRec must learn to predict the next item.
    fn patterned() -> Sequences {
        let n_users = 60;
        let mut s = Sequences {
            vocab: 21,
            ..Default::default()
        };
        for u in 0..n_users {
            let start = (u % 20) as u32;
            let seq: Vec<u32> = (0..12).map(|k| (start + k) % 20 + 1).collect();
            s.train.push(seq[..10].to_vec());
            s.valid.push(Some(seq[10]));
            s.test.push(Some(seq[11]));
        }
        s
    }

    fn cfg() -> (SasRecConfig, TrainConfig) {
        (
            SasRecConfig {
                vocab: 21,
                max_len: 12,
                dim: 16,
                layers: 2,
                heads: 2,
                dropout: 0.1,
            },
            TrainConfig {
                max_epochs: 30,
                patience: 5,
                batch_size: 16,
                lr: 5e-3,
                loss: Loss::Full,
                seed: 3,
                eval_threads: 1,
                users_per_epoch: 0,
                valid_users: 0,
            },
        )
    }

    #[test]
    fn learns_a_sequential_pattern_and_inference_paths_agree() {
        let seqs = patterned();
        let (mc, tc) = cfg();
        let (model, report) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        assert!(report.best_valid_ndcg10 > 0.8, "{report:?}");
        let cpu = model.to_cpu().unwrap();
        let r = ranks(&seqs, Target::Test, |h| full_scores(&cpu, h), 8, 2);
        assert!(RankingMetrics::from_ranks(r, 10).ndcg > 0.8);
        // The candle forward (no dropout) and the plain-Rust path give the same user vector.
        for hist in [vec![3u32, 4, 5], vec![7u32], (1..=12).collect::<Vec<u32>>()] {
            let t = hist.len();
            let mut padded = vec![0u32; mc.max_len - t];
            padded.extend(&hist);
            let input = Tensor::from_vec(padded, (1, mc.max_len), &Device::Cpu).unwrap();
            let h = model.forward(&input, None).unwrap();
            let last: Vec<f32> = h
                .get(0)
                .unwrap()
                .get(mc.max_len - 1)
                .unwrap()
                .to_vec1()
                .unwrap();
            let fast = cpu.user_vector(&hist);
            for (a, b) in last.iter().zip(&fast) {
                assert!((a - b).abs() < 1e-4, "{hist:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn capped_epochs_and_a_validation_sample_are_what_the_report_says() {
        let seqs = patterned();
        let (mc, mut tc) = cfg();
        tc.max_epochs = 3;
        tc.patience = 100;
        let (_, all) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        // A cap at or above the users is no cap.
        tc.users_per_epoch = 60;
        let (_, same) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        assert_eq!(same.history().epochs.len(), all.history().epochs.len());
        for (a, b) in same.epochs.iter().zip(&all.epochs) {
            assert_eq!((a.loss, a.valid_ndcg10), (b.loss, b.valid_ndcg10));
        }
        // 16 users an epoch: another optimisation path.
        tc.users_per_epoch = 16;
        let (_, capped) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        assert_ne!(capped.epochs[0].loss, all.epochs[0].loss);
        // The validation figure is the sampled users' NDCG@10 of the kept model.
        tc.valid_users = 10;
        let (model, sampled) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        let users = crate::eval::sample_users(
            crate::eval::users_with(&seqs, Target::Valid),
            10,
            Rng::new(tc.seed).fork(VALID_SAMPLE_STREAM).next_u64(),
        );
        assert_eq!(users.len(), 10);
        let cpu = model.to_cpu().unwrap();
        let r = ranks_of(&seqs, Target::Valid, &users, |h| full_scores(&cpu, h), 4, 1);
        assert_eq!(r.len(), 10);
        assert_eq!(
            RankingMetrics::from_ranks(r, 10).ndcg,
            sampled.best_valid_ndcg10
        );
    }

    /// Regression test for the graph-retention trap: Adam's moments must not track the
    /// autograd graph of the step that produced them (they did, and memory grew by every
    /// step's graph until the process was killed).
    #[test]
    fn adam_moments_hold_no_autograd_graph() {
        let seqs = patterned();
        let (mc, tc) = cfg();
        let model = SasRec::new(mc, 1).unwrap();
        let vars: Vec<Var> = model.vars().iter().map(|(_, v)| v.clone()).collect();
        let mut adam = AdamW::new(&vars, ADAM).unwrap();
        for step in 0..2 {
            let loss = batch_loss(&model, &seqs, &[0, 1, 2, 3], tc.loss, step).unwrap();
            let grads = loss.backward().unwrap();
            adam_step(&mut adam, &vars, &grads, 1e-3).unwrap();
        }
        let (m, v) = adam.moments();
        assert!(
            m.iter().chain(v).all(|t| !t.track_op()),
            "moments keep the graph alive"
        );
    }

    #[test]
    fn sampled_softmax_trains_and_resume_is_exact() {
        let seqs = patterned();
        let (mc, mut tc) = cfg();
        tc.loss = Loss::Sampled(8);
        tc.max_epochs = 4;
        tc.patience = 100;
        let dir = tempfile::tempdir().unwrap();
        let (_, full) = train(&seqs, mc, &tc, None, |_| {}).unwrap();
        assert!(full.epochs.last().unwrap().loss < full.epochs[0].loss);
        // Two epochs, "killed", then resumed to four: the same losses as the straight run.
        let mut short = tc.clone();
        short.max_epochs = 2;
        let _ = train(&seqs, mc, &short, Some(dir.path()), |_| {}).unwrap();
        // A different max_epochs is a different config: carry the checkpoint over by hand.
        let meta_path = dir.path().join("checkpoint.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta["train"]["max_epochs"] = serde_json::json!(4);
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        let (_, resumed) = train(&seqs, mc, &tc, Some(dir.path()), |_| {}).unwrap();
        assert_eq!(resumed.resumed_from, 2);
        let l = |r: &TrainReport| r.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
        assert_eq!(l(&resumed), l(&full));
    }
}

//! Supervised fine-tuning: AdamW with warmup and cosine decay, gradient accumulation, loss
//! on answer tokens only, periodic evaluation, and checkpoints that survive a kill.
//!
//! A run is a pure function of (model, data, config, seed): the batch order of every epoch
//! is drawn from the seed, so a run resumed from a checkpoint continues exactly as an
//! uninterrupted one would.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::{KvCache, Llama, Mode, ScoreHead};
use crate::readout::LabelLevels;
use crate::{LlmError, Result};
use wander_optim::{AdamW, AdamWConfig};

/// One training example: a prompt and the answer the model should produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Prompt tokens (no loss).
    pub prompt: Vec<u32>,
    /// Answer tokens, end token included (loss on each).
    pub answer: Vec<u32>,
    /// Regression target for a one-output scoring head (ignored by SFT).
    #[serde(default)]
    pub label: f32,
    /// Targets `(output index, label)` for a many-output scoring head: one prompt carries
    /// the labels of several candidates (ignored by SFT and one-output heads).
    #[serde(default)]
    pub targets: Vec<(u32, f32)>,
    /// Candidates `(suffix tokens, label)` for a one-output scoring head that share this
    /// example's `prompt` as their prefix: the prefix runs once and the suffixes run as one
    /// batch over its keys and values (in training as in scoring). Empty: the prompt is one
    /// whole prompt with [`Example::label`].
    #[serde(default)]
    pub candidates: Vec<(Vec<u32>, f32)>,
}

impl Example {
    /// A stand-in for an example that a run does not visit (see [`TrainConfig::visited`]),
    /// so that a large training set need not be tokenized whole: it has no tokens, and a
    /// batch that met one would fail rather than train on it.
    pub fn unread() -> Example {
        Example {
            prompt: Vec::new(),
            answer: Vec::new(),
            label: 0.0,
            targets: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// One example for several whole prompts with their labels (the candidates of one
    /// history): their longest common prefix becomes the prompt, the rest of each the
    /// candidate's suffix. The tokens the model reads are exactly each whole prompt's.
    pub fn shared_prefix(prompts: Vec<(Vec<u32>, f32)>) -> Result<Example> {
        if prompts.iter().any(|(p, _)| p.is_empty()) || prompts.is_empty() {
            return Err(LlmError::Invalid(
                "an empty prompt among shared-prefix candidates".into(),
            ));
        }
        let common = common_prefix(prompts.iter().map(|(p, _)| p.as_slice()));
        let prompt = prompts[0].0[..common].to_vec();
        let candidates = prompts
            .into_iter()
            .map(|(p, label)| (p[common..].to_vec(), label))
            .collect();
        Ok(Example {
            prompt,
            answer: Vec::new(),
            label: 0.0,
            targets: Vec::new(),
            candidates,
        })
    }

    /// Labels this example carries (its weight in a mean loss).
    fn label_count(&self) -> usize {
        if self.candidates.is_empty() {
            1
        } else {
            self.candidates.len()
        }
    }
}

/// Length of the longest prefix all `prompts` share, leaving at least one token of each to
/// run (the last token's hidden state is what a scoring head reads).
pub fn common_prefix<'p>(mut prompts: impl Iterator<Item = &'p [u32]>) -> usize {
    let Some(first) = prompts.next() else {
        return 0;
    };
    let mut common = first.len().saturating_sub(1);
    for p in prompts {
        let same = first.iter().zip(p).take_while(|(x, y)| x == y).count();
        common = common.min(same).min(p.len().saturating_sub(1));
    }
    common
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr_ratio: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Evaluate every this many steps (0: never).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: usize,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 100,
            batch_size: 8,
            grad_accum: 1,
            lr: 2e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            eval_every: 0,
            checkpoint_every: 25,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// The example (an index below `n`) of the `k`-th example visit (0-based, counted over
    /// micro-batches): every epoch visits each example once, in an order shuffled by `seed`
    /// and the epoch.
    pub fn example_at(&self, n: usize, k: usize) -> usize {
        let mut idx: Vec<usize> = (0..n).collect();
        wander_core::rng::Rng::new(self.seed)
            .fork((k / n) as u64)
            .shuffle(&mut idx);
        idx[k % n]
    }

    /// Which of `n` examples a run of `steps` optimizer steps visits ([`Self::example_at`]
    /// for every visit): all of them once the run spans an epoch, else the first visits of
    /// the first epoch's order.
    pub fn visited(&self, n: usize) -> Vec<bool> {
        let visits = self.steps * self.batch_size * self.grad_accum;
        if visits >= n {
            return vec![true; n];
        }
        let mut idx: Vec<usize> = (0..n).collect();
        wander_core::rng::Rng::new(self.seed)
            .fork(0)
            .shuffle(&mut idx);
        let mut read = vec![false; n];
        for &i in &idx[..visits] {
            read[i] = true;
        }
        read
    }

    /// Learning rate at optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos)
    }
}

/// What the model learns.
#[derive(Debug, Clone)]
pub enum Objective {
    /// Next-token cross-entropy on the answer tokens.
    Sft,
    /// Mean squared error of a scoring head on the prompt's last hidden state. A one-output
    /// head regresses [`Example::label`]; a head with one output per candidate regresses
    /// each of [`Example::targets`] (pointwise labels).
    Regression(ScoreHead),
    /// Pairwise logistic (Bradley-Terry) loss over the [`Example::targets`] of each prompt:
    /// for every two targets whose labels differ by more than `margin`, the better one
    /// should score higher.
    Pairwise {
        /// One output per candidate.
        head: ScoreHead,
        /// Label differences at or below this are ties and give no pair.
        margin: f32,
    },
    /// Next-token cross-entropy on each candidate's label written as text (its nearest
    /// level's answer, after the candidate's prompt), over shared-prefix examples
    /// ([`Example::candidates`]): P2's alignment model that generates the rounded label.
    Text(LabelLevels),
}

/// Figures of a finished (or resumed) run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    /// Optimizer steps done in total.
    pub steps: usize,
    /// Training loss per step.
    pub losses: Vec<f64>,
    /// (step, eval loss).
    pub eval_losses: Vec<(usize, f64)>,
    /// Tokens processed by this process (not counting a resumed run's earlier part).
    pub tokens: usize,
    /// Seconds spent by this process.
    pub seconds: f64,
    /// Steps restored from a checkpoint.
    pub resumed_from: usize,
    /// The eval loss before the first step, once [`Trainer::initial_eval_loss`] has measured
    /// it (kept in the checkpoint: a resumed run reports the untrained model's figure, not
    /// its own starting point).
    pub initial_eval_loss: Option<f64>,
}

/// What a run learned, without the facts of the process that ran it (seconds, tokens,
/// resume point): the same bytes whether or not the run was killed and resumed.
#[derive(Debug, Clone, Serialize)]
pub struct TrainHistory<'a> {
    /// Optimizer steps done in total.
    pub steps: usize,
    /// Training loss per step.
    pub losses: &'a [f64],
    /// (step, eval loss).
    pub eval_losses: &'a [(usize, f64)],
}

impl TrainReport {
    /// The run's history, for the stage's `train_report.json`.
    pub fn history(&self) -> TrainHistory<'_> {
        TrainHistory {
            steps: self.steps,
            losses: &self.losses,
            eval_losses: &self.eval_losses,
        }
    }

    /// Training tokens per second in this process.
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Loss of one micro-batch (differentiable).
pub fn batch_loss(
    model: &Llama,
    objective: &Objective,
    batch: &[Example],
    pad: u32,
) -> Result<(Tensor, usize)> {
    let b = batch.len();
    let len = batch
        .iter()
        .map(|e| e.prompt.len() + e.answer.len())
        .max()
        .unwrap_or(0);
    if b == 0 || len < 2 {
        return Err(LlmError::Invalid("empty training batch".into()));
    }
    match objective {
        Objective::Sft => {
            let t = len - 1;
            let mut input = Vec::with_capacity(b * t);
            let mut positions = Vec::new();
            let mut targets = Vec::new();
            for (r, e) in batch.iter().enumerate() {
                let seq: Vec<u32> = e.prompt.iter().chain(&e.answer).copied().collect();
                for k in 0..t {
                    input.push(*seq.get(k).unwrap_or(&pad));
                }
                for k in e.prompt.len()..seq.len() {
                    positions.push((r * t + k - 1) as u32);
                    targets.push(seq[k]);
                }
            }
            let h = hidden_at(model, input, b, t, &positions)?;
            let logits = model.logits(&h)?;
            let targets = Tensor::new(targets.as_slice(), model.device())?;
            Ok((candle_nn::loss::cross_entropy(&logits, &targets)?, b * t))
        }
        Objective::Regression(head) if batch.iter().any(|e| !e.candidates.is_empty()) => {
            shared_prefix_loss(model, head, batch, pad)
        }
        Objective::Text(levels) => shared_prefix_text_loss(model, levels, batch, pad),
        Objective::Regression(head) | Objective::Pairwise { head, .. } => {
            let t = batch.iter().map(|e| e.prompt.len()).max().unwrap_or(1);
            let mut input = Vec::with_capacity(b * t);
            let mut last = Vec::with_capacity(b);
            for (r, e) in batch.iter().enumerate() {
                for k in 0..t {
                    input.push(*e.prompt.get(k).unwrap_or(&pad));
                }
                last.push((r * t + e.prompt.len() - 1) as u32);
            }
            let h = hidden_at(model, input, b, t, &last)?;
            let scores = head.forward(&h)?; // [b, n_out]
            let n_out = scores.dim(1)?;
            let loss = if n_out == 1 {
                let labels: Vec<f32> = batch.iter().map(|e| e.label).collect();
                let labels = Tensor::new(labels.as_slice(), model.device())?;
                (scores.squeeze(1)? - labels)?.sqr()?.mean_all()?
            } else {
                let flat = scores.flatten_all()?;
                let at = |r: usize, c: u32| -> Result<u32> {
                    if c as usize >= n_out {
                        return Err(LlmError::Invalid(format!(
                            "target {c} outside the head's {n_out} outputs"
                        )));
                    }
                    Ok((r * n_out) as u32 + c)
                };
                match objective {
                    Objective::Pairwise { margin, .. } => {
                        let (mut hi, mut lo) = (Vec::new(), Vec::new());
                        for (r, e) in batch.iter().enumerate() {
                            for a in &e.targets {
                                for z in &e.targets {
                                    if a.1 - z.1 > *margin {
                                        hi.push(at(r, a.0)?);
                                        lo.push(at(r, z.0)?);
                                    }
                                }
                            }
                        }
                        if hi.is_empty() {
                            return Err(LlmError::Invalid(
                                "pairwise batch without a single ordered pair of targets".into(),
                            ));
                        }
                        let pick =
                            |i: &[u32]| flat.index_select(&Tensor::new(i, model.device())?, 0);
                        let diff = (pick(&hi)? - pick(&lo)?)?;
                        // softplus(-d) = log(1 + exp(-d)): the Bradley-Terry negative log-likelihood.
                        ((diff.neg()?.exp()? + 1.0)?.log()?).mean_all()?
                    }
                    _ => {
                        let mut idx = Vec::new();
                        let mut labels = Vec::new();
                        for (r, e) in batch.iter().enumerate() {
                            for &(c, l) in &e.targets {
                                idx.push(at(r, c)?);
                                labels.push(l);
                            }
                        }
                        if idx.is_empty() {
                            return Err(LlmError::Invalid("batch without targets".into()));
                        }
                        let pred =
                            flat.index_select(&Tensor::new(idx.as_slice(), model.device())?, 0)?;
                        (pred - Tensor::new(labels.as_slice(), model.device())?)?
                            .sqr()?
                            .mean_all()?
                    }
                }
            };
            Ok((loss, b * t))
        }
    }
}

/// The example's shared prefix run once in training mode (its keys and values stay on the
/// graph), broadcast to its candidates; an example without candidates, or with an empty
/// one, is an error.
fn shared_prefix_cache(model: &Llama, e: &Example) -> Result<KvCache> {
    if e.candidates.is_empty() || e.candidates.iter().any(|(s, _)| s.is_empty()) {
        return Err(LlmError::Invalid(
            "a shared-prefix batch needs candidates with at least one token each".into(),
        ));
    }
    let mut cache = KvCache::new(model.blocks.len());
    if !e.prompt.is_empty() {
        let prefix = Tensor::from_vec(e.prompt.clone(), (1, e.prompt.len()), model.device())?;
        model.forward_hidden(&prefix, &mut cache, Mode::Train)?;
    }
    Ok(cache.broadcast(e.candidates.len())?)
}

/// Squared error of a one-output head over shared-prefix examples: per example, the prefix
/// runs once (batch 1), its keys and values are broadcast to the candidates, and the
/// suffixes (padded at the end, so the causal mask keeps padding out of every real
/// position) run as one batch. The mean is over labels, as with one prompt per label.
fn shared_prefix_loss(
    model: &Llama,
    head: &ScoreHead,
    batch: &[Example],
    pad: u32,
) -> Result<(Tensor, usize)> {
    let mut predictions = Vec::with_capacity(batch.len());
    let mut labels = Vec::new();
    let mut tokens = 0;
    for e in batch {
        let k = e.candidates.len();
        let mut cache = shared_prefix_cache(model, e)?;
        let s = e.candidates.iter().map(|(x, _)| x.len()).max().unwrap_or(1);
        let mut input = Vec::with_capacity(k * s);
        let mut last = Vec::with_capacity(k);
        for (r, (suffix, label)) in e.candidates.iter().enumerate() {
            input.extend((0..s).map(|j| *suffix.get(j).unwrap_or(&pad)));
            last.push((r * s + suffix.len() - 1) as u32);
            labels.push(*label);
        }
        let input = Tensor::from_vec(input, (k, s), model.device())?;
        let hidden = model.forward_hidden(&input, &mut cache, Mode::Train)?;
        let rows = hidden
            .reshape((k * s, model.cfg.hidden))?
            .index_select(&Tensor::new(last.as_slice(), model.device())?, 0)?;
        predictions.push(head.forward(&rows)?.squeeze(1)?);
        tokens += e.prompt.len() + k * s;
    }
    let predictions = Tensor::cat(&predictions, 0)?;
    let labels = Tensor::new(labels.as_slice(), model.device())?;
    Ok(((predictions - labels)?.sqr()?.mean_all()?, tokens))
}

/// Cross-entropy of the label written as text over shared-prefix examples: as
/// [`shared_prefix_loss`], but each candidate's row continues with its level's answer
/// tokens, and the loss is the mean next-token cross-entropy over every answer token.
fn shared_prefix_text_loss(
    model: &Llama,
    levels: &LabelLevels,
    batch: &[Example],
    pad: u32,
) -> Result<(Tensor, usize)> {
    let mut logits = Vec::with_capacity(batch.len());
    let mut targets = Vec::new();
    let mut tokens = 0;
    for e in batch {
        let k = e.candidates.len();
        let mut cache = shared_prefix_cache(model, e)?;
        let rows: Vec<Vec<u32>> = e
            .candidates
            .iter()
            .map(|(suffix, label)| {
                let answer = &levels.answers()[levels.nearest(*label)];
                suffix.iter().chain(answer).copied().collect()
            })
            .collect();
        let s = rows.iter().map(Vec::len).max().unwrap_or(1) - 1;
        let mut input = Vec::with_capacity(k * s);
        let mut read = Vec::new();
        for (r, (row, (suffix, _))) in rows.iter().zip(&e.candidates).enumerate() {
            // The last answer token is only a target; every other token is read.
            input.extend((0..s).map(|j| *row.get(j).unwrap_or(&pad)));
            for j in suffix.len()..row.len() {
                read.push((r * s + j - 1) as u32);
                targets.push(row[j]);
            }
        }
        let input = Tensor::from_vec(input, (k, s), model.device())?;
        let hidden = model.forward_hidden(&input, &mut cache, Mode::Train)?;
        let states = hidden
            .reshape((k * s, model.cfg.hidden))?
            .index_select(&Tensor::new(read.as_slice(), model.device())?, 0)?;
        logits.push(model.logits(&states)?);
        tokens += e.prompt.len() + k * s;
    }
    let logits = Tensor::cat(&logits, 0)?;
    let targets = Tensor::new(targets.as_slice(), model.device())?;
    Ok((candle_nn::loss::cross_entropy(&logits, &targets)?, tokens))
}

/// Differentiable hidden states of a padded `[b, t]` batch at flat positions `rows`.
fn hidden_at(model: &Llama, input: Vec<u32>, b: usize, t: usize, rows: &[u32]) -> Result<Tensor> {
    let input = Tensor::from_vec(input, (b, t), model.device())?;
    let hidden =
        model.forward_hidden(&input, &mut KvCache::new(model.blocks.len()), Mode::Train)?;
    Ok(hidden
        .reshape((b * t, model.cfg.hidden))?
        .index_select(&Tensor::new(rows, model.device())?, 0)?)
}

/// Trains `params` (tensors of `model`, or of the head) on `train`.
pub struct Trainer<'a> {
    model: &'a Llama,
    objective: Objective,
    names: Vec<String>,
    params: Vec<Var>,
    opt: AdamW,
    cfg: TrainConfig,
    pad: u32,
    checkpoint_dir: Option<PathBuf>,
    report: TrainReport,
    lr_scale: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    step: usize,
    config: TrainConfig,
    names: Vec<String>,
    losses: Vec<f64>,
    eval_losses: Vec<(usize, f64)>,
    // Absent in checkpoints written before it was kept.
    #[serde(default)]
    initial_eval_loss: Option<f64>,
}

impl<'a> Trainer<'a> {
    /// A trainer for the named tensors; with a checkpoint folder, it resumes from the
    /// checkpoint there when one exists for the same config and tensors.
    pub fn new(
        model: &'a Llama,
        objective: Objective,
        params: Vec<(String, Var)>,
        cfg: TrainConfig,
        pad: u32,
        checkpoint_dir: Option<&Path>,
    ) -> Result<Self> {
        let (names, vars): (Vec<String>, Vec<Var>) = params.into_iter().unzip();
        let opt = AdamW::new(
            &vars,
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
            },
        )?;
        let mut t = Trainer {
            model,
            objective,
            names,
            params: vars,
            opt,
            cfg,
            pad,
            checkpoint_dir: checkpoint_dir.map(Path::to_path_buf),
            report: TrainReport::default(),
            lr_scale: Vec::new(),
        };
        t.lr_scale = vec![1.0; t.params.len()];
        t.try_resume()?;
        Ok(t)
    }

    fn try_resume(&mut self) -> Result<()> {
        let Some(dir) = &self.checkpoint_dir else {
            return Ok(());
        };
        let meta_path = dir.join("checkpoint.json");
        let Ok(bytes) = std::fs::read(&meta_path) else {
            return Ok(());
        };
        let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| LlmError::Model {
            path: meta_path.clone(),
            message: format!("unreadable checkpoint: {e}"),
        })?;
        if meta.config != self.cfg || meta.names != self.names {
            return Ok(()); // a checkpoint of another run: start afresh
        }
        // Onto the parameters' device: a checkpoint written on a GPU resumes there.
        let device = match self.params.first() {
            Some(p) => p.device().clone(),
            None => Device::Cpu,
        };
        let tensors = candle_core::safetensors::load(dir.join("checkpoint.safetensors"), &device)?;
        let get = |k: String| {
            tensors.get(&k).cloned().ok_or_else(|| LlmError::Model {
                path: dir.clone(),
                message: format!("checkpoint lacks {k}"),
            })
        };
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (i, p) in self.params.iter().enumerate() {
            p.set(&get(format!("param.{i}"))?)?;
            m.push(get(format!("m.{i}"))?);
            v.push(get(format!("v.{i}"))?);
        }
        self.opt.restore(meta.step, m, v)?;
        self.report.steps = meta.step;
        self.report.resumed_from = meta.step;
        self.report.losses = meta.losses;
        self.report.eval_losses = meta.eval_losses;
        self.report.initial_eval_loss = meta.initial_eval_loss;
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        let Some(dir) = &self.checkpoint_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(dir, e)))?;
        let mut map = std::collections::HashMap::new();
        let (m, v) = self.opt.moments();
        for (i, p) in self.params.iter().enumerate() {
            map.insert(format!("param.{i}"), p.as_tensor().clone());
            map.insert(format!("m.{i}"), m[i].clone());
            map.insert(format!("v.{i}"), v[i].clone());
        }
        // Tensors first, then the metadata that points at them: a kill between the two
        // leaves the previous metadata, whose step no longer matches; the tensors' file is
        // replaced atomically, so we store the step inside it as well and check on resume.
        let st = dir.join("checkpoint.safetensors");
        let tmp = wander_core::artifact::temp_sibling(&st);
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
        let meta = CheckpointMeta {
            step: self.report.steps,
            config: self.cfg.clone(),
            names: self.names.clone(),
            losses: self.report.losses.clone(),
            eval_losses: self.report.eval_losses.clone(),
            initial_eval_loss: self.report.initial_eval_loss,
        };
        let meta_bytes = serde_json::to_vec(&meta).map_err(|e| LlmError::Invalid(e.to_string()))?;
        // Invalidate the old metadata before swapping tensors, so no state mixes two steps.
        let _ = std::fs::remove_file(dir.join("checkpoint.json"));
        std::fs::rename(&tmp, &st)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&st, e)))?;
        wander_core::artifact::atomic_write(&dir.join("checkpoint.json"), &meta_bytes)?;
        Ok(())
    }

    /// Multiplies the learning rate of the tensors whose name starts with `prefix` (a
    /// scoring head usually wants a larger one than the adapters).
    pub fn set_lr_scale(&mut self, prefix: &str, scale: f64) {
        for (n, s) in self.names.iter().zip(&mut self.lr_scale) {
            if n.starts_with(prefix) {
                *s = scale;
            }
        }
    }

    /// The batch order of `epoch`: a seeded permutation of the training set.
    /// The eval loss of the model before training: measured on `data` by a fresh trainer,
    /// restored from the checkpoint by a resumed one (whose model is no longer untrained).
    /// NaN for no data.
    pub fn initial_eval_loss(&mut self, data: &[Example]) -> Result<f64> {
        if let Some(loss) = self.report.initial_eval_loss {
            return Ok(loss);
        }
        // A run resumed from a checkpoint that predates this record: the untrained model's
        // loss is gone, and the current one would be a different figure.
        if self.report.steps > 0 {
            return Ok(f64::NAN);
        }
        let loss = if data.is_empty() {
            f64::NAN
        } else {
            self.eval_loss(data)?
        };
        self.report.initial_eval_loss = Some(loss);
        Ok(loss)
    }

    /// Mean loss over `data` without updating anything.
    pub fn eval_loss(&self, data: &[Example]) -> Result<f64> {
        let mut total = 0.0;
        let mut count = 0;
        for chunk in data.chunks(self.cfg.batch_size.max(1)) {
            let (loss, _) = batch_loss(self.model, &self.objective, chunk, self.pad)?;
            let labels: usize = chunk.iter().map(Example::label_count).sum();
            total += loss.to_scalar::<f32>()? as f64 * labels as f64;
            count += labels;
        }
        Ok(if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        })
    }

    /// Runs until `cfg.steps` optimizer steps are done (or `stop_after` more steps, for
    /// tests of interruption), reporting progress on `progress`.
    pub fn run(
        &mut self,
        train: &[Example],
        eval: &[Example],
        stop_after: Option<usize>,
        progress: Option<&wander_core::progress::Bar>,
    ) -> Result<TrainReport> {
        if train.is_empty() {
            return Err(LlmError::Invalid("no training examples".into()));
        }
        let per_step = self.cfg.batch_size * self.cfg.grad_accum;
        let start = Instant::now();
        let mut done_here = 0;
        while self.report.steps < self.cfg.steps && stop_after.is_none_or(|s| done_here < s) {
            let step = self.report.steps;
            let mut grads: Option<Vec<Tensor>> = None;
            let mut step_loss = 0.0;
            for micro in 0..self.cfg.grad_accum {
                let first = step * per_step + micro * self.cfg.batch_size;
                let batch: Vec<Example> = (first..first + self.cfg.batch_size)
                    .map(|k| train[self.cfg.example_at(train.len(), k)].clone())
                    .collect();
                self.model.set_dropout_seed(
                    wander_core::rng::Rng::new(self.cfg.seed)
                        .fork((step * self.cfg.grad_accum + micro) as u64)
                        .next_u64(),
                );
                let (loss, tokens) = batch_loss(self.model, &self.objective, &batch, self.pad)?;
                self.report.tokens += tokens;
                step_loss += loss.to_scalar::<f32>()? as f64 / self.cfg.grad_accum as f64;
                let store = (loss / self.cfg.grad_accum as f64)?.backward()?;
                let g: Vec<Tensor> = self
                    .params
                    .iter()
                    .map(|p| {
                        store
                            .get(p.as_tensor())
                            .cloned()
                            .map(Ok)
                            .unwrap_or_else(|| p.as_tensor().zeros_like())
                    })
                    .collect::<candle_core::Result<_>>()?;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => acc
                        .iter()
                        .zip(&g)
                        .map(|(a, b)| a + b)
                        .collect::<candle_core::Result<_>>()?,
                });
            }
            if !step_loss.is_finite() {
                return Err(LlmError::Invalid(format!(
                    "training diverged: the loss at step {} is {step_loss}; lower the learning rate",
                    step + 1
                )));
            }
            let lr = self.cfg.lr_at(step);
            let lrs: Vec<f64> = self.lr_scale.iter().map(|s| s * lr).collect();
            let grads = grads.unwrap_or_default();
            self.opt
                .step(&self.params, |i| grads.get(i).cloned(), &lrs)?;
            self.report.steps += 1;
            self.report.losses.push(step_loss);
            done_here += 1;
            if self.cfg.eval_every > 0
                && self.report.steps % self.cfg.eval_every == 0
                && !eval.is_empty()
            {
                let l = self.eval_loss(eval)?;
                self.report.eval_losses.push((self.report.steps, l));
            }
            if self.cfg.checkpoint_every > 0
                && (self.report.steps % self.cfg.checkpoint_every == 0
                    || self.report.steps == self.cfg.steps)
            {
                self.checkpoint()?;
            }
            if let Some(bar) = progress {
                let secs = start.elapsed().as_secs_f64();
                bar.set_position(self.report.steps as u64);
                bar.set_message(format!(
                    "loss {step_loss:.3} lr {lr:.1e} {:.0} tok/s",
                    self.report.tokens as f64 / secs.max(1e-9)
                ));
            }
        }
        self.report.seconds = start.elapsed().as_secs_f64();
        Ok(self.report.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;
    use super::TrainConfig;

    /// `visited` marks exactly the examples that `example_at` hands the run, below and
    /// beyond one epoch.
    #[test]
    fn visited_marks_what_the_run_visits() {
        for (steps, batch_size, grad_accum, n) in [
            (12, 4, 1, 500),
            (3, 2, 2, 13),
            (40, 8, 1, 64),
            (5, 4, 1, 20),
        ] {
            let cfg = TrainConfig {
                steps,
                batch_size,
                grad_accum,
                seed: 7,
                ..TrainConfig::default()
            };
            let read = cfg.visited(n);
            let mut seen = vec![false; n];
            for k in 0..steps * batch_size * grad_accum {
                seen[cfg.example_at(n, k)] = true;
            }
            assert_eq!(
                read, seen,
                "steps {steps} batch {batch_size} accum {grad_accum} n {n}"
            );
        }
    }

    #[test]
    fn the_shared_prefix_leaves_every_prompt_a_token() {
        let a: &[u32] = &[1, 2, 3, 4];
        let b: &[u32] = &[1, 2, 3, 5, 6];
        assert_eq!(common_prefix([a, b].into_iter()), 3);
        // Identical prompts still keep their last token to run.
        assert_eq!(common_prefix([a, a].into_iter()), 3);
        // A prompt that is a prefix of another keeps its last token too.
        assert_eq!(common_prefix([&a[..2], a].into_iter()), 1);
        assert_eq!(common_prefix(std::iter::empty()), 0);
        assert_eq!(common_prefix([&[7u32][..]].into_iter()), 0);
    }
}

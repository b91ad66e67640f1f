//! The LLM pieces the stages share: LoRA training setup and loop, the trainable model, and a
//! run's inference models with their prompts.

use std::path::Path;

use wander_core::artifact::RunDir;
use wander_explore::feedback;
use wander_explore::planner::PairPrompts;
use wander_llm::readout::Readout;

use crate::artifacts::*;
use crate::log;
use crate::StageContext;
use crate::StageId;

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
) -> crate::Result<wander_llm::train::TrainReport> {
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

/// The trained stage of a parent run that a `warm_start` key names (`key = dir`), checked
/// against this run before any work: the same values of `same` (slice key, what it means)
/// in the stage's configuration, and the same base model among its inputs. A mismatch would
/// load silently different weights, or fail half-way. `None`: the key is empty (fresh).
pub(crate) fn warm_start_parent(
    key: &str,
    dir: &str,
    stage: StageId,
    ours: &serde_json::Value,
    same: &[(&str, &str)],
    base_model_sha256: &str,
) -> crate::Result<Option<crate::artifacts::Opened>> {
    use crate::ResultExt;
    let dir = dir.trim();
    if dir.is_empty() {
        return Ok(None);
    }
    let root = Path::new(dir);
    if !root.is_dir() {
        crate::bail!("{key} = \"{dir}\": no such run directory");
    }
    let parent = RunDir::open(root)?;
    let opened = open(&parent, stage).with_context(|| {
        format!(
            "{key} = \"{dir}\": that run has no trained model there (run `wander {}` in it first)",
            stage.label()
        )
    })?;
    let theirs = &opened.manifest().config;
    for (slice_key, what) in same {
        if theirs.get(slice_key) != ours.get(slice_key) {
            crate::bail!(
                "{key} = \"{dir}\": its model was trained with another {what}: {} there, {} here",
                theirs.get(slice_key).unwrap_or(&serde_json::Value::Null),
                ours.get(slice_key).unwrap_or(&serde_json::Value::Null)
            );
        }
    }
    if !opened
        .manifest()
        .inputs
        .values()
        .any(|sum| sum == base_model_sha256)
    {
        crate::bail!("{key} = \"{dir}\": its model was trained on another base model (llm.model)");
    }
    Ok(Some(opened))
}

/// The device of `llm.device` (the CPU unless the build has the `cuda` feature and a GPU is
/// named).
pub(crate) fn device(ctx: &StageContext) -> crate::Result<candle_core::Device> {
    Ok(wander_llm::device::open(ctx.config.llm.gpu()?)?)
}

/// The tokenizer and a trainable SmolLM2 (f32 weights, on `llm.device`) with fresh LoRA
/// adapters of `[llm.lora]`, and the adapters' tensors.
pub(crate) fn trainable_model(
    ctx: &StageContext,
    q8: &Path,
) -> crate::Result<(
    wander_llm::tokenizer::Tokenizer,
    wander_llm::model::Llama,
    Vec<(String, wander_llm::Var)>,
)> {
    let lora = &ctx.config.llm.lora;
    let mut g = wander_llm::gguf::GgufFile::open(q8)?;
    let tok = crate::common::tokenizer(ctx, &g)?;
    let mut model = wander_llm::model::Llama::from_gguf(&mut g, false)?.to_device(&device(ctx)?)?;
    let params = model.attach_lora(
        &lora.targets,
        lora.rank,
        lora.alpha,
        lora.dropout,
        ctx.config.run.seed,
    )?;
    Ok((tok, model, params))
}

/// The inference models of a run: the novelty model and the alignment model (adapters
/// merged), the tokenizer and the cluster descriptions.
pub(crate) struct Models {
    pub(crate) tok: wander_llm::tokenizer::Tokenizer,
    pub(crate) novelty: wander_llm::model::Llama,
    pub(crate) alignment: wander_llm::model::Llama,
    /// How the alignment model's label is read: its head, or the levels of its text label.
    pub(crate) readout: Readout,
    /// The candidates' global rates its score adds (`alignment.prior = "offset"`).
    pub(crate) offsets: Option<Vec<f32>>,
    pub(crate) descriptions: Vec<String>,
    pub(crate) answers: Vec<Vec<u32>>,
    /// How the run's novelty model was prompted in training.
    pub(crate) prompter: NoveltyPrompter,
}

/// How the novelty model's user message is written (`novelty.prompt`): the history pair
/// alone, or with the pair's most frequent next clusters (F1's retrieval-augmented prompt).
#[derive(Debug, Clone, Default)]
pub(crate) struct NoveltyPrompter {
    /// Per pair, the next clusters a retrieval prompt names; `None`: plain prompts.
    retrieved: Option<std::collections::BTreeMap<(u32, u32), Vec<u32>>>,
    /// How many a prompt names.
    k: usize,
}

impl NoveltyPrompter {
    /// Retrieval from `counts` (a pair never seen names nothing), or plain prompts.
    pub(crate) fn new(
        shape: wander_core::config::NoveltyPrompt,
        k: usize,
        counts: &wander_explore::transitions::PairCounts,
    ) -> Self {
        NoveltyPrompter {
            retrieved: (shape == wander_core::config::NoveltyPrompt::Retrieval)
                .then(|| wander_explore::sft::retrieved_successors(counts, k)),
            k,
        }
    }

    /// The prompt shape the run's novelty model was trained with (recorded in its
    /// manifest; plain for a run without one, or from before the choice existed), retrieving
    /// from the run's training transitions.
    pub(crate) fn of_run(run: &RunDir) -> crate::Result<Self> {
        let Ok(stage) = open(run, StageId::TrainNovelty) else {
            return Ok(Self::default());
        };
        let Some(prompt) = stage.manifest().config.get("prompt") else {
            return Ok(Self::default());
        };
        let k = prompt["k"].as_u64().filter(|&k| k > 0).ok_or_else(|| {
            crate::PipelineError::msg(format!(
                "{}: the novelty model's prompt {prompt} has no retrieval k; rerun `wander train novelty --force`",
                run.root().join(StageId::TrainNovelty.folder()).join("manifest.json").display()
            ))
        })?;
        let all: Vec<wander_explore::transitions::Transition> =
            open(run, StageId::Transitions)?.json(TRANSITIONS)?;
        Ok(Self::new(
            wander_core::config::NoveltyPrompt::Retrieval,
            k as usize,
            &wander_explore::transitions::counts(&all, wander_data::Split::Train),
        ))
    }

    /// Retrieval from `recent` counts first (a refresh's newer window), topped up from the
    /// ones this prompter retrieves from to the same number; an error for plain prompts.
    pub(crate) fn retrieving_recent_first(
        &self,
        recent: &wander_explore::transitions::PairCounts,
    ) -> crate::Result<Self> {
        let Some(older) = &self.retrieved else {
            crate::bail!("precompute.retrieve_from = \"refresh\" fills a retrieval-augmented prompt, but the run's novelty model was trained with plain prompts: train it with novelty.prompt = \"retrieval\" (`wander train novelty --force`)");
        };
        let mut merged = wander_explore::sft::retrieved_successors(recent, self.k);
        for (pair, names) in older {
            let list = merged.entry(*pair).or_default();
            for &c in names {
                if list.len() < self.k && !list.contains(&c) {
                    list.push(c);
                }
            }
        }
        Ok(NoveltyPrompter {
            retrieved: Some(merged),
            k: self.k,
        })
    }

    /// Whether prompts name retrieved clusters.
    pub(crate) fn retrieves(&self) -> bool {
        self.retrieved.is_some()
    }

    /// The user message for `(c1, c2)`.
    pub(crate) fn user(&self, c1: u32, c2: u32, descriptions: &[String]) -> crate::Result<String> {
        let d = |c: u32| {
            descriptions
                .get(c as usize)
                .map(String::as_str)
                .ok_or_else(|| crate::PipelineError::msg(format!("cluster {c} has no description")))
        };
        Ok(match &self.retrieved {
            None => wander_explore::sft::user_message(d(c1)?, d(c2)?),
            Some(map) => {
                let names: Vec<&str> = map
                    .get(&(c1, c2))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|&c| d(c))
                    .collect::<crate::Result<_>>()?;
                wander_explore::sft::retrieval_user_message(d(c1)?, d(c2)?, &names)
            }
        })
    }
}

/// Names `alignment.products` in a stage's settings where it is not f32 (so that stages
/// computed before the setting existed stay fresh): the judge's scores depend on it.
pub(crate) fn add_alignment_products(ctx: &StageContext, slice: &mut serde_json::Value) {
    let products = ctx.config.alignment.products;
    if products != wander_core::config::AlignmentProducts::F32 {
        slice["alignment_products"] = serde_json::json!(products);
    }
}

/// `base` with a trained adapter (the configured rank and targets) folded into its weights.
pub(crate) fn with_adapter_merged(
    ctx: &StageContext,
    run: &RunDir,
    base: &wander_llm::model::Llama,
    adapter: File,
) -> crate::Result<wander_llm::model::Llama> {
    let lora = &ctx.config.llm.lora;
    let mut m = base.clone();
    m.attach_lora(
        &lora.targets,
        lora.rank,
        lora.alpha,
        0.0,
        ctx.config.run.seed,
    )?;
    m.load_lora(&open(run, adapter.stage())?.path(adapter)?)?;
    m.merge_lora()?;
    Ok(m)
}

pub(crate) fn load_models(
    ctx: &StageContext,
    run: &RunDir,
    q8: &Path,
    with_novelty: bool,
) -> crate::Result<Models> {
    let tax = wander_taxonomy::read(open(run, StageId::Taxonomy)?.reader())?;
    let descriptions: Vec<String> = tax
        .planner_clusters()
        .iter()
        .map(|c| c.description.clone())
        .collect();
    let mut g = wander_llm::gguf::GgufFile::open(q8)?;
    let tok = crate::common::tokenizer(ctx, &g)?;
    let base = wander_llm::model::Llama::from_gguf(&mut g, true)?;
    let device = device(ctx)?;
    // Merged on the CPU (the Q8_0 requantisation runs there), then moved.
    let merged = |adapter: File| -> crate::Result<_> {
        Ok(with_adapter_merged(ctx, run, &base, adapter)?.to_device(&device)?)
    };
    let mut alignment = merged(ALIGNMENT_ADAPTER)?;
    alignment.set_exact_mode(match ctx.config.alignment.products {
        wander_core::config::AlignmentProducts::F32 => wander_llm::model::Mode::InferF32,
        wander_core::config::AlignmentProducts::Bf16 => wander_llm::model::Mode::InferBf16,
    })?;
    let trained = crate::stages::alignment::trained(run)?;
    let readout = match trained.output() {
        wander_core::config::AlignmentOutput::Scalar => {
            Readout::Head(wander_llm::model::ScoreHead::load(
                &open(run, StageId::TrainAlignment)?.path(ALIGNMENT_HEAD)?,
                &device,
            )?)
        }
        wander_core::config::AlignmentOutput::Text => {
            Readout::Text(open(run, StageId::TrainAlignment)?.json(ALIGNMENT_LEVELS)?)
        }
    };
    let offsets = match trained.prior() {
        wander_core::config::AlignmentPrior::Learned => None,
        wander_core::config::AlignmentPrior::Offset => Some(
            open(run, StageId::TrainAlignment)?
                .json(ALIGNMENT_OFFSETS)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
    };
    let novelty = if with_novelty {
        merged(NOVELTY_ADAPTER)?
    } else {
        base.to_device(&device)?
    };
    let answers = descriptions
        .iter()
        .map(|d| tok.answer(d))
        .collect::<Result<_, _>>()?;
    Ok(Models {
        tok,
        novelty,
        alignment,
        readout,
        offsets,
        descriptions,
        answers,
        prompter: NoveltyPrompter::of_run(run)?,
    })
}

impl Models {
    /// The candidate-reading alignment model as a scorer, with the offsets it was trained
    /// over.
    pub(crate) fn candidate_scorer(
        &self,
    ) -> crate::Result<wander_explore::planner::CandidateScorer<'_>> {
        let scorer = wander_explore::planner::CandidateScorer::new(
            &self.alignment,
            &self.readout,
            &self.tok,
            &self.descriptions,
        );
        Ok(match &self.offsets {
            Some(o) => scorer.with_offsets(o)?,
            None => scorer,
        })
    }
}

pub(crate) fn alignment_prompts(m: &Models, pairs: &[(u32, u32)]) -> crate::Result<PairPrompts> {
    Ok(PairPrompts::new(
        &m.tok,
        feedback::ALIGNMENT_SYSTEM,
        wander_explore::sft::user_message,
        &m.descriptions,
        pairs,
    )?)
}

pub(crate) fn novelty_prompts(m: &Models, pairs: &[(u32, u32)]) -> crate::Result<PairPrompts> {
    // The prompter's errors travel through the explore crate's error as text.
    Ok(PairPrompts::from_users(
        &m.tok,
        wander_explore::sft::SYSTEM,
        pairs,
        |a, b| {
            m.prompter
                .user(a, b, &m.descriptions)
                .map_err(|e| wander_explore::ExploreError::Invalid(e.to_string()))
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_core::config::NoveltyPrompt;
    use wander_explore::transitions::PairCounts;

    fn counts(entries: &[((u32, u32), u32, u32)]) -> PairCounts {
        let mut c = PairCounts::new();
        for &(pair, next, n) in entries {
            c.entry(pair).or_default().insert(next, n);
        }
        c
    }

    #[test]
    fn a_refresh_names_recent_next_clusters_first_and_tops_up_from_training() {
        let descriptions: Vec<String> = (0..8).map(|c| format!("d{c}")).collect();
        let training = counts(&[
            ((0, 1), 2, 9),
            ((0, 1), 3, 5),
            ((0, 1), 4, 1),
            ((5, 6), 7, 2),
        ]);
        let prompter = NoveltyPrompter::new(NoveltyPrompt::Retrieval, 3, &training);
        assert_eq!(
            prompter.user(0, 1, &descriptions).unwrap(),
            "Recent interests: d0; then d1. Often next: d2; d3; d4. Next new interest?"
        );
        let recent = counts(&[((0, 1), 4, 3), ((0, 1), 5, 1), ((2, 3), 7, 1)]);
        let refreshed = prompter.retrieving_recent_first(&recent).unwrap();
        // Recent first by count, then the training list without repeats, up to k.
        assert!(refreshed
            .user(0, 1, &descriptions)
            .unwrap()
            .contains("Often next: d4; d5; d2."));
        assert!(refreshed
            .user(2, 3, &descriptions)
            .unwrap()
            .contains("Often next: d7."));
        assert!(refreshed
            .user(5, 6, &descriptions)
            .unwrap()
            .contains("Often next: d7."));
        // A pair seen nowhere gets the plain message.
        assert_eq!(
            refreshed.user(6, 5, &descriptions).unwrap(),
            wander_explore::sft::user_message("d6", "d5")
        );
        let plain = NoveltyPrompter::new(NoveltyPrompt::Plain, 3, &training);
        assert_eq!(
            plain.user(0, 1, &descriptions).unwrap(),
            wander_explore::sft::user_message("d0", "d1")
        );
        let e = plain
            .retrieving_recent_first(&recent)
            .unwrap_err()
            .to_string();
        assert!(e.contains("novelty.prompt = \"retrieval\""), "{e}");
        assert!(prompter.user(0, 9, &descriptions).is_err());
    }
}

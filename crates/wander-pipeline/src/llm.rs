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

/// The tokenizer and a trainable SmolLM2 (f32 weights) with fresh LoRA adapters of
/// `[llm.lora]`, and the adapters' tensors.
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
    let merged = |adapter: File| with_adapter_merged(ctx, run, &base, adapter);
    let alignment = merged(ALIGNMENT_ADAPTER)?;
    let trained = crate::stages::alignment::trained(run)?;
    let readout = match trained.output() {
        wander_core::config::AlignmentOutput::Scalar => {
            Readout::Head(wander_llm::model::ScoreHead::load(
                &open(run, StageId::TrainAlignment)?.path(ALIGNMENT_HEAD)?,
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
        readout,
        offsets,
        descriptions,
        answers,
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
    Ok(PairPrompts::new(
        &m.tok,
        wander_explore::sft::SYSTEM,
        wander_explore::sft::user_message,
        &m.descriptions,
        pairs,
    )?)
}

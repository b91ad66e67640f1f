//! The stages, one module each (or one per train/eval pair), and `wander run`'s order.

#[cfg(feature = "engine")]
pub mod aggregate;
pub mod alignment;
pub mod backend;
pub mod bundle;
pub mod drift;
pub mod export;
pub mod feedback;
pub mod harness;
pub mod ingest;
pub mod items;
#[cfg(feature = "engine")]
pub(crate) mod log_engine;
/// Without the engine compiled in, `engine.log_stages = "engine"` is refused by name.
#[cfg(not(feature = "engine"))]
pub(crate) mod log_engine {
    use wander_core::artifact::RunDir;
    use wander_explore::transitions::Transition;

    use super::feedback::PeriodFeedback;
    use crate::summaries::EngineMining;
    use crate::StageContext;

    fn absent<T>() -> crate::Result<T> {
        Err(crate::PipelineError::msg(
            "config: engine.log_stages = \"engine\" needs wander built with `--features engine` (DataFusion and Ballista); this build has the in-memory miners only (engine.log_stages = \"memory\")",
        ))
    }

    pub(crate) fn transitions(
        _: &StageContext,
        _: &RunDir,
        _: &[u32],
    ) -> crate::Result<(Vec<Transition>, EngineMining)> {
        absent()
    }

    pub(crate) fn feedback(
        _: &StageContext,
        _: &RunDir,
        _: &[u32],
    ) -> crate::Result<([PeriodFeedback; 3], EngineMining)> {
        absent()
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn taxonomy_usage(
        _: &StageContext,
        _: &RunDir,
        _: usize,
    ) -> crate::Result<(
        Vec<u64>,
        std::collections::HashMap<(u32, u32), f64>,
        EngineMining,
    )> {
        absent()
    }
}
pub mod novelty;
pub mod planted;
pub mod precompute;
pub mod refresh;
pub mod report;
pub mod reuse;
pub mod scaling;
pub mod serve_check;
pub mod simulate;
pub mod taxonomy;
pub mod transitions;

use crate::{Result, Stage, StageContext, StageId, Summary};

pub use precompute::Shard;

macro_rules! plain_stage {
    ($(#[$doc:meta])* $name:ident, $id:ident, $run:path, $slice:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl Stage for $name {
            fn id(&self) -> StageId {
                StageId::$id
            }
            fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
                #[allow(clippy::redundant_closure_call)]
                Ok(($slice)(ctx))
            }
            fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
                $run(ctx, force)
            }
        }
    };
}

plain_stage!(
    /// `wander ingest`.
    Ingest, Ingest, ingest::ingest, |ctx: &StageContext| ctx.config.data.output_slice()
);
plain_stage!(
    /// `wander taxonomy`.
    Taxonomy, Taxonomy, taxonomy::taxonomy, taxonomy::taxonomy_slice
);
plain_stage!(
    /// `wander transitions`.
    Transitions, Transitions, transitions::transitions, transitions::transitions_slice
);
plain_stage!(
    /// `wander eval drift`.
    EvalDrift, EvalDrift, drift::eval_drift, drift::eval_drift_slice
);
plain_stage!(
    /// `wander refresh`: a newer window of the log on the run's taxonomy.
    Refresh, Refresh, refresh::refresh, refresh::refresh_slice
);
plain_stage!(
    /// `wander export`: the adapters in PEFT's layout and the training data as JSONL.
    Export, Export, export::export, export::export_slice
);
plain_stage!(
    /// `wander train novelty`.
    TrainNovelty, TrainNovelty, novelty::train_novelty, novelty::train_novelty_slice
);
plain_stage!(
    /// `wander eval novelty`.
    EvalNovelty, EvalNovelty, novelty::eval_novelty, novelty::eval_novelty_slice
);
plain_stage!(
    /// `wander train items`.
    TrainItems, TrainItems, items::train_items, items::train_items_slice
);
plain_stage!(
    /// `wander eval items`.
    EvalItems, EvalItems, items::eval_items, items::eval_items_slice
);
plain_stage!(
    /// `wander feedback`.
    Feedback, Feedback, feedback::feedback_stage, feedback::feedback_slice
);
plain_stage!(
    /// `wander train alignment`.
    TrainAlignment, TrainAlignment, alignment::train_alignment, alignment::train_alignment_slice
);
plain_stage!(
    /// `wander eval alignment`.
    EvalAlignment, EvalAlignment, alignment::eval_alignment, alignment::eval_alignment_slice
);
plain_stage!(
    /// `wander bundle`: the serving bundle.
    Bundle, Bundle, bundle::bundle, |_: &StageContext| serde_json::json!({})
);
plain_stage!(
    /// `wander eval scaling`.
    EvalScaling, EvalScaling, scaling::eval_scaling, scaling::eval_scaling_slice
);
plain_stage!(
    /// `wander eval`: every strategy under one protocol.
    Eval, Eval, harness::eval_all, harness::eval_slice
);
/// `wander report`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report;

impl Stage for Report {
    fn id(&self) -> StageId {
        StageId::Report
    }
    fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
        report::report_slice(ctx)
    }
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
        report::report_stage(ctx, force)
    }
}
plain_stage!(
    /// The serve check: the service started over the run and queried once.
    ServeCheck, ServeCheck, serve_check::serve_check, |_: &StageContext| serde_json::Value::Null
);

/// `wander eval planted [--steps N]`: the candidate-reading alignment model on a synthetic
/// world with a planted history-dependent signal.
#[derive(Debug, Clone, Copy)]
pub struct EvalPlanted {
    /// LoRA training steps.
    pub steps: usize,
}

impl Stage for EvalPlanted {
    fn id(&self) -> StageId {
        StageId::EvalPlanted
    }
    fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
        Ok(planted::eval_planted_slice(ctx, self.steps))
    }
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
        planted::eval_planted(ctx, self.steps, force)
    }
}

/// `wander eval backend [--pairs K]`: the novelty model through the `[llm.openai]` server
/// against wander's runtime on the same prompts.
#[derive(Debug, Clone, Copy)]
pub struct EvalBackend {
    /// History pairs compared.
    pub pairs: usize,
}

impl Stage for EvalBackend {
    fn id(&self) -> StageId {
        StageId::EvalBackend
    }
    fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
        Ok(backend::eval_backend_slice(ctx, self.pairs))
    }
    fn run(&self, ctx: &StageContext, _force: bool) -> Result<Summary> {
        backend::eval_backend(ctx, self.pairs)
    }
}

/// `wander assets fetch [NAME...]` (every asset when `names` is empty).
#[derive(Debug, Clone, Default)]
pub struct Assets {
    /// Assets to fetch; empty for all.
    pub names: Vec<String>,
}

impl Stage for Assets {
    fn id(&self) -> StageId {
        StageId::Assets
    }
    fn config_slice(&self, _ctx: &StageContext) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
    fn run(&self, ctx: &StageContext, _force: bool) -> Result<Summary> {
        ingest::fetch_assets(ctx, &self.names)
    }
}

/// `wander precompute [--shard i/N] [--merge]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Precompute {
    /// Compute only this shard's chunks.
    pub shard: Option<Shard>,
    /// Only assemble the table from finished chunks.
    pub merge: bool,
}

impl Stage for Precompute {
    fn id(&self) -> StageId {
        StageId::Precompute
    }
    fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
        Ok(precompute::precompute_slice(ctx))
    }
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
        precompute::precompute(ctx, force, self.shard, self.merge)
    }
}

/// `wander simulate [--aa]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Simulate {
    /// Run the control strategy against itself (writes `simulate_aa`).
    pub aa: bool,
}

impl Stage for Simulate {
    fn config_slice(&self, ctx: &StageContext) -> Result<serde_json::Value> {
        Ok(simulate::simulate_slice(ctx, self.aa))
    }
    fn id(&self) -> StageId {
        if self.aa {
            StageId::SimulateAa
        } else {
            StageId::Simulate
        }
    }
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
        simulate::simulate_stage(ctx, force, self.aa)
    }
}

/// Every step of `wander run`, in order.
pub fn run_order() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(Assets::default()),
        Box::new(Ingest),
        Box::new(Taxonomy),
        Box::new(Transitions),
        Box::new(EvalDrift),
        Box::new(TrainNovelty),
        Box::new(EvalNovelty),
        Box::new(TrainItems),
        Box::new(EvalItems),
        Box::new(Feedback),
        Box::new(TrainAlignment),
        Box::new(EvalAlignment),
        Box::new(Precompute::default()),
        Box::new(Bundle),
        Box::new(EvalScaling),
        Box::new(Eval),
        Box::new(Simulate::default()),
        Box::new(Report),
        Box::new(ServeCheck),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(dir: &std::path::Path) -> StageContext {
        let mut config = wander_core::config::Config::default_config();
        config.run.dir = dir.to_path_buf();
        StageContext::new(config)
    }

    /// A key changes the configuration slice of the stages that read it and of no other, so
    /// a changed setting reruns exactly those stages.
    #[test]
    fn a_setting_changes_only_the_slices_of_the_stages_that_read_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = context(tmp.path());
        let cases: [(&str, fn(&mut wander_core::config::Config), &[StageId]); 5] = [
            ("items.lr", |c| c.items.lr *= 2.0, &[StageId::TrainItems]),
            (
                "novelty.steps",
                |c| c.novelty.steps += 1,
                &[StageId::TrainNovelty],
            ),
            (
                "items.rerank",
                |c| c.items.rerank += 1,
                &[StageId::EvalItems],
            ),
            (
                "precompute.top_k",
                |c| c.precompute.top_k += 1,
                &[StageId::Precompute, StageId::EvalScaling, StageId::Eval],
            ),
            (
                "feedback.min_users",
                |c| c.feedback.min_users += 1,
                &[StageId::Feedback],
            ),
        ];
        for (key, change, readers) in cases {
            let mut changed = base.clone();
            change(&mut changed.config);
            for stage in run_order() {
                let before = stage.config_slice(&base).unwrap();
                let after = stage.config_slice(&changed).unwrap();
                assert_eq!(
                    before != after,
                    readers.contains(&stage.id()),
                    "{key} and {}",
                    stage.id()
                );
            }
        }
    }
}

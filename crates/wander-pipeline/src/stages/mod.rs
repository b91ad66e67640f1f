//! The stages, one module each (or one per train/eval pair), and `wander run`'s order.

#[cfg(feature = "engine")]
pub mod aggregate;
pub mod alignment;
pub mod bundle;
pub mod feedback;
pub mod harness;
pub mod ingest;
pub mod items;
pub mod novelty;
pub mod planted;
pub mod precompute;
pub mod report;
pub mod scaling;
pub mod serve_check;
pub mod simulate;
pub mod taxonomy;
pub mod transitions;

use crate::{Result, Stage, StageContext, StageId, Summary};

pub use precompute::Shard;

macro_rules! plain_stage {
    ($(#[$doc:meta])* $name:ident, $id:ident, $run:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl Stage for $name {
            fn id(&self) -> StageId {
                StageId::$id
            }
            fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
                $run(ctx, force)
            }
        }
    };
}

plain_stage!(
    /// `wander ingest`.
    Ingest, Ingest, ingest::ingest
);
plain_stage!(
    /// `wander taxonomy`.
    Taxonomy, Taxonomy, taxonomy::taxonomy
);
plain_stage!(
    /// `wander transitions`.
    Transitions, Transitions, transitions::transitions
);
plain_stage!(
    /// `wander train novelty`.
    TrainNovelty, TrainNovelty, novelty::train_novelty
);
plain_stage!(
    /// `wander eval novelty`.
    EvalNovelty, EvalNovelty, novelty::eval_novelty
);
plain_stage!(
    /// `wander train items`.
    TrainItems, TrainItems, items::train_items
);
plain_stage!(
    /// `wander eval items`.
    EvalItems, EvalItems, items::eval_items
);
plain_stage!(
    /// `wander feedback`.
    Feedback, Feedback, feedback::feedback_stage
);
plain_stage!(
    /// `wander train alignment`.
    TrainAlignment, TrainAlignment, alignment::train_alignment
);
plain_stage!(
    /// `wander eval alignment`.
    EvalAlignment, EvalAlignment, alignment::eval_alignment
);
plain_stage!(
    /// `wander bundle`: the serving bundle.
    Bundle, Bundle, bundle::bundle
);
plain_stage!(
    /// `wander eval scaling`.
    EvalScaling, EvalScaling, scaling::eval_scaling
);
plain_stage!(
    /// `wander eval`: every strategy under one protocol.
    Eval, Eval, harness::eval_all
);
plain_stage!(
    /// `wander report`.
    Report, Report, report::report_stage
);
plain_stage!(
    /// The serve check: the service started over the run and queried once.
    ServeCheck, ServeCheck, serve_check::serve_check
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
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary> {
        planted::eval_planted(ctx, self.steps, force)
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

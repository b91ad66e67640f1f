//! The stage contract: which stages exist, what each reads, and what each returns.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::{Result, StageContext};

/// Every step of the pipeline. Most write one folder of the run directory (named by
/// [`StageId::folder`]); `Assets` and `ServeCheck` write none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageId {
    /// Fetch and verify the default's wheels.
    Assets,
    /// Load, validate and split the data.
    Ingest,
    /// Item embeddings, clusters, descriptions.
    Taxonomy,
    /// Cluster transitions and the novelty model's fine-tuning set.
    Transitions,
    /// How transitions change over calendar periods, and a replay of count tables.
    EvalDrift,
    /// LoRA fine-tuning of the novelty model.
    TrainNovelty,
    /// The novelty model against baselines.
    EvalNovelty,
    /// SASRec training.
    TrainItems,
    /// SASRec against popularity; restricted retrieval.
    EvalItems,
    /// Collective feedback labels.
    Feedback,
    /// The alignment model.
    TrainAlignment,
    /// The alignment model against baselines.
    EvalAlignment,
    /// The candidate-reading alignment model on a synthetic planted signal (not in `wander run`).
    EvalPlanted,
    /// The novelty model through the `[llm.openai]` server against wander's runtime (not in
    /// `wander run`).
    EvalBackend,
    /// The exploration table.
    Precompute,
    /// The serving bundle: what `wander serve` reads.
    Bundle,
    /// Best-of-n for several n.
    EvalScaling,
    /// Every exploration strategy under one protocol.
    Eval,
    /// The closed-loop A/B simulation.
    Simulate,
    /// The A/A simulation (control against itself).
    SimulateAa,
    /// The Markdown and HTML report.
    Report,
    /// The service started over the run and queried once.
    ServeCheck,
    /// The log aggregations on the SQL engine.
    Aggregate,
    /// The adapters and training data in other tools' formats (not in `wander run`).
    Export,
    /// A newer window of the log on the run's taxonomy (not in `wander run`).
    Refresh,
}

impl StageId {
    /// The folder it writes in the run directory (also its key in summaries).
    pub const fn folder(self) -> &'static str {
        match self {
            StageId::Assets => "assets",
            StageId::Ingest => "ingest",
            StageId::Taxonomy => "taxonomy",
            StageId::Transitions => "transitions",
            StageId::EvalDrift => "eval_drift",
            StageId::TrainNovelty => "train_novelty",
            StageId::EvalNovelty => "eval_novelty",
            StageId::TrainItems => "train_items",
            StageId::EvalItems => "eval_items",
            StageId::Feedback => "feedback",
            StageId::TrainAlignment => "train_alignment",
            StageId::EvalAlignment => "eval_alignment",
            StageId::EvalPlanted => "eval_planted",
            StageId::EvalBackend => "eval_backend",
            StageId::Precompute => "precompute",
            StageId::Bundle => "bundle",
            StageId::EvalScaling => "eval_scaling",
            StageId::Eval => "eval",
            StageId::Simulate => "simulate",
            StageId::SimulateAa => "simulate_aa",
            StageId::Report => "report",
            StageId::ServeCheck => "serve_check",
            StageId::Aggregate => "aggregate",
            StageId::Export => "export",
            StageId::Refresh => "refresh",
        }
    }

    /// How progress lines name it (the subcommand's words).
    pub const fn label(self) -> &'static str {
        match self {
            StageId::TrainNovelty => "train novelty",
            StageId::EvalNovelty => "eval novelty",
            StageId::TrainItems => "train items",
            StageId::EvalItems => "eval items",
            StageId::TrainAlignment => "train alignment",
            StageId::EvalAlignment => "eval alignment",
            StageId::EvalPlanted => "eval planted",
            StageId::EvalBackend => "eval backend",
            StageId::EvalDrift => "eval drift",
            StageId::EvalScaling => "eval scaling",
            StageId::SimulateAa => "simulate --aa",
            StageId::ServeCheck => "serve check",
            other => other.folder(),
        }
    }

    /// The stages whose outputs it reads: their manifests' checksums are among its inputs,
    /// so a change upstream makes it run again. (The report reads whichever evaluation
    /// stages exist; the serve check reads the bundle `wander serve` loads.)
    pub const fn inputs(self) -> &'static [StageId] {
        use StageId::*;
        match self {
            Assets | Ingest | Report | EvalPlanted => &[],
            Taxonomy | TrainItems => &[Ingest],
            Transitions | EvalDrift | Feedback | Aggregate | Refresh => &[Ingest, Taxonomy],
            TrainNovelty => &[Taxonomy, Transitions],
            EvalBackend => &[Taxonomy, TrainNovelty],
            EvalNovelty => &[Taxonomy, Transitions, TrainNovelty],
            EvalItems => &[Ingest, Taxonomy, TrainItems],
            TrainAlignment => &[Taxonomy, Feedback],
            EvalAlignment => &[Taxonomy, Feedback, TrainAlignment],
            Precompute => &[Taxonomy, Transitions, TrainNovelty, TrainAlignment],
            EvalScaling => &[Transitions, Feedback, Precompute],
            Eval => &[Taxonomy, Transitions, Feedback, Precompute],
            Simulate | SimulateAa => &[Ingest, Taxonomy, Transitions, Precompute],
            Bundle => &[Ingest, Taxonomy, TrainItems, Precompute],
            ServeCheck => &[Bundle],
            Export => &[Transitions, Feedback, TrainNovelty, TrainAlignment],
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a stage returns: its figures (as recorded in its manifest, plus `stage`, `skipped`
/// and `wall_seconds`), serialised as one JSON object by `--json` and shown as one line by
/// `Display`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    id: StageId,
    fields: Value,
}

impl Summary {
    /// A summary of `id` with `fields` (a JSON object).
    pub fn new(id: StageId, fields: Value) -> Self {
        Summary { id, fields }
    }

    /// The stage it summarises.
    pub fn id(&self) -> StageId {
        self.id
    }

    /// Its figures.
    pub fn fields(&self) -> &Value {
        &self.fields
    }

    /// Whether the stage was up to date and did not run.
    pub fn skipped(&self) -> bool {
        self.fields["skipped"] == true
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.fields.serialize(serializer)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::describe::describe(&self.fields))
    }
}

/// One step of the pipeline: reads its declared inputs from the run directory, writes its
/// folder (or skips itself when its inputs and config slice are unchanged), and returns
/// its summary.
pub trait Stage {
    /// Which stage it is.
    fn id(&self) -> StageId;
    /// The part of the configuration its outputs depend on (recorded in its manifest; a
    /// change makes it run again). `null` for the steps that write no stage folder.
    fn config_slice(&self, ctx: &StageContext) -> Result<Value>;
    /// Runs it; `force` redoes it even when its outputs are fresh.
    fn run(&self, ctx: &StageContext, force: bool) -> Result<Summary>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_come_earlier_in_the_run_order() {
        let order: Vec<StageId> = crate::stages::run_order().iter().map(|s| s.id()).collect();
        for (i, id) in order.iter().enumerate() {
            for input in id.inputs() {
                let at = order.iter().position(|s| s == input);
                assert!(
                    at.is_some_and(|a| a < i),
                    "{id} reads {input}, which does not run before it"
                );
            }
        }
        let folders: std::collections::BTreeSet<&str> = order.iter().map(|s| s.folder()).collect();
        assert_eq!(folders.len(), order.len(), "folders are distinct");
    }
}

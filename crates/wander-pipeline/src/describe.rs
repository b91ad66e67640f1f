//! One-line human summaries of the stages, printed on stderr.

use serde_json::Value;

use crate::summaries::*;
use crate::StageId;

/// One-line human summary of a stage.
pub fn describe(summary: &Value) -> String {
    let stage = summary["stage"].as_str().unwrap_or("stage");
    match stage {
        "ingest" => line::<IngestSummary>(StageId::Ingest, summary),
        "transitions" => line::<TransitionsSummary>(StageId::Transitions, summary),
        "eval_drift" => line::<EvalDriftSummary>(StageId::EvalDrift, summary),
        "export" => line::<ExportSummary>(StageId::Export, summary),
        "refresh" => line::<RefreshSummary>(StageId::Refresh, summary),
        "train_novelty" => train_novelty_line(summary),
        "feedback" => line::<FeedbackSummary>(StageId::Feedback, summary),
        "train_alignment" => train_alignment_line(summary),
        "precompute" => line::<PrecomputeSummary>(StageId::Precompute, summary),
        "train_items" => line::<TrainItemsSummary>(StageId::TrainItems, summary),
        "bundle" => line::<BundleSummary>(StageId::Bundle, summary),
        "report" => line::<ReportSummary>(StageId::Report, summary),
        "taxonomy" => line::<TaxonomySummary>(StageId::Taxonomy, summary),
        "eval_novelty" => line::<EvalNoveltySummary>(StageId::EvalNovelty, summary),
        "eval_alignment" => line::<EvalAlignmentSummary>(StageId::EvalAlignment, summary),
        "eval_items" => line::<EvalItemsSummary>(StageId::EvalItems, summary),
        "eval_scaling" => line::<EvalScalingSummary>(StageId::EvalScaling, summary),
        "eval" => line::<EvalSummary>(StageId::Eval, summary),
        "simulate" => simulate_line(StageId::Simulate, summary),
        "simulate_aa" => simulate_line(StageId::SimulateAa, summary),
        "eval_planted" => line::<PlantedSummary>(StageId::EvalPlanted, summary),
        "eval_backend" => line::<BackendSummary>(StageId::EvalBackend, summary),
        #[cfg(feature = "engine")]
        "aggregate" => line::<AggregateSummary>(StageId::Aggregate, summary),
        _ => summary.to_string(),
    }
}

//! Typed stage summaries: what a stage records in its manifest (and `--json` prints) is
//! serialised from one of these structs, and its one-line description is printed from the
//! same struct read back, so a renamed field cannot print `NaN`: it fails to compile, or
//! (for a manifest of an older version) says that the summary is unreadable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use wander_core::config::{AlignmentArch, DataFormat, ItemLoss, ProposalMode};
use wander_explore::transitions::TransitionStats;

use crate::StageId;

/// A figure that may be undefined (no events): JSON has no NaN, so it is written as `null`
/// and read back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Counts per period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PerSplit {
    /// Training period.
    pub train: usize,
    /// Validation period.
    pub valid: usize,
    /// Test period.
    pub test: usize,
}

impl From<[usize; 3]> for PerSplit {
    fn from([train, valid, test]: [usize; 3]) -> Self {
        PerSplit { train, valid, test }
    }
}

/// `wander ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// The data folder read.
    pub data_path: PathBuf,
    /// Its format.
    pub format: DataFormat,
    /// The positive-engagement rule.
    pub positive_rule: String,
    /// Users.
    pub users: usize,
    /// Catalogue items.
    pub items: usize,
    /// Items with at least one interaction.
    pub items_with_interactions: usize,
    /// Interactions.
    pub interactions: usize,
    /// Positive interactions.
    pub positives: usize,
    /// Share of interactions that are positive.
    #[serde(deserialize_with = "nan_if_null")]
    pub positive_rate: f64,
    /// Interactions over users x items.
    #[serde(deserialize_with = "nan_if_null")]
    pub density: f64,
    /// Earliest timestamp.
    pub time_min: i64,
    /// Latest timestamp.
    pub time_max: i64,
    /// Interactions per period of the temporal split.
    pub temporal_split: PerSplit,
    /// Interactions per part of the leave-last-out split.
    pub leave_last_out: PerSplit,
    /// Numeric feedback columns.
    pub feedback_columns: Vec<String>,
    /// Rows skipped under `data.on_error = "skip"`.
    pub skipped_rows: usize,
    /// Skipped rows by reason.
    pub skipped_by_reason: BTreeMap<String, usize>,
}

impl fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ingest: {} users, {} items, {} interactions, {} positives ({}), {} skipped rows",
            self.users,
            self.items,
            self.interactions,
            self.positives,
            self.positive_rule,
            self.skipped_rows
        )
    }
}

/// `wander transitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionsSummary {
    /// Training period.
    pub train: TransitionStats,
    /// Validation period.
    pub valid: TransitionStats,
    /// Test period.
    pub test: TransitionStats,
    /// The novelty model's fine-tuning examples.
    pub sft_examples: usize,
    /// Distinct target clusters among them.
    pub sft_distinct_targets: usize,
    /// Its evaluation examples (validation period).
    pub sft_eval_examples: usize,
    /// Planner-level clusters.
    pub clusters: usize,
}

impl fmt::Display for TransitionsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transitions: train {} over {} pairs (top 10% targets: {:.0}%), test {}; {} fine-tuning examples",
            self.train.transitions,
            self.train.pairs,
            100.0 * self.train.top10pct_target_share,
            self.test.transitions,
            self.sft_examples
        )
    }
}

/// `wander train novelty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainNoveltySummary {
    /// Optimizer steps taken in all (resumed ones included).
    pub steps: usize,
    /// Fine-tuning examples.
    pub examples: usize,
    /// Loss of the first step.
    pub first_loss: Option<f64>,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Evaluation loss by step.
    pub eval_losses: Vec<(usize, f64)>,
    /// Training throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub tokens_per_s: f64,
    /// Step the run resumed from (0: from scratch).
    pub resumed_from: usize,
    /// The adapter's file.
    pub adapter: String,
}

/// `wander train alignment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainAlignmentSummary {
    /// Optimizer steps taken in all.
    pub steps: usize,
    /// Training history pairs.
    pub pairs: usize,
    /// Training labels.
    pub labels: usize,
    /// Pointwise or pairwise.
    pub objective: wander_core::config::AlignmentObjective,
    /// Loss of the first step.
    pub first_loss: Option<f64>,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Validation loss before training.
    #[serde(deserialize_with = "nan_if_null")]
    pub initial_eval_loss: f64,
    /// Evaluation loss by step.
    pub eval_losses: Vec<(usize, f64)>,
    /// Training throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub tokens_per_s: f64,
    /// Step the run resumed from.
    pub resumed_from: usize,
    /// The adapter's file.
    pub adapter: String,
    /// The head's file.
    pub head: String,
    /// The architecture, recorded for the candidate-reading model (absent: the per-cluster
    /// head, as in runs from before `alignment.arch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<AlignmentArch>,
    /// Prompts (history pair x candidate) of the candidate-reading model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<usize>,
    /// Clusters whose labels were withheld from training.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holdout_candidates: Vec<u32>,
}

impl TrainAlignmentSummary {
    /// The architecture it trained.
    pub fn arch(&self) -> AlignmentArch {
        self.arch.unwrap_or(AlignmentArch::ClusterHead)
    }
}

/// `wander train items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainItemsSummary {
    /// Epochs run.
    pub epochs: usize,
    /// The epoch kept (best validation NDCG@10).
    pub best_epoch: usize,
    /// Its validation NDCG@10.
    #[serde(deserialize_with = "nan_if_null")]
    pub best_valid_ndcg10: f64,
    /// Whether patience ran out before `items.max_epochs`.
    pub early_stopped: bool,
    /// Mean training time per epoch.
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_epoch: f64,
    /// Mean validation time per epoch.
    #[serde(deserialize_with = "nan_if_null")]
    pub eval_seconds_per_epoch: f64,
    /// Training loss of the last epoch.
    pub final_loss: Option<f64>,
    /// Epochs done before a resume.
    pub resumed_from: usize,
    /// The loss.
    pub loss: ItemLoss,
}

impl fmt::Display for TrainItemsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "train items: {} epochs (best {}), valid NDCG@10 {:.4}, {:.1} s/epoch",
            self.epochs, self.best_epoch, self.best_valid_ndcg10, self.seconds_per_epoch
        )
    }
}

/// One period's labels in `wander feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelStats {
    /// Feedback events (engagements with a cluster outside the two current interests).
    pub events: usize,
    /// Of which positive.
    pub positive_events: usize,
    /// Labels (history pair, candidate).
    pub labels: usize,
    /// History pairs with a label.
    pub pairs: usize,
    /// Mean label.
    #[serde(deserialize_with = "nan_if_null")]
    pub label_mean: f64,
    /// Its standard deviation.
    #[serde(deserialize_with = "nan_if_null")]
    pub label_sd: f64,
    /// Preference pairs for the pairwise objective.
    pub preferences: usize,
}

/// `wander feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSummary {
    /// Training period.
    pub train: LabelStats,
    /// Validation period.
    pub valid: LabelStats,
    /// Test period.
    pub test: LabelStats,
    /// The aggregated signal.
    pub signal: wander_core::config::FeedbackSignal,
    /// Its normalisation.
    pub normalize: wander_core::config::FeedbackNormalize,
    /// Fewest users behind a label.
    pub min_users: usize,
}

impl fmt::Display for FeedbackSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "feedback: {} train labels over {} pairs (mean {:.3}), {} test labels; {} events in training",
            self.train.labels, self.train.pairs, self.train.label_mean, self.test.labels, self.train.events
        )
    }
}

/// `wander precompute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecomputeSummary {
    /// History pairs in the table.
    pub pairs: usize,
    /// Planner-level clusters.
    pub clusters: usize,
    /// Exact or sampled proposals.
    pub mode: ProposalMode,
    /// Proposals per pair.
    pub n: usize,
    /// Sampling temperature.
    #[serde(deserialize_with = "nan_if_null")]
    pub temperature: f64,
    /// Clusters kept per pair.
    pub top_k: usize,
    /// Pairs filled by the fallback.
    pub fallbacks: usize,
    /// Compute time.
    #[serde(deserialize_with = "nan_if_null")]
    pub compute_seconds: f64,
    /// Throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub pairs_per_s: f64,
    /// The models' output checksums, by stage.
    pub model_checksums: BTreeMap<String, String>,
    /// The table's file.
    pub table: String,
    /// The proposal normalisation, recorded when it is P2's whole-answer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<wander_core::config::ProposalNormalize>,
    /// Mean share of unconstrained samples that are valid answers (whole-answer
    /// normalisation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_share_mean: Option<f64>,
}

impl fmt::Display for PrecomputeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precompute: {} pairs, n = {}, {} mode, {:.2} pairs/s, {} fallbacks",
            self.pairs, self.n, self.mode, self.pairs_per_s, self.fallbacks
        )
    }
}

/// `wander bundle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleSummary {
    /// Planner-level clusters served.
    pub clusters: usize,
    /// Items served.
    pub items: usize,
    /// The table's version (checksum of the precompute manifest).
    pub table_version: String,
}

impl fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bundle: {} clusters, {} items, table version {}; `wander serve` reads it",
            self.clusters,
            self.items,
            &self.table_version[..self.table_version.len().min(12)]
        )
    }
}

/// `wander report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Whether the run is a smoke run (quick profile).
    pub smoke: bool,
    /// The stages whose reports it holds.
    pub sections: Vec<String>,
    /// The HTML page.
    pub html: PathBuf,
    /// The Markdown report.
    pub report: PathBuf,
    /// Figures inlined.
    pub figures: usize,
}

impl fmt::Display for ReportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "report: {} sections, {} figures; open {}",
            self.sections.len(),
            self.figures,
            self.html.display()
        )
    }
}

/// The summary of a stage as its typed struct, from a manifest or `--json` object (extra
/// fields such as `stage` and `wall_seconds` are ignored).
pub fn read<T: DeserializeOwned>(id: StageId, fields: &Value) -> crate::Result<T> {
    serde_json::from_value(fields.clone()).map_err(|e| {
        crate::PipelineError::Invalid(format!(
            "the summary of `{}` is unreadable ({e}); rerun `wander {}`",
            id.folder(),
            id.label()
        ))
    })
}

/// Serialises a typed summary for the manifest.
pub(crate) fn record<T: Serialize>(summary: &T) -> crate::Result<Value> {
    Ok(serde_json::to_value(summary)?)
}

/// The one-line description from the typed summary, or what made it unreadable.
pub(crate) fn line<T: DeserializeOwned + fmt::Display>(id: StageId, fields: &Value) -> String {
    match read::<T>(id, fields) {
        Ok(s) => s.to_string(),
        Err(e) => format!("{}: {e}", id.folder()),
    }
}

/// Minutes from a summary's `wall_seconds`.
pub(crate) fn minutes(fields: &Value) -> f64 {
    fields["wall_seconds"].as_f64().unwrap_or(0.0) / 60.0
}

/// The training stages' lines need the wall time, which the stage's outcome adds.
pub(crate) fn train_novelty_line(fields: &Value) -> String {
    match read::<TrainNoveltySummary>(StageId::TrainNovelty, fields) {
        Ok(s) => format!(
            "train novelty: {} steps, loss {:.3} -> {:.3}, {:.0} tokens/s, {:.1} min",
            s.steps,
            s.first_loss.unwrap_or(f64::NAN),
            s.final_loss.unwrap_or(f64::NAN),
            s.tokens_per_s,
            minutes(fields)
        ),
        Err(e) => format!("train_novelty: {e}"),
    }
}

/// See [`train_novelty_line`].
pub(crate) fn train_alignment_line(fields: &Value) -> String {
    match read::<TrainAlignmentSummary>(StageId::TrainAlignment, fields) {
        Ok(s) => format!(
            "train alignment: {} steps on {} pairs ({} labels), loss {:.4} -> {:.4}, {:.1} min",
            s.steps,
            s.pairs,
            s.labels,
            s.first_loss.unwrap_or(f64::NAN),
            s.final_loss.unwrap_or(f64::NAN),
            minutes(fields)
        ),
        Err(e) => format!("train_alignment: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_figure_round_trips_and_a_renamed_field_is_reported() {
        let s = TrainItemsSummary {
            epochs: 2,
            best_epoch: 0,
            best_valid_ndcg10: f64::NAN,
            early_stopped: false,
            seconds_per_epoch: 1.5,
            eval_seconds_per_epoch: 0.5,
            final_loss: None,
            resumed_from: 0,
            loss: ItemLoss::Full,
        };
        let v = record(&s).unwrap();
        assert!(v["best_valid_ndcg10"].is_null());
        let back: TrainItemsSummary = read(StageId::TrainItems, &v).unwrap();
        assert!(back.best_valid_ndcg10.is_nan() && back.epochs == 2);
        assert!(
            line::<TrainItemsSummary>(StageId::TrainItems, &v).starts_with("train items: 2 epochs")
        );

        let mut renamed = v.clone();
        let epochs = renamed.as_object_mut().unwrap().remove("epochs").unwrap();
        renamed["n_epochs"] = epochs;
        let text = line::<TrainItemsSummary>(StageId::TrainItems, &renamed);
        assert!(
            text.contains("summary of `train_items` is unreadable") && text.contains("epochs"),
            "{text}"
        );
    }

    #[test]
    fn optional_fields_are_absent_not_null_as_before() {
        let s = PrecomputeSummary {
            pairs: 2,
            clusters: 3,
            mode: ProposalMode::Exact,
            n: 4,
            temperature: 1.0,
            top_k: 2,
            fallbacks: 0,
            compute_seconds: 1.0,
            pairs_per_s: 2.0,
            model_checksums: BTreeMap::new(),
            table: "table.bin".into(),
            normalize: None,
            valid_share_mean: None,
        };
        let v = record(&s).unwrap();
        assert!(v.get("normalize").is_none() && v.get("valid_share_mean").is_none());
        let t = TrainAlignmentSummary {
            steps: 1,
            pairs: 1,
            labels: 1,
            objective: wander_core::config::AlignmentObjective::Pointwise,
            first_loss: Some(1.0),
            final_loss: Some(0.5),
            initial_eval_loss: f64::NAN,
            eval_losses: vec![],
            tokens_per_s: 1.0,
            resumed_from: 0,
            adapter: "a".into(),
            head: "h".into(),
            arch: None,
            prompts: None,
            holdout_candidates: vec![],
        };
        let v = record(&t).unwrap();
        for absent in ["arch", "prompts", "holdout_candidates"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let back: TrainAlignmentSummary = read(StageId::TrainAlignment, &v).unwrap();
        assert_eq!(back.arch(), AlignmentArch::ClusterHead);
    }
}

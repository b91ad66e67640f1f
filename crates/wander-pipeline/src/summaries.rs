//! Typed stage summaries: what a stage records in its manifest (and `--json` prints) is
//! serialised from one of these structs, and its one-line description is printed from the
//! same struct read back, so a renamed field cannot print `NaN`: it fails to compile, or
//! (for a manifest of an older version) says that the summary is unreadable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wander_core::config::{
    AlignmentArch, AlignmentOutput, AlignmentPrior, DataFormat, ItemLoss, ProposalMode,
};
use wander_explore::transitions::TransitionStats;

use crate::StageId;

use wander_explore::metrics::{nan_if_null, Estimate};

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
    /// With `run.parent`: the refreshed run whose log and refreshed window this log joins
    /// (`data_path` is then the window's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<PathBuf>,
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
    /// Where the log was mined, when on the SQL engine (`engine.log_stages = "engine"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineMining>,
}

/// A log stage's mining on the SQL engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineMining {
    /// `embedded` or the scheduler's URL.
    pub engine: String,
    /// Events in the log.
    pub events: u64,
    /// Seconds of the stage's queries (planning to the last row written).
    pub seconds: f64,
}

impl fmt::Display for EngineMining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " (mined on {}: {} events in {:.1} s)",
            self.engine, self.events, self.seconds
        )
    }
}

impl fmt::Display for TransitionsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transitions: train {} over {} pairs (top 10% targets: {:.0}%), test {}; {} fine-tuning examples{}",
            self.train.transitions,
            self.train.pairs,
            100.0 * self.train.top10pct_target_share,
            self.test.transitions,
            self.sft_examples,
            self.engine.as_ref().map(|e| e.to_string()).unwrap_or_default()
        )
    }
}

/// `wander export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// The base model the PEFT adapters name.
    pub base_model: String,
    /// Tensors of the novelty adapter.
    pub novelty_tensors: usize,
    /// Tensors of the alignment adapter.
    pub alignment_tensors: usize,
    /// The alignment model's readout file beside its adapter.
    pub alignment_readout: String,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "export: novelty and alignment adapters in PEFT's layout for {} ({} and {} tensors, readout {}), training data as JSONL",
            self.base_model, self.novelty_tensors, self.alignment_tensors, self.alignment_readout
        )
    }
}

/// `wander eval drift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalDriftSummary {
    /// Length of a period in days.
    pub period_days: f64,
    /// Top-k successors compared, and the replay's hit@k.
    pub k: usize,
    /// Periods, drift between them, and the replay.
    #[serde(flatten)]
    pub figures: wander_explore::drift::DriftReport,
}

impl fmt::Display for EvalDriftSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hit = |name: &str| {
            self.figures
                .replay
                .get(name)
                .map_or(f64::NAN, |r| r.hit_at_k.mean)
        };
        write!(
            f,
            "drift: {} periods of {} days; top-{} successor Jaccard {:.2} over {} steps; replay hit@{}: stale {:.3}, refreshed {:.3}, last period {:.3}",
            self.figures.periods.len(),
            self.period_days,
            self.k,
            self.figures.successor_jaccard,
            self.figures.jaccard_pairs,
            self.k,
            hit("stale"),
            hit("refreshed"),
            hit("last_period")
        )
    }
}

/// One item a refresh placed in an existing cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewItem {
    /// Its id in the source data.
    pub item_id: String,
    /// Its title.
    pub title: String,
    /// The fine cluster it joined.
    pub fine: u32,
    /// That cluster's coarse parent.
    pub coarse: u32,
    /// Cosine similarity to the fine cluster's text centroid.
    pub similarity: f64,
    /// The rule's score minus the runner-up cluster's.
    pub margin: f64,
    /// Users who engaged positively with it, in both windows.
    pub users: usize,
    /// Whether its users' other engagements placed it (else its text).
    pub by_consumption: bool,
}

/// The newer window's transitions against the run's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshDrift {
    /// Transitions whose next cluster was entered in the run's log.
    pub base_transitions: usize,
    /// Transitions whose next cluster was entered in the newer window.
    pub newer_transitions: usize,
    /// History pairs with a transition in the newer window.
    pub newer_pairs: usize,
    /// Of those, pairs with none in the run's log.
    pub newer_pairs_unseen_before: usize,
    /// Pairs with enough transitions in both windows for the Jaccard.
    pub jaccard_pairs: usize,
    /// Mean top-k successor Jaccard between the two windows (NaN: no pair qualified).
    #[serde(deserialize_with = "nan_if_null")]
    pub successor_jaccard: f64,
    /// Share of the newer window's transitions whose next cluster the run's count table
    /// ranks first (NaN: none).
    #[serde(deserialize_with = "nan_if_null")]
    pub stale_top1_hit_rate: f64,
}

/// `wander refresh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshSummary {
    /// The newer window's folder.
    pub data_path: PathBuf,
    /// The taxonomy's version after the refresh (the built one is 1).
    pub taxonomy_version: u32,
    /// Checksum of the built taxonomy's manifest that this version extends.
    pub base_taxonomy: String,
    /// Users, the run's first.
    pub users: usize,
    /// Users the run's log lacks.
    pub new_users: usize,
    /// Catalogue items, the run's first.
    pub items: usize,
    /// Items the run's catalogue lacks, each placed in a cluster.
    pub new_items: usize,
    /// Item texts embedded now (the rest came from the taxonomy's cache).
    pub embedded_items: usize,
    /// Interactions in the newer window.
    pub interactions: usize,
    /// Of those, on new items.
    pub interactions_on_new_items: usize,
    /// Earliest timestamp of the newer window.
    pub time_min: i64,
    /// Latest timestamp of the newer window.
    pub time_max: i64,
    /// Malformed rows skipped (`data.on_error = "skip"`).
    pub skipped_rows: usize,
    /// New items placed by their users' other engagements.
    pub placed_by_consumption: usize,
    /// Placements whose margin is below `refresh.uncertain_margin`.
    pub uncertain_placements: usize,
    /// Mean similarity of the placements (NaN: no new item).
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_similarity: f64,
    /// How new items were placed.
    pub placement: wander_core::config::PlacementRule,
    /// Text-only placement of held-out built items under that rule.
    pub placement_check: wander_taxonomy::assign::PlacementCheck,
    /// The same held-out items under every rule.
    pub placement_checks: BTreeMap<String, wander_taxonomy::assign::PlacementCheck>,
    /// The newer window's transitions against the run's.
    pub drift: RefreshDrift,
}

impl fmt::Display for RefreshSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refresh: {} interactions, {} new items placed (held-out placement: fine {:.3}, coarse {:.3}), {} new users; taxonomy version {}; top-k successor Jaccard against the run {:.3} over {} pairs",
            self.interactions,
            self.new_items,
            self.placement_check.fine_accuracy,
            self.placement_check.coarse_accuracy,
            self.new_users,
            self.taxonomy_version,
            self.drift.successor_jaccard,
            self.drift.jaccard_pairs
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
    /// The parent adapter the training started from (`novelty.warm_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<std::path::PathBuf>,
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
    /// The readout's file: the scoring head's weights, or the levels of the label written
    /// as text.
    pub head: String,
    /// How the model gives its label, recorded when it writes it as text (absent: a scalar
    /// head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AlignmentOutput>,
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
    /// What the scalar head predicts, recorded when it is only the history-conditional
    /// part over the candidate's global rate (absent: the label itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<AlignmentPrior>,
    /// The parent adapter the training started from (`alignment.warm_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<std::path::PathBuf>,
}

impl TrainAlignmentSummary {
    /// What its scalar head predicts.
    pub fn prior(&self) -> AlignmentPrior {
        self.prior.unwrap_or(AlignmentPrior::Learned)
    }

    /// The architecture it trained.
    pub fn arch(&self) -> AlignmentArch {
        self.arch.unwrap_or(AlignmentArch::ClusterHead)
    }

    /// How it gives its label.
    pub fn output(&self) -> AlignmentOutput {
        self.output.unwrap_or(AlignmentOutput::Scalar)
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
    /// Users an epoch visited, when `items.users_per_epoch` capped them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_per_epoch: Option<usize>,
    /// Users the validation ranked, when `items.valid_users` sampled them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_users: Option<usize>,
}

impl fmt::Display for TrainItemsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "train items: {} epochs (best {}), valid NDCG@10 {:.4}{}, {:.1} s/epoch{}",
            self.epochs,
            self.best_epoch,
            self.best_valid_ndcg10,
            self.valid_users
                .map_or(String::new(), |n| format!(" on {n} sampled users")),
            self.seconds_per_epoch,
            self.users_per_epoch
                .map_or(String::new(), |n| format!(" of {n} users"))
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
    /// Weight of the scaled value in a `mixed` signal (absent for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_weight: Option<f64>,
    /// Pseudo-users of shrinkage towards the candidate's rate (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrinkage: Option<f64>,
    /// Where the log was mined, when on the SQL engine (`engine.log_stages = "engine"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineMining>,
}

impl fmt::Display for FeedbackSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "feedback: {} train labels over {} pairs (mean {:.3}), {} test labels; {} events in training{}",
            self.train.labels,
            self.train.pairs,
            self.train.label_mean,
            self.test.labels,
            self.train.events,
            self.engine.as_ref().map(|e| e.to_string()).unwrap_or_default()
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
    /// Of `compute_seconds`, the time spent in the alignment model (the rest is the novelty
    /// model's proposals and the table's bookkeeping); absent when a chunk was computed by a
    /// version that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_seconds: Option<f64>,
    /// Throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub pairs_per_s: f64,
    /// The models' output checksums, by stage.
    pub model_checksums: BTreeMap<String, String>,
    /// The table's file.
    pub table: String,
    /// `precompute.prior_weight`, recorded when the table ranks by less than the whole
    /// alignment score (its alignment column is then that ranking score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_weight: Option<f64>,
    /// The proposal normalisation, recorded when it is P2's whole-answer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<wander_core::config::ProposalNormalize>,
    /// Mean share of unconstrained samples that are valid answers (whole-answer
    /// normalisation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_share_mean: Option<f64>,
    /// `precompute.score` when it is `proposals` (absent: every cluster was scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<wander_core::config::ScoreSet>,
    /// With `proposals`: clusters scored per pair, on average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored_per_pair: Option<f64>,
    /// The server that proposed, with `llm.backend = "openai"` (absent: wander's runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUse>,
    /// How much of the models' work came from the run's store (`precompute.reuse`): the
    /// pairs whose proposals and the candidates whose scores were computed before with the
    /// same models and the same prompts. Absent for tables from before the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<crate::stages::reuse::ReuseCounts>,
}

/// What the exploration table asked of an OpenAI-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUse {
    /// `llm.openai.endpoint`.
    pub endpoint: String,
    /// `llm.openai.model_name`.
    pub model_name: String,
    /// Requests answered in the last (resumed) pass, the cached ones included.
    pub requests: u64,
    /// Of those, answered from the on-disk cache.
    pub cache_hits: u64,
    /// Requests repeated after a transient failure.
    pub retries: u64,
    /// Completions drawn that were not a valid answer (`mode = "sample"`), out of
    /// `sampled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<u64>,
    /// Completions drawn (`mode = "sample"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<u64>,
}

impl fmt::Display for PrecomputeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precompute: {} pairs, n = {}, {} mode, {:.2} pairs/s, {} fallbacks",
            self.pairs, self.n, self.mode, self.pairs_per_s, self.fallbacks
        )?;
        if let Some(s) = &self.server {
            write!(
                f,
                ", through {} ({} requests, {} cached)",
                s.endpoint, s.requests, s.cache_hits
            )?;
        }
        if let Some(v) = self.valid_share_mean {
            write!(f, ", valid share {v:.3}")?;
        }
        if let Some(r) = &self.reuse {
            write!(
                f,
                "; reused from the run's store: proposals of {} of {} pairs, {} of {} alignment scores",
                r.novelty_reused,
                r.novelty_reused + r.novelty_computed,
                r.alignment_reused,
                r.alignment_reused + r.alignment_computed
            )?;
        }
        Ok(())
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
    /// The simulator against the held-out feedback (when both `eval` and `simulate` ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
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

/// How a taxonomy mix scored, for the comparison of text-only, behaviour-only and the
/// configured mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixFigures {
    /// Mean text-embedding coherence of the clusters.
    pub coherence_text: f64,
    /// Its lift over random clusters.
    pub coherence_text_lift: f64,
    /// Genre purity.
    pub genre_purity: f64,
    /// Share of the release year's variance between clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era_share: Option<f64>,
    /// Share of the log-popularity variance between clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_share: Option<f64>,
    /// Description-to-cluster retrieval accuracy of the configured keyword scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_retrieval: Option<f64>,
    /// How well an item with text but no consumption (a new one) finds its fine cluster:
    /// the held-out check of `wander refresh`'s centroid placement (10% of each cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_item_placement: Option<f64>,
}

/// `wander taxonomy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxonomySummary {
    /// Quality figures of the clusters.
    #[serde(flatten)]
    pub quality: wander_taxonomy::TaxonomyReport,
    /// The level the planner reads.
    pub planner_level: wander_core::config::PlannerLevel,
    /// Items embedded in this run.
    pub embedded_items: usize,
    /// Items whose embedding came from the cache.
    pub embedding_cache_hits: usize,
    /// Embedding time.
    pub embed_seconds: f64,
    /// Text-only, behaviour-only and the configured mix under the same clustering.
    pub mix_comparison: BTreeMap<String, MixFigures>,
    /// How well the planner level's descriptions name their clusters, by keyword scheme
    /// (`taxonomy.describe`), on the same clusters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub description_retrieval: BTreeMap<String, wander_taxonomy::DescriptionRetrieval>,
    /// The same, with each scheme's descriptions made from half of every cluster's items and
    /// judged against the other half's (`wander_taxonomy::held_out_retrieval`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub description_retrieval_held_out: BTreeMap<String, wander_taxonomy::DescriptionRetrieval>,
    /// The Markdown report.
    pub report: PathBuf,
    /// The taxonomy's version: 1 when built here (absent), the refresh's version when
    /// inherited from a refreshed parent run (`run.parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// With `run.parent`: the parent run whose refreshed taxonomy this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<PathBuf>,
    /// Where the log was mined, when on the SQL engine (`engine.log_stages = "engine"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineMining>,
}

impl fmt::Display for TaxonomySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.quality;
        write!(
            f,
            "taxonomy: {} coarse / {} fine clusters, coherence {:.2} (random {:.2}), genre purity {:.2} (random {:.2}); report: {}{}",
            q.coarse_clusters,
            q.fine_clusters,
            q.coherence_text,
            q.coherence_text_random,
            q.genre_purity,
            q.genre_purity_random,
            self.report.display(),
            self.engine.as_ref().map(|e| e.to_string()).unwrap_or_default()
        )
    }
}

/// A ranking method's figures in `wander eval items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingFigures {
    /// NDCG@10.
    pub ndcg_at_10: Estimate,
    /// Recall@10.
    pub recall_at_10: Estimate,
    /// MRR@10.
    pub mrr_at_10: Estimate,
    /// Test users.
    pub users: usize,
}

/// Cluster-restricted retrieval in `wander eval items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalFigures {
    /// Requests made (one per test user).
    pub requests: usize,
    /// Recall@10 of the quantized index against the exact scan.
    #[serde(deserialize_with = "nan_if_null")]
    pub quantized_recall_at_10_vs_exact: f64,
    /// Share of requests whose top 10 holds the test item.
    #[serde(deserialize_with = "nan_if_null")]
    pub restricted_hit_at_10: f64,
    /// Items returned outside the clusters or already seen (must be 0).
    pub violations: usize,
    /// Mean latency.
    #[serde(deserialize_with = "nan_if_null")]
    pub latency_ms_mean: f64,
    /// Median latency.
    #[serde(deserialize_with = "nan_if_null")]
    pub latency_ms_p50: f64,
    /// 99th percentile latency.
    #[serde(deserialize_with = "nan_if_null")]
    pub latency_ms_p99: f64,
    /// The index configured.
    pub index: wander_core::config::IndexKind,
}

/// `wander eval items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItemsSummary {
    /// Test users.
    pub users: usize,
    /// How many users had a test item, when `users` is a sample of them (`items.eval_users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<usize>,
    /// `sasrec` and `popularity`.
    pub methods: BTreeMap<String, RankingFigures>,
    /// Cluster-restricted retrieval.
    pub retrieval: RetrievalFigures,
    /// Full ranking of all users.
    pub ranking_seconds: f64,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for EvalItemsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ndcg = |m: &str| self.methods.get(m).map_or(f64::NAN, |r| r.ndcg_at_10.mean);
        write!(
            f,
            "eval items on {} users: NDCG@10 SASRec {:.4}, popularity {:.4}; restricted retrieval p99 {:.3} ms; report: {}",
            self.users,
            ndcg("sasrec"),
            ndcg("popularity"),
            self.retrieval.latency_ms_p99,
            self.report.display()
        )
    }
}

/// A method's figures in `wander eval novelty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoveltyFigures {
    /// Share of events whose next cluster is ranked first.
    pub hit_at_1: Estimate,
    /// ... among the top 5.
    pub hit_at_5: Estimate,
    /// Mean self-information of the top 5.
    pub novelty_bits: Estimate,
    /// Share of the top 5 never seen after the pair in training.
    pub out_of_loop: Estimate,
    /// Distinct clusters ranked first over the pairs.
    pub coverage_top1_clusters: usize,
    /// LLM methods: share of unconstrained samples that parse to a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<Estimate>,
    /// LLM methods: the same for greedy answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match_greedy: Option<Estimate>,
    /// LLM methods: the same for trie-constrained samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constrained_validity: Option<Estimate>,
    /// LLM methods: the probability that two constrained samples at temperature 1 for the
    /// event's pair agree (Σ p² of the exact distribution; F1: repeated prompts agree 37.5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_agreement: Option<Estimate>,
}

/// `wander eval novelty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalNoveltySummary {
    /// Test events.
    pub events: usize,
    /// Their distinct history pairs.
    pub pairs: usize,
    /// By method.
    pub methods: BTreeMap<String, NoveltyFigures>,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for EvalNoveltySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hit5 = |m: &str| self.methods.get(m).map_or(f64::NAN, |r| r.hit_at_5.mean);
        let exact = self
            .methods
            .get("fine_tuned")
            .and_then(|r| r.exact_match)
            .map_or(f64::NAN, |e| e.mean);
        write!(
            f,
            "eval novelty on {} test events: hit@5 fine-tuned {:.3}, zero-shot {:.3}, co-occurrence {:.3}, random {:.3}; exact match {:.3}; report: {}",
            self.events,
            hit5("fine_tuned"),
            hit5("zero_shot"),
            hit5("cooccurrence"),
            hit5("random"),
            exact,
            self.report.display()
        )
    }
}

/// A scorer's figures in `wander eval alignment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignmentFigures {
    /// Spearman correlation with the held-out labels.
    pub spearman: Estimate,
    /// AUC of separating labels above the median.
    pub auc_above_median: Estimate,
    /// Mean absolute error.
    pub mae: Estimate,
    /// Spearman within a history pair, averaged over pairs.
    pub within_pair_spearman: Estimate,
    /// Spearman on history pairs without a training label (`null`: too few).
    pub spearman_heldout_pairs: Option<Estimate>,
    /// Spearman on candidates without a training label (`null`: too few).
    pub spearman_heldout_candidates: Option<Estimate>,
    /// Spearman between the history-conditional parts: the label minus the candidate's
    /// global rate against the prediction minus the same (the global rate itself scores 0).
    /// Absent in evaluations made before it existed.
    #[serde(default)]
    pub spearman_relative: Option<Estimate>,
    /// Share of the candidate pairs of one history (labels differing) that the method orders
    /// correctly, pooled over every held-out history pair (bootstrap over pairs). Absent in
    /// evaluations made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_pair_concordance: Option<Estimate>,
    /// Within-pair Spearman minus the candidate's global rate's on the same pairs (paired:
    /// bootstrap over pairs of the difference), the test of whether a method ranks one
    /// history's candidates better than the prior. Absent for the global rate itself and in
    /// evaluations made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_pair_gain: Option<Estimate>,
    /// Within-pair concordance minus the global rate's, paired over the same candidate
    /// pairs (bootstrap over history pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concordance_gain: Option<Estimate>,
}

/// `wander eval alignment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalAlignmentSummary {
    /// Held-out (pair, candidate) triples.
    pub triples: usize,
    /// Their history pairs.
    pub pairs: usize,
    /// The architecture evaluated.
    pub arch: AlignmentArch,
    /// Pairs behind the within-pair figure.
    pub within_pair_pairs: usize,
    /// History pairs and candidate pairs behind the within-pair concordance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concordance_counts: Option<(usize, usize)>,
    /// Triples whose pair had no training label.
    pub heldout_pair_triples: usize,
    /// Triples whose candidate had no training label.
    pub heldout_candidate_triples: usize,
    /// Clusters withheld from training by design.
    pub holdout_candidates: Vec<u32>,
    /// By scorer: `alignment_llm`, `cluster_global_rate`, `linear_embeddings`,
    /// `triple_train_label` (since 2026-12-06).
    pub methods: BTreeMap<String, AlignmentFigures>,
    /// Ridge penalty picked on validation labels.
    pub ridge_lambda: f64,
    /// Pseudo-users of shrinkage of the `triple_train_label` baseline, picked on validation
    /// labels (absent before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_shrinkage: Option<f64>,
    /// The verdict in words.
    pub verdict: String,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for EvalAlignmentSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rho = |m: &str| self.methods.get(m).map_or(f64::NAN, |r| r.spearman.mean);
        write!(
            f,
            "eval alignment on {} held-out triples: Spearman LLM {:.3}, cluster rate {:.3}, linear {:.3}. {}",
            self.triples,
            rho("alignment_llm"),
            rho("cluster_global_rate"),
            rho("linear_embeddings"),
            self.verdict
        )
    }
}

/// A strategy's figures in `wander eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyFigures {
    /// The actual next cluster served first.
    pub hit_at_1: Estimate,
    /// ... among the top k (`precompute.top_k`).
    pub hit_at_k: Estimate,
    /// Held-out collective feedback of the served cluster.
    pub heldout_feedback: Estimate,
    /// The same served clusters on the same test events, judged by the *training* period's
    /// labels: the world the models and the simulator are built from (absent in evaluations
    /// from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_label_feedback: Option<Estimate>,
    /// ... by the validation period's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_label_feedback: Option<Estimate>,
    /// Held-out feedback on a yardstick that does not move with `[feedback]`'s shrinkage
    /// and user cut: the test period's raw rate of each triple seen from at least
    /// [`crate::eval::FIXED_YARDSTICK_USERS`] users, rounded like the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_feedback_raw: Option<Estimate>,
    /// Self-information of the served cluster.
    pub novelty_bits: Estimate,
    /// Served clusters that never followed the pair in training.
    pub out_of_loop: Estimate,
    /// Events where a valid novel cluster was served.
    pub validity: Estimate,
    /// Clusters served at least once in expectation.
    pub coverage_clusters: usize,
    /// Entropy of the served clusters.
    #[serde(deserialize_with = "nan_if_null")]
    pub diversity_bits: f64,
    /// Mean pairwise centroid distance within the top-k list (NaN: not a list strategy).
    #[serde(deserialize_with = "nan_if_null")]
    pub intra_list_diversity: f64,
    /// Expected distinct (user, cluster) pairs matched.
    #[serde(deserialize_with = "nan_if_null")]
    pub unique_user_cluster_hits: f64,
}

/// `wander eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Test events.
    pub events: usize,
    /// Their history pairs.
    pub pairs: usize,
    /// By strategy.
    pub strategies: BTreeMap<String, StrategyFigures>,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for EvalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .strategies
            .iter()
            .map(|(n, s)| format!("{n} {:.3}", s.hit_at_k.mean))
            .collect();
        write!(
            f,
            "eval on {} events: hit@k {}; report: {}",
            self.events,
            parts.join(", "),
            self.report.display()
        )
    }
}

/// A strategy's figures in `wander eval scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingFigures {
    /// The actual next cluster served.
    pub hit_at_1: Estimate,
    /// Held-out collective feedback of the served cluster.
    pub heldout_feedback: Estimate,
    /// Events with such a label.
    pub feedback_events: usize,
    /// Self-information of the served cluster.
    pub novelty_bits: Estimate,
    /// Entropy of the served clusters.
    #[serde(deserialize_with = "nan_if_null")]
    pub diversity_bits: f64,
    /// `hit_at_{k}` for `precompute.top_k` (named by its k).
    #[serde(flatten)]
    pub hit_at_k: BTreeMap<String, Estimate>,
}

/// The method's claim as `wander eval scaling` measures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingClaim {
    /// hit@1 at the largest n minus at the smallest.
    #[serde(deserialize_with = "nan_if_null")]
    pub hit_at_1_gain: f64,
    /// Held-out feedback at the largest n minus at the smallest.
    #[serde(deserialize_with = "nan_if_null")]
    pub feedback_gain: f64,
    /// Whether novelty at the largest n stays above co-occurrence's.
    pub novelty_above_cooccurrence: bool,
}

/// `wander eval scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScalingSummary {
    /// Test events.
    pub events: usize,
    /// Their history pairs.
    pub pairs: usize,
    /// By strategy (`best_of_n`, `novelty_only_n`, `cooccurrence`).
    pub strategies: BTreeMap<String, ScalingFigures>,
    /// The claim.
    pub claim: ScalingClaim,
    /// `precompute.prior_weight` chosen on the validation period (absent when the table
    /// already ranks by less than the whole score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_weight_choice: Option<PriorWeightSelection>,
    /// The Markdown report.
    pub report: PathBuf,
    /// The figure.
    pub plot: PathBuf,
}

/// `precompute.prior_weight` as `wander eval scaling` chooses it on the validation period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorWeightSelection {
    /// The chosen weight.
    pub weight: f64,
    /// Whether it met both exploration goals on validation (novelty at least
    /// co-occurrence's, entropy within `max_diversity_gap` bits of it).
    pub meets_goals: bool,
    /// Validation-period transitions over the table's pairs.
    pub events: usize,
    /// best-of-n at the largest n for each weight, on validation.
    pub points: Vec<wander_explore::scaling::FrontierPoint>,
    /// Co-occurrence's novelty on validation (bits).
    pub cooccurrence_novelty: f64,
    /// Co-occurrence's served-cluster entropy on validation (bits).
    pub cooccurrence_diversity: f64,
    /// The diversity goal's allowed gap (bits).
    pub max_diversity_gap: f64,
}

impl fmt::Display for EvalScalingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eval scaling on {} events: hit@1 gain {:+.3}, feedback gain {:+.4}, novelty above co-occurrence: {}; report: {}",
            self.events,
            self.claim.hit_at_1_gain,
            self.claim.feedback_gain,
            self.claim.novelty_above_cooccurrence,
            self.report.display()
        )
    }
}

/// `wander simulate` (and `--aa`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulateSummary {
    /// Arms, the control first.
    pub arms: Vec<String>,
    /// Simulated users.
    pub users: usize,
    /// Days.
    pub days: usize,
    /// Seeds.
    pub seeds: usize,
    /// Compute time.
    pub seconds: f64,
    /// Per treatment arm, per figure: the effect against the control.
    pub effects: BTreeMap<String, BTreeMap<String, wander_sim::Effect>>,
    /// The Markdown report.
    pub report: PathBuf,
}

/// What `report` reads of a simulation's `daily.json`: the arms and, per arm and figure,
/// the seed-averaged value of every day (`null` where undefined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimDaily {
    /// Arms, the control first.
    pub arms: Vec<String>,
    /// Arm -> figure -> one value per day.
    pub series: BTreeMap<String, BTreeMap<String, Vec<Option<f64>>>>,
}

/// How the simulator orders the exploration strategies against their held-out feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Strategies in both (`simulate` arm names).
    pub strategies: Vec<String>,
    /// Held-out collective feedback of each (`wander eval`).
    pub heldout_feedback: Vec<f64>,
    /// Simulated positive rate of each one's exploration slot (mean over days and seeds).
    pub simulated_exploration_positive_rate: Vec<f64>,
    /// Kendall's tau-b between the two orderings (NaN: fewer than two strategies).
    #[serde(deserialize_with = "nan_if_null")]
    pub kendall_tau: f64,
    /// Simulated positive rate among each one's exploration clicks: like held-out feedback,
    /// a rate over those who engaged (absent in simulations from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_exploration_click_positive_rate: Option<Vec<f64>>,
    /// Kendall's tau-b between held-out feedback and that rate, the like-for-like check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_clicks: Option<f64>,
    /// Each strategy's feedback by the training period's labels (`wander eval`), where the
    /// evaluation has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_label_feedback: Option<Vec<f64>>,
    /// Kendall's tau-b between the training-label feedback and the simulated positive rate
    /// of exploration clicks: does the simulator order the strategies as the period it is
    /// built from does?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_clicks_train_labels: Option<f64>,
    /// Kendall's tau-b between training-label and held-out feedback: how much the ordering
    /// itself moves between the periods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_train_heldout: Option<f64>,
    /// Kendall's tau-b between validation-label and held-out feedback: the agreement of two
    /// periods none of the strategies was fitted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_valid_heldout: Option<f64>,
    /// Kendall's tau-b between the positive rate of exploration clicks and held-out feedback
    /// on the fixed yardstick (`StrategyFigures::heldout_feedback_raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_clicks_raw_heldout: Option<f64>,
    /// Kendall's tau-b between the positive rate of exploration clicks and the validation
    /// period's feedback: the simulator against the period right after its world, which no
    /// strategy was fitted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_clicks_valid_labels: Option<f64>,
}

/// The one-line description of a simulation (`simulate` or `simulate_aa`).
pub(crate) fn simulate_line(id: StageId, fields: &Value) -> String {
    let s = match read::<SimulateSummary>(id, fields) {
        Ok(s) => s,
        Err(e) => return format!("{}: {e}", id.folder()),
    };
    let effects: Vec<String> = s
        .arms
        .iter()
        .skip(1)
        .map(
            |a| match s.effects.get(a).and_then(|e| e.get("positive_rate")) {
                Some(e) => format!(
                    "{a}: positive rate {:+.2}% [{:+.2}, {:+.2}]",
                    e.relative_pct, e.lo, e.hi
                ),
                None => format!("{a}: no positive-rate effect recorded"),
            },
        )
        .collect();
    format!(
        "{}: {} users x {} days x {} seeds in {:.1} s; vs {}: {}; report: {}",
        id.folder(),
        s.users,
        s.days,
        s.seeds,
        s.seconds,
        s.arms.first().map_or("", String::as_str),
        effects.join("; "),
        s.report.display()
    )
}

/// `wander eval backend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendSummary {
    /// `llm.openai.endpoint`.
    pub endpoint: String,
    /// `llm.openai.model_name`.
    pub model_name: String,
    /// History pairs compared.
    pub pairs: usize,
    /// Answers (clusters) per pair.
    pub answers: usize,
    /// Mean total variation distance between the two proposal distributions.
    #[serde(deserialize_with = "nan_if_null")]
    pub tvd_mean: f64,
    /// Largest total variation distance over the pairs.
    #[serde(deserialize_with = "nan_if_null")]
    pub tvd_max: f64,
    /// Share of pairs whose most likely answer is the same.
    #[serde(deserialize_with = "nan_if_null")]
    pub top1_agreement: f64,
    /// Mean absolute gap of the probability mass on valid answers.
    #[serde(deserialize_with = "nan_if_null")]
    pub valid_mass_gap_mean: f64,
    /// Pairs whose greedy completions are the same text.
    pub greedy_identical: usize,
    /// Pairs whose greedy completion through the server is a valid answer.
    pub greedy_valid_server: usize,
    /// Exact answer scoring in wander's runtime.
    #[serde(deserialize_with = "nan_if_null")]
    pub wander_pairs_per_s: f64,
    /// Exact answer scoring through the server.
    #[serde(deserialize_with = "nan_if_null")]
    pub server_pairs_per_s: f64,
    /// Requests answered.
    pub server_requests: u64,
    /// Of those, from the on-disk cache.
    pub server_cache_hits: u64,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for BackendSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eval backend: {} pairs, total variation {:.4} mean ({:.4} max), same top answer {:.2}, greedy identical {}/{}; pairs/s wander {:.2}, server {:.2}; report: {}",
            self.pairs,
            self.tvd_mean,
            self.tvd_max,
            self.top1_agreement,
            self.greedy_identical,
            self.pairs,
            self.wander_pairs_per_s,
            self.server_pairs_per_s,
            self.report.display()
        )
    }
}

/// `wander eval planted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlantedSummary {
    /// LoRA steps.
    pub steps: usize,
    /// Training labels of the synthetic world.
    pub train_labels: usize,
    /// Held-out labels.
    pub test_labels: usize,
    /// Held-out pairs.
    pub test_pairs: usize,
    /// Held-out loss before training.
    #[serde(deserialize_with = "nan_if_null")]
    pub initial_eval_loss: f64,
    /// Held-out loss by step.
    pub eval_losses: Vec<(usize, f64)>,
    /// Within-pair Spearman of the model, the global rate and the planted rule.
    pub within_pair_spearman: BTreeMap<String, Estimate>,
    /// How the model gave its label, recorded when it wrote it as text (absent: a scalar
    /// head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AlignmentOutput>,
    /// The goal for the model.
    pub goal: f64,
    /// Whether the model met it.
    pub goal_met: bool,
    /// The Markdown report.
    pub report: PathBuf,
}

impl fmt::Display for PlantedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rho = |m: &str| {
            self.within_pair_spearman
                .get(m)
                .map_or(f64::NAN, |e| e.mean)
        };
        write!(
            f,
            "eval planted: within-pair Spearman {:.3} (global rate {:.3}, planted rule {:.3}); goal {} {}; report: {}",
            rho("alignment_llm"),
            rho("cluster_global_rate"),
            rho("planted_rule"),
            self.goal,
            if self.goal_met { "met" } else { "not met" },
            self.report.display()
        )
    }
}

/// What `wander aggregate` read.
#[cfg(feature = "engine")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateInputs {
    /// The events (a Parquet file or folder of parts).
    pub events: PathBuf,
    /// The item-to-cluster table.
    pub clusters: PathBuf,
}

/// `wander aggregate` (feature `engine`).
#[cfg(feature = "engine")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateSummary {
    /// The engine's figures.
    #[serde(flatten)]
    pub run: wander_engine::RunSummary,
    /// With `--check`: every row equal to the in-memory miners'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches_in_memory: Option<bool>,
    /// With `--check`: rows compared per query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_rows: Option<BTreeMap<String, usize>>,
    /// What it read.
    pub inputs: AggregateInputs,
}

#[cfg(feature = "engine")]
impl fmt::Display for AggregateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.run;
        write!(
            f,
            "aggregate on {}: {} events x {} queries in {:.1} s ({:.0} events/s), peak memory {:.0} MiB{}",
            r.engine,
            r.events,
            r.queries.len(),
            r.seconds,
            r.events_per_second,
            r.peak_rss_bytes.unwrap_or(0) as f64 / 1048576.0,
            if self.matches_in_memory == Some(true) {
                "; identical to the in-memory miners"
            } else {
                ""
            }
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
            users_per_epoch: None,
            valid_users: Some(20),
        };
        let v = record(&s).unwrap();
        assert!(v.get("users_per_epoch").is_none() && v["valid_users"] == 20);
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
            alignment_seconds: Some(0.5),
            pairs_per_s: 2.0,
            model_checksums: BTreeMap::new(),
            table: "table.bin".into(),
            normalize: None,
            valid_share_mean: None,
            prior_weight: None,
            score: None,
            scored_per_pair: None,
            server: None,
            reuse: None,
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
            output: None,
            arch: None,
            prompts: None,
            holdout_candidates: vec![],
            prior: None,
            warm_start: None,
        };
        let v = record(&t).unwrap();
        for absent in [
            "arch",
            "prompts",
            "holdout_candidates",
            "prior",
            "warm_start",
        ] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let back: TrainAlignmentSummary = read(StageId::TrainAlignment, &v).unwrap();
        assert_eq!(back.arch(), AlignmentArch::ClusterHead);
        assert_eq!(back.prior(), AlignmentPrior::Learned);
    }
}

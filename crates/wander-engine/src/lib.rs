//! wander's log aggregations (transition counts, collective-feedback label parts,
//! co-consumption counts) as SQL plans on Apache DataFusion, run embedded in the process or on
//! an Apache DataFusion Ballista cluster.
//!
//! The queries live in [`sql`]; they read Parquet (a file or a folder of parts) and stream
//! their results into Parquet, so memory stays bounded by the engine's memory pool (sorts and
//! aggregations spill to disk) rather than by the log's size. The in-memory miners in
//! `wander-explore` and `wander-taxonomy` are the reference: tests check that both paths give
//! the same rows.
#![deny(missing_docs)]

pub mod output;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use serde::Serialize;

pub use output::{read_co_consumption, read_label_parts, read_transitions};
pub use output::{read_feedback_counts, read_item_counts, read_transition_events};
pub use output::{FeedbackCountRow, ItemCountRow, LabelPartRow, PairCountRow};
pub use output::{TransitionEventRow, TransitionRow};

/// Stack of each async worker thread of the engine's runtimes (the embedded engine's and
/// `wander-ballista`'s scheduler and executor). DataFusion and Ballista decode and plan
/// queries recursively, and the workspace builds their planning crates unoptimised (see the
/// root Cargo.toml), whose frames are several times larger: tokio's 2 MiB default overflowed
/// in `wander-ballista local` (scheduler and executor) on the first query of the CLI test.
pub const WORKER_STACK_BYTES: usize = 64 << 20;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An `--engine` value that is neither `embedded` nor `ballista://HOST:PORT`.
    #[error("invalid engine `{0}`: expected `embedded` or `ballista://HOST:PORT`")]
    Spec(String),
    /// An input file or folder that is missing or unreadable.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A query failed in the engine.
    #[error("query `{query}` failed on {engine}: {message}")]
    Query {
        /// Which query.
        query: String,
        /// Which engine.
        engine: String,
        /// The engine's message.
        message: String,
    },
    /// Reading or writing an output file failed.
    #[error("{path}: {message}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Settings of the embedded engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedded {
    /// Memory pool size in bytes; sorts and aggregations spill to disk beyond it.
    pub memory_limit: usize,
    /// Parallel partitions (0: one per core).
    pub partitions: usize,
    /// Where spill files go (None: the system's temporary folder).
    pub spill_dir: Option<PathBuf>,
}

/// Where the plans run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Engine {
    /// DataFusion in this process.
    Embedded(Embedded),
    /// A Ballista cluster; the scheduler's `df://` URL.
    Ballista {
        /// `df://HOST:PORT` of the scheduler.
        url: String,
    },
}

impl Engine {
    /// Parses `embedded` or `ballista://HOST:PORT` (also accepted: `df://HOST:PORT`).
    pub fn parse(spec: &str, embedded: Embedded) -> Result<Self> {
        let spec = spec.trim();
        if spec == "embedded" {
            return Ok(Engine::Embedded(embedded));
        }
        let rest = spec
            .strip_prefix("ballista://")
            .or_else(|| spec.strip_prefix("df://"))
            .ok_or_else(|| EngineError::Spec(spec.into()))?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(|| EngineError::Spec(spec.into()))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(EngineError::Spec(spec.into()));
        }
        Ok(Engine::Ballista {
            url: format!("df://{host}:{port}"),
        })
    }

    /// A short name for reports: `embedded` or the scheduler URL.
    pub fn name(&self) -> String {
        match self {
            Engine::Embedded(_) => "embedded".into(),
            Engine::Ballista { url } => url.replacen("df://", "ballista://", 1),
        }
    }
}

/// The two input tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    /// `events`: Parquet file or folder of `*.parquet` parts with `user`, `item`, `seq`,
    /// `positive`, `split` and any feedback columns.
    pub events: PathBuf,
    /// `clusters`: Parquet with `item`, `cluster`.
    pub clusters: PathBuf,
}

/// Figures of one query.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QueryRun {
    /// Query name (also the output file's stem).
    pub name: String,
    /// Result rows written.
    pub rows: u64,
    /// Wall seconds, planning to last row written.
    pub seconds: f64,
    /// Input events per second for this query.
    pub events_per_second: f64,
}

/// Figures of an aggregation run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Engine name.
    pub engine: String,
    /// Rows of `events`.
    pub events: u64,
    /// Per query.
    pub queries: Vec<QueryRun>,
    /// Total seconds of the queries.
    pub seconds: f64,
    /// `events x queries / seconds`: input rows aggregated per second over all queries.
    pub events_per_second: f64,
    /// Peak resident memory of this process so far (Linux `VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
}

pub use wander_core::memory::peak_rss_bytes;

fn check_input(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(EngineError::Input {
            path: path.into(),
            message: "not found".into(),
        });
    }
    Ok(())
}

async fn context(engine: &Engine) -> Result<SessionContext> {
    let fail = |e: &dyn std::fmt::Display| EngineError::Query {
        query: "(connect)".into(),
        engine: engine.name(),
        message: e.to_string(),
    };
    match engine {
        Engine::Embedded(s) => {
            let mut rt = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(s.memory_limit)));
            if let Some(dir) = &s.spill_dir {
                std::fs::create_dir_all(dir).map_err(|e| EngineError::Output {
                    path: dir.clone(),
                    message: e.to_string(),
                })?;
                rt = rt.with_temp_file_path(dir);
            }
            let runtime = rt.build_arc().map_err(|e| fail(&e))?;
            let mut config = SessionConfig::new();
            if s.partitions > 0 {
                config = config.with_target_partitions(s.partitions);
            }
            Ok(SessionContext::new_with_config_rt(config, runtime))
        }
        Engine::Ballista { url } => {
            use ballista::prelude::SessionContextExt;
            SessionContext::remote(url).await.map_err(|e| fail(&e))
        }
    }
}

/// Runs `queries` over `inputs` on `engine`, writing each result to `<out_dir>/<name>.parquet`
/// (atomically: a temporary sibling renamed into place).
pub fn run(
    engine: &Engine,
    inputs: &Inputs,
    queries: &[(&str, String)],
    out_dir: &Path,
) -> Result<RunSummary> {
    let tables = [
        ("events", inputs.events.as_path()),
        ("clusters", inputs.clusters.as_path()),
    ];
    run_tables(engine, &tables, queries, out_dir)
}

/// [`run`] for queries that read only the `events` table (those that need no taxonomy, such
/// as [`sql::co_consumption`] and [`sql::item_train_interactions`]).
pub fn run_on_events(
    engine: &Engine,
    events: &Path,
    queries: &[(&str, String)],
    out_dir: &Path,
) -> Result<RunSummary> {
    run_tables(engine, &[("events", events)], queries, out_dir)
}

fn run_tables(
    engine: &Engine,
    tables: &[(&'static str, &Path)],
    queries: &[(&str, String)],
    out_dir: &Path,
) -> Result<RunSummary> {
    for (_, path) in tables {
        check_input(path)?;
    }
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::Output {
        path: out_dir.into(),
        message: e.to_string(),
    })?;
    let threads = match engine {
        Engine::Embedded(s) if s.partitions > 0 => s.partitions,
        _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_stack_size(WORKER_STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Output {
            path: out_dir.into(),
            message: format!("cannot start the async runtime: {e}"),
        })?;
    rt.block_on(run_async(engine, tables, queries, out_dir))
}

async fn run_async(
    engine: &Engine,
    tables: &[(&'static str, &Path)],
    queries: &[(&str, String)],
    out_dir: &Path,
) -> Result<RunSummary> {
    let ctx = context(engine).await?;
    let engine_name = engine.name();
    let qerr = |query: &str, e: &dyn std::fmt::Display| EngineError::Query {
        query: query.into(),
        engine: engine_name.clone(),
        message: e.to_string(),
    };
    let register = |name: &'static str, path: &Path| {
        let ctx = &ctx;
        let path = path.to_path_buf();
        async move {
            let abs = std::fs::canonicalize(&path).map_err(|e| EngineError::Input {
                path: path.clone(),
                message: e.to_string(),
            })?;
            ctx.register_parquet(
                name,
                abs.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| EngineError::Input {
                path,
                message: format!("cannot read as the `{name}` table: {e}"),
            })
        }
    };
    for (name, path) in tables {
        register(name, path).await?;
    }
    let events = count_rows(&ctx, "events")
        .await
        .map_err(|e| qerr("count", &e))?;
    let mut runs = Vec::new();
    for (name, text) in queries {
        let start = Instant::now();
        let progress = wander_core::progress::spinner(&format!("{name} on {engine_name}"));
        let path = out_dir.join(format!("{name}.parquet"));
        let df = ctx.sql(text).await.map_err(|e| qerr(name, &e))?;
        let mut stream = df.execute_stream().await.map_err(|e| qerr(name, &e))?;
        let mut writer = output::PartWriter::create(&path, stream.schema())?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| qerr(name, &e))?;
            writer.write(&batch)?;
            progress.set_message(format!("{name} on {engine_name}: {} rows", writer.rows()));
        }
        let rows = writer.finish()?;
        progress.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        runs.push(QueryRun {
            name: name.to_string(),
            rows,
            seconds,
            events_per_second: events as f64 / seconds.max(1e-9),
        });
    }
    let seconds: f64 = runs.iter().map(|r| r.seconds).sum();
    Ok(RunSummary {
        engine: engine_name,
        events,
        events_per_second: events as f64 * runs.len() as f64 / seconds.max(1e-9),
        queries: runs,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

async fn count_rows(ctx: &SessionContext, table: &str) -> datafusion::error::Result<u64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let batches = ctx
        .sql(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .await?
        .collect()
        .await?;
    Ok(batches
        .first()
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .map_or(0, |a| a.value(0) as u64))
}

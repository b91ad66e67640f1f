//! The log stages on the SQL engine (`engine.log_stages = "engine"`): `wander transitions`
//! and `wander feedback` read the ingested log's Parquet through DataFusion plans (embedded
//! or on Ballista) instead of loading the log into memory, and get the rows the in-memory
//! miners give. Also the helpers `wander aggregate` shares with them.

use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::RecordBatch;
use arrow_array::UInt32Array;
use wander_core::artifact::RunDir;
use wander_core::config::FeedbackSignal;
use wander_data::Split;
use wander_engine::sql;
use wander_engine::Embedded;
use wander_engine::Engine;
use wander_engine::Inputs;
use wander_explore::feedback::LabelPart;

use super::feedback::PeriodFeedback;
use wander_explore::transitions::Transition;

use crate::artifacts::open;
use crate::summaries::EngineMining;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;

/// The engine of `spec` (default `engine.url`) with the `[engine]` settings.
pub(crate) fn engine(ctx: &StageContext, spec: Option<&str>) -> crate::Result<Engine> {
    let e = &ctx.config.engine;
    let spill = if e.spill_dir.is_empty() {
        ctx.config.run.dir.join(".work").join("spill")
    } else {
        PathBuf::from(&e.spill_dir)
    };
    let embedded = Embedded {
        memory_limit: e.memory_limit_mb << 20,
        partitions: e.partitions,
        spill_dir: Some(spill),
    };
    Ok(Engine::parse(spec.unwrap_or(&e.url), embedded)?)
}

/// The engine's form of `feedback.signal`; `who` names the command in the refusal of
/// `mixed`, whose per-event fractions an engine may sum in another order than the in-memory
/// miner (so the two could differ in the last bit).
pub(crate) fn signal(ctx: &StageContext, who: &str) -> crate::Result<sql::Signal> {
    Ok(match ctx.config.feedback.signal {
        FeedbackSignal::Positive => sql::Signal::Positive,
        FeedbackSignal::Value => {
            sql::Signal::Value(format!("feedback_{}", ctx.config.data.feedback))
        }
        FeedbackSignal::Mixed => bail!(
            "config: feedback.signal = \"mixed\" is not supported by {who} (positive or value are); `wander feedback` with engine.log_stages = \"memory\" computes mixed labels"
        ),
    })
}

/// Column names of a Parquet file.
pub(crate) fn parquet_columns(path: &Path) -> crate::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    use parquet::file::reader::FileReader;
    Ok(reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

/// The Parquet files of a file or a folder of `*.parquet` parts.
pub(crate) fn parquet_files(path: &Path) -> crate::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no *.parquet files in the folder", path.display());
        }
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        bail!("{}: not found", path.display())
    }
}

/// Checks that the events table has what the queries read, naming the file and column.
pub(crate) fn check_events(path: &Path, signal: &sql::Signal) -> crate::Result<()> {
    let first = &parquet_files(path)?[0];
    let columns = parquet_columns(first)?;
    let mut needed = vec!["user", "item", "seq", "positive", "split"];
    if let sql::Signal::Value(c) = signal {
        needed.push(c);
    }
    for c in needed {
        if !columns.iter().any(|x| x == c) {
            let hint = if c == "seq" {
                " (logs ingested before `wander aggregate` existed lack it: run `wander ingest --force`)"
            } else {
                ""
            };
            bail!(
                "{}: no column `{c}` (columns: {}){hint}",
                first.display(),
                columns.join(", ")
            );
        }
    }
    Ok(())
}

/// Writes the item-to-cluster table the queries join with.
pub(crate) fn write_clusters(path: &Path, assign: &[u32]) -> crate::Result<()> {
    let batch = RecordBatch::try_from_iter([
        (
            "item",
            Arc::new(UInt32Array::from_iter_values(0..assign.len() as u32)) as ArrayRef,
        ),
        (
            "cluster",
            Arc::new(UInt32Array::from(assign.to_vec())) as ArrayRef,
        ),
    ])?;
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// A scratch folder for one stage's engine results under `<run>/.work`, removed on drop:
/// the results are read back into the stage's own artifacts, so nothing of it is kept.
struct Scratch(PathBuf);

impl Scratch {
    fn new(run: &RunDir, stage: StageId) -> crate::Result<Self> {
        let dir = run
            .root()
            .join(".work")
            .join("log_stages")
            .join(stage.folder());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `queries` over the run's ingested log joined with `assign`, in a scratch folder.
fn run_queries(
    ctx: &StageContext,
    run: &RunDir,
    stage: StageId,
    assign: &[u32],
    signal: &sql::Signal,
    queries: &[(&str, String)],
) -> crate::Result<(Scratch, EngineMining)> {
    let engine = engine(ctx, None)?;
    let scratch = Scratch::new(run, stage)?;
    let ingest = open(run, StageId::Ingest)?;
    let clusters = scratch.0.join("clusters.parquet");
    write_clusters(&clusters, assign)?;
    let inputs = Inputs {
        events: ingest.reader().path(wander_data::INTERACTIONS_FILE)?,
        clusters,
    };
    check_events(&inputs.events, signal)?;
    let summary = wander_engine::run(&engine, &inputs, queries, &scratch.0)?;
    Ok((scratch, mining(summary)))
}

/// The summaries' record of a run on the engine.
fn mining(summary: wander_engine::RunSummary) -> EngineMining {
    EngineMining {
        engine: summary.engine,
        events: summary.events,
        seconds: summary.seconds,
    }
}

fn split_of(v: u8, file: &Path) -> crate::Result<Split> {
    Split::from_u8(v).ok_or_else(|| {
        crate::PipelineError::msg(format!(
            "{}: split {v} is not 0 (train), 1 (valid) or 2 (test)",
            file.display()
        ))
    })
}

/// Every transition of the log, in the in-memory miner's order (the log's).
pub(crate) fn transitions(
    ctx: &StageContext,
    run: &RunDir,
    assign: &[u32],
) -> crate::Result<(Vec<Transition>, EngineMining)> {
    let (scratch, mining) = run_queries(
        ctx,
        run,
        StageId::Transitions,
        assign,
        &sql::Signal::Positive,
        &[("transition_events", sql::transition_events())],
    )?;
    let file = scratch.0.join("transition_events.parquet");
    let rows = wander_engine::read_transition_events(&file)?;
    let all = rows
        .into_iter()
        .map(|r| {
            Ok(Transition {
                user: r.user,
                c1: r.c1,
                c2: r.c2,
                next: r.next,
                split: split_of(r.split, &file)?,
            })
        })
        .collect::<crate::Result<_>>()?;
    Ok((all, mining))
}

/// The three periods' feedback (train, valid, test).
pub(crate) fn feedback(
    ctx: &StageContext,
    run: &RunDir,
    assign: &[u32],
) -> crate::Result<([PeriodFeedback; 3], EngineMining)> {
    let signal = signal(ctx, "engine.log_stages = \"engine\"")?;
    let (scratch, mining) = run_queries(
        ctx,
        run,
        StageId::Feedback,
        assign,
        &signal,
        &[
            ("label_parts", sql::label_parts(&signal)),
            ("feedback_counts", sql::feedback_counts()),
        ],
    )?;
    let mut periods = [Split::Train, Split::Valid, Split::Test].map(|_| PeriodFeedback {
        parts: Vec::new(),
        events: 0,
        positive: 0,
    });
    let file = scratch.0.join("label_parts.parquet");
    // Read sorted by (split, c1, c2, next, s, n): each period's parts in canonical order.
    for r in wander_engine::read_label_parts(&file)? {
        let split = split_of(r.split, &file)?;
        let narrow = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                crate::PipelineError::msg(format!("{}: {what} {v} exceeds 2^32", file.display()))
            })
        };
        periods[split as usize].parts.push(LabelPart {
            c1: r.c1,
            c2: r.c2,
            next: r.next,
            s: r.s,
            n: narrow(r.n, "n")?,
            users: narrow(r.users, "users")?,
        });
    }
    let file = scratch.0.join("feedback_counts.parquet");
    for r in wander_engine::read_feedback_counts(&file)? {
        let p = &mut periods[split_of(r.split, &file)? as usize];
        p.events = r.events as usize;
        p.positive = r.positive as usize;
    }
    Ok((periods, mining))
}

/// What the taxonomy reads of the log: each of the `n_items` items' interactions in the
/// training period, and the co-consumption counts within `taxonomy.window` (the events
/// table alone: the clusters do not exist yet).
pub(crate) fn taxonomy_usage(
    ctx: &StageContext,
    run: &RunDir,
    n_items: usize,
) -> crate::Result<(Vec<u64>, HashMap<(u32, u32), f64>, EngineMining)> {
    let engine = engine(ctx, None)?;
    let scratch = Scratch::new(run, StageId::Taxonomy)?;
    let events = open(run, StageId::Ingest)?
        .reader()
        .path(wander_data::INTERACTIONS_FILE)?;
    check_events(&events, &sql::Signal::Positive)?;
    let summary = wander_engine::run_on_events(
        &engine,
        &events,
        &[
            ("item_train_interactions", sql::item_train_interactions()),
            (
                "co_consumption",
                sql::co_consumption(ctx.config.taxonomy.window),
            ),
        ],
        &scratch.0,
    )?;
    let file = scratch.0.join("item_train_interactions.parquet");
    let mut train = vec![0u64; n_items];
    for r in wander_engine::read_item_counts(&file)? {
        let slot = train.get_mut(r.item as usize).ok_or_else(|| {
            crate::PipelineError::msg(format!(
                "{}: item {} is not in the catalogue of {n_items} items",
                file.display(),
                r.item
            ))
        })?;
        *slot = r.n;
    }
    let file = scratch.0.join("co_consumption.parquet");
    let rows = wander_engine::read_co_consumption(&file)?;
    let mut pairs = HashMap::with_capacity(rows.len());
    for r in rows {
        if r.a as usize >= n_items || r.b as usize >= n_items {
            bail!(
                "{}: pair ({}, {}) names an item outside the catalogue of {n_items} items",
                file.display(),
                r.a,
                r.b
            );
        }
        pairs.insert((r.a, r.b), r.n as f64);
    }
    Ok((train, pairs, mining(summary)))
}

//! `wander aggregate`: the log aggregations as DataFusion plans, embedded or on Ballista.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::RecordBatch;
use arrow_array::UInt32Array;
use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::FeedbackSignal;
use wander_engine::sql;
use wander_engine::Embedded;
use wander_engine::Engine;
use wander_engine::Inputs;
use wander_explore::feedback;

use crate::artifacts::open;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// What `wander aggregate` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct AggregateArgs {
    /// `embedded` or `ballista://HOST:PORT` (default: `engine.url`).
    pub engine: Option<String>,
    /// Prepared events (file or folder of parts) instead of the run's ingested log.
    pub events: Option<PathBuf>,
    /// Item-to-cluster table for `events`.
    pub clusters: Option<PathBuf>,
    /// Also run the in-memory miners and require identical results.
    pub check: bool,
    /// Print the queries instead of running them.
    pub print_sql: bool,
    /// Redo the stage.
    pub force: bool,
}

fn signal(ctx: &StageContext) -> crate::Result<sql::Signal> {
    Ok(match ctx.config.feedback.signal {
        FeedbackSignal::Positive => sql::Signal::Positive,
        FeedbackSignal::Value => {
            sql::Signal::Value(format!("feedback_{}", ctx.config.data.feedback))
        }
        // Its per-event values are fractions whose per-user sums an engine may add in
        // another order than the in-memory miner, so the two could differ in the last bit.
        FeedbackSignal::Mixed => bail!(
            "config: feedback.signal = \"mixed\" is not supported by `wander aggregate` (positive or value are); `wander feedback` computes mixed labels in memory"
        ),
    })
}

fn engine(ctx: &StageContext, spec: Option<&str>) -> crate::Result<Engine> {
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

fn parquet_columns(path: &Path) -> crate::Result<Vec<String>> {
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

fn parquet_files(path: &Path) -> crate::Result<Vec<PathBuf>> {
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
fn check_events(path: &Path, signal: &sql::Signal) -> crate::Result<()> {
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

fn write_clusters(path: &Path, assign: &[u32]) -> crate::Result<()> {
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

/// The in-memory miners' results in the engine's row form, for `--check`.
fn in_memory(
    ds: &wander_data::Dataset,
    assign: &[u32],
    signal: &sql::Signal,
    column: Option<usize>,
    window: usize,
) -> (
    Vec<wander_engine::TransitionRow>,
    Vec<wander_engine::LabelPartRow>,
    Vec<wander_engine::PairCountRow>,
) {
    use wander_data::Split;
    let splits = [Split::Train, Split::Valid, Split::Test];
    let mined = wander_explore::transitions::mine(ds, assign);
    let mut transitions = Vec::new();
    for split in splits {
        for ((c1, c2), nexts) in wander_explore::transitions::counts(&mined, split) {
            for (next, n) in nexts {
                transitions.push(wander_engine::TransitionRow {
                    split: split as u8,
                    c1,
                    c2,
                    next,
                    n: u64::from(n),
                });
            }
        }
    }
    transitions.sort_unstable();
    let events = feedback::events(ds, assign, column.unwrap_or(usize::MAX));
    // The engine's signal, read the same way in memory.
    let signal = match signal {
        sql::Signal::Positive => feedback::EventSignal::Positive,
        sql::Signal::Value(_) => feedback::EventSignal::Value,
    };
    let mut parts = Vec::new();
    for split in splits {
        for p in feedback::label_parts(&events, split, &signal) {
            parts.push(wander_engine::LabelPartRow {
                split: split as u8,
                c1: p.c1,
                c2: p.c2,
                next: p.next,
                s: p.s,
                n: u64::from(p.n),
                users: u64::from(p.users),
            });
        }
    }
    let mut pairs: Vec<wander_engine::PairCountRow> =
        wander_taxonomy::behaviour::co_consumption(ds, window)
            .into_iter()
            .map(|((a, b), n)| wander_engine::PairCountRow { a, b, n: n as u64 })
            .collect();
    pairs.sort_unstable();
    (transitions, parts, pairs)
}

/// First difference between two sorted result sets, for the error message.
fn first_difference<T: PartialEq + std::fmt::Debug>(engine: &[T], memory: &[T]) -> Option<String> {
    if engine == memory {
        return None;
    }
    let k = engine
        .iter()
        .zip(memory)
        .position(|(a, b)| a != b)
        .unwrap_or(engine.len().min(memory.len()));
    Some(format!(
        "{} rows from the engine, {} in memory; first difference at row {k}: engine {:?}, in memory {:?}",
        engine.len(),
        memory.len(),
        engine.get(k),
        memory.get(k)
    ))
}

/// `wander aggregate`.
pub fn aggregate_stage(ctx: &StageContext, args: &AggregateArgs) -> crate::Result<Summary> {
    let signal = signal(ctx)?;
    let window = ctx.config.taxonomy.window;
    let queries = sql::all(&signal, window);
    if args.print_sql {
        let map: serde_json::Map<String, Value> = queries
            .iter()
            .map(|(n, q)| (n.to_string(), Value::String(q.clone())))
            .collect();
        return Ok(Summary::new(StageId::Aggregate, Value::Object(map)));
    }
    let engine = engine(ctx, args.engine.as_deref())?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let external = match (&args.events, &args.clusters) {
        (Some(e), Some(c)) => Some((e.clone(), c.clone())),
        (None, None) => None,
        _ => bail!("--events and --clusters go together"),
    };
    if external.is_some() && args.check {
        bail!("--check compares with the in-memory miners on the run's ingested log; it needs no --events");
    }
    let mut inputs = BTreeMap::new();
    if let Some((events, clusters)) = &external {
        for f in parquet_files(events)?.into_iter().chain([clusters.clone()]) {
            let sum = wander_core::hash::sha256_file(&f)?;
            inputs.insert(f.display().to_string(), sum);
        }
    } else {
        inputs = manifests(&run, StageId::Aggregate.inputs())?;
    }
    let slice = json!({"engine": engine.name(), "signal": signal_name(&signal), "window": window, "check": args.check, "memory_limit_mb": ctx.config.engine.memory_limit_mb, "partitions": ctx.config.engine.partitions});
    let outcome = run.run_stage(
        StageId::Aggregate.folder(),
        slice,
        inputs,
        args.force,
        |w| -> crate::Result<Value> {
            let out_dir = w
                .path("transitions.parquet")?
                .parent()
                .expect("inside the stage")
                .to_path_buf();
            let (table, loaded) = match &external {
                Some((events, clusters)) => (
                    Inputs {
                        events: events.clone(),
                        clusters: clusters.clone(),
                    },
                    None,
                ),
                None => {
                    // The engine reads the ingested log's files directly.
                    let ingest = run.read(StageId::Ingest.folder())?;
                    let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
                    let clusters = w.path("clusters.parquet")?;
                    write_clusters(&clusters, tax.planner_assign())?;
                    (
                        Inputs {
                            events: ingest.path(wander_data::INTERACTIONS_FILE)?,
                            clusters,
                        },
                        Some((ingest, tax)),
                    )
                }
            };
            check_events(&table.events, &signal)?;
            let summary = wander_engine::run(&engine, &table, &queries, &out_dir)?;
            let mut out = crate::summaries::AggregateSummary {
                run: summary,
                matches_in_memory: None,
                compared_rows: None,
                inputs: crate::summaries::AggregateInputs {
                    events: table.events.clone(),
                    clusters: table.clusters.clone(),
                },
            };
            if args.check {
                let (ingest, tax) = loaded.expect("run-dir mode");
                let ds = wander_data::read_dataset(&ingest)?;
                let column = ds
                    .feedback_columns
                    .iter()
                    .position(|c| *c == ctx.config.data.feedback);
                let (t, p, c) = in_memory(&ds, tax.planner_assign(), &signal, column, window);
                let checks = [
                    (
                        "transitions",
                        first_difference(
                            &wander_engine::read_transitions(&out_dir.join("transitions.parquet"))?,
                            &t,
                        ),
                    ),
                    (
                        "label_parts",
                        first_difference(
                            &wander_engine::read_label_parts(&out_dir.join("label_parts.parquet"))?,
                            &p,
                        ),
                    ),
                    (
                        "co_consumption",
                        first_difference(
                            &wander_engine::read_co_consumption(
                                &out_dir.join("co_consumption.parquet"),
                            )?,
                            &c,
                        ),
                    ),
                ];
                for (name, diff) in &checks {
                    if let Some(d) = diff {
                        bail!(
                            "{name} differs between {} and the in-memory miner: {d}",
                            engine.name()
                        );
                    }
                }
                out.matches_in_memory = Some(true);
                out.compared_rows = Some(BTreeMap::from([
                    ("co_consumption".to_string(), c.len()),
                    ("label_parts".to_string(), p.len()),
                    ("transitions".to_string(), t.len()),
                ]));
            }
            crate::summaries::record(&out)
        },
    )?;
    Ok(report(StageId::Aggregate, &outcome))
}

fn signal_name(s: &sql::Signal) -> String {
    match s {
        sql::Signal::Positive => "positive".into(),
        sql::Signal::Value(c) => format!("value:{c}"),
    }
}

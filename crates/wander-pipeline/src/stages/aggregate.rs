//! `wander aggregate`: the log aggregations as DataFusion plans, embedded or on Ballista.

use serde_json::json;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use wander_core::artifact::RunDir;
use wander_engine::sql;
use wander_engine::Inputs;
use wander_explore::feedback;

use super::log_engine::{check_events, engine, parquet_files, signal, write_clusters};
use crate::artifacts::open;
use crate::common::manifests;
use crate::common::report;
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
    let signal = signal(ctx, "`wander aggregate`")?;
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

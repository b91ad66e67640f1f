//! Random small logs written both as a `wander_data::Dataset` (for the in-memory miners) and
//! as the engine's Parquet tables.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, UInt32Array, UInt64Array, UInt8Array,
};
use datafusion::parquet::arrow::ArrowWriter;
use wander_core::rng::Rng;
use wander_data::{Dataset, Interactions, Item, Split};
use wander_engine::{LabelPartRow, PairCountRow, TransitionRow};

/// A random log: `users` users with up to `max_len` interactions over `items` items in
/// `clusters` clusters; ratings are integers 1..5 (positive when >= 4), `watch` is fractional
/// with some NaN.
pub struct Log {
    pub ds: Dataset,
    pub assign: Vec<u32>,
}

pub fn random_log(seed: u64, users: usize, items: usize, clusters: u32, max_len: usize) -> Log {
    let mut rng = Rng::new(seed);
    let assign: Vec<u32> = (0..items)
        .map(|_| rng.below(clusters as usize) as u32)
        .collect();
    let mut it = Interactions::default();
    let (mut rating, mut watch) = (Vec::new(), Vec::new());
    for u in 0..users as u32 {
        let len = rng.below(max_len + 1);
        // A user favours a few items so clusters repeat, as in real logs.
        let favourites: Vec<u32> = (0..3).map(|_| rng.below(items) as u32).collect();
        for t in 0..len {
            let item = if rng.next_f64() < 0.4 {
                favourites[rng.below(3)]
            } else {
                rng.below(items) as u32
            };
            let r = 1.0 + rng.below(5) as f64;
            it.user.push(u);
            it.item.push(item);
            it.timestamp.push(t as i64 / 2);
            it.positive.push(r >= 4.0);
            let split = match rng.below(10) {
                0..=6 => Split::Train,
                7 => Split::Valid,
                _ => Split::Test,
            };
            it.split.push(split);
            it.loo_split.push(split);
            rating.push(r);
            watch.push(if rng.below(20) == 0 {
                f64::NAN
            } else {
                rng.next_f64() * 1.2
            });
        }
    }
    it.feedback = vec![rating, watch];
    let ds = Dataset {
        users: (0..users).map(|u| format!("u{u}")).collect(),
        items: (0..items)
            .map(|i| Item {
                id: format!("i{i}"),
                ..Default::default()
            })
            .collect(),
        feedback_columns: vec!["rating".into(), "watch".into()],
        interactions: it,
    };
    Log { ds, assign }
}

fn write(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Writes `events/part-*.parquet` (in `parts` row ranges) and `clusters.parquet` under `dir`.
pub fn write_tables(log: &Log, dir: &Path, parts: usize) {
    let it = &log.ds.interactions;
    let events = dir.join("events");
    std::fs::create_dir_all(&events).unwrap();
    let n = it.len();
    let step = n.div_ceil(parts.max(1)).max(1);
    for (p, start) in (0..n.max(1)).step_by(step).enumerate() {
        let end = (start + step).min(n);
        let r = start..end;
        write(
            &events.join(format!("part-{p:03}.parquet")),
            vec![
                (
                    "user",
                    Arc::new(UInt32Array::from(it.user[r.clone()].to_vec())) as ArrayRef,
                ),
                (
                    "item",
                    Arc::new(UInt32Array::from(it.item[r.clone()].to_vec())),
                ),
                (
                    "seq",
                    Arc::new(UInt64Array::from_iter_values(r.clone().map(|k| k as u64))),
                ),
                (
                    "positive",
                    Arc::new(BooleanArray::from(it.positive[r.clone()].to_vec())),
                ),
                (
                    "split",
                    Arc::new(UInt8Array::from_iter_values(
                        it.split[r.clone()].iter().map(|s| *s as u8),
                    )),
                ),
                (
                    "feedback_rating",
                    Arc::new(Float64Array::from(it.feedback[0][r.clone()].to_vec())),
                ),
                (
                    "feedback_watch",
                    Arc::new(Float64Array::from(it.feedback[1][r].to_vec())),
                ),
            ],
        );
    }
    write(
        &dir.join("clusters.parquet"),
        vec![
            (
                "item",
                Arc::new(UInt32Array::from_iter_values(0..log.assign.len() as u32)) as ArrayRef,
            ),
            ("cluster", Arc::new(UInt32Array::from(log.assign.clone()))),
        ],
    );
}

/// The in-memory miners' results in the engine's row form.
pub fn in_memory(
    log: &Log,
    signal: wander_explore::feedback::EventSignal,
    column: usize,
    window: usize,
) -> (Vec<TransitionRow>, Vec<LabelPartRow>, Vec<PairCountRow>) {
    let splits = [Split::Train, Split::Valid, Split::Test];
    let mined = wander_explore::transitions::mine(&log.ds, &log.assign);
    let mut transitions = Vec::new();
    for split in splits {
        for ((c1, c2), nexts) in wander_explore::transitions::counts(&mined, split) {
            for (next, n) in nexts {
                transitions.push(TransitionRow {
                    split: split as u8,
                    c1,
                    c2,
                    next,
                    n: n.into(),
                });
            }
        }
    }
    transitions.sort_unstable();
    let events = wander_explore::feedback::events(&log.ds, &log.assign, column);
    let mut parts = Vec::new();
    for split in splits {
        for p in wander_explore::feedback::label_parts(&events, split, &signal) {
            parts.push(LabelPartRow {
                split: split as u8,
                c1: p.c1,
                c2: p.c2,
                next: p.next,
                s: p.s,
                n: p.n.into(),
                users: p.users.into(),
            });
        }
    }
    let mut pairs: Vec<PairCountRow> = wander_taxonomy::behaviour::co_consumption(&log.ds, window)
        .into_iter()
        .map(|((a, b), n)| PairCountRow { a, b, n: n as u64 })
        .collect();
    pairs.sort_unstable();
    (transitions, parts, pairs)
}

/// Reads the three result files of a run.
pub fn read_outputs(dir: &Path) -> (Vec<TransitionRow>, Vec<LabelPartRow>, Vec<PairCountRow>) {
    (
        wander_engine::read_transitions(&dir.join("transitions.parquet")).unwrap(),
        wander_engine::read_label_parts(&dir.join("label_parts.parquet")).unwrap(),
        wander_engine::read_co_consumption(&dir.join("co_consumption.parquet")).unwrap(),
    )
}

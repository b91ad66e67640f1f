//! The SQL plans on the embedded engine give exactly the in-memory miners' rows.

use crate::common::{in_memory, random_log, read_outputs, write_tables};
use wander_engine::{sql, Embedded, Engine, Inputs};
use wander_explore::feedback::EventSignal;

fn embedded(partitions: usize) -> Engine {
    Engine::Embedded(Embedded {
        memory_limit: 256 << 20,
        partitions,
        spill_dir: None,
    })
}

fn check(
    seed: u64,
    users: usize,
    items: usize,
    clusters: u32,
    max_len: usize,
    parts: usize,
    partitions: usize,
) {
    let log = random_log(seed, users, items, clusters, max_len);
    let dir = tempfile::tempdir().unwrap();
    write_tables(&log, dir.path(), parts);
    let inputs = Inputs {
        events: dir.path().join("events"),
        clusters: dir.path().join("clusters.parquet"),
    };
    for (signal, sql_signal, column) in [
        (EventSignal::Positive, sql::Signal::Positive, usize::MAX),
        (
            EventSignal::Value,
            sql::Signal::Value("feedback_rating".into()),
            0,
        ),
    ] {
        let window = 1 + (seed as usize % 4);
        let out = dir.path().join(format!("out-{column}"));
        let summary = wander_engine::run(
            &embedded(partitions),
            &inputs,
            &sql::all(&sql_signal, window),
            &out,
        )
        .unwrap();
        assert_eq!(summary.events, log.ds.interactions.len() as u64);
        let (t, p, c) = read_outputs(&out);
        let (mt, mp, mc) = in_memory(&log, signal, column, window);
        assert!(
            !mt.is_empty() && !mp.is_empty() && !mc.is_empty(),
            "seed {seed}: a test log must exercise every query"
        );
        assert_eq!(t, mt, "transitions, seed {seed}");
        assert_eq!(p, mp, "label parts, seed {seed}, {signal:?}");
        assert_eq!(c, mc, "co-consumption, seed {seed}, window {window}");
    }
}

#[test]
fn same_rows_as_the_in_memory_miners() {
    for seed in 0..6 {
        check(
            seed,
            40,
            30,
            5,
            60,
            1 + seed as usize % 3,
            1 + seed as usize % 4,
        );
    }
}

#[test]
fn many_clusters_and_long_sequences() {
    check(11, 25, 400, 60, 400, 4, 2);
}

/// The per-engagement queries that `wander transitions` and `wander feedback` read with
/// `engine.log_stages = "engine"`: the same transitions, in the same order, as the in-memory
/// miner, and the feedback stage's event counts.
#[test]
fn transition_events_and_feedback_counts_match_in_memory() {
    for seed in 0..4u64 {
        let log = random_log(seed, 50, 40, 5 + seed as u32, 70);
        let dir = tempfile::tempdir().unwrap();
        write_tables(&log, dir.path(), 1 + seed as usize % 3);
        let inputs = Inputs {
            events: dir.path().join("events"),
            clusters: dir.path().join("clusters.parquet"),
        };
        let out = dir.path().join("out");
        wander_engine::run(
            &embedded(1 + seed as usize % 3),
            &inputs,
            &[
                ("transition_events", sql::transition_events()),
                ("feedback_counts", sql::feedback_counts()),
            ],
            &out,
        )
        .unwrap();
        let rows =
            wander_engine::read_transition_events(&out.join("transition_events.parquet")).unwrap();
        let from_engine: Vec<(u32, u32, u32, u32, u8)> = rows
            .iter()
            .map(|r| (r.user, r.c1, r.c2, r.next, r.split))
            .collect();
        let in_memory: Vec<(u32, u32, u32, u32, u8)> =
            wander_explore::transitions::mine(&log.ds, &log.assign)
                .iter()
                .map(|t| (t.user, t.c1, t.c2, t.next, t.split as u8))
                .collect();
        assert!(in_memory.len() > 20, "seed {seed}: too few transitions");
        assert_eq!(from_engine, in_memory, "seed {seed}");
        let counts =
            wander_engine::read_feedback_counts(&out.join("feedback_counts.parquet")).unwrap();
        let events = wander_explore::feedback::events(&log.ds, &log.assign, usize::MAX);
        let mut expected = Vec::new();
        for split in 0..3u8 {
            let of_split: Vec<_> = events.iter().filter(|e| e.split as u8 == split).collect();
            if !of_split.is_empty() {
                expected.push(wander_engine::FeedbackCountRow {
                    split,
                    events: of_split.len() as u64,
                    positive: of_split.iter().filter(|e| e.positive).count() as u64,
                });
            }
        }
        assert!(expected.len() >= 2, "seed {seed}: periods");
        assert_eq!(counts, expected, "seed {seed}");
    }
}

/// What the taxonomy reads of the log, on the events table alone (no clusters yet): each
/// item's training interactions and the co-consumption counts, as in memory.
#[test]
fn taxonomy_usage_on_the_events_alone_matches_in_memory() {
    let log = random_log(5, 45, 35, 4, 60);
    let dir = tempfile::tempdir().unwrap();
    write_tables(&log, dir.path(), 2);
    let out = dir.path().join("out");
    wander_engine::run_on_events(
        &embedded(2),
        &dir.path().join("events"),
        &[
            ("item_train_interactions", sql::item_train_interactions()),
            ("co_consumption", sql::co_consumption(3)),
        ],
        &out,
    )
    .unwrap();
    let counts =
        wander_engine::read_item_counts(&out.join("item_train_interactions.parquet")).unwrap();
    let mut dense = vec![0u64; log.ds.items.len()];
    for r in &counts {
        dense[r.item as usize] = r.n;
    }
    assert!(counts.iter().all(|r| r.n > 0));
    assert_eq!(dense, wander_taxonomy::train_interactions(&log.ds));
    let pairs = wander_engine::read_co_consumption(&out.join("co_consumption.parquet")).unwrap();
    let (_, _, expected) = crate::common::in_memory(
        &log,
        wander_explore::feedback::EventSignal::Positive,
        usize::MAX,
        3,
    );
    assert!(!pairs.is_empty());
    assert_eq!(pairs, expected);
}

#[test]
fn labels_from_engine_parts_equal_in_memory_labels() {
    let log = random_log(7, 60, 40, 6, 80);
    let dir = tempfile::tempdir().unwrap();
    write_tables(&log, dir.path(), 2);
    let inputs = Inputs {
        events: dir.path().join("events"),
        clusters: dir.path().join("clusters.parquet"),
    };
    let out = dir.path().join("out");
    wander_engine::run(
        &embedded(2),
        &inputs,
        &[("label_parts", sql::label_parts(&sql::Signal::Positive))],
        &out,
    )
    .unwrap();
    let rows = wander_engine::read_label_parts(&out.join("label_parts.parquet")).unwrap();
    let events = wander_explore::feedback::events(&log.ds, &log.assign, usize::MAX);
    for normalize in [
        wander_explore::feedback::Normalize::Raw,
        wander_explore::feedback::Normalize::Relative,
        wander_explore::feedback::Normalize::Percentile,
    ] {
        let cfg = wander_explore::feedback::LabelConfig {
            signal: wander_explore::feedback::Signal::Positive,
            value_weight: 0.5,
            normalize,
            min_users: 2,
            round: 0.0,
            shrinkage: 1.0,
        };
        let split = wander_data::Split::Train;
        let mut parts: Vec<wander_explore::feedback::LabelPart> = rows
            .iter()
            .filter(|r| r.split == split as u8)
            .map(|r| wander_explore::feedback::LabelPart {
                c1: r.c1,
                c2: r.c2,
                next: r.next,
                s: r.s,
                n: r.n as u32,
                users: r.users as u32,
            })
            .collect();
        wander_explore::feedback::sort_parts(&mut parts);
        let from_engine = wander_explore::feedback::labels_from_parts(&parts, &cfg, 6).unwrap();
        let in_memory = wander_explore::feedback::labels(&events, split, &cfg, 6).unwrap();
        assert!(!in_memory.is_empty());
        assert_eq!(from_engine, in_memory, "{normalize:?}");
    }
}

#[test]
fn missing_input_and_missing_column_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = Inputs {
        events: dir.path().join("nope"),
        clusters: dir.path().join("clusters.parquet"),
    };
    let e = wander_engine::run(
        &embedded(1),
        &inputs,
        &sql::all(&sql::Signal::Positive, 2),
        dir.path(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let log = random_log(1, 5, 5, 2, 10);
    write_tables(&log, dir.path(), 1);
    let inputs = Inputs {
        events: dir.path().join("events"),
        clusters: dir.path().join("clusters.parquet"),
    };
    let e = wander_engine::run(
        &embedded(1),
        &inputs,
        &[(
            "label_parts",
            sql::label_parts(&sql::Signal::Value("feedback_nope".into())),
        )],
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("label_parts") && e.to_string().contains("feedback_nope"),
        "{e}"
    );
}

//! Loader robustness and Parquet round trips.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use wander_core::artifact::RunDir;
use wander_core::config::{Config, DataFormat, OnError};

fn config(format: DataFormat) -> wander_core::config::DataConfig {
    let mut c = Config::default_config().data;
    c.format = format;
    c
}

fn write_ml100k(dir: &std::path::Path, data: &[u8]) {
    let flags = ["0"; 19].join("|");
    std::fs::write(
        dir.join("u.item"),
        format!("1|A (1990)|x||u|{flags}\n2|B (1991)|x||u|{flags}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("u.data"), data).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(wander_core::fuzz_cases(64)))]

    /// Arbitrary bytes in the interactions file: an error or a dataset, never a panic.
    #[test]
    fn ml100k_loader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        write_ml100k(dir.path(), &data);
        for on_error in [OnError::Fail, OnError::Skip] {
            let mut c = config(DataFormat::Movielens100k);
            c.on_error = on_error;
            let _ = wander_data::load(&c, dir.path());
        }
    }

    /// Well-formed random rows always load, with the right count and positives.
    #[test]
    fn ml100k_loader_accepts_valid_rows(rows in proptest::collection::vec((1u32..50, 1u32..3, 1u32..6, 0i64..1_000_000), 1..100)) {
        let dir = tempfile::tempdir().unwrap();
        let text: String = rows.iter().map(|(u, i, r, t)| format!("{u}\t{i}\t{r}\t{t}\n")).collect();
        write_ml100k(dir.path(), text.as_bytes());
        let loaded = wander_data::load(&config(DataFormat::Movielens100k), dir.path()).unwrap();
        let stats = loaded.dataset.stats();
        prop_assert_eq!(stats.interactions, rows.len());
        prop_assert_eq!(stats.positives, rows.iter().filter(|r| r.2 >= 4).count());
    }

    /// Arbitrary CSV text in the generic layout: never a panic.
    #[test]
    fn generic_csv_loader_never_panics(items in "\\PC{0,200}", inter in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("items.csv"), format!("item_id,title\n{items}")).unwrap();
        std::fs::write(dir.path().join("i.csv"), format!("user_id,item_id,timestamp,rating\n{inter}")).unwrap();
        let mut c = config(DataFormat::Generic);
        c.items = "items.csv".into();
        c.interactions = "i.csv".into();
        let _ = wander_data::load(&c, dir.path());
    }

    /// RecBole atomic files: a typed header, then arbitrary bytes; or bytes alone.
    #[test]
    fn recbole_loader_never_panics(
        inter in proptest::collection::vec(any::<u8>(), 0..300),
        item in proptest::collection::vec(any::<u8>(), 0..300),
        typed_header in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (hi, ht) = if typed_header {
            ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n", "item_id:token\tmovie_title:token_seq\n")
        } else {
            ("", "")
        };
        std::fs::write(dir.path().join("x.inter"), [hi.as_bytes(), &inter].concat()).unwrap();
        std::fs::write(dir.path().join("x.item"), [ht.as_bytes(), &item].concat()).unwrap();
        for on_error in [OnError::Fail, OnError::Skip] {
            let mut c = config(DataFormat::Recbole);
            c.on_error = on_error;
            let _ = wander_data::load(&c, dir.path());
        }
    }

    /// MovieLens latest-small: arbitrary bytes after the real headers.
    #[test]
    fn movielens_latest_loader_never_panics(
        ratings in proptest::collection::vec(any::<u8>(), 0..300),
        movies in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ratings.csv"), [b"userId,movieId,rating,timestamp\n".as_slice(), &ratings].concat()).unwrap();
        std::fs::write(dir.path().join("movies.csv"), [b"movieId,title,genres\n1,A (1990),Drama\n".as_slice(), &movies].concat()).unwrap();
        for on_error in [OnError::Fail, OnError::Skip] {
            let mut c = config(DataFormat::MovielensLatest);
            c.on_error = on_error;
            let _ = wander_data::load(&c, dir.path());
        }
    }

    /// A valid Parquet interactions file with one byte changed or the tail cut off, or
    /// arbitrary bytes named .parquet: an error or a dataset, never a panic.
    #[test]
    fn generic_parquet_loader_never_panics(
        position in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
        noise in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("items.csv"), "item_id,title\na,Alpha\nb,Beta\n").unwrap();
        let valid = small_parquet();
        let i = position.index(valid.len());
        let mangled = if cut {
            valid[..i].to_vec()
        } else {
            let mut v = valid.clone();
            v[i] = byte;
            v
        };
        let mut c = config(DataFormat::Generic);
        c.items = "items.csv".into();
        c.interactions = "log.parquet".into();
        for bytes in [mangled, noise] {
            std::fs::write(dir.path().join("log.parquet"), bytes).unwrap();
            let _ = wander_data::load(&c, dir.path());
        }
    }
}

/// A small valid Parquet interactions file (user_id, item_id, timestamp, rating).
fn small_parquet() -> Vec<u8> {
    parquet_log("rating", Arc::new(Float64Array::from(vec![5.0, 3.0, 4.0])))
}

/// Three interactions of users u1, u2 on items a, b as Parquet, with one feedback column.
fn parquet_log(feedback: &str, values: ArrayRef) -> Vec<u8> {
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1", "u2", "u1"])),
        ),
        ("item_id", Arc::new(StringArray::from(vec!["a", "b", "b"]))),
        ("timestamp", Arc::new(Int64Array::from(vec![10, 20, 30]))),
        (feedback, values),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

#[test]
fn parquet_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..60)
        .map(|k| {
            format!(
                "{}\t{}\t{}\t{}\n",
                k % 7 + 1,
                k % 2 + 1,
                k % 5 + 1,
                1000 + k * 13 % 37
            )
        })
        .collect();
    write_ml100k(dir.path(), rows.as_bytes());
    let loaded = wander_data::load(&config(DataFormat::Movielens100k), dir.path()).unwrap();
    let run = RunDir::open(dir.path().join("run")).unwrap();
    let w = run.begin("ingest").unwrap();
    wander_data::write_dataset(&w, &loaded.dataset).unwrap();
    w.commit(
        serde_json::json!({}),
        BTreeMap::new(),
        serde_json::json!({}),
    )
    .unwrap();
    let back = wander_data::read_dataset(&run.read("ingest").unwrap()).unwrap();
    assert_eq!(back, loaded.dataset);
    // Interactions are grouped by user and ordered by time within a user.
    let it = &back.interactions;
    for k in 1..it.len() {
        assert!((it.user[k - 1], it.timestamp[k - 1]) <= (it.user[k], it.timestamp[k]));
    }
}

#[test]
fn streamed_events_and_catalogue_size_match_the_stored_dataset_across_batches() {
    use wander_data::{Dataset, Interactions, Split};
    // More events than one record batch read (65,536) or written (1,048,576) holds, so the
    // stream and the writer cross boundaries.
    let n = 1_100_001usize;
    let splits = [Split::Train, Split::Valid, Split::Test];
    let it = Interactions {
        user: (0..n).map(|k| (k / 40) as u32).collect(),
        item: (0..n).map(|k| (k * 7 % 301) as u32).collect(),
        timestamp: (0..n).map(|k| k as i64).collect(),
        feedback: vec![(0..n).map(|k| k as f64 * 0.5).collect()],
        positive: (0..n).map(|k| k % 3 != 0).collect(),
        split: (0..n).map(|k| splits[k % 3]).collect(),
        loo_split: (0..n).map(|k| splits[k * 5 % 3]).collect(),
    };
    let ds = Dataset {
        users: (0..n.div_ceil(40)).map(|u| format!("u{u}")).collect(),
        items: numbered_items(301),
        feedback_columns: vec!["rating".into()],
        interactions: it,
    };
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path().join("run")).unwrap();
    let w = run.begin("ingest").unwrap();
    wander_data::write_dataset(&w, &ds).unwrap();
    w.commit(
        serde_json::json!({}),
        BTreeMap::new(),
        serde_json::json!({}),
    )
    .unwrap();
    let stage = run.read("ingest").unwrap();
    assert_eq!(
        wander_data::read_dataset(&stage).unwrap(),
        ds,
        "written batch by batch"
    );
    let size = wander_data::catalogue_size(&stage).unwrap();
    assert_eq!((size.users, size.items), (ds.users.len(), 301));
    let mut seen = Vec::new();
    let visited = wander_data::for_each_event(&stage, |e| seen.push(e)).unwrap();
    assert_eq!(visited as usize, n);
    assert_eq!(seen.len(), n);
    let it = &ds.interactions;
    for (k, e) in seen.iter().enumerate() {
        assert_eq!(
            (
                e.user,
                e.item,
                e.timestamp,
                e.positive,
                e.split,
                e.loo_split
            ),
            (
                it.user[k],
                it.item[k],
                it.timestamp[k],
                it.positive[k],
                it.split[k],
                it.loo_split[k]
            ),
            "event {k}"
        );
    }
    assert_eq!(wander_data::feedback_columns(&stage).unwrap(), ["rating"]);
    let mut values = Vec::new();
    wander_data::for_each_valued_event(&stage, "rating", |e, v| values.push((e.user, v))).unwrap();
    let expected: Vec<(u32, f64)> = (0..n).map(|k| (it.user[k], it.feedback[0][k])).collect();
    assert_eq!(values, expected);
    let err = wander_data::for_each_valued_event(&stage, "watch", |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("feedback_watch") && err.contains("interactions.parquet"),
        "{err}"
    );
    // An event outside the catalogue is refused before it is visited, naming file and row.
    let mut short = ds.clone();
    short.items.truncate(294);
    let first_outside = ds.interactions.item.iter().position(|&i| i == 294).unwrap();
    let w = run.begin("short").unwrap();
    wander_data::write_dataset(&w, &short).unwrap();
    w.commit(
        serde_json::json!({}),
        BTreeMap::new(),
        serde_json::json!({}),
    )
    .unwrap();
    let mut visited = 0;
    let err = wander_data::for_each_event(&run.read("short").unwrap(), |_| visited += 1)
        .unwrap_err()
        .to_string();
    assert_eq!(visited, first_outside);
    assert!(
        err.contains("interactions.parquet")
            && err.contains(&format!("row {} names", first_outside + 1))
            && err.contains("294 items"),
        "{err}"
    );
}

#[test]
fn generic_parquet_interactions_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("items.csv"),
        "item_id,title,tags\na,Alpha,x|y\nb,Beta,\n",
    )
    .unwrap();
    let log = parquet_log(
        "watch_ratio",
        Arc::new(Float64Array::from(vec![0.9, 0.5, 0.8])),
    );
    std::fs::write(dir.path().join("log.parquet"), log).unwrap();
    let mut c = config(DataFormat::Generic);
    c.items = "items.csv".into();
    c.interactions = "log.parquet".into();
    c.positive = "watch_ratio >= 0.8".into();
    c.feedback = "watch_ratio".into();
    let ds = wander_data::load(&c, dir.path()).unwrap().dataset;
    assert_eq!(ds.stats().positives, 2);
    assert_eq!(ds.items[0].tags, vec!["x", "y"]);
    assert_eq!(ds.users, vec!["u1", "u2"]);
}

/// A Parquet log longer than one decoded batch (65,536 rows) loads whole, and a bad value in
/// a later batch is named by its row: the generic loader decodes batch by batch and keeps
/// counting lines across batches.
#[test]
fn generic_parquet_rows_span_batches_and_keep_their_line_numbers() {
    let n = 70_000usize;
    let write = |dir: &std::path::Path, bad_row: Option<usize>| {
        let rating: Vec<f64> = (0..n)
            .map(|k| {
                if Some(k + 1) == bad_row {
                    f64::NAN
                } else {
                    (k % 5 + 1) as f64
                }
            })
            .collect();
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|k| format!("u{}", k % 997)),
                )),
            ),
            (
                "item_id",
                Arc::new(StringArray::from_iter_values((0..n).map(|k| {
                    if k % 3 == 0 {
                        "a"
                    } else {
                        "b"
                    }
                }))),
            ),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ),
            ("rating", Arc::new(Float64Array::from(rating))),
        ];
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let file = std::fs::File::create(dir.join("log.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(dir.join("items.csv"), "item_id,title\na,Alpha\nb,Beta\n").unwrap();
    };
    let mut c = config(DataFormat::Generic);
    c.items = "items.csv".into();
    c.interactions = "log.parquet".into();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), None);
    let ds = wander_data::load(&c, dir.path()).unwrap().dataset;
    assert_eq!(ds.interactions.len(), n);
    assert_eq!(ds.users.len(), 997);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Some(69_001));
    let e = wander_data::load(&c, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("log.parquet") && e.contains("69001") && e.contains("rating"),
        "{e}"
    );
}

/// A boolean feedback column in Parquet reads as 1 and 0, so `liked >= 1` marks the trues.
#[test]
fn generic_parquet_boolean_feedback_reads_as_one_and_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("items.csv"),
        "item_id,title\na,Alpha\nb,Beta\n",
    )
    .unwrap();
    let liked = arrow_array::BooleanArray::from(vec![true, false, true]);
    std::fs::write(
        dir.path().join("log.parquet"),
        parquet_log("liked", Arc::new(liked)),
    )
    .unwrap();
    let mut c = config(DataFormat::Generic);
    c.items = "items.csv".into();
    c.interactions = "log.parquet".into();
    c.positive = "liked >= 1".into();
    c.feedback = "liked".into();
    let ds = wander_data::load(&c, dir.path()).unwrap().dataset;
    assert_eq!(ds.stats().positives, 2);
    let mut values = ds.interactions.feedback[0].clone();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![0.0, 1.0, 1.0]);
}

/// A file whose last row has no newline was possibly cut mid-row: that row is an error
/// naming the line (skipped and counted under `on_error = skip`); the same file with its
/// newline loads whole.
#[test]
fn a_last_row_without_newline_is_refused_as_possibly_cut() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "1\t1\t5\t880000000\n1\t2\t4\t880000001\n2\t1\t3\t8800";
    write_ml100k(dir.path(), rows.as_bytes());
    let err = wander_data::load(&config(DataFormat::Movielens100k), dir.path())
        .err()
        .expect("a cut last row is an error")
        .to_string();
    assert!(
        err.contains("u.data:3: the file ends in this row without a final newline"),
        "{err}"
    );
    let mut skip = config(DataFormat::Movielens100k);
    skip.on_error = OnError::Skip;
    let loaded = wander_data::load(&skip, dir.path()).unwrap();
    assert_eq!(loaded.dataset.stats().interactions, 2);
    assert_eq!(loaded.skips.skipped_rows, 1);
    write_ml100k(dir.path(), format!("{rows}\n").as_bytes());
    let whole = wander_data::load(&config(DataFormat::Movielens100k), dir.path()).unwrap();
    assert_eq!(whole.dataset.stats().interactions, 3);
}

/// Every single byte of a valid Parquet file set to 0xff in turn: each load is a dataset or
/// an error naming the file; some corruptions make the Parquet decoder itself panic, and
/// those come back as errors too.
#[test]
fn every_corrupted_byte_of_a_parquet_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("items.csv"),
        "item_id,title\na,Alpha\nb,Beta\n",
    )
    .unwrap();
    let mut c = config(DataFormat::Generic);
    c.items = "items.csv".into();
    c.interactions = "log.parquet".into();
    let valid = small_parquet();
    let mut decoder_gave_up = 0;
    for i in 0..valid.len() {
        let mut bytes = valid.clone();
        bytes[i] = 0xff;
        std::fs::write(dir.path().join("log.parquet"), bytes).unwrap();
        if let Err(e) = wander_data::load(&c, dir.path()) {
            let e = e.to_string();
            assert!(e.contains("log.parquet"), "{e}");
            decoder_gave_up += e.contains("decoder gave up") as usize;
        }
    }
    eprintln!(
        "{decoder_gave_up} of {} corruptions panicked inside the decoder",
        valid.len()
    );
}

/// Ingests a generic CSV log (`items`, `interactions` texts) into a fresh stage with
/// `sort_memory_bytes` and returns the three files' bytes, the figures and the run count.
fn ingest_bytes(
    items: &str,
    interactions: &str,
    sort_memory_bytes: u64,
) -> (Vec<Vec<u8>>, wander_data::Stats, usize) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("items.csv"), items).unwrap();
    std::fs::write(dir.path().join("log.csv"), interactions).unwrap();
    let mut cfg = config(DataFormat::Generic);
    cfg.interactions = "log.csv".into();
    cfg.items = "items.csv".into();
    cfg.positive = "rating >= 4".into();
    cfg.feedback = "rating".into();
    let run = RunDir::open(dir.path().join("run")).unwrap();
    let w = run.begin("ingest").unwrap();
    let got = wander_data::ingest(&cfg, dir.path(), &w, sort_memory_bytes, &|_| {}).unwrap();
    let files = [
        wander_data::INTERACTIONS_FILE,
        wander_data::ITEMS_FILE,
        wander_data::USERS_FILE,
    ]
    .iter()
    .map(|f| std::fs::read(w.path(f).unwrap()).unwrap())
    .collect();
    assert!(
        !w.path(".sort").unwrap().exists(),
        "the sorted runs are removed"
    );
    // What the in-memory path writes from the same input.
    let loaded = wander_data::load(&cfg, dir.path()).unwrap();
    assert_eq!(got.stats, loaded.dataset.stats());
    (files, got.stats, got.spilled_runs)
}

/// A log text: `rows` of (user, item, rating, watch, timestamp) in the given order.
fn generic_log(rows: &[(String, u32, u32, f64, i64)]) -> String {
    let mut s = String::from("user_id,item_id,rating,watch,timestamp\n");
    for (u, i, r, w, t) in rows {
        s.push_str(&format!("{u},i{i},{r},{w},{t}\n"));
    }
    s
}

fn generic_items(n: u32) -> String {
    let mut s = String::from("item_id,title\n");
    for i in 0..n {
        s.push_str(&format!("i{i},Item {i}\n"));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(wander_core::fuzz_cases(48)))]

    /// Sorting on disk in runs of a few rows writes the same bytes as sorting in memory:
    /// users numbered by their ids (numeric or not), ties of user and time kept in input
    /// order, the temporal cuts and leave-last-out the same.
    #[test]
    fn ingest_sorted_on_disk_writes_the_same_files(
        rows in proptest::collection::vec((0u32..12, 0u32..9, 1u32..6, 0.0f64..1.0, 0i64..40), 1..160),
        numeric in any::<bool>(),
        run_rows in 1u64..50,
    ) {
        let log: Vec<(String, u32, u32, f64, i64)> = rows
            .iter()
            .map(|&(u, i, r, w, t)| {
                let user = if numeric { format!("{}", u * 7 % 12) } else { format!("u{u}") };
                (user, i, r, (w * 8.0).round() / 8.0, 1_600_000_000 + t * 3600)
            })
            .collect();
        let (items, text) = (generic_items(9), generic_log(&log));
        let (memory, stats, runs) = ingest_bytes(&items, &text, u64::MAX);
        prop_assert_eq!(runs, 0);
        // Two feedback columns: 32 bytes a buffered row.
        let (disk, disk_stats, disk_runs) = ingest_bytes(&items, &text, 32 * run_rows);
        let expected = if log.len() < run_rows as usize { 0 } else { log.len().div_ceil(run_rows as usize) };
        prop_assert_eq!(disk_runs, expected);
        prop_assert_eq!(disk_stats, stats);
        prop_assert!(memory == disk, "the files differ");
    }
}

/// Across the interactions file's row groups (1,048,576 rows): 1,100,001 rows sorted on
/// disk in four runs give the same bytes as in memory.
#[test]
fn ingest_sorted_on_disk_across_row_groups() {
    let n = 1_100_001i64;
    let log: Vec<(String, u32, u32, f64, i64)> = (0..n)
        .map(|k| {
            // Users interleaved, times tied within a user, so order and ties both matter.
            let user = (k * 7919) % 30_011;
            (
                format!("{user}"),
                (k % 97) as u32,
                (k % 5 + 1) as u32,
                (k % 4) as f64 * 0.25,
                1_600_000_000 + (k / 3) % 50_000,
            )
        })
        .collect();
    let (items, text) = (generic_items(97), generic_log(&log));
    let (memory, stats, _) = ingest_bytes(&items, &text, u64::MAX);
    let (disk, disk_stats, runs) = ingest_bytes(&items, &text, 32 * 300_000);
    assert_eq!(runs, 4);
    assert_eq!(disk_stats, stats);
    assert_eq!(stats.interactions, n as usize);
    assert!(memory == disk, "the files differ");
}

/// A small dataset: users `u0..`, items `i0..`, the events sorted as a stored log is.
fn small_dataset(
    users: &[&str],
    items: u32,
    mut events: Vec<(u32, u32, i64, bool)>,
) -> wander_data::Dataset {
    use wander_data::{Dataset, Interactions, Split};
    events.sort_by_key(|&(u, _, t, _)| (u, t));
    let n = events.len();
    Dataset {
        users: users.iter().map(|u| u.to_string()).collect(),
        items: numbered_items(items),
        feedback_columns: vec!["rating".into()],
        interactions: Interactions {
            user: events.iter().map(|e| e.0).collect(),
            item: events.iter().map(|e| e.1).collect(),
            timestamp: events.iter().map(|e| e.2).collect(),
            feedback: vec![(0..n).map(|k| k as f64).collect()],
            positive: events.iter().map(|e| e.3).collect(),
            split: (0..n)
                .map(|k| [Split::Train, Split::Valid, Split::Test][k % 3])
                .collect(),
            loo_split: vec![Split::Train; n],
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(wander_core::fuzz_cases(64)))]

    /// The stored base log and a rebased newer window streamed together visit the events of
    /// `concat`, in its order, each marked by its source.
    #[test]
    fn the_concat_stream_visits_concat_in_order(
        base_events in proptest::collection::vec((0u32..4, 0u32..5, 0i64..6, any::<bool>()), 1..40),
        newer_events in proptest::collection::vec((0u32..5, 0u32..6, 3i64..9, any::<bool>()), 0..40),
    ) {
        let base = small_dataset(&["a", "b", "c", "d"], 5, base_events);
        // The newer window names users in another order and adds a user and an item.
        let newer = small_dataset(&["c", "e", "a", "d", "b"], 6, newer_events);
        let newer = wander_data::rebase(&base, newer).dataset;
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let w = run.begin("ingest").unwrap();
        wander_data::write_dataset(&w, &base).unwrap();
        w.commit(serde_json::json!({}), BTreeMap::new(), serde_json::json!({})).unwrap();
        let (all, from_newer) = wander_data::concat(&base, &newer).unwrap();
        let mut seen = Vec::new();
        let n = wander_data::for_each_concat_event(&run.read("ingest").unwrap(), &newer, |e, m| {
            seen.push((e.user, e.item, e.timestamp, e.positive, e.split, m))
        })
        .unwrap();
        prop_assert_eq!(n as usize, all.interactions.len());
        let it = &all.interactions;
        let want: Vec<_> = (0..it.len())
            .map(|k| (it.user[k], it.item[k], it.timestamp[k], it.positive[k], it.split[k], from_newer[k]))
            .collect();
        prop_assert_eq!(seen, want);

        // Joined, split again and written: the bytes of the same in memory.
        let (valid, test) = (0.2, 0.25);
        let mut joined = all.clone();
        joined.interactions.split = wander_data::temporal_split(&joined.interactions.timestamp, valid, test);
        joined.interactions.loo_split = wander_data::leave_last_out(&joined.interactions.user);
        let w = run.begin("joined").unwrap();
        let stats = wander_data::write_concat(&run.read("ingest").unwrap(), &newer, &w, (valid, test)).unwrap();
        let memory = run.begin("memory").unwrap();
        wander_data::write_dataset(&memory, &joined).unwrap();
        prop_assert_eq!(stats, joined.stats());
        for f in [wander_data::INTERACTIONS_FILE, wander_data::ITEMS_FILE, wander_data::USERS_FILE] {
            prop_assert!(
                std::fs::read(w.path(f).unwrap()).unwrap() == std::fs::read(memory.path(f).unwrap()).unwrap(),
                "{} differs", f
            );
        }
    }
}

/// Items `i0..` titled `Item 0..`.
fn numbered_items(n: u32) -> Vec<wander_data::Item> {
    (0..n)
        .map(|i| wander_data::Item {
            id: format!("i{i}"),
            title: format!("Item {i}"),
            ..wander_data::Item::default()
        })
        .collect()
}

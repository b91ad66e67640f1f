//! The input layouts wander reads, all funnelled through one validating builder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wander_core::config::{DataConfig, DataFormat, PositiveRule};

use wander_core::artifact::StageWriter;

use crate::external::{merge_into, Spill};
use crate::parquet_io::{read_parquet_rows, write_catalogue, InteractionsWriter};
use crate::split::{leave_last_out, temporal_split};
use crate::text::{field, parse_f64, parse_timestamp, Delimited, Dialect, Encoding, Policy, Row};
use crate::{DataError, Dataset, Interactions, Item, SkipCounts, Stats};

/// The 19 genres of GroupLens' MovieLens-100K, in `u.item` flag order.
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// What [`load`] read.
#[derive(Debug)]
pub struct Loaded {
    /// The validated dataset.
    pub dataset: Dataset,
    /// Rows skipped in `skip` mode.
    pub skips: SkipCounts,
    /// Every file read, for the manifest's input checksums.
    pub files: Vec<PathBuf>,
}

/// Loads the dataset in folder `root` as `cfg` describes, validates it and splits it.
pub fn load(cfg: &DataConfig, root: &Path) -> Result<Loaded, DataError> {
    let (b, rule) = read(cfg, root, None, None)?;
    let files = b.files.clone();
    let skips = b.policy.skips.clone();
    let dataset = b.finish(&rule, &cfg.feedback, cfg.valid_fraction, cfg.test_fraction)?;
    Ok(Loaded {
        dataset,
        skips,
        files,
    })
}

/// Where [`ingest`] is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IngestPhase {
    /// Reading the interactions: the share of the file read (None when its size is
    /// unknown) and the rows so far.
    Reading {
        /// Share of the interactions file read, in [0, 1].
        fraction: Option<f64>,
        /// Rows read.
        rows: u64,
    },
    /// Sorting the runs on disk: `done` of `runs`.
    SortingRuns {
        /// Runs sorted.
        done: usize,
        /// Runs in all.
        runs: usize,
    },
    /// Merging the runs into the interactions file: `rows` of `total` written.
    Merging {
        /// Rows merged.
        rows: u64,
        /// Rows in all.
        total: u64,
    },
}

/// Rows between two progress reports.
const PROGRESS_ROWS: u64 = 1 << 16;

/// What [`ingest`] wrote.
#[derive(Debug)]
pub struct Ingested {
    /// The stored dataset's figures.
    pub stats: Stats,
    /// Rows skipped in `skip` mode.
    pub skips: SkipCounts,
    /// Every file read.
    pub files: Vec<PathBuf>,
    /// Sorted runs the log went through on disk (0 when it fit in memory).
    pub spilled_runs: usize,
    /// Smallest and largest value of the positive rule's column, for a message when no
    /// interaction is positive.
    pub rule_range: (f64, f64),
}

/// [`load`] and [`crate::write_dataset`] in one pass, holding at most about
/// `sort_memory_bytes` of the log's rows in memory: beyond that, rows go to disk in runs
/// (a scratch folder inside `stage`, removed before returning) that are sorted one at a time
/// and merged into the interactions file. The files are the same bytes either way; a log
/// that fits is sorted in memory as [`load`] does.
///
/// `on_progress` is told where the work is: reading (the share of the interactions file
/// read), then, for a log sorted on disk, each run sorted and the merge's rows.
pub fn ingest(
    cfg: &DataConfig,
    root: &Path,
    stage: &StageWriter,
    sort_memory_bytes: u64,
    on_progress: &dyn Fn(IngestPhase),
) -> Result<Ingested, DataError> {
    let spill = Some((stage.path(".sort")?, sort_memory_bytes));
    let (mut b, rule) = read(cfg, root, spill, Some(on_progress))?;
    let files = b.files.clone();
    let skips = b.policy.skips.clone();
    let (valid, test) = (cfg.valid_fraction, cfg.test_fraction);
    if b.spill.as_ref().is_some_and(|p| p.spill.is_some()) {
        let (stats, rule_range, spilled_runs) =
            b.finish_spilled(&rule, &cfg.feedback, (valid, test), stage, on_progress)?;
        return Ok(Ingested {
            stats,
            skips,
            files,
            spilled_runs,
            rule_range,
        });
    }
    b.spill = None;
    let dataset = b.finish(&rule, &cfg.feedback, valid, test)?;
    crate::write_dataset(stage, &dataset)?;
    let col = dataset
        .feedback_index(&rule.column)
        .expect("checked by finish");
    let rule_range = dataset.interactions.feedback[col]
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    Ok(Ingested {
        stats: dataset.stats(),
        skips,
        files,
        spilled_runs: 0,
        rule_range,
    })
}

/// Parses the positive rule and reads every file into a builder (one that spills past the
/// budget when `spill` names a folder and a byte budget).
fn read<'p>(
    cfg: &DataConfig,
    root: &Path,
    spill: Option<(PathBuf, u64)>,
    on_progress: Option<&'p dyn Fn(IngestPhase)>,
) -> Result<(Builder<'p>, PositiveRule), DataError> {
    let rule = cfg.positive_rule().map_err(|e| DataError::Config {
        key: "data.positive".into(),
        message: e.to_string(),
    })?;
    if !root.is_dir() {
        return Err(DataError::Missing {
            path: root.to_path_buf(),
            hint: "data.path must be a folder".into(),
        });
    }
    let mut b = Builder::new(Policy::new(cfg.on_error), cfg.max_line_bytes);
    b.on_progress = on_progress;
    b.spill = spill.map(|(dir, budget)| SpillPlan {
        dir,
        budget,
        run_rows: usize::MAX,
        spill: None,
    });
    match cfg.format {
        DataFormat::Recbole => load_recbole(&mut b, root)?,
        DataFormat::Movielens100k => load_ml100k(&mut b, root)?,
        DataFormat::MovielensLatest => load_latest(&mut b, root)?,
        DataFormat::Generic => load_generic(&mut b, root, &cfg.interactions, &cfg.items)?,
    }
    Ok((b, rule))
}

/// Where and when the builder spills rows: past `budget` bytes of buffered rows (`run_rows`
/// rows, known once the feedback columns are), into `dir`.
struct SpillPlan {
    dir: PathBuf,
    budget: u64,
    run_rows: usize,
    spill: Option<Spill>,
}

struct Builder<'p> {
    /// Told where reading is, every [`PROGRESS_ROWS`] rows.
    on_progress: Option<&'p dyn Fn(IngestPhase)>,
    policy: Policy,
    max_line_bytes: u64,
    files: Vec<PathBuf>,
    items: Vec<Item>,
    item_index: HashMap<String, u32>,
    users: Vec<String>,
    user_index: HashMap<String, u32>,
    feedback_columns: Vec<String>,
    rows: Vec<(u32, u32, i64)>,
    feedback: Vec<Vec<f64>>,
    /// Rows already written to disk (the input position of `rows[0]`).
    spilled: u64,
    /// Smallest and largest timestamp read.
    time_range: (i64, i64),
    spill: Option<SpillPlan>,
}

impl<'p> Builder<'p> {
    fn new(policy: Policy, max_line_bytes: u64) -> Self {
        Builder {
            on_progress: None,
            policy,
            max_line_bytes,
            files: Vec::new(),
            items: Vec::new(),
            item_index: HashMap::new(),
            users: Vec::new(),
            user_index: HashMap::new(),
            feedback_columns: Vec::new(),
            rows: Vec::new(),
            feedback: Vec::new(),
            spilled: 0,
            time_range: (i64::MAX, i64::MIN),
            spill: None,
        }
    }

    fn open(&mut self, path: &Path, dialect: Dialect) -> Result<Delimited, DataError> {
        self.files.push(path.to_path_buf());
        Delimited::open(path, dialect, self.max_line_bytes)
    }

    fn set_feedback_columns(&mut self, names: Vec<String>) {
        self.feedback = vec![Vec::new(); names.len()];
        if let Some(plan) = &mut self.spill {
            // A buffered row: user, item and timestamp (16 bytes) and its feedback values.
            let row_bytes = 16 + 8 * names.len() as u64;
            plan.run_rows = (plan.budget / row_bytes).max(1) as usize;
        }
        self.feedback_columns = names;
    }

    fn add_item(&mut self, file: &Path, line: u64, item: Item) -> Result<(), DataError> {
        if item.id.trim().is_empty() {
            return Err(DataError::field(
                file,
                line,
                "item_id",
                &item.id,
                "empty item id",
            ));
        }
        if self.item_index.contains_key(&item.id) {
            return Err(DataError::Row {
                file: file.to_path_buf(),
                line,
                message: format!("duplicate item id `{}`", item.id),
                reason: "duplicate item id",
            });
        }
        self.item_index
            .insert(item.id.clone(), self.items.len() as u32);
        self.items.push(item);
        Ok(())
    }

    fn add_interaction(
        &mut self,
        file: &Path,
        line: u64,
        user: &str,
        item: &str,
        ts: i64,
        feedback: &[f64],
    ) -> Result<(), DataError> {
        if user.trim().is_empty() {
            return Err(DataError::field(
                file,
                line,
                "user_id",
                user,
                "empty user id",
            ));
        }
        let Some(&item_idx) = self.item_index.get(item) else {
            return Err(DataError::Row {
                file: file.to_path_buf(),
                line,
                message: format!(
                    "unknown item id `{}` (not in the items file)",
                    item.chars().take(80).collect::<String>()
                ),
                reason: "unknown item",
            });
        };
        let next = self.users.len() as u32;
        let user_idx = *self
            .user_index
            .entry(user.to_string())
            .or_insert_with(|| next);
        if user_idx == next {
            self.users.push(user.to_string());
        }
        self.rows.push((user_idx, item_idx, ts));
        for (col, v) in self.feedback.iter_mut().zip(feedback) {
            col.push(*v);
        }
        self.time_range = (self.time_range.0.min(ts), self.time_range.1.max(ts));
        if self
            .spill
            .as_ref()
            .is_some_and(|p| self.rows.len() >= p.run_rows)
        {
            self.spill_rows()?;
        }
        Ok(())
    }

    /// Writes the buffered rows to disk as one run and empties the buffer (keeping its
    /// allocation for the next run).
    fn spill_rows(&mut self) -> Result<(), DataError> {
        let plan = self.spill.as_mut().expect("a spill plan");
        if plan.spill.is_none() {
            plan.spill = Some(Spill::new(plan.dir.clone(), self.feedback.len())?);
        }
        let spill = plan.spill.as_mut().expect("created above");
        spill.write_buffer(&self.rows, &self.feedback, self.spilled)?;
        self.spilled += self.rows.len() as u64;
        self.rows.clear();
        self.feedback.iter_mut().for_each(Vec::clear);
        Ok(())
    }

    /// Checks a parsed row and applies the error policy.
    fn accept(&mut self, r: Result<(), DataError>) -> Result<(), DataError> {
        self.policy.check(r).map(|_| ())
    }

    /// The dataset's checks before anything is sorted: a catalogue, rows, and the rule's
    /// and the feedback's columns among the feedback columns. Returns the rule's column.
    fn check(&self, rule: &PositiveRule, feedback: &str, rows: u64) -> Result<usize, DataError> {
        if self.items.is_empty() {
            return Err(DataError::Empty {
                file: self.files.first().cloned().unwrap_or_default(),
            });
        }
        if rows == 0 {
            return Err(DataError::Empty {
                file: self.files.last().cloned().unwrap_or_default(),
            });
        }
        let columns = &self.feedback_columns;
        let rule_col = columns
            .iter()
            .position(|c| *c == rule.column)
            .ok_or_else(|| DataError::Config {
                key: "data.positive".into(),
                message: format!(
                    "column `{}` is not a numeric feedback column of the data (found: {})",
                    rule.column,
                    columns.join(", ")
                ),
            })?;
        if !columns.iter().any(|c| c == feedback) {
            return Err(DataError::Config {
                key: "data.feedback".into(),
                message: format!(
                    "column `{feedback}` is not a numeric feedback column of the data (found: {})",
                    columns.join(", ")
                ),
            });
        }
        Ok(rule_col)
    }

    fn finish(
        self,
        rule: &PositiveRule,
        feedback: &str,
        valid: f64,
        test: f64,
    ) -> Result<Dataset, DataError> {
        let rule_col = self.check(rule, feedback, self.rows.len() as u64)?;
        let Builder {
            items,
            users,
            feedback_columns,
            rows,
            feedback: fb,
            ..
        } = self;
        let (remap, sorted_users) = user_numbering(&users);
        drop(users);
        // The log is the memory here: each source column is dropped as soon as its sorted
        // copy exists, so at most one column is held twice (with the order).
        let (mut rows, mut fb) = (rows, fb);
        rows.shrink_to_fit();
        fb.iter_mut().for_each(Vec::shrink_to_fit);
        let mut idx: Vec<usize> = (0..rows.len()).collect();
        idx.sort_by_key(|&i| (remap[rows[i].0 as usize], rows[i].2, i));
        let user = idx.iter().map(|&i| remap[rows[i].0 as usize]).collect();
        let item = idx.iter().map(|&i| rows[i].1).collect();
        let timestamp = idx.iter().map(|&i| rows[i].2).collect();
        drop(rows);
        let feedback = fb
            .into_iter()
            .map(|col| idx.iter().map(|&i| col[i]).collect())
            .collect();
        drop(idx);
        let mut inter = Interactions {
            user,
            item,
            timestamp,
            feedback,
            ..Default::default()
        };
        inter.positive = inter.feedback[rule_col]
            .iter()
            .map(|&v| rule.holds(v))
            .collect();
        inter.split = temporal_split(&inter.timestamp, valid, test);
        inter.loo_split = leave_last_out(&inter.user);
        Ok(Dataset {
            users: sorted_users,
            items,
            feedback_columns,
            interactions: inter,
        })
    }

    /// [`Builder::finish`] and [`crate::write_dataset`] for a log that went to disk: the
    /// last rows join the runs, each run is renumbered and sorted, and the merge writes the
    /// interactions file. Returns the figures, the rule column's range and the run count.
    fn finish_spilled(
        mut self,
        rule: &PositiveRule,
        feedback: &str,
        (valid, test): (f64, f64),
        stage: &StageWriter,
        on_progress: &dyn Fn(IngestPhase),
    ) -> Result<(Stats, (f64, f64), usize), DataError> {
        let rule_col = self.check(rule, feedback, self.spilled + self.rows.len() as u64)?;
        if !self.rows.is_empty() {
            self.spill_rows()?;
        }
        let Builder {
            items,
            users,
            feedback_columns,
            rows,
            feedback: buffer,
            time_range,
            spill,
            ..
        } = self;
        drop((rows, buffer));
        let spill = spill.and_then(|p| p.spill).expect("rows were spilled");
        let (remap, sorted_users) = user_numbering(&users);
        drop(users);
        spill.sort_runs(&remap, &|done, runs| {
            on_progress(IngestPhase::SortingRuns { done, runs })
        })?;
        drop(remap);
        let mut writer = InteractionsWriter::new(stage, &feedback_columns)?;
        let (merged, rule_range) = merge_into(
            &spill,
            &mut writer,
            (rule, rule_col),
            (valid, test),
            time_range,
            items.len(),
            &|rows, total| on_progress(IngestPhase::Merging { rows, total }),
        )?;
        writer.finish()?;
        write_catalogue(stage, &items, &sorted_users)?;
        let runs = spill.runs();
        spill.remove()?;
        let n = merged.interactions;
        let stats = Stats {
            users: sorted_users.len(),
            items: items.len(),
            items_with_interactions: merged.items_seen.iter().filter(|s| **s).count(),
            interactions: n,
            positives: merged.positives,
            positive_rate: merged.positives as f64 / n as f64,
            density: n as f64 / (sorted_users.len() as f64 * items.len() as f64),
            time_min: merged.time_min,
            time_max: merged.time_max,
            temporal_split: merged.temporal_split,
            leave_last_out: merged.leave_last_out,
            feedback_columns,
        };
        Ok((stats, rule_range, runs))
    }
}

/// Dense user ids in the sorted order of the original ids (numeric when all are numbers),
/// so that ids do not depend on row order: `remap[read order] = dense id`, and the original
/// ids by dense id.
fn user_numbering(users: &[String]) -> (Vec<u32>, Vec<String>) {
    let mut order: Vec<u32> = (0..users.len() as u32).collect();
    let numeric: Option<Vec<u64>> = users.iter().map(|u| u.parse::<u64>().ok()).collect();
    match &numeric {
        Some(n) => order.sort_by_key(|&u| (n[u as usize], u)),
        None => order.sort_by(|&a, &b| users[a as usize].cmp(&users[b as usize])),
    }
    let mut remap = vec![0u32; users.len()];
    for (new, &old) in order.iter().enumerate() {
        remap[old as usize] = new as u32;
    }
    let sorted = order.iter().map(|&o| users[o as usize].clone()).collect();
    (remap, sorted)
}

fn find_one(root: &Path, ext: &str) -> Result<PathBuf, DataError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::Core(wander_core::CoreError::io(root, e)))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DataError::Missing {
            path: root.join(format!("*.{ext}")),
            hint: format!("a RecBole dataset folder needs one .{ext} file"),
        }),
        _ => Err(DataError::Config {
            key: "data.path".into(),
            message: format!(
                "{} holds several .{ext} files; keep one dataset per folder",
                root.display()
            ),
        }),
    }
}

const TSV: Dialect = Dialect {
    delimiter: b'\t',
    quoting: false,
    has_header: true,
    encoding: Encoding::Utf8,
};
const CSV: Dialect = Dialect {
    delimiter: b',',
    quoting: true,
    has_header: true,
    encoding: Encoding::Utf8,
};

fn load_recbole(b: &mut Builder, root: &Path) -> Result<(), DataError> {
    let inter_path = find_one(root, "inter")?;
    let item_path = inter_path.with_extension("item");
    let mut items = b.open(&item_path, TSV)?;
    // RecBole headers are `name:type`; the type tells which columns are numeric.
    let typed: Vec<(String, String)> = items.header.iter().map(|h| split_typed(h)).collect();
    items.header = typed.iter().map(|(n, _)| n.clone()).collect();
    let id_col = items.column("item_id")?;
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| typed.iter().position(|(h, _)| h == n))
    };
    let title_col = find(&["movie_title", "title", "name"]);
    let year_col = find(&["release_year", "year"]);
    let genre_col = find(&["class", "genre", "genres", "categories"]);
    let n = typed.len();
    while let Some(row) = items.next_row() {
        let r = row.and_then(|row| {
            let get = |c: Option<usize>| -> Result<String, DataError> {
                c.map(|c| field(&item_path, &row, c, n).map(str::to_string))
                    .unwrap_or(Ok(String::new()))
            };
            let item = Item {
                id: field(&item_path, &row, id_col, n)?.to_string(),
                title: get(title_col)?,
                year: get(year_col)?.trim().parse().ok(),
                genres: get(genre_col)?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            };
            b.add_item(&item_path, row.line, item)
        });
        b.accept(r)?;
    }
    if items.rows_read() == 0 {
        return Err(DataError::Empty { file: item_path });
    }

    let mut inter = b.open(&inter_path, TSV)?;
    let typed: Vec<(String, String)> = inter.header.iter().map(|h| split_typed(h)).collect();
    inter.header = typed.iter().map(|(n, _)| n.clone()).collect();
    let user_col = inter.column("user_id")?;
    let item_col = inter.column("item_id")?;
    let ts_col = inter.column("timestamp")?;
    let fb: Vec<usize> = (0..typed.len())
        .filter(|&i| i != ts_col && typed[i].1 == "float")
        .collect();
    b.set_feedback_columns(fb.iter().map(|&i| typed[i].0.clone()).collect());
    read_interactions(b, &mut inter, user_col, item_col, ts_col, &fb)
}

fn split_typed(h: &str) -> (String, String) {
    match h.split_once(':') {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => (h.to_string(), String::new()),
    }
}

fn read_interactions(
    b: &mut Builder,
    reader: &mut Delimited,
    user_col: usize,
    item_col: usize,
    ts_col: usize,
    fb: &[usize],
) -> Result<(), DataError> {
    let file = reader.file.clone();
    let names: Vec<String> = if reader.header.is_empty() {
        vec![
            "user_id".into(),
            "item_id".into(),
            "rating".into(),
            "timestamp".into(),
        ]
    } else {
        reader.header.clone()
    };
    let n = names.len();
    let mut values = vec![0.0; fb.len()];
    while let Some(row) = reader.next_row() {
        let r = row.and_then(|row: Row| {
            let user = field(&file, &row, user_col, n)?;
            let item = field(&file, &row, item_col, n)?;
            let ts = parse_timestamp(
                &file,
                row.line,
                &names[ts_col],
                field(&file, &row, ts_col, n)?,
            )?;
            for (slot, &c) in values.iter_mut().zip(fb) {
                *slot = parse_f64(&file, row.line, &names[c], field(&file, &row, c, n)?)?;
            }
            b.add_interaction(&file, row.line, user.trim(), item.trim(), ts, &values)
        });
        b.accept(r)?;
        if let Some(report) = b.on_progress {
            if reader.rows_read() % PROGRESS_ROWS == 0 {
                report(IngestPhase::Reading {
                    fraction: reader.read_fraction(),
                    rows: reader.rows_read(),
                });
            }
        }
    }
    if reader.rows_read() == 0 {
        return Err(DataError::Empty { file });
    }
    Ok(())
}

fn load_ml100k(b: &mut Builder, root: &Path) -> Result<(), DataError> {
    let item_path = root.join("u.item");
    let dialect = Dialect {
        delimiter: b'|',
        quoting: false,
        has_header: false,
        encoding: Encoding::Latin1,
    };
    let mut items = b.open(&item_path, dialect)?;
    while let Some(row) = items.next_row() {
        let r = row.and_then(|row| {
            let n = 5 + ML100K_GENRES.len();
            let (title, year) = split_title_year(field(&item_path, &row, 1, n)?);
            let mut genres = Vec::new();
            for (g, name) in ML100K_GENRES.iter().enumerate() {
                match field(&item_path, &row, 5 + g, n)?.trim() {
                    "1" => genres.push(name.to_string()),
                    "0" => {}
                    v => {
                        return Err(DataError::field(
                            &item_path,
                            row.line,
                            &format!("genre flag {name}"),
                            v,
                            "must be 0 or 1",
                        ))
                    }
                }
            }
            let item = Item {
                id: field(&item_path, &row, 0, n)?.trim().to_string(),
                title,
                year,
                genres,
                ..Default::default()
            };
            b.add_item(&item_path, row.line, item)
        });
        b.accept(r)?;
    }
    if items.rows_read() == 0 {
        return Err(DataError::Empty { file: item_path });
    }
    let data_path = root.join("u.data");
    let dialect = Dialect {
        delimiter: b'\t',
        quoting: false,
        has_header: false,
        encoding: Encoding::Utf8,
    };
    let mut inter = b.open(&data_path, dialect)?;
    b.set_feedback_columns(vec!["rating".into()]);
    read_interactions(b, &mut inter, 0, 1, 3, &[2])
}

/// Splits "Toy Story (1995)" into ("Toy Story", Some(1995)).
fn split_title_year(raw: &str) -> (String, Option<i32>) {
    let t = raw.trim();
    if let Some(open) = t.rfind('(') {
        let inner = &t[open + 1..];
        if let Some(y) = inner.strip_suffix(')') {
            if y.len() == 4 {
                if let Ok(year) = y.parse::<i32>() {
                    return (t[..open].trim().to_string(), Some(year));
                }
            }
        }
    }
    (t.to_string(), None)
}

fn load_latest(b: &mut Builder, root: &Path) -> Result<(), DataError> {
    let movies_path = root.join("movies.csv");
    let mut movies = b.open(&movies_path, CSV)?;
    let (id_c, title_c, genres_c) = (
        movies.column("movieId")?,
        movies.column("title")?,
        movies.column("genres")?,
    );
    let n = movies.header.len();
    while let Some(row) = movies.next_row() {
        let r = row.and_then(|row| {
            let (title, year) = split_title_year(field(&movies_path, &row, title_c, n)?);
            let genres = field(&movies_path, &row, genres_c, n)?
                .split('|')
                .filter(|g| !g.is_empty() && *g != "(no genres listed)")
                .map(str::to_string)
                .collect();
            let item = Item {
                id: field(&movies_path, &row, id_c, n)?.trim().to_string(),
                title,
                year,
                genres,
                ..Default::default()
            };
            b.add_item(&movies_path, row.line, item)
        });
        b.accept(r)?;
    }
    if movies.rows_read() == 0 {
        return Err(DataError::Empty { file: movies_path });
    }
    let tags_path = root.join("tags.csv");
    if tags_path.exists() {
        let mut tags = b.open(&tags_path, CSV)?;
        let (m_c, t_c) = (tags.column("movieId")?, tags.column("tag")?);
        let n = tags.header.len();
        let mut counts: HashMap<u32, Vec<(String, usize)>> = HashMap::new();
        while let Some(row) = tags.next_row() {
            let r = row.and_then(|row| {
                let id = field(&tags_path, &row, m_c, n)?.trim();
                let tag = field(&tags_path, &row, t_c, n)?.trim().to_lowercase();
                let &idx = b.item_index.get(id).ok_or_else(|| DataError::Row {
                    file: tags_path.clone(),
                    line: row.line,
                    message: format!("unknown item id `{id}` (not in movies.csv)"),
                    reason: "unknown item",
                })?;
                let list = counts.entry(idx).or_default();
                match list.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, c)) => *c += 1,
                    None => list.push((tag, 1)),
                }
                Ok(())
            });
            b.accept(r)?;
        }
        for (idx, mut list) in counts {
            list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            b.items[idx as usize].tags = list.into_iter().map(|(t, _)| t).collect();
        }
    }
    let ratings_path = root.join("ratings.csv");
    let mut ratings = b.open(&ratings_path, CSV)?;
    let (u, i, r, t) = (
        ratings.column("userId")?,
        ratings.column("movieId")?,
        ratings.column("rating")?,
        ratings.column("timestamp")?,
    );
    b.set_feedback_columns(vec!["rating".into()]);
    read_interactions(b, &mut ratings, u, i, t, &[r])
}

fn load_generic(
    b: &mut Builder,
    root: &Path,
    interactions: &str,
    items: &str,
) -> Result<(), DataError> {
    let items_path = root.join(items);
    let mut reader = open_table(b, &items_path)?;
    let id_c = reader.column("item_id")?;
    let title_c = reader.column("title")?;
    let opt = |name: &str| reader.header.iter().position(|h| h == name);
    let (text_c, tags_c, genres_c) = (opt("text"), opt("tags"), opt("genres"));
    let n = reader.header.len();
    let list = |s: &str| {
        s.split('|')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    while let Some(row) = reader.next_row() {
        let r = row.and_then(|row| {
            let get = |c: Option<usize>| -> Result<String, DataError> {
                c.map(|c| field(&items_path, &row, c, n).map(str::to_string))
                    .unwrap_or(Ok(String::new()))
            };
            let item = Item {
                id: field(&items_path, &row, id_c, n)?.trim().to_string(),
                title: field(&items_path, &row, title_c, n)?.trim().to_string(),
                year: None,
                genres: list(&get(genres_c)?),
                tags: list(&get(tags_c)?),
                text: get(text_c)?,
            };
            b.add_item(&items_path, row.line, item)
        });
        b.accept(r)?;
    }
    if reader.rows_read() == 0 {
        return Err(DataError::Empty { file: items_path });
    }
    let inter_path = root.join(interactions);
    let mut reader = open_table(b, &inter_path)?;
    let (u, i, t) = (
        reader.column("user_id")?,
        reader.column("item_id")?,
        reader.column("timestamp")?,
    );
    let fb: Vec<usize> = (0..reader.header.len())
        .filter(|c| ![u, i, t].contains(c))
        .collect();
    b.set_feedback_columns(fb.iter().map(|&c| reader.header[c].clone()).collect());
    read_interactions(b, &mut reader, u, i, t, &fb)
}

/// Opens a generic table: CSV directly, Parquet converted to rows in memory.
fn open_table(b: &mut Builder, path: &Path) -> Result<Delimited, DataError> {
    if path.extension().is_some_and(|e| e == "parquet") {
        b.files.push(path.to_path_buf());
        let (header, rows, total) = read_parquet_rows(path)?;
        Ok(Delimited::from_rows(path, header, rows, Some(total)))
    } else {
        b.open(path, CSV)
    }
}

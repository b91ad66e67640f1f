//! Ingest in bounded memory: the log is sorted in runs that spill to disk and are merged.
//!
//! The stored log is ordered by (user, time, input order), with users numbered in the sorted
//! order of their original ids, and split two ways: by global time quantiles and by each
//! user's last events. The numbering is known only once every user has been read, and the
//! quantiles only once every timestamp has; so rows are written to disk in runs as they
//! are read, and after the last row each run is renumbered and sorted on its own (one run in
//! memory at a time), the two time cuts are found by a radix selection over the runs'
//! timestamps, and the runs are merged into the interactions file with each user's rows in
//! hand for leave-last-out. The rows, their order and their splits are those of the
//! in-memory path ([`crate::temporal_split`], [`crate::leave_last_out`]), so the files are
//! byte for byte the same.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use wander_core::config::PositiveRule;

use crate::parquet_io::{InteractionsWriter, RowSlices, INTERACTION_BATCH_ROWS};
use crate::split::{cut_values, split_at};
use crate::{DataError, Split};

fn io_err(path: &Path, e: std::io::Error) -> DataError {
    DataError::Core(wander_core::CoreError::io(path, e))
}

/// Rows of the log as read, in column form; the `index` of a row is its position in the
/// input, which breaks ties of user and time as the in-memory sort does.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    pub timestamp: Vec<i64>,
    pub index: Vec<u64>,
    /// Row-major: `width` values per row.
    pub feedback: Vec<f64>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.user.len()
    }
}

/// The runs written so far, in a scratch folder inside the stage being written.
#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    width: usize,
    runs: Vec<PathBuf>,
    rows: u64,
}

impl Spill {
    /// Runs go into `dir` (created); `width` feedback values per row.
    pub fn new(dir: PathBuf, width: usize) -> Result<Self, DataError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(Spill {
            dir,
            width,
            runs: Vec::new(),
            rows: 0,
        })
    }

    /// How many runs were written.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Rows written in all runs.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn row_bytes(&self) -> usize {
        24 + 8 * self.width
    }

    /// Writes the builder's buffered rows (in input order, the first at input position
    /// `first_index`; `feedback` one column per feedback value) as the next run.
    pub fn write_buffer(
        &mut self,
        rows: &[(u32, u32, i64)],
        feedback: &[Vec<f64>],
        first_index: u64,
    ) -> Result<(), DataError> {
        let path = self.dir.join(format!("run-{:05}.bin", self.runs.len()));
        let mut w =
            BufWriter::with_capacity(1 << 20, File::create(&path).map_err(|e| io_err(&path, e))?);
        let mut put = |i: usize, &(user, item, ts): &(u32, u32, i64)| -> std::io::Result<()> {
            w.write_all(&user.to_le_bytes())?;
            w.write_all(&item.to_le_bytes())?;
            w.write_all(&ts.to_le_bytes())?;
            w.write_all(&(first_index + i as u64).to_le_bytes())?;
            for col in feedback {
                w.write_all(&col[i].to_le_bytes())?;
            }
            Ok(())
        };
        rows.iter()
            .enumerate()
            .try_for_each(|(i, r)| put(i, r))
            .and_then(|_| w.flush())
            .map_err(|e| io_err(&path, e))?;
        self.rows += rows.len() as u64;
        self.runs.push(path);
        Ok(())
    }

    /// Renumbers every run's users (`remap[old] = new`) and sorts it by (user, time, input
    /// order), one run in memory at a time.
    pub fn sort_runs(&self, remap: &[u32], on_run: &dyn Fn(usize, usize)) -> Result<(), DataError> {
        for (done, path) in self.runs.iter().enumerate() {
            on_run(done, self.runs.len());
            let mut rows = read_rows(path, self.width, self.row_bytes())?;
            for u in &mut rows.user {
                *u = remap[*u as usize];
            }
            let mut order: Vec<u32> = (0..rows.len() as u32).collect();
            order.sort_unstable_by_key(|&i| {
                let i = i as usize;
                (rows.user[i], rows.timestamp[i], rows.index[i])
            });
            write_rows(path, &rows, self.width, &order)?;
        }
        on_run(self.runs.len(), self.runs.len());
        Ok(())
    }

    /// Calls `visit` with every row's timestamp, run by run.
    fn for_each_timestamp(&self, visit: &mut dyn FnMut(i64)) -> Result<(), DataError> {
        let row_bytes = self.row_bytes();
        for path in &self.runs {
            let mut r =
                BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| io_err(path, e))?);
            let mut row = vec![0u8; row_bytes];
            loop {
                match r.read_exact(&mut row) {
                    Ok(()) => visit(i64::from_le_bytes(row[8..16].try_into().expect("8 bytes"))),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(io_err(path, e)),
                }
            }
        }
        Ok(())
    }

    /// Removes the scratch folder.
    pub fn remove(self) -> Result<(), DataError> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))
    }
}

/// Writes `rows` in the given order.
fn write_rows(path: &Path, rows: &Rows, width: usize, order: &[u32]) -> Result<(), DataError> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).map_err(|e| io_err(path, e))?);
    let mut put = |i: usize| -> std::io::Result<()> {
        w.write_all(&rows.user[i].to_le_bytes())?;
        w.write_all(&rows.item[i].to_le_bytes())?;
        w.write_all(&rows.timestamp[i].to_le_bytes())?;
        w.write_all(&rows.index[i].to_le_bytes())?;
        for v in &rows.feedback[i * width..(i + 1) * width] {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    };
    order
        .iter()
        .try_for_each(|&i| put(i as usize))
        .and_then(|_| w.flush())
        .map_err(|e| io_err(path, e))
}

fn decode_row(bytes: &[u8], rows: &mut Rows, width: usize) {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    rows.user.push(u32_at(0));
    rows.item.push(u32_at(4));
    rows.timestamp.push(u64_at(8) as i64);
    rows.index.push(u64_at(16));
    for c in 0..width {
        rows.feedback.push(f64::from_bits(u64_at(24 + 8 * c)));
    }
}

/// Reads a run back in column form, decoding as it reads (the file is never held whole
/// beside its columns).
fn read_rows(path: &Path, width: usize, row_bytes: usize) -> Result<Rows, DataError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let n = file.metadata().map_err(|e| io_err(path, e))?.len() as usize / row_bytes;
    let mut rows = Rows {
        user: Vec::with_capacity(n),
        item: Vec::with_capacity(n),
        timestamp: Vec::with_capacity(n),
        index: Vec::with_capacity(n),
        feedback: Vec::with_capacity(n * width),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut row = vec![0u8; row_bytes];
    for _ in 0..n {
        r.read_exact(&mut row).map_err(|e| io_err(path, e))?;
        decode_row(&row, &mut rows, width);
    }
    Ok(rows)
}

/// The `ranks`-th smallest values (0-based) of a multiset of integers in `[min, max]` that
/// `source` visits in full each time it is called: a radix selection, 16 bits a pass, that
/// holds a 65,536-bucket histogram per rank and never the values (at most four passes; two
/// for timestamps in seconds spanning under two years).
///
/// `Ok(None)` when a pass counts fewer values than a rank needs: the source changed
/// between passes, or a value lay outside `[min, max]`.
pub(crate) fn select_ranks<E>(
    mut source: impl FnMut(&mut dyn FnMut(i64)) -> Result<(), E>,
    (min, max): (i64, i64),
    ranks: &[u64],
) -> Result<Option<Vec<i64>>, E> {
    const BITS: u32 = 16;
    // Per rank: values below `lo` counted in `below`; the answer lies in [lo, lo + span].
    struct Window {
        rank: u64,
        lo: i128,
        span: u128,
        below: u64,
        done: bool,
    }
    let mut windows: Vec<Window> = ranks
        .iter()
        .map(|&rank| Window {
            rank,
            lo: min as i128,
            span: (max as i128 - min as i128).max(0) as u128,
            below: 0,
            done: false,
        })
        .collect();
    let shift_of = |span: u128| (128 - span.leading_zeros()).saturating_sub(BITS);
    while windows.iter().any(|w| !w.done) {
        let mut counts: Vec<Vec<u64>> = windows
            .iter()
            .map(|w| {
                if w.done {
                    Vec::new()
                } else {
                    vec![0; 1 << BITS]
                }
            })
            .collect();
        source(&mut |v: i64| {
            for (w, c) in windows.iter().zip(counts.iter_mut()) {
                if w.done {
                    continue;
                }
                let off = v as i128 - w.lo;
                if off >= 0 && off as u128 <= w.span {
                    c[(off as u128 >> shift_of(w.span)) as usize] += 1;
                }
            }
        })?;
        for (w, c) in windows.iter_mut().zip(&counts) {
            if w.done {
                continue;
            }
            let shift = shift_of(w.span);
            let mut below = w.below;
            let Some(bucket) = c.iter().position(|&n| {
                if w.rank < below + n {
                    true
                } else {
                    below += n;
                    false
                }
            }) else {
                return Ok(None);
            };
            w.below = below;
            w.lo += (bucket as i128) << shift;
            if shift == 0 {
                w.span = 0;
                w.done = true;
            } else {
                w.span = (w.span - ((bucket as u128) << shift)).min((1u128 << shift) - 1);
            }
        }
    }
    Ok(Some(windows.iter().map(|w| w.lo as i64).collect()))
}

/// What a [`SortedRowSink`] wrote, for the ingest summary.
#[derive(Debug, Clone)]
pub(crate) struct MergeStats {
    pub items_seen: Vec<bool>,
    pub interactions: usize,
    pub positives: usize,
    pub time_min: i64,
    pub time_max: i64,
    pub temporal_split: [usize; 3],
    pub leave_last_out: [usize; 3],
}

/// The two cuts of [`crate::temporal_split`] over the `n` timestamps in `[min, max]` that
/// `source` visits in full on each call (at most four calls).
pub(crate) fn split_cuts<E>(
    source: impl FnMut(&mut dyn FnMut(i64)) -> Result<(), E>,
    n: u64,
    (min, max): (i64, i64),
    (valid, test): (f64, f64),
) -> Result<Option<(i64, i64)>, E> {
    // The ranks the cuts need, then their values by one selection.
    let mut wanted = Vec::new();
    cut_values(
        |rank| {
            wanted.push(rank);
            0
        },
        n,
        valid,
        test,
    );
    let Some(found) = select_ranks(source, (min, max), &wanted)? else {
        return Ok(None);
    };
    let mut at = found.into_iter();
    Ok(Some(cut_values(
        |_| at.next().expect("selected"),
        n,
        valid,
        test,
    )))
}

/// Takes a log's rows in stored order (grouped by user, by time within a user) and writes
/// the interactions file one row group at a time, marking leave-last-out as each user ends
/// (so it holds one row group and the current user's rows), and counts the summary figures.
pub(crate) struct SortedRowSink<'w> {
    writer: &'w mut InteractionsWriter,
    width: usize,
    batch: Batch,
    /// Where the current user's rows start in `batch`.
    user_start: usize,
    stats: MergeStats,
}

/// The rows of one batch of the interactions file, gathered from the merge.
#[derive(Default)]
struct Batch {
    rows: Rows,
    positive: Vec<bool>,
    split: Vec<Split>,
    loo_split: Vec<Split>,
}

impl<'w> SortedRowSink<'w> {
    /// A sink for rows of `width` feedback values over `items` catalogue items.
    pub fn new(writer: &'w mut InteractionsWriter, width: usize, items: usize) -> Self {
        SortedRowSink {
            writer,
            width,
            batch: Batch::default(),
            user_start: 0,
            stats: MergeStats {
                items_seen: vec![false; items],
                interactions: 0,
                positives: 0,
                time_min: i64::MAX,
                time_max: i64::MIN,
                temporal_split: [0; 3],
                leave_last_out: [0; 3],
            },
        }
    }

    /// Rows taken so far.
    pub fn rows(&self) -> usize {
        self.stats.interactions
    }

    /// The next row in stored order.
    pub fn push(
        &mut self,
        (user, item, timestamp): (u32, u32, i64),
        feedback: &[f64],
        positive: bool,
        split: Split,
    ) -> Result<(), DataError> {
        let b = &self.batch;
        if b.rows.len() > self.user_start && b.rows.user[self.user_start] != user {
            self.end_user();
            self.user_start = self.batch.rows.len();
            while self.user_start >= INTERACTION_BATCH_ROWS {
                self.write_batch(INTERACTION_BATCH_ROWS)?;
                self.user_start -= INTERACTION_BATCH_ROWS;
            }
        }
        let (b, s) = (&mut self.batch, &mut self.stats);
        b.rows.user.push(user);
        b.rows.item.push(item);
        b.rows.timestamp.push(timestamp);
        b.rows.feedback.extend_from_slice(&feedback[..self.width]);
        b.positive.push(positive);
        b.split.push(split);
        b.loo_split.push(Split::Train);
        s.positives += positive as usize;
        s.temporal_split[split as usize] += 1;
        s.items_seen[item as usize] = true;
        s.interactions += 1;
        s.time_min = s.time_min.min(timestamp);
        s.time_max = s.time_max.max(timestamp);
        Ok(())
    }

    /// Leave-last-out for the user whose rows end the batch.
    fn end_user(&mut self) {
        let (b, s) = (&mut self.batch, &mut self.stats);
        let n = b.rows.len() - self.user_start;
        if n >= 3 {
            let last = b.rows.len() - 1;
            b.loo_split[last] = Split::Test;
            b.loo_split[last - 1] = Split::Valid;
            s.leave_last_out[Split::Test as usize] += 1;
            s.leave_last_out[Split::Valid as usize] += 1;
            s.leave_last_out[Split::Train as usize] += n - 2;
        } else {
            s.leave_last_out[Split::Train as usize] += n;
        }
    }

    /// Writes the batch's first `upto` rows (all of finished users) and keeps the rest.
    fn write_batch(&mut self, upto: usize) -> Result<(), DataError> {
        let width = self.width;
        let b = &self.batch;
        let r = &b.rows;
        let columns: Vec<Vec<f64>> = (0..width)
            .map(|c| (0..upto).map(|i| r.feedback[i * width + c]).collect())
            .collect();
        self.writer.write(&RowSlices {
            user: &r.user[..upto],
            item: &r.item[..upto],
            timestamp: &r.timestamp[..upto],
            feedback: columns.iter().map(Vec::as_slice).collect(),
            positive: &b.positive[..upto],
            split: &b.split[..upto],
            loo_split: &b.loo_split[..upto],
        })?;
        let mut rest = Batch::default();
        rest.rows.user.extend_from_slice(&r.user[upto..]);
        rest.rows.item.extend_from_slice(&r.item[upto..]);
        rest.rows.timestamp.extend_from_slice(&r.timestamp[upto..]);
        rest.rows
            .feedback
            .extend_from_slice(&r.feedback[upto * width..]);
        rest.positive.extend_from_slice(&b.positive[upto..]);
        rest.split.extend_from_slice(&b.split[upto..]);
        rest.loo_split.extend_from_slice(&b.loo_split[upto..]);
        self.batch = rest;
        Ok(())
    }

    /// Ends the last user and writes what is left: whole row groups, then the rest, as the
    /// in-memory writer cuts them (no empty one).
    pub fn finish(mut self) -> Result<MergeStats, DataError> {
        if self.batch.rows.len() > self.user_start {
            self.end_user();
        }
        while self.batch.rows.len() >= INTERACTION_BATCH_ROWS {
            self.write_batch(INTERACTION_BATCH_ROWS)?;
        }
        let n = self.batch.rows.len();
        if n > 0 {
            self.write_batch(n)?;
        }
        Ok(self.stats)
    }
}

/// One run being merged: its reader and its current row.
struct Cursor {
    path: PathBuf,
    reader: BufReader<File>,
    row: Vec<u8>,
}

impl Cursor {
    fn advance(&mut self) -> Result<bool, DataError> {
        match self.reader.read_exact(&mut self.row) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    fn key(&self) -> (u32, i64, u64) {
        let r = &self.row;
        (
            u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")),
            i64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
            u64::from_le_bytes(r[16..24].try_into().expect("8 bytes")),
        )
    }
}

/// Merges the sorted runs into the interactions file: positive by `rule` on column
/// `rule_col`, the temporal split at the cuts of `valid`/`test`, leave-last-out per user.
/// `time_range` is the smallest and largest timestamp of all rows; `on_rows` hears the rows
/// merged so far and the total, every 1,048,576 rows. Also returns the rule column's
/// smallest and largest value.
pub(crate) fn merge_into(
    spill: &Spill,
    writer: &mut InteractionsWriter,
    (rule, rule_col): (&PositiveRule, usize),
    fractions: (f64, f64),
    time_range: (i64, i64),
    items: usize,
    on_rows: &dyn Fn(u64, u64),
) -> Result<(MergeStats, (f64, f64)), DataError> {
    let cuts = split_cuts(
        |visit| spill.for_each_timestamp(visit),
        spill.rows(),
        time_range,
        fractions,
    )?
    .ok_or_else(|| {
        DataError::Core(wander_core::CoreError::Artifact {
            path: spill.dir.clone(),
            message: "the sorted runs changed while the split's cuts were found".into(),
        })
    })?;
    let width = spill.width;
    let mut cursors = Vec::new();
    let mut heap = BinaryHeap::new();
    for path in &spill.runs {
        let mut c = Cursor {
            path: path.clone(),
            reader: BufReader::with_capacity(
                1 << 20,
                File::open(path).map_err(|e| io_err(path, e))?,
            ),
            row: vec![0u8; spill.row_bytes()],
        };
        if c.advance()? {
            heap.push(Reverse((c.key(), cursors.len())));
        }
        cursors.push(c);
    }
    let mut sink = SortedRowSink::new(writer, width, items);
    let mut rule_range = (f64::INFINITY, f64::NEG_INFINITY);
    let mut row = Rows::default();
    while let Some(Reverse(((user, ts, _), run))) = heap.pop() {
        let c = &mut cursors[run];
        row.user.clear();
        row.item.clear();
        row.timestamp.clear();
        row.index.clear();
        row.feedback.clear();
        decode_row(&c.row, &mut row, width);
        let value = row.feedback[rule_col];
        rule_range = (rule_range.0.min(value), rule_range.1.max(value));
        sink.push(
            (user, row.item[0], ts),
            &row.feedback,
            rule.holds(value),
            split_at(ts, cuts),
        )?;
        if sink.rows() % (1 << 20) == 0 {
            on_rows(sink.rows() as u64, spill.rows);
        }
        if c.advance()? {
            heap.push(Reverse((c.key(), run)));
        }
    }
    Ok((sink.finish()?, rule_range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn select(values: &[i64], ranks: &[u64]) -> Vec<i64> {
        let (min, max) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        select_ranks(
            |visit| {
                values.iter().for_each(|&v| visit(v));
                Ok::<(), ()>(())
            },
            (min, max),
            ranks,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn selection_over_the_whole_i64_range() {
        let values = [i64::MIN, -5, 0, 0, 7, i64::MAX];
        assert_eq!(select(&values, &[0, 1, 2, 3, 4, 5]), values.to_vec());
    }

    proptest! {
        #[test]
        fn selection_matches_sorting(
            values in proptest::collection::vec(prop_oneof![0i64..100, 1_600_000_000i64..1_700_000_000, any::<i64>()], 1..300),
            picks in proptest::collection::vec(0.0f64..1.0, 1..4),
        ) {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let ranks: Vec<u64> = picks.iter().map(|p| ((values.len() as f64 * p) as u64).min(values.len() as u64 - 1)).collect();
            let want: Vec<i64> = ranks.iter().map(|&r| sorted[r as usize]).collect();
            prop_assert_eq!(select(&values, &ranks), want);
        }
    }
}

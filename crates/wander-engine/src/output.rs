//! Result files: streamed Parquet writing (temporary sibling, then rename) and typed readers.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

fn out_err(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Output {
        path: path.into(),
        message: e.to_string(),
    }
}

/// Writes record batches to a temporary sibling and renames it into place on
/// [`PartWriter::finish`], so an interrupted run never leaves a partial result file.
pub struct PartWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

impl PartWriter {
    /// Starts `path`.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let tmp = wander_core::artifact::temp_sibling(path);
        let file = File::create(&tmp).map_err(|e| out_err(&tmp, e))?;
        let writer = ArrowWriter::try_new(file, schema, None).map_err(|e| out_err(&tmp, e))?;
        Ok(PartWriter {
            path: path.into(),
            tmp,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(|e| out_err(&self.tmp, e))
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file and renames it into place; returns the row count.
    pub fn finish(self) -> Result<u64> {
        self.writer.close().map_err(|e| out_err(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| out_err(&self.path, e))?;
        Ok(self.rows)
    }
}

/// One row of `transitions.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransitionRow {
    /// Period of the engagement with `next`.
    pub split: u8,
    /// Older history cluster.
    pub c1: u32,
    /// Recent history cluster.
    pub c2: u32,
    /// Next novel cluster.
    pub next: u32,
    /// Transitions.
    pub n: u64,
}

/// One row of `label_parts.parquet`: `users` users each had signal sum `s` over `n`
/// engagements with `next` from state `(c1, c2)`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct LabelPartRow {
    /// Period.
    pub split: u8,
    /// Older history cluster.
    pub c1: u32,
    /// Recent history cluster.
    pub c2: u32,
    /// Candidate novel cluster.
    pub next: u32,
    /// A user's signal sum.
    pub s: f64,
    /// A user's engagements.
    pub n: u64,
    /// Users with exactly this `(s, n)`.
    pub users: u64,
}

/// One row of `co_consumption.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PairCountRow {
    /// Item.
    pub a: u32,
    /// Co-consumed item.
    pub b: u32,
    /// Count.
    pub n: u64,
}

fn read_all(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| out_err(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| out_err(path, e))?
        .map(|b| b.map_err(|e| out_err(path, e)))
        .collect()
}

fn ints(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| out_err(path, format!("missing column `{name}`")))?;
    let col = cast(col, &DataType::Int64).map_err(|e| out_err(path, e))?;
    let col = col.as_primitive::<Int64Type>();
    if col.null_count() > 0 {
        return Err(out_err(path, format!("column `{name}` has nulls")));
    }
    Ok(col.values().to_vec())
}

fn floats(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| out_err(path, format!("missing column `{name}`")))?;
    let col = cast(col, &DataType::Float64).map_err(|e| out_err(path, e))?;
    Ok(col.as_primitive::<Float64Type>().values().to_vec())
}

/// Reads the integer columns `names` of every row, each row made into a `T` by `row`.
fn read_int_rows<const N: usize, T>(
    path: &Path,
    names: [&str; N],
    row: impl Fn([i64; N]) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for b in read_all(path)? {
        let columns: Vec<Vec<i64>> = names
            .iter()
            .map(|c| ints(path, &b, c))
            .collect::<Result<_>>()?;
        for k in 0..b.num_rows() {
            out.push(row(std::array::from_fn(|j| columns[j][k])));
        }
    }
    Ok(out)
}

/// Reads `transitions.parquet`, sorted.
pub fn read_transitions(path: &Path) -> Result<Vec<TransitionRow>> {
    let mut out = read_int_rows(
        path,
        ["split", "c1", "c2", "next", "n"],
        |[split, c1, c2, next, n]| TransitionRow {
            split: split as u8,
            c1: c1 as u32,
            c2: c2 as u32,
            next: next as u32,
            n: n as u64,
        },
    )?;
    out.sort_unstable();
    Ok(out)
}

/// Reads `label_parts.parquet`, sorted by `(split, c1, c2, next, s, n)`.
pub fn read_label_parts(path: &Path) -> Result<Vec<LabelPartRow>> {
    let mut out = Vec::new();
    for b in read_all(path)? {
        let [split, c1, c2, next, n, users] =
            ["split", "c1", "c2", "next", "n", "users"].map(|c| ints(path, &b, c));
        let (split, c1, c2, next, n, users) = (split?, c1?, c2?, next?, n?, users?);
        let s = floats(path, &b, "s")?;
        for k in 0..b.num_rows() {
            out.push(LabelPartRow {
                split: split[k] as u8,
                c1: c1[k] as u32,
                c2: c2[k] as u32,
                next: next[k] as u32,
                s: s[k],
                n: n[k] as u64,
                users: users[k] as u64,
            });
        }
    }
    out.sort_unstable_by(|x, y| {
        (x.split, x.c1, x.c2, x.next)
            .cmp(&(y.split, y.c1, y.c2, y.next))
            .then(x.s.total_cmp(&y.s))
            .then(x.n.cmp(&y.n))
    });
    Ok(out)
}

/// Reads `co_consumption.parquet`, sorted.
pub fn read_co_consumption(path: &Path) -> Result<Vec<PairCountRow>> {
    let mut out = read_int_rows(path, ["a", "b", "n"], |[a, b, n]| PairCountRow {
        a: a as u32,
        b: b as u32,
        n: n as u64,
    })?;
    out.sort_unstable();
    Ok(out)
}

/// One row of `transition_events.parquet`: one user's transition, at the engagement that
/// made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransitionEventRow {
    /// The engagement's position in the log's (user, time) order.
    pub seq: u64,
    /// User.
    pub user: u32,
    /// Older history cluster.
    pub c1: u32,
    /// Recent history cluster.
    pub c2: u32,
    /// Next novel cluster.
    pub next: u32,
    /// Period of the engagement with `next`.
    pub split: u8,
}

/// Reads `transition_events.parquet`, in `seq` order (the log's order, whatever order the
/// engine's partitions wrote the rows in).
pub fn read_transition_events(path: &Path) -> Result<Vec<TransitionEventRow>> {
    let names = ["user", "seq", "c1", "c2", "next", "split"];
    let mut out = read_int_rows(path, names, |[user, seq, c1, c2, next, split]| {
        TransitionEventRow {
            seq: seq as u64,
            user: user as u32,
            c1: c1 as u32,
            c2: c2 as u32,
            next: next as u32,
            split: split as u8,
        }
    })?;
    out.sort_unstable();
    Ok(out)
}

/// One row of `feedback_counts.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeedbackCountRow {
    /// Period.
    pub split: u8,
    /// Feedback events (engagements outside the user's interest state).
    pub events: u64,
    /// Those of them that were positive.
    pub positive: u64,
}

/// Reads `feedback_counts.parquet`, sorted by period.
pub fn read_feedback_counts(path: &Path) -> Result<Vec<FeedbackCountRow>> {
    let names = ["split", "events", "positive"];
    let mut out = read_int_rows(path, names, |[split, events, positive]| FeedbackCountRow {
        split: split as u8,
        events: events as u64,
        positive: positive as u64,
    })?;
    out.sort_unstable();
    Ok(out)
}

/// One row of `item_train_interactions.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemCountRow {
    /// Item.
    pub item: u32,
    /// Count.
    pub n: u64,
}

/// Reads `item_train_interactions.parquet`, sorted by item.
pub fn read_item_counts(path: &Path) -> Result<Vec<ItemCountRow>> {
    let mut out = read_int_rows(path, ["item", "n"], |[item, n]| ItemCountRow {
        item: item as u32,
        n: n as u64,
    })?;
    out.sort_unstable();
    Ok(out)
}

//! The dataset's on-disk form: three Parquet files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::RecordBatchReader;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use wander_core::artifact::{StageReader, StageWriter};

use crate::text::Row;
use crate::{DataError, Dataset, Interactions, Item, Split};

/// Interactions: user, item, timestamp, feedback_<name>..., positive, split, loo_split.
pub const INTERACTIONS_FILE: &str = "interactions.parquet";
/// Items: item, item_id, title, year, genres, tags, text (lists joined with `|`).
pub const ITEMS_FILE: &str = "items.parquet";
/// Users: user, user_id.
pub const USERS_FILE: &str = "users.parquet";

const FEEDBACK_PREFIX: &str = "feedback_";

fn pq_err(file: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        file: file.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs the Parquet decoder on a user's file. parquet-rs still asserts on some corrupt
/// metadata (negative column offsets, apache/arrow-rs#6228, found again by the loader fuzz
/// test): a panic inside it becomes an error naming the file, and its message is not
/// printed as a crash.
fn guarded<T>(path: &Path, decode: impl FnOnce() -> Result<T, DataError>) -> Result<T, DataError> {
    use std::cell::Cell;
    thread_local!(static DECODING: Cell<bool> = const { Cell::new(false) });
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    DECODING.with(|d| d.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    DECODING.with(|d| d.set(false));
    outcome.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(pq_err(
            path,
            format!("the file is corrupt (the Parquet decoder gave up: {why})"),
        ))
    })
}

fn write_batch(path: &Path, columns: Vec<(String, ArrayRef)>) -> Result<(), DataError> {
    let batch = RecordBatch::try_from_iter(columns).map_err(|e| pq_err(path, e))?;
    let file =
        File::create(path).map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| pq_err(path, e))?;
    writer.write(&batch).map_err(|e| pq_err(path, e))?;
    writer.close().map_err(|e| pq_err(path, e))?;
    Ok(())
}

/// A run of interaction rows in column form, as the interactions file stores them.
pub(crate) struct RowSlices<'a> {
    pub user: &'a [u32],
    pub item: &'a [u32],
    pub timestamp: &'a [i64],
    /// One slice per feedback column.
    pub feedback: Vec<&'a [f64]>,
    pub positive: &'a [bool],
    pub split: &'a [Split],
    pub loo_split: &'a [Split],
}

/// The interactions file's columns for these rows, the first at position `first_seq`: user,
/// item, timestamp, `seq` (the row's position in (user, time, input) order: the order key
/// that SQL engines need, since timestamps tie), the feedback columns, positive, split,
/// loo_split.
fn interaction_columns(
    feedback_columns: &[String],
    rows: &RowSlices<'_>,
    first_seq: u64,
) -> Vec<(String, ArrayRef)> {
    let splits = |col: &[Split]| -> ArrayRef {
        Arc::new(UInt8Array::from_iter_values(col.iter().map(|s| *s as u8)))
    };
    let mut cols: Vec<(String, ArrayRef)> = vec![
        (
            "user".into(),
            Arc::new(UInt32Array::from(rows.user.to_vec())),
        ),
        (
            "item".into(),
            Arc::new(UInt32Array::from(rows.item.to_vec())),
        ),
        (
            "timestamp".into(),
            Arc::new(Int64Array::from(rows.timestamp.to_vec())),
        ),
        (
            "seq".into(),
            Arc::new(UInt64Array::from_iter_values(
                first_seq..first_seq + rows.user.len() as u64,
            )),
        ),
    ];
    for (name, col) in feedback_columns.iter().zip(&rows.feedback) {
        cols.push((
            format!("{FEEDBACK_PREFIX}{name}"),
            Arc::new(Float64Array::from(col.to_vec())),
        ));
    }
    cols.push((
        "positive".into(),
        Arc::new(BooleanArray::from(rows.positive.to_vec())),
    ));
    cols.push(("split".into(), splits(rows.split)));
    cols.push(("loo_split".into(), splits(rows.loo_split)));
    cols
}

/// Rows per record batch of the interactions file: parquet-rs's row group size, so that
/// writing the log batch by batch gives the same row groups (and bytes) as writing it whole.
pub(crate) const INTERACTION_BATCH_ROWS: usize =
    parquet::file::properties::DEFAULT_MAX_ROW_GROUP_ROW_COUNT;

/// Writes the interactions file one record batch (one row group) at a time, from a dataset
/// in memory or from rows merged off disk; either way the same rows give the same bytes.
pub(crate) struct InteractionsWriter {
    path: std::path::PathBuf,
    feedback_columns: Vec<String>,
    writer: Option<ArrowWriter<File>>,
    written: u64,
}

impl InteractionsWriter {
    pub(crate) fn new(stage: &StageWriter, feedback_columns: &[String]) -> Result<Self, DataError> {
        Ok(InteractionsWriter {
            path: stage.path(INTERACTIONS_FILE)?,
            feedback_columns: feedback_columns.to_vec(),
            writer: None,
            written: 0,
        })
    }

    /// Appends one batch of at most [`INTERACTION_BATCH_ROWS`] rows; only the last batch may
    /// be shorter, so that row groups match a whole-log write.
    pub(crate) fn write(&mut self, rows: &RowSlices<'_>) -> Result<(), DataError> {
        let path = &self.path;
        let batch = RecordBatch::try_from_iter(interaction_columns(
            &self.feedback_columns,
            rows,
            self.written,
        ))
        .map_err(|e| pq_err(path, e))?;
        if self.writer.is_none() {
            let file = File::create(path)
                .map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            self.writer = Some(
                ArrowWriter::try_new(file, batch.schema(), Some(props))
                    .map_err(|e| pq_err(path, e))?,
            );
        }
        let w = self.writer.as_mut().expect("created above");
        w.write(&batch).map_err(|e| pq_err(path, e))?;
        self.written += rows.user.len() as u64;
        Ok(())
    }

    /// Closes the file (a log without rows writes none: the loaders refuse one earlier).
    pub(crate) fn finish(self) -> Result<(), DataError> {
        match self.writer {
            Some(w) => w.close().map(|_| ()).map_err(|e| pq_err(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// Writes the dataset's three Parquet files into a stage. The interactions go out one
/// record batch at a time, so that the log is not copied whole into Arrow arrays.
pub fn write_dataset(stage: &StageWriter, ds: &Dataset) -> Result<(), DataError> {
    let it = &ds.interactions;
    let mut writer = InteractionsWriter::new(stage, &ds.feedback_columns)?;
    let mut start = 0;
    loop {
        let end = (start + INTERACTION_BATCH_ROWS).min(it.len());
        writer.write(&RowSlices {
            user: &it.user[start..end],
            item: &it.item[start..end],
            timestamp: &it.timestamp[start..end],
            feedback: it.feedback.iter().map(|c| &c[start..end]).collect(),
            positive: &it.positive[start..end],
            split: &it.split[start..end],
            loo_split: &it.loo_split[start..end],
        })?;
        start = end;
        if start >= it.len() {
            break;
        }
    }
    writer.finish()?;
    write_catalogue(stage, &ds.items, &ds.users)
}

/// Writes the items and users files.
pub(crate) fn write_catalogue(
    stage: &StageWriter,
    items: &[Item],
    users: &[String],
) -> Result<(), DataError> {
    let join = |f: &dyn Fn(&Item) -> String| -> ArrayRef {
        Arc::new(StringArray::from(items.iter().map(f).collect::<Vec<_>>()))
    };
    let item_columns: Vec<(String, ArrayRef)> = vec![
        (
            "item".into(),
            Arc::new(UInt32Array::from(
                (0..items.len() as u32).collect::<Vec<_>>(),
            )),
        ),
        ("item_id".into(), join(&|i| i.id.clone())),
        ("title".into(), join(&|i| i.title.clone())),
        (
            "year".into(),
            Arc::new(Int32Array::from(
                items.iter().map(|i| i.year).collect::<Vec<_>>(),
            )),
        ),
        ("genres".into(), join(&|i| i.genres.join("|"))),
        ("tags".into(), join(&|i| i.tags.join("|"))),
        ("text".into(), join(&|i| i.text.clone())),
    ];
    write_batch(&stage.path(ITEMS_FILE)?, item_columns)?;

    let user_columns: Vec<(String, ArrayRef)> = vec![
        (
            "user".into(),
            Arc::new(UInt32Array::from(
                (0..users.len() as u32).collect::<Vec<_>>(),
            )),
        ),
        (
            "user_id".into(),
            Arc::new(StringArray::from(users.to_vec())),
        ),
    ];
    write_batch(&stage.path(USERS_FILE)?, user_columns)
}

/// Where a Parquet file comes from: its embedded Arrow schema is trusted only in wander's
/// own, checksummed artifacts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Artifact,
    UserInput,
}

fn read_batches(path: &Path, origin: Origin) -> Result<Vec<RecordBatch>, DataError> {
    let file =
        File::open(path).map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
    // A damaged `ARROW:schema` footer entry panics inside arrow-ipc (found by the loader
    // fuzz test); Parquet's own schema carries every type a data file needs.
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(origin == Origin::UserInput);
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| pq_err(path, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pq_err(path, e))
}

fn column<'a>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, DataError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| pq_err(path, format!("missing column `{name}`")))
}

macro_rules! typed_col {
    ($path:expr, $batch:expr, $name:expr, $ty:ty) => {
        column($path, $batch, $name)?
            .as_primitive_opt::<$ty>()
            .ok_or_else(|| pq_err($path, format!("column `{}` has an unexpected type", $name)))?
    };
}

/// Reads the catalogue of a dataset written by [`write_dataset`]: users, items and the
/// names of the feedback columns, without the interactions (for the stages that mine the
/// log on the SQL engine; its `interactions` are empty).
pub fn read_catalogue(stage: &StageReader) -> Result<Dataset, DataError> {
    let mut ds = Dataset::default();
    let path = stage.path(USERS_FILE)?;
    for b in read_batches(&path, Origin::Artifact)? {
        let ids = column(&path, &b, "user_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| pq_err(&path, "user_id is not a string"))?;
        ds.users
            .extend(ids.iter().map(|s| s.unwrap_or_default().to_string()));
    }
    let path = stage.path(ITEMS_FILE)?;
    for b in read_batches(&path, Origin::Artifact)? {
        let s = |name: &str| -> Result<Vec<String>, DataError> {
            let c = column(&path, &b, name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| pq_err(&path, format!("{name} is not a string")))?;
            Ok(c.iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect())
        };
        let split = |v: &str| {
            v.split('|')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let (ids, titles, genres, tags, text) = (
            s("item_id")?,
            s("title")?,
            s("genres")?,
            s("tags")?,
            s("text")?,
        );
        let years = typed_col!(&path, &b, "year", Int32Type);
        for k in 0..b.num_rows() {
            ds.items.push(Item {
                id: ids[k].clone(),
                title: titles[k].clone(),
                year: years.is_valid(k).then(|| years.value(k)),
                genres: split(&genres[k]),
                tags: split(&tags[k]),
                text: text[k].clone(),
            });
        }
    }
    ds.feedback_columns = feedback_columns(stage)?;
    Ok(ds)
}

/// Reads a dataset written by [`write_dataset`] from a verified stage.
pub fn read_dataset(stage: &StageReader) -> Result<Dataset, DataError> {
    let mut ds = read_catalogue(stage)?;
    let path = stage.path(INTERACTIONS_FILE)?;
    let mut it = Interactions {
        feedback: vec![Vec::new(); ds.feedback_columns.len()],
        ..Interactions::default()
    };
    for b in read_batches(&path, Origin::Artifact)? {
        it.user
            .extend(typed_col!(&path, &b, "user", UInt32Type).values().iter());
        it.item
            .extend(typed_col!(&path, &b, "item", UInt32Type).values().iter());
        it.timestamp.extend(
            typed_col!(&path, &b, "timestamp", Int64Type)
                .values()
                .iter(),
        );
        for (k, name) in ds.feedback_columns.iter().enumerate() {
            it.feedback[k].extend(
                typed_col!(&path, &b, &format!("{FEEDBACK_PREFIX}{name}"), Float64Type)
                    .values()
                    .iter(),
            );
        }
        let pos = column(&path, &b, "positive")?
            .as_boolean_opt()
            .ok_or_else(|| pq_err(&path, "positive is not boolean"))?;
        it.positive.extend(pos.iter().map(|v| v.unwrap_or(false)));
        for (name, out) in [("split", &mut it.split), ("loo_split", &mut it.loo_split)] {
            for v in typed_col!(&path, &b, name, UInt8Type).values().iter() {
                out.push(
                    Split::from_u8(*v)
                        .ok_or_else(|| pq_err(&path, format!("bad {name} value {v}")))?,
                );
            }
        }
    }
    ds.interactions = it;
    Ok(ds)
}

/// One stored interaction without its feedback values: what the sequence model, the item
/// popularity, the serving catalogue, the simulator's world and the transitions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Dense user index.
    pub user: u32,
    /// Dense item index.
    pub item: u32,
    /// Unix seconds.
    pub timestamp: i64,
    /// Whether the positive-engagement rule holds.
    pub positive: bool,
    /// Global temporal split.
    pub split: Split,
    /// Leave-last-out split.
    pub loo_split: Split,
}

/// How many users and items a stored dataset has, from the Parquet footers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueSize {
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
}

fn row_count(path: &Path) -> Result<usize, DataError> {
    let file =
        File::open(path).map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(path, e))?;
    usize::try_from(builder.metadata().file_metadata().num_rows())
        .map_err(|_| pq_err(path, "negative row count"))
}

/// The catalogue's size of a dataset written by [`write_dataset`], without reading it.
pub fn catalogue_size(stage: &StageReader) -> Result<CatalogueSize, DataError> {
    Ok(CatalogueSize {
        users: row_count(&stage.path(USERS_FILE)?)?,
        items: row_count(&stage.path(ITEMS_FILE)?)?,
    })
}

/// Visits every interaction of a dataset written by [`write_dataset`] in its stored order
/// (user, time, input), decoding only the columns of [`Event`] one record batch at a time:
/// the memory it holds is one batch whatever the log's length (feedback values and the
/// catalogue's text are never read). Every visited event's user and item lie inside the
/// catalogue ([`catalogue_size`]): one outside is an error naming the file and row, before
/// it is visited. Returns how many events it visited.
pub fn for_each_event(stage: &StageReader, mut visit: impl FnMut(Event)) -> Result<u64, DataError> {
    scan_events(stage, Values::None, |e, _| visit(e))
}

/// [`for_each_event`] with each event's value of the feedback column `name` (as
/// [`Dataset::feedback_columns`] names it); a column the dataset lacks is an error naming it.
pub fn for_each_valued_event(
    stage: &StageReader,
    name: &str,
    mut visit: impl FnMut(Event, f64),
) -> Result<u64, DataError> {
    scan_events(stage, Values::One(name), |e, v| visit(e, v[0]))
}

/// [`for_each_event`] with each event's values of every feedback column, in
/// [`feedback_columns`]' order.
pub(crate) fn for_each_event_with_feedback(
    stage: &StageReader,
    visit: impl FnMut(Event, &[f64]),
) -> Result<u64, DataError> {
    scan_events(stage, Values::All, visit)
}

/// Which feedback values a scan decodes.
#[derive(Clone, Copy)]
enum Values<'a> {
    None,
    One(&'a str),
    All,
}

/// The names of the numeric feedback columns of a dataset written by [`write_dataset`], from
/// its Parquet schema.
pub fn feedback_columns(stage: &StageReader) -> Result<Vec<String>, DataError> {
    let path = stage.path(INTERACTIONS_FILE)?;
    let file =
        File::open(&path).map_err(|e| DataError::Core(wander_core::CoreError::io(&path, e)))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(&path, e))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .filter_map(|f| f.name().strip_prefix(FEEDBACK_PREFIX).map(str::to_string))
        .collect())
}

fn scan_events(
    stage: &StageReader,
    values: Values<'_>,
    mut visit: impl FnMut(Event, &[f64]),
) -> Result<u64, DataError> {
    let size = catalogue_size(stage)?;
    let value_names: Vec<String> = match values {
        Values::None => Vec::new(),
        Values::One(name) => vec![format!("{FEEDBACK_PREFIX}{name}")],
        Values::All => feedback_columns(stage)?
            .iter()
            .map(|name| format!("{FEEDBACK_PREFIX}{name}"))
            .collect(),
    };
    let path = stage.path(INTERACTIONS_FILE)?;
    let file =
        File::open(&path).map_err(|e| DataError::Core(wander_core::CoreError::io(&path, e)))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(&path, e))?;
    let mut columns = vec![
        "user",
        "item",
        "timestamp",
        "positive",
        "split",
        "loo_split",
    ];
    columns.extend(value_names.iter().map(String::as_str));
    for name in &columns {
        if builder.schema().field_with_name(name).is_err() {
            return Err(pq_err(&path, format!("missing column `{name}`")));
        }
    }
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), columns);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| pq_err(&path, e))?;
    let mut visited = 0u64;
    for batch in reader {
        let b = batch.map_err(|e| pq_err(&path, e))?;
        let user = typed_col!(&path, &b, "user", UInt32Type).values();
        let item = typed_col!(&path, &b, "item", UInt32Type).values();
        let timestamp = typed_col!(&path, &b, "timestamp", Int64Type).values();
        let positive = column(&path, &b, "positive")?
            .as_boolean_opt()
            .ok_or_else(|| pq_err(&path, "positive is not boolean"))?;
        let split = typed_col!(&path, &b, "split", UInt8Type).values();
        let loo_split = typed_col!(&path, &b, "loo_split", UInt8Type).values();
        let value_cols = value_names
            .iter()
            .map(|name| Ok(typed_col!(&path, &b, name.as_str(), Float64Type).values()))
            .collect::<Result<Vec<_>, DataError>>()?;
        let mut row_values = vec![0.0; value_cols.len()];
        let bad = |name: &str, v: u8| pq_err(&path, format!("bad {name} value {v}"));
        for k in 0..b.num_rows() {
            if user[k] as usize >= size.users || item[k] as usize >= size.items {
                return Err(pq_err(
                    &path,
                    format!(
                        "row {} names user {} and item {}, but the catalogue has {} users and {} items",
                        visited + k as u64 + 1,
                        user[k],
                        item[k],
                        size.users,
                        size.items
                    ),
                ));
            }
            for (slot, col) in row_values.iter_mut().zip(&value_cols) {
                *slot = col[k];
            }
            visit(
                Event {
                    user: user[k],
                    item: item[k],
                    timestamp: timestamp[k],
                    positive: positive.is_valid(k) && positive.value(k),
                    split: Split::from_u8(split[k]).ok_or_else(|| bad("split", split[k]))?,
                    loo_split: Split::from_u8(loo_split[k])
                        .ok_or_else(|| bad("loo_split", loo_split[k]))?,
                },
                &row_values,
            );
        }
        visited += b.num_rows() as u64;
    }
    Ok(visited)
}

/// Any flat Parquet file as text rows (row numbers as lines), for the generic loader,
/// decoded one record batch at a time: only the current batch is held as text, so a large
/// log is not copied into strings whole (that copy was most of ingest's peak memory).
pub(crate) struct ParquetRows {
    path: std::path::PathBuf,
    header: Vec<String>,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// The current batch, column by column, as text.
    columns: Vec<std::vec::IntoIter<String>>,
    left_in_batch: usize,
    line: u64,
    failed: bool,
}

impl ParquetRows {
    fn next_batch(&mut self) -> Option<Result<(), DataError>> {
        let path = self.path.clone();
        let batch = match guarded(&path, || {
            self.reader.next().transpose().map_err(|e| pq_err(&path, e))
        }) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let columns: Result<Vec<Vec<String>>, DataError> = batch
            .columns()
            .iter()
            .zip(&self.header)
            .map(|(c, name)| to_strings(&path, name, c))
            .collect();
        match columns {
            Ok(columns) => {
                self.left_in_batch = batch.num_rows();
                self.columns = columns.into_iter().map(Vec::into_iter).collect();
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl Iterator for ParquetRows {
    type Item = Result<Row, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.left_in_batch == 0 {
            match self.next_batch()? {
                Ok(()) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.left_in_batch -= 1;
        self.line += 1;
        let fields = self
            .columns
            .iter_mut()
            .map(|c| c.next().unwrap_or_default())
            .collect();
        Some(Ok(Row {
            line: self.line,
            fields,
        }))
    }
}

/// Opens any flat Parquet file as text rows (see [`ParquetRows`]), with its column names.
/// Also returns the file's row count from its footer.
pub(crate) fn read_parquet_rows(path: &Path) -> Result<(Vec<String>, ParquetRows, u64), DataError> {
    let reader = guarded(path, || {
        let file =
            File::open(path).map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
        // A damaged `ARROW:schema` footer entry panics inside arrow-ipc (found by the loader
        // fuzz test); Parquet's own schema carries every type a data file needs.
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .and_then(|b| {
                let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
                Ok((b.with_batch_size(65_536).build()?, rows))
            })
            .map_err(|e| pq_err(path, e))
    })?;
    let (reader, total_rows) = reader;
    let header: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = ParquetRows {
        path: path.to_path_buf(),
        header: header.clone(),
        reader,
        columns: Vec::new(),
        left_in_batch: 0,
        line: 0,
        failed: false,
    };
    // A file without a row is empty, as a CSV file without one is.
    match rows.next_batch() {
        None => Err(DataError::Empty {
            file: path.to_path_buf(),
        }),
        Some(Err(e)) => Err(e),
        Some(Ok(())) => Ok((header, rows, total_rows)),
    }
}

fn to_strings(path: &Path, name: &str, c: &ArrayRef) -> Result<Vec<String>, DataError> {
    fn prim<T: ArrowPrimitiveType>(c: &ArrayRef) -> Vec<String>
    where
        T::Native: ToString,
    {
        let a = c.as_primitive::<T>();
        (0..a.len())
            .map(|i| {
                if a.is_valid(i) {
                    a.value(i).to_string()
                } else {
                    String::new()
                }
            })
            .collect()
    }
    Ok(match c.data_type() {
        DataType::Utf8 => c
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
        DataType::LargeUtf8 => c
            .as_string::<i64>()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
        DataType::Boolean => c
            .as_boolean()
            .iter()
            .map(|v| {
                v.map(|b| if b { "1" } else { "0" })
                    .unwrap_or_default()
                    .to_string()
            })
            .collect(),
        DataType::Int8 => prim::<Int8Type>(c),
        DataType::Int16 => prim::<Int16Type>(c),
        DataType::Int32 => prim::<Int32Type>(c),
        DataType::Int64 => prim::<Int64Type>(c),
        DataType::UInt8 => prim::<UInt8Type>(c),
        DataType::UInt16 => prim::<UInt16Type>(c),
        DataType::UInt32 => prim::<UInt32Type>(c),
        DataType::UInt64 => prim::<UInt64Type>(c),
        DataType::Float32 => prim::<Float32Type>(c),
        DataType::Float64 => prim::<Float64Type>(c),
        DataType::Timestamp(unit, _) => {
            let (values, div): (Vec<Option<i64>>, i64) = match unit {
                TimeUnit::Second => (c.as_primitive::<TimestampSecondType>().iter().collect(), 1),
                TimeUnit::Millisecond => (
                    c.as_primitive::<TimestampMillisecondType>()
                        .iter()
                        .collect(),
                    1_000,
                ),
                TimeUnit::Microsecond => (
                    c.as_primitive::<TimestampMicrosecondType>()
                        .iter()
                        .collect(),
                    1_000_000,
                ),
                TimeUnit::Nanosecond => (
                    c.as_primitive::<TimestampNanosecondType>().iter().collect(),
                    1_000_000_000,
                ),
            };
            values
                .into_iter()
                .map(|v| v.map(|t| t.div_euclid(div).to_string()).unwrap_or_default())
                .collect()
        }
        other => {
            return Err(pq_err(
                path,
                format!("column `{name}` has unsupported type {other}"),
            ))
        }
    })
}

//! A delimited-text reader that reports every problem with file and line.

use std::fs::File;
use std::path::{Path, PathBuf};

use wander_core::config::OnError;

use crate::{DataError, SkipCounts};

/// Text encoding of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8; invalid bytes are a row error.
    Utf8,
    /// ISO-8859-1 (GroupLens' `u.item`): every byte is a character.
    Latin1,
}

/// Options for [`Delimited`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub delimiter: u8,
    pub quoting: bool,
    pub has_header: bool,
    pub encoding: Encoding,
}

/// Reads one delimited file row by row.
pub(crate) struct Delimited {
    pub file: PathBuf,
    source: Source,
    record: csv::ByteRecord,
    max_line_bytes: u64,
    encoding: Encoding,
    pub header: Vec<String>,
    rows_read: u64,
    /// The file's length when it does not end with a newline: the row that reaches it was
    /// possibly cut short (a copy or download stopped mid-row).
    unterminated_len: Option<u64>,
    /// How much there is to read: the CSV file's bytes, or the rows of a decoded file.
    size: Option<u64>,
}

enum Source {
    Csv(csv::Reader<File>),
    /// Rows decoded elsewhere (a Parquet file's, batch by batch).
    Rows(Box<dyn Iterator<Item = Result<Row, DataError>>>),
}

/// One data row: its 1-based line number and fields.
pub(crate) struct Row {
    pub line: u64,
    pub fields: Vec<String>,
}

impl Delimited {
    pub fn open(path: &Path, dialect: Dialect, max_line_bytes: u64) -> Result<Self, DataError> {
        let mut file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing {
                    path: path.to_path_buf(),
                    hint: "check data.path and data.format".into(),
                }
            } else {
                DataError::Core(wander_core::CoreError::io(path, e))
            }
        })?;
        let unterminated_len = unterminated_length(&mut file)
            .map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
        let size = file.metadata().ok().map(|m| m.len());
        let reader = csv::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .quoting(dialect.quoting)
            .has_headers(false)
            .flexible(true)
            .from_reader(file);
        let mut me = Delimited {
            file: path.to_path_buf(),
            source: Source::Csv(reader),
            record: csv::ByteRecord::new(),
            max_line_bytes,
            encoding: dialect.encoding,
            header: Vec::new(),
            rows_read: 0,
            unterminated_len: None,
            size,
        };
        if dialect.has_header {
            match me.next_raw() {
                None => {
                    return Err(DataError::Empty {
                        file: me.file.clone(),
                    })
                }
                Some(Err(e)) => {
                    return Err(DataError::Header {
                        file: me.file.clone(),
                        message: e.to_string(),
                    })
                }
                Some(Ok(row)) => {
                    me.header = row
                        .fields
                        .iter()
                        .map(|f| f.trim().trim_start_matches('\u{feff}').to_string())
                        .collect();
                    for (i, h) in me.header.iter().enumerate() {
                        if me.header[..i].contains(h) {
                            return Err(DataError::Header {
                                file: me.file.clone(),
                                message: format!("column `{h}` appears twice"),
                            });
                        }
                    }
                }
            }
        }
        // Set after the header: a header-only file without a newline is reported as empty.
        me.unterminated_len = unterminated_len;
        Ok(me)
    }

    /// Rows already in memory (e.g. converted from Parquet), with the same interface.
    pub fn from_rows(
        file: &Path,
        header: Vec<String>,
        rows: impl Iterator<Item = Result<Row, DataError>> + 'static,
        total_rows: Option<u64>,
    ) -> Self {
        Delimited {
            file: file.to_path_buf(),
            source: Source::Rows(Box::new(rows)),
            record: csv::ByteRecord::new(),
            max_line_bytes: u64::MAX,
            encoding: Encoding::Utf8,
            header,
            rows_read: 0,
            unterminated_len: None,
            size: total_rows,
        }
    }

    /// Index of a header column, or a header error naming it.
    pub fn column(&self, name: &str) -> Result<usize, DataError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::Header {
                file: self.file.clone(),
                message: format!(
                    "missing column `{name}` (found: {})",
                    self.header.join(", ")
                ),
            })
    }

    /// The next data row; `None` at the end of the file. A row-level problem is an `Err`
    /// after which reading may continue.
    pub fn next_row(&mut self) -> Option<Result<Row, DataError>> {
        let row = self.next_raw();
        if matches!(row, Some(Ok(_))) {
            self.rows_read += 1;
        }
        row
    }

    /// Number of data rows returned so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// The share of the file read so far, in [0, 1] (None when its size is unknown).
    pub fn read_fraction(&self) -> Option<f64> {
        let size = self.size.filter(|&s| s > 0)? as f64;
        let done = match &self.source {
            Source::Csv(reader) => reader.position().byte() as f64,
            Source::Rows(_) => self.rows_read as f64,
        };
        Some((done / size).min(1.0))
    }

    fn next_raw(&mut self) -> Option<Result<Row, DataError>> {
        let reader = match &mut self.source {
            Source::Rows(rows) => return rows.next(),
            Source::Csv(reader) => reader,
        };
        match reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                Some(Err(DataError::Row {
                    file: self.file.clone(),
                    line,
                    message: format!("unreadable row: {e}"),
                    reason: "unreadable row",
                }))
            }
            Ok(true) => {
                let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                if self
                    .unterminated_len
                    .is_some_and(|len| reader.position().byte() >= len)
                {
                    return Some(Err(DataError::Row {
                        file: self.file.clone(),
                        line,
                        message: "the file ends in this row without a final newline: was it cut short? If the file is complete, end it with a newline".into(),
                        reason: "unterminated last row",
                    }));
                }
                let bytes =
                    (self.record.as_slice().len() + self.record.len().saturating_sub(1)) as u64;
                if bytes > self.max_line_bytes {
                    return Some(Err(DataError::Row {
                        file: self.file.clone(),
                        line,
                        message: format!(
                            "line of {bytes} bytes exceeds data.max_line_bytes = {}",
                            self.max_line_bytes
                        ),
                        reason: "line too long",
                    }));
                }
                let mut fields = Vec::with_capacity(self.record.len());
                for (i, raw) in self.record.iter().enumerate() {
                    if raw.contains(&0) {
                        return Some(Err(DataError::Row {
                            file: self.file.clone(),
                            line,
                            message: format!("field {} contains a NUL byte", i + 1),
                            reason: "NUL byte",
                        }));
                    }
                    match self.encoding {
                        Encoding::Latin1 => fields.push(raw.iter().map(|&b| b as char).collect()),
                        Encoding::Utf8 => match std::str::from_utf8(raw) {
                            Ok(s) => fields.push(s.to_string()),
                            Err(e) => {
                                return Some(Err(DataError::Row {
                                    file: self.file.clone(),
                                    line,
                                    message: format!(
                                        "field {} is not valid UTF-8 (byte {} of the field); convert the file to UTF-8",
                                        i + 1,
                                        e.valid_up_to()
                                    ),
                                    reason: "invalid UTF-8",
                                }))
                            }
                        },
                    }
                }
                Some(Ok(Row { line, fields }))
            }
        }
    }
}

/// The file's length when its last byte is not a newline (`None` for an empty file or one
/// that ends with `\n`); leaves the file positioned at its start.
fn unterminated_length(file: &mut File) -> std::io::Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    file.rewind()?;
    Ok((last[0] != b'\n').then_some(len))
}

/// Applies the fail-fast or skip-and-count policy to row-level errors.
pub(crate) struct Policy {
    pub on_error: OnError,
    pub skips: SkipCounts,
}

impl Policy {
    pub fn new(on_error: OnError) -> Self {
        Policy {
            on_error,
            skips: SkipCounts::default(),
        }
    }

    /// `Ok(Some(v))` for a good row, `Ok(None)` for a skipped one, `Err` to stop.
    pub fn check<T>(&mut self, r: Result<T, DataError>) -> Result<Option<T>, DataError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_row_level() && self.on_error == OnError::Skip => {
                self.skips.record(&e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Parses a finite number.
pub(crate) fn parse_f64(
    file: &Path,
    line: u64,
    column: &str,
    value: &str,
) -> Result<f64, DataError> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(DataError::field(
            file,
            line,
            column,
            value,
            "not a finite number",
        )),
        Err(_) => Err(DataError::field(file, line, column, value, "not a number")),
    }
}

/// Latest accepted timestamp: 3000-01-01 in unix seconds (a larger value is almost surely
/// milliseconds or garbage).
pub(crate) const MAX_TIMESTAMP: i64 = 32_503_680_000;

/// Parses a unix timestamp in seconds (integer, or a float with an integral value), from
/// 1970 to [`MAX_TIMESTAMP`].
pub(crate) fn parse_timestamp(
    file: &Path,
    line: u64,
    column: &str,
    value: &str,
) -> Result<i64, DataError> {
    let v = value.trim();
    let t = match v.parse::<i64>() {
        Ok(t) => t,
        Err(_) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
            Ok(f) if f.is_finite() && f.fract() != 0.0 => {
                return Err(DataError::field(
                    file,
                    line,
                    column,
                    value,
                    "a fractional timestamp: whole unix seconds are expected",
                ))
            }
            _ => {
                return Err(DataError::field(
                    file,
                    line,
                    column,
                    value,
                    "not a unix timestamp in seconds",
                ))
            }
        },
    };
    if !(0..=MAX_TIMESTAMP).contains(&t) {
        return Err(DataError::field(
            file,
            line,
            column,
            value,
            "outside 1970-01-01 .. 3000-01-01 in unix seconds (milliseconds? negative?)",
        ));
    }
    Ok(t)
}

/// Takes field `idx`, or reports a row whose field count is not `expected`.
pub(crate) fn field<'a>(
    file: &Path,
    row: &'a Row,
    idx: usize,
    expected: usize,
) -> Result<&'a str, DataError> {
    let found = row.fields.len();
    if found != expected {
        return Err(DataError::Row {
            file: file.to_path_buf(),
            line: row.line,
            message: if found < expected {
                format!("expected {expected} fields, found {found} (truncated row?)")
            } else {
                format!("expected {expected} fields, found {found} (an extra delimiter, or an unclosed quote that joined lines?)")
            },
            reason: "wrong field count",
        });
    }
    Ok(row.fields[idx].as_str())
}

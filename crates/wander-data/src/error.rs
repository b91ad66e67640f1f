use std::path::PathBuf;

/// Errors of loading and validating data. Row-level variants name file, line and column.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A field could not be parsed.
    #[error("{}:{line}: column `{column}`: {message} (value `{value}`)", file.display())]
    Field {
        /// The input file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The offending value (truncated to 80 characters).
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A row has the wrong shape.
    #[error("{}:{line}: {message}", file.display())]
    Row {
        /// The input file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
        /// Short reason for skip counts.
        reason: &'static str,
    },
    /// The file's header lacks a required column or is malformed.
    #[error("{}: header: {message}", file.display())]
    Header {
        /// The input file.
        file: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The file has no data rows.
    #[error("{}: the file is empty (no data rows)", file.display())]
    Empty {
        /// The input file.
        file: PathBuf,
    },
    /// A required file is missing.
    #[error("{}: not found; {hint}", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What to do.
        hint: String,
    },
    /// A configuration value does not fit the data.
    #[error("config: {key}: {message}")]
    Config {
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Parquet or Arrow failed on a file.
    #[error("{}: parquet: {message}", file.display())]
    Parquet {
        /// The file.
        file: PathBuf,
        /// The underlying message.
        message: String,
    },
    /// Filesystem or artifact error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
}

impl DataError {
    /// Whether skip mode may skip this error (it concerns one row only).
    pub fn is_row_level(&self) -> bool {
        matches!(self, DataError::Field { .. } | DataError::Row { .. })
    }

    /// A short reason for skip counts.
    pub fn reason(&self) -> &'static str {
        match self {
            DataError::Field { .. } => "bad value",
            DataError::Row { reason, .. } => reason,
            DataError::Header { .. } => "bad header",
            DataError::Empty { .. } => "empty file",
            DataError::Missing { .. } => "missing file",
            DataError::Config { .. } => "config",
            DataError::Parquet { .. } => "parquet",
            DataError::Core(_) => "io",
        }
    }

    pub(crate) fn field(
        file: &std::path::Path,
        line: u64,
        column: &str,
        value: &str,
        message: impl Into<String>,
    ) -> Self {
        let value: String = value.chars().take(80).collect();
        DataError::Field {
            file: file.to_path_buf(),
            line,
            column: column.to_string(),
            value,
            message: message.into(),
        }
    }
}

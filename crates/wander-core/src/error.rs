//! The error type shared by wander's foundation.

use std::path::PathBuf;

/// Result alias for [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors raised by configuration and artifact IO.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An operating-system error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration is invalid; `key` names the offending key (dotted path).
    #[error("config: {key}: {message}")]
    Config {
        /// Dotted key path, e.g. `data.positive`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A TOML file could not be parsed.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The TOML file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An artifact's bytes do not match the checksum its manifest recorded: it was truncated
    /// or corrupted after it was written. It is never read.
    #[error("{}: corrupted artifact: sha256 {actual} does not match the manifest's {expected}; rerun the stage with --force", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Checksum recorded in the manifest.
        expected: String,
        /// Checksum of the bytes on disk.
        actual: String,
    },
    /// A stage's artifacts are missing or unreadable.
    #[error("{}: {message}", path.display())]
    Artifact {
        /// The stage folder or file.
        path: PathBuf,
        /// What is missing and what to do.
        message: String,
    },
    /// JSON (de)serialisation failed for a named file.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

impl CoreError {
    /// Wraps an IO error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}

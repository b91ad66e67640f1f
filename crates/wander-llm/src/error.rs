//! Errors of the LLM runtime.

use std::path::PathBuf;

/// Result alias for [`LlmError`].
pub type Result<T, E = LlmError> = std::result::Result<T, E>;

/// Errors of loading, running and training models.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A tensor operation failed (shape mismatch, out of memory, ...).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model file is unreadable or lacks something.
    #[error("{}: {message}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Invalid arguments (empty candidate list, n = 0, ...).
    #[error("{0}")]
    Invalid(String),
    /// Filesystem or artifact error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
}

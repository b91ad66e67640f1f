//! The pipeline's error: what failed, with the context each layer adds. [`chain`] prints it
//! as one line, outermost first, like `train alignment failed; ...: no training labels: ...`.

use std::fmt::Display;

/// An error of a pipeline stage.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Invalid input, configuration or state, with what to do about it.
    #[error("{0}")]
    Invalid(String),
    /// An error with the context in which it happened. Its `Display` is the context alone;
    /// the cause is its `source()`, so a chain printer (anyhow's `{:#}`, [`chain`]) shows
    /// each part once.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// What went wrong.
        #[source]
        source: Box<PipelineError>,
    },
    /// Configuration, artifact store or IO error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
    /// Asset fetching error.
    #[error(transparent)]
    Assets(#[from] wander_assets::AssetError),
    /// Data loading or validation error.
    #[error(transparent)]
    Data(#[from] wander_data::DataError),
    /// LLM runtime error.
    #[error(transparent)]
    Llm(#[from] wander_llm::LlmError),
    /// The OpenAI-compatible server (`llm.backend = "openai"`).
    #[error(transparent)]
    OpenAi(#[from] wander_openai::OpenAiError),
    /// Taxonomy error.
    #[error(transparent)]
    Taxonomy(#[from] wander_taxonomy::TaxonomyError),
    /// Error of the exploration method.
    #[error(transparent)]
    Explore(#[from] wander_explore::ExploreError),
    /// Item-policy error.
    #[error(transparent)]
    Items(#[from] wander_items::ItemsError),
    /// Exploration-table error.
    #[error(transparent)]
    Table(#[from] wander_table::TableError),
    /// Serving-bundle error.
    #[error(transparent)]
    Bundle(#[from] wander_bundle::BundleError),
    /// Simulator error.
    #[error(transparent)]
    Sim(#[from] wander_sim::SimError),
    /// The service could not start or answer (the serve check).
    #[error(transparent)]
    Serve(#[from] wander_serve::ServeError),
    /// SQL engine error.
    #[cfg(feature = "engine")]
    #[error(transparent)]
    Engine(#[from] wander_engine::EngineError),
    /// Filesystem error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Parquet error.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow error.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Tensor error.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl PipelineError {
    /// An [`PipelineError::Invalid`] from any message (for `map_err`).
    pub fn msg(message: impl Display) -> Self {
        PipelineError::Invalid(message.to_string())
    }
}

/// The error and its causes as one line, outermost first, joined by `: ` (what anyhow's
/// `{:#}` prints).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Result alias for [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Adds context to an error (or turns a `None` into one).
pub trait ResultExt<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// Wraps the error with the context `f` makes (only on error).
    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<PipelineError>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> ResultExt<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(context.to_string()))
    }
    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(f().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_outermost_first() {
        let inner: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::other("disk full"));
        let e = inner
            .context("writing table.bin")
            .context("precompute failed")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "precompute failed",
            "Display is this level only"
        );
        assert_eq!(
            chain(&e),
            "precompute failed: writing table.bin: disk full",
            "each part once"
        );
        let none: Option<u8> = None;
        assert_eq!(
            none.context("no labels").unwrap_err().to_string(),
            "no labels"
        );
    }
}

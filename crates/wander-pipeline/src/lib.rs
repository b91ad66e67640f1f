//! wander's pipeline: every stage of the method as a library, behind one [`Stage`] trait.
//!
//! A stage reads the folders of the stages it declares ([`StageId::inputs`]) from the run
//! directory, writes its own folder through the crash-safe artifact store of `wander-core`
//! (skipped when its config slice and inputs are unchanged), and returns a [`Summary`].
//! [`stages::run_order`] is `wander run`; [`run::run_all`] runs it with progress lines.
//! The `wander` binary only parses flags, loads the configuration and dispatches here.
#![deny(missing_docs)]

/// Returns early with a [`PipelineError::Invalid`] made from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::PipelineError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

pub mod artifacts;
pub mod bench;
mod common;
mod describe;
mod error;
mod eval;
mod llm;
pub mod publish;
mod remote;
pub mod run;
mod stage;
pub mod stages;
pub mod summaries;

pub use error::{chain, PipelineError, Result, ResultExt};
pub use run::{run_all, RunSummary};
pub use stage::{Stage, StageId, Summary};

use wander_core::config::Config;

/// Everything a stage needs: the effective configuration.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// The effective configuration.
    pub config: Config,
}

impl StageContext {
    /// A context for `config`.
    pub fn new(config: Config) -> Self {
        StageContext { config }
    }

    /// The asset fetcher for this configuration.
    pub fn fetcher(&self) -> wander_assets::Fetcher {
        wander_assets::Fetcher {
            cache_dir: self.config.assets.cache_dir.clone(),
            pip: self.config.assets.pip.clone(),
            index_url: self.config.assets.index_url.clone(),
        }
    }
}

/// Writes a log line to stderr.
pub fn log(message: impl std::fmt::Display) {
    eprintln!("wander: {message}");
}

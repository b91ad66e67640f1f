//! Foundation of wander: typed errors, the configuration model, crash-safe artifact IO
//! (atomic writes, manifests, checksums), a small deterministic RNG, the small dense linear
//! algebra the taxonomy and the simulator share, and progress reporting.
//!
//! Every stage of the pipeline writes its outputs through [`artifact::StageWriter`], which
//! stages files under a temporary folder, fsyncs them and swaps the folder in only when the
//! stage has fully succeeded, so a failed or killed stage never damages earlier artifacts.
#![deny(missing_docs)]

pub mod artifact;
pub mod config;
pub mod error;
pub mod hash;
pub mod linalg;
pub mod progress;
pub mod rng;

pub use error::{CoreError, Result};

/// The version of wander that wrote an artifact; recorded in every manifest.
pub const WANDER_VERSION: &str = env!("CARGO_PKG_VERSION");

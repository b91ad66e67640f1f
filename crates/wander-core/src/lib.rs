//! Foundation of wander: typed errors, the configuration model, crash-safe artifact IO
//! (atomic writes, manifests, checksums), a small deterministic RNG, the small dense linear
//! algebra the taxonomy and the simulator share, progress reporting, and the
//! content-addressed store of what a model computed ([`store`]).
//!
//! Every stage of the pipeline writes its outputs through [`artifact::StageWriter`], which
//! stages files under a temporary folder, fsyncs them and swaps the folder in only when the
//! stage has fully succeeded, so a failed or killed stage never damages earlier artifacts.
#![deny(missing_docs)]

pub mod artifact;
pub mod config;
pub mod error;
pub mod float;
pub mod hash;
pub mod linalg;
pub mod memory;
pub mod progress;
pub mod rng;
pub mod store;

pub use error::{CoreError, Result};

/// The version of wander that wrote an artifact; recorded in every manifest.
pub const WANDER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cases per property in the parser fuzz tests: `default` in CI (a bounded time), or the
/// `WANDER_FUZZ_CASES` environment variable for a longer run
/// (`WANDER_FUZZ_CASES=20000 cargo test --release -p wander-data --test loaders`).
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("WANDER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

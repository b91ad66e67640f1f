//! No code: this crate exists for its `Cargo.toml`, which lists the features that the SQL
//! engine's dependencies turn on in crates the main build shares with it. Depending on it from
//! the binary makes `cargo build --release` and `cargo test --workspace --all-features` agree
//! on every shared crate's features, so the test build reuses what the main build compiled
//! (the pattern that rustc's own `rustc-workspace-hack` and cargo-hakari use).

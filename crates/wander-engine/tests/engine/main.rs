//! The engine's tests, one binary: DataFusion and Ballista are linked into one test
//! executable instead of one per file (each executable that links them adds its own code
//! generation and link of a very large dependency graph).

mod ballista;
mod common;
mod equality;
mod parse;

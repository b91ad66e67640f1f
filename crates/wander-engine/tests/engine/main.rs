//! The engine's tests, one binary: DataFusion and Ballista are linked into one test
//! executable instead of one per file (each link of them costs about a minute on 2 cores).

mod ballista;
mod common;
mod equality;
mod parse;

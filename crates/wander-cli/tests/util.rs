//! Helpers that drive the real `wander` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Folder of the committed test fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A `wander` command running in `cwd` with progress bars off and no inherited config.
pub fn wander(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wander"));
    cmd.current_dir(cwd)
        .env("WANDER_NO_PROGRESS", "1")
        .env_remove("WANDER_CONFIG");
    for (k, _) in std::env::vars() {
        if k.starts_with("WANDER__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs and returns output, asserting the process did not panic (exit code 101).
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("wander binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "wander panicked:\n{stderr}");
    assert_ne!(out.status.code(), Some(101), "wander panicked:\n{stderr}");
    out
}

/// Parses stdout as one JSON object.
pub fn json(out: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{s}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `(users, items, interactions)` of an ingest summary.
pub fn sizes(s: &serde_json::Value) -> (u64, u64, u64) {
    let get = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {s}"));
    (get("users"), get("items"), get("interactions"))
}

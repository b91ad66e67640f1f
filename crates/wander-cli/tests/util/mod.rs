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
        .env_remove("WANDER_CONFIG")
        .env_remove("WANDER_PROFILE");
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

/// One HTTP/1.1 request over a fresh connection: `(status, body)`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("server accepts connections");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A running `wander serve`, killed on drop.
pub struct Server {
    /// The child process.
    pub child: std::process::Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wander serve` with `args` (global options) and waits for its address.
pub fn start_server(cwd: &Path, args: &[String]) -> Result<Server, String> {
    use std::io::BufRead;
    let mut cmd = wander(cwd);
    for a in args {
        cmd.arg(a);
    }
    let mut child = cmd
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wander starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server { child, addr });
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = child.wait();
    Err(seen)
}

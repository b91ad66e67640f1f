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
    /// Its stderr lines after the `listening on` line, as they come.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Sends SIGTERM (what a rollout sends).
    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit: its status and the seconds waited; panics after
    /// `limit_seconds`.
    pub fn wait_exit(&mut self, limit_seconds: f64) -> (std::process::ExitStatus, f64) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed().as_secs_f64());
            }
            assert!(
                started.elapsed().as_secs_f64() < limit_seconds,
                "the service did not exit within {limit_seconds} s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
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
            let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            return Ok(Server { child, addr, log });
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = child.wait();
    Err(seen)
}

/// What a keep-alive load run saw; see [`keepalive_load`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    /// Requests answered 200 with a whole body.
    pub answered: u64,
    /// Requests that got anything else: another status, a cut answer, a reset after the
    /// request was sent on a fresh connection.
    pub failed: u64,
    /// Requests whose kept-alive connection was closed before a single byte came back (the
    /// server closed it as idle, the inherent HTTP/1.1 race; clients retry these), retried
    /// once on a new connection.
    pub retried: u64,
    /// Connections refused once the server had stopped listening (the load balancer's
    /// business, not a failed request).
    pub refused_after_stop: u64,
}

/// `threads` clients send `POST path` with `body` over kept-alive connections until `stop`
/// is set or, after `stopping` is set, the server refuses new connections; they honour
/// `connection: close`.
pub fn keepalive_load(
    addr: &str,
    threads: usize,
    path: &str,
    body: &[u8],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> LoadStats {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes()
    .into_iter()
    .chain(body.iter().copied())
    .collect::<Vec<u8>>();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (addr, request) = (addr.to_string(), request.clone());
            let (stop, stopping) = (stop.clone(), stopping.clone());
            std::thread::spawn(move || {
                let mut stats = LoadStats::default();
                let mut conn: Option<BufReader<std::net::TcpStream>> = None;
                let mut retrying = false;
                while !stop.load(Ordering::Relaxed) {
                    let fresh = conn.is_none();
                    if fresh {
                        match std::net::TcpStream::connect(&addr) {
                            Ok(s) => {
                                s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                                    .unwrap();
                                conn = Some(BufReader::new(s));
                            }
                            Err(_) if stopping.load(Ordering::Relaxed) => {
                                stats.refused_after_stop += 1;
                                break;
                            }
                            Err(e) => panic!("connect before the stop: {e}"),
                        }
                    }
                    let c = conn.as_mut().unwrap();
                    let sent = c.get_mut().write_all(&request).is_ok();
                    // The status line, headers, then a body of content-length bytes.
                    let mut status = String::new();
                    let got = sent && c.read_line(&mut status).map_or(0, |n| n) > 0;
                    if !got {
                        conn = None;
                        if !fresh && !retrying {
                            stats.retried += 1;
                            retrying = true;
                            continue;
                        }
                        stats.failed += 1;
                        retrying = false;
                        continue;
                    }
                    retrying = false;
                    let (mut length, mut close) = (None, false);
                    loop {
                        let mut h = String::new();
                        if c.read_line(&mut h).map_or(0, |n| n) == 0 {
                            break;
                        }
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            length = v.trim().parse::<usize>().ok();
                        }
                        if h.starts_with("connection:") && h.contains("close") {
                            close = true;
                        }
                    }
                    let mut payload = vec![0u8; length.unwrap_or(0)];
                    let whole = length.is_some() && c.read_exact(&mut payload).is_ok();
                    if whole && status.starts_with("HTTP/1.1 200") {
                        stats.answered += 1;
                    } else {
                        stats.failed += 1;
                        close = true;
                    }
                    if close {
                        conn = None;
                    }
                }
                stats
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(LoadStats::default(), |a, b| LoadStats {
            answered: a.answered + b.answered,
            failed: a.failed + b.failed,
            retried: a.retried + b.retried,
            refused_after_stop: a.refused_after_stop + b.refused_after_stop,
        })
}

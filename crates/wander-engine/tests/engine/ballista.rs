//! A real Ballista scheduler and two executors, each its own process on loopback, run the plans;
//! the results must equal the embedded engine's and the in-memory miners'.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::{in_memory, random_log, read_outputs, write_tables};
use wander_engine::{sql, Embedded, Engine, Inputs};

/// Kills the child process when dropped, so a failing test leaves no server behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_scheduler() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wander-ballista"))
        .arg("scheduler")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wander-ballista scheduler");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("scheduler prints its address");
    let url = v["scheduler"].as_str().unwrap().to_string();
    (Server(child), url)
}

#[test]
fn ballista_cluster_matches_embedded_engine_and_in_memory_miners() {
    let (_scheduler, url) = start_scheduler();
    assert!(url.starts_with("ballista://localhost:"), "{url}");
    // Two executors, each its own process, so the plans' stages are spread over processes.
    let _executors: Vec<Server> = (0..2)
        .map(|_| {
            Server(
                Command::new(env!("CARGO_BIN_EXE_wander-ballista"))
                    .args(["executor", "--scheduler", &url, "--cores", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start wander-ballista executor"),
            )
        })
        .collect();
    let log = random_log(3, 50, 40, 6, 80);
    let dir = tempfile::tempdir().unwrap();
    write_tables(&log, dir.path(), 3);
    let inputs = Inputs {
        events: dir.path().join("events"),
        clusters: dir.path().join("clusters.parquet"),
    };
    let queries = sql::all(&sql::Signal::Positive, 3);
    let embedded = Engine::Embedded(Embedded {
        memory_limit: 256 << 20,
        partitions: 2,
        spill_dir: None,
    });
    let remote = Engine::parse(
        &url,
        Embedded {
            memory_limit: 0,
            partitions: 0,
            spill_dir: None,
        },
    )
    .unwrap();
    assert!(matches!(remote, Engine::Ballista { .. }));
    wander_engine::run(&embedded, &inputs, &queries, &dir.path().join("embedded")).unwrap();
    // The executor registers asynchronously; the scheduler queues the job until it has.
    let summary =
        wander_engine::run(&remote, &inputs, &queries, &dir.path().join("ballista")).unwrap();
    assert_eq!(summary.engine, url);
    assert_eq!(summary.events, log.ds.interactions.len() as u64);
    let on_ballista = read_outputs(&dir.path().join("ballista"));
    assert_eq!(on_ballista, read_outputs(&dir.path().join("embedded")));
    let reference = in_memory(
        &log,
        wander_explore::feedback::EventSignal::Positive,
        usize::MAX,
        3,
    );
    assert!(!reference.0.is_empty() && !reference.1.is_empty() && !reference.2.is_empty());
    assert_eq!(on_ballista, reference);
}

#[test]
fn unreachable_scheduler_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = random_log(1, 5, 5, 2, 10);
    write_tables(&log, dir.path(), 1);
    let inputs = Inputs {
        events: dir.path().join("events"),
        clusters: dir.path().join("clusters.parquet"),
    };
    // Port 9 (discard) on loopback: nothing listens there.
    let remote = Engine::parse(
        "ballista://127.0.0.1:9",
        Embedded {
            memory_limit: 0,
            partitions: 0,
            spill_dir: None,
        },
    )
    .unwrap();
    let e = wander_engine::run(
        &remote,
        &inputs,
        &sql::all(&sql::Signal::Positive, 2),
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("ballista://127.0.0.1:9"), "{e}");
}

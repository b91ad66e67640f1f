//! A one-box Apache DataFusion Ballista cluster on loopback, for trying
//! `wander aggregate --engine ballista://...` and for the integration tests.
//!
//! `wander-ballista scheduler` starts a scheduler and prints its address as JSON
//! (`{"scheduler": "ballista://localhost:PORT"}`) on stdout; `wander-ballista executor
//! --scheduler ballista://localhost:PORT` starts an executor that registers with it;
//! `wander-ballista local` starts both in one process. Each runs until interrupted. Production
//! clusters use the Ballista project's own scheduler and executor binaries or images: the
//! plans are the same.

use std::io::Write;

use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::BallistaCodec;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wander-ballista",
    version,
    about = "A one-box Ballista cluster on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a scheduler on a free loopback port and print its address.
    Scheduler,
    /// Start an executor registered with a scheduler.
    Executor {
        /// The scheduler, `ballista://HOST:PORT`.
        #[arg(long)]
        scheduler: String,
        /// Task slots (0: one per core).
        #[arg(long, default_value_t = 0)]
        cores: usize,
    },
    /// Start a scheduler and an executor in this process and print the scheduler's address.
    Local {
        /// Task slots of the executor (0: one per core).
        #[arg(long, default_value_t = 0)]
        cores: usize,
    },
}

fn cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

async fn start_scheduler() -> anyhow::Result<String> {
    let addr = ballista_scheduler::standalone::new_standalone_scheduler()
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the scheduler: {e}"))?;
    Ok(format!("ballista://localhost:{}", addr.port()))
}

async fn start_executor(scheduler: &str, slots: usize) -> anyhow::Result<()> {
    let rest = scheduler
        .strip_prefix("ballista://")
        .or_else(|| scheduler.strip_prefix("df://"))
        .ok_or_else(|| {
            anyhow::anyhow!("--scheduler must be ballista://HOST:PORT, not {scheduler}")
        })?;
    let url = format!("http://{rest}");
    let mut tries = 0;
    let client = loop {
        match SchedulerGrpcClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(e) if tries >= 100 => anyhow::bail!("cannot reach the scheduler at {url}: {e}"),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    ballista_executor::new_standalone_executor(client, cores(slots), BallistaCodec::default())
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the executor: {e}"))
}

fn announce(scheduler: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::json!({ "scheduler": scheduler }));
    let _ = out.flush();
}

async fn until_interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(wander_engine::WORKER_STACK_BYTES)
        .enable_all()
        .build()?
        .block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Scheduler => announce(&start_scheduler().await?),
        Command::Executor { scheduler, cores } => {
            start_executor(&scheduler, cores).await?;
            eprintln!("executor registered with {scheduler}");
        }
        Command::Local { cores } => {
            let scheduler = start_scheduler().await?;
            start_executor(&scheduler, cores).await?;
            announce(&scheduler);
        }
    }
    until_interrupted().await;
    Ok(())
}

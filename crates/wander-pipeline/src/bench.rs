//! `wander bench llm`: the LLM runtime benchmark, alone or under each thread setting.

use serde_json::json;
use serde_json::Value;

use crate::common::model_q8;
use crate::log;
use crate::StageContext;

/// What `wander bench llm` measures and writes besides its figures.
#[derive(Debug, Clone, Default)]
pub struct LlmBenchOptions {
    /// Number of synthetic allowed answers (ignored with `from_run`).
    pub candidates: usize,
    /// LoRA optimizer steps for the training figure.
    pub train_steps: usize,
    /// Use the configured run's precompute prompt for its first two clusters and its
    /// clusters' descriptions as the allowed answers, instead of the synthetic ones.
    pub from_run: bool,
    /// Write the LoRA figure's workload here (for `scripts/peer_peft.sh`).
    pub sft_workload: Option<std::path::PathBuf>,
    /// Write the inference figures' workload here (for `scripts/peer_llamacpp.sh`).
    pub decode_workload: Option<std::path::PathBuf>,
}

/// The precompute's novelty prompt for the run's clusters 0 then 1, and every planner
/// cluster's description as an allowed answer.
fn run_prompt(ctx: &StageContext) -> crate::Result<wander_llm::bench::BenchPrompt> {
    let run = wander_core::artifact::RunDir::open(&ctx.config.run.dir)?;
    let tax =
        wander_taxonomy::read(crate::artifacts::open(&run, crate::StageId::Taxonomy)?.reader())?;
    let answers: Vec<String> = tax
        .planner_clusters()
        .iter()
        .map(|c| c.description.clone())
        .collect();
    if answers.len() < 2 {
        crate::bail!(
            "bench llm --from-run: the taxonomy of {} has {} planner clusters; it needs two",
            ctx.config.run.dir.display(),
            answers.len()
        );
    }
    Ok(wander_llm::bench::BenchPrompt::Given {
        system: wander_explore::sft::SYSTEM.to_string(),
        user: wander_explore::sft::user_message(&answers[0], &answers[1]),
        answers,
    })
}

/// Writes `work` with the model's path added, as JSON, to `path`.
fn write_workload<T: serde::Serialize>(
    path: &std::path::Path,
    q8: &std::path::Path,
    work: &T,
) -> crate::Result<()> {
    let mut v = serde_json::to_value(work)?;
    v["model"] = json!(q8.display().to_string());
    std::fs::write(path, serde_json::to_vec(&v)?)
        .map_err(|e| wander_core::CoreError::io(path, e))?;
    Ok(())
}

/// `wander bench llm`.
pub fn bench_llm(ctx: &StageContext, options: &LlmBenchOptions) -> crate::Result<Value> {
    let q8 = model_q8(ctx)?;
    let source = if options.from_run {
        run_prompt(ctx)?
    } else {
        wander_llm::bench::BenchPrompt::Synthetic {
            candidates: options.candidates,
        }
    };
    // The workloads are written first, so that a peer can run while this bench does.
    if let Some(path) = &options.sft_workload {
        let work = wander_llm::bench::sft_workload(&q8, &source, options.train_steps)?;
        write_workload(path, &q8, &work)?;
        log(format!(
            "bench llm: the LoRA workload ({} examples, batch {}, {} steps) is in {}",
            work.examples.len(),
            work.batch_size,
            work.steps,
            path.display()
        ));
    }
    if let Some(path) = &options.decode_workload {
        let work = wander_llm::bench::decode_workload(&q8, &source)?;
        write_workload(path, &q8, &work)?;
        log(format!(
            "bench llm: the inference workload ({}-token prompt, {} allowed answers) is in {}",
            work.prompt.len(),
            work.answers.len(),
            path.display()
        ));
    }
    let spinner = wander_core::progress::spinner("bench llm");
    spinner.set_message("measuring prefill, decode, sampling, scoring, LoRA training");
    let report = wander_llm::bench::bench_llm(&q8, &source, options.train_steps)?;
    spinner.finish_and_clear();
    let mut v = serde_json::to_value(&report)?;
    let goals = json!({
        "constrained16_at_most_1s": report.constrained16_seconds <= 1.0,
        "lora_train_at_least_100_tok_s": report.lora_train_tokens_per_s >= 100.0,
        "decode_at_least_60_tok_s": report.decode_tokens_per_s_single >= 60.0,
    });
    v["goals_met"] = goals;
    Ok(v)
}

/// `wander bench llm --matrix`: the bench under each thread setting, in child processes
/// (candle reads the settings once per process).
pub fn bench_llm_matrix(
    ctx: &StageContext,
    candidates: usize,
    train_steps: usize,
) -> crate::Result<Value> {
    model_q8(ctx)?; // fetch and repack once, before the children run
    let exe = std::env::current_exe()?;
    let variants: [(&str, &[(&str, &str)]); 4] = [
        ("candle defaults", &[]),
        ("RAYON_NUM_THREADS=1", &[("RAYON_NUM_THREADS", "1")]),
        (
            "CANDLE_BARRIER_POOL_SPIN_LIMIT=100",
            &[("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100")],
        ),
        (
            "both",
            &[
                ("RAYON_NUM_THREADS", "1"),
                ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100"),
            ],
        ),
    ];
    let mut out = serde_json::Map::new();
    for (label, envs) in variants {
        log(format!("bench llm under {label}"));
        let mut cmd = std::process::Command::new(&exe);
        cmd.env("WANDER_NO_THREAD_DEFAULTS", "1")
            .env_remove("RAYON_NUM_THREADS")
            .env_remove("CANDLE_BARRIER_POOL_SPIN_LIMIT");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(c) = std::env::args().skip_while(|a| a != "--config").nth(1) {
            cmd.args(["--config", &c]);
        }
        let o = cmd
            .args([
                "--json",
                "bench",
                "llm",
                "--candidates",
                &candidates.to_string(),
                "--train-steps",
                &train_steps.to_string(),
            ])
            .output()?;
        if !o.status.success() {
            crate::bail!(
                "bench under {label} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out.insert(label.into(), serde_json::from_slice(&o.stdout)?);
    }
    Ok(Value::Object(out))
}

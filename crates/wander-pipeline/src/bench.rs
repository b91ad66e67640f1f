//! `wander bench llm`: the LLM runtime benchmark, alone or under each thread setting.

use serde_json::json;
use serde_json::Value;

use crate::common::model_q8;
use crate::log;
use crate::StageContext;

/// `wander bench llm`.
pub fn bench_llm(
    ctx: &StageContext,
    candidates: usize,
    train_steps: usize,
    sft_workload: Option<&std::path::Path>,
) -> crate::Result<Value> {
    let q8 = model_q8(ctx)?;
    if let Some(path) = sft_workload {
        // Written first, so that a peer can run while this bench does.
        let work = wander_llm::bench::sft_workload(&q8, candidates, train_steps)?;
        let mut v = serde_json::to_value(&work)?;
        v["model"] = json!(q8.display().to_string());
        let bytes = serde_json::to_vec(&v)?;
        std::fs::write(path, bytes).map_err(|e| wander_core::CoreError::io(path, e))?;
        log(format!(
            "bench llm: the LoRA workload ({} examples, batch {}, {} steps) is in {}",
            work.examples.len(),
            work.batch_size,
            work.steps,
            path.display()
        ));
    }
    let spinner = wander_core::progress::spinner("bench llm");
    spinner.set_message("measuring prefill, decode, sampling, scoring, LoRA training");
    let report = wander_llm::bench::bench_llm(&q8, candidates, train_steps)?;
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

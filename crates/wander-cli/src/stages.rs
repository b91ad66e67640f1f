//! The stages behind the subcommands, each reading and writing the run directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};
use wander_core::artifact::{RunDir, StageOutcome};
use wander_core::config::Config;
use wander_core::hash::sha256_file;

use crate::{log, Ctx};

/// `wander assets fetch`: fetches the named assets (all when empty).
pub fn fetch_assets(ctx: &Ctx, names: &[String]) -> anyhow::Result<Value> {
    let fetcher = ctx.fetcher();
    let wanted: Vec<&'static wander_assets::Asset> = if names.is_empty() {
        wander_assets::ASSETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| wander_assets::asset(n))
            .collect::<Result<_, _>>()?
    };
    let mut out = serde_json::Map::new();
    for a in wanted {
        if !fetcher.is_verified(a) {
            log(format!("fetching {} ({})", a.requirement, a.description));
        }
        let f = fetcher.fetch(a)?;
        out.insert(
            a.name.into(),
            json!({"dir": f.dir, "cached": f.cached, "requirement": a.requirement}),
        );
    }
    Ok(Value::Object(out))
}

/// A stage's summary with how it went, as printed by `--json`.
fn report(stage: &str, outcome: &StageOutcome) -> Value {
    let m = outcome.manifest();
    let mut summary = m.summary.clone();
    if let Value::Object(map) = &mut summary {
        map.insert("stage".into(), json!(stage));
        map.insert("skipped".into(), json!(outcome.skipped()));
        map.insert("wall_seconds".into(), json!(m.wall_seconds));
    }
    if outcome.skipped() {
        log(format!(
            "{stage}: up to date (inputs and config unchanged; --force redoes it)"
        ));
    }
    summary
}

fn checksums(files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
    files
        .iter()
        .map(|f| Ok((f.display().to_string(), sha256_file(f)?)))
        .collect()
}

/// `wander ingest`.
pub fn ingest(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let cfg = &ctx.config.data;
    let root = ctx.fetcher().resolve(&cfg.path)?;
    let inputs = checksums(&wander_data::input_files(cfg, &root))?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let outcome = run.run_stage("ingest", Config::slice(cfg), inputs, force, |w| -> anyhow::Result<Value> {
        let spinner = wander_core::progress::spinner("ingest");
        spinner.set_message(format!("reading {}", root.display()));
        let loaded = wander_data::load(cfg, &root)?;
        spinner.set_message("writing parquet");
        wander_data::write_dataset(w, &loaded.dataset)?;
        spinner.finish_and_clear();
        let stats = loaded.dataset.stats();
        for example in &loaded.skips.examples {
            log(format!("skipped: {example}"));
        }
        Ok(json!({
            "data_path": root,
            "format": cfg.format,
            "positive_rule": cfg.positive,
            "users": stats.users,
            "items": stats.items,
            "items_with_interactions": stats.items_with_interactions,
            "interactions": stats.interactions,
            "positives": stats.positives,
            "positive_rate": stats.positive_rate,
            "density": stats.density,
            "time_min": stats.time_min,
            "time_max": stats.time_max,
            "temporal_split": {"train": stats.temporal_split[0], "valid": stats.temporal_split[1], "test": stats.temporal_split[2]},
            "leave_last_out": {"train": stats.leave_last_out[0], "valid": stats.leave_last_out[1], "test": stats.leave_last_out[2]},
            "feedback_columns": stats.feedback_columns,
            "skipped_rows": loaded.skips.skipped_rows,
            "skipped_by_reason": loaded.skips.by_reason,
        }))
    })
    .context("ingest failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("ingest", &outcome))
}

/// One-line human summary of a stage.
pub fn describe(summary: &Value) -> String {
    let stage = summary["stage"].as_str().unwrap_or("stage");
    match stage {
        "ingest" => format!(
            "ingest: {} users, {} items, {} interactions, {} positives ({}), {} skipped rows",
            summary["users"],
            summary["items"],
            summary["interactions"],
            summary["positives"],
            summary["positive_rule"].as_str().unwrap_or(""),
            summary["skipped_rows"]
        ),
        _ => summary.to_string(),
    }
}

/// `wander run`: every stage that exists, in order.
pub fn run_all(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let mut stages = serde_json::Map::new();
    let assets = fetch_assets(ctx, &[])?;
    stages.insert("assets".into(), assets);
    let ingest = ingest(ctx, force)?;
    log(describe(&ingest));
    stages.insert("ingest".into(), ingest);
    Ok(json!({"run_dir": ctx.config.run.dir, "stages": stages}))
}

/// The configured model, fetched and repacked to Q8_0 (once).
pub fn model_q8(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let spec = &ctx.config.llm.model;
    let path = if spec == "asset:smollm2" {
        ctx.fetcher().main_file("smollm2")?
    } else {
        ctx.fetcher().resolve(spec)?
    };
    if !path.is_file() {
        anyhow::bail!("{}: model file not found (llm.model)", path.display());
    }
    log(format!(
        "model {} (Q8_0 repack cached beside it)",
        path.display()
    ));
    Ok(wander_llm::gguf::q8_0_path(&path)?)
}

/// `wander bench llm`.
pub fn bench_llm(ctx: &Ctx, candidates: usize, train_steps: usize) -> anyhow::Result<Value> {
    let q8 = model_q8(ctx)?;
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
pub fn bench_llm_matrix(ctx: &Ctx, candidates: usize, train_steps: usize) -> anyhow::Result<Value> {
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
            anyhow::bail!(
                "bench under {label} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out.insert(label.into(), serde_json::from_slice(&o.stdout)?);
    }
    Ok(Value::Object(out))
}

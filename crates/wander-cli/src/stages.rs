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
pub(crate) fn report(stage: &str, outcome: &StageOutcome) -> Value {
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

pub(crate) fn checksums(files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
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
        "taxonomy" => format!(
            "taxonomy: {} coarse / {} fine clusters, coherence {:.2} (random {:.2}), genre purity {:.2} (random {:.2}); report: {}",
            summary["coarse_clusters"], summary["fine_clusters"], summary["coherence_text"].as_f64().unwrap_or(0.0), summary["coherence_text_random"].as_f64().unwrap_or(0.0),
            summary["genre_purity"].as_f64().unwrap_or(0.0), summary["genre_purity_random"].as_f64().unwrap_or(0.0), summary["report"].as_str().unwrap_or("")
        ),
        "transitions" => format!(
            "transitions: train {} over {} pairs (top 10% targets: {:.0}%), test {}; {} fine-tuning examples",
            summary["train"]["transitions"], summary["train"]["pairs"], 100.0 * summary["train"]["top10pct_target_share"].as_f64().unwrap_or(0.0),
            summary["test"]["transitions"], summary["sft_examples"]
        ),
        "train_novelty" => format!(
            "train novelty: {} steps, loss {:.3} -> {:.3}, {:.0} tokens/s, {:.1} min",
            summary["steps"], summary["first_loss"].as_f64().unwrap_or(0.0), summary["final_loss"].as_f64().unwrap_or(0.0),
            summary["tokens_per_s"].as_f64().unwrap_or(0.0), summary["wall_seconds"].as_f64().unwrap_or(0.0) / 60.0
        ),
        "eval_novelty" => {
            let m = &summary["methods"];
            let f = |k: &str, x: &str| m[k][x]["mean"].as_f64().unwrap_or(f64::NAN);
            format!(
                "eval novelty on {} test events: hit@5 fine-tuned {:.3}, zero-shot {:.3}, co-occurrence {:.3}, random {:.3}; exact match {:.3}; report: {}",
                summary["events"], f("fine_tuned", "hit_at_5"), f("zero_shot", "hit_at_5"), f("cooccurrence", "hit_at_5"), f("random", "hit_at_5"),
                f("fine_tuned", "exact_match"), summary["report"].as_str().unwrap_or("")
            )
        }
        "feedback" => format!(
            "feedback: {} train labels over {} pairs (mean {:.3}), {} test labels; {} events in training",
            summary["train"]["labels"], summary["train"]["pairs"], summary["train"]["label_mean"].as_f64().unwrap_or(f64::NAN),
            summary["test"]["labels"], summary["train"]["events"]
        ),
        "train_alignment" => format!(
            "train alignment: {} steps on {} pairs ({} labels), loss {:.4} -> {:.4}, {:.1} min",
            summary["steps"], summary["pairs"], summary["labels"], summary["first_loss"].as_f64().unwrap_or(0.0),
            summary["final_loss"].as_f64().unwrap_or(0.0), summary["wall_seconds"].as_f64().unwrap_or(0.0) / 60.0
        ),
        "eval_alignment" => {
            let m = &summary["methods"];
            let f = |k: &str| m[k]["spearman"]["mean"].as_f64().unwrap_or(f64::NAN);
            format!(
                "eval alignment on {} held-out triples: Spearman LLM {:.3}, cluster rate {:.3}, linear {:.3}. {}",
                summary["triples"], f("alignment_llm"), f("cluster_global_rate"), f("linear_embeddings"), summary["verdict"].as_str().unwrap_or("")
            )
        }
        "precompute" => format!(
            "precompute: {} pairs, n = {}, {} mode, {:.2} pairs/s, {} fallbacks",
            summary["pairs"], summary["n"], summary["mode"].as_str().unwrap_or(""), summary["pairs_per_s"].as_f64().unwrap_or(0.0), summary["fallbacks"]
        ),
        "eval_scaling" => format!(
            "eval scaling on {} events: hit@1 gain {:+.3}, feedback gain {:+.4}, novelty above co-occurrence: {}; report: {}",
            summary["events"], summary["claim"]["hit_at_1_gain"].as_f64().unwrap_or(f64::NAN), summary["claim"]["feedback_gain"].as_f64().unwrap_or(f64::NAN),
            summary["claim"]["novelty_above_cooccurrence"], summary["report"].as_str().unwrap_or("")
        ),
        "train_items" => format!(
            "train items: {} epochs (best {}), valid NDCG@10 {:.4}, {:.1} s/epoch",
            summary["epochs"], summary["best_epoch"], summary["best_valid_ndcg10"].as_f64().unwrap_or(0.0), summary["seconds_per_epoch"].as_f64().unwrap_or(0.0)
        ),
        "eval_items" => format!(
            "eval items on {} users: NDCG@10 SASRec {:.4}, popularity {:.4}; restricted retrieval p99 {:.3} ms; report: {}",
            summary["users"], summary["methods"]["sasrec"]["ndcg_at_10"]["mean"].as_f64().unwrap_or(f64::NAN),
            summary["methods"]["popularity"]["ndcg_at_10"]["mean"].as_f64().unwrap_or(f64::NAN),
            summary["retrieval"]["latency_ms_p99"].as_f64().unwrap_or(f64::NAN), summary["report"].as_str().unwrap_or("")
        ),
        "aggregate" => format!(
            "aggregate on {}: {} events x {} queries in {:.1} s ({:.0} events/s), peak memory {:.0} MiB{}",
            summary["engine"].as_str().unwrap_or(""), summary["events"], summary["queries"].as_array().map_or(0, Vec::len),
            summary["seconds"].as_f64().unwrap_or(0.0), summary["events_per_second"].as_f64().unwrap_or(0.0),
            summary["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            if summary["matches_in_memory"] == true { "; identical to the in-memory miners" } else { "" }
        ),
        "report" => format!("report: {} sections, {} figures; open {}", summary["sections"].as_array().map_or(0, Vec::len), summary["figures"], summary["html"].as_str().unwrap_or("")),
        "eval" => {
            let st = &summary["strategies"];
            let names: Vec<String> = st.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let parts: Vec<String> = names.iter().map(|n| format!("{n} {:.3}", st[n]["hit_at_k"]["mean"].as_f64().unwrap_or(f64::NAN))).collect();
            format!("eval on {} events: hit@k {}; report: {}", summary["events"], parts.join(", "), summary["report"].as_str().unwrap_or(""))
        }
        "simulate" | "simulate_aa" => {
            let arms = summary["arms"].as_array().cloned().unwrap_or_default();
            let effects: Vec<String> = arms.iter().skip(1).filter_map(|a| a.as_str()).map(|a| {
                let e = &summary["effects"][a]["positive_rate"];
                format!("{a}: positive rate {:+.2}% [{:+.2}, {:+.2}]", e["relative_pct"].as_f64().unwrap_or(f64::NAN), e["lo"].as_f64().unwrap_or(f64::NAN), e["hi"].as_f64().unwrap_or(f64::NAN))
            }).collect();
            format!("{stage}: {} users x {} days x {} seeds in {:.1} s; vs {}: {}; report: {}", summary["users"], summary["days"], summary["seeds"], summary["seconds"].as_f64().unwrap_or(0.0), arms.first().and_then(|a| a.as_str()).unwrap_or(""), effects.join("; "), summary["report"].as_str().unwrap_or(""))
        }
        _ => summary.to_string(),
    }
}

/// One step of `wander run`.
struct RunStep {
    /// Key in the run summary (the stage's folder name where it has one).
    key: &'static str,
    /// What the progress lines call it.
    label: &'static str,
    run: fn(&Ctx, bool) -> anyhow::Result<Value>,
}

/// Every step of `wander run`, in order.
const RUN_STEPS: [RunStep; 17] = [
    RunStep { key: "assets", label: "assets", run: |c, _| fetch_assets(c, &[]) },
    RunStep { key: "ingest", label: "ingest", run: ingest },
    RunStep { key: "taxonomy", label: "taxonomy", run: taxonomy },
    RunStep { key: "transitions", label: "transitions", run: transitions },
    RunStep { key: "train_novelty", label: "train novelty", run: train_novelty },
    RunStep { key: "eval_novelty", label: "eval novelty", run: eval_novelty },
    RunStep { key: "train_items", label: "train items", run: crate::items::train_items },
    RunStep { key: "eval_items", label: "eval items", run: crate::items::eval_items },
    RunStep { key: "feedback", label: "feedback", run: crate::align::feedback_stage },
    RunStep { key: "train_alignment", label: "train alignment", run: crate::align::train_alignment },
    RunStep { key: "eval_alignment", label: "eval alignment", run: crate::align::eval_alignment },
    RunStep { key: "precompute", label: "precompute", run: |c, f| crate::align::precompute(c, f, None, false) },
    RunStep { key: "eval_scaling", label: "eval scaling", run: crate::align::eval_scaling },
    RunStep { key: "eval", label: "eval", run: crate::harness::eval_all },
    RunStep { key: "simulate", label: "simulate", run: |c, f| crate::simulate::simulate_stage(c, f, false) },
    RunStep { key: "report", label: "report", run: crate::report::report_stage },
    RunStep { key: "serve_check", label: "serve check", run: serve_check },
];

/// `wander run`: every step in order, with a progress line before and after each (step i of
/// N, elapsed time; long stages draw their own bars with an ETA) and every step's wall time
/// in the summary.
pub fn run_all(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let run_started = std::time::Instant::now();
    let total = RUN_STEPS.len();
    if ctx.config.run.smoke {
        log(format!(
            "smoke run into {}: every stage with small settings; its figures are not results",
            ctx.config.run.dir.display()
        ));
    }
    let mut stages = serde_json::Map::new();
    let mut wall = serde_json::Map::new();
    for (i, step) in RUN_STEPS.iter().enumerate() {
        log(format!(
            "[{}/{total}] {} (run elapsed {})",
            i + 1,
            step.label,
            clock(run_started.elapsed().as_secs_f64())
        ));
        let started = std::time::Instant::now();
        let summary = (step.run)(ctx, force)
            .with_context(|| format!("wander run: step {}/{total}, {}", i + 1, step.label))?;
        let seconds = started.elapsed().as_secs_f64();
        if summary.get("stage").is_some() {
            log(describe(&summary));
        }
        log(format!(
            "[{}/{total}] {} done in {} (run elapsed {})",
            i + 1,
            step.label,
            clock(seconds),
            clock(run_started.elapsed().as_secs_f64())
        ));
        wall.insert(step.key.into(), json!(seconds));
        stages.insert(step.key.into(), summary);
    }
    let mut summary = json!({
        "run_dir": ctx.config.run.dir,
        "smoke": ctx.config.run.smoke,
        "wall_seconds": run_started.elapsed().as_secs_f64(),
        "step_wall_seconds": wall,
        "stages": stages,
    });
    if ctx.config.run.smoke {
        summary["note"] = json!("smoke run (quick profile): small settings, not results");
    }
    Ok(summary)
}

/// Seconds as `1h02m03s`, `2m03s` or `3.4s`.
pub(crate) fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let whole = s as u64;
    match whole {
        0..=59 => format!("{s:.1}s"),
        60..=3599 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m{:02}s", whole / 3600, whole / 60 % 60, whole % 60),
    }
}

/// The last step of `wander run`: starts the service on an ephemeral loopback port over the
/// run's artifacts, queries `POST /v1/explore` once and stops it.
pub fn serve_check(ctx: &Ctx, _force: bool) -> anyhow::Result<Value> {
    let q = wander_serve::smoke_query(ctx.config.clone())?;
    let clusters: Vec<&str> = q.response["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["description"].as_str())
        .collect();
    log(format!(
        "serve check: listening on {} after {:.1} s; POST /v1/explore {} -> {} in {:.1} ms: clusters [{}], {} items",
        q.address,
        q.startup_seconds,
        q.request["history"],
        q.status,
        q.latency_ms,
        clusters.join("; "),
        q.response["items"].as_array().map_or(0, |i| i.len())
    ));
    Ok(serde_json::to_value(&q)?)
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

/// `wander taxonomy`.
pub fn taxonomy(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let cfg = &ctx.config.taxonomy;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let model_dir = ctx.fetcher().resolve(&cfg.model)?;
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "ingest/manifest.json".to_string(),
        run.manifest_checksum("ingest")?,
    );
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        let p = model_dir.join(f);
        inputs.insert(
            p.display().to_string(),
            sha256_file(&p).with_context(|| {
                format!(
                    "{}: the embedding model (taxonomy.model) is incomplete",
                    model_dir.display()
                )
            })?,
        );
    }
    let slice = json!({"taxonomy": cfg, "seed": ctx.config.run.seed});
    let seed = ctx.config.run.seed;
    let stage_dir = run.stage_dir("taxonomy");
    let outcome = run.run_stage("taxonomy", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let ds = wander_data::read_dataset(&run.read("ingest")?)?;
        let texts: Vec<String> = ds.items.iter().map(wander_taxonomy::item_text).collect();
        let embedder = wander_taxonomy::embed::TextEmbedder::load(&model_dir)?;
        let mut cache = wander_taxonomy::embed::EmbeddingCache::open(&cfg.cache_dir.join(format!("text-{}.bin", &embedder.model_sha256[..16])));
        let bar = wander_core::progress::bar(texts.len() as u64, "embed", "items");
        let t0 = std::time::Instant::now();
        let (text, computed) = wander_taxonomy::embed::embed_all(&embedder, &mut cache, &texts, cfg.batch_size, Some(&bar))?;
        let embed_seconds = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        log(format!("embedded {computed} items in {embed_seconds:.1} s ({} from cache)", texts.len() - computed));
        let spinner = wander_core::progress::spinner("taxonomy");
        spinner.set_message("behavioural embeddings (PPMI + SVD)");
        let ppmi = wander_taxonomy::behaviour::ppmi(&ds, cfg.window);
        let behaviour = wander_taxonomy::behaviour::embeddings(&ppmi, cfg.behaviour_dim, seed);
        spinner.set_message("clustering");
        let mixed = wander_taxonomy::mix(&text, &behaviour, cfg.text_weight);
        let tax = wander_taxonomy::build(&ds, &mixed, cfg, seed)?;
        let (report, markdown) = wander_taxonomy::report(&ds, &tax, &text, &mixed, seed);
        // What each embedding gives on its own, under the same clustering settings.
        spinner.set_message("text-only and behaviour-only comparison");
        let mut comparison = serde_json::Map::new();
        for (label, weight) in [("text_only", 1.0), ("behaviour_only", 0.0)] {
            let v = wander_taxonomy::mix(&text, &behaviour, weight);
            let t = wander_taxonomy::build(&ds, &v, cfg, seed)?;
            let (r, _) = wander_taxonomy::report(&ds, &t, &text, &v, seed);
            comparison.insert(label.into(), json!({"coherence_text": r.coherence_text, "coherence_text_lift": r.coherence_text_lift, "genre_purity": r.genre_purity}));
        }
        comparison.insert(format!("configured_mix_{}", cfg.text_weight), json!({"coherence_text": report.coherence_text, "coherence_text_lift": report.coherence_text_lift, "genre_purity": report.genre_purity}));
        spinner.finish_and_clear();
        wander_taxonomy::write(w, &tax, &ds)?;
        w.write_bytes("report.md", markdown.as_bytes())?;
        let mut summary = serde_json::to_value(&report)?;
        summary["planner_level"] = json!(tax.planner_level);
        summary["embedded_items"] = json!(computed);
        summary["embedding_cache_hits"] = json!(texts.len() - computed);
        summary["embed_seconds"] = json!(embed_seconds);
        summary["mix_comparison"] = Value::Object(comparison);
        summary["report"] = json!(stage_dir.join("report.md"));
        Ok(summary)
    })
    .context("taxonomy failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("taxonomy", &outcome))
}

/// `wander transitions`.
pub fn transitions(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    use wander_explore::{sft, transitions as tr};
    let cfg = &ctx.config.novelty;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let mut inputs = BTreeMap::new();
    for s in ["ingest", "taxonomy"] {
        inputs.insert(format!("{s}/manifest.json"), run.manifest_checksum(s)?);
    }
    let slice = json!({"examples": cfg.examples, "alpha": cfg.alpha, "max_per_pair": cfg.max_per_pair, "max_per_target": cfg.max_per_target, "eval_examples": cfg.eval_examples, "seed": ctx.config.run.seed});
    let seed = ctx.config.run.seed;
    let outcome = run
        .run_stage(
            "transitions",
            slice,
            inputs,
            force,
            |w| -> anyhow::Result<Value> {
                let ds = wander_data::read_dataset(&run.read("ingest")?)?;
                let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
                let clusters = tax.planner_clusters();
                let all = tr::mine(&ds, tax.planner_assign());
                let mut summary = serde_json::Map::new();
                for (name, split) in [
                    ("train", wander_data::Split::Train),
                    ("valid", wander_data::Split::Valid),
                    ("test", wander_data::Split::Test),
                ] {
                    summary.insert(
                        name.into(),
                        serde_json::to_value(tr::stats(&tr::counts(&all, split), clusters.len()))?,
                    );
                }
                let div = sft::Diversify {
                    size: cfg.examples,
                    alpha: cfg.alpha,
                    max_per_pair: cfg.max_per_pair,
                    max_per_target: cfg.max_per_target,
                };
                let train_set =
                    sft::diversified(&tr::counts(&all, wander_data::Split::Train), &div, seed);
                let eval_div = sft::Diversify {
                    size: cfg.eval_examples,
                    ..div
                };
                let eval_set = sft::diversified(
                    &tr::counts(&all, wander_data::Split::Valid),
                    &eval_div,
                    seed ^ 1,
                );
                let desc = |c: u32| clusters[c as usize].description.as_str();
                let jsonl: String = train_set
                    .iter()
                    .map(|e| sft::chat_line(desc(e.c1), desc(e.c2), desc(e.next)) + "\n")
                    .collect();
                w.write_bytes("sft_train.jsonl", jsonl.as_bytes())?;
                w.write_json("sft_train.json", &train_set)?;
                w.write_json("sft_eval.json", &eval_set)?;
                w.write_json("transitions.json", &all)?;
                let targets: std::collections::BTreeSet<u32> =
                    train_set.iter().map(|e| e.next).collect();
                summary.insert("sft_examples".into(), json!(train_set.len()));
                summary.insert("sft_distinct_targets".into(), json!(targets.len()));
                summary.insert("sft_eval_examples".into(), json!(eval_set.len()));
                summary.insert("clusters".into(), json!(clusters.len()));
                Ok(Value::Object(summary))
            },
        )
        .context("transitions failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("transitions", &outcome))
}

/// Tokenised novelty examples: ChatML prompt of the two descriptions, answer = description.
fn novelty_examples(
    tok: &wander_llm::tokenizer::Tokenizer,
    tax: &wander_taxonomy::Taxonomy,
    set: &[wander_explore::sft::PairExample],
) -> anyhow::Result<Vec<wander_llm::train::Example>> {
    let clusters = tax.planner_clusters();
    set.iter()
        .map(|e| {
            let d = |c: u32| clusters[c as usize].description.as_str();
            Ok(wander_llm::train::Example {
                prompt: tok.chat_prompt(
                    wander_explore::sft::SYSTEM,
                    &wander_explore::sft::user_message(d(e.c1), d(e.c2)),
                )?,
                answer: tok.answer(d(e.next))?,
                label: 0.0,
                targets: Vec::new(),
            })
        })
        .collect()
}

/// `wander train novelty`.
pub fn train_novelty(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let cfg = &ctx.config.novelty;
    let lora = &ctx.config.llm.lora;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let mut inputs = BTreeMap::new();
    for s in ["taxonomy", "transitions"] {
        inputs.insert(format!("{s}/manifest.json"), run.manifest_checksum(s)?);
    }
    inputs.insert(q8.display().to_string(), sha256_file(&q8)?);
    let train_cfg = crate::align::lora_train_config(
        cfg.steps,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.lr,
        cfg.warmup_steps,
        cfg.eval_every,
        cfg.checkpoint_every,
        ctx.config.run.seed,
    );
    let slice = json!({"train": train_cfg, "lora": lora});
    let checkpoints = run.root().join(".checkpoints/novelty");
    let outcome = run.run_stage("train_novelty", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
        let stage = run.read("transitions")?;
        let train_set: Vec<wander_explore::sft::PairExample> = stage.read_json("sft_train.json")?;
        let eval_set: Vec<wander_explore::sft::PairExample> = stage.read_json("sft_eval.json")?;
        let (tok, model, params) = crate::align::trainable_model(ctx, &q8)?;
        let train = novelty_examples(&tok, &tax, &train_set)?;
        let eval = novelty_examples(&tok, &tax, &eval_set)?;
        let mut trainer = wander_llm::train::Trainer::new(&model, wander_llm::train::Objective::Sft, params, train_cfg.clone(), tok.im_end, Some(&checkpoints))?;
        let report = crate::align::run_trainer(&mut trainer, &train, &eval, train_cfg.steps, "train")?;
        model.save_lora(&w.path("adapter.safetensors")?)?;
        w.write_json("train_report.json", &report)?;
        let _ = std::fs::remove_dir_all(&checkpoints);
        Ok(json!({
            "steps": report.steps,
            "examples": train.len(),
            "first_loss": report.losses.first(),
            "final_loss": report.losses.last(),
            "eval_losses": report.eval_losses,
            "tokens_per_s": report.tokens_per_second(),
            "resumed_from": report.resumed_from,
            "adapter": "adapter.safetensors",
        }))
    })
    .context("train novelty failed; earlier artifacts are unchanged and a rerun resumes from the last checkpoint")?;
    Ok(report("train_novelty", &outcome))
}

/// Ranked top-k novel clusters per method for one history pair.
fn top_k(scores: &[(u32, f64)], k: usize) -> Vec<u32> {
    let mut v = scores.to_vec();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|(c, _)| c).collect()
}

/// `wander eval novelty`.
pub fn eval_novelty(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    use wander_explore::metrics::{bootstrap, hit_at, self_information};
    use wander_explore::transitions::{counts, Transition};
    let cfg = &ctx.config.novelty;
    let lora = &ctx.config.llm.lora;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let mut inputs = BTreeMap::new();
    for s in ["taxonomy", "transitions", "train_novelty"] {
        inputs.insert(format!("{s}/manifest.json"), run.manifest_checksum(s)?);
    }
    let slice = json!({"eval_events": cfg.eval_events, "eval_samples": cfg.eval_samples, "bootstrap_rounds": cfg.bootstrap_rounds, "seed": ctx.config.run.seed});
    let seed = ctx.config.run.seed;
    let stage_dir = run.stage_dir("eval_novelty");
    let outcome = run.run_stage("eval_novelty", slice, inputs, force, |w| -> anyhow::Result<Value> {
        let tax = wander_taxonomy::read(&run.read("taxonomy")?)?;
        let clusters = tax.planner_clusters();
        let n = clusters.len() as u32;
        let all: Vec<Transition> = run.read("transitions")?.read_json("transitions.json")?;
        let train = counts(&all, wander_data::Split::Train);
        let mut target_counts = vec![0u64; n as usize];
        for targets in train.values() {
            for (&t, &c) in targets {
                target_counts[t as usize] += c as u64;
            }
        }
        let mut events: Vec<Transition> = all.iter().copied().filter(|t| t.split == wander_data::Split::Test as u8).collect();
        let mut rng = wander_core::rng::Rng::new(seed);
        rng.shuffle(&mut events);
        if cfg.eval_events > 0 {
            events.truncate(cfg.eval_events);
        }
        let mut pairs: Vec<(u32, u32)> = events.iter().map(|e| (e.c1, e.c2)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        log(format!("evaluating {} test events over {} distinct history pairs", events.len(), pairs.len()));

        // Language models: base (zero-shot) and fine-tuned (adapter merged).
        let mut g = wander_llm::gguf::GgufFile::open(&q8)?;
        let tok = wander_llm::tokenizer::Tokenizer::from_gguf(&g)?;
        let base = wander_llm::model::Llama::from_gguf(&mut g, true)?;
        let mut tuned = base.clone();
        tuned.attach_lora(&lora.targets, lora.rank, lora.alpha, 0.0, seed)?;
        tuned.load_lora(&run.read("train_novelty")?.path("adapter.safetensors")?)?;
        tuned.merge_lora()?;
        let answers: Vec<Vec<u32>> = clusters.iter().map(|c| tok.answer(&c.description)).collect::<Result<_, _>>()?;
        let index = tax.index();
        let methods = ["random", "popularity", "cooccurrence", "zero_shot", "fine_tuned"];
        let mut ranked: BTreeMap<(&str, (u32, u32)), Vec<u32>> = BTreeMap::new();
        let mut exact: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut valid: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut exact_greedy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let bar = wander_core::progress::bar(pairs.len() as u64, "eval", "pairs");
        let format_pairs = pairs.len().min(100);
        for (pi, &(c1, c2)) in pairs.iter().enumerate() {
            let novel: Vec<u32> = (0..n).filter(|&c| c != c1 && c != c2).collect();
            let mut r = wander_core::rng::Rng::new(seed).fork(((c1 as u64) << 32) | c2 as u64);
            let mut shuffled = novel.clone();
            r.shuffle(&mut shuffled);
            ranked.insert(("random", (c1, c2)), shuffled.into_iter().take(5).collect());
            let pop: Vec<(u32, f64)> = novel.iter().map(|&c| (c, target_counts[c as usize] as f64)).collect();
            ranked.insert(("popularity", (c1, c2)), top_k(&pop, 5));
            let co = train.get(&(c1, c2));
            let cooc: Vec<(u32, f64)> = novel.iter().map(|&c| (c, co.and_then(|m| m.get(&c)).copied().unwrap_or(0) as f64 * 1e9 + target_counts[c as usize] as f64)).collect();
            ranked.insert(("cooccurrence", (c1, c2)), top_k(&cooc, 5));
            let prompt = tok.chat_prompt(wander_explore::sft::SYSTEM, &wander_explore::sft::user_message(&clusters[c1 as usize].description, &clusters[c2 as usize].description))?;
            let cand: Vec<Vec<u32>> = novel.iter().map(|&c| answers[c as usize].clone()).collect();
            for (name, model) in [("zero_shot", &base), ("fine_tuned", &tuned)] {
                let s = wander_llm::generate::score_candidates(model, &prompt, &cand)?;
                let scored: Vec<(u32, f64)> = novel.iter().copied().zip(s.constrained_logprob.iter().copied()).collect();
                ranked.insert((name, (c1, c2)), top_k(&scored, 5));
                if pi < format_pairs && cfg.eval_samples > 0 {
                    let params = wander_llm::generate::SampleParams { n: cfg.eval_samples, temperature: 1.0, top_p: 1.0, seed: seed ^ pi as u64, max_new_tokens: 24 };
                    let (free, _) = wander_llm::generate::sample(model, &prompt, &params, None, tok.im_end)?;
                    for smp in free {
                        let text = tok.decode(smp.tokens.strip_suffix(&[tok.im_end]).unwrap_or(&smp.tokens))?;
                        exact.entry(name).or_default().push(f64::from(index.parse(&text).is_some()));
                    }
                    let greedy = wander_llm::generate::SampleParams { n: 1, temperature: 0.0, ..params.clone() };
                    let (g, _) = wander_llm::generate::sample(model, &prompt, &greedy, None, tok.im_end)?;
                    let text = tok.decode(g[0].tokens.strip_suffix(&[tok.im_end]).unwrap_or(&g[0].tokens))?;
                    exact_greedy.entry(name).or_default().push(f64::from(index.parse(&text).is_some()));
                    let trie = wander_llm::generate::Trie::new(&answers)?;
                    let (con, _) = wander_llm::generate::sample(model, &prompt, &params, Some(&trie), tok.im_end)?;
                    for smp in con {
                        valid.entry(name).or_default().push(f64::from(smp.answer.is_some()));
                    }
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let rounds = cfg.bootstrap_rounds;
        let mut out = serde_json::Map::new();
        let mut md = String::from("# Novelty model: offline evaluation\n\n");
        md.push_str(&format!(
            "Protocol: global temporal split (test = latest {:.0}% of interactions); transitions from positive engagement (`{}`), consecutive repeats removed; {} test events sampled with seed {} over {} distinct history pairs; every method ranks the {} clusters other than the two history clusters. Metrics are means over events with 95% percentile-bootstrap intervals ({} resamples). Exact match: {} unconstrained samples at temperature 1, and one greedy answer, for each of the first {} pairs.\n\n",
            100.0 * ctx.config.data.test_fraction, ctx.config.data.positive, events.len(), seed, pairs.len(), n - 2, rounds, cfg.eval_samples, format_pairs
        ));
        md.push_str("| method | hit@1 | hit@5 | novelty (bits) | out-of-loop | coverage | exact match (T = 1) | exact match (greedy) | constrained validity |\n|---|---|---|---|---|---|---|---|---|\n");
        for m in methods {
            let mut h1 = Vec::new();
            let mut h5 = Vec::new();
            let mut nov = Vec::new();
            let mut ool = Vec::new();
            for e in &events {
                let r = &ranked[&(m, (e.c1, e.c2))];
                h1.push(hit_at(r, e.next, 1));
                h5.push(hit_at(r, e.next, 5));
                nov.push(r.iter().map(|&c| self_information(c, &target_counts)).sum::<f64>() / r.len().max(1) as f64);
                let seen = train.get(&(e.c1, e.c2));
                ool.push(r.iter().filter(|c| seen.is_none_or(|s| !s.contains_key(c))).count() as f64 / r.len().max(1) as f64);
            }
            let coverage: std::collections::BTreeSet<u32> = pairs.iter().filter_map(|p| ranked[&(m, *p)].first().copied()).collect();
            let est = |v: &[f64], k: u64| serde_json::to_value(bootstrap(v, rounds, seed ^ k)).unwrap_or(Value::Null);
            let mut entry = json!({
                "hit_at_1": est(&h1, 1), "hit_at_5": est(&h5, 2), "novelty_bits": est(&nov, 3), "out_of_loop": est(&ool, 4),
                "coverage_top1_clusters": coverage.len(),
            });
            if let Some(v) = exact.get(m) {
                entry["exact_match"] = est(v, 5);
            }
            if let Some(v) = exact_greedy.get(m) {
                entry["exact_match_greedy"] = est(v, 7);
            }
            if let Some(v) = valid.get(m) {
                entry["constrained_validity"] = est(v, 6);
            }
            let cell = |k: &str| {
                let e = &entry[k];
                if e.is_null() { "n/a".to_string() } else { format!("{:.3} [{:.3}, {:.3}]", e["mean"].as_f64().unwrap_or(f64::NAN), e["lo"].as_f64().unwrap_or(f64::NAN), e["hi"].as_f64().unwrap_or(f64::NAN)) }
            };
            md.push_str(&format!("| {m} | {} | {} | {} | {} | {} | {} | {} | {} |\n", cell("hit_at_1"), cell("hit_at_5"), cell("novelty_bits"), cell("out_of_loop"), coverage.len(), cell("exact_match"), cell("exact_match_greedy"), cell("constrained_validity")));
            out.insert(m.into(), entry);
        }
        md.push_str("\nDefinitions: hit@k = share of events whose actual next cluster is in the method's top k; novelty = mean self-information -log2 p(c) of the top-5 clusters, p from training target frequencies (Zhou et al., PNAS 2010); out-of-loop = share of top-5 clusters that never followed that history pair in training; coverage = distinct clusters ranked first over all evaluated pairs; exact match = share of unconstrained samples that parse to a cluster description (the method's format compliance); constrained validity = the same for trie-constrained samples.\n");
        w.write_bytes("report.md", md.as_bytes())?;
        let ranked_json: Vec<Value> = ranked.iter().map(|((m, (c1, c2)), r)| json!({"method": m, "c1": c1, "c2": c2, "top5": r})).collect();
        w.write_json("predictions.json", &ranked_json)?;
        Ok(json!({"events": events.len(), "pairs": pairs.len(), "methods": out, "report": stage_dir.join("report.md")}))
    })
    .context("eval novelty failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("eval_novelty", &outcome))
}

//! Helpers every stage shares: the stage summary, input checksums, the configured model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::artifact::StageOutcome;
use wander_core::hash::sha256_file;

use crate::log;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// A stage's summary with how it went, as printed by `--json`.
pub(crate) fn report(id: StageId, outcome: &StageOutcome) -> Summary {
    let stage = id.folder();
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
    Summary::new(id, summary)
}

/// The configured model and the inputs of a stage that runs it: the manifests of the
/// stages `id` reads plus the model file's checksum (so a new model reruns the stage).
pub(crate) fn model_and_inputs(
    ctx: &StageContext,
    run: &RunDir,
    id: StageId,
) -> crate::Result<(PathBuf, BTreeMap<String, String>)> {
    let q8 = model_q8(ctx)?;
    let mut inputs = manifests(run, id.inputs())?;
    inputs.insert(q8.display().to_string(), sha256_file(&q8)?);
    if let Some(json) = tokenizer_file(ctx)? {
        inputs.insert(json.display().to_string(), sha256_file(&json)?);
    }
    Ok((q8, inputs))
}

/// `llm.tokenizer`, resolved, when one is set.
pub(crate) fn tokenizer_file(ctx: &StageContext) -> crate::Result<Option<PathBuf>> {
    let spec = ctx.config.llm.tokenizer.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let path = ctx.fetcher().resolve(spec)?;
    if !path.is_file() {
        crate::bail!(
            "{}: tokenizer file not found (llm.tokenizer)",
            path.display()
        );
    }
    Ok(Some(path))
}

/// The tokenizer of the configured model: `llm.tokenizer` when set, else rebuilt from the
/// GGUF's metadata.
pub(crate) fn tokenizer(
    ctx: &StageContext,
    gguf: &wander_llm::gguf::GgufFile,
) -> crate::Result<wander_llm::tokenizer::Tokenizer> {
    Ok(match tokenizer_file(ctx)? {
        Some(json) => wander_llm::tokenizer::Tokenizer::from_file(&json)?,
        None => wander_llm::tokenizer::Tokenizer::from_gguf(gguf)?,
    })
}

pub(crate) fn checksums(files: &[PathBuf]) -> crate::Result<BTreeMap<String, String>> {
    files
        .iter()
        .map(|f| Ok((f.display().to_string(), sha256_file(f)?)))
        .collect()
}

pub(crate) fn manifests(
    run: &RunDir,
    stages: &[StageId],
) -> crate::Result<BTreeMap<String, String>> {
    stages
        .iter()
        .map(|s| {
            let folder = s.folder();
            Ok((
                format!("{folder}/manifest.json"),
                run.manifest_checksum(folder)?,
            ))
        })
        .collect()
}

/// The configured model, fetched and repacked to Q8_0 (once).
pub fn model_q8(ctx: &StageContext) -> crate::Result<PathBuf> {
    let spec = &ctx.config.llm.model;
    let path = if spec == "asset:smollm2" {
        ctx.fetcher().main_file("smollm2")?
    } else {
        ctx.fetcher().resolve(spec)?
    };
    if !path.is_file() {
        crate::bail!("{}: model file not found (llm.model)", path.display());
    }
    log(format!(
        "model {} (Q8_0 repack cached beside it)",
        path.display()
    ));
    Ok(wander_llm::gguf::q8_0_path(&path)?)
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

/// Removes a stage's scratch folder once the stage is done (a trainer's checkpoints under
/// `.checkpoints/`, precompute's chunks under `.work/`), and that parent folder with it when
/// no other stage has one there.
pub(crate) fn remove_scratch(folder: &Path) {
    let _ = std::fs::remove_dir_all(folder);
    if let Some(parent) = folder.parent() {
        // Fails, as it should, while another stage's checkpoints are in it.
        let _ = std::fs::remove_dir(parent);
    }
}

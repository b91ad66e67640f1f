//! `wander export`: the fine-tuned adapters and their training data in formats other tools
//! read, for serving them elsewhere or fine-tuning a larger model on the same data.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_llm::export::{write_gguf_lora, write_peft, PeftBase};

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The Hugging Face name of the base model: the default's, or the configured GGUF's path
/// (a PEFT loader needs it replaced by the model's repository or local folder).
fn base_model_name(ctx: &StageContext) -> String {
    match ctx.config.llm.model.as_str() {
        "asset:smollm2" => "HuggingFaceTB/SmolLM2-135M-Instruct".to_string(),
        other => other.to_string(),
    }
}

/// The configuration `wander export` depends on.
pub(crate) fn export_slice(ctx: &StageContext) -> Value {
    json!({"alpha": ctx.config.llm.lora.alpha, "base_model": base_model_name(ctx)})
}

/// `wander export`.
pub fn export(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = crate::common::model_q8(ctx)?;
    let inputs = manifests(&run, StageId::Export.inputs())?;
    let base = PeftBase {
        name: base_model_name(ctx),
        alpha: ctx.config.llm.lora.alpha,
    };
    let outcome = run
        .run_stage(StageId::Export.folder(), export_slice(ctx), inputs, force, |w| -> crate::Result<Value> {
            let cfg = wander_llm::gguf::GgufFile::open(&q8)?.config()?;
            let load = |file: File| -> crate::Result<Vec<(String, candle_core::Tensor)>> {
                let path = file_path(&run, file)?;
                let mut tensors: Vec<_> = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
                    .map_err(wander_llm::LlmError::from)?
                    .into_iter()
                    .collect();
                tensors.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(tensors)
            };
            let (novelty_tensors, alignment_tensors) = (load(NOVELTY_ADAPTER)?, load(ALIGNMENT_ADAPTER)?);
            let novelty = write_peft(&novelty_tensors, &cfg, &w.path("novelty")?, &base)?;
            let alignment = write_peft(&alignment_tensors, &cfg, &w.path("alignment")?, &base)?;
            // The same adapters for llama.cpp, in the GGUF's own row order.
            write_gguf_lora(&novelty_tensors, &w.path("novelty/adapter.gguf")?, base.alpha)?;
            write_gguf_lora(&alignment_tensors, &w.path("alignment/adapter.gguf")?, base.alpha)?;
            // The readout is not a PEFT module: the scalar head's weights, or the text levels.
            let trained = open(&run, StageId::TrainAlignment)?;
            let readout = match trained.path(ALIGNMENT_HEAD) {
                Ok(head) => {
                    std::fs::copy(&head, w.path("alignment/score_head.safetensors")?).map_err(|e| wander_core::CoreError::io(&head, e))?;
                    "score_head.safetensors"
                }
                Err(_) => {
                    let levels = trained.reader().path(ALIGNMENT_LEVELS.file())?;
                    std::fs::copy(&levels, w.path("alignment/levels.json")?).map_err(|e| wander_core::CoreError::io(&levels, e))?;
                    "levels.json"
                }
            };
            // A head trained over each candidate's global rate needs those rates to score.
            let offsets = crate::stages::alignment::trained(&run)?.prior() == wander_core::config::AlignmentPrior::Offset;
            if offsets {
                let path = trained.reader().path(ALIGNMENT_OFFSETS.file())?;
                std::fs::copy(&path, w.path("alignment/offsets.json")?).map_err(|e| wander_core::CoreError::io(&path, e))?;
            }
            let offsets_note = if offsets { " `alignment/offsets.json` holds one number per planner cluster (in the taxonomy's order): the head was trained on what the history adds to the candidate's global rate, and its output plus the candidate's number is the score." } else { "" };
            let chat = file_path(&run, SFT_TRAIN_CHAT)?;
            std::fs::copy(&chat, w.path("novelty/train.jsonl")?).map_err(|e| wander_core::CoreError::io(&chat, e))?;
            let labels = file_path(&run, POINTWISE_TRAIN)?;
            std::fs::copy(&labels, w.path("alignment/train.jsonl")?).map_err(|e| wander_core::CoreError::io(&labels, e))?;
            // What another runtime must reproduce: the next-token log-probabilities after a
            // training prompt, without and with each adapter (scripts/check_export.py).
            let check = agreement_check(ctx, &run, &q8)?;
            w.write_bytes("check.json", &serde_json::to_vec_pretty(&check)?)?;
            let readme = format!(
                "# Exported from wander\n\n`novelty/` and `alignment/` each hold a LoRA adapter in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`) for the base model `{}`, with rank {} and alpha {}. Load with transformers + peft (`PeftModel.from_pretrained(base, \"novelty\")`) or give the folder to a server that takes PEFT adapters (vLLM: `--enable-lora --lora-modules novelty=<dir>`). `adapter.gguf` in each folder is the same adapter in llama.cpp's LoRA format, for the GGUF wander trained on (`llama-server -m <model.gguf> --lora novelty/adapter.gguf`).\n\nThe query and key updates were trained on the GGUF's weights, whose rows are interleaved per head for RoPE; they are written back in Hugging Face's order. The adapters were trained on a quantised base (Q4_1, repacked to Q8_0), so on the full-precision model they act on slightly different weights.\n\nThe alignment model's readout is not a PEFT module: `alignment/{readout}` (`score_head.safetensors`: a linear layer `weight` [outputs, hidden] and `bias` on the last hidden state of the prompt; `levels.json`: the label levels the model writes as text). Prompts are ChatML, built as wander builds them.{offsets_note}\n\n`check.json` holds the first novelty training prompt's token ids and the next-token log-probabilities wander computes after it (the base model on the GGUF's weights in f32, then with each adapter merged), at the tokens any of the three ranks in its top 8: a loader of these files should reproduce them (`scripts/check_export.sh` does it with transformers + peft).\n\nTraining data: `novelty/train.jsonl` (chat messages: system, user with the two history clusters, assistant with the next cluster) and `alignment/train.jsonl` (the collective feedback labels, one prompt per line), for fine-tuning a larger model elsewhere.\n",
                base.name, cfg_rank(&novelty_tensors), base.alpha
            );
            w.write_bytes("README.md", readme.as_bytes())?;
            crate::summaries::record(&crate::summaries::ExportSummary {
                base_model: base.name.clone(),
                novelty_tensors: novelty,
                alignment_tensors: alignment,
                alignment_readout: readout.to_string(),
            })
        })
        .context("export failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Export, &outcome))
}

/// Tokens of each model's top in [`agreement_check`].
const CHECK_TOP: usize = 8;

/// The next-token log-probabilities after the first novelty training prompt: the base
/// model (the Q8_0 GGUF's weights in f32, as the trainer sees them) and each adapter merged
/// into it, at the tokens any of the three ranks in its top [`CHECK_TOP`].
fn agreement_check(ctx: &StageContext, run: &RunDir, q8: &std::path::Path) -> crate::Result<Value> {
    let chat_path = file_path(run, SFT_TRAIN_CHAT)?;
    let chat = std::fs::read_to_string(&chat_path)
        .map_err(|e| wander_core::CoreError::io(&chat_path, e))?;
    let first: Value = chat
        .lines()
        .next()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| {
            crate::PipelineError::Invalid(format!("{}: line 1: {e}", chat_path.display()))
        })?
        .unwrap_or(Value::Null);
    let message = |i: usize| first["messages"][i]["content"].as_str();
    let (Some(system), Some(user)) = (message(0), message(1)) else {
        crate::bail!(
            "{}: line 1: expected chat messages (system, user, assistant)",
            chat_path.display()
        );
    };
    let mut g = wander_llm::gguf::GgufFile::open(q8)?;
    let tok = crate::common::tokenizer(ctx, &g)?;
    let prompt = tok.chat_prompt(system, user)?;
    let base = wander_llm::model::Llama::from_gguf(&mut g, false)?;
    let input = candle_core::Tensor::new(prompt.as_slice(), &candle_core::Device::Cpu)
        .map_err(wander_llm::LlmError::from)?
        .unsqueeze(0)
        .map_err(wander_llm::LlmError::from)?;
    let log_probs = |m: &wander_llm::model::Llama| -> crate::Result<Vec<f64>> {
        let logits: Vec<f32> = m
            .last_logits(&input, &mut wander_llm::model::KvCache::new(m.blocks.len()))?
            .squeeze(0)
            .and_then(|t| t.to_vec1())
            .map_err(wander_llm::LlmError::from)?;
        let max = logits
            .iter()
            .fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let log_z = max
            + logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let out: Vec<f64> = logits.iter().map(|&l| l as f64 - log_z).collect();
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            crate::bail!("the export check: the log-probability of token {i} is {} (a model weight or logit is not finite)", out[i]);
        }
        Ok(out)
    };
    let mut models = vec![("base", log_probs(&base)?)];
    for (name, adapter) in [
        ("novelty", NOVELTY_ADAPTER),
        ("alignment", ALIGNMENT_ADAPTER),
    ] {
        let m = crate::llm::with_adapter_merged(ctx, run, &base, adapter)?;
        models.push((name, log_probs(&m)?));
    }
    let mut tokens: Vec<usize> = Vec::new();
    for (_, lp) in &models {
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
        tokens.extend(order.into_iter().take(CHECK_TOP));
    }
    tokens.sort_unstable();
    tokens.dedup();
    let mut check = json!({"prompt_tokens": prompt, "tokens": tokens});
    for (name, lp) in &models {
        check[*name] = json!(tokens.iter().map(|&t| lp[t]).collect::<Vec<_>>());
    }
    Ok(check)
}

/// The rank of a set of adapter tensors (rows of any `lora_a`).
fn cfg_rank(tensors: &[(String, candle_core::Tensor)]) -> usize {
    tensors
        .iter()
        .find(|(n, _)| n.ends_with("lora_a"))
        .and_then(|(_, t)| t.dim(0).ok())
        .unwrap_or(0)
}

/// The verified path of a stage's output file.
fn file_path(run: &RunDir, file: File) -> crate::Result<std::path::PathBuf> {
    open(run, file.stage())?.path(file)
}

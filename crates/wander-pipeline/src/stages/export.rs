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
            let chat = file_path(&run, SFT_TRAIN_CHAT)?;
            std::fs::copy(&chat, w.path("novelty/train.jsonl")?).map_err(|e| wander_core::CoreError::io(&chat, e))?;
            let labels = file_path(&run, POINTWISE_TRAIN)?;
            std::fs::copy(&labels, w.path("alignment/train.jsonl")?).map_err(|e| wander_core::CoreError::io(&labels, e))?;
            let readme = format!(
                "# Exported from wander\n\n`novelty/` and `alignment/` each hold a LoRA adapter in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`) for the base model `{}`, with rank {} and alpha {}. Load with transformers + peft (`PeftModel.from_pretrained(base, \"novelty\")`) or give the folder to a server that takes PEFT adapters (vLLM: `--enable-lora --lora-modules novelty=<dir>`). `adapter.gguf` in each folder is the same adapter in llama.cpp's LoRA format, for the GGUF wander trained on (`llama-server -m <model.gguf> --lora novelty/adapter.gguf`).\n\nThe query and key updates were trained on the GGUF's weights, whose rows are interleaved per head for RoPE; they are written back in Hugging Face's order. The adapters were trained on a quantised base (Q4_1, repacked to Q8_0), so on the full-precision model they act on slightly different weights.\n\nThe alignment model's readout is not a PEFT module: `alignment/{readout}` (`score_head.safetensors`: a linear layer `weight` [outputs, hidden] and `bias` on the last hidden state of the prompt; `levels.json`: the label levels the model writes as text). Prompts are ChatML, built as wander builds them.\n\nTraining data: `novelty/train.jsonl` (chat messages: system, user with the two history clusters, assistant with the next cluster) and `alignment/train.jsonl` (the collective feedback labels, one prompt per line), for fine-tuning a larger model elsewhere.\n",
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

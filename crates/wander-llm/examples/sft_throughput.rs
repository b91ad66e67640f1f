//! The LoRA figure of `wander bench llm` alone: a fresh rank-8 adapter on q, k, v, o trained
//! on the bench's workload (batch 4 of 75-token sequences), without the inference figures
//! around it, so a profiler or repeated timings see only the training step.
//!
//!     cargo run --release -p wander-llm --example sft_throughput -- MODEL.Q8_0.gguf [STEPS]

use wander_llm::bench::{sft_workload, train_sft_workload, BenchPrompt};

fn main() -> wander_llm::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or_else(|| {
        wander_llm::LlmError::Invalid("usage: sft_throughput MODEL.Q8_0.gguf [STEPS]".into())
    })?;
    let steps = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| wander_llm::LlmError::Invalid(format!("STEPS: `{s}` is no count")))?,
        None => 8,
    };
    let model = std::path::Path::new(&model);
    let work = sft_workload(model, &BenchPrompt::Synthetic { candidates: 64 }, steps)?;
    let report = train_sft_workload(model, &work)?;
    println!(
        "{{\"steps\": {steps}, \"lora_train_tokens_per_s\": {:.1}, \"first_loss\": {:.4}}}",
        report.tokens_per_second(),
        report.losses.first().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

//! Single-stream greedy decoding alone (the bench's 67-token synthetic prompt, then `TOKENS`
//! tokens, `ROUNDS` times), so a profiler sees only the decode loop; with `TOKENS` = 0, the
//! bench's exact scores of its 64 answers instead (a prefill and one batch of branching
//! prefixes), `ROUNDS` times.
//!
//!     cargo run --release -p wander-llm --example decode_profile -- MODEL.Q8_0.gguf [TOKENS] [ROUNDS]

use std::time::Instant;

use wander_llm::bench::{bench_prompt_and_answers, BenchPrompt};
use wander_llm::generate::{sample, score_candidates, SampleParams};
use wander_llm::gguf::GgufFile;
use wander_llm::model::Llama;
use wander_llm::tokenizer::Tokenizer;

fn count(arg: Option<String>, default: usize, name: &str) -> wander_llm::Result<usize> {
    match arg {
        Some(s) => s
            .parse()
            .map_err(|_| wander_llm::LlmError::Invalid(format!("{name}: `{s}` is no count"))),
        None => Ok(default),
    }
}

fn main() -> wander_llm::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| {
        wander_llm::LlmError::Invalid(
            "usage: decode_profile MODEL.Q8_0.gguf [TOKENS] [ROUNDS]".into(),
        )
    })?;
    let tokens = count(args.next(), 64, "TOKENS")?;
    let rounds = count(args.next(), 5, "ROUNDS")?;
    let mut g = GgufFile::open(std::path::Path::new(&path))?;
    let tok = Tokenizer::from_gguf(&g)?;
    let model = Llama::from_gguf(&mut g, true)?;
    let (prompt, answers) =
        bench_prompt_and_answers(&tok, &BenchPrompt::Synthetic { candidates: 64 })?;
    if tokens == 0 {
        for round in 0..rounds {
            let t = Instant::now();
            let scores = score_candidates(&model, &prompt, &answers)?;
            println!(
                "round {round}: exact scores of {} answers in {:.3} s",
                scores.constrained_logprob.len(),
                t.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    let params = SampleParams {
        n: 1,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_new_tokens: tokens,
    };
    for round in 0..rounds {
        let t = Instant::now();
        let (s, _) = sample(&model, &prompt, &params, None, u32::MAX)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {} tokens in {secs:.3} s (prefill included): {:.1} tokens/s",
            s[0].tokens.len(),
            s[0].tokens.len() as f64 / secs
        );
    }
    Ok(())
}

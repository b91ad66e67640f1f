//! Hot loops of the runtime on a small random model of SmolLM2's shape family.
//! Run with `cargo bench -p wander-llm`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use wander_llm::generate::{sample, score_candidates, SampleParams, Trie};
use wander_llm::gguf::LlamaConfig;
use wander_llm::model::{KvCache, Llama};

fn small() -> Llama {
    let cfg = LlamaConfig {
        n_layer: 4,
        n_head: 9,
        n_kv_head: 3,
        hidden: 576,
        ffn: 1536,
        vocab: 4096,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
        max_seq: 256,
    };
    Llama::random(cfg, 1).expect("model").0
}

fn bench(c: &mut Criterion) {
    let model = small();
    let prompt: Vec<u32> = (0..60).map(|i| 10 + i).collect();
    let answers: Vec<Vec<u32>> = (0..64u32)
        .map(|i| vec![100 + i % 8, 200 + i / 8, 300 + i, 2])
        .collect();
    let trie = Trie::new(&answers).expect("trie");
    c.bench_function("prefill_60", |b| {
        let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        b.iter(|| model.last_logits(&x, &mut KvCache::new(4)).unwrap())
    });
    c.bench_function("constrained_16_samples", |b| {
        let p = SampleParams {
            n: 16,
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
            max_new_tokens: 8,
        };
        b.iter(|| sample(&model, &prompt, &p, Some(&trie), 2).unwrap())
    });
    c.bench_function("score_64_candidates", |b| {
        b.iter(|| score_candidates(&model, &prompt, &answers).unwrap())
    });
    // The Q8_0 kernel on the down projection's shape, where this CPU has AVX-512 VNNI.
    let w = Tensor::randn(0f32, 0.05, (576, 1536), &Device::Cpu).unwrap();
    let q = candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0)
        .unwrap();
    if let Some(packed) = wander_llm::q8::Q8Matrix::new(&q).unwrap() {
        for rows in [1usize, 16] {
            let x: Vec<f32> = (0..rows * 1536)
                .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
                .collect();
            c.bench_function(&format!("q8_down_projection_{rows}_rows"), |b| {
                b.iter(|| packed.matmul(&x, rows))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);

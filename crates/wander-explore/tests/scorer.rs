//! The alignment scorer on a tiny random model: however its prompts are grouped (several
//! pairs as one token tree, one candidate alone, or the whole prompt as one sequence), each
//! candidate gets the same score up to float rounding.

use candle_core::{Device, Tensor};
use wander_explore::planner::CandidateScorer;
use wander_llm::generate::prefix_cache;
use wander_llm::gguf::{GgufFile, LlamaConfig};
use wander_llm::model::{Llama, Mode, ScoreHead};
use wander_llm::readout::Readout;
use wander_llm::tokenizer::Tokenizer;

#[test]
fn a_candidates_score_does_not_depend_on_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let cfg = LlamaConfig {
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        hidden: 32,
        ffn: 64,
        vocab: 0,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        max_seq: 2048,
    };
    wander_llm::gguf::write_tiny_model(&path, &cfg, 5).unwrap();
    let mut g = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let model = Llama::from_gguf(&mut g, true).unwrap();
    let head = ScoreHead::new(cfg.hidden, 1, &Device::Cpu).unwrap();
    let w: Vec<f32> = (0..cfg.hidden)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    head.w
        .set(&Tensor::from_vec(w, (1, cfg.hidden), &Device::Cpu).unwrap())
        .unwrap();
    let readout = Readout::Head(head);
    let descriptions: Vec<String> = [
        "comedy, war",
        "drama",
        "sci-fi, space, aliens",
        "horror, night",
        "documentary, music",
    ]
    .map(String::from)
    .to_vec();
    let scorer = CandidateScorer::new(&model, &readout, &tok, &descriptions);
    let triples: Vec<(u32, u32, u32)> = [(0, 1), (2, 3), (4, 0), (1, 1), (3, 2)]
        .iter()
        .flat_map(|&(a, b)| (0..5).map(move |c| (a, b, c)))
        .collect();
    let together = scorer.scores(&triples).unwrap();
    let spread = together.iter().cloned().fold(f32::MIN, f32::max)
        - together.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 1e-3,
        "the scores must differ for the test to mean anything: {together:?}"
    );
    let empty = prefix_cache(&model, &[]).unwrap();
    for (&t, &score) in triples.iter().zip(&together) {
        let alone = scorer.scores(&[t]).unwrap()[0];
        assert!(
            (alone - score).abs() < 1e-5,
            "{t:?}: {alone} alone, {score} together"
        );
        // The whole prompt as one sequence, read by the same head.
        let prompt = scorer.prompt(t).unwrap();
        let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = model
            .forward_hidden(&x, &mut empty.clone(), Mode::InferF32)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let last = h.get(prompt.len() - 1).unwrap().unsqueeze(0).unwrap();
        let direct = readout
            .head()
            .unwrap()
            .forward(&last)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()[0][0];
        assert!(
            (direct - score).abs() < 1e-4,
            "{t:?}: {direct} as one sequence, {score} scored"
        );
    }
}

//! Times the parts of one SASRec training batch (forward, loss, backward) at MovieLens-100K
//! scale: `cargo run --release -p wander-items --example profile`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use wander_items::model::{SasRec, SasRecConfig};

fn main() {
    let cfg = SasRecConfig {
        vocab: 1683,
        max_len: 50,
        dim: 64,
        layers: 2,
        heads: 2,
        dropout: 0.2,
    };
    let model = SasRec::new(cfg, 1).unwrap();
    let mut rng = wander_core::rng::Rng::new(2);
    let (b, t) = (128, 50);
    let ids: Vec<u32> = (0..b * t).map(|_| 1 + rng.below(1682) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| 1 + rng.below(1682) as u32).collect();
    let input = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
    let tg = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    for round in 0..3 {
        let t0 = Instant::now();
        let h = model.forward(&input, Some((round, 0.2))).unwrap();
        let t1 = Instant::now();
        let logits = model.scores(&h.reshape((b * t, 64)).unwrap()).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &tg).unwrap();
        let t2 = Instant::now();
        let _g = loss.backward().unwrap();
        let t3 = Instant::now();
        let h = model.forward(&input, None).unwrap();
        let t4 = Instant::now();
        let negs: Vec<u32> = (1..=256).collect();
        let small = model
            .scores_of(&h.reshape((b * t, 64)).unwrap(), &negs)
            .unwrap();
        let zero = Tensor::zeros(b * t, candle_core::DType::U32, &Device::Cpu).unwrap();
        let l2 = candle_nn::loss::cross_entropy(&small, &zero).unwrap();
        let t5 = Instant::now();
        let _g = l2.backward().unwrap();
        println!(
            "sampled(256): loss {:.0} ms, backward {:.0} ms",
            (t5 - t4).as_secs_f64() * 1e3,
            t5.elapsed().as_secs_f64() * 1e3
        );
        println!(
            "forward {:.0} ms, loss {:.0} ms, backward {:.0} ms; forward without dropout {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            (t4 - t3).as_secs_f64() * 1e3
        );
    }
}

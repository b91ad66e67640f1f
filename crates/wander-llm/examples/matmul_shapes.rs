//! The matrix products of SmolLM2-135M's forward pass (x[m, k] times W[n, k] transposed,
//! for the q, k/v, gate/up and down projections), timed on candle's kernels: the f32 GEMM
//! (the `gemm` crate, what wander uses from `GEMM_MIN_ROWS` rows on) and the Q8_0 kernel
//! (activations quantised to 8 bits, used below that). `scripts/peer_blas.sh` runs the same
//! shapes on OpenBLAS. Prints one JSON line per row count: GFLOP/s over the four shapes.
//!
//!     cargo run --release -p wander-llm --example matmul_shapes

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];

fn time_per_call(mut f: impl FnMut(), macs: usize) -> f64 {
    f();
    let reps = (2e8 / macs as f64).ceil().max(3.0) as usize;
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for m in [1usize, 16, 67, 512] {
        let (mut f32_s, mut q8_s, mut flops) = (0.0, 0.0, 0.0);
        for (k, n) in SHAPES {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev)?;
            let wt = w.t()?;
            let q = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
            let macs = m * k * n;
            f32_s += time_per_call(|| drop(x.matmul(&wt).expect("f32 matmul")), macs);
            q8_s += time_per_call(|| drop(q.forward(&x).expect("q8_0 matmul")), macs);
            flops += 2.0 * macs as f64;
        }
        println!(
            "{{\"rows\": {m}, \"candle_f32_gflops\": {:.1}, \"candle_q8_0_gflops\": {:.1}}}",
            flops / f32_s / 1e9,
            flops / q8_s / 1e9
        );
    }
    Ok(())
}

//! The matrix products of SmolLM2-135M's forward pass (x[m, k] times W[n, k] transposed,
//! for the q, k/v, gate/up and down projections), timed on candle's kernels: the f32 GEMM
//! (the `gemm` crate with its own threading; wander's banded split of it, `wander_llm::matmul`,
//! is what wander uses from `GEMM_MIN_ROWS` rows on) and candle's Q8_0 kernel
//! (activations quantised to 8 bits), and wander's own Q8_0 kernel (`wander_llm::q8`, AVX-512
//! VNNI, used below `GEMM_MIN_ROWS` where the CPU has it). `scripts/peer_blas.sh` runs the same
//! shapes on OpenBLAS. Prints one JSON line per row count: GFLOP/s over the four shapes, and
//! for the tied output projection (49,152 x 576, 28 MB in Q8_0: read from memory, not cache).
//!
//!     cargo run --release -p wander-llm --example matmul_shapes

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];
const HEAD: (usize, usize) = (576, 49_152);

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
    for m in [1usize, 2, 4, 8, 16, 32, 67, 512, 768] {
        for (label, shapes) in [("projections", &SHAPES[..]), ("head", &[HEAD][..])] {
            let (mut f32_s, mut banded_s, mut q8_s, mut ours_s, mut bf16_s, mut flops) =
                (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for &(k, n) in shapes {
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                let w = Tensor::randn(0f32, 0.05, (n, k), &dev)?;
                let wt = w.t()?;
                let qt = QTensor::quantize(&w, GgmlDType::Q8_0)?;
                let ours = wander_llm::q8::Q8Matrix::new(&qt)?;
                let q = QMatMul::from_qtensor(qt)?;
                let macs = m * k * n;
                f32_s += time_per_call(|| drop(x.matmul(&wt).expect("f32 matmul")), macs);
                let (xs, ws) = (
                    x.flatten_all()?.to_vec1::<f32>()?,
                    w.flatten_all()?.to_vec1::<f32>()?,
                );
                banded_s += time_per_call(
                    || drop(wander_llm::matmul::x_times_w_transposed(&xs, &ws, m, k, n)),
                    macs,
                );
                q8_s += time_per_call(|| drop(q.forward(&x).expect("q8_0 matmul")), macs);
                if let Some(ours) = &ours {
                    ours_s += time_per_call(|| drop(ours.matmul(&xs, m)), macs);
                }
                if let Some(b) = wander_llm::bf16::Bf16Matrix::new(&ws, n, k) {
                    bf16_s += time_per_call(|| drop(b.matmul(&xs, m)), macs);
                }
                flops += 2.0 * macs as f64;
            }
            println!(
                "{{\"rows\": {m}, \"shapes\": \"{label}\", \"candle_f32_gflops\": {:.1}, \"wander_banded_f32_gflops\": {:.1}, \"candle_q8_0_gflops\": {:.1}, \"wander_q8_0_gflops\": {:.1}, \"wander_bf16_gflops\": {:.1}}}",
                flops / f32_s / 1e9,
                flops / banded_s / 1e9,
                flops / q8_s / 1e9,
                if ours_s > 0.0 { flops / ours_s / 1e9 } else { f64::NAN },
                if bf16_s > 0.0 { flops / bf16_s / 1e9 } else { f64::NAN }
            );
        }
    }
    Ok(())
}

//! How to split a product with a frozen weight over the cores: gemm's own multi-threading
//! against one single-threaded gemm call per thread and column band (what
//! `wander_llm::matmul` does), on SmolLM2-135M's projection shapes. Prints GFLOP/s over the
//! four shapes per row count.
//!
//!     cargo run --release -p wander-llm --example gemm_split

use std::time::Instant;

const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];

/// `x W^T` with gemm splitting the work itself.
fn gemm_threads(x: &[f32], w: &[f32], dst: &mut [f32], rows: usize, inp: usize, out: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: the buffers hold rows x inp, out x inp and rows x out elements.
    unsafe {
        gemm::gemm(
            rows,
            out,
            inp,
            dst.as_mut_ptr(),
            1,
            out as isize,
            false,
            x.as_ptr(),
            1,
            inp as isize,
            w.as_ptr(),
            inp as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    }
}

fn gflops(rows: usize, mut product: impl FnMut(&[f32], &[f32], usize, usize)) -> f64 {
    let (mut secs, mut flops) = (0.0, 0.0);
    for (inp, out) in SHAPES {
        let x: Vec<f32> = (0..rows * inp)
            .map(|i| ((i * 7919) % 1000) as f32 / 1e3)
            .collect();
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 104729) % 1000) as f32 / 1e3)
            .collect();
        let macs = rows * inp * out;
        let reps = ((2e8 / macs as f64).ceil() as usize).max(3);
        product(&x, &w, inp, out);
        let t = Instant::now();
        for _ in 0..reps {
            product(&x, &w, inp, out);
        }
        secs += t.elapsed().as_secs_f64() / reps as f64;
        flops += 2.0 * macs as f64;
    }
    flops / secs / 1e9
}

fn main() {
    for rows in [1usize, 16, 67, 300, 512] {
        let own = gflops(rows, |x, w, inp, out| {
            let mut dst = vec![0f32; rows * out];
            gemm_threads(x, w, &mut dst, rows, inp, out);
        });
        let banded = gflops(rows, |x, w, inp, out| {
            drop(wander_llm::matmul::x_times_w_transposed(
                x, w, rows, inp, out,
            ));
        });
        println!("{{\"rows\": {rows}, \"gemm_threads_gflops\": {own:.1}, \"banded_gflops\": {banded:.1}}}");
    }
}

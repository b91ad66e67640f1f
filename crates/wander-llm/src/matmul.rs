//! The products with a frozen weight `W: [out, in]` that dominate the forward and backward
//! passes: `x W^T` (every projection) and `g W` (their input gradients).
//!
//! They run on the `gemm` crate's single-threaded kernel, one call per thread over its own
//! band of output columns. gemm's own multi-threading splits these shapes badly: on the
//! 2-core reference machine a band per thread reaches 165 GFLOP/s on a LoRA batch of 300 rows
//! where gemm's split reaches 113, and 71 against 55 on a 67-token prefill
//! (`cargo run --release -p wander-llm --example gemm_split`). Every output element is still
//! one call's dot product over the whole inner dimension, so the band count does not change
//! how any sum is accumulated.

/// Threads of candle's barrier pool (its workers and the calling thread).
pub(crate) fn pool_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `task(0..tasks)` on candle's barrier pool, the threads that run candle's own
/// elementwise ops. A second pool (rayon's) would compete with them: candle's workers spin
/// for a while after each op, and on two cores the spinner takes a core from the product.
pub(crate) fn for_each_task(tasks: usize, task: impl Fn(usize) + Sync) {
    if tasks <= 1 {
        (0..tasks).for_each(task);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(tasks, |range| range.for_each(&task));
    }
}

/// Below this many multiply-adds a product runs on the calling thread: handing it to the pool
/// costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Below this many rows a product runs on the calling thread: a row or two is a matrix-vector
/// product bound by reading the weight once, and one thread reads it fastest (40 against 31
/// GFLOP/s for two bands at one row, measured with the example above).
const PARALLEL_MIN_ROWS: usize = 8;

/// Output columns per band are a multiple of this, so that no band ends inside the kernel's
/// widest column block.
const BAND_ALIGN: usize = 16;

/// Column-major-agnostic view of a row-major-or-strided matrix operand: element `(r, c)` is
/// at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Operand {
    /// `data` read with row stride `rs` and column stride `cs`.
    fn of(data: &[f32], rs: usize, cs: usize) -> Self {
        Operand {
            ptr: data.as_ptr(),
            rs: rs as isize,
            cs: cs as isize,
        }
    }
}

// SAFETY: an operand is only read, and the buffers it points into outlive the parallel
// section that shares it (both are borrowed for the whole call of `product`).
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}

/// `dst[m, n] = lhs[m, k] rhs[k, n]`, `dst` row-major, written without being read.
///
/// # Safety
/// `lhs` and `rhs` must address `m x k` and `k x n` elements inside live buffers.
unsafe fn product(m: usize, n: usize, k: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let threads = pool_threads();
    let bands = if threads == 1 || m < PARALLEL_MIN_ROWS || m * n * k < PARALLEL_MIN_MACS {
        1
    } else {
        threads
    };
    product_in_bands(m, n, k, lhs, rhs, bands)
}

/// [`product`] over `bands` column bands, one gemm call each.
///
/// # Safety
/// As [`product`].
unsafe fn product_in_bands(
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand,
    rhs: Operand,
    bands: usize,
) -> Vec<f32> {
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    let band = n.div_ceil(bands.max(1)).div_ceil(BAND_ALIGN) * BAND_ALIGN;
    let out = Operand {
        ptr: dst.as_mut_ptr(),
        rs: n as isize,
        cs: 1,
    };
    for_each_task(n.div_ceil(band.max(1)), |b| {
        // Whole operands, not their raw-pointer fields, are what the closure shares.
        let (out, lhs, rhs) = (&out, &lhs, &rhs);
        let j0 = b * band;
        let width = band.min(n - j0);
        // SAFETY: bands are disjoint column ranges of dst, so no two calls write the same
        // element; every element of dst is written by exactly one band (read_dst = false).
        unsafe {
            gemm::gemm(
                m,
                width,
                k,
                (out.ptr as *mut f32).offset(j0 as isize * out.cs),
                out.cs,
                out.rs,
                false,
                lhs.ptr,
                lhs.cs,
                lhs.rs,
                rhs.ptr.offset(j0 as isize * rhs.cs),
                rhs.cs,
                rhs.rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    });
    // SAFETY: the bands covered all m x n elements.
    unsafe { dst.set_len(m * n) };
    dst
}

/// `x W^T` for row-major `x: [rows, inp]` and `w: [out, inp]`: `[rows, out]`.
pub fn x_times_w_transposed(x: &[f32], w: &[f32], rows: usize, inp: usize, out: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * inp, "x is not [rows, inp]");
    assert_eq!(w.len(), out * inp, "w is not [out, inp]");
    let lhs = Operand::of(x, inp, 1);
    // W^T[i, o] = w[o * inp + i].
    let rhs = Operand::of(w, 1, inp);
    // SAFETY: the asserts above match the operands to their buffers.
    unsafe { product(rows, out, inp, lhs, rhs) }
}

/// `g W` for row-major `g: [rows, out]` and `w: [out, inp]`: `[rows, inp]`, the input gradient
/// of `x W^T`.
pub fn g_times_w(g: &[f32], w: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f32> {
    assert_eq!(g.len(), rows * out, "g is not [rows, out]");
    assert_eq!(w.len(), out * inp, "w is not [out, inp]");
    let lhs = Operand::of(g, out, 1);
    let rhs = Operand::of(w, inp, 1);
    // SAFETY: the asserts above match the operands to their buffers.
    unsafe { product(rows, inp, out, lhs, rhs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        a: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
        a_at: impl Fn(usize, usize) -> usize,
        b_at: impl Fn(usize, usize) -> usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k)
                    .map(|i| a[a_at(r, i)] as f64 * b[b_at(i, c)] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    #[test]
    fn both_products_match_a_naive_one_in_one_band_and_in_several() {
        // 1 row (decode), a few rows (one band), and a LoRA-batch-sized product whose odd
        // width leaves a short last band.
        for &(rows, inp, out) in &[(1, 24, 40), (5, 33, 17), (300, 96, 203)] {
            let x = values(rows * inp, 1);
            let w = values(out * inp, 2);
            let g = values(rows * out, 3);
            let y = x_times_w_transposed(&x, &w, rows, inp, out);
            let y0 = naive(
                &x,
                &w,
                rows,
                out,
                inp,
                |r, i| r * inp + i,
                |i, o| o * inp + i,
            );
            let dx = g_times_w(&g, &w, rows, out, inp);
            let dx0 = naive(
                &g,
                &w,
                rows,
                inp,
                out,
                |r, o| r * out + o,
                |o, i| o * inp + i,
            );
            for (a, b) in y.iter().zip(&y0).chain(dx.iter().zip(&dx0)) {
                assert!(
                    (a - b).abs() < 1e-3,
                    "{a} against {b} at {rows}x{inp}x{out}"
                );
            }
        }
    }

    #[test]
    fn the_band_count_does_not_change_a_single_bit() {
        let (rows, inp, out) = (300, 96, 203);
        let x = values(rows * inp, 4);
        let w = values(out * inp, 5);
        let lhs = Operand::of(&x, inp, 1);
        let rhs = Operand::of(&w, 1, inp);
        // SAFETY: the operands describe x and w.
        let (one, three) = unsafe {
            (
                product_in_bands(rows, out, inp, lhs, rhs, 1),
                product_in_bands(rows, out, inp, lhs, rhs, 3),
            )
        };
        assert_eq!(one, three);
        assert_eq!(one, x_times_w_transposed(&x, &w, rows, inp, out));
    }
}

//! bf16 products for inference passes over many rows (the judge's token trees), on AVX-512
//! BF16.
//!
//! `vdpbf16ps` multiplies 32 pairs of bf16 values and adds each pair's two products into one
//! of 16 f32 lanes: twice the multiply-adds of an f32 FMA per instruction. The weight is
//! rounded to bf16 once (when first used) and stored in panels of 32 output columns, each
//! 32-bit lane holding one column's two consecutive inputs; every activation row is rounded
//! to bf16 per call. Products of two bf16 values are exact in f32, and every output element
//! is summed over its inputs in the same order whatever rows run beside it, so a row's result
//! does not depend on the batch (a store of scores relies on that).
//!
//! Rounding inputs to bf16 (8 significant bits) changes results in the third digit; the
//! caller decides where that is acceptable (wander measures it on the judge's scores before
//! using it there). [`Bf16Matrix::new`] returns `None` on a CPU without AVX-512 BF16.

use half::bf16;

/// Output columns per panel: two 16-lane registers.
const PANEL: usize = 32;

/// Activation rows per step of the kernel: 6 rows x 2 registers = 12 accumulators, which
/// leaves registers for the two weight loads and the broadcast.
const ROWS: usize = 6;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 19;

/// Whether this CPU runs the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Names the bf16 kernel and its numerics' version (a store of model outputs keys on it);
/// `None` where the CPU lacks it.
pub fn kernel_id() -> Option<&'static str> {
    supported().then_some("wander-bf16-avx512-1")
}

/// Rounds to bf16 as the hardware conversion does: to nearest, ties to even, subnormal
/// inputs as zero (`vcvtneps2bf16` treats them so), NaN kept NaN.
fn round(x: f32) -> u16 {
    let x = if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    };
    bf16::from_f32(x).to_bits()
}

/// A weight `[rows, cols]` (`x W^T` computes `[m, rows]`) rounded to bf16 and packed for
/// [`Bf16Matrix::matmul`].
#[derive(Debug)]
pub struct Bf16Matrix {
    rows: usize,
    cols: usize,
    /// Input pairs per column (`cols / 2` rounded up; a padded input is zero).
    pairs: usize,
    /// Panel `p`, pair `k`, column `j` of the panel: `packed[(p * pairs + k) * 32 + j]`, two
    /// bf16 values (input `2k` in the low half). Columns past `rows` are zero.
    packed: Vec<u32>,
}

impl Bf16Matrix {
    /// Packs a row-major f32 weight `w: [rows, cols]`; `None` on a CPU without AVX-512 BF16.
    pub fn new(w: &[f32], rows: usize, cols: usize) -> Option<Self> {
        assert_eq!(w.len(), rows * cols, "w is not [rows, cols]");
        if !supported() {
            return None;
        }
        let pairs = cols.div_ceil(2);
        let panels = rows.div_ceil(PANEL);
        let mut packed = vec![0u32; panels * pairs * PANEL];
        for r in 0..rows {
            let (panel, j) = (r / PANEL, r % PANEL);
            let row = &w[r * cols..(r + 1) * cols];
            for k in 0..pairs {
                let lo = round(row[2 * k]);
                let hi = row.get(2 * k + 1).map_or(0, |&v| round(v));
                packed[(panel * pairs + k) * PANEL + j] = u32::from(lo) | (u32::from(hi) << 16);
            }
        }
        Some(Bf16Matrix {
            rows,
            cols,
            pairs,
            packed,
        })
    }

    /// Output columns (the weight's first dimension).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width (the weight's second dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `x W^T` for row-major `x: [m, cols]`: `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "x is not [m, cols]");
        let acts = self.round_rows(x, m);
        let mut out = vec![0f32; m * self.rows];
        let panels = self.rows.div_ceil(PANEL);
        let tasks = if m * self.rows * self.cols >= PARALLEL_MIN_MACS {
            crate::matmul::pool_threads().min(panels)
        } else {
            1
        }
        // A weight without output columns has no panels: still one (empty) task.
        .max(1);
        let per_task = panels.div_ceil(tasks);
        let dst = SharedOut(out.as_mut_ptr());
        crate::matmul::for_each_task(tasks, |task| {
            let dst = &dst;
            for panel in task * per_task..((task + 1) * per_task).min(panels) {
                let width = (self.rows - panel * PANEL).min(PANEL);
                let mut r = 0;
                while r < m {
                    let take = (m - r).min(ROWS);
                    // SAFETY: `supported()` held when the matrix was built; the panel and
                    // rows r..r + take exist; this task alone writes the panel's columns.
                    unsafe {
                        self.panel_rows(panel, width, &acts[r * self.pairs..], take, dst.0, r)
                    };
                    r += take;
                }
            }
        });
        out
    }

    /// Each row of `x` rounded to bf16, `pairs` 32-bit words per row.
    fn round_rows(&self, x: &[f32], m: usize) -> Vec<u32> {
        let mut acts = vec![0u32; m * self.pairs];
        for (row, dst) in x
            .chunks_exact(self.cols.max(1))
            .zip(acts.chunks_exact_mut(self.pairs.max(1)))
            .take(m)
        {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this matrix exists only where `supported()` held.
            unsafe {
                round_row_avx512(row, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            round_row(row, dst, 0);
        }
        acts
    }

    /// Rows `r..r + take` of the output's columns `panel * 32..+ width`.
    ///
    /// # Safety
    /// AVX-512 F and BF16; `acts` holds at least `take` rows of `pairs` words; `out` is the
    /// `[m, rows]` output with `r + take <= m`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn panel_rows(
        &self,
        panel: usize,
        width: usize,
        acts: &[u32],
        take: usize,
        out: *mut f32,
        r: usize,
    ) {
        let w = self.packed.as_ptr().add(panel * self.pairs * PANEL);
        let out = out.add(r * self.rows + panel * PANEL);
        let (pairs, stride) = (self.pairs, self.rows);
        let a = acts.as_ptr();
        match take {
            6 => kernel::<6>(w, pairs, a, out, stride, width),
            5 => kernel::<5>(w, pairs, a, out, stride, width),
            4 => kernel::<4>(w, pairs, a, out, stride, width),
            3 => kernel::<3>(w, pairs, a, out, stride, width),
            2 => kernel::<2>(w, pairs, a, out, stride, width),
            _ => kernel::<1>(w, pairs, a, out, stride, width),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn panel_rows(&self, _: usize, _: usize, _: &[u32], _: usize, _: *mut f32, _: usize) {
        unreachable!("a Bf16Matrix exists only where the CPU has AVX-512 BF16")
    }
}

/// Rounds `row[from..]` into `dst`'s words (`dst` zero beyond the row).
fn round_row(row: &[f32], dst: &mut [u32], from: usize) {
    for k in from / 2..dst.len() {
        let lo = row.get(2 * k).map_or(0, |&v| round(v));
        let hi = row.get(2 * k + 1).map_or(0, |&v| round(v));
        dst[k] = u32::from(lo) | (u32::from(hi) << 16);
    }
}

/// [`round_row`] sixteen values at a time.
///
/// # Safety
/// AVX-512 F and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_row_avx512(row: &[f32], dst: &mut [u32]) {
    use std::arch::x86_64::*;
    let full = row.len() / 16;
    for c in 0..full {
        let v = _mm512_loadu_ps(row.as_ptr().add(c * 16));
        let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_storeu_si256(dst.as_mut_ptr().add(c * 8) as *mut __m256i, b);
    }
    round_row(row, dst, full * 16);
}

/// `out[i, j] = sum_k x[i, k] w[j, k]` for `R` activation rows and one panel of 32 columns
/// (the first `width` stored).
///
/// # Safety
/// AVX-512 F and BF16; `w` addresses a panel of `pairs * 32` words, `a` `R` rows of `pairs`
/// words, `out` `R` rows of stride `stride` with `width` writable columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const R: usize>(
    w: *const u32,
    pairs: usize,
    a: *const u32,
    out: *mut f32,
    stride: usize,
    width: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..pairs {
        let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(k * PANEL) as *const _));
        let w1: __m512bh =
            std::mem::transmute(_mm512_loadu_si512(w.add(k * PANEL + 16) as *const _));
        for (i, acc) in acc.iter_mut().enumerate() {
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i * pairs + k) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], w0, x);
            acc[1] = _mm512_dpbf16_ps(acc[1], w1, x);
        }
    }
    let lo: __mmask16 = if width >= 16 {
        0xffff
    } else {
        (1u16 << width) - 1
    };
    let hi: __mmask16 = if width >= 32 {
        0xffff
    } else if width > 16 {
        (1u16 << (width - 16)) - 1
    } else {
        0
    };
    for (i, acc) in acc.iter().enumerate() {
        let row = out.add(i * stride);
        _mm512_mask_storeu_ps(row, lo, acc[0]);
        _mm512_mask_storeu_ps(row.add(16), hi, acc[1]);
    }
}

/// The output pointer shared by the tasks of one product (each writes its own columns).
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements, and the buffer outlives the parallel section.
unsafe impl Sync for SharedOut {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this CPU lacks AVX-512 BF16, where the kernel is never used (said on stderr).
    fn skipped_without_the_kernel() -> bool {
        if !supported() {
            eprintln!("no AVX-512 BF16 on this CPU: the kernel is not used here");
        }
        !supported()
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = wander_core::rng::Rng::new(seed);
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    fn as_f32(b: u16) -> f64 {
        f64::from(f32::from_bits(u32::from(b) << 16))
    }

    /// The product of the bf16-rounded operands, summed in f64.
    fn reference(x: &[f32], w: &[f32], m: usize, rows: usize, cols: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * rows];
        for i in 0..m {
            for j in 0..rows {
                out[i * rows + j] = (0..cols)
                    .map(|k| as_f32(round(x[i * cols + k])) * as_f32(round(w[j * cols + k])))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn products_match_the_rounded_operands_exact_product() {
        if skipped_without_the_kernel() {
            return;
        }
        // Ragged row counts (every kernel height), ragged and odd widths, a last panel of
        // fewer than 16 and of more than 16 columns, and one big enough to run in parallel.
        // A weight without outputs gives empty rows.
        for &(m, rows, cols) in &[
            (1, 5, 3),
            (7, 40, 33),
            (13, 50, 64),
            (100, 576, 576),
            (3, 0, 8),
        ] {
            let x = values(m * cols, 1);
            let w = values(rows * cols, 2);
            let got = Bf16Matrix::new(&w, rows, cols).unwrap().matmul(&x, m);
            let want = reference(&x, &w, m, rows, cols);
            for (g, e) in got.iter().zip(&want) {
                // Only the f32 additions round: about cols * 2^-24 of the terms' size.
                let bound = 1e-5 * (cols as f64).sqrt() * 4.0;
                assert!(
                    (f64::from(*g) - e).abs() <= bound,
                    "{g} against {e} ({m}x{rows}x{cols})"
                );
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_whatever_rows_run_beside_it() {
        if skipped_without_the_kernel() {
            return;
        }
        let (rows, cols) = (70, 96);
        let w = Bf16Matrix::new(&values(rows * cols, 3), rows, cols).unwrap();
        let x = values(11 * cols, 4);
        let all = w.matmul(&x, 11);
        for i in 0..11 {
            let one = w.matmul(&x[i * cols..(i + 1) * cols], 1);
            assert_eq!(one, all[i * rows..(i + 1) * rows], "row {i}");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_like_the_hardware_conversion() {
        if skipped_without_the_kernel() {
            return;
        }
        // Ties both ways, a value just above a tie, subnormals, infinities, NaN, and a
        // length that leaves a scalar tail.
        let mut row = vec![
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x3f80_8001),
            f32::from_bits(0x0000_0001),
            -f32::from_bits(0x0000_0100),
            f32::INFINITY,
            f32::NEG_INFINITY,
            -2.5,
        ];
        row.extend(values(29, 5));
        let mut fast = vec![0u32; row.len().div_ceil(2)];
        let mut slow = fast.clone();
        // SAFETY: checked above.
        unsafe { round_row_avx512(&row, &mut fast) };
        round_row(&row, &mut slow, 0);
        assert_eq!(fast, slow);
        assert_eq!(fast[0] & 0xffff, 0x3f80, "a tie rounds to even (down)");
        assert_eq!(fast[0] >> 16, 0x3f82, "a tie rounds to even (up)");
        let nan = [f32::NAN, 1.0];
        let mut out = [0u32; 1];
        unsafe { round_row_avx512(&nan, &mut out) };
        assert!(f32::from_bits((out[0] & 0xffff) << 16).is_nan());
    }

    #[test]
    fn a_row_holding_nan_gives_nan() {
        if skipped_without_the_kernel() {
            return;
        }
        let (rows, cols) = (20, 32);
        let w = Bf16Matrix::new(&values(rows * cols, 6), rows, cols).unwrap();
        let mut x = values(2 * cols, 7);
        x[cols + 3] = f32::NAN;
        let y = w.matmul(&x, 2);
        assert!(y[..rows].iter().all(|v| v.is_finite()));
        assert!(y[rows..].iter().all(|v| v.is_nan()));
    }
}

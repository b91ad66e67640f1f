//! Q8_0 products for a few activation rows (decoding, small batches), on AVX-512 VNNI.
//!
//! A Q8_0 weight stores each run of 32 values as 8-bit integers and one f16 scale. Decoding
//! reads every weight once per token, so it is bound by memory and by how few instructions
//! turn 64 bytes of weights into a partial sum. candle's CPU kernel for these blocks uses
//! AVX2 (two sign shuffles, a pairwise multiply-add and a widening add per 32 bytes, and two
//! out-of-line f16 conversions per block); here one `vpdpbusd` multiplies and sums 64 bytes:
//!
//! - the weights are stored once, at load, as unsigned bytes `w + 128` (the instruction
//!   multiplies unsigned by signed bytes) with their scales as f32;
//! - each activation row is quantised the way candle and llama.cpp quantise it (per block of
//!   32: scale `max |x| / 127` rounded to f16, values rounded to the nearest integer), and
//!   the offset's contribution `128 * sum(x)` is subtracted by starting one lane of each
//!   block's integer sum at `-128 * sum(x)`: the integer dot products are exact;
//! - two blocks share a 512-bit register, so the 16 lanes take two scales, spread by one
//!   permute.
//!
//! [`Q8Matrix::new`] returns `None` on a CPU without AVX-512 VNNI, and the model keeps
//! candle's kernel there. The only difference from candle's result is the order of the float
//! sums over blocks (tested against an exact reference).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

/// Values per Q8_0 block.
const BLOCK: usize = 32;
/// Bytes per Q8_0 block in GGUF and in candle: an f16 scale, then 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// Below this many multiply-adds a product runs on the calling thread (the pool's hand-off
/// costs more than the second core gives back).
const PARALLEL_MIN_MACS: usize = 1 << 19;

/// A Q8_0 weight `[rows, cols]` repacked for [`Q8Matrix::matmul`].
#[derive(Debug)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Blocks per row, rounded up to an even count (a padded block has zero weights and a
    /// zero scale, so it adds nothing).
    blocks: usize,
    /// `w + 128` per value, `blocks * 32` per row.
    weights: Vec<u8>,
    /// One scale per block, `blocks` per row.
    scales: Vec<f32>,
}

/// Whether this CPU runs the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Names the Q8_0 kernel this CPU runs and its numerics' version: results computed under
/// another id may differ in the last digits (a store of model outputs keys on it).
pub fn kernel_id() -> &'static str {
    if supported() {
        "wander-q8-avx512vnni-1"
    } else {
        "candle-0.11-q8_0"
    }
}

impl Q8Matrix {
    /// Repacks a Q8_0 tensor `[rows, cols]`; `None` for another dtype or shape, or on a CPU
    /// without AVX-512 VNNI.
    pub fn new(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if !supported() || t.dtype() != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let Ok((rows, cols)) = t.shape().dims2() else {
            return Ok(None);
        };
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let row_blocks = cols / BLOCK;
        if data.len() != rows * row_blocks * BLOCK_BYTES {
            return Err(candle_core::Error::Msg(format!(
                "a Q8_0 tensor [{rows}, {cols}] of {} bytes",
                data.len()
            )));
        }
        let blocks = row_blocks.next_multiple_of(2);
        let mut weights = vec![128u8; rows * blocks * BLOCK];
        let mut scales = vec![0f32; rows * blocks];
        for (b, raw) in data.chunks_exact(BLOCK_BYTES).enumerate() {
            let (r, c) = (b / row_blocks, b % row_blocks);
            let slot = r * blocks + c;
            scales[slot] = f16::from_le_bytes([raw[0], raw[1]]).to_f32();
            for (dst, &q) in weights[slot * BLOCK..(slot + 1) * BLOCK]
                .iter_mut()
                .zip(&raw[2..])
            {
                *dst = (q as i8 as i16 + 128) as u8;
            }
        }
        Ok(Some(Q8Matrix {
            rows,
            cols,
            blocks,
            weights,
            scales,
        }))
    }

    /// Output rows (the weight's first dimension).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width (the weight's second dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weight as candle's Q8_0 tensor again (lossless: the scales were f16 to begin with).
    pub fn to_qtensor(&self) -> candle_core::Result<QTensor> {
        let row_blocks = self.cols / BLOCK;
        let mut raw = Vec::with_capacity(self.rows * row_blocks * BLOCK_BYTES);
        for r in 0..self.rows {
            for b in 0..row_blocks {
                let slot = r * self.blocks + b;
                raw.extend_from_slice(&f16::from_f32(self.scales[slot]).to_le_bytes());
                raw.extend(
                    self.weights[slot * BLOCK..(slot + 1) * BLOCK]
                        .iter()
                        .map(|&q| (q as i16 - 128) as i8 as u8),
                );
            }
        }
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            GgmlDType::Q8_0,
            &raw,
            vec![self.rows, self.cols],
            &candle_core::Device::Cpu,
        )
    }

    /// The weight as f32 `[rows, cols]`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let slot = r * self.blocks + c / BLOCK;
                let q = self.weights[r * self.blocks * BLOCK + c] as i16 - 128;
                out.push(q as f32 * self.scales[slot]);
            }
        }
        out
    }

    /// `x W^T` for row-major `x: [m, cols]`: `[m, rows]`. Each activation row is quantised to
    /// Q8_0 first, as candle's and llama.cpp's Q8_0 products do.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "x is not [m, cols]");
        let acts = Activations::new(x, m, self.blocks);
        let mut out = vec![0f32; m * self.rows];
        let groups = self.rows.div_ceil(4);
        let parallel = m * self.rows * self.cols >= PARALLEL_MIN_MACS;
        let tasks = if parallel {
            crate::matmul::pool_threads()
        } else {
            1
        };
        let per_task = groups.div_ceil(tasks);
        let dst = SharedOut(out.as_mut_ptr());
        crate::matmul::for_each_task(tasks, |task| {
            let dst = &dst;
            let first = task * per_task * 4;
            let last = ((task + 1) * per_task * 4).min(self.rows);
            let mut r = first;
            while r < last {
                let take = (last - r).min(4);
                for i in 0..m {
                    let act = acts.row(i);
                    let mut sums = [0f32; 4];
                    // SAFETY: `supported()` held when the matrix was built; rows r..r+take
                    // exist; every activation row has `blocks` blocks.
                    unsafe { self.dot_rows(r, take, &act, &mut sums) };
                    for (k, &s) in sums[..take].iter().enumerate() {
                        // SAFETY: (i, r + k) is written by this task alone (tasks own
                        // disjoint row ranges) and lies inside `out`.
                        unsafe { *dst.0.add(i * self.rows + r + k) = s };
                    }
                }
                r += take;
            }
        });
        // Quantising maps NaN to 0 and infinity to the block's extreme: a row that held
        // either gives NaN, as an f32 product would, so the callers' finiteness checks see it.
        for (row, x) in out
            .chunks_exact_mut(self.rows)
            .zip(x.chunks_exact(self.cols))
        {
            if !x.iter().all(|v| v.is_finite()) {
                row.fill(f32::NAN);
            }
        }
        out
    }

    /// Dot products of weight rows `r..r + take` (`take` at most 4) with one quantised row.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI, `r + take <= rows`, and `act` must have been
    /// built for this matrix's block count.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_rows(&self, r: usize, take: usize, act: &ActRow, sums: &mut [f32; 4]) {
        let stride = self.blocks * BLOCK;
        let w = self.weights.as_ptr().add(r * stride);
        let s = self.scales.as_ptr().add(r * self.blocks);
        match take {
            4 => kernel::<4>(w, stride, s, self.blocks, act, sums),
            3 => kernel::<3>(w, stride, s, self.blocks, act, sums),
            2 => kernel::<2>(w, stride, s, self.blocks, act, sums),
            _ => kernel::<1>(w, stride, s, self.blocks, act, sums),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn dot_rows(&self, _: usize, _: usize, _: &ActRow, _: &mut [f32; 4]) {
        unreachable!("Q8Matrix::new returns None off x86_64")
    }
}

/// The output pointer shared by the tasks of one product (each writes its own rows).
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements, and the buffer outlives the parallel section.
unsafe impl Sync for SharedOut {}

/// Activation rows quantised to Q8_0, laid out for the kernel: per row `blocks * 32` values
/// and, per block, one scale and one correction (small enough that a batch of rows stays in
/// the L1 cache while each group of weight rows passes over it).
struct Activations {
    blocks: usize,
    /// The values as signed bytes.
    values: Vec<i8>,
    /// Per block: `-128 * sum(x)`, the weights' offset's contribution, removed.
    corrections: Vec<i32>,
    /// Per block: the scale, rounded to f16 as candle and llama.cpp store it.
    scales: Vec<f32>,
}

/// One row of [`Activations`].
struct ActRow<'a> {
    values: &'a [i8],
    corrections: &'a [i32],
    scales: &'a [f32],
}

impl Activations {
    fn zeros(m: usize, blocks: usize) -> Self {
        Activations {
            blocks,
            values: vec![0; m * blocks * BLOCK],
            corrections: vec![0; m * blocks],
            scales: vec![0.0; m * blocks],
        }
    }

    /// `x: [m, cols]` quantised per block of 32 (scale `max |x| / 127`, values rounded to
    /// the nearest integer, ties to even), zero-padded to `blocks` blocks.
    fn new(x: &[f32], m: usize, blocks: usize) -> Self {
        let mut acts = Activations::zeros(m, blocks);
        if m == 0 {
            return acts;
        }
        for (i, row) in x.chunks_exact(x.len() / m).enumerate() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this type is only built where `supported()` holds.
            unsafe {
                acts.quantize_row_avx512(i, row)
            };
            #[cfg(not(target_arch = "x86_64"))]
            acts.quantize_row(i, row);
        }
        acts
    }

    fn row(&self, i: usize) -> ActRow<'_> {
        let (n, b) = (self.blocks * BLOCK, self.blocks);
        ActRow {
            values: &self.values[i * n..(i + 1) * n],
            corrections: &self.corrections[i * b..(i + 1) * b],
            scales: &self.scales[i * b..(i + 1) * b],
        }
    }

    /// Row `i` from `x`, one value at a time: the reference of the vectorised version.
    fn quantize_row(&mut self, i: usize, x: &[f32]) {
        let (n, nb) = (self.blocks * BLOCK, self.blocks);
        let values = &mut self.values[i * n..(i + 1) * n];
        for (b, chunk) in x.chunks(BLOCK).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (dst, &v) in values[b * BLOCK..].iter_mut().zip(chunk) {
                *dst = (v * id).round_ties_even() as i8;
            }
            self.scales[i * nb + b] = f16::from_f32(d).to_f32();
            self.corrections[i * nb + b] = -128
                * values[b * BLOCK..(b + 1) * BLOCK]
                    .iter()
                    .map(|&v| v as i32)
                    .sum::<i32>();
        }
    }

    /// [`Activations::quantize_row`] sixteen values at a time.
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn quantize_row_avx512(&mut self, i: usize, x: &[f32]) {
        use std::arch::x86_64::*;
        let full = x.len() / BLOCK;
        if full * BLOCK < x.len() {
            // Q8_0 widths are whole blocks; a ragged width (tests only) takes the reference.
            return self.quantize_row(i, x);
        }
        let (n, nb) = (self.blocks * BLOCK, self.blocks);
        let values = self.values[i * n..].as_mut_ptr();
        let ones = _mm256_set1_epi8(1);
        for b in 0..full {
            let lo = _mm512_loadu_ps(x.as_ptr().add(b * BLOCK));
            let hi = _mm512_loadu_ps(x.as_ptr().add(b * BLOCK + 16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            let d = amax / 127.0;
            let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
            // The default rounding mode: to nearest, ties to even.
            let qlo = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, id)));
            let qhi = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, id)));
            let q = _mm256_set_m128i(qhi, qlo);
            _mm256_storeu_si256(values.add(b * BLOCK) as *mut __m256i, q);
            // The block's sum: a dot product with ones, then the eight lanes added.
            let lanes = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
            let sum = _mm512_reduce_add_epi32(_mm512_castsi256_si512(lanes));
            self.scales[i * nb + b] = f16::from_f32(d).to_f32();
            self.corrections[i * nb + b] = -128 * sum;
        }
    }
}

/// Dot products of `R` consecutive weight rows with one activation row, two blocks per step.
///
/// # Safety
/// AVX-512 F, BW and VNNI; `w` addresses `R` rows of `stride` bytes, `s` `R` rows of `blocks`
/// scales; `act` has `blocks` blocks (an even count).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const R: usize>(
    w: *const u8,
    stride: usize,
    s: *const f32,
    blocks: usize,
    act: &ActRow,
    sums: &mut [f32; 4],
) {
    use std::arch::x86_64::*;
    // Lanes 0-7 take the first block's scale, lanes 8-15 the second's.
    let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    // Each block's correction goes into one of its lanes (0 and 8), the others start at 0.
    let first_lanes: __mmask16 = 0x0101;
    let mut acc = [_mm512_setzero_ps(); R];
    let xq = act.values.as_ptr();
    let xc = act.corrections.as_ptr();
    let xd = act.scales.as_ptr();
    for p in 0..blocks / 2 {
        let xv = _mm512_loadu_si512(xq.add(p * 64) as *const _);
        let cv = _mm512_maskz_permutexvar_epi32(
            first_lanes,
            spread,
            _mm512_castsi128_si512(_mm_loadl_epi64(xc.add(2 * p) as *const __m128i)),
        );
        let dx = _mm_castsi128_ps(_mm_loadl_epi64(xd.add(2 * p) as *const __m128i));
        for (r, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_loadu_si512(w.add(r * stride + p * 64) as *const _);
            let iv = _mm512_dpbusd_epi32(cv, wv, xv);
            let dw = _mm_castsi128_ps(_mm_loadl_epi64(s.add(r * blocks + 2 * p) as *const __m128i));
            let sv = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_mul_ps(dw, dx)));
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iv), sv, *a);
        }
    }
    for (dst, a) in sums.iter_mut().zip(acc) {
        *dst = _mm512_reduce_add_ps(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = wander_core::rng::Rng::new(seed);
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Exact integer dot products per block, scaled and summed in f64.
    fn reference(w: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
        let (rows, cols) = w.shape().dims2().unwrap();
        let data = w.data().unwrap();
        let nb = cols / BLOCK;
        let mut out = vec![0f32; m * rows];
        let acts = Activations::new(x, m, nb.next_multiple_of(2));
        for i in 0..m {
            let act = acts.row(i);
            for r in 0..rows {
                let mut total = 0f64;
                for b in 0..nb {
                    let raw = &data[(r * nb + b) * BLOCK_BYTES..(r * nb + b + 1) * BLOCK_BYTES];
                    let dw = f16::from_le_bytes([raw[0], raw[1]]).to_f32() as f64;
                    let dx = act.scales[b] as f64;
                    let dot: i32 = (0..BLOCK)
                        .map(|k| raw[2 + k] as i8 as i32 * act.values[b * BLOCK + k] as i32)
                        .sum();
                    total += dw * dx * dot as f64;
                }
                out[i * rows + r] = total as f32;
            }
        }
        out
    }

    #[test]
    fn products_match_exact_block_sums_and_candles_kernel() {
        if !supported() {
            eprintln!("no AVX-512 VNNI here: the kernel is not used, nothing to compare");
            return;
        }
        // An odd block count (padding), a row count that leaves a group of 1-3, one row and
        // several, and a product big enough to split over the pool.
        for &(m, rows, cols) in &[
            (1, 7, 96),
            (3, 13, 64),
            (1, 576, 576),
            (5, 1030, 1536),
            (20, 576, 576),
        ] {
            let w = Tensor::from_vec(values(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let packed = Q8Matrix::new(&q).unwrap().expect("supported");
            let x = values(m * cols, 2);
            let ours = packed.matmul(&x, m);
            let exact = reference(&q, &x, m);
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let candle = candle_core::quantized::QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for ((a, e), c) in ours.iter().zip(&exact).zip(&candle) {
                let tol = 1e-4 * (1.0 + e.abs());
                assert!(
                    (a - e).abs() < tol,
                    "{a} against exact {e} at {m}x{rows}x{cols}"
                );
                assert!(
                    (a - c).abs() < tol,
                    "{a} against candle's {c} at {m}x{rows}x{cols}"
                );
            }
        }
    }

    #[test]
    fn vectorised_quantisation_equals_the_scalar_reference() {
        if !supported() {
            return;
        }
        // Whole blocks, a ragged tail, a zero block, and values at rounding ties.
        let mut x = values(3 * 200, 6);
        x[32..64].fill(0.0);
        x[64] = 127.0;
        x[65] = 0.5;
        x[66] = 1.5;
        x[67] = -2.5;
        let blocks = 200usize.div_ceil(BLOCK).next_multiple_of(2);
        let fast = Activations::new(&x, 3, blocks);
        let mut slow = Activations::zeros(3, blocks);
        for (i, row) in x.chunks_exact(200).enumerate() {
            slow.quantize_row(i, row);
        }
        assert_eq!(fast.values, slow.values);
        assert_eq!(fast.corrections, slow.corrections);
        assert_eq!(fast.scales, slow.scales);
        assert_eq!(fast.values[65..68], [0, 2, -2]);
    }

    #[test]
    fn a_row_with_nan_or_infinity_gives_nan_not_a_number_that_looks_fine() {
        if !supported() {
            return;
        }
        let w = Tensor::from_vec(values(8 * 64, 8), (8, 64), &Device::Cpu).unwrap();
        let packed = Q8Matrix::new(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap())
            .unwrap()
            .unwrap();
        let mut x = values(3 * 64, 9);
        x[5] = f32::NAN;
        x[64 + 7] = f32::INFINITY;
        let y = packed.matmul(&x, 3);
        assert!(y[..16].iter().all(|v| v.is_nan()), "{y:?}");
        assert!(y[16..].iter().all(|v| v.is_finite()), "{y:?}");
    }

    #[test]
    fn dequantizing_gives_candles_values() {
        if !supported() {
            return;
        }
        let w = Tensor::from_vec(values(9 * 96, 4), (9, 96), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let packed = Q8Matrix::new(&q).unwrap().unwrap();
        let candle = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(packed.dequantize(), candle);
    }

    #[test]
    fn a_packed_weight_gives_back_candles_bytes() {
        if !supported() {
            return;
        }
        let w = Tensor::from_vec(values(9 * 96, 7), (9, 96), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let back = Q8Matrix::new(&q).unwrap().unwrap().to_qtensor().unwrap();
        assert_eq!(back.data().unwrap(), q.data().unwrap());
        assert_eq!(back.shape(), q.shape());
    }

    #[test]
    fn other_dtypes_are_left_to_candle() {
        let w = Tensor::from_vec(values(4 * 32, 5), (4, 32), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::F32).unwrap();
        assert!(Q8Matrix::new(&q).unwrap().is_none());
    }
}

//! Fused, differentiable kernels for the training forward pass: RMSNorm, interleaved RoPE and
//! the attention's scaled, causally masked softmax.
//!
//! candle's fused versions of these have no backward pass, so training used to build each
//! from five to eight elementwise tensor ops, every one a fresh allocation and a pass over
//! memory, most of them on one core. Each op here is one pass forward and one pass backward,
//! split over rows on candle's thread pool. The backward kernels are themselves forward-only ops:
//! the trainer takes first derivatives only.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// Rows handed to one task at a time: a task of this many rows of width 64 to 1,536 is a few
/// microseconds of work, enough to hide the pool's hand-off.
const ROWS_PER_TASK: usize = 16;

/// The f32 elements of a contiguous operand, or an error naming it.
pub(crate) fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn last_dim(layout: &Layout) -> candle_core::Result<usize> {
    layout
        .shape()
        .dims()
        .last()
        .copied()
        .filter(|&d| d > 0)
        .ok_or_else(|| {
            candle_core::Error::Msg("a fused op needs a non-empty last dimension".into())
        })
}

/// `out[r] = f(r, ..)` over rows of `width`, in tasks of [`ROWS_PER_TASK`] rows on candle's
/// barrier pool.
pub(crate) fn map_rows(
    rows: usize,
    width: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    struct Rows(*mut f32);
    // SAFETY: each task writes only its own rows of the buffer, which outlives the tasks.
    unsafe impl Sync for Rows {}
    let mut out = vec![0f32; rows * width];
    let base = Rows(out.as_mut_ptr());
    crate::matmul::for_each_task(rows.div_ceil(ROWS_PER_TASK), |task| {
        let base = &base;
        let first = task * ROWS_PER_TASK;
        for r in first..rows.min(first + ROWS_PER_TASK) {
            // SAFETY: row r lies inside the buffer and belongs to this task alone.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(r * width), width) };
            f(r, row);
        }
    });
    out
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
///
/// On a GPU (the `cuda` feature) the same function runs as candle's composite ops, which
/// carry their own backward passes there: these kernels are written for the CPU.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return composite::rms_norm(x, w, eps);
    }
    x.contiguous()?.apply_op2(w, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wander-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = last_dim(xl)?;
        let (x, w) = (
            contiguous(xs, xl, "rms_norm's input")?,
            contiguous(ws, wl, "rms_norm's weight")?,
        );
        if w.len() != d {
            return Err(candle_core::Error::Msg(format!(
                "rms_norm: width {d}, weight {}",
                w.len()
            )));
        }
        let out = map_rows(x.len() / d, d, |r, row| {
            let xr = &x[r * d..(r + 1) * d];
            let s = inv_rms(xr, self.eps);
            for ((o, xv), wv) in row.iter_mut().zip(xr).zip(w) {
                *o = xv * s * wv;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &RmsNormBackward { eps: self.eps })?;
        // The norms' weights are frozen under LoRA; only full training pays for their
        // gradient, with plain tensor ops.
        let dw = if w.track_op() {
            let d = w.elem_count();
            let rows = x.elem_count() / d;
            let x2 = x.reshape((rows, d))?;
            let s = x2
                .sqr()?
                .mean_keepdim(1)?
                .affine(1.0, self.eps as f64)?
                .sqrt()?
                .recip()?;
            let xhat = x2.broadcast_mul(&s)?;
            Some((grad.reshape((rows, d))? * xhat)?.sum(0)?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// `dx = s (g w - xhat mean(g w xhat))` with `s = 1 / rms(x)` and `xhat = x s`.
struct RmsNormBackward {
    eps: f32,
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "wander-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = last_dim(xl)?;
        let x = contiguous(xs, xl, "rms_norm's input")?;
        let w = contiguous(ws, wl, "rms_norm's weight")?;
        let g = contiguous(gs, gl, "rms_norm's gradient")?;
        let out = map_rows(x.len() / d, d, |r, row| {
            let (xr, gr) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            let s = inv_rms(xr, self.eps);
            let dot = xr
                .iter()
                .zip(gr)
                .zip(w)
                .map(|((xv, gv), wv)| gv * wv * xv * s)
                .sum::<f32>()
                / d as f32;
            for (((o, xv), gv), wv) in row.iter_mut().zip(xr).zip(gr).zip(w) {
                *o = s * (gv * wv - xv * s * dot);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Interleaved rotary embedding of `x: [b, h, t, d]` with `cos, sin: [t, d / 2]`: each pair
/// `(x[2i], x[2i + 1])` is rotated by the angle whose cosine and sine are `cos[t, i]`,
/// `sin[t, i]` (candle's `rope_i`).
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return candle_nn::rotary_emb::rope_i_slow(x, cos, sin);
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { inverse: false },
    )
}

/// A rotation, or (for the backward pass, since a rotation's transpose is its inverse) the
/// rotation by the opposite angle.
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "wander-rope-interleaved"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, t, d) = xl.shape().dims4()?;
        let x = contiguous(xs, xl, "rope's input")?;
        let cos = contiguous(cs, cl, "rope's cosines")?;
        let sin = contiguous(ss, sl, "rope's sines")?;
        if d % 2 != 0 || cos.len() != t * d / 2 || sin.len() != t * d / 2 {
            return Err(candle_core::Error::Msg(format!(
                "rope: head width {d} over {t} positions, tables of {} and {}",
                cos.len(),
                sin.len()
            )));
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let out = map_rows(x.len() / d, d, |r, row| {
            let xr = &x[r * d..(r + 1) * d];
            let p = r % t;
            let (c, s) = (
                &cos[p * d / 2..(p + 1) * d / 2],
                &sin[p * d / 2..(p + 1) * d / 2],
            );
            for i in 0..d / 2 {
                let (a, b) = (xr[2 * i], xr[2 * i + 1]);
                let (ci, si) = (c[i], sign * s[i]);
                row[2 * i] = a * ci - b * si;
                row[2 * i + 1] = a * si + b * ci;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rope {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(dx), None, None))
    }
}

/// `softmax(scale * scores + causal mask)` over the last dimension of `scores: [.., rows,
/// total]`, where row `r` is query position `r % queries` of a block of `queries` positions
/// that follows `past` cached ones, and may see keys `0..=past + r % queries`.
pub fn causal_softmax(
    scores: &Tensor,
    scale: f64,
    queries: usize,
    past: usize,
) -> candle_core::Result<Tensor> {
    if !scores.device().is_cpu() {
        return composite::causal_softmax(scores, scale, queries, past);
    }
    scores.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
        queries,
        past,
    })
}

struct CausalSoftmax {
    scale: f32,
    queries: usize,
    past: usize,
}

impl CausalSoftmax {
    /// Keys row `r` may see.
    fn visible(&self, r: usize, total: usize) -> usize {
        (self.past + r % self.queries + 1).min(total)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "wander-causal-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let total = last_dim(xl)?;
        let x = contiguous(xs, xl, "the attention scores")?;
        let out = map_rows(x.len() / total, total, |r, row| {
            let n = self.visible(r, total);
            let xr = &x[r * total..r * total + n];
            let max = xr
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut sum = 0f32;
            for (o, &v) in row[..n].iter_mut().zip(xr) {
                *o = (v * self.scale - max).exp();
                sum += *o;
            }
            for o in &mut row[..n] {
                *o /= sum;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SoftmaxBackward { scale: self.scale },
        )?))
    }
}

/// `dx = scale * y * (g - sum(g y))` per row; masked keys have `y = 0` and get 0.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "wander-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let total = last_dim(yl)?;
        let y = contiguous(ys, yl, "the attention weights")?;
        let g = contiguous(gs, gl, "the attention weights' gradient")?;
        let out = map_rows(y.len() / total, total, |r, row| {
            let (yr, gr) = (
                &y[r * total..(r + 1) * total],
                &g[r * total..(r + 1) * total],
            );
            let dot = yr.iter().zip(gr).map(|(a, b)| a * b).sum::<f32>();
            for ((o, yv), gv) in row.iter_mut().zip(yr).zip(gr) {
                *o = self.scale * yv * (gv - dot);
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// The same functions as candle's differentiable composite ops: what a GPU runs, and the
/// reference the CPU kernels are tested against.
pub mod composite {
    use candle_core::{Tensor, D};

    /// [`super::rms_norm`] as elementwise ops.
    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
    }

    /// [`super::causal_softmax`] as a scale, an additive mask and a softmax.
    pub fn causal_softmax(
        scores: &Tensor,
        scale: f64,
        queries: usize,
        past: usize,
    ) -> candle_core::Result<Tensor> {
        let dims = scores.dims();
        let (rows, total) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if queries == 0 || rows % queries != 0 || total != past + queries {
            candle_core::bail!(
                "causal softmax: {rows} rows of {total} keys for {queries} queries after {past}"
            );
        }
        let mask: Vec<f32> = (0..rows)
            .flat_map(|r| (0..total).map(move |j| if j > past + r % queries { -1e9 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (rows, total), scores.device())?;
        candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&mask)?, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var, D};

    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = wander_core::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn assert_close(a: &Tensor, b: &Tensor, tolerance: f32, what: &str) {
        let d = max_abs_diff(a, b);
        assert!(d < tolerance, "{what} differ by {d}");
    }

    /// Value and input gradient of `sum(op(x) * probe)` for a fused op and its composite
    /// reference; `probe` makes every output element's gradient different.
    fn value_and_grad(
        x: &Tensor,
        probe: &Tensor,
        op: impl Fn(&Tensor) -> Tensor,
    ) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let y = op(v.as_tensor());
        let loss = (&y * probe).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        (y, grads.get(v.as_tensor()).unwrap().clone())
    }

    #[test]
    fn rms_norm_matches_the_composite_ops_in_value_and_gradients() {
        let x = randn(&[3, 5, 24], 1);
        let probe = randn(&[3, 5, 24], 2);
        let w = Var::from_tensor(&(randn(&[24], 3) + 1.5).unwrap()).unwrap();
        let reference = |x: &Tensor| composite::rms_norm(x, w.as_tensor(), 1e-5).unwrap();
        let (y0, g0) = value_and_grad(&x, &probe, reference);
        let (y1, g1) = value_and_grad(&x, &probe, |x| rms_norm(x, w.as_tensor(), 1e-5).unwrap());
        assert_close(&y0, &y1, 1e-5, "values");
        assert_close(&g0, &g1, 1e-5, "input gradients");
        // The weight's gradient, when it is trained.
        let wgrad = |fused: bool| {
            let y = if fused {
                rms_norm(&x, w.as_tensor(), 1e-5).unwrap()
            } else {
                reference(&x)
            };
            let grads = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            grads.get(w.as_tensor()).unwrap().clone()
        };
        assert_close(&wgrad(false), &wgrad(true), 1e-4, "weight gradients");
    }

    #[test]
    fn rope_matches_candles_rope_and_its_gradient_is_the_inverse_rotation() {
        let (b, h, t, d) = (2, 3, 7, 8);
        let x = randn(&[b, h, t, d], 4);
        let probe = randn(&[b, h, t, d], 5);
        let angles = randn(&[t, d / 2], 6);
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let (y0, g0) = value_and_grad(&x, &probe, |x| {
            candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin).unwrap()
        });
        let (y1, g1) = value_and_grad(&x, &probe, |x| rope_interleaved(x, &cos, &sin).unwrap());
        assert_close(&y0, &y1, 1e-6, "values");
        assert_close(&g0, &g1, 1e-6, "gradients");
        let fast = candle_nn::rotary_emb::rope_i(&x, &cos, &sin).unwrap();
        assert_close(&fast, &y1, 1e-6, "values against candle's fused rope");
    }

    #[test]
    fn causal_softmax_matches_scale_mask_and_softmax_after_a_cached_prefix() {
        // 2 query heads per KV head folded into rows, as the attention does, 3 new positions
        // after 2 cached ones.
        let (b, kv, rep, t, past) = (2, 2, 2, 3, 2);
        let total = past + t;
        let x = randn(&[b, kv, rep * t, total], 7);
        let probe = randn(&[b, kv, rep * t, total], 8);
        let scale = 0.35;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..total).map(move |j| if j > past + i { -1e9 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, total), &Device::Cpu).unwrap();
        let (y0, g0) = value_and_grad(&x, &probe, |x| {
            let att = (x * scale)
                .unwrap()
                .reshape((b, kv, rep, t, total))
                .unwrap();
            let att = att
                .broadcast_add(&mask)
                .unwrap()
                .reshape((b, kv, rep * t, total))
                .unwrap();
            candle_nn::ops::softmax(&att, D::Minus1).unwrap()
        });
        let (y1, g1) = value_and_grad(&x, &probe, |x| causal_softmax(x, scale, t, past).unwrap());
        assert_close(&y0, &y1, 1e-6, "values");
        assert_close(&g0, &g1, 1e-6, "gradients");
        // What a GPU runs instead: the same function, gradients included.
        let (y2, g2) = value_and_grad(&x, &probe, |x| {
            composite::causal_softmax(x, scale, t, past).unwrap()
        });
        assert_close(&y0, &y2, 1e-6, "the composite's values");
        assert_close(&g0, &g2, 1e-6, "the composite's gradients");
    }
}

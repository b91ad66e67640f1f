//! SASRec inference in plain Rust: what serving and evaluation need from the trained item
//! model, without a tensor framework. The weights are the trainer's (`wander-items`, in
//! candle), read by name from its safetensors file or handed over in memory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::BundleError;

/// Shape and regularisation of the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SasRecConfig {
    /// Catalogue size plus one (id 0 is padding).
    pub vocab: usize,
    /// Longest sequence (older items are dropped).
    pub max_len: usize,
    /// Embedding width.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads (dividing `dim`).
    pub heads: usize,
    /// Dropout on embeddings, attention output and feed-forward output in training.
    pub dropout: f64,
}

/// LayerNorm's epsilon, shared with the trainer so both paths compute the same function.
pub const LN_EPS: f64 = 1e-6;

/// The names of the model's weight tensors, in a fixed order: `item` and `pos`, then
/// `l{i}.ln1.g`, `l{i}.ln1.b`, `l{i}.wq`, `l{i}.wk`, `l{i}.wv`, `l{i}.wo`, `l{i}.ln2.g`,
/// `l{i}.ln2.b`, `l{i}.w1`, `l{i}.b1`, `l{i}.w2`, `l{i}.b2` per block, then `lnf.g`, `lnf.b`;
/// with each one's shape.
pub fn weight_shapes(cfg: &SasRecConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.dim;
    let mut v = vec![
        ("item".to_string(), vec![cfg.vocab, d]),
        ("pos".to_string(), vec![cfg.max_len, d]),
    ];
    for l in 0..cfg.layers {
        for (n, shape) in LAYER_WEIGHTS {
            let shape = if shape == 2 { vec![d, d] } else { vec![d] };
            v.push((format!("l{l}.{n}"), shape));
        }
    }
    v.push(("lnf.g".into(), vec![d]));
    v.push(("lnf.b".into(), vec![d]));
    v
}

/// A block's weights and their rank (1: `[dim]`, 2: `[dim, dim]`).
const LAYER_WEIGHTS: [(&str, usize); 12] = [
    ("ln1.g", 1),
    ("ln1.b", 1),
    ("wq", 2),
    ("wk", 2),
    ("wv", 2),
    ("wo", 2),
    ("ln2.g", 1),
    ("ln2.b", 1),
    ("w1", 2),
    ("b1", 1),
    ("w2", 2),
    ("b2", 1),
];

#[derive(Debug, Clone)]
struct CpuLayer {
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// SASRec inference in plain Rust for one sequence at a time: no framework overhead, and the
/// result for a user never depends on batching or threads. Only the last position's output
/// is needed, so the last block computes one query.
#[derive(Debug, Clone)]
pub struct CpuSasRec {
    /// Shape.
    pub cfg: SasRecConfig,
    /// Item embeddings `[vocab, dim]`, row-major.
    pub item: Vec<f32>,
    pos: Vec<f32>,
    layers: Vec<CpuLayer>,
    lnf_g: Vec<f32>,
    lnf_b: Vec<f32>,
}

#[inline(always)]
fn ln_row(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS as f32).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * g[i] + b[i];
    }
}

/// [`ln_row`] on every row of `x: [rows, d]` at once, with the same bits. A row's mean and
/// variance are sums in order, a chain of dependent adds; with the rows transposed into
/// `transposed` the chains of all rows advance side by side in one vector.
#[inline(always)]
fn ln_rows(x: &[f32], d: usize, g: &[f32], b: &[f32], out: &mut [f32], stats: &mut LnStats<'_>) {
    let rows = x.len() / d;
    let n = d as f32;
    let LnStats {
        transposed,
        mean,
        inv,
    } = stats;
    let (transposed, mean, inv) = (
        &mut transposed[..rows * d],
        &mut mean[..rows],
        &mut inv[..rows],
    );
    for (r, row) in x.chunks_exact(d).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            transposed[i * rows + r] = v;
        }
    }
    // `Sum for f32` starts from -0.0; so do these.
    mean.iter_mut().for_each(|m| *m = -0.0);
    for column in transposed.chunks_exact(rows) {
        for (m, &v) in mean.iter_mut().zip(column) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    inv.iter_mut().for_each(|s| *s = -0.0);
    for column in transposed.chunks_exact(rows) {
        for ((s, &v), &m) in inv.iter_mut().zip(column).zip(mean.iter()) {
            *s += (v - m) * (v - m);
        }
    }
    inv.iter_mut()
        .for_each(|s| *s = 1.0 / (*s / n + LN_EPS as f32).sqrt());
    for (r, (row, o)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let (m, s) = (mean[r], inv[r]);
        for i in 0..d {
            o[i] = (row[i] - m) * s * g[i] + b[i];
        }
    }
}

/// Scratch space of [`ln_rows`].
struct LnStats<'a> {
    transposed: &'a mut [f32],
    mean: &'a mut [f32],
    inv: &'a mut [f32],
}

/// Rows of the output computed together: each weight row loaded once serves four rows.
const TILE_ROWS: usize = 4;
/// Output columns computed together: with `TILE_ROWS` rows, eight 512-bit accumulators.
const TILE_COLS: usize = 32;

/// `out = x · W` for `x: [rows, d_in]` and `W: [d_in, d_out]`, row-major, as register
/// tiles. Every output is summed over `i` in order from zero with separate multiplies and
/// adds, exactly as one row at a time would: the tiling changes the speed, never a bit of
/// the result.
#[inline(always)]
fn mat_mul(x: &[f32], w: &[f32], d_in: usize, d_out: usize, out: &mut [f32]) {
    let rows = x.len() / d_in;
    let w = &w[..d_in * d_out];
    let full_cols = d_out - d_out % TILE_COLS;
    let mut x_tiles = x.chunks_exact(TILE_ROWS * d_in);
    let mut out_tiles = out.chunks_exact_mut(TILE_ROWS * d_out);
    for (x_tile, out_tile) in (&mut x_tiles).zip(&mut out_tiles) {
        let (x0, rest) = x_tile.split_at(d_in);
        let (x1, rest) = rest.split_at(d_in);
        let (x2, x3) = rest.split_at(d_in);
        for c in (0..full_cols).step_by(TILE_COLS) {
            let mut acc = [[0f32; TILE_COLS]; TILE_ROWS];
            let [acc0, acc1, acc2, acc3] = &mut acc;
            for ((((w_row, &a0), &a1), &a2), &a3) in
                w.chunks_exact(d_out).zip(x0).zip(x1).zip(x2).zip(x3)
            {
                let w_tile: &[f32; TILE_COLS] = w_row[c..c + TILE_COLS]
                    .try_into()
                    .expect("tile inside the row");
                for n in 0..TILE_COLS {
                    acc0[n] += a0 * w_tile[n];
                    acc1[n] += a1 * w_tile[n];
                    acc2[n] += a2 * w_tile[n];
                    acc3[n] += a3 * w_tile[n];
                }
            }
            for (out_row, acc_row) in out_tile.chunks_exact_mut(d_out).zip(&acc) {
                out_row[c..c + TILE_COLS].copy_from_slice(acc_row);
            }
        }
        if full_cols < d_out {
            for (x_row, out_row) in x_tile
                .chunks_exact(d_in)
                .zip(out_tile.chunks_exact_mut(d_out))
            {
                row_times_mat(x_row, w, d_out, full_cols, out_row);
            }
        }
    }
    let done = rows - rows % TILE_ROWS;
    for (x_row, out_row) in x[done * d_in..]
        .chunks_exact(d_in)
        .zip(out[done * d_out..].chunks_exact_mut(d_out))
    {
        row_times_mat(x_row, w, d_out, 0, out_row);
    }
}

/// Columns `from..` of `out = x · W` for one row `x` (the same sums as [`mat_mul`]).
#[inline(always)]
fn row_times_mat(x: &[f32], w: &[f32], d_out: usize, from: usize, out: &mut [f32]) {
    let out = &mut out[from..d_out];
    out.iter_mut().for_each(|v| *v = 0.0);
    for (&xi, w_row) in x.iter().zip(w.chunks_exact(d_out)) {
        for (o, &wv) in out.iter_mut().zip(&w_row[from..]) {
            *o += xi * wv;
        }
    }
}

/// Keys scored together against one query: one 512-bit register of scores.
const KEY_LANES: usize = 16;

/// Scratch space of one forward pass for `t` positions of width `d`, carved out of one
/// buffer that each thread keeps between requests. Nothing is read before this pass writes
/// it, except the keys' padding up to a multiple of [`KEY_LANES`], whose scores are never
/// read.
struct Scratch<'a> {
    normed: &'a mut [f32],
    keys: &'a mut [f32],
    /// `[d, t rounded up to KEY_LANES]`.
    keys_t: &'a mut [f32],
    values: &'a mut [f32],
    queries: &'a mut [f32],
    context: &'a mut [f32],
    projected: &'a mut [f32],
    residual: &'a mut [f32],
    hidden: &'a mut [f32],
    /// `t` rounded up to KEY_LANES.
    scores: &'a mut [f32],
    ln: LnStats<'a>,
}

impl<'a> Scratch<'a> {
    fn carve(buffer: &'a mut Vec<f32>, t: usize, d: usize) -> Self {
        let padded = t.next_multiple_of(KEY_LANES);
        let sizes = [
            t * d,
            t * d,
            d * padded,
            t * d,
            t * d,
            t * d,
            t * d,
            t * d,
            t * d,
            padded,
            t * d,
            t,
            t,
        ];
        let total: usize = sizes.iter().sum();
        if buffer.len() < total {
            buffer.resize(total, 0.0);
        }
        let mut rest: &'a mut [f32] = &mut buffer[..total];
        let mut next = |n: usize| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            part
        };
        Scratch {
            normed: next(t * d),
            keys: next(t * d),
            keys_t: next(d * padded),
            values: next(t * d),
            queries: next(t * d),
            context: next(t * d),
            projected: next(t * d),
            residual: next(t * d),
            hidden: next(t * d),
            scores: next(padded),
            ln: LnStats {
                transposed: next(t * d),
                mean: next(t),
                inv: next(t),
            },
        }
    }
}

thread_local! {
    /// Each thread's forward-pass buffer, grown to the longest history it has seen (at most
    /// `max_len` positions).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl CpuSasRec {
    /// The user representation after the items of `history` (oldest first; ids in
    /// `1..vocab`, the last `max_len` used): the final hidden state at the last position.
    ///
    /// The same function is compiled for AVX-512, for AVX2 and for the baseline, and the
    /// widest the CPU has runs. No multiply is fused with an add and no sum is reordered, so
    /// every version gives the same bits.
    pub fn user_vector(&self, history: &[u32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has just been found to support AVX-512F.
                return unsafe { self.user_vector_avx512(history) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has just been found to support AVX2.
                return unsafe { self.user_vector_avx2(history) };
            }
        }
        self.user_vector_portable(history)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn user_vector_avx512(&self, history: &[u32]) -> Vec<f32> {
        self.user_vector_portable(history)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn user_vector_avx2(&self, history: &[u32]) -> Vec<f32> {
        self.user_vector_portable(history)
    }

    /// The forward pass, inlined into each target's version above.
    #[inline(always)]
    fn user_vector_portable(&self, history: &[u32]) -> Vec<f32> {
        let d = self.cfg.dim;
        let h = self.cfg.heads;
        let hd = d / h;
        let hist: Vec<u32> = history
            .iter()
            .copied()
            .filter(|&i| (i as usize) < self.cfg.vocab && i != 0)
            .collect();
        let hist = &hist[hist.len().saturating_sub(self.cfg.max_len)..];
        let t = hist.len();
        let mut out = vec![0.0; d];
        if t == 0 {
            ln_row(&vec![0.0; d], &self.lnf_g, &self.lnf_b, &mut out);
            return out;
        }
        let offset = self.cfg.max_len - t;
        let scale = (d as f32).sqrt();
        let mut x: Vec<f32> = Vec::with_capacity(t * d);
        for (p, &it) in hist.iter().enumerate() {
            let e = &self.item[it as usize * d..(it as usize + 1) * d];
            let pe = &self.pos[(offset + p) * d..(offset + p + 1) * d];
            x.extend(e.iter().zip(pe).map(|(a, b)| a * scale + b));
        }
        // Taken out and put back rather than borrowed in a closure: a closure would not be
        // compiled with this function's target features.
        let mut buffer = SCRATCH.take();
        let mut s = Scratch::carve(&mut buffer, t, d);
        let head_scale = (hd as f32).sqrt();
        for (li, l) in self.layers.iter().enumerate() {
            // The last block's output is only read at the last position: one query there.
            let first_query = if li + 1 == self.layers.len() {
                t - 1
            } else {
                0
            };
            let nq = t - first_query;
            ln_rows(&x, d, &l.ln1_g, &l.ln1_b, &mut s.normed, &mut s.ln);
            mat_mul(&s.normed, &l.wk, d, d, &mut s.keys);
            mat_mul(&s.normed, &l.wv, d, d, &mut s.values);
            mat_mul(
                &s.normed[first_query * d..],
                &l.wq,
                d,
                d,
                &mut s.queries[..nq * d],
            );
            // Keys transposed ([d, padded t]) so that one query's scores against
            // KEY_LANES keys are one register, multiplied and added along the head.
            let padded = t.next_multiple_of(KEY_LANES);
            for j in 0..t {
                for c in 0..d {
                    s.keys_t[c * padded + j] = s.keys[j * d + c];
                }
            }
            for qi in 0..nq {
                let p = first_query + qi;
                let q = &s.queries[qi * d..(qi + 1) * d];
                for head in 0..h {
                    let cols = head * hd..(head + 1) * hd;
                    for j0 in (0..=p).step_by(KEY_LANES) {
                        // As `.sum()` would: from -0.0, along the head in order.
                        let mut acc = [-0.0f32; KEY_LANES];
                        for c in cols.clone() {
                            let qc = q[c];
                            let k: &[f32; KEY_LANES] = s.keys_t
                                [c * padded + j0..c * padded + j0 + KEY_LANES]
                                .try_into()
                                .expect("padded to KEY_LANES");
                            for (a, &kj) in acc.iter_mut().zip(k) {
                                *a += qc * kj;
                            }
                        }
                        s.scores[j0..j0 + KEY_LANES].copy_from_slice(&acc);
                    }
                    let scores = &mut s.scores[..=p];
                    let mut max = f32::NEG_INFINITY;
                    for sj in scores.iter_mut() {
                        *sj /= head_scale;
                        max = max.max(*sj);
                    }
                    let mut z = 0.0;
                    for a in scores.iter_mut() {
                        *a = (*a - max).exp();
                        z += *a;
                    }
                    let ctx = &mut s.context[qi * d + cols.start..qi * d + cols.end];
                    // KEY_LANES columns at a time in a register, summed over the keys in
                    // order; then the columns left over.
                    let full = hd - hd % KEY_LANES;
                    for c0 in (0..full).step_by(KEY_LANES) {
                        let mut acc = [-0.0f32; KEY_LANES];
                        for (j, &a) in scores.iter().enumerate() {
                            let at = j * d + cols.start + c0;
                            let v: &[f32; KEY_LANES] = s.values[at..at + KEY_LANES]
                                .try_into()
                                .expect("inside the head");
                            for (o, &vj) in acc.iter_mut().zip(v) {
                                *o += a * vj;
                            }
                        }
                        ctx[c0..c0 + KEY_LANES].copy_from_slice(&acc);
                    }
                    for (c, o) in ctx.iter_mut().enumerate().skip(full) {
                        *o = scores
                            .iter()
                            .enumerate()
                            .map(|(j, &a)| a * s.values[j * d + cols.start + c])
                            .sum();
                    }
                    ctx.iter_mut().for_each(|v| *v /= z);
                }
            }
            mat_mul(
                &s.context[..nq * d],
                &l.wo,
                d,
                d,
                &mut s.projected[..nq * d],
            );
            for (r, (a, b)) in s.residual[..nq * d]
                .iter_mut()
                .zip(x[first_query * d..].iter().zip(&s.projected[..nq * d]))
            {
                *r = a + b;
            }
            ln_rows(
                &s.residual[..nq * d],
                d,
                &l.ln2_g,
                &l.ln2_b,
                &mut s.normed[..nq * d],
                &mut s.ln,
            );
            mat_mul(&s.normed[..nq * d], &l.w1, d, d, &mut s.hidden[..nq * d]);
            for row in s.hidden[..nq * d].chunks_exact_mut(d) {
                for (a, b) in row.iter_mut().zip(&l.b1) {
                    *a = (*a + b).max(0.0);
                }
            }
            mat_mul(&s.hidden[..nq * d], &l.w2, d, d, &mut s.projected[..nq * d]);
            for qi in 0..nq {
                let p = first_query + qi;
                for c in 0..d {
                    x[p * d + c] = s.residual[qi * d + c] + s.projected[qi * d + c] + l.b2[c];
                }
            }
        }
        SCRATCH.set(buffer);
        ln_row(&x[(t - 1) * d..t * d], &self.lnf_g, &self.lnf_b, &mut out);
        out
    }

    /// Score of one item for a user vector.
    pub fn score(&self, user: &[f32], item: u32) -> f32 {
        let d = self.cfg.dim;
        self.item[item as usize * d..(item as usize + 1) * d]
            .iter()
            .zip(user)
            .map(|(a, b)| a * b)
            .sum()
    }
}

impl CpuSasRec {
    /// Builds the model from its weights, fetched by name (see [`weight_shapes`]) as
    /// row-major `f32` vectors; a weight of the wrong length or with a NaN or infinity is an
    /// error.
    pub fn from_named<E>(
        cfg: SasRecConfig,
        mut get: impl FnMut(&str) -> Result<Vec<f32>, E>,
    ) -> Result<Self, E>
    where
        E: From<BundleError>,
    {
        let mut named = std::collections::HashMap::new();
        for (name, shape) in weight_shapes(&cfg) {
            let w = get(&name)?;
            let want: usize = shape.iter().product();
            if w.len() != want {
                return Err(BundleError::Invalid(format!(
                    "SASRec weight `{name}` has {} values, expected {want} ({shape:?})",
                    w.len()
                ))
                .into());
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                // A non-finite weight would score every item NaN: refuse the model.
                return Err(BundleError::Invalid(format!(
                    "SASRec weight `{name}` holds a non-finite value ({}) at {i}",
                    w[i]
                ))
                .into());
            }
            named.insert(name, w);
        }
        let mut take = |n: &str| named.remove(n).unwrap_or_default();
        let layers = (0..cfg.layers)
            .map(|l| {
                let mut g = |n: &str| take(&format!("l{l}.{n}"));
                CpuLayer {
                    ln1_g: g("ln1.g"),
                    ln1_b: g("ln1.b"),
                    wq: g("wq"),
                    wk: g("wk"),
                    wv: g("wv"),
                    wo: g("wo"),
                    ln2_g: g("ln2.g"),
                    ln2_b: g("ln2.b"),
                    w1: g("w1"),
                    b1: g("b1"),
                    w2: g("w2"),
                    b2: g("b2"),
                }
            })
            .collect();
        Ok(CpuSasRec {
            cfg,
            item: take("item"),
            pos: take("pos"),
            layers,
            lnf_g: take("lnf.g"),
            lnf_b: take("lnf.b"),
        })
    }

    /// Reads the weights from a safetensors file (F32 tensors named as in
    /// [`weight_shapes`], as `wander train items` writes them); every shape is checked.
    pub fn read_safetensors(path: &Path, cfg: SasRecConfig) -> Result<Self, BundleError> {
        let bytes = std::fs::read(path).map_err(|e| wander_core::CoreError::io(path, e))?;
        let bad = |m: String| BundleError::Invalid(format!("{}: {m}", path.display()));
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let shapes: std::collections::HashMap<String, Vec<usize>> =
            weight_shapes(&cfg).into_iter().collect();
        Self::from_named(cfg, |name| {
            let t = file
                .tensor(name)
                .map_err(|_| bad(format!("lacks `{name}`")))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("`{name}` is {:?}, not F32", t.dtype())));
            }
            if Some(t.shape()) != shapes.get(name).map(Vec::as_slice) {
                return Err(bad(format!(
                    "`{name}` has shape {:?}, expected {:?}",
                    t.shape(),
                    shapes[name]
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ln_row(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + LN_EPS as f32).sqrt();
        for i in 0..x.len() {
            out[i] = (x[i] - mean) * inv * g[i] + b[i];
        }
    }

    /// `out = x · W` for `W: [d_in, d_out]` row-major.
    fn vec_mat(x: &[f32], w: &[f32], d_out: usize, out: &mut [f32]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        for (i, &xi) in x.iter().enumerate() {
            let row = &w[i * d_out..(i + 1) * d_out];
            for (o, &wv) in out.iter_mut().zip(row) {
                *o += xi * wv;
            }
        }
    }

    /// The forward pass as first written, one position at a time: the reference the tiled
    /// version must match bit for bit.
    fn reference_user_vector(model: &CpuSasRec, history: &[u32]) -> Vec<f32> {
        let m = model;
        let d = m.cfg.dim;
        let h = m.cfg.heads;
        let hd = d / h;
        let hist: Vec<u32> = history
            .iter()
            .copied()
            .filter(|&i| (i as usize) < m.cfg.vocab && i != 0)
            .collect();
        let hist = &hist[hist.len().saturating_sub(m.cfg.max_len)..];
        let t = hist.len();
        if t == 0 {
            let mut out = vec![0.0; d];
            ln_row(&vec![0.0; d], &m.lnf_g, &m.lnf_b, &mut out);
            return out;
        }
        let offset = m.cfg.max_len - t;
        let scale = (d as f32).sqrt();
        let mut x: Vec<f32> = Vec::with_capacity(t * d);
        for (p, &it) in hist.iter().enumerate() {
            let e = &m.item[it as usize * d..(it as usize + 1) * d];
            let pe = &m.pos[(offset + p) * d..(offset + p + 1) * d];
            x.extend(e.iter().zip(pe).map(|(a, b)| a * scale + b));
        }
        let mut y = vec![0.0; d];
        let (mut k, mut v) = (vec![0.0; t * d], vec![0.0; t * d]);
        let mut q = vec![0.0; d];
        let mut tmp = vec![0.0; d];
        let mut tmp2 = vec![0.0; d];
        let mut att = vec![0.0; t];
        for (li, l) in m.layers.iter().enumerate() {
            let last_only = li + 1 == m.layers.len();
            for p in 0..t {
                ln_row(&x[p * d..(p + 1) * d], &l.ln1_g, &l.ln1_b, &mut y);
                vec_mat(&y, &l.wk, d, &mut k[p * d..(p + 1) * d]);
                vec_mat(&y, &l.wv, d, &mut v[p * d..(p + 1) * d]);
            }
            let queries: Vec<usize> = if last_only {
                vec![t - 1]
            } else {
                (0..t).collect()
            };
            let mut next = if last_only { vec![0.0; d] } else { x.clone() };
            for &p in &queries {
                ln_row(&x[p * d..(p + 1) * d], &l.ln1_g, &l.ln1_b, &mut y);
                vec_mat(&y, &l.wq, d, &mut q);
                for head in 0..h {
                    let r = head * hd..(head + 1) * hd;
                    let mut max = f32::NEG_INFINITY;
                    for j in 0..=p {
                        let s: f32 = q[r.clone()]
                            .iter()
                            .zip(&k[j * d + r.start..j * d + r.end])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            / (hd as f32).sqrt();
                        att[j] = s;
                        max = max.max(s);
                    }
                    let mut z = 0.0;
                    for a in att.iter_mut().take(p + 1) {
                        *a = (*a - max).exp();
                        z += *a;
                    }
                    for c in r.clone() {
                        tmp[c] = (0..=p).map(|j| att[j] * v[j * d + c]).sum::<f32>() / z;
                    }
                }
                vec_mat(&tmp, &l.wo, d, &mut tmp2);
                let row: Vec<f32> = x[p * d..(p + 1) * d]
                    .iter()
                    .zip(&tmp2)
                    .map(|(a, b)| a + b)
                    .collect();
                ln_row(&row, &l.ln2_g, &l.ln2_b, &mut y);
                vec_mat(&y, &l.w1, d, &mut tmp);
                for (a, b) in tmp.iter_mut().zip(&l.b1) {
                    *a = (*a + b).max(0.0);
                }
                vec_mat(&tmp, &l.w2, d, &mut tmp2);
                let out: Vec<f32> = row
                    .iter()
                    .zip(&tmp2)
                    .zip(&l.b2)
                    .map(|((a, b), c)| a + b + c)
                    .collect();
                if last_only {
                    next.copy_from_slice(&out);
                } else {
                    next[p * d..(p + 1) * d].copy_from_slice(&out);
                }
            }
            if last_only {
                let mut out = vec![0.0; d];
                ln_row(&next, &m.lnf_g, &m.lnf_b, &mut out);
                return out;
            }
            x = next;
        }
        let mut out = vec![0.0; d];
        ln_row(&x[(t - 1) * d..t * d], &m.lnf_g, &m.lnf_b, &mut out);
        out
    }

    fn random_model(cfg: SasRecConfig, seed: u64) -> CpuSasRec {
        let mut rng = wander_core::rng::Rng::new(seed);
        let shapes: std::collections::HashMap<String, usize> = weight_shapes(&cfg)
            .into_iter()
            .map(|(n, s)| (n, s.iter().product()))
            .collect();
        CpuSasRec::from_named(cfg, |name| -> Result<Vec<f32>, BundleError> {
            Ok((0..shapes[name])
                .map(|_| 0.3 * rng.normal() as f32)
                .collect())
        })
        .expect("shapes from weight_shapes")
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn every_compiled_version_gives_the_reference_bits() {
        // Widths on and off the tile (64 = 2 tiles, 40 = one tile and a tail, 12 = tail
        // only), one to three blocks, histories shorter and longer than `max_len`.
        for (seed, (dim, heads, layers)) in
            [(64, 2, 2), (40, 4, 1), (12, 3, 3)].into_iter().enumerate()
        {
            let cfg = SasRecConfig {
                vocab: 90,
                max_len: 20,
                dim,
                layers,
                heads,
                dropout: 0.0,
            };
            let model = random_model(cfg, seed as u64);
            let mut rng = wander_core::rng::Rng::new(100 + seed as u64);
            for len in [0usize, 1, 3, 4, 5, 9, 20, 31] {
                // Ids 0 and >= vocab are skipped by both.
                let history: Vec<u32> = (0..len).map(|_| rng.below(95) as u32).collect();
                let want = reference_user_vector(&model, &history);
                assert!(want.iter().all(|v| v.is_finite()));
                assert!(
                    same_bits(&model.user_vector_portable(&history), &want),
                    "{cfg:?} {history:?}"
                );
                assert!(
                    same_bits(&model.user_vector(&history), &want),
                    "{cfg:?} {history:?}"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: AVX2 is present.
                        let v = unsafe { model.user_vector_avx2(&history) };
                        assert!(same_bits(&v, &want), "avx2 {cfg:?} {history:?}");
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: AVX-512F is present.
                        let v = unsafe { model.user_vector_avx512(&history) };
                        assert!(same_bits(&v, &want), "avx512 {cfg:?} {history:?}");
                    }
                }
            }
        }
    }
}

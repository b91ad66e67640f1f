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

impl CpuSasRec {
    /// The user representation after the items of `history` (oldest first; ids in
    /// `1..vocab`, the last `max_len` used): the final hidden state at the last position.
    pub fn user_vector(&self, history: &[u32]) -> Vec<f32> {
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
        if t == 0 {
            let mut out = vec![0.0; d];
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
        let mut y = vec![0.0; d];
        let (mut k, mut v) = (vec![0.0; t * d], vec![0.0; t * d]);
        let mut q = vec![0.0; d];
        let mut tmp = vec![0.0; d];
        let mut tmp2 = vec![0.0; d];
        let mut att = vec![0.0; t];
        for (li, l) in self.layers.iter().enumerate() {
            let last_only = li + 1 == self.layers.len();
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
                ln_row(&next, &self.lnf_g, &self.lnf_b, &mut out);
                return out;
            }
            x = next;
        }
        let mut out = vec![0.0; d];
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

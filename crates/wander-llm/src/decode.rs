//! Attention over a cache for new tokens that each see only the cache and their own
//! ancestors (one token per row when decoding; a token tree when scoring), in one pass over
//! plain slices.
//!
//! Decoding a token runs each layer's attention on a single query per row: a dozen candle ops
//! (reshapes and copies of q, k and v, two rotary embeddings, two concatenations into the
//! cache, two small products, a scale, a softmax and a transpose), each allocating its output
//! and handing its work to the thread pool, for a few thousand multiply-adds. With 30 layers
//! that is most of what a token costs besides the weights' products. A token tree through
//! candle's ops is worse the other way: a dense mask makes every token score every other
//! token of the tree, and the exponentials of the masked ones are most of the softmax. Here
//! the step is one function: rotate q and the new keys, write the new keys and values after
//! the cached ones, and attend, query by query and head by head, to the cache and to the
//! token's ancestors only; queries split over candle's pool when there are enough of them.

use candle_core::{Device, Tensor};

use crate::Result;

/// The model's attention shape: query heads, key/value heads, head width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub query: usize,
    pub kv: usize,
    pub width: usize,
}

/// Where the new tokens sit: `parents[i]` is the new token that token `i` continues (`None`:
/// the cache's last position), and `cos` and `sin` hold each token's rows of the rotary
/// tables (`width / 2` values per token).
pub(crate) struct Layout<'a> {
    pub parents: &'a [Option<usize>],
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// Attention for `n` new tokens in each of `b` rows: `q: [b, n, query * width]` and the new
/// `k, v: [b, n, kv * width]` as the projections give them (before the rotary embedding),
/// after `cache` (`[b, kv, positions, width]` each, or none). Returns the attention output
/// `[b, n, query * width]` and the cache with the new keys and values appended in order.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: Option<&(Tensor, Tensor)>,
    layout: &Layout,
    heads: Heads,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let Heads { query, kv, width } = heads;
    let (b, n, _) = q.dims3()?;
    let half = width / 2;
    let mut q = q.flatten_all()?.to_vec1::<f32>()?;
    let mut k = k.flatten_all()?.to_vec1::<f32>()?;
    let v = v.flatten_all()?.to_vec1::<f32>()?;
    for (t, head) in q.chunks_exact_mut(width).enumerate() {
        let i = (t / query) % n;
        rotate(head, &layout.cos[i * half..], &layout.sin[i * half..]);
    }
    for (t, head) in k.chunks_exact_mut(width).enumerate() {
        let i = (t / kv) % n;
        rotate(head, &layout.cos[i * half..], &layout.sin[i * half..]);
    }
    let past = match cache {
        Some((pk, _)) => pk.dim(2)?,
        None => 0,
    };
    let len = past + n;
    let keys = append(cache.map(|c| &c.0), &k, b, n, kv, past, width)?;
    let values = append(cache.map(|c| &c.1), &v, b, n, kv, past, width)?;
    // Each token's own position and its ancestors' in the new part of the cache, nearest
    // first (the order does not matter: the softmax is over a set).
    let seen: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut own = Vec::new();
            let mut a = Some(i);
            while let Some(j) = a {
                own.push(past + j);
                a = layout.parents[j];
            }
            own
        })
        .collect();
    let rep = query / kv;
    let y = crate::fused::map_rows(b * n * query, width, |row, out| {
        let (r, i, h) = (row / (n * query), (row / query) % n, row % query);
        let base = (r * kv + h / rep) * len * width;
        let key = |j: usize| &keys[base + j * width..base + (j + 1) * width];
        let value = |j: usize| &values[base + j * width..base + (j + 1) * width];
        let qh = &q[row * width..(row + 1) * width];
        let positions = (0..past).chain(seen[i].iter().copied());
        let dot = |j: usize| qh.iter().zip(key(j)).map(|(a, b)| a * b).sum::<f32>() * scale;
        let weights: Vec<(usize, f32)> = positions.map(|j| (j, dot(j))).collect();
        let max = weights
            .iter()
            .map(|w| w.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<(usize, f32)> = weights
            .into_iter()
            .map(|(j, w)| (j, (w - max).exp()))
            .collect();
        let total: f32 = exps.iter().map(|e| e.1).sum();
        out.fill(0.0);
        for (j, e) in exps {
            let w = e / total;
            for (o, x) in out.iter_mut().zip(value(j)) {
                *o += w * x;
            }
        }
    });
    let device = Device::Cpu;
    Ok((
        Tensor::from_vec(y, (b, n, query * width), &device)?,
        Tensor::from_vec(keys, (b, kv, len, width), &device)?,
        Tensor::from_vec(values, (b, kv, len, width), &device)?,
    ))
}

/// Rotates interleaved pairs `(x[2i], x[2i + 1])` by the angle whose cosine and sine are
/// `cos[i]` and `sin[i]` (candle's `rope_i`).
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, c), s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// The cache `[b, kv, past, width]` with the new `[b, n, kv * width]` after each head's
/// cached positions: `[b, kv, past + n, width]`.
fn append(
    old: Option<&Tensor>,
    new: &[f32],
    b: usize,
    n: usize,
    kv: usize,
    past: usize,
    width: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(b * kv * (past + n) * width);
    let old = old.map(Tensor::contiguous).transpose()?;
    let guard = old.as_ref().map(Tensor::storage_and_layout);
    let old = match &guard {
        Some((storage, layout)) => {
            let candle_core::Storage::Cpu(storage) = &**storage else {
                return Err(crate::LlmError::Invalid(
                    "the key/value cache must be on the CPU".into(),
                ));
            };
            crate::fused::contiguous(storage, layout, "the key/value cache")?
        }
        None => &[],
    };
    for r in 0..b {
        for g in 0..kv {
            let h = r * kv + g;
            out.extend_from_slice(&old[h * past * width..(h + 1) * past * width]);
            for i in 0..n {
                let at = ((r * n + i) * kv + g) * width;
                out.extend_from_slice(&new[at..at + width]);
            }
        }
    }
    Ok(out)
}

//! One decoding step's attention (one new token per row) in one pass over plain slices.
//!
//! Decoding a token runs each layer's attention on a single query per row: a dozen candle ops
//! (reshapes and copies of q, k and v, two rotary embeddings, two concatenations into the
//! cache, two small products, a scale, a softmax and a transpose), each allocating its output
//! and handing its work to the thread pool, for a few thousand multiply-adds. With 30 layers
//! that is most of what a token costs besides the weights' products. Here the step is one
//! function: rotate q and the new key, write the new key and value after the cached ones,
//! and attend, head by head; rows and heads split over candle's pool only when there are
//! enough of them (many samples decoding side by side).

use candle_core::{Device, Tensor};

use crate::Result;

/// The model's attention shape: query heads, key/value heads, head width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub query: usize,
    pub kv: usize,
    pub width: usize,
}

/// One decoding step's attention for `b` rows: `q: [b, 1, query * width]` and the new
/// `k, v: [b, 1, kv * width]` as the projections give them (before the rotary embedding),
/// after `cache` (`[b, kv, positions, width]` each, or none). `(cos, sin)` are the rotary
/// tables' rows at this token's position. Returns the attention output `[b, 1, query *
/// width]` and the cache with the new key and value appended.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: Option<&(Tensor, Tensor)>,
    (cos, sin): (&[f32], &[f32]),
    heads: Heads,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let Heads { query, kv, width } = heads;
    let b = q.dim(0)?;
    let mut q = q.flatten_all()?.to_vec1::<f32>()?;
    let mut k = k.flatten_all()?.to_vec1::<f32>()?;
    let v = v.flatten_all()?.to_vec1::<f32>()?;
    for head in q.chunks_exact_mut(width).chain(k.chunks_exact_mut(width)) {
        rotate(head, cos, sin);
    }
    let past = match cache {
        Some((pk, _)) => pk.dim(2)?,
        None => 0,
    };
    let len = past + 1;
    let (keys, values) = append(cache, &k, &v, b * kv, past, width)?;
    let rep = query / kv;
    let y = crate::fused::map_rows(b * query, width, |row, out| {
        let (r, h) = (row / query, row % query);
        let g = h / rep;
        let base = (r * kv + g) * len * width;
        let ks = &keys[base..base + len * width];
        let vs = &values[base..base + len * width];
        let qh = &q[row * width..(row + 1) * width];
        let mut weights: Vec<f32> = ks
            .chunks_exact(width)
            .map(|kj| qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale)
            .collect();
        let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for w in &mut weights {
            *w = (*w - max).exp();
            total += *w;
        }
        out.fill(0.0);
        for (w, vj) in weights.iter().zip(vs.chunks_exact(width)) {
            let w = w / total;
            for (o, x) in out.iter_mut().zip(vj) {
                *o += w * x;
            }
        }
    });
    let device = Device::Cpu;
    Ok((
        Tensor::from_vec(y, (b, 1, query * width), &device)?,
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

/// The cached keys and values of each of `heads` (row, key/value head) pairs, `past`
/// positions each, with the new ones after them: `[heads, past + 1, width]` each.
fn append(
    cache: Option<&(Tensor, Tensor)>,
    k: &[f32],
    v: &[f32],
    heads: usize,
    past: usize,
    width: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let len = past + 1;
    let grow = |old: Option<&Tensor>, new: &[f32]| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(heads * len * width);
        match old {
            Some(old) => {
                let old = old.contiguous()?;
                let (storage, layout) = old.storage_and_layout();
                let candle_core::Storage::Cpu(storage) = &*storage else {
                    return Err(crate::LlmError::Invalid(
                        "a decoding step's cache must be on the CPU".into(),
                    ));
                };
                let old = crate::fused::contiguous(storage, layout, "the key/value cache")?;
                for (h, fresh) in new.chunks_exact(width).enumerate() {
                    out.extend_from_slice(&old[h * past * width..(h + 1) * past * width]);
                    out.extend_from_slice(fresh);
                }
            }
            None => out.extend_from_slice(new),
        }
        Ok(out)
    };
    Ok((grow(cache.map(|c| &c.0), k)?, grow(cache.map(|c| &c.1), v)?))
}

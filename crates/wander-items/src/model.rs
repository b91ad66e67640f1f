//! SASRec (Kang and McAuley, ICDM 2018): causal self-attention over a user's item sequence
//! with learned positions, trained in candle; and a plain-Rust inference path that computes
//! only what the last position needs, for evaluation and serving.
//!
//! Layout: pre-norm transformer blocks `x + Drop(MHA(LN(x)))`, `x + Drop(FFN(LN(x)))` with a
//! ReLU feed-forward of width `dim`, a final LayerNorm, and scores as dot products with the
//! (shared) item embeddings. Item id 0 is padding.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};

use wander_core::rng::Rng;

use crate::{ItemsError, Result};
use wander_bundle::sasrec::LN_EPS;
pub use wander_bundle::sasrec::{CpuSasRec, SasRecConfig};

/// The trainable model: named variables.
#[derive(Debug, Clone)]
pub struct SasRec {
    /// Its shape.
    pub cfg: SasRecConfig,
    vars: Vec<(String, Var)>,
    index: HashMap<String, usize>,
}

fn param_shapes(cfg: &SasRecConfig) -> Vec<(String, Vec<usize>, f64)> {
    let d = cfg.dim;
    let std = 0.02;
    let mut v = vec![
        ("item".to_string(), vec![cfg.vocab, d], std),
        ("pos".to_string(), vec![cfg.max_len, d], std),
    ];
    for l in 0..cfg.layers {
        for (n, shape, s) in [
            ("ln1.g", vec![d], -1.0),
            ("ln1.b", vec![d], 0.0),
            ("wq", vec![d, d], std),
            ("wk", vec![d, d], std),
            ("wv", vec![d, d], std),
            ("wo", vec![d, d], std),
            ("ln2.g", vec![d], -1.0),
            ("ln2.b", vec![d], 0.0),
            ("w1", vec![d, d], std),
            ("b1", vec![d], 0.0),
            ("w2", vec![d, d], std),
            ("b2", vec![d], 0.0),
        ] {
            v.push((format!("l{l}.{n}"), shape, s));
        }
    }
    v.push(("lnf.g".into(), vec![d], -1.0));
    v.push(("lnf.b".into(), vec![d], 0.0));
    v
}

impl SasRec {
    /// A freshly initialised model (normal(0, 0.02) weights, unit LayerNorm gains, zero
    /// biases, zero padding row), drawn from `seed` so training is reproducible.
    pub fn new(cfg: SasRecConfig, seed: u64) -> Result<Self> {
        if cfg.dim == 0
            || cfg.heads == 0
            || cfg.dim % cfg.heads != 0
            || cfg.vocab < 2
            || cfg.max_len == 0
        {
            return Err(ItemsError::Invalid(format!(
                "invalid SASRec shape: dim {} must be a positive multiple of heads {}, vocab {} >= 2, max_len {} >= 1",
                cfg.dim, cfg.heads, cfg.vocab, cfg.max_len
            )));
        }
        let mut rng = Rng::new(seed);
        let mut vars = Vec::new();
        for (name, shape, std) in param_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let mut data: Vec<f32> = if std < 0.0 {
                vec![1.0; n]
            } else if std == 0.0 {
                vec![0.0; n]
            } else {
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            };
            if name == "item" {
                data[..cfg.dim].iter_mut().for_each(|v| *v = 0.0);
            }
            vars.push((
                name,
                Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu)?)?,
            ));
        }
        let index = vars
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Ok(SasRec { cfg, vars, index })
    }

    /// The trainable variables by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn t(&self, name: &str) -> &Tensor {
        self.vars[self.index[name]].1.as_tensor()
    }

    /// Hidden states `[b, t, dim]` of left-padded sequences `[b, t]` (0 = padding). With
    /// `dropout`, `(seed, p)` draws the masks from our generator (reproducible).
    pub fn forward(&self, seqs: &Tensor, dropout: Option<(u64, f64)>) -> Result<Tensor> {
        let (b, t) = seqs.dims2()?;
        let d = self.cfg.dim;
        if t > self.cfg.max_len {
            return Err(ItemsError::Invalid(format!(
                "sequence of {t} longer than max_len {}",
                self.cfg.max_len
            )));
        }
        let ids: Vec<u32> = seqs.flatten_all()?.to_vec1()?;
        let keep: Vec<f32> = ids.iter().map(|&i| f32::from(u8::from(i != 0))).collect();
        let keep = Tensor::from_vec(keep, (b, t, 1), &Device::Cpu)?;
        let mut stream = 0u64;
        let mut drop = |x: Tensor| -> Result<Tensor> {
            match dropout {
                Some((seed, p)) if p > 0.0 => {
                    stream += 1;
                    let mut rng = Rng::new(seed).fork(stream);
                    let n = x.elem_count();
                    let scale = 1.0 / (1.0 - p);
                    let mask: Vec<f32> = (0..n)
                        .map(|_| {
                            if rng.next_f64() < p {
                                0.0
                            } else {
                                scale as f32
                            }
                        })
                        .collect();
                    let m = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?;
                    Ok((x * m)?)
                }
                _ => Ok(x),
            }
        };
        let emb = self
            .t("item")
            .index_select(&seqs.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let pos = self.t("pos").narrow(0, self.cfg.max_len - t, t)?;
        let mut x = (emb * (d as f64).sqrt())?.broadcast_add(&pos)?;
        x = drop(x)?.broadcast_mul(&keep)?;
        // Causal mask plus padded keys; a fully padded row still attends to itself.
        let mut mask = vec![0f32; b * t * t];
        for r in 0..b {
            for i in 0..t {
                for j in 0..t {
                    let blocked = j > i || (ids[r * t + j] == 0 && j != i);
                    if blocked {
                        mask[(r * t + i) * t + j] = -1e9;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, t, t), &Device::Cpu)?;
        let h = self.cfg.heads;
        let hd = d / h;
        for l in 0..self.cfg.layers {
            let p = |n: &str| self.t(&format!("l{l}.{n}")).clone();
            let y = layer_norm(&x, &p("ln1.g"), &p("ln1.b"))?.reshape((b * t, d))?;
            // One (b * t, d) x (d, d) product per projection: a single GEMM, far cheaper
            // in candle than a batched broadcast matmul.
            let proj = |w: &str| -> Result<Tensor> {
                Ok(y.matmul(&p(w))?
                    .reshape((b, t, h, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (proj("wq")?, proj("wk")?, proj("wv")?);
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let o = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b * t, d))?
                .matmul(&p("wo"))?
                .reshape((b, t, d))?;
            x = (x + drop(o)?)?;
            let y = layer_norm(&x, &p("ln2.g"), &p("ln2.b"))?.reshape((b * t, d))?;
            let f = y.matmul(&p("w1"))?.broadcast_add(&p("b1"))?.relu()?;
            let f = f
                .matmul(&p("w2"))?
                .broadcast_add(&p("b2"))?
                .reshape((b, t, d))?;
            x = (x + drop(f)?)?.broadcast_mul(&keep)?;
        }
        layer_norm(&x, self.t("lnf.g"), self.t("lnf.b"))
    }

    /// An independent copy (its variables share nothing with this model's).
    pub fn clone_detached(&self) -> Result<Self> {
        let vars = self
            .vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), Var::from_tensor(&v.as_tensor().copy()?)?)))
            .collect::<Result<_>>()?;
        Ok(SasRec {
            cfg: self.cfg,
            vars,
            index: self.index.clone(),
        })
    }

    /// Embedding rows of the listed items `[ids.len(), dim]`.
    pub fn item_rows(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self
            .t("item")
            .index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?)
    }

    /// Scores of every item `[n, vocab]` for hidden states `[n, dim]`.
    pub fn scores(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden.matmul(&self.t("item").t()?)?)
    }

    /// Scores of the listed items `[n, ids.len()]`.
    pub fn scores_of(&self, hidden: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let e = self
            .t("item")
            .index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?;
        Ok(hidden.matmul(&e.t()?)?)
    }

    /// Saves the weights and config (safetensors, config in the metadata-free sidecar JSON).
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let tmp = wander_core::artifact::temp_sibling(path);
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| ItemsError::Core(wander_core::CoreError::io(path, e)))?;
        let cfg =
            serde_json::to_vec_pretty(&self.cfg).map_err(|e| ItemsError::Invalid(e.to_string()))?;
        wander_core::artifact::atomic_write(&config_path(path), &cfg)?;
        Ok(())
    }

    /// Loads a model saved by [`SasRec::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let cp = config_path(path);
        let bytes =
            std::fs::read(&cp).map_err(|e| ItemsError::Core(wander_core::CoreError::io(&cp, e)))?;
        let cfg: SasRecConfig = serde_json::from_slice(&bytes)
            .map_err(|e| ItemsError::Invalid(format!("{}: {e}", cp.display())))?;
        let mut m = SasRec::new(cfg, 0)?;
        let t = candle_core::safetensors::load(path, &Device::Cpu)?;
        for (name, var) in &mut m.vars {
            let v = t.get(name).ok_or_else(|| {
                ItemsError::Invalid(format!("{}: lacks `{name}`", path.display()))
            })?;
            if v.dims() != var.dims() {
                return Err(ItemsError::Invalid(format!(
                    "{}: `{name}` has shape {:?}, expected {:?}",
                    path.display(),
                    v.dims(),
                    var.dims()
                )));
            }
            var.set(&v.to_dtype(DType::F32)?)?;
        }
        Ok(m)
    }

    /// The weights copied out for the plain-Rust inference path.
    pub fn to_cpu(&self) -> Result<CpuSasRec> {
        CpuSasRec::from_named(self.cfg, |n| -> Result<Vec<f32>> {
            Ok(self.t(n).flatten_all()?.to_vec1()?)
        })
    }
}

fn config_path(path: &Path) -> std::path::PathBuf {
    let mut n = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    n.push(".json");
    path.with_file_name(n)
}

/// LayerNorm from elementary ops (candle's fused kernel has no backward pass).
fn layer_norm(x: &Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(c.broadcast_div(&(var + LN_EPS)?.sqrt()?)?
        .broadcast_mul(g)?
        .broadcast_add(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_weights_read_without_candle_give_the_same_user_vectors() {
        let cfg = SasRecConfig {
            vocab: 12,
            max_len: 5,
            dim: 8,
            layers: 2,
            heads: 2,
            dropout: 0.1,
        };
        let model = SasRec::new(cfg, 3).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        model.save(&path).unwrap();
        let in_memory = model.to_cpu().unwrap();
        let from_file = CpuSasRec::read_safetensors(&path, cfg).unwrap();
        for history in [&[1u32, 4, 7][..], &[11], &[2, 3, 4, 5, 6, 7, 8]] {
            assert_eq!(
                in_memory.user_vector(history),
                from_file.user_vector(history)
            );
        }
    }
}

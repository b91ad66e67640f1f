//! GGUF model files: architecture metadata, Q4_1 to Q8_0 repacking, weight loading.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::{LlmError, Result};

/// Architecture hyper-parameters of a Llama-family model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Model width.
    pub hidden: usize,
    /// MLP width.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Longest supported sequence.
    pub max_seq: usize,
}

impl LlamaConfig {
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.n_head
    }

    /// Reads the `llama.*` metadata of a GGUF file.
    pub fn from_gguf(content: &gguf_file::Content, path: &Path) -> Result<Self> {
        let get = |k: &str| {
            content.metadata.get(k).ok_or_else(|| LlmError::Model {
                path: path.to_path_buf(),
                message: format!("GGUF metadata lacks `{k}`; is this a llama-architecture model?"),
            })
        };
        let u = |k: &str| -> Result<usize> { Ok(get(k)?.to_u32()? as usize) };
        let arch = get("general.architecture")?.to_string()?.clone();
        if arch != "llama" {
            return Err(LlmError::Model {
                path: path.to_path_buf(),
                message: format!("architecture `{arch}` is not supported (llama only)"),
            });
        }
        let vocab = match content.metadata.get("llama.vocab_size") {
            Some(v) => v.to_u32()? as usize,
            None => get("tokenizer.ggml.tokens")?.to_vec()?.len(),
        };
        Ok(LlamaConfig {
            n_layer: u("llama.block_count")?,
            n_head: u("llama.attention.head_count")?,
            n_kv_head: u("llama.attention.head_count_kv")?,
            hidden: u("llama.embedding_length")?,
            ffn: u("llama.feed_forward_length")?,
            vocab,
            rope_theta: content
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.0),
            rms_eps: get("llama.attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            max_seq: u("llama.context_length")?.min(4096),
        })
    }
}

/// An opened GGUF file: metadata and a reader for its tensors.
pub struct GgufFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Header, metadata and tensor index.
    pub content: gguf_file::Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| LlmError::Model {
            path: path.to_path_buf(),
            message: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// The architecture metadata.
    pub fn config(&self) -> Result<LlamaConfig> {
        LlamaConfig::from_gguf(&self.content, &self.path)
    }

    /// Reads one tensor in its stored (possibly quantized) form.
    pub fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| LlmError::Model {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })
    }

    /// Reads one tensor dequantized to f32.
    pub fn f32_tensor(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.qtensor(name)?.dequantize(&Device::Cpu)?)
    }

    /// Whether a tensor exists.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn array(&self, key: &str) -> Result<&Vec<gguf_file::Value>> {
        let v = self
            .content
            .metadata
            .get(key)
            .ok_or_else(|| LlmError::Model {
                path: self.path.clone(),
                message: format!("GGUF metadata lacks `{key}`"),
            })?;
        Ok(v.to_vec()?)
    }

    /// A string-array metadata value.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|x| Ok(x.to_string()?.clone()))
            .collect()
    }

    /// An integer-array metadata value.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key)?
            .iter()
            .map(|x| {
                Ok(x.to_i32()
                    .map(i64::from)
                    .or_else(|_| x.to_u32().map(i64::from))?)
            })
            .collect()
    }

    /// An integer metadata value, if present.
    pub fn int(&self, key: &str) -> Option<i64> {
        let v = self.content.metadata.get(key)?;
        v.to_u32()
            .map(i64::from)
            .or_else(|_| v.to_i32().map(i64::from))
            .ok()
    }
}

/// Rewrites every 2-D weight not already in Q8_0 (or F32) as Q8_0, keeping metadata,
/// writing atomically to `out`. candle has no SIMD kernel for Q4_1 and decodes it several
/// times slower than Q8_0; the repack loses nothing measurable against Q4_1's own error.
pub fn repack_q8_0(src: &Path, out: &Path) -> Result<()> {
    let mut g = GgufFile::open(src)?;
    let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let q = g.qtensor(name)?;
        let keep =
            matches!(q.dtype(), GgmlDType::Q8_0 | GgmlDType::F32) || q.shape().dims().len() < 2;
        let q = if keep {
            q
        } else {
            let t = q.dequantize(&Device::Cpu)?;
            QTensor::quantize(&t, GgmlDType::Q8_0)?
        };
        tensors.push(q);
    }
    let mut metadata: Vec<(&String, &gguf_file::Value)> = g.content.metadata.iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(b.0));
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let ts: Vec<(&str, &QTensor)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(tensors.iter())
        .collect();
    let tmp = wander_core::artifact::temp_sibling(out);
    {
        let file =
            File::create(&tmp).map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
        let mut w = std::io::BufWriter::new(file);
        gguf_file::write(&mut w, &md, &ts)?;
        let file = w
            .into_inner()
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e.into_error())))?;
        file.sync_all()
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| LlmError::Core(wander_core::CoreError::io(out, e)))?;
    Ok(())
}

/// The Q8_0 repack of `src`, made once next to it and reused while its checksum stamp
/// matches the source's.
pub fn q8_0_path(src: &Path) -> Result<PathBuf> {
    let out = src.with_extension("q8_0.gguf");
    let stamp = src.with_extension("q8_0.gguf.sha256");
    let src_sum = wander_core::hash::sha256_file(src)?;
    let ok = out.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| {
            let mut parts = s.split_whitespace();
            parts.next() == Some(src_sum.as_str())
                && parts
                    .next()
                    .is_some_and(|o| wander_core::hash::sha256_file(&out).is_ok_and(|h| h == o))
        });
    if !ok {
        repack_q8_0(src, &out)?;
        let out_sum = wander_core::hash::sha256_file(&out)?;
        wander_core::artifact::atomic_write(&stamp, format!("{src_sum} {out_sum}\n").as_bytes())?;
    }
    Ok(out)
}

/// Dtype census of a GGUF file, for reports.
pub fn dtype_counts(g: &GgufFile) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for info in g.content.tensor_infos.values() {
        *m.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    m
}

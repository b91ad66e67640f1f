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

    /// A string metadata value, if present.
    pub fn string(&self, key: &str) -> Option<String> {
        self.content.metadata.get(key)?.to_string().ok().cloned()
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
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

/// The byte-level alphabet of GPT-2-style BPE: each of the 256 bytes as the printable
/// character that byte-level pre-tokenisation maps it to.
fn byte_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut by_byte: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    by_byte.sort_unstable();
    by_byte
        .into_iter()
        .map(|(_, c)| char::from_u32(c).map(String::from).unwrap_or_default())
        .collect()
}

/// Writes a small random-weight Llama with SmolLM2's layout and a byte-level tokenizer
/// (every byte one token, no merges, plus ChatML's `<|im_start|>`, `<|im_end|>` and
/// `<|endoftext|>`), as F32 tensors: a real GGUF file that every stage reading a model can
/// load, for tests and examples that must not download the real weights. `cfg.vocab` is
/// ignored (259 tokens).
pub fn write_tiny_model(path: &Path, cfg: &LlamaConfig, seed: u64) -> Result<()> {
    use gguf_file::Value;
    let mut tokens = byte_alphabet();
    tokens.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < 256 { 1 } else { 3 }))
        .collect();
    let vocab = tokens.len();
    let (h, kv) = (cfg.hidden, cfg.n_kv_head * cfg.head_dim());
    let mut rng = wander_core::rng::Rng::new(seed);
    let mut tensor = |shape: &[usize], std: f64, offset: f64| -> Result<QTensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| (offset + std * rng.normal()) as f32)
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    };
    let mut named: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), tensor(&[vocab, h], 0.5, 0.0)?),
        ("output_norm.weight".into(), tensor(&[h], 0.1, 1.0)?),
    ];
    let projections = [
        ("attn_q", [h, h]),
        ("attn_k", [kv, h]),
        ("attn_v", [kv, h]),
        ("attn_output", [h, h]),
        ("ffn_gate", [cfg.ffn, h]),
        ("ffn_up", [cfg.ffn, h]),
        ("ffn_down", [h, cfg.ffn]),
    ];
    for i in 0..cfg.n_layer {
        named.push((format!("blk.{i}.attn_norm.weight"), tensor(&[h], 0.1, 1.0)?));
        named.push((format!("blk.{i}.ffn_norm.weight"), tensor(&[h], 0.1, 1.0)?));
        for (name, shape) in projections {
            let std = 1.0 / (shape[1] as f64).sqrt();
            named.push((format!("blk.{i}.{name}.weight"), tensor(&shape, std, 0.0)?));
        }
    }
    let u = |v: usize| Value::U32(v as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", u(cfg.n_layer)),
        ("llama.attention.head_count", u(cfg.n_head)),
        ("llama.attention.head_count_kv", u(cfg.n_kv_head)),
        ("llama.embedding_length", u(h)),
        ("llama.feed_forward_length", u(cfg.ffn)),
        ("llama.context_length", u(cfg.max_seq)),
        ("llama.vocab_size", u(vocab)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_eps as f32),
        ),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ("tokenizer.ggml.token_type", Value::Array(types)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = wander_core::artifact::temp_sibling(path);
    {
        let file =
            File::create(&tmp).map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
        let mut w = std::io::BufWriter::new(file);
        gguf_file::write(&mut w, &md, &ts)?;
        std::io::Write::flush(&mut w)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
    Ok(())
}

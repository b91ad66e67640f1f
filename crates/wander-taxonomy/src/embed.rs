//! Sentence embeddings with all-MiniLM-L6-v2 in candle: BERT forward, mean pooling over the
//! attention mask, L2 normalisation; cached by a hash of model and text.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use wander_core::store::KeyedVectors;

use crate::{Result, TaxonomyError};

/// A loaded sentence-embedding model.
pub struct TextEmbedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    /// Identity of the weights (SHA-256), part of every cache key.
    pub model_sha256: String,
    /// Embedding width.
    pub dim: usize,
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> TaxonomyError {
    TaxonomyError::Model {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl TextEmbedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let weights = dir.join("model.safetensors");
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(|e| model_err(&config_path, e))?,
        )
        .map_err(|e| model_err(&config_path, e))?;
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|e| model_err(&weights, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| model_err(&weights, e))?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| model_err(&tok_path, e))?;
        tokenizer.with_padding(None);
        Ok(TextEmbedder {
            model,
            tokenizer,
            model_sha256: wander_core::hash::sha256_file(&weights)?,
            dim: config.hidden_size,
        })
    }

    /// Embeds a batch of texts (unit vectors). Texts are truncated to the tokenizer's
    /// configured length (128 word pieces for all-MiniLM-L6-v2).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TaxonomyError::Invalid(format!("tokenizer: {e}")))?;
        let len = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(1);
        let b = texts.len();
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, e) in enc.iter().enumerate() {
            for (k, &id) in e.get_ids().iter().enumerate() {
                ids[r * len + k] = id;
                mask[r * len + k] = 1;
            }
        }
        let ids = Tensor::from_vec(ids, (b, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// Embeddings keyed by SHA-256 of (model, text), stored in one binary file (a
/// [`KeyedVectors`] store; the format is unchanged since format 02, so existing caches
/// still read).
pub struct EmbeddingCache {
    store: KeyedVectors<f32>,
}

/// Format 02: header, records, then the SHA-256 (hex) of everything before it. A file that
/// fails the checksum or holds a non-finite value is ignored and its texts embedded again.
const MAGIC: [u8; 8] = *b"WEMBED02";

impl EmbeddingCache {
    /// Opens the cache of `embedder`'s item texts in `dir` (one file per model, named by
    /// the model's checksum), shared by every stage that embeds items.
    pub fn for_model(dir: &Path, embedder: &TextEmbedder) -> Self {
        Self::open(&dir.join(format!("text-{}.bin", &embedder.model_sha256[..16])))
    }

    /// Opens the cache file (missing or unreadable files give an empty cache).
    pub fn open(path: &Path) -> Self {
        EmbeddingCache {
            store: KeyedVectors::open(path, MAGIC),
        }
    }

    /// Key of a text under a model.
    pub fn key(model_sha256: &str, text: &str) -> String {
        KeyedVectors::<f32>::key(&[model_sha256.as_bytes(), text.as_bytes()])
    }

    /// A cached embedding.
    pub fn get(&self, key: &str) -> Option<&Vec<f32>> {
        self.store.get(key)
    }

    /// Adds an embedding (a non-finite one, or one of another width, is refused).
    pub fn insert(&mut self, key: String, v: Vec<f32>) -> Result<()> {
        Ok(self.store.insert(key, v)?)
    }

    /// Embeddings cached.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Writes the cache atomically if it changed.
    pub fn save(&mut self) -> Result<()> {
        Ok(self.store.save()?)
    }
}

/// Embeds `texts`, reusing cached vectors; returns the vectors and how many were computed.
pub fn embed_all(
    embedder: &TextEmbedder,
    cache: &mut EmbeddingCache,
    texts: &[String],
    batch: usize,
    progress: Option<&wander_core::progress::Bar>,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let keys: Vec<String> = texts
        .iter()
        .map(|t| EmbeddingCache::key(&embedder.model_sha256, t))
        .collect();
    let mut todo: Vec<usize> = (0..texts.len())
        .filter(|&i| cache.get(&keys[i]).is_none())
        .collect();
    // Similar lengths in a batch waste less padding; the order is deterministic.
    todo.sort_by_key(|&i| (texts[i].len(), i));
    let computed = todo.len();
    for chunk in todo.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, v) in chunk.iter().zip(embedder.embed_batch(&refs)?) {
            cache.insert(keys[i].clone(), v)?;
        }
        if let Some(bar) = progress {
            bar.inc(chunk.len() as u64);
        }
    }
    cache.save()?;
    let out = keys
        .iter()
        .map(|k| cache.get(k).cloned().expect("embedded above"))
        .collect();
    Ok((out, computed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(entries: &[(&str, Vec<f32>)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embeddings.bin");
        let mut cache = EmbeddingCache::open(&path);
        for (text, v) in entries {
            cache
                .insert(EmbeddingCache::key("model", text), v.clone())
                .unwrap();
        }
        cache.save().unwrap();
        (dir, path)
    }

    #[test]
    fn a_saved_cache_reads_back() {
        let (_dir, path) = saved(&[("a", vec![0.5, -1.0]), ("b", vec![2.0, 3.0])]);
        let cache = EmbeddingCache::open(&path);
        assert_eq!(
            cache.get(&EmbeddingCache::key("model", "b")),
            Some(&vec![2.0, 3.0])
        );
    }

    #[test]
    fn a_flipped_byte_empties_the_cache_and_a_non_finite_value_is_refused() {
        let (_dir, path) = saved(&[("a", vec![0.5, -1.0])]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20 + 64] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(EmbeddingCache::open(&path).is_empty());

        let mut cache = EmbeddingCache::open(&path);
        assert!(cache
            .insert(EmbeddingCache::key("model", "a"), vec![f32::NAN, 1.0])
            .is_err());
    }
}

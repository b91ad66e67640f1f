//! The SmolLM2 tokenizer, rebuilt from GGUF metadata, and ChatML prompts.
//!
//! The GGUF holds the whole byte-level BPE vocabulary and merge list. We assemble the same
//! `tokenizer.json` that Hugging Face ships (digits split one by one, then GPT-2 byte-level
//! pre-tokenization; control tokens matched before either) and load it with the
//! `tokenizers` crate, so ids match SmolLM2's exactly.

use serde_json::{json, Value};

use crate::gguf::GgufFile;
use crate::{LlmError, Result};

/// A tokenizer plus the ids of its ChatML control tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `<|im_start|>`
    pub im_start: u32,
    /// `<|im_end|>`, also the end of an answer.
    pub im_end: u32,
    json: String,
}

/// GGUF token type of control tokens.
const CONTROL: i64 = 3;

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let merges = g.strings("tokenizer.ggml.merges")?;
        let types = g.ints("tokenizer.ggml.token_type").unwrap_or_default();
        Self::from_parts(&tokens, &merges, &types)
    }

    /// Builds a byte-level BPE tokenizer from a vocabulary, merges (`"a b"`) and GGUF token
    /// types (3 marks control tokens).
    pub fn from_parts(tokens: &[String], merges: &[String], types: &[i64]) -> Result<Self> {
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| types.get(*i).copied() == Some(CONTROL) || (t.starts_with("<|") && t.ends_with("|>")))
            .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        });
        let json = spec.to_string();
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| LlmError::Tokenizer(format!("{e}")))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| LlmError::Tokenizer(format!("vocabulary lacks `{t}`")))
        };
        Ok(Tokenizer {
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            inner,
            json,
        })
    }

    /// Token ids of `text`; control tokens written in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, control tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The equivalent Hugging Face `tokenizer.json`, for external tools.
    pub fn to_json(&self) -> &str {
        &self.json
    }

    /// ChatML prompt for a system and a user message, ending where the assistant's answer
    /// starts: `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`.
    pub fn chat_prompt(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        self.encode(&format!(
            "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ))
    }

    /// Tokens of an assistant answer, terminated by `<|im_end|>`.
    pub fn answer(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.push(self.im_end);
        Ok(ids)
    }
}

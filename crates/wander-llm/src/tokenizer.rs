//! The tokenizer, rebuilt from GGUF metadata or read from a `tokenizer.json`, and ChatML
//! prompts.
//!
//! A GGUF holds the whole byte-level BPE vocabulary and merge list, and names its
//! pre-tokenizer (`tokenizer.ggml.pre`, llama.cpp's names). For the pre-tokenizers in
//! [`SUPPORTED_PRE_TOKENIZERS`] we assemble the same `tokenizer.json` that Hugging Face ships
//! (for SmolLM2: digits split one by one, then GPT-2 byte-level pre-tokenization; control
//! tokens matched before either) and load it with the `tokenizers` crate, so ids match the
//! model's exactly. Any other pre-tokenizer is an error rather than a silently different
//! tokenization: such a model needs its own `tokenizer.json` ([`Tokenizer::from_file`]).

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

/// The `tokenizer.ggml.pre` values whose pre-tokenization wander reproduces exactly:
/// `smollm` (SmolLM/SmolLM2: single digits, then GPT-2's byte-level split) and `gpt-2`
/// (GPT-2's byte-level split alone).
pub const SUPPORTED_PRE_TOKENIZERS: [&str; 2] = ["smollm", "gpt-2"];

/// The Hugging Face `pre_tokenizer` of a supported `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Option<Value> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        "smollm" => Some(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level
        ]})),
        "gpt-2" => Some(byte_level),
        _ => None,
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata. A tokenizer
    /// model other than byte-level BPE (`gpt2`), or a pre-tokenizer outside
    /// [`SUPPORTED_PRE_TOKENIZERS`] (or none named), is an error that names the file and the
    /// value.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let unsupported = |message: String| LlmError::Model {
            path: g.path().to_path_buf(),
            message,
        };
        let model = g.string("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(unsupported(format!(
                "tokenizer.ggml.model is `{model}`: wander builds byte-level BPE (`gpt2`) tokenizers only; give the model's tokenizer.json as llm.tokenizer"
            )));
        }
        let pre = g.string("tokenizer.ggml.pre");
        let spec = pre.as_deref().and_then(pre_tokenizer).ok_or_else(|| {
            unsupported(format!(
                "tokenizer.ggml.pre is {}: wander reproduces the pre-tokenizers {} exactly and would tokenize this model differently from its own tokenizer; give the model's tokenizer.json as llm.tokenizer",
                pre.as_deref().map_or("absent".to_string(), |p| format!("`{p}`")),
                SUPPORTED_PRE_TOKENIZERS.map(|p| format!("`{p}`")).join(", ")
            ))
        })?;
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let merges = g.strings("tokenizer.ggml.merges")?;
        let types = g.ints("tokenizer.ggml.token_type").unwrap_or_default();
        Self::build(&tokens, &merges, &types, spec)
    }

    /// Reads a Hugging Face `tokenizer.json` (for a model whose GGUF names a pre-tokenizer
    /// wander does not rebuild). It must have ChatML's control tokens, which every prompt
    /// uses.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
        Self::from_json(json).map_err(|e| LlmError::Model {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Builds a byte-level BPE tokenizer with SmolLM2's pre-tokenizer from a vocabulary,
    /// merges (`"a b"`) and GGUF token types (3 marks control tokens).
    pub fn from_parts(tokens: &[String], merges: &[String], types: &[i64]) -> Result<Self> {
        Self::build(
            tokens,
            merges,
            types,
            pre_tokenizer("smollm").expect("supported"),
        )
    }

    fn build(tokens: &[String], merges: &[String], types: &[i64], pre: Value) -> Result<Self> {
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
            "pre_tokenizer": pre,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        });
        Self::from_json(spec.to_string())
    }

    fn from_json(json: String) -> Result<Self> {
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
        self.encode(&Self::chat_text(system, user))
    }

    /// The text of [`Tokenizer::chat_prompt`]: what a completions server is sent, so that
    /// it sees the tokens wander's runtime does.
    pub fn chat_text(system: &str, user: &str) -> String {
        format!(
            "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        )
    }

    /// Tokens of an assistant answer, terminated by `<|im_end|>`.
    pub fn answer(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.push(self.im_end);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value as G};

    /// A GGUF holding only tokenizer metadata; the merge `1 2` tells the two supported
    /// pre-tokenizers apart (SmolLM2's splits digits before merging).
    fn gguf(dir: &std::path::Path, model: &str, pre: Option<&str>) -> GgufFile {
        let tokens = [
            "<|im_start|>",
            "<|im_end|>",
            "a",
            "b",
            "ab",
            "1",
            "2",
            "12",
            "Ġ",
        ];
        let mut md = vec![
            ("tokenizer.ggml.model", G::String(model.into())),
            (
                "tokenizer.ggml.tokens",
                G::Array(tokens.iter().map(|t| G::String(t.to_string())).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                G::Array(vec![G::String("a b".into()), G::String("1 2".into())]),
            ),
        ];
        if let Some(pre) = pre {
            md.push(("tokenizer.ggml.pre", G::String(pre.into())));
        }
        let path = dir.join(format!("{model}-{}.gguf", pre.unwrap_or("none")));
        let refs: Vec<(&str, &G)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut f, &refs, &[]).unwrap();
        GgufFile::open(&path).unwrap()
    }

    #[test]
    fn each_supported_pre_tokenizer_splits_as_its_model_does() {
        let dir = tempfile::tempdir().unwrap();
        let smollm = Tokenizer::from_gguf(&gguf(dir.path(), "gpt2", Some("smollm"))).unwrap();
        assert_eq!(smollm.encode("ab 12").unwrap(), vec![4, 8, 5, 6]);
        let gpt2 = Tokenizer::from_gguf(&gguf(dir.path(), "gpt2", Some("gpt-2"))).unwrap();
        assert_eq!(gpt2.encode("ab 12").unwrap(), vec![4, 8, 7]);
        assert_eq!(gpt2.decode(&[4, 8, 7]).unwrap(), "ab 12");
    }

    #[test]
    fn an_unsupported_or_missing_pre_tokenizer_is_an_error_naming_file_and_value() {
        let dir = tempfile::tempdir().unwrap();
        for (model, pre, says) in [
            ("gpt2", Some("qwen2"), "`qwen2`"),
            ("gpt2", None, "absent"),
            ("llama", Some("default"), "`llama`"),
        ] {
            let g = gguf(dir.path(), model, pre);
            let err = Tokenizer::from_gguf(&g).err().expect("refused").to_string();
            assert!(
                err.contains(says) && err.contains("llm.tokenizer") && err.contains(".gguf"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_tokenizer_json_reads_back_to_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let built = Tokenizer::from_gguf(&gguf(dir.path(), "gpt2", Some("smollm"))).unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, built.to_json()).unwrap();
        let read = Tokenizer::from_file(&path).unwrap();
        assert_eq!(
            read.encode("ab 12 ba").unwrap(),
            built.encode("ab 12 ba").unwrap()
        );
        assert_eq!((read.im_start, read.im_end), (0, 1));
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"version\": 1").unwrap();
        let err = Tokenizer::from_file(&broken).err().unwrap().to_string();
        assert!(err.contains("broken.json"), "{err}");
    }
}

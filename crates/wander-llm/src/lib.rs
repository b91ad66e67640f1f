//! wander's language-model runtime: a Llama-architecture model (SmolLM2) on candle that can
//! be trained and served by the same code.
//!
//! - [`gguf`]: reads GGUF files, repacks Q4_1 weights to Q8_0 once for fast inference.
//! - [`tokenizer`]: the byte-level BPE tokenizer rebuilt from GGUF metadata, ChatML prompts.
//! - [`model`]: our own Llama forward pass. Training uses differentiable ops only: candle's
//!   fused RMSNorm, softmax and RoPE kernels have no backward pass (they would silently freeze
//!   the weights before them), so training runs [`fused`]'s, which have one; inference uses
//!   candle's fused kernels and Q8_0 matmuls. LoRA adapters ride on any projection.
//! - [`device`]: the CPU, or a GPU with the `cuda` feature ([`model::Llama::to_device`]).
//! - [`fused`]: one-pass RMSNorm, interleaved RoPE and causal softmax with backward passes.
//! - [`matmul`]: the products with frozen weights, one gemm call per thread and column band.
//! - [`q8`]: Q8_0 products for decoding on AVX-512 VNNI (candle's kernel elsewhere).
//! - [`generate`]: shared-prefix batched sampling, trie-constrained decoding and exact
//!   scoring of a fixed candidate list.
//! - [`readout`]: how a judging model's prompt becomes a label (a scalar head, or the
//!   rounded label written as text).
//! - [`train`]: supervised fine-tuning with AdamW, warmup and cosine decay, gradient
//!   accumulation and crash-safe checkpoints.
#![deny(missing_docs)]

pub mod bench;
pub mod bf16;
mod decode;
pub mod device;
pub mod error;
pub mod export;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod matmul;
pub mod model;
pub mod q8;
pub mod readout;
pub mod tokenizer;
pub mod train;

/// candle's trainable tensor, as returned for adapters and heads.
pub use candle_core::Var;
pub use error::{LlmError, Result};

//! Our Llama: one forward pass for training (differentiable ops only) and inference (fused
//! kernels, Q8_0 matmuls, KV cache shared across a batch of samples), with LoRA adapters.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, Var, D};

use crate::gguf::{GgufFile, LlamaConfig};
use crate::{LlmError, Result};

/// How the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable composite ops: gradients reach every trainable tensor.
    Train,
    /// Fused kernels without backward passes: fast, for inference only. A few rows (decoding)
    /// multiply with the Q8_0 weights, many with the f32 ones.
    Infer,
    /// [`Mode::Infer`] with the f32 weights at any row count: a prompt's result then does not
    /// depend on how many rows run beside it (a judge's scores, which a store keeps).
    InferF32,
    /// [`Mode::InferF32`] with both operands of every projection rounded to bf16 and
    /// multiplied on [`crate::bf16`]'s kernel (about 1.8x the f32 product's rate on many
    /// rows), where the CPU has AVX-512 BF16; elsewhere exactly [`Mode::InferF32`]. A row's
    /// result still does not depend on the rows beside it.
    InferBf16,
}

/// Which kernel multiplies a projection in inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Products {
    /// By row count: Q8_0 for a few rows, f32 for many ([`Weight::Hybrid`]).
    ByRows,
    /// f32 at any row count.
    F32,
    /// bf16 operands at any row count, where the CPU has the kernel (else f32).
    Bf16,
}

/// A projection's base weight, `[out, in]`.
#[derive(Debug, Clone)]
pub enum Weight {
    /// f32 (trainable or frozen).
    Dense(Tensor),
    /// Quantized (Q8_0) for fast inference.
    Quant(Quantized),
    /// Both forms: Q8_0 for a few rows (decode), f32 GEMM for many (prefill, batched
    /// scoring), where the quantized kernels run row by row and are 2-3x slower.
    Hybrid(Quantized, Tensor),
}

/// A Q8_0 weight: [`crate::q8`]'s kernel where the CPU has AVX-512 VNNI, candle's elsewhere
/// (and for other quantized types).
#[derive(Debug, Clone)]
pub enum Quantized {
    /// Repacked for [`crate::q8::Q8Matrix::matmul`].
    Packed(Arc<crate::q8::Q8Matrix>),
    /// candle's quantized matmul.
    Candle(Arc<QMatMul>),
}

impl Quantized {
    /// The fastest form this CPU has for `q`.
    pub fn new(q: QTensor) -> Result<Self> {
        Ok(match crate::q8::Q8Matrix::new(&q)? {
            Some(packed) => Quantized::Packed(Arc::new(packed)),
            None => Quantized::Candle(Arc::new(QMatMul::from_qtensor(q)?)),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Quantized::Candle(q) => Ok(q.forward(x)?),
            Quantized::Packed(w) => KernelMatmul { w: w.clone() }.apply(x),
        }
    }

    /// The same weight on candle's kernel.
    pub fn on_candle(&self) -> Result<Self> {
        Ok(match self {
            Quantized::Packed(w) => {
                Quantized::Candle(Arc::new(QMatMul::from_qtensor(w.to_qtensor()?)?))
            }
            Quantized::Candle(_) => self.clone(),
        })
    }

    /// Rows from which a [`Weight::Hybrid`] with this kernel takes the f32 GEMM instead.
    pub fn gemm_min_rows(&self) -> usize {
        match self {
            Quantized::Packed(_) => PACKED_GEMM_MIN_ROWS,
            Quantized::Candle(_) => GEMM_MIN_ROWS,
        }
    }

    fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Quantized::Packed(w) => {
                Tensor::from_vec(w.dequantize(), (w.rows(), w.cols()), &Device::Cpu)?
            }
            Quantized::Candle(q) => match q.as_ref() {
                QMatMul::QTensor(t) => t.dequantize(&Device::Cpu)?,
                QMatMul::Tensor(t) => t.clone(),
                QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
            },
        })
    }
}

/// `f` on `x: [..., in]` flattened to `[rows, in]`, its `[rows, out]` result shaped back to
/// `[..., out]`.
fn on_rows(x: &Tensor, out: usize, f: impl FnOnce(Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let last = *dims
        .last()
        .ok_or_else(|| LlmError::Invalid("a product needs a tensor with dimensions".into()))?;
    let y = f(x.reshape((x.elem_count() / last.max(1), last))?)?;
    *dims.last_mut().expect("non-empty dims") = out;
    Ok(y.reshape(dims)?)
}

/// A weight packed for one of wander's own CPU kernels, multiplying row-major activations.
trait RowKernel: Send + Sync + 'static {
    /// The op's name for candle.
    const NAME: &'static str;
    /// Output width (the weight's first dimension).
    fn out_width(&self) -> usize;
    /// Input width (the weight's second dimension).
    fn in_width(&self) -> usize;
    /// `x W^T` for `x: [rows, in_width]`.
    fn times(&self, x: &[f32], rows: usize) -> Vec<f32>;
}

/// [`RowKernel`] for a packed matrix type with `rows`, `cols` and `matmul(x, rows)`.
macro_rules! row_kernel {
    ($kernel:ty, $name:literal) => {
        impl RowKernel for $kernel {
            const NAME: &'static str = $name;
            fn out_width(&self) -> usize {
                self.rows()
            }
            fn in_width(&self) -> usize {
                self.cols()
            }
            fn times(&self, x: &[f32], rows: usize) -> Vec<f32> {
                self.matmul(x, rows)
            }
        }
    };
}

row_kernel!(crate::q8::Q8Matrix, "q8-vnni-matmul");
row_kernel!(crate::bf16::Bf16Matrix, "bf16-avx512-matmul");

/// `x W^T` on one of wander's own kernels (inference only: no backward pass).
struct KernelMatmul<K: RowKernel> {
    w: Arc<K>,
}

impl<K: RowKernel> KernelMatmul<K> {
    /// The product for `x: [..., in]`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        on_rows(x, self.w.out_width(), |x2| {
            Ok(x2.contiguous()?.apply_op1_no_bwd(self)?)
        })
    }
}

impl<K: RowKernel> candle_core::CustomOp1 for KernelMatmul<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, inp) = layout.shape().dims2()?;
        if inp != self.w.in_width() {
            return Err(candle_core::Error::Msg(format!(
                "{}: input width {inp}, weight [{}, {}]",
                K::NAME,
                self.w.out_width(),
                self.w.in_width()
            )));
        }
        let x = crate::fused::contiguous(storage, layout, "a packed product's input")?;
        Ok((
            candle_core::CpuStorage::F32(self.w.times(x, rows)),
            candle_core::Shape::from((rows, self.w.out_width())),
        ))
    }
}

/// Row count from which [`Weight::Hybrid`] switches from candle's Q8_0 kernel to the f32
/// GEMM (measured: at 16 rows f32 is already faster, at 1 row Q8_0 is about 2x faster).
pub const GEMM_MIN_ROWS: usize = 8;

/// The same switch for [`crate::q8`]'s kernel: it reads a quarter of the f32 weight's bytes
/// and stays ahead of the banded f32 product up to about 32 rows (188 against 112 GFLOP/s at
/// 16 rows, 184 against 162 at 32, 188 against 247 at 67; `cargo run --release -p wander-llm
/// --example matmul_shapes` on the 2-core AMD EPYC).
pub const PACKED_GEMM_MIN_ROWS: usize = 48;

impl Weight {
    /// `x W^T`; `dense` takes a hybrid weight's f32 form at any row count.
    fn forward(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        match self {
            Weight::Hybrid(q, w) => {
                let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?;
                if dense || rows >= q.gemm_min_rows() {
                    Weight::Dense(w.clone()).forward(x, true)
                } else {
                    q.forward(x)
                }
            }
            Weight::Dense(w) => {
                on_rows(x, w.dim(0)?, |x2| {
                    // The banded kernels are the CPU's; a GPU multiplies with candle's matmul.
                    Ok(if !w.is_variable() && w.device().is_cpu() {
                        x2.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?
                    } else {
                        x2.matmul(&w.t()?)?
                    })
                })
            }
            Weight::Quant(q) => q.forward(x),
        }
    }

    /// The weight as f32.
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(w) | Weight::Hybrid(_, w) => w.clone(),
            Weight::Quant(q) => q.to_f32()?,
        })
    }
}

/// `x W^T` for a frozen `W` whose backward pass computes only the input's gradient.
///
/// candle's matmul backward computes the gradients of both operands unconditionally, so a
/// frozen base weight (LoRA training) would cost an extra `[in, rows] x [rows, out]` product
/// per projection and per step, the full vocabulary projection included. Both directions run
/// on [`crate::matmul`]'s banded products, in inference too.
struct FrozenMatmul {
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, inp) = layout.shape().dims2()?;
        let x = crate::fused::contiguous(storage, layout, "the frozen matmul's input")?;
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let out = w_layout.shape().dims2()?.0;
        let w = weight_f32(&w_storage, w_layout, out)?;
        if w.len() != out * inp {
            return Err(candle_core::Error::Msg(format!(
                "frozen matmul: input width {inp}, weight [{out}, {}]",
                w.len() / out.max(1)
            )));
        }
        Ok((
            candle_core::CpuStorage::F32(crate::matmul::x_times_w_transposed(x, w, rows, inp, out)),
            candle_core::Shape::from((rows, out)),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(
            &FrozenMatmulBackward { w: self.w.clone() },
        )?))
    }
}

/// `g W`, the input gradient of [`FrozenMatmul`].
struct FrozenMatmulBackward {
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmulBackward {
    fn name(&self) -> &'static str {
        "frozen-matmul-backward"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, out) = layout.shape().dims2()?;
        let g = crate::fused::contiguous(storage, layout, "the frozen matmul's gradient")?;
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let w = weight_f32(&w_storage, w_layout, out)?;
        let inp = w.len() / out;
        Ok((
            candle_core::CpuStorage::F32(crate::matmul::g_times_w(g, w, rows, out, inp)),
            candle_core::Shape::from((rows, inp)),
        ))
    }
}

/// A frozen weight's f32 elements, checked to have `out` rows.
fn weight_f32<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    out: usize,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::Storage::Cpu(storage) = storage else {
        return Err(candle_core::Error::Msg(
            "frozen matmul runs on the CPU".into(),
        ));
    };
    let (rows, _) = layout.shape().dims2()?;
    if rows != out {
        return Err(candle_core::Error::Msg(format!(
            "frozen matmul: an operand of width {out} against a weight of {rows} rows"
        )));
    }
    crate::fused::contiguous(storage, layout, "a frozen weight")
}

/// A LoRA adapter: `y += scale * (x A^T) B^T` with `A: [r, in]`, `B: [out, r]`.
#[derive(Debug, Clone)]
pub struct Lora {
    /// Down projection.
    pub a: Var,
    /// Up projection (zero at initialisation, so training starts from the base model).
    pub b: Var,
    /// alpha / rank.
    pub scale: f64,
    /// Dropout probability on the adapter's input during training.
    pub dropout: f64,
}

/// The dropout seed of one projection in one forward pass, when training.
fn dropout_stream(mode: Mode, seed: u64, stream: u64) -> Option<u64> {
    (mode == Mode::Train).then(|| wander_core::rng::Rng::new(seed).fork(stream).next_u64())
}

/// A linear projection with an optional adapter.
#[derive(Debug, Clone)]
pub struct Proj {
    /// Base weight.
    pub weight: Weight,
    /// Optional LoRA adapter.
    pub lora: Option<Lora>,
    /// The base weight rounded to bf16 for [`Mode::InferBf16`], packed on first use (`None`
    /// inside where the CPU lacks the kernel or the weight is not on the CPU). The methods
    /// that replace `weight` reset it.
    bf16: std::sync::OnceLock<Option<Arc<crate::bf16::Bf16Matrix>>>,
}

impl Proj {
    /// A projection with base weight `weight` and no adapter.
    pub fn new(weight: Weight) -> Self {
        Proj {
            weight,
            lora: None,
            bf16: Default::default(),
        }
    }

    /// The base weight on [`crate::bf16`]'s kernel, packed on first use.
    fn bf16_weight(&self) -> Result<Option<Arc<crate::bf16::Bf16Matrix>>> {
        if let Some(packed) = self.bf16.get() {
            return Ok(packed.clone());
        }
        let w = self.weight.to_f32()?;
        let packed = if w.device().is_cpu() && crate::bf16::supported() {
            let (rows, cols) = w.dims2()?;
            let values = w.flatten_all()?.to_vec1::<f32>()?;
            crate::bf16::Bf16Matrix::new(&values, rows, cols).map(Arc::new)
        } else {
            None
        };
        // Two threads packing at once pack the same values; either result is kept.
        Ok(self.bf16.get_or_init(|| packed).clone())
    }

    /// Base projection plus adapter; `dropout_seed` (training only) draws the adapter's
    /// input dropout mask from wander's seeded RNG, so a resumed run draws the same masks.
    fn forward_t(
        &self,
        x: &Tensor,
        dropout_seed: Option<u64>,
        products: Products,
    ) -> Result<Tensor> {
        let y = match products {
            Products::ByRows => self.weight.forward(x, false)?,
            Products::F32 => self.weight.forward(x, true)?,
            Products::Bf16 => match self.bf16_weight()? {
                Some(w) => KernelMatmul { w }.apply(x)?,
                None => self.weight.forward(x, true)?,
            },
        };
        match &self.lora {
            None => Ok(y),
            Some(l) => {
                let dims = x.dims().to_vec();
                let last = dims[dims.len() - 1];
                let rows = x.elem_count() / last;
                let xin = x.reshape((rows, last))?;
                let xin = match dropout_seed {
                    Some(seed) if l.dropout > 0.0 => {
                        let mut rng = wander_core::rng::Rng::new(seed);
                        let keep = 1.0 - l.dropout;
                        let mask: Vec<f32> = (0..rows * last)
                            .map(|_| {
                                if rng.next_f64() < keep {
                                    (1.0 / keep) as f32
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        (xin * Tensor::from_vec(mask, (rows, last), x.device())?)?
                    }
                    _ => xin,
                };
                let h = xin.matmul(&l.a.as_tensor().t()?)?;
                let d = (h.matmul(&l.b.as_tensor().t()?)? * l.scale)?;
                let d = d.reshape(y.shape())?;
                Ok((y + d)?)
            }
        }
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    attn_norm: Tensor,
    /// q, k, v, o, gate, up, down projections, in that order.
    pub projs: [Proj; 7],
    ffn_norm: Tensor,
}

/// Names of the seven projections of a block, as used in `llm.lora.targets`.
pub const PROJ_NAMES: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];
/// The GGUF tensor names of [`PROJ_NAMES`] (`blk.{i}.{name}.weight`).
pub const GGUF_NAMES: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// Per-layer key/value cache, `[batch, kv_heads, positions, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Number of cached positions.
    pub len: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        KvCache {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Rows of the cache (1 while it is empty).
    pub fn batch(&self) -> usize {
        match self.layers.iter().flatten().next() {
            Some((k, _)) => k.dims().first().copied().unwrap_or(1),
            None => 1,
        }
    }

    /// Repeats a batch-1 cache `n` times (one prefill shared by `n` samples).
    pub fn broadcast(&self, n: usize) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some((k, v)) => {
                    let rep = |t: &Tensor| -> Result<Tensor> {
                        let (_, h, s, d) = t.dims4()?;
                        Ok(t.broadcast_as((n, h, s, d))?.contiguous()?)
                    };
                    Ok(Some((rep(k)?, rep(v)?)))
                }
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            len: self.len,
        })
    }

    /// Keeps only the batch rows in `rows` (drops finished samples).
    pub fn select(&self, rows: &[u32]) -> Result<KvCache> {
        let device = match self.layers.iter().flatten().next() {
            Some((k, _)) => k.device().clone(),
            None => Device::Cpu,
        };
        let idx = Tensor::new(rows, &device)?;
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some((k, v)) => Ok(Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            len: self.len,
        })
    }
}

/// Where the tokens of a [`Llama::forward_hidden_tree`] sit: their rotary positions and the
/// attention mask `[n, cache + n]` (0 where a token may look, minus infinity elsewhere: every row may look at itself, so no row is all minus infinity).
struct TreeLayout {
    positions: Tensor,
    /// Built for a GPU only.
    mask: Option<Tensor>,
    /// Each token's parent, as given (the CPU attends through these, not the mask).
    parents: Vec<Option<usize>>,
}

/// A Llama-architecture causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    /// Architecture.
    pub cfg: LlamaConfig,
    embed: Tensor,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    norm: Tensor,
    head: Weight,
    head_f32: Tensor,
    dropout_seed: Arc<std::sync::atomic::AtomicU64>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// The mode of the passes whose results must not depend on their batch.
    exact_mode: Mode,
}

fn rope_tables(cfg: &LlamaConfig) -> Result<(Tensor, Tensor)> {
    let d = cfg.head_dim();
    let theta: Vec<f32> = (0..d)
        .step_by(2)
        .map(|i| 1.0 / cfg.rope_theta.powf(i as f32 / d as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, cfg.max_seq as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_seq, 1))?;
    let angles = pos.matmul(&theta.reshape((1, d / 2))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    // `Infer` on the CPU takes candle's kernel without a backward pass; a GPU gets its
    // composite ops through `fused`, which pick them for any non-CPU tensor.
    match mode {
        Mode::Infer | Mode::InferF32 | Mode::InferBf16 => {
            Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
        }
        Mode::Train => Ok(crate::fused::rms_norm(x, w, eps)?),
    }
}

impl Llama {
    /// Loads a GGUF model. `quantized`: keep projections quantized (converted to Q8_0 if
    /// needed) for inference; otherwise dequantize everything to f32 for training.
    pub fn from_gguf(g: &mut GgufFile, quantized: bool) -> Result<Self> {
        let cfg = g.config()?;
        let embed_q = g.qtensor("token_embd.weight")?;
        let embed = embed_q.dequantize(&Device::Cpu)?;
        let load = |g: &mut GgufFile, name: &str| -> Result<Weight> {
            let q = g.qtensor(name)?;
            if quantized {
                let dense = q.dequantize(&Device::Cpu)?;
                let q = if matches!(q.dtype(), GgmlDType::Q8_0 | GgmlDType::F32) {
                    q
                } else {
                    QTensor::quantize(&dense, GgmlDType::Q8_0)?
                };
                Ok(Weight::Hybrid(Quantized::new(q)?, dense))
            } else {
                Ok(Weight::Dense(q.dequantize(&Device::Cpu)?))
            }
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let mut projs = Vec::with_capacity(7);
            for n in GGUF_NAMES {
                projs.push(Proj::new(load(g, &format!("blk.{i}.{n}.weight"))?));
            }
            blocks.push(Block {
                attn_norm: g.f32_tensor(&format!("blk.{i}.attn_norm.weight"))?,
                projs: projs
                    .try_into()
                    .map_err(|_| LlmError::Invalid("seven projections".into()))?,
                ffn_norm: g.f32_tensor(&format!("blk.{i}.ffn_norm.weight"))?,
            });
        }
        let head = if g.has("output.weight") {
            load(g, "output.weight")?
        } else if quantized {
            let q = if embed_q.dtype() == GgmlDType::Q8_0 {
                embed_q
            } else {
                QTensor::quantize(&embed, GgmlDType::Q8_0)?
            };
            Weight::Quant(Quantized::new(q)?)
        } else {
            Weight::Dense(embed.clone())
        };
        let (cos, sin) = rope_tables(&cfg)?;
        let head_f32 = if g.has("output.weight") {
            head.to_f32()?
        } else {
            embed.clone()
        };
        Ok(Llama {
            norm: g.f32_tensor("output_norm.weight")?,
            embed,
            blocks,
            head,
            head_f32,
            dropout_seed: Default::default(),
            cos,
            sin,
            cfg,
            device: Device::Cpu,
            exact_mode: Mode::InferF32,
        })
    }

    /// A randomly initialised model (tests, benches). With `trainable`, every weight is a
    /// [`Var`] and is returned by name, so gradients can be checked for all of them.
    pub fn random(cfg: LlamaConfig, seed: u64) -> Result<(Self, Vec<(String, Var)>)> {
        let mut rng = wander_core::rng::Rng::new(seed);
        let mut vars = Vec::new();
        let mut var =
            |name: String, shape: (usize, usize), std: f64, offset: f64| -> Result<Tensor> {
                let n = shape.0 * shape.1;
                let data: Vec<f32> = (0..n)
                    .map(|_| (offset + std * rng.normal()) as f32)
                    .collect();
                let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
                let v = Var::from_tensor(&t)?;
                let out = v.as_tensor().clone();
                vars.push((name, v));
                Ok(out)
            };
        let h = cfg.hidden;
        let kv = cfg.n_kv_head * cfg.head_dim();
        let shapes = [
            (h, h),
            (kv, h),
            (kv, h),
            (h, h),
            (cfg.ffn, h),
            (cfg.ffn, h),
            (h, cfg.ffn),
        ];
        let embed = var("embed".into(), (cfg.vocab, h), 0.5, 0.0)?;
        let mut blocks = Vec::new();
        for i in 0..cfg.n_layer {
            let attn_norm = var(format!("blk.{i}.attn_norm"), (1, h), 0.1, 1.0)?.reshape(h)?;
            let mut projs = Vec::new();
            for (n, s) in PROJ_NAMES.iter().zip(shapes) {
                projs.push(Proj::new(Weight::Dense(var(
                    format!("blk.{i}.{n}"),
                    s,
                    1.0 / (s.1 as f64).sqrt(),
                    0.0,
                )?)));
            }
            let ffn_norm = var(format!("blk.{i}.ffn_norm"), (1, h), 0.1, 1.0)?.reshape(h)?;
            blocks.push(Block {
                attn_norm,
                projs: projs
                    .try_into()
                    .map_err(|_| LlmError::Invalid("projs".into()))?,
                ffn_norm,
            });
        }
        let norm = var("norm".into(), (1, h), 0.1, 1.0)?.reshape(h)?;
        let (cos, sin) = rope_tables(&cfg)?;
        Ok((
            Llama {
                head: Weight::Dense(embed.clone()),
                head_f32: embed.clone(),
                dropout_seed: Default::default(),
                embed,
                blocks,
                norm,
                cos,
                sin,
                cfg,
                device: Device::Cpu,
                exact_mode: Mode::InferF32,
            },
            vars,
        ))
    }

    /// The device the model's tensors live on (the CPU unless [`Llama::to_device`] moved
    /// them).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The mode of the passes whose results must not depend on which rows run beside them
    /// (`crate::generate`'s prefix caches and suffix scores: a judge's scores, exact
    /// distributions): [`Mode::InferF32`] unless [`Llama::set_exact_mode`] chose
    /// [`Mode::InferBf16`].
    pub fn exact_mode(&self) -> Mode {
        self.exact_mode
    }

    /// Sets [`Llama::exact_mode`]: [`Mode::InferF32`] or [`Mode::InferBf16`] (on a CPU
    /// without AVX-512 BF16 the latter runs as the former).
    pub fn set_exact_mode(&mut self, mode: Mode) -> Result<()> {
        if !matches!(mode, Mode::InferF32 | Mode::InferBf16) {
            return Err(LlmError::Invalid(format!(
                "exact passes run in InferF32 or InferBf16, not {mode:?}"
            )));
        }
        self.exact_mode = mode;
        Ok(())
    }

    /// Names the kernel of [`Llama::exact_mode`]'s products on this CPU and its numerics'
    /// version (a store of outputs keys on it).
    pub fn exact_kernel_id(&self) -> &'static str {
        match (self.exact_mode, crate::bf16::kernel_id()) {
            (Mode::InferBf16, Some(id)) if self.device.is_cpu() => id,
            _ => "f32",
        }
    }

    /// The model on `device` (`crate::device` names one). On a GPU every projection is f32:
    /// the Q8_0 copies and the banded CPU products stay behind, and candle's CUDA kernels
    /// (its matmul, RMSNorm, RoPE and softmax, the composite ops in training) do the work.
    /// Adapters move with their values, as new trainable tensors: move a model before
    /// handing its adapters to an optimiser. Merging adapters ([`Llama::merge_lora`]) and
    /// saving them run on the CPU: merge before moving.
    pub fn to_device(self, device: &Device) -> Result<Self> {
        if device.same_device(&self.device) {
            return Ok(self);
        }
        let to = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(device)?) };
        let to_var = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&to(v.as_tensor())?)?) };
        let dense = |w: &Weight| -> Result<Weight> { Ok(Weight::Dense(to(&w.to_f32()?)?)) };
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                let projs = b
                    .projs
                    .iter()
                    .map(|p| {
                        Ok(Proj {
                            lora: match &p.lora {
                                None => None,
                                Some(l) => Some(Lora {
                                    a: to_var(&l.a)?,
                                    b: to_var(&l.b)?,
                                    scale: l.scale,
                                    dropout: l.dropout,
                                }),
                            },
                            ..Proj::new(dense(&p.weight)?)
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Block {
                    attn_norm: to(&b.attn_norm)?,
                    projs: projs
                        .try_into()
                        .map_err(|_| LlmError::Invalid("seven projections".into()))?,
                    ffn_norm: to(&b.ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            embed: to(&self.embed)?,
            blocks,
            norm: to(&self.norm)?,
            head: dense(&self.head)?,
            head_f32: to(&self.head_f32)?,
            dropout_seed: self.dropout_seed.clone(),
            cos: to(&self.cos)?,
            sin: to(&self.sin)?,
            cfg: self.cfg,
            device: device.clone(),
            exact_mode: self.exact_mode,
        })
    }

    /// Adds LoRA adapters of rank `rank` to the named projections of every block; returns
    /// the new trainable tensors by name. `A` is Gaussian with std 1/sqrt(in), `B` is zero.
    pub fn attach_lora(
        &mut self,
        targets: &[String],
        rank: usize,
        alpha: f64,
        dropout: f64,
        seed: u64,
    ) -> Result<Vec<(String, Var)>> {
        let mut rng = wander_core::rng::Rng::new(seed);
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            for (p, name) in block.projs.iter_mut().zip(PROJ_NAMES) {
                if !targets.iter().any(|t| t == name) {
                    continue;
                }
                let (o, inp) = p.weight.to_f32()?.dims2()?;
                let std = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..rank * inp)
                    .map(|_| (std * rng.normal()) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (rank, inp), &self.device)?)?;
                let b = Var::zeros((o, rank), DType::F32, &self.device)?;
                out.push((format!("blk.{i}.{name}.lora_a"), a.clone()));
                out.push((format!("blk.{i}.{name}.lora_b"), b.clone()));
                p.lora = Some(Lora {
                    a,
                    b,
                    scale: alpha / rank as f64,
                    dropout,
                });
            }
        }
        Ok(out)
    }

    /// The adapters' tensors by name (`blk.{i}.{proj}.lora_a|lora_b`).
    pub fn lora_tensors(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            for (p, name) in block.projs.iter().zip(PROJ_NAMES) {
                if let Some(l) = &p.lora {
                    out.push((format!("blk.{i}.{name}.lora_a"), l.a.clone()));
                    out.push((format!("blk.{i}.{name}.lora_b"), l.b.clone()));
                }
            }
        }
        out
    }

    /// Saves the adapters as safetensors, with a manifest beside it (`<path>.json`: format
    /// version, rank, alpha, targets, tensor count and the file's SHA-256).
    pub fn save_lora(&self, path: &Path) -> Result<()> {
        let tensors = self.lora_tensors();
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let tmp = wander_core::artifact::temp_sibling(path);
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
        let first = self
            .blocks
            .iter()
            .flat_map(|b| b.projs.iter())
            .find_map(|p| p.lora.as_ref());
        let targets: Vec<&str> = PROJ_NAMES
            .iter()
            .zip(self.blocks.first().map(|b| &b.projs[..]).unwrap_or(&[]))
            .filter(|(_, p)| p.lora.is_some())
            .map(|(n, _)| *n)
            .collect();
        let manifest = serde_json::json!({
            "format_version": wander_core::artifact::FORMAT_VERSION,
            "wander_version": wander_core::WANDER_VERSION,
            "rank": first.map(|l| l.a.dim(0).unwrap_or(0)),
            "scale": first.map(|l| l.scale),
            "targets": targets,
            "tensors": tensors.len(),
            "sha256": wander_core::hash::sha256_file(path)?,
        });
        wander_core::artifact::atomic_write(
            &lora_manifest_path(path),
            manifest.to_string().as_bytes(),
        )?;
        Ok(())
    }

    /// Loads adapter values saved by [`Llama::save_lora`] into adapters already attached
    /// with the same shape.
    pub fn load_lora(&mut self, path: &Path) -> Result<()> {
        if let Ok(bytes) = std::fs::read(lora_manifest_path(path)) {
            let m: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| LlmError::Model {
                    path: path.to_path_buf(),
                    message: format!("unreadable adapter manifest: {e}"),
                })?;
            let actual = wander_core::hash::sha256_file(path)?;
            if m["sha256"].as_str() != Some(actual.as_str()) {
                return Err(LlmError::Core(wander_core::CoreError::Corrupt {
                    path: path.to_path_buf(),
                    expected: m["sha256"].as_str().unwrap_or("").to_string(),
                    actual,
                }));
            }
        }
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let tensors = self.lora_tensors();
        if tensors.len() != map.len() {
            return Err(LlmError::Model {
                path: path.to_path_buf(),
                message: format!(
                    "holds {} adapter tensors, the model has {}",
                    map.len(),
                    tensors.len()
                ),
            });
        }
        for (name, var) in tensors {
            let t = map.get(&name).ok_or_else(|| LlmError::Model {
                path: path.to_path_buf(),
                message: format!("lacks `{name}`"),
            })?;
            let t = t.to_device(var.device())?;
            var.set(&t).map_err(|e| LlmError::Model {
                path: path.to_path_buf(),
                message: format!("`{name}`: {e}"),
            })?;
        }
        Ok(())
    }

    /// Sets the seed of the adapters' dropout masks for the next training forward passes.
    pub fn set_dropout_seed(&self, seed: u64) {
        self.dropout_seed
            .store(seed, std::sync::atomic::Ordering::Relaxed);
    }

    fn dropout_seed(&self) -> u64 {
        self.dropout_seed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Detaches every base tensor from the autograd graph (a model from [`Llama::random`]
    /// becomes frozen like one loaded from GGUF); adapters stay trainable.
    pub fn freeze_base(&mut self) {
        let freeze = |w: &mut Weight| {
            if let Weight::Dense(t) = w {
                *t = t.detach();
            }
        };
        self.embed = self.embed.detach();
        self.norm = self.norm.detach();
        self.head_f32 = self.head_f32.detach();
        freeze(&mut self.head);
        for b in &mut self.blocks {
            b.attn_norm = b.attn_norm.detach();
            b.ffn_norm = b.ffn_norm.detach();
            for p in &mut b.projs {
                freeze(&mut p.weight);
            }
        }
    }

    /// Drops the f32 copies of hybrid weights, keeping Q8_0 only: every matmul then runs
    /// quantized, exactly like candle's `quantized_llama` (and in 540 MB less memory).
    pub fn quantized_only(&mut self) {
        for block in &mut self.blocks {
            for p in &mut block.projs {
                if let Weight::Hybrid(q, _) = &p.weight {
                    p.weight = Weight::Quant(q.clone());
                    p.bf16 = Default::default();
                }
            }
        }
    }

    /// Runs every quantized product on candle's kernel instead of [`crate::q8`]'s: for
    /// comparisons with candle's own models, whose Q8_0 products are less exact on some shapes
    /// (on SmolLM2's `ffn_down`, 3.3 off an exact 51.6; [`crate::q8`]'s, 4e-5).
    pub fn use_candle_kernels(&mut self) -> Result<()> {
        let swap = |w: &mut Weight| -> Result<()> {
            match w {
                Weight::Quant(q) | Weight::Hybrid(q, _) => *q = q.on_candle()?,
                Weight::Dense(_) => {}
            }
            Ok(())
        };
        swap(&mut self.head)?;
        for block in &mut self.blocks {
            for p in &mut block.projs {
                swap(&mut p.weight)?;
            }
        }
        Ok(())
    }

    /// Folds every adapter into its base weight (requantizing quantized ones to Q8_0) and
    /// removes the adapters: inference then costs what the base model costs.
    pub fn merge_lora(&mut self) -> Result<()> {
        for block in &mut self.blocks {
            for p in &mut block.projs {
                if let Some(l) = p.lora.take() {
                    let delta = (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?;
                    let merged = (p.weight.to_f32()? + delta)?;
                    p.bf16 = Default::default();
                    p.weight = match p.weight {
                        Weight::Dense(_) => Weight::Dense(merged),
                        Weight::Quant(_) => Weight::Quant(Quantized::new(QTensor::quantize(
                            &merged,
                            GgmlDType::Q8_0,
                        )?)?),
                        Weight::Hybrid(..) => Weight::Hybrid(
                            Quantized::new(QTensor::quantize(&merged, GgmlDType::Q8_0)?)?,
                            merged,
                        ),
                    };
                }
            }
        }
        Ok(())
    }

    /// Final hidden states `[b, t, hidden]` for `tokens: [b, t]` appended after `cache`.
    pub fn forward_hidden(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        mode: Mode,
    ) -> Result<Tensor> {
        self.forward_hidden_in(tokens, cache, mode, None)
    }

    /// Final hidden states `[b, n, hidden]` of a token tree after `cache` (inference modes
    /// only): token `i` continues token `parents[i]` of the same row, or the cache's last
    /// position where that is `None`, and attends to the cache and to its own ancestors only.
    /// Every path from the cache through the tree computes what the path as one sequence
    /// would (up to float rounding): a trie of continuations runs each shared prefix once,
    /// and sequences of different lengths run side by side without padding. Parents come
    /// before their children. The cache then holds the tree's keys too: continue from a copy.
    pub fn forward_hidden_tree(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        parents: &[Option<usize>],
        mode: Mode,
    ) -> Result<Tensor> {
        if mode == Mode::Train {
            return Err(LlmError::Invalid(
                "a token tree runs in an inference mode only".into(),
            ));
        }
        let (_, n) = tokens.dims2()?;
        if parents.len() != n {
            return Err(LlmError::Invalid(format!(
                "a tree of {n} tokens with {} parents",
                parents.len()
            )));
        }
        let mut depth = vec![0usize; n];
        for (i, p) in parents.iter().enumerate() {
            depth[i] = match p {
                None => 0,
                Some(p) if *p < i => depth[*p] + 1,
                Some(p) => {
                    return Err(LlmError::Invalid(format!(
                    "tree token {i} names token {p} as its parent, which does not come before it"
                )))
                }
            };
        }
        let pos = cache.len;
        let total = pos + n;
        // The CPU attends through the parent list (`crate::decode`); a GPU through the mask.
        let mask = if self.device.is_cpu() {
            None
        } else {
            let mut mask = vec![f32::NEG_INFINITY; n * total];
            for i in 0..n {
                mask[i * total..i * total + pos].fill(0.0);
                let mut a = Some(i);
                while let Some(k) = a {
                    mask[i * total + pos + k] = 0.0;
                    a = parents[k];
                }
            }
            Some(Tensor::from_vec(mask, (n, total), &self.device)?)
        };
        let positions: Vec<u32> = depth.iter().map(|&d| (pos + d) as u32).collect();
        let tree = TreeLayout {
            positions: Tensor::new(positions.as_slice(), &self.device)?,
            mask,
            parents: parents.to_vec(),
        };
        self.forward_hidden_in(tokens, cache, mode, Some(&tree))
    }

    fn forward_hidden_in(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        mode: Mode,
        tree: Option<&TreeLayout>,
    ) -> Result<Tensor> {
        let (mode, dense) = match mode {
            Mode::InferF32 => (Mode::Infer, Products::F32),
            Mode::InferBf16 => (Mode::Infer, Products::Bf16),
            mode => (mode, Products::ByRows),
        };
        let (b, t) = tokens.dims2()?;
        let pos = cache.len;
        let deepest = match tree {
            // A tree's deepest token sits at its depth, not at its index.
            Some(tree) => tree.positions.max(0)?.to_scalar::<u32>()? as usize + 1,
            None => pos + t,
        };
        if deepest > self.cfg.max_seq {
            return Err(LlmError::Invalid(format!(
                "sequence of {deepest} tokens exceeds the model's {}",
                self.cfg.max_seq
            )));
        }
        if cache.layers.len() != self.blocks.len() {
            *cache = KvCache::new(self.blocks.len());
        }
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim());
        let rep = nh / nkv;
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden))?;
        let (cos, sin) = match tree {
            Some(tree) => (
                self.cos.index_select(&tree.positions, 0)?,
                self.sin.index_select(&tree.positions, 0)?,
            ),
            None => (self.cos.narrow(0, pos, t)?, self.sin.narrow(0, pos, t)?),
        };
        let total = pos + t;
        // Training masks inside its fused softmax; only inference adds this table. Masked
        // entries are minus infinity, not a large negative number: libm's exp of -1e9 takes
        // its slow underflow path (3% of a precompute's time), exp of minus infinity returns
        // at once. Every row keeps at least its own position, so no row is all masked.
        // One new token per row, or a token tree, on the CPU: the attention runs as one
        // function over the cache and each token's ancestors (`crate::decode`) instead of a
        // dozen small ops per layer and a dense mask.
        let in_one_pass = mode == Mode::Infer && self.device.is_cpu() && (t == 1 || tree.is_some());
        let mask = if in_one_pass {
            None
        } else if let Some(tree) = tree {
            Some(tree.mask.clone().ok_or_else(|| {
                LlmError::Invalid("a token tree off the CPU needs its mask".into())
            })?)
        } else if t > 1 && mode == Mode::Infer {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (t, total), tokens.device())?)
        } else {
            None
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let one_pass = if in_one_pass {
            let (parents, positions) = match tree {
                Some(tree) => (tree.parents.clone(), tree.positions.clone()),
                None => (vec![None], Tensor::new(&[pos as u32], &self.device)?),
            };
            let rows = |table: &Tensor| -> Result<Vec<f32>> {
                Ok(table
                    .index_select(&positions, 0)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            Some((parents, rows(&self.cos)?, rows(&self.sin)?))
        } else {
            None
        };
        let heads = crate::decode::Heads {
            query: nh,
            kv: nkv,
            width: hd,
        };
        for (li, (block, slot)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            let drop = |pi: u64| dropout_stream(mode, self.dropout_seed(), li as u64 * 8 + pi);
            let h = rms_norm(&x, &block.attn_norm, self.cfg.rms_eps, mode)?;
            let [q, k, v, o, gate, up, down] = &block.projs;
            if let Some((parents, cos, sin)) = &one_pass {
                let (y, keys, values) = crate::decode::attend(
                    &q.forward_t(&h, None, dense)?,
                    &k.forward_t(&h, None, dense)?,
                    &v.forward_t(&h, None, dense)?,
                    slot.as_ref(),
                    &crate::decode::Layout { parents, cos, sin },
                    heads,
                    scale as f32,
                )?;
                *slot = Some((keys, values));
                x = (x + o.forward_t(&y, None, dense)?)?;
                let h = rms_norm(&x, &block.ffn_norm, self.cfg.rms_eps, mode)?;
                let g = candle_nn::ops::silu(&gate.forward_t(&h, None, dense)?)?;
                let m = (g * up.forward_t(&h, None, dense)?)?;
                x = (x + down.forward_t(&m, None, dense)?)?;
                continue;
            }
            let q = q
                .forward_t(&h, drop(0), dense)?
                .reshape((b, t, nh, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = k
                .forward_t(&h, drop(1), dense)?
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = v
                .forward_t(&h, drop(2), dense)?
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let (q, k) = match mode {
                Mode::Infer | Mode::InferF32 | Mode::InferBf16 => (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                ),
                Mode::Train => (
                    crate::fused::rope_interleaved(&q, &cos, &sin)?,
                    crate::fused::rope_interleaved(&k, &cos, &sin)?,
                ),
            };
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            // Kept in training too: a shared prefix's keys and values, still attached to the
            // graph, let a batch of suffixes train over one forward of the prefix.
            *slot = Some((k.clone(), v.clone()));
            // Grouped-query attention without copying K/V: fold the query heads that share
            // a KV head into the row dimension.
            let qg = q.reshape((b, nkv, rep * t, hd))?;
            let scores = qg.matmul(&k.t()?)?;
            let att = match mode {
                Mode::Infer | Mode::InferF32 | Mode::InferBf16 => {
                    let att = (scores * scale)?;
                    let att = match &mask {
                        Some(m) => att
                            .reshape((b, nkv, rep, t, total))?
                            .broadcast_add(m)?
                            .reshape((b, nkv, rep * t, total))?,
                        None => att,
                    };
                    candle_nn::ops::softmax_last_dim(&att)?
                }
                Mode::Train => crate::fused::causal_softmax(&scores, scale, t, pos)?,
            };
            let y = att
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?;
            x = (x + o.forward_t(&y, drop(3), dense)?)?;
            let h = rms_norm(&x, &block.ffn_norm, self.cfg.rms_eps, mode)?;
            let g = candle_nn::ops::silu(&gate.forward_t(&h, drop(4), dense)?)?;
            let m = (g * up.forward_t(&h, drop(5), dense)?)?;
            x = (x + down.forward_t(&m, drop(6), dense)?)?;
        }
        cache.len = total;
        rms_norm(&x, &self.norm, self.cfg.rms_eps, mode)
    }

    /// Vocabulary logits for hidden states `[..., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head.forward(hidden, false)
    }

    /// Logits of only the vocabulary entries `ids` for hidden states `[n, hidden]`:
    /// `[n, ids.len()]`. Constrained decoding needs no more than the allowed tokens, which
    /// saves most of the 49k-row output projection.
    pub fn logits_subset(&self, hidden: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let idx = Tensor::new(ids, &self.device)?;
        let rows = self.head_f32.index_select(&idx, 0)?;
        Ok(hidden.matmul(&rows.t()?)?)
    }

    /// Logits of the last position for each row: `[b, vocab]`.
    pub fn last_logits(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.forward_hidden(tokens, cache, Mode::Infer)?;
        let t = h.dim(1)?;
        self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
}

fn lora_manifest_path(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".json");
    path.with_file_name(name)
}

/// A scoring head on the last hidden state: `n_out` outputs (1 for regression, or one per
/// label bucket for classification), trained together with LoRA for the alignment model.
#[derive(Debug, Clone)]
pub struct ScoreHead {
    /// `[n_out, hidden]`
    pub w: Var,
    /// `[n_out]`
    pub b: Var,
}

impl ScoreHead {
    /// A zero-initialised head on `device` (the model's: [`Llama::device`]).
    pub fn new(hidden: usize, n_out: usize, device: &Device) -> Result<Self> {
        Ok(ScoreHead {
            w: Var::zeros((n_out, hidden), DType::F32, device)?,
            b: Var::zeros(n_out, DType::F32, device)?,
        })
    }

    /// Scores `[b, n_out]` from hidden states `[b, hidden]`. Each hidden state is scaled to
    /// unit length first: the final norm leaves entries of several units, and with Adam
    /// (every weight moving by about the learning rate per step) raw features would move a
    /// score by `lr * sum |h|`, hundreds of times the label scale.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let norm = (hidden.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
        Ok(hidden
            .broadcast_div(&norm)?
            .matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?)
    }

    /// Sets the bias (one value per output), e.g. to each candidate's prior mean label.
    pub fn set_bias(&self, bias: &[f32]) -> Result<()> {
        Ok(self.b.set(&Tensor::new(bias, self.b.device())?)?)
    }

    /// Saves the head as safetensors (`head.w`, `head.b`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = self
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let tmp = wander_core::artifact::temp_sibling(path);
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
        Ok(())
    }

    /// Loads a head saved by [`ScoreHead::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let t = candle_core::safetensors::load(path, device)?;
        let get = |k: &str| {
            t.get(k).cloned().ok_or_else(|| LlmError::Model {
                path: path.to_path_buf(),
                message: format!("scoring head file lacks `{k}`"),
            })
        };
        Ok(ScoreHead {
            w: Var::from_tensor(&get("head.w")?)?,
            b: Var::from_tensor(&get("head.b")?)?,
        })
    }

    /// The head's tensors by name.
    pub fn tensors(&self) -> Vec<(String, Var)> {
        vec![
            ("head.w".into(), self.w.clone()),
            ("head.b".into(), self.b.clone()),
        ]
    }
}

//! LoRA adapters in the layout other runtimes load: PEFT's (`adapter_config.json` and
//! `adapter_model.safetensors` with Hugging Face module names), for transformers + peft and
//! for servers that take PEFT adapters (vLLM's `--lora-modules`).
//!
//! wander's model is read from a GGUF, whose query and key projections are stored with the
//! rows of each head permuted: llama.cpp's converter interleaves the two halves of a head so
//! that RoPE can rotate adjacent pairs, while Hugging Face's Llama rotates the first half
//! against the second. A LoRA update of `q` or `k` trained here lives in the GGUF order, so
//! its `B` matrix (one row per output) is permuted back before it is written; `A` (one column
//! per input) and every other projection need nothing.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::json;

use crate::gguf::LlamaConfig;
use crate::model::PROJ_NAMES;
use crate::{LlmError, Result};

/// Hugging Face's module path of each of [`PROJ_NAMES`] inside a Llama decoder layer.
const HF_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// The rows of a projection's output (`rows x cols`, `n_heads` heads of `rows / n_heads`)
/// from GGUF's interleaved order back to Hugging Face's: within each head, GGUF row `2j + s`
/// is Hugging Face row `s * d/2 + j` (the inverse of llama.cpp's `permute`).
pub fn gguf_rows_to_hf(m: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = m.dims2()?;
    if n_heads == 0 || rows % (2 * n_heads) != 0 {
        return Err(LlmError::Invalid(format!(
            "{rows} rows do not split into {n_heads} heads of an even size"
        )));
    }
    let half = rows / n_heads / 2;
    Ok(m.reshape((n_heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// One adapter tensor's place, parsed from wander's name `blk.{layer}.{proj}.lora_a|lora_b`.
struct AdapterName {
    layer: usize,
    /// Index into [`PROJ_NAMES`].
    proj: usize,
    /// `lora_a` (down, `[rank, in]`) or `lora_b` (up, `[out, rank]`).
    is_a: bool,
}

fn parse_adapter_name(name: &str) -> Result<AdapterName> {
    let bad = || {
        LlmError::Invalid(format!(
            "`{name}` is not an adapter tensor (blk.N.PROJ.lora_a|lora_b)"
        ))
    };
    let mut parts = name.split('.');
    let (Some("blk"), Some(layer), Some(proj), Some(side @ ("lora_a" | "lora_b")), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    Ok(AdapterName {
        layer: layer.parse().map_err(|_| bad())?,
        proj: PROJ_NAMES.iter().position(|p| *p == proj).ok_or_else(bad)?,
        is_a: side == "lora_a",
    })
}

/// What [`write_peft`] records about the base model.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftBase {
    /// `base_model_name_or_path` (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`).
    pub name: String,
    /// The LoRA `alpha` the adapters were trained with (their scale is alpha / rank).
    pub alpha: f64,
}

/// Writes adapters into `dir` in PEFT's layout: `adapter_config.json` and
/// `adapter_model.safetensors` (`base_model.model.model.layers.{i}.{module}.lora_A.weight`,
/// `[rank, in]`, and `lora_B.weight`, `[out, rank]`, with `q` and `k` rows in Hugging Face's
/// order). `tensors` are named as [`crate::model::Llama::lora_tensors`] and the saved adapter files name them
/// (`blk.{i}.{proj}.lora_a|lora_b`); `cfg` gives the head counts. Returns the number of
/// tensors written.
pub fn write_peft(
    tensors: &[(String, Tensor)],
    cfg: &LlamaConfig,
    dir: &Path,
    base: &PeftBase,
) -> Result<usize> {
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut targets: Vec<(usize, &str)> = Vec::new();
    let mut rank = None;
    for (name, tensor) in tensors {
        let AdapterName { layer, proj, is_a } = parse_adapter_name(name)?;
        let module = HF_MODULES[proj];
        let key = format!("base_model.model.model.layers.{layer}.{module}");
        let tensor = match (is_a, PROJ_NAMES[proj]) {
            (true, _) => {
                rank = Some(tensor.dim(0)?);
                tensor.clone()
            }
            (false, "q") => gguf_rows_to_hf(tensor, cfg.n_head)?,
            (false, "k") => gguf_rows_to_hf(tensor, cfg.n_kv_head)?,
            (false, _) => tensor.clone(),
        };
        let side = if is_a { "lora_A" } else { "lora_B" };
        out.insert(format!("{key}.{side}.weight"), tensor);
        let short = module.rsplit('.').next().unwrap_or(module);
        if !targets.iter().any(|(_, t)| *t == short) {
            targets.push((proj, short));
        }
    }
    let Some(rank) = rank else {
        return Err(LlmError::Invalid("no LoRA adapter to export".into()));
    };
    targets.sort();
    std::fs::create_dir_all(dir).map_err(|e| LlmError::Core(wander_core::CoreError::io(dir, e)))?;
    let weights = dir.join("adapter_model.safetensors");
    let tmp = wander_core::artifact::temp_sibling(&weights);
    candle_core::safetensors::save(&out, &tmp)?;
    std::fs::rename(&tmp, &weights)
        .map_err(|e| LlmError::Core(wander_core::CoreError::io(&weights, e)))?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.name,
        "r": rank,
        "lora_alpha": base.alpha,
        "lora_dropout": 0.0,
        "target_modules": targets.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "use_rslora": false,
        "modules_to_save": null,
    });
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| LlmError::Invalid(e.to_string()))?;
    wander_core::artifact::atomic_write(&dir.join("adapter_config.json"), text.as_bytes())?;
    Ok(out.len())
}

/// Writes adapters as a GGUF LoRA adapter in llama.cpp's format (`llama-server --lora`,
/// `llama-cli --lora`): `general.type = adapter`, `adapter.type = lora`,
/// `adapter.lora.alpha`, and per projection `blk.{i}.{gguf name}.weight.lora_a` (`[rank, in]`)
/// and `.lora_b` (`[out, rank]`) in F32. The rows stay in GGUF order (the model they apply to
/// is the GGUF). Returns the number of tensors written.
pub fn write_gguf_lora(tensors: &[(String, Tensor)], path: &Path, alpha: f64) -> Result<usize> {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let mut named: Vec<(String, QTensor)> = Vec::new();
    for (name, tensor) in tensors {
        let AdapterName { layer, proj, is_a } = parse_adapter_name(name)?;
        let gguf = crate::model::GGUF_NAMES[proj];
        let side = if is_a { "lora_a" } else { "lora_b" };
        named.push((
            format!("blk.{layer}.{gguf}.weight.{side}"),
            QTensor::quantize(&tensor.contiguous()?, GgmlDType::F32)?,
        ));
    }
    if named.is_empty() {
        return Err(LlmError::Invalid("no LoRA adapter to export".into()));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        ),
        ("general.type", gguf_file::Value::String("adapter".into())),
        ("adapter.type", gguf_file::Value::String("lora".into())),
        ("adapter.lora.alpha", gguf_file::Value::F32(alpha as f32)),
    ];
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = wander_core::artifact::temp_sibling(path);
    {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
        let mut w = std::io::BufWriter::new(file);
        gguf_file::write(&mut w, &md, &ts)?;
        std::io::Write::flush(&mut w)
            .map_err(|e| LlmError::Core(wander_core::CoreError::io(&tmp, e)))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| LlmError::Core(wander_core::CoreError::io(path, e)))?;
    Ok(named.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Llama;
    use candle_core::{Device, IndexOp};

    /// Two layers, four query heads over two key/value heads (`vocab` 0: the GGUF writer's).
    fn tiny_config(vocab: usize) -> crate::gguf::LlamaConfig {
        crate::gguf::LlamaConfig {
            n_layer: 2,
            n_head: 4,
            n_kv_head: 2,
            hidden: 32,
            ffn: 64,
            vocab,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_seq: 64,
        }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A head's vector in GGUF order, rotated by RoPE the GGUF way (adjacent pairs), equals
    /// the same vector in Hugging Face order rotated the Hugging Face way (halves), once
    /// reordered: so an exported q/k update acts in a Hugging Face model as it did here.
    #[test]
    fn reordered_rows_turn_interleaved_rope_into_half_rope() {
        let (heads, t, d, inputs) = (3usize, 5usize, 8usize, 6usize);
        let dev = Device::Cpu;
        let w_gguf = Tensor::randn(0f32, 1.0, (heads * d, inputs), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (t, inputs), &dev).unwrap();
        let w_hf = gguf_rows_to_hf(&w_gguf, heads).unwrap();
        let angles: Vec<f32> = (0..t)
            .flat_map(|p| (0..d / 2).map(move |j| p as f32 / 10f32.powf(j as f32 / (d / 2) as f32)))
            .collect();
        let theta = Tensor::from_vec(angles, (t, d / 2), &dev).unwrap();
        let (cos, sin) = (theta.cos().unwrap(), theta.sin().unwrap());
        let heads_of = |q: Tensor| {
            q.reshape((t, heads, d))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
                .unsqueeze(0)
                .unwrap()
        };
        let q_gguf = heads_of(x.matmul(&w_gguf.t().unwrap()).unwrap());
        let q_hf = heads_of(x.matmul(&w_hf.t().unwrap()).unwrap());
        let rotated_gguf = candle_nn::rotary_emb::rope_i(&q_gguf, &cos, &sin).unwrap();
        let rotated_hf = candle_nn::rotary_emb::rope(&q_hf, &cos, &sin).unwrap();
        for h in 0..heads {
            // one head's (t, d) block, rows as outputs: reorder its d columns
            let g = rotated_gguf
                .i((0, h))
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap();
            let reordered = gguf_rows_to_hf(&g, 1).unwrap().t().unwrap();
            let expected = rotated_hf.i((0, h)).unwrap();
            let diff = max_abs_diff(&reordered, &expected);
            assert!(diff < 1e-5, "head {h}: {diff}");
            // Without the reordering the two disagree: the test can tell a wrong export.
            let unordered = max_abs_diff(&g.t().unwrap(), &expected);
            assert!(unordered > 0.1, "head {h}: {unordered}");
        }
        assert!(gguf_rows_to_hf(&w_gguf, 7).is_err());
    }

    #[test]
    fn peft_layout_names_shapes_and_the_q_k_reordering() {
        let (mut model, _) = Llama::random(tiny_config(60), 3).unwrap();
        let targets: Vec<String> = ["q", "k", "v", "down"].map(String::from).to_vec();
        let params = model.attach_lora(&targets, 4, 8.0, 0.0, 5).unwrap();
        for (name, var) in &params {
            if name.ends_with("lora_b") {
                let shape = var.as_tensor().shape().clone();
                var.set(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let base = PeftBase {
            name: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            alpha: 8.0,
        };
        let tensors: Vec<(String, Tensor)> = model
            .lora_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        assert_eq!(
            write_peft(&tensors, &model.cfg, dir.path(), &base).unwrap(),
            2 * 2 * 4
        );
        let saved = candle_core::safetensors::load(
            dir.path().join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let get = |k: &str| {
            saved
                .get(k)
                .unwrap_or_else(|| panic!("{k} missing"))
                .clone()
        };
        let ours = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .unwrap()
                .1
                .as_tensor()
                .clone()
        };
        let same = |a: &Tensor, b: &Tensor| {
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let layer = "base_model.model.model.layers.1";
        assert_eq!(
            get(&format!("{layer}.self_attn.q_proj.lora_A.weight")).dims(),
            &[4, 32]
        );
        assert_eq!(
            get(&format!("{layer}.self_attn.k_proj.lora_B.weight")).dims(),
            &[16, 4]
        );
        assert_eq!(
            get(&format!("{layer}.mlp.down_proj.lora_A.weight")).dims(),
            &[4, 64]
        );
        let q_b = get(&format!("{layer}.self_attn.q_proj.lora_B.weight"));
        assert!(same(
            &q_b,
            &gguf_rows_to_hf(&ours("blk.1.q.lora_b"), 4).unwrap()
        ));
        assert!(
            !same(&q_b, &ours("blk.1.q.lora_b")),
            "q's rows are reordered"
        );
        let k_b = get(&format!("{layer}.self_attn.k_proj.lora_B.weight"));
        assert!(same(
            &k_b,
            &gguf_rows_to_hf(&ours("blk.1.k.lora_b"), 2).unwrap()
        ));
        assert!(same(
            &get(&format!("{layer}.self_attn.v_proj.lora_B.weight")),
            &ours("blk.1.v.lora_b")
        ));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["r"], 4);
        assert_eq!(config["lora_alpha"], 8.0);
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(
            config["target_modules"],
            serde_json::json!(["q_proj", "k_proj", "v_proj", "down_proj"])
        );
        assert!(
            write_peft(&[], &model.cfg, dir.path(), &base).is_err(),
            "no adapter, no export"
        );
        let stray = vec![("blk.0.q.weight".to_string(), tensors[0].1.clone())];
        let err = write_peft(&stray, &model.cfg, dir.path(), &base)
            .unwrap_err()
            .to_string();
        assert!(err.contains("blk.0.q.weight"), "{err}");
    }

    /// The checks llama.cpp makes when it loads a LoRA adapter (llama-adapter.cpp): the
    /// metadata, a `.lora_a`/`.lora_b` pair per model tensor, `a.ne[0]` = the model tensor's
    /// `ne[0]`, `b.ne[1]` = its `ne[1]`, `a.ne[1]` = `b.ne[0]` (ggml's `ne` is the shape
    /// reversed).
    #[test]
    fn a_gguf_adapter_passes_llama_cpp_s_shape_checks_against_its_model() {
        use candle_core::quantized::gguf_file;
        let cfg = tiny_config(0);
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.gguf");
        crate::gguf::write_tiny_model(&base, &cfg, 1).unwrap();
        let mut g = crate::gguf::GgufFile::open(&base).unwrap();
        let mut model = Llama::from_gguf(&mut g, false).unwrap();
        let targets: Vec<String> = ["q", "k", "o", "up", "down"].map(String::from).to_vec();
        let tensors: Vec<(String, Tensor)> = model
            .attach_lora(&targets, 4, 8.0, 0.0, 2)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let path = dir.path().join("adapter.gguf");
        assert_eq!(write_gguf_lora(&tensors, &path, 8.0).unwrap(), 2 * 5 * 2);
        let read = |p: &std::path::Path| {
            gguf_file::Content::read(&mut std::fs::File::open(p).unwrap()).unwrap()
        };
        let (adapter, model_file) = (read(&path), read(&base));
        let text = |k: &str| adapter.metadata[k].to_string().unwrap().clone();
        assert_eq!(
            (text("general.type"), text("adapter.type")),
            ("adapter".into(), "lora".into())
        );
        assert_eq!(text("general.architecture"), "llama");
        assert_eq!(
            adapter.metadata["adapter.lora.alpha"].to_f32().unwrap(),
            8.0
        );
        let ne = |c: &gguf_file::Content, n: &str| -> Vec<usize> {
            let mut d = c.tensor_infos[n].shape.dims().to_vec();
            d.reverse();
            d
        };
        let mut pairs = 0;
        for name in model_file.tensor_infos.keys() {
            let (a, b) = (format!("{name}.lora_a"), format!("{name}.lora_b"));
            if !adapter.tensor_infos.contains_key(&a) {
                continue;
            }
            let (m, a, b) = (ne(&model_file, name), ne(&adapter, &a), ne(&adapter, &b));
            assert_eq!((a[0], b[1], a[1]), (m[0], m[1], b[0]), "{name}");
            pairs += 1;
        }
        assert_eq!(pairs, 10, "every adapter pair names a tensor of the model");
    }

    #[test]
    fn the_reordering_moves_rows_as_llama_cpp_interleaves_them() {
        // one head of 4 rows: GGUF order (h0, h2, h1, h3) of Hugging Face rows h0..h3
        let gguf = Tensor::from_vec(vec![0f32, 2.0, 1.0, 3.0], (4, 1), &Device::Cpu).unwrap();
        let hf = gguf_rows_to_hf(&gguf, 1).unwrap();
        assert_eq!(
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
    }
}

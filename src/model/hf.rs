//! Loading llama / qwen2 models from a Hugging Face folder: `config.json` and
//! `model.safetensors` or shards listed in `model.safetensors.index.json`
//! (tensor names of `transformers`' `LlamaForCausalLM` / `Qwen2ForCausalLM`).
//! f32, f16 and bf16 tensors are accepted; matrices are kept in f32, or
//! quantized to Q8_0 when asked (`dtype="q8_0"`).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::BufferedSafetensors;
use candle_core::{DType, Device};
use serde_json::Value;

use super::linear::{Linear, Weight};
use super::quant::{self, QK};
use super::{Arch, Config, Layer, RopeStyle, Weights};
use crate::error::{Error, Result};

/// How dense (safetensors) matrices are stored in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseAs {
    F32,
    Q8_0,
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::from_open(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::ModelFormat(format!("{} is not valid JSON: {e}", path.display())))
}

struct Shards {
    shards: Vec<(PathBuf, BufferedSafetensors)>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let idx = read_json(&index)?;
            let map = idx.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                Error::ModelFormat(format!("{} has no weight_map", index.display()))
            })?;
            let names: BTreeSet<String> =
                map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::ModelFormat(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut shards = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| Error::from_open(&f, e))?;
            let st = BufferedSafetensors::new(bytes).map_err(|e| {
                Error::ModelFormat(format!("{} is not a valid safetensors file (truncated?): {e}", f.display()))
            })?;
            shards.push((f, st));
        }
        Ok(Shards { shards })
    }

    fn has(&self, name: &str) -> bool {
        self.shards.iter().any(|(_, s)| s.get(name).is_ok())
    }

    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        for (path, s) in &self.shards {
            if s.get(name).is_ok() {
                let t = s.load(name, &Device::Cpu).map_err(|e| {
                    Error::ModelFormat(format!("cannot read tensor {name} from {}: {e}", path.display()))
                })?;
                match t.dtype() {
                    DType::F32 | DType::F16 | DType::BF16 => {}
                    other => {
                        return Err(Error::Unsupported(format!(
                            "tensor {name} has dtype {other:?}; only f32, f16 and bf16 are supported"
                        )))
                    }
                }
                let dims = t.dims().to_vec();
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                return Ok((dims, v));
            }
        }
        Err(Error::ModelFormat(format!("model lacks tensor {name}")))
    }
}

fn get_usize(cfg: &Value, key: &str) -> Option<usize> {
    cfg.get(key).and_then(|v| v.as_u64()).map(|v| v as usize)
}

pub fn load(dir: &Path, dense_as: DenseAs) -> Result<(Config, Weights)> {
    let cfg_path = dir.join("config.json");
    let c = read_json(&cfg_path)?;
    let model_type = c.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let arch = match model_type {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => {
            return Err(Error::Unsupported(format!(
                "unsupported model_type {other:?} in {}: loglm runs the llama and qwen2 families",
                cfg_path.display()
            )))
        }
    };
    if c.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(Error::Unsupported("rope_scaling is not supported".into()));
    }
    // transformers >= 5 writes `rope_parameters` ({"rope_type", "rope_theta"}) instead
    // of a top-level `rope_theta`.
    let rope_params = c.get("rope_parameters").filter(|v| v.is_object());
    if let Some(t) = rope_params.and_then(|p| p.get("rope_type")).and_then(|v| v.as_str()) {
        if t != "default" {
            return Err(Error::Unsupported(format!("rope_type {t:?} is not supported (only \"default\")")));
        }
    }
    let rope_theta = c
        .get("rope_theta")
        .and_then(|v| v.as_f64())
        .or_else(|| rope_params.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
        .unwrap_or(10_000.0);
    let req = |k: &str| {
        get_usize(&c, k).ok_or_else(|| Error::ModelFormat(format!("{} lacks {k}", cfg_path.display())))
    };
    let n_embd = req("hidden_size")?;
    let n_head = req("num_attention_heads")?;
    if n_head == 0 {
        return Err(Error::ModelFormat("num_attention_heads is 0".into()));
    }
    let cfg = Config {
        arch,
        n_layer: req("num_hidden_layers")?,
        n_embd,
        n_head,
        n_head_kv: get_usize(&c, "num_key_value_heads").unwrap_or(n_head),
        head_dim: get_usize(&c, "head_dim").unwrap_or(n_embd / n_head),
        n_ff: req("intermediate_size")?,
        vocab_size: req("vocab_size")?,
        rope_theta: rope_theta as f32,
        rope_style: RopeStyle::Neox,
        rms_eps: c.get("rms_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-6) as f32,
        train_context: get_usize(&c, "max_position_embeddings").unwrap_or(4096),
        kv_f16: false,
    };
    cfg.validate()?;
    let tied = c.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false);
    let st = Shards::open(dir)?;
    let linear = |name: &str, quantize: bool| -> Result<Linear> {
        let (dims, v) = st.load(name)?;
        if dims.len() != 2 {
            return Err(Error::ModelFormat(format!("tensor {name} is not a matrix")));
        }
        let weight = if quantize && dense_as == DenseAs::Q8_0 && dims[1] % QK == 0 {
            let mut b = Vec::new();
            quant::quantize_q8_0(&v, &mut b);
            Weight::Q8_0(b)
        } else {
            Weight::F32(v)
        };
        Ok(Linear::new(dims[0], dims[1], weight))
    };
    let vector = |name: &str| -> Result<Vec<f32>> { Ok(st.load(name)?.1) };
    let opt_vector = |name: &str| -> Result<Option<Vec<f32>>> {
        if st.has(name) {
            Ok(Some(vector(name)?))
        } else {
            Ok(None)
        }
    };
    let embed = linear("model.embed_tokens.weight", true)?;
    let lm_head = if !tied && st.has("lm_head.weight") { Some(linear("lm_head.weight", true)?) } else { None };
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        layers.push(Layer {
            attn_norm: vector(&p("input_layernorm.weight"))?,
            wq: linear(&p("self_attn.q_proj.weight"), true)?,
            wk: linear(&p("self_attn.k_proj.weight"), true)?,
            wv: linear(&p("self_attn.v_proj.weight"), true)?,
            wo: linear(&p("self_attn.o_proj.weight"), true)?,
            bq: opt_vector(&p("self_attn.q_proj.bias"))?,
            bk: opt_vector(&p("self_attn.k_proj.bias"))?,
            bv: opt_vector(&p("self_attn.v_proj.bias"))?,
            ffn_norm: vector(&p("post_attention_layernorm.weight"))?,
            w_gate: linear(&p("mlp.gate_proj.weight"), true)?,
            w_up: linear(&p("mlp.up_proj.weight"), true)?,
            w_down: linear(&p("mlp.down_proj.weight"), true)?,
        });
    }
    let weights = Weights { embed, layers, out_norm: vector("model.norm.weight")?, lm_head };
    weights.validate(&cfg)?;
    Ok((cfg, weights))
}

/// Re-encode every dense matrix whose row length allows it as Q8_0: what
/// `load(.., DenseAs::Q8_0)` does while reading, for weights loaded as f32
/// first (so that LoRA adapters are merged before quantization, not after).
pub fn quantize_dense(weights: &mut Weights) {
    let q = |lin: &mut Linear| {
        if let Weight::F32(v) = &lin.weight {
            if lin.in_dim % QK == 0 {
                let mut b = Vec::new();
                quant::quantize_q8_0(v, &mut b);
                let allow = lin.allow_dense;
                *lin = Linear::new(lin.out_dim, lin.in_dim, Weight::Q8_0(b));
                lin.allow_dense = allow;
            }
        }
    };
    q(&mut weights.embed);
    if let Some(h) = weights.lm_head.as_mut() {
        q(h);
    }
    for l in &mut weights.layers {
        for lin in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down] {
            q(lin);
        }
    }
}

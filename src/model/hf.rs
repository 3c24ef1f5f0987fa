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

/// Largest JSON file read from a model folder (`config.json`, the shard index,
/// `tokenizer.json`...): real ones are a few MB.
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// Read a file that must be a regular file (after symlinks: not `/dev/zero`, a
/// FIFO or a folder) of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let md = std::fs::metadata(path).map_err(|e| Error::from_open(path, e))?;
    if !md.is_file() {
        return Err(Error::ModelFormat(format!("{} is not a regular file", path.display())));
    }
    if md.len() > max {
        return Err(Error::ModelFormat(format!(
            "{} is {} bytes, more than the {max} accepted for this kind of file",
            path.display(),
            md.len()
        )));
    }
    let mut out = Vec::with_capacity(md.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, max.saturating_add(1)), &mut out))
        .map_err(|e| Error::from_open(path, e))?;
    if out.len() as u64 > max {
        return Err(Error::ModelFormat(format!("{} grew past {max} bytes while being read", path.display())));
    }
    Ok(out)
}

pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_bounded(path, MAX_JSON_BYTES)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::ModelFormat(format!("{} is not valid JSON: {e}", path.display())))
}

/// The folders a model folder's files may resolve to: the folder itself and,
/// for a Hugging Face hub snapshot (`<repo>/snapshots/<revision>`, whose files
/// are symlinks into `<repo>/blobs`), the repository folder.
fn allowed_roots(dir: &Path) -> Result<Vec<PathBuf>> {
    let canon = std::fs::canonicalize(dir).map_err(|e| Error::from_open(dir, e))?;
    let mut roots = vec![canon.clone()];
    if canon.parent().and_then(Path::file_name).is_some_and(|n| n == "snapshots") {
        if let Some(repo) = canon.parent().and_then(Path::parent) {
            roots.push(repo.to_path_buf());
        }
    }
    Ok(roots)
}

/// `dir/name` for a file the model folder itself names (a shard of the index):
/// a relative path without `..`, resolving (symlinks followed) to a regular
/// file inside the folder.
fn confined_file(dir: &Path, roots: &[PathBuf], name: &str, listed_in: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let rel = Path::new(name);
    if name.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::ModelFormat(format!(
            "{} names the shard {name:?}: shards must be files inside the model folder (no absolute paths, no '..')",
            listed_in.display()
        )));
    }
    let path = dir.join(rel);
    let canon = std::fs::canonicalize(&path).map_err(|e| Error::from_open(&path, e))?;
    if !roots.iter().any(|r| canon.starts_with(r)) {
        return Err(Error::ModelFormat(format!(
            "{} resolves to {}, outside the model folder",
            path.display(),
            canon.display()
        )));
    }
    if !std::fs::metadata(&canon).map_err(|e| Error::from_open(&path, e))?.is_file() {
        return Err(Error::ModelFormat(format!("{} is not a regular file", path.display())));
    }
    Ok(path)
}

/// Most shards an index may list.
const MAX_SHARDS: usize = 4096;

struct Shards {
    shards: Vec<(PathBuf, BufferedSafetensors)>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let roots = allowed_roots(dir)?;
        let files: Vec<PathBuf> = if index.is_file() {
            let idx = read_json(&index)?;
            let map = idx.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                Error::ModelFormat(format!("{} has no weight_map", index.display()))
            })?;
            let mut names = BTreeSet::new();
            for (tensor, v) in map {
                let name = v.as_str().ok_or_else(|| {
                    Error::ModelFormat(format!("{}: the shard of {tensor} is not a file name", index.display()))
                })?;
                names.insert(name.to_string());
            }
            if names.len() > MAX_SHARDS {
                return Err(Error::ModelFormat(format!(
                    "{} lists {} shards (at most {MAX_SHARDS} accepted)",
                    index.display(),
                    names.len()
                )));
            }
            names.iter().map(|n| confined_file(dir, &roots, n, &index)).collect::<Result<_>>()?
        } else if single.is_file() {
            vec![confined_file(dir, &roots, "model.safetensors", &single)?]
        } else {
            return Err(Error::ModelFormat(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut shards = Vec::new();
        for f in files {
            let bytes = read_bounded(&f, u64::MAX)?;
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

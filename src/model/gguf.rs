//! Loading llama / qwen2 models from GGUF files (llama.cpp's format; tensor
//! names `token_embd`, `blk.N.attn_q`, ... as written by `convert_hf_to_gguf.py`).
//!
//! Q4_1 and Q8_0 matrices are kept as they are in the file; every other
//! quantized type candle can read (Q4_0, Q5_0/1, Q2_K..Q6_K, F16, BF16) is
//! dequantized and re-encoded as Q8_0, whose error is far below the source
//! quantization's. F32 matrices stay dense.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::gguf_meta::{value_to_f32, value_to_u64};
use super::linear::{Linear, Weight};
use super::quant::{self, BlockQ4_1, BlockQ8_0, QK};
use super::{Arch, Config, Layer, RopeStyle, Weights};
use crate::error::{Error, Result};

/// Metadata and tensors of an opened GGUF file.
pub struct GgufFile {
    pub content: Content,
    file: File,
    path: std::path::PathBuf,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::from_open(path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", e))?.len();
        if len < 8 {
            return Err(Error::ModelFormat(format!(
                "{} is not a GGUF model: the file is {len} bytes long",
                path.display()
            )));
        }
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(|e| Error::io("read", e))?;
        if &magic != b"GGUF" {
            return Err(Error::ModelFormat(format!(
                "{} is not a GGUF file (bad magic bytes {:?}); pass a .gguf file or a Hugging Face model folder",
                path.display(),
                String::from_utf8_lossy(&magic)
            )));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("seek", e))?;
        // candle checks every count and length against the file size; it divides
        // by `general.alignment` unchecked, so a crafted 0 there panics: caught here.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut file)));
        let content = match read {
            Ok(r) => r.map_err(|e| {
                Error::ModelFormat(format!(
                    "cannot read the GGUF header of {} (truncated or corrupt file?): {e}",
                    path.display()
                ))
            })?,
            Err(_) => {
                return Err(Error::ModelFormat(format!(
                    "cannot read the GGUF header of {}: corrupt metadata (general.alignment 0?)",
                    path.display()
                )))
            }
        };
        match content.metadata.get("general.alignment") {
            None => {}
            Some(v) if value_to_u64(v).is_some_and(|a| a > 0 && a.is_power_of_two()) => {}
            Some(_) => {
                return Err(Error::ModelFormat(format!(
                    "{}: general.alignment must be a power of two",
                    path.display()
                )))
            }
        }
        // Every tensor must lie inside the file: catches truncated downloads early.
        for (name, info) in &content.tensor_infos {
            let n = info.shape.dims().iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            // An empty tensor has no data pointer candle can cast (found by fuzz/harness.rs).
            if n == Some(0) {
                return Err(Error::ModelFormat(format!("{}: tensor {name} has a zero dimension", path.display())));
            }
            let bs = info.ggml_dtype.block_size() as u64;
            let end = n
                .and_then(|n| (n / bs).checked_mul(info.ggml_dtype.type_size() as u64))
                .and_then(|size| content.tensor_data_offset.checked_add(info.offset)?.checked_add(size));
            let Some(end) = end else {
                return Err(Error::ModelFormat(format!(
                    "{}: tensor {name} has an impossible size (corrupt file?)",
                    path.display()
                )));
            };
            if end > len {
                return Err(Error::ModelFormat(format!(
                    "{} is truncated: tensor {name} ends at byte {end} but the file has {len} bytes",
                    path.display()
                )));
            }
        }
        Ok(GgufFile { content, file, path: path.to_path_buf() })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn md(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn md_u(&self, key: &str) -> Result<Option<usize>> {
        match self.md(key) {
            None => Ok(None),
            Some(v) => value_to_u64(v)
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Error::ModelFormat(format!("GGUF key {key} is not a non-negative integer"))),
        }
    }

    fn md_req(&self, key: &str) -> Result<usize> {
        self.md_u(key)?.ok_or_else(|| Error::ModelFormat(format!("GGUF metadata lacks {key}")))
    }

    fn md_f(&self, key: &str) -> Option<f32> {
        self.md(key).and_then(value_to_f32)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Read a tensor as (shape as [rows, cols] with cols the contiguous dim, dtype, raw bytes).
    fn raw(&mut self, name: &str) -> Result<(Vec<usize>, GgmlDType, Vec<u8>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::ModelFormat(format!("{} lacks tensor {name}", self.path.display())))?;
        let dims = info.shape.dims().to_vec();
        let dtype = info.ggml_dtype;
        let qt = self.content.tensor(&mut self.file, name, &Device::Cpu).map_err(|e| {
            Error::ModelFormat(format!("cannot read tensor {name} from {}: {e}", self.path.display()))
        })?;
        let data = qt.data().map_err(Error::Candle)?.into_owned();
        Ok((dims, dtype, data))
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let (dims, dtype, data) = self.raw(name)?;
        let n: usize = dims.iter().product();
        to_f32(name, dtype, &data, n)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        let (dims, dtype, data) = self.raw(name)?;
        if dims.len() != 2 {
            return Err(Error::ModelFormat(format!("tensor {name} has {} dimensions, expected 2", dims.len())));
        }
        let (rows, cols) = (dims[0], dims[1]);
        let bad = || Error::ModelFormat(format!("tensor {name}: data size does not match its shape"));
        let weight = match dtype {
            GgmlDType::Q4_1 => Weight::Q4_1(quant::blocks_from_bytes::<BlockQ4_1>(&data).ok_or_else(bad)?),
            GgmlDType::Q8_0 => Weight::Q8_0(quant::blocks_from_bytes::<BlockQ8_0>(&data).ok_or_else(bad)?),
            GgmlDType::F32 if cols % QK != 0 => Weight::F32(to_f32(name, dtype, &data, rows * cols)?),
            GgmlDType::F32 => Weight::F32(to_f32(name, dtype, &data, rows * cols)?),
            _ => {
                let dense = to_f32(name, dtype, &data, rows * cols)?;
                if cols % QK != 0 {
                    Weight::F32(dense)
                } else {
                    let mut blocks = Vec::new();
                    quant::quantize_q8_0(&dense, &mut blocks);
                    Weight::Q8_0(blocks)
                }
            }
        };
        if !matches!(weight, Weight::F32(_)) && cols % QK != 0 {
            return Err(Error::Unsupported(format!(
                "tensor {name}: row length {cols} is not a multiple of {QK}"
            )));
        }
        if weight.values() != rows * cols {
            return Err(bad());
        }
        Ok(Linear::new(rows, cols, weight))
    }
}

fn to_f32(name: &str, dtype: GgmlDType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let storage = candle_core::quantized::QStorage::from_data(std::borrow::Cow::Borrowed(data), &Device::Cpu, dtype)
        .map_err(|e| Error::ModelFormat(format!("tensor {name}: {e}")))?;
    let qt = candle_core::quantized::QTensor::new(storage, (n,))
        .map_err(|e| Error::ModelFormat(format!("tensor {name}: {e}")))?;
    let t = qt
        .dequantize(&Device::Cpu)
        .map_err(|e| Error::Unsupported(format!("tensor {name} of type {dtype:?}: {e}")))?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    if v.len() != n {
        return Err(Error::ModelFormat(format!("tensor {name}: expected {n} values, found {}", v.len())));
    }
    Ok(v)
}

/// Architecture named in the file, or an `Unsupported` error.
pub fn arch_of(g: &GgufFile) -> Result<Arch> {
    let arch = match g.md("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Error::ModelFormat("GGUF metadata lacks general.architecture".into())),
    };
    match arch.as_str() {
        "llama" => Ok(Arch::Llama),
        "qwen2" => Ok(Arch::Qwen2),
        other => Err(Error::Unsupported(format!(
            "unsupported model architecture {other:?}: loglm runs the llama and qwen2 families"
        ))),
    }
}

pub fn load(g: &mut GgufFile) -> Result<(Config, Weights)> {
    let arch = arch_of(g)?;
    let a = arch.name();
    let n_layer = g.md_req(&format!("{a}.block_count"))?;
    let n_embd = g.md_req(&format!("{a}.embedding_length"))?;
    let n_head = g.md_req(&format!("{a}.attention.head_count"))?;
    let n_head_kv = g.md_u(&format!("{a}.attention.head_count_kv"))?.unwrap_or(n_head);
    let n_ff = g.md_req(&format!("{a}.feed_forward_length"))?;
    if n_head == 0 {
        return Err(Error::ModelFormat("attention.head_count is 0".into()));
    }
    let head_dim = g.md_u(&format!("{a}.attention.key_length"))?.unwrap_or(n_embd / n_head);
    let rope_dim = g.md_u(&format!("{a}.rope.dimension_count"))?.unwrap_or(head_dim);
    if rope_dim != head_dim {
        return Err(Error::Unsupported(format!(
            "partial rotary embeddings (rope dimension {rope_dim} < head dimension {head_dim}) are not supported"
        )));
    }
    if g.md(&format!("{a}.rope.scaling.type")).is_some_and(|v| matches!(v, Value::String(s) if s != "none")) {
        return Err(Error::Unsupported("rope scaling is not supported".into()));
    }
    let embd_info = g
        .content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| Error::ModelFormat("GGUF file lacks token_embd.weight".into()))?;
    let vocab_size = embd_info.shape.dims().first().copied().unwrap_or(0);
    let cfg = Config {
        arch,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        vocab_size,
        rope_theta: g.md_f(&format!("{a}.rope.freq_base")).unwrap_or(10_000.0),
        rope_style: match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Neox,
        },
        rms_eps: g.md_f(&format!("{a}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        train_context: g.md_u(&format!("{a}.context_length"))?.unwrap_or(4096),
        kv_f16: false,
    };
    cfg.validate()?;
    let embed = g.linear("token_embd.weight")?;
    let lm_head = if g.has_tensor("output.weight") { Some(g.linear("output.weight")?) } else { None };
    let out_norm = g.vector("output_norm.weight")?;
    let mut layers = Vec::with_capacity(n_layer);
    for i in 0..n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        let opt_vec = |g: &mut GgufFile, n: &str| -> Result<Option<Vec<f32>>> {
            if g.has_tensor(n) {
                Ok(Some(g.vector(n)?))
            } else {
                Ok(None)
            }
        };
        layers.push(Layer {
            attn_norm: g.vector(&p("attn_norm.weight"))?,
            wq: g.linear(&p("attn_q.weight"))?,
            wk: g.linear(&p("attn_k.weight"))?,
            wv: g.linear(&p("attn_v.weight"))?,
            wo: g.linear(&p("attn_output.weight"))?,
            bq: opt_vec(g, &p("attn_q.bias"))?,
            bk: opt_vec(g, &p("attn_k.bias"))?,
            bv: opt_vec(g, &p("attn_v.bias"))?,
            ffn_norm: g.vector(&p("ffn_norm.weight"))?,
            w_gate: g.linear(&p("ffn_gate.weight"))?,
            w_up: g.linear(&p("ffn_up.weight"))?,
            w_down: g.linear(&p("ffn_down.weight"))?,
        });
    }
    let weights = Weights { embed, layers, out_norm, lm_head };
    weights.validate(&cfg)?;
    Ok((cfg, weights))
}

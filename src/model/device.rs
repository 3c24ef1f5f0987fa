//! The same llama / qwen2 forward pass as `forward.rs`, written over candle
//! tensors so that it runs on any candle [`Device`]: CUDA when the crate is
//! built with the `cuda` feature, or candle's CPU backend (which is how the
//! tests check it against the native engine on machines without a GPU).
//!
//! Weights are taken from the already loaded [`Model`] (so GGUF, safetensors
//! and anything merged into them at load time are handled once, by the
//! loaders): quantized matrices become candle [`QTensor`]s wrapped in
//! [`QMatMul`] (candle's ports of the llama.cpp MMVQ / MMQ kernels on CUDA,
//! which quantize activations to Q8_1 as llama.cpp and our CPU engine do),
//! dense ones plain tensors. q/k/v and gate/up are fused into one matrix
//! each when their storage types agree, as in llama.cpp.
//!
//! The structure follows candle-transformers `quantized_llama.rs` with two
//! changes that the scheduler needs: the KV cache is owned by each sequence
//! and preallocated (`Tensor::zeros` + `slice_set`, DESIGN.md rule 9), and one
//! step runs a batch of chunks at different positions: all their tokens go
//! through the matrix products together; rotary embeddings take a per-token
//! position; attention is done chunk by chunk against each chunk's cache.
use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};

use super::forward::{Chunk, ChunkLogits, Logits};
use super::linear::{Linear, Weight};
use super::packed;
use super::quant::{BlockQ4_1, BlockQ8_0, QK};
use super::{Config, Model, RopeStyle};
use crate::error::{Error, Result};

/// Several projections of the same input (q/k/v or gate/up): one fused
/// matrix when the parts share a storage type, else one matrix each.
struct Projections {
    mats: Vec<QMatMul>,
    /// Output widths of the logical parts.
    dims: Vec<usize>,
}

impl Projections {
    fn new(parts: &[&Linear], dev: &Device) -> Result<Self> {
        let dims: Vec<usize> = parts.iter().map(|l| l.out_dim).collect();
        let same = parts.windows(2).all(|w| w[0].kind() == w[1].kind());
        let mats = if same && parts.len() > 1 {
            vec![matmul_of(parts, dev)?]
        } else {
            parts.iter().map(|l| matmul_of(&[*l], dev)).collect::<Result<Vec<_>>>()?
        };
        Ok(Projections { mats, dims })
    }

    /// `x [t, in]` -> one `[t, dim]` tensor per logical part (contiguous).
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        if self.mats.len() == 1 && self.dims.len() > 1 {
            let y = self.mats[0].forward(x)?;
            let mut out = Vec::with_capacity(self.dims.len());
            let mut off = 0;
            for &d in &self.dims {
                out.push(y.narrow(D::Minus1, off, d)?.contiguous()?);
                off += d;
            }
            Ok(out)
        } else {
            self.mats.iter().map(|m| Ok(m.forward(x)?)).collect()
        }
    }
}

/// The rows of `parts` stacked into one matrix `[sum(out), in]` on `dev`.
/// All parts must have the same storage type and input width.
fn matmul_of(parts: &[&Linear], dev: &Device) -> Result<QMatMul> {
    let in_dim = parts[0].in_dim;
    let out_dim: usize = parts.iter().map(|l| l.out_dim).sum();
    // Row-major GGML blocks of one part (the CPU engine may keep them interleaved).
    fn q4_1(l: &Linear) -> Option<Cow<'_, [BlockQ4_1]>> {
        match &l.weight {
            Weight::Q4_1(b) => Some(Cow::Borrowed(b.as_slice())),
            Weight::Q4_1x8(p) => Some(Cow::Owned(packed::unpack_q4_1(p, l.in_dim / QK))),
            _ => None,
        }
    }
    fn q8_0(l: &Linear) -> Option<Cow<'_, [BlockQ8_0]>> {
        match &l.weight {
            Weight::Q8_0(b) => Some(Cow::Borrowed(b.as_slice())),
            Weight::Q8_0x8(p) => Some(Cow::Owned(packed::unpack_q8_0(p, l.in_dim / QK))),
            _ => None,
        }
    }
    fn stack<'a, T: Clone + 'a>(parts: &[&'a Linear], get: impl Fn(&'a Linear) -> Option<Cow<'a, [T]>>) -> Result<Vec<T>> {
        let mut v: Vec<T> = Vec::new();
        for l in parts {
            v.extend_from_slice(&get(l).ok_or_else(|| Error::Internal("mixed weight types in a fused matrix".into()))?);
        }
        Ok(v)
    }
    match &parts[0].weight {
        Weight::F32(_) => {
            let v = stack(parts, |l| match &l.weight {
                Weight::F32(v) => Some(Cow::Borrowed(v.as_slice())),
                _ => None,
            })?;
            Ok(QMatMul::Tensor(Tensor::from_slice(&v, (out_dim, in_dim), dev)?))
        }
        Weight::Q4_1(_) | Weight::Q4_1x8(_) => {
            let v = stack(parts, q4_1)?;
            Ok(QMatMul::from_arc(Arc::new(qtensor(&v, GgmlDType::Q4_1, out_dim, in_dim, dev)?))?)
        }
        Weight::Q8_0(_) | Weight::Q8_0x8(_) => {
            let v = stack(parts, q8_0)?;
            Ok(QMatMul::from_arc(Arc::new(qtensor(&v, GgmlDType::Q8_0, out_dim, in_dim, dev)?))?)
        }
    }
}

/// A quantized tensor of shape `[rows, cols]` from GGML blocks (our block
/// structs have the ggml / candle layout, checked by size in `quant.rs`).
fn qtensor<T: Copy>(blocks: &[T], dtype: GgmlDType, rows: usize, cols: usize, dev: &Device) -> Result<QTensor> {
    let bytes = std::mem::size_of_val(blocks);
    if bytes != rows * cols / dtype.block_size() * dtype.type_size() {
        return Err(Error::Internal(format!("{dtype:?} matrix [{rows}, {cols}] has {bytes} bytes")));
    }
    // SAFETY: the blocks are plain-old-data repr(C) structs (f16 / u8 / i8 fields,
    // no padding); viewing them as bytes is sound and keeps their alignment,
    // which candle checks when it reinterprets the bytes as its own blocks.
    let raw: &[u8] = unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, bytes) };
    let storage = QStorage::from_data(Cow::Borrowed(raw), dev, dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

struct DeviceLayer {
    attn_norm: Tensor,
    qkv: Projections,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate_up: Projections,
    down: QMatMul,
}

/// A model whose weights, activations and KV caches live on a candle device.
pub struct DeviceModel {
    pub cfg: Config,
    pub context_length: usize,
    pub device: Device,
    /// "cuda:N", or "candle-cpu" for candle's CPU backend.
    pub device_name: String,
    /// CPU threads candle uses for its CPU backend (its own global pool).
    pub threads: usize,
    pub weight_bytes: usize,
    pub weight_types: Vec<&'static str>,
    embed: QMatMul,
    lm_head: QMatMul,
    layers: Vec<DeviceLayer>,
    out_norm: Tensor,
    /// Rotary tables `[context, head_dim / 2]`, the same values as the CPU engine's.
    cos: Tensor,
    sin: Tensor,
}

/// Per-sequence KV cache on the device: per layer `[n_head_kv, capacity, head_dim]`.
pub struct DeviceCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub capacity: usize,
    pub len: usize,
}

impl DeviceCache {
    pub fn new(m: &DeviceModel, capacity: usize) -> Result<Self> {
        let c = &m.cfg;
        let shape = (c.n_head_kv, capacity.max(1), c.head_dim);
        let zeros = || Tensor::zeros(shape, DType::F32, &m.device);
        Ok(DeviceCache {
            k: (0..c.n_layer).map(|_| zeros()).collect::<candle_core::Result<Vec<_>>>()?,
            v: (0..c.n_layer).map(|_| zeros()).collect::<candle_core::Result<Vec<_>>>()?,
            capacity,
            len: 0,
        })
    }

    /// Copy of the first `len` positions into a cache of another capacity.
    pub fn fork(&self, m: &DeviceModel, capacity: usize) -> Result<Self> {
        let mut out = DeviceCache::new(m, capacity.max(self.len))?;
        if self.len > 0 {
            for (dst, src) in out.k.iter_mut().zip(&self.k).chain(out.v.iter_mut().zip(&self.v)) {
                dst.slice_set(&src.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            }
        }
        out.len = self.len;
        Ok(out)
    }
}

impl DeviceModel {
    /// Move a loaded model's weights onto `device`. The CPU copy is dropped.
    pub fn from_model(model: Model, device: Device, device_name: String) -> Result<Self> {
        let Model { cfg, weights, rope, context_length, pool, .. } = model;
        drop(pool);
        let dev = &device;
        let vec_t = |v: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(v, v.len(), dev)?) };
        let embed = matmul_of(&[&weights.embed], dev)?;
        let lm_head = match &weights.lm_head {
            Some(h) => matmul_of(&[h], dev)?,
            None => embed.clone(),
        };
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(DeviceLayer {
                attn_norm: vec_t(&l.attn_norm)?,
                qkv: Projections::new(&[&l.wq, &l.wk, &l.wv], dev)?,
                bq: l.bq.as_deref().map(vec_t).transpose()?,
                bk: l.bk.as_deref().map(vec_t).transpose()?,
                bv: l.bv.as_deref().map(vec_t).transpose()?,
                wo: matmul_of(&[&l.wo], dev)?,
                ffn_norm: vec_t(&l.ffn_norm)?,
                gate_up: Projections::new(&[&l.w_gate, &l.w_up], dev)?,
                down: matmul_of(&[&l.w_down], dev)?,
            });
        }
        let half = rope.half;
        let cos = Tensor::from_slice(&rope.cos, (context_length, half), dev)?;
        let sin = Tensor::from_slice(&rope.sin, (context_length, half), dev)?;
        let mut weight_types: Vec<&'static str> =
            weights.layers.iter().flat_map(|l| [l.wq.kind(), l.w_gate.kind(), l.w_down.kind()]).collect();
        weight_types.sort();
        weight_types.dedup();
        let threads = if device.is_cpu() { candle_core::utils::get_num_threads() } else { 1 };
        let out_norm = vec_t(&weights.out_norm)?;
        Ok(DeviceModel {
            weight_bytes: weights.bytes(),
            weight_types,
            cfg,
            context_length,
            device,
            device_name,
            threads,
            embed,
            lm_head,
            layers,
            out_norm,
            cos,
            sin,
        })
    }

    /// Run the chunks through the model, append their keys/values to their
    /// caches and return the logits each asked for (same contract as
    /// `Model::forward`).
    pub fn forward(&self, chunks: &mut [Chunk<'_, DeviceCache>]) -> Result<Vec<ChunkLogits>> {
        let cfg = &self.cfg;
        for c in chunks.iter() {
            if c.tokens.is_empty() {
                return Err(Error::InvalidArgument("empty chunk".into()));
            }
            if let Some(&t) = c.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(Error::InvalidArgument(format!(
                    "token id {t} is outside the vocabulary of {} tokens",
                    cfg.vocab_size
                )));
            }
            let end = c.cache.len + c.tokens.len();
            if end > c.cache.capacity || end > self.context_length {
                return Err(Error::ContextLength {
                    prompt_tokens: end,
                    max_new_tokens: 0,
                    context_length: c.cache.capacity.min(self.context_length),
                });
            }
        }
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.forward_inner(chunks)?;
        for c in chunks.iter_mut() {
            c.cache.len += c.tokens.len();
        }
        super::check_logits(&out)?;
        Ok(out)
    }

    fn forward_inner(&self, chunks: &mut [Chunk<'_, DeviceCache>]) -> Result<Vec<ChunkLogits>> {
        let cfg = &self.cfg;
        let dev = &self.device;
        let (hd, n_head, n_kv) = (cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let group = n_head / n_kv;
        let mut ids: Vec<u32> = Vec::new();
        let mut pos: Vec<u32> = Vec::new();
        let mut starts: Vec<usize> = Vec::with_capacity(chunks.len());
        for c in chunks.iter() {
            starts.push(ids.len());
            ids.extend_from_slice(c.tokens);
            pos.extend((c.cache.len..c.cache.len + c.tokens.len()).map(|p| p as u32));
        }
        let t = ids.len();
        let ids_t = Tensor::from_vec(ids, t, dev)?;
        let pos_t = Tensor::from_vec(pos, t, dev)?;
        // Per-token rotary rows: [t, 1, hd/2], applied to [t, heads, 1, hd].
        let cos = self.cos.index_select(&pos_t, 0)?.unsqueeze(1)?.contiguous()?;
        let sin = self.sin.index_select(&pos_t, 0)?.unsqueeze(1)?.contiguous()?;
        let rope = |x: &Tensor, heads: usize| -> Result<Tensor> {
            let x = x.reshape((t, heads, 1, hd))?;
            let y = match cfg.rope_style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
                RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            };
            Ok(y.reshape((t, heads, hd))?)
        };
        // Causal masks of multi-token chunks: [tq, n], 0 where visible, -inf after.
        let masks: Vec<Option<Tensor>> = chunks
            .iter()
            .map(|c| {
                let (tq, start) = (c.tokens.len(), c.cache.len);
                if tq == 1 {
                    return Ok(None);
                }
                let n = start + tq;
                let m: Vec<f32> = (0..tq)
                    .flat_map(|i| (0..n).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY }))
                    .collect();
                Ok(Some(Tensor::from_vec(m, (tq, n), dev)?))
            })
            .collect::<Result<_>>()?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed.embedding(&ids_t)?; // [t, d]
        for (li, layer) in self.layers.iter().enumerate() {
            let xn = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let mut qkv = layer.qkv.forward(&xn)?.into_iter();
            let (mut q, mut k, mut v) = match (qkv.next(), qkv.next(), qkv.next()) {
                (Some(q), Some(k), Some(v)) => (q, k, v),
                _ => return Err(Error::Internal("q/k/v projection".into())),
            };
            if let Some(b) = &layer.bq {
                q = q.broadcast_add(b)?;
            }
            if let Some(b) = &layer.bk {
                k = k.broadcast_add(b)?;
            }
            if let Some(b) = &layer.bv {
                v = v.broadcast_add(b)?;
            }
            let q = rope(&q, n_head)?; // [t, n_head, hd]
            let k = rope(&k, n_kv)?; // [t, n_kv, hd]
            let v = v.reshape((t, n_kv, hd))?;
            let mut outs: Vec<Tensor> = Vec::with_capacity(chunks.len());
            for (ci, c) in chunks.iter().enumerate() {
                let (tq, start, r0) = (c.tokens.len(), c.cache.len, starts[ci]);
                let n = start + tq;
                let cache = &*c.cache;
                let kc = k.narrow(0, r0, tq)?.transpose(0, 1)?.contiguous()?; // [n_kv, tq, hd]
                let vc = v.narrow(0, r0, tq)?.transpose(0, 1)?.contiguous()?;
                cache.k[li].slice_set(&kc, 1, start)?;
                cache.v[li].slice_set(&vc, 1, start)?;
                let keys = cache.k[li].narrow(1, 0, n)?; // [n_kv, n, hd]
                let vals = cache.v[li].narrow(1, 0, n)?;
                // Query heads of one kv head are adjacent: [n_kv, group * tq, hd].
                let qc = q
                    .narrow(0, r0, tq)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((n_kv, group * tq, hd))?;
                let mut s = (qc.matmul(&keys.t()?)? * scale)?; // [n_kv, group * tq, n]
                if let Some(mask) = &masks[ci] {
                    s = s.reshape((n_kv, group, tq, n))?.broadcast_add(mask)?.reshape((n_kv, group * tq, n))?;
                }
                let p = candle_nn::ops::softmax_last_dim(&s)?;
                let o = p.matmul(&vals)?; // [n_kv, group * tq, hd]
                let o = o.reshape((n_head, tq, hd))?.transpose(0, 1)?.contiguous()?.reshape((tq, n_head * hd))?;
                outs.push(o);
            }
            let att = if outs.len() == 1 { outs.pop().unwrap_or_else(|| unreachable!()) } else { Tensor::cat(&outs, 0)? };
            x = (x + layer.wo.forward(&att)?)?;

            let xn = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps)?;
            let gu = layer.gate_up.forward(&xn)?;
            let (g, u) = match gu.as_slice() {
                [g, u] => (g, u),
                _ => return Err(Error::Internal("gate/up projection".into())),
            };
            let h = (candle_nn::ops::silu(g)? * u)?;
            x = (x + layer.down.forward(&h)?)?;
        }

        // Logits for the rows that asked for them.
        let mut want: Vec<u32> = Vec::new();
        for (ci, c) in chunks.iter().enumerate() {
            let (s, n) = (starts[ci], c.tokens.len());
            match c.logits {
                Logits::None => {}
                Logits::Last => want.push((s + n - 1) as u32),
                Logits::All => want.extend((s..s + n).map(|r| r as u32)),
            }
        }
        let vocab = cfg.vocab_size;
        let logits: Vec<f32> = if want.is_empty() {
            Vec::new()
        } else {
            let rows = Tensor::from_vec(want.clone(), want.len(), dev)?;
            let sel = x.index_select(&rows, 0)?;
            let seln = candle_nn::ops::rms_norm(&sel, &self.out_norm, cfg.rms_eps)?;
            self.lm_head.forward(&seln)?.flatten_all()?.to_vec1::<f32>()?
        };
        if logits.len() != want.len() * vocab {
            return Err(Error::Internal(format!("{} logits for {} rows", logits.len(), want.len())));
        }
        let mut out = Vec::with_capacity(chunks.len());
        let mut off = 0;
        for c in chunks.iter() {
            let n = match c.logits {
                Logits::None => 0,
                Logits::Last => 1,
                Logits::All => c.tokens.len(),
            };
            out.push(ChunkLogits { rows: n, data: logits[off * vocab..(off + n) * vocab].to_vec() });
            off += n;
        }
        Ok(out)
    }
}

/// The candle device for a device string: "cuda" / "cuda:N" (needs the `cuda`
/// feature and a GPU) or "candle-cpu" (candle's CPU backend, for tests).
pub fn open_device(name: &str) -> Result<(Device, String)> {
    if name == "candle-cpu" {
        return Ok((Device::Cpu, name.to_string()));
    }
    let ordinal = match name {
        "cuda" => 0,
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::InvalidArgument(format!("unknown device {name:?}")))?,
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(format!(
            "device {name:?} asked for, but this build of loglm has no CUDA support; \
             rebuild with `maturin develop --release --features cuda` on a machine with the CUDA toolkit"
        )));
    }
    match Device::new_cuda(ordinal) {
        Ok(d) => Ok((d, format!("cuda:{ordinal}"))),
        Err(e) => Err(Error::Device(format!(
            "cannot open CUDA device {ordinal} ({name:?}): {e}; check that an NVIDIA GPU and driver are \
             present (nvidia-smi) or use device=\"cpu\""
        ))),
    }
}

#[cfg(test)]
mod tests;

//! Decoder-only transformer of the llama / qwen2 families (pre-norm RMSNorm,
//! grouped-query attention with rotary embeddings, SwiGLU MLP; qwen2 adds q/k/v
//! biases), written as our own forward pass so that sequences at different
//! positions share one batched step (see `forward.rs`). `device.rs` is the
//! same forward pass over candle tensors (CUDA), `backend.rs` what the
//! scheduler needs from either.
//!
//! Weights come from GGUF (`gguf.rs`, the llama.cpp tensor names) or a Hugging
//! Face folder of safetensors (`hf.rs`), with LoRA adapters merged in at load
//! time (`lora.rs`). They are immutable once loaded and
//! shared by every sequence; each sequence owns a preallocated [`KvCache`]
//! (the candle `llama.rs` design, with the cache passed in rather than hidden in
//! the model).
pub mod attention;
pub mod backend;
pub mod device;
pub mod forward;
pub mod gguf;
pub mod gguf_meta;
pub mod hf;
pub mod linear;
pub mod packed;
pub mod lora;
pub mod quant;

use crate::error::{Error, Result};
use linear::Linear;

/// Largest numbers a model configuration may hold: far above any model loglm
/// can run on a CPU, far below what would overflow a size computation.
pub mod limits {
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_DIM: usize = 1 << 16;
    pub const MAX_FF: usize = 1 << 18;
    pub const MAX_HEADS: usize = 1024;
    pub const MAX_HEAD_DIM: usize = 1024;
    pub const MAX_VOCAB: usize = 1 << 22;
    /// Longest context (`context_length`) a model may be loaded with.
    pub const MAX_CONTEXT: usize = 1 << 20;
    /// Largest key/value cache of one sequence (bytes).
    pub const MAX_KV_BYTES: u64 = 64 << 30;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x0, x1), (x2, x3)...: llama.cpp's "normal" rope, used by
    /// llama GGUF files whose q/k rows were permuted by the converter.
    Interleaved,
    /// Halves (x_i, x_{i+d/2}): Hugging Face `rotate_half`, qwen2 GGUF files.
    Neox,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// Context the model was trained with.
    pub train_context: usize,
    /// KV caches hold f16 (set by [`Model::new`] when the block matrices are
    /// quantized: decode attention then streams half the bytes, and the
    /// rounding is far below the weights' own; dense f32 models keep f32 caches).
    pub kv_f16: bool,
}

impl Config {
    /// Check the numbers before anything is allocated from them: zero, absurdly
    /// large (a crafted `block_count` of 2^32-1 would otherwise reach
    /// `Vec::with_capacity`), NaN or negative where that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::ModelFormat(format!("invalid model configuration: {m}")));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_head == 0 || self.n_ff == 0 {
            return bad("zero-sized dimension");
        }
        for (name, v, max) in [
            ("layer count", self.n_layer, limits::MAX_LAYERS),
            ("embedding length", self.n_embd, limits::MAX_DIM),
            ("feed-forward length", self.n_ff, limits::MAX_FF),
            ("attention head count", self.n_head, limits::MAX_HEADS),
            ("attention key/value head count", self.n_head_kv, limits::MAX_HEADS),
            ("head dimension", self.head_dim, limits::MAX_HEAD_DIM),
            ("vocabulary size", self.vocab_size, limits::MAX_VOCAB),
        ] {
            if v > max {
                return Err(Error::ModelFormat(format!(
                    "invalid model configuration: {name} {v} is larger than loglm accepts ({max})"
                )));
            }
        }
        if self.q_dim() > limits::MAX_DIM {
            return Err(Error::ModelFormat(format!(
                "invalid model configuration: attention width {} heads x {} = {} is larger than loglm accepts ({})",
                self.n_head,
                self.head_dim,
                self.q_dim(),
                limits::MAX_DIM
            )));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return Err(Error::ModelFormat(format!(
                "invalid model configuration: rms norm epsilon {} must be a finite number in (0, 1)",
                self.rms_eps
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(Error::ModelFormat(format!(
                "invalid model configuration: rope base (freq_base / rope_theta) {} must be a finite number > 1",
                self.rope_theta
            )));
        }
        if self.n_head_kv == 0 || self.n_head % self.n_head_kv != 0 {
            return bad("head_count must be a multiple of head_count_kv");
        }
        if self.head_dim % 2 != 0 || self.head_dim == 0 {
            return bad("head dimension must be even");
        }
        if self.vocab_size == 0 {
            return bad("empty vocabulary");
        }
        Ok(())
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

pub struct Weights {
    pub embed: Linear,
    pub layers: Vec<Layer>,
    pub out_norm: Vec<f32>,
    /// `None`: tied to `embed`.
    pub lm_head: Option<Linear>,
}

impl Weights {
    pub fn lm_head(&self) -> &Linear {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    fn sum_linears(&self, f: impl Fn(&Linear) -> usize) -> usize {
        let mut b = f(&self.embed) + self.lm_head.as_ref().map_or(0, &f);
        for l in &self.layers {
            for lin in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                b += f(lin);
            }
        }
        b
    }

    /// Bytes of the matrices as stored (quantized or dense).
    pub fn bytes(&self) -> usize {
        self.sum_linears(Linear::weight_bytes)
    }

    /// Whether any matrix of the blocks is stored quantized.
    pub fn quantized(&self) -> bool {
        self.layers.iter().any(|l| {
            [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().any(|lin| lin.kind() != "f32")
        })
    }

    /// Number of matrix weights.
    pub fn params(&self) -> usize {
        self.sum_linears(|l| l.out_dim * l.in_dim)
    }

    /// Turn off dequantized prefill copies when they would not fit comfortably.
    pub fn set_allow_dense(&mut self, allow: bool) {
        self.embed.allow_dense = allow;
        if let Some(l) = self.lm_head.as_mut() {
            l.allow_dense = allow;
        }
        for l in &mut self.layers {
            for lin in [
                &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down,
            ] {
                lin.allow_dense = allow;
            }
        }
    }

    /// Check every tensor has the shape the configuration implies.
    pub fn validate(&self, cfg: &Config) -> Result<()> {
        let check = |name: &str, lin: &Linear, out: usize, inp: usize| -> Result<()> {
            if lin.out_dim != out || lin.in_dim != inp {
                return Err(Error::ModelFormat(format!(
                    "tensor {name} has shape [{}, {}], expected [{out}, {inp}]",
                    lin.out_dim, lin.in_dim
                )));
            }
            Ok(())
        };
        check("token embeddings", &self.embed, cfg.vocab_size, cfg.n_embd)?;
        if let Some(h) = &self.lm_head {
            check("output", h, cfg.vocab_size, cfg.n_embd)?;
        }
        if self.layers.len() != cfg.n_layer {
            return Err(Error::ModelFormat(format!(
                "model has {} layers, configuration says {}",
                self.layers.len(),
                cfg.n_layer
            )));
        }
        let vec_len = |name: &str, v: &[f32], n: usize| -> Result<()> {
            if v.len() != n {
                return Err(Error::ModelFormat(format!("tensor {name} has {} values, expected {n}", v.len())));
            }
            Ok(())
        };
        vec_len("output_norm", &self.out_norm, cfg.n_embd)?;
        for (i, l) in self.layers.iter().enumerate() {
            let p = |s: &str| format!("layer {i} {s}");
            check(&p("attn_q"), &l.wq, cfg.q_dim(), cfg.n_embd)?;
            check(&p("attn_k"), &l.wk, cfg.kv_dim(), cfg.n_embd)?;
            check(&p("attn_v"), &l.wv, cfg.kv_dim(), cfg.n_embd)?;
            check(&p("attn_output"), &l.wo, cfg.n_embd, cfg.q_dim())?;
            check(&p("ffn_gate"), &l.w_gate, cfg.n_ff, cfg.n_embd)?;
            check(&p("ffn_up"), &l.w_up, cfg.n_ff, cfg.n_embd)?;
            check(&p("ffn_down"), &l.w_down, cfg.n_embd, cfg.n_ff)?;
            vec_len(&p("attn_norm"), &l.attn_norm, cfg.n_embd)?;
            vec_len(&p("ffn_norm"), &l.ffn_norm, cfg.n_embd)?;
            if let Some(b) = &l.bq {
                vec_len(&p("attn_q.bias"), b, cfg.q_dim())?;
            }
            if let Some(b) = &l.bk {
                vec_len(&p("attn_k.bias"), b, cfg.kv_dim())?;
            }
            if let Some(b) = &l.bv {
                vec_len(&p("attn_v.bias"), b, cfg.kv_dim())?;
            }
        }
        Ok(())
    }
}

/// Per-sequence key/value cache, preallocated for `capacity` positions.
/// Layout per layer: `[n_head_kv][capacity][head_dim]`, so that one head's keys
/// are contiguous for the attention dot products. Elements are f16 or f32
/// ([`Config::kv_f16`]).
#[derive(Clone)]
pub struct KvCache {
    pub k: Vec<KvData>,
    pub v: Vec<KvData>,
    pub capacity: usize,
    pub len: usize,
}

/// The keys (or values) of one layer.
#[derive(Clone)]
pub enum KvData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl KvData {
    fn zeros(n: usize, f16: bool) -> Self {
        if f16 {
            KvData::F16(vec![half::f16::ZERO; n])
        } else {
            KvData::F32(vec![0f32; n])
        }
    }

    /// Store `src` at element `at`.
    pub fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvData::F32(d) => d[at..at + src.len()].copy_from_slice(src),
            KvData::F16(d) => {
                use half::slice::HalfFloatSliceExt;
                d[at..at + src.len()].convert_from_f32_slice(src)
            }
        }
    }

    /// Elements `range` as f32, borrowed when stored so, else converted into `buf`.
    pub fn f32_range<'a>(&'a self, range: std::ops::Range<usize>, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            KvData::F32(d) => &d[range],
            KvData::F16(d) => {
                use half::slice::HalfFloatSliceExt;
                buf.resize(range.len(), 0.0);
                d[range].convert_to_f32_slice(buf);
                buf
            }
        }
    }

    /// Elements `range`, as stored (for decode attention).
    pub fn rows(&self, range: std::ops::Range<usize>) -> attention::KvRows<'_> {
        match self {
            KvData::F32(d) => attention::KvRows::F32(&d[range]),
            KvData::F16(d) => attention::KvRows::F16(&d[range]),
        }
    }

    fn copy_range(&mut self, dst: usize, src: &KvData, from: usize, n: usize) {
        match (self, src) {
            (KvData::F32(a), KvData::F32(b)) => a[dst..dst + n].copy_from_slice(&b[from..from + n]),
            (KvData::F16(a), KvData::F16(b)) => a[dst..dst + n].copy_from_slice(&b[from..from + n]),
            _ => unreachable!("caches of one model share their element type"),
        }
    }
}

impl KvCache {
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        let per_layer = cfg.n_head_kv * capacity * cfg.head_dim;
        KvCache {
            k: (0..cfg.n_layer).map(|_| KvData::zeros(per_layer, cfg.kv_f16)).collect(),
            v: (0..cfg.n_layer).map(|_| KvData::zeros(per_layer, cfg.kv_f16)).collect(),
            capacity,
            len: 0,
        }
    }

    /// Copy of the first `len` positions into a cache of another capacity.
    pub fn fork(&self, cfg: &Config, capacity: usize) -> Self {
        let mut out = KvCache::new(cfg, capacity.max(self.len));
        let hd = cfg.head_dim;
        for l in 0..cfg.n_layer {
            for h in 0..cfg.n_head_kv {
                let src = h * self.capacity * hd;
                let dst = h * out.capacity * hd;
                let n = self.len * hd;
                out.k[l].copy_range(dst, &self.k[l], src, n);
                out.v[l].copy_range(dst, &self.v[l], src, n);
            }
        }
        out.len = self.len;
        out
    }
}

/// Precomputed rotary tables: `cos/sin[pos * half + i]`.
pub struct Rope {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, max_pos: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = vec![0f32; max_pos * half];
        let mut sin = vec![0f32; max_pos * half];
        for i in 0..half {
            let freq = 1.0f64 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
            for p in 0..max_pos {
                let a = p as f64 * freq;
                cos[p * half + i] = a.cos() as f32;
                sin[p * half + i] = a.sin() as f32;
            }
        }
        Rope { half, cos, sin }
    }
}

/// A loaded model: configuration, weights, rotary tables and its thread pool.
pub struct Model {
    pub cfg: Config,
    pub weights: Weights,
    pub rope: Rope,
    /// Context length sequences may use (<= what the rope tables cover).
    pub context_length: usize,
    pub pool: rayon::ThreadPool,
    pub threads: usize,
}

impl Model {
    pub fn new(mut cfg: Config, weights: Weights, context_length: Option<usize>, threads: Option<usize>) -> Result<Self> {
        cfg.validate()?;
        cfg.kv_f16 = weights.quantized();
        weights.validate(&cfg)?;
        let ctx = context_length.unwrap_or(cfg.train_context.min(8192)).max(1);
        if ctx > limits::MAX_CONTEXT {
            return Err(Error::InvalidArgument(format!(
                "context_length {ctx} is too large (allowed: 1 to {})",
                limits::MAX_CONTEXT
            )));
        }
        // One sequence's KV cache, allocated at its first step: refuse sizes no
        // machine has before an allocation failure aborts the process.
        let elem = if cfg.kv_f16 { 2 } else { 4 };
        let kv_bytes = (cfg.n_layer as u128) * 2 * (cfg.kv_dim() as u128) * (ctx as u128) * elem;
        if kv_bytes > limits::MAX_KV_BYTES as u128 {
            return Err(Error::InvalidArgument(format!(
                "the key/value cache of one sequence would take {:.1} GiB at context_length {ctx} \
                 (at most {} GiB); load the model with a smaller context_length",
                kv_bytes as f64 / (1u64 << 30) as f64,
                limits::MAX_KV_BYTES >> 30
            )));
        }
        let threads = match threads {
            Some(0) => return Err(Error::InvalidArgument("threads must be >= 1".into())),
            Some(t) => t,
            None => default_threads(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("loglm-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start thread pool: {e}")))?;
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, ctx);
        Ok(Model { cfg, weights, rope, context_length: ctx, pool, threads })
    }
}

/// Whether every value is finite (no NaN, no infinity). Branch-free so that it
/// vectorizes: `x * 0` is NaN exactly when `x` is not finite.
pub fn all_finite(v: &[f32]) -> bool {
    let mut acc = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * 0.0;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| x * 0.0).sum();
    acc.iter().sum::<f32>() + tail == 0.0
}

/// Refuse logits holding NaN or infinity: a broken model (NaN weights, a
/// configuration that slipped past [`Config::validate`]) must raise, not
/// answer. A scan of the returned rows only, so a few microseconds a step.
/// [`Model::forward_path`] and `DeviceModel::forward` call it on what they return.
pub fn check_logits(out: &[forward::ChunkLogits]) -> Result<()> {
    if out.iter().all(|c| all_finite(&c.data)) {
        Ok(())
    } else {
        Err(Error::NonFinite(
            "the model produced NaN or infinite logits: its weights or configuration are broken".into(),
        ))
    }
}

/// Threads to use when the caller does not say: `LOGLM_NUM_THREADS`, then
/// `RAYON_NUM_THREADS`, then the number of available cores.
pub fn default_threads() -> usize {
    for var in ["LOGLM_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if let Some(n) = std::env::var(var).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            if n > 0 {
                return n;
            }
        }
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod hostile_tests;

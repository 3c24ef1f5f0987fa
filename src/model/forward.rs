//! One forward step over a batch of sequence chunks.
//!
//! A chunk is some new tokens of one sequence together with that sequence's KV
//! cache: a whole prompt (prefill), a single token (decode), or a few tokens
//! to score. The tokens of all chunks are stacked into one matrix, so every
//! linear layer runs once per step for the whole batch; only attention is done
//! per chunk, against that chunk's own cache and positions. This is what lets
//! sequences at different positions share a decode step, and new sequences
//! join between steps (TGI / mistral.rs style continuous batching).
use rayon::prelude::*;

use super::linear::{forward_many, gemm_strided, Path, GEMM_MIN_ROWS};
use super::attention;
use super::{KvCache, KvData, Model, RopeStyle};
use crate::error::{Error, Result};

/// Token rows per parallel task in the cheap per-row steps (embedding look-up,
/// norms, rotary embeddings): a decode batch runs them on one thread, where
/// handing them to the pool would cost more than the work.
const ROWS_PER_TASK: usize = 16;
/// Values per parallel task in element-wise steps (residual adds, SwiGLU).
const ELEMS_PER_TASK: usize = 8192;

/// Which logits a chunk wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    /// The last token's row (generation).
    Last,
    /// One row per token (choice scoring).
    All,
}

/// `C` is the sequence's KV cache: [`KvCache`] here, `DeviceCache` on the device path.
pub struct Chunk<'a, C = KvCache> {
    pub cache: &'a mut C,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Rows-by-vocab logits of one chunk.
pub struct ChunkLogits {
    pub rows: usize,
    pub data: Vec<f32>,
}

impl Model {
    /// Run the chunks through the model, append their keys/values to their
    /// caches and return the logits each asked for.
    /// The linear layers take [`Path::Auto`]: meant for steps of one sequence.
    pub fn forward(&self, chunks: &mut [Chunk<'_>]) -> Result<Vec<ChunkLogits>> {
        self.forward_path(chunks, Path::Auto)
    }

    /// [`Model::forward`] with the linear layers (logits included) on `path`:
    /// - [`Path::Dense`]: computed as a prefill is, however few the tokens (dense
    ///   weights and matrix-product attention instead of the decode kernels); a
    ///   short chunk that continues a prompt then gets the numbers one long
    ///   prefill would (up to float summation order) rather than those of
    ///   quantized activations, whatever the other chunks of the step;
    /// - [`Path::Rows`]: the decode kernels for every row, however many chunks
    ///   share the step (batched decode).
    pub fn forward_path(&self, chunks: &mut [Chunk<'_>], path: Path) -> Result<Vec<ChunkLogits>> {
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
        let out = self.pool.install(|| self.forward_inner(chunks, path))?;
        super::check_logits(&out)?;
        Ok(out)
    }

    fn forward_inner(&self, chunks: &mut [Chunk<'_>], path: Path) -> Result<Vec<ChunkLogits>> {
        let cfg = &self.cfg;
        let w = &self.weights;
        let d = cfg.n_embd;
        let hd = cfg.head_dim;
        let qd = cfg.q_dim();
        let kvd = cfg.kv_dim();
        // Token rows: (chunk index, index within chunk, absolute position).
        let mut rows: Vec<(usize, usize, usize)> = Vec::new();
        for (ci, c) in chunks.iter().enumerate() {
            for i in 0..c.tokens.len() {
                rows.push((ci, i, c.cache.len + i));
            }
        }
        let t = rows.len();
        let mut x = vec![0f32; t * d];
        x.par_chunks_mut(d).zip(rows.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(xr, &(ci, i, _))| {
            w.embed.row_f32(chunks[ci].tokens[i] as usize, xr);
        });
        let chunk_starts: Vec<usize> = {
            let mut s = Vec::with_capacity(chunks.len());
            let mut acc = 0;
            for c in chunks.iter() {
                s.push(acc);
                acc += c.tokens.len();
            }
            s
        };

        let mut xn = vec![0f32; t * d];
        let mut q = vec![0f32; t * qd];
        let mut k = vec![0f32; t * kvd];
        let mut v = vec![0f32; t * kvd];
        let mut att = vec![0f32; t * qd];
        let mut o = vec![0f32; t * d];
        let mut g = vec![0f32; t * cfg.n_ff];
        let mut u = vec![0f32; t * cfg.n_ff];

        for (li, layer) in w.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, cfg.rms_eps, d, &mut xn);
            forward_many(&[&layer.wq, &layer.wk, &layer.wv], &xn, t, &mut [&mut q, &mut k, &mut v], path);
            add_bias(&mut q, layer.bq.as_deref(), qd);
            add_bias(&mut k, layer.bk.as_deref(), kvd);
            add_bias(&mut v, layer.bv.as_deref(), kvd);
            // Rotary embeddings on q and k at each token's position.
            let rope = &self.rope;
            let style = cfg.rope_style;
            q.par_chunks_mut(qd).zip(rows.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(qr, &(_, _, pos))| {
                for h in qr.chunks_mut(hd) {
                    apply_rope(h, pos, rope, style);
                }
            });
            k.par_chunks_mut(kvd).zip(rows.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(kr, &(_, _, pos))| {
                for h in kr.chunks_mut(hd) {
                    apply_rope(h, pos, rope, style);
                }
            });
            // Append keys and values to each chunk's cache.
            for (r, &(ci, _, pos)) in rows.iter().enumerate() {
                let cache = &mut *chunks[ci].cache;
                let cap = cache.capacity;
                for h in 0..cfg.n_head_kv {
                    let dst = (h * cap + pos) * hd;
                    let src = r * kvd + h * hd;
                    cache.k[li].write(dst, &k[src..src + hd]);
                    cache.v[li].write(dst, &v[src..src + hd]);
                }
            }
            // Attention, chunk by chunk.
            let chunks_ro: &[Chunk<'_>] = chunks;
            let small: Vec<bool> = chunks_ro.iter().map(|c| c.tokens.len() < GEMM_MIN_ROWS && path != Path::Dense).collect();
            // Small chunks (decode): one task per (token, kv head), serving all the
            // query heads that share that kv head, so each cached key and value row
            // is read once per group instead of once per query head.
            let group = cfg.n_head / cfg.n_head_kv;
            att.par_chunks_mut(group * hd).enumerate().for_each(|(idx, out)| {
                let r = idx / cfg.n_head_kv;
                let kvh = idx % cfg.n_head_kv;
                let (ci, _, pos) = rows[r];
                if !small[ci] {
                    return;
                }
                let cache = &*chunks_ro[ci].cache;
                let qg = &q[r * qd + kvh * group * hd..r * qd + (kvh + 1) * group * hd];
                let base = kvh * cache.capacity * hd;
                let n = pos + 1;
                let range = base..base + n * hd;
                attention::attend_group(qg, cache.k[li].rows(range.clone()), cache.v[li].rows(range), n, hd, out);
            });
            // Large chunks (prefill): matrix products per head.
            for (ci, c) in chunks_ro.iter().enumerate() {
                if small[ci] {
                    continue;
                }
                attend_chunk(
                    &q,
                    &mut att,
                    c,
                    li,
                    chunk_starts[ci],
                    cfg.n_head,
                    cfg.n_head_kv,
                    hd,
                );
            }
            forward_many(&[&layer.wo], &att, t, &mut [&mut o], path);
            add_in_place(&mut x, &o);

            rms_norm(&x, &layer.ffn_norm, cfg.rms_eps, d, &mut xn);
            forward_many(&[&layer.w_gate, &layer.w_up], &xn, t, &mut [&mut g, &mut u], path);
            g.par_chunks_mut(ELEMS_PER_TASK).zip(u.par_chunks(ELEMS_PER_TASK)).for_each(|(gc, uc)| attention::silu_mul(gc, uc));
            forward_many(&[&layer.w_down], &g, t, &mut [&mut o], path);
            add_in_place(&mut x, &o);
        }
        for c in chunks.iter_mut() {
            c.cache.len += c.tokens.len();
        }

        // Logits for the rows that asked for them.
        let mut want: Vec<usize> = Vec::new();
        for (ci, c) in chunks.iter().enumerate() {
            match c.logits {
                Logits::None => {}
                Logits::Last => want.push(chunk_starts[ci] + c.tokens.len() - 1),
                Logits::All => want.extend(chunk_starts[ci]..chunk_starts[ci] + c.tokens.len()),
            }
        }
        let mut sel = vec![0f32; want.len() * d];
        for (i, &r) in want.iter().enumerate() {
            sel[i * d..(i + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
        }
        let mut seln = vec![0f32; sel.len()];
        rms_norm(&sel, &w.out_norm, cfg.rms_eps, d, &mut seln);
        let vocab = cfg.vocab_size;
        let mut logits = vec![0f32; want.len() * vocab];
        // The output layer follows the step's other layers: a prefill step that ran
        // them as GEMMs gets its last-token logits from the dense weights too.
        let head_path = match path {
            Path::Auto if t >= GEMM_MIN_ROWS => Path::Dense,
            p => p,
        };
        w.lm_head().forward_path(&seln, want.len(), &mut logits, head_path);
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

fn rms_norm(x: &[f32], w: &[f32], eps: f32, d: usize, out: &mut [f32]) {
    out.par_chunks_mut(d).zip(x.par_chunks(d)).with_min_len(ROWS_PER_TASK).for_each(|(o, xr)| {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ss + eps).sqrt();
        for ((oi, xi), wi) in o.iter_mut().zip(xr).zip(w) {
            *oi = xi * scale * wi;
        }
    });
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>, n: usize) {
    if let Some(b) = b {
        for r in x.chunks_mut(n) {
            for (xi, bi) in r.iter_mut().zip(b) {
                *xi += bi;
            }
        }
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(ELEMS_PER_TASK).zip(y.par_chunks(ELEMS_PER_TASK)).for_each(|(a, b)| {
        for (ai, bi) in a.iter_mut().zip(b) {
            *ai += bi;
        }
    });
}

fn apply_rope(h: &mut [f32], pos: usize, rope: &super::Rope, style: RopeStyle) {
    let half = rope.half;
    let cos = &rope.cos[pos * half..(pos + 1) * half];
    let sin = &rope.sin[pos * half..(pos + 1) * half];
    match style {
        RopeStyle::Interleaved => {
            for i in 0..half {
                let (a, b) = (h[2 * i], h[2 * i + 1]);
                h[2 * i] = a * cos[i] - b * sin[i];
                h[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
        RopeStyle::Neox => {
            for i in 0..half {
                let (a, b) = (h[i], h[i + half]);
                h[i] = a * cos[i] - b * sin[i];
                h[i + half] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/// Causal attention for all tokens of a long chunk, with matrix products:
/// per query head, `S = Q K^T` over the cache, masked, softmaxed, then `S V`.
#[allow(clippy::too_many_arguments)]
fn attend_chunk(
    q: &[f32],
    att: &mut [f32],
    c: &Chunk<'_>,
    layer: usize,
    row0: usize,
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
) {
    let tq = c.tokens.len();
    let start = c.cache.len; // cache.len is updated after all layers
    let n = start + tq;
    let qd = n_head * hd;
    let cap = c.cache.capacity;
    let scale = 1.0 / (hd as f32).sqrt();
    let group = n_head / n_head_kv;
    let mut s = vec![0f32; tq * n];
    let (mut kb, mut vb) = (Vec::new(), Vec::new());
    for h in 0..n_head {
        let kvh = h / group;
        let base = kvh * cap * hd;
        // (An f16 cache is converted once per kv head: the heads of a group follow each other.)
        if h % group == 0 || matches!(c.cache.k[layer], KvData::F32(_)) {
            kb.clear();
            vb.clear();
        }
        let keys = if kb.is_empty() { c.cache.k[layer].f32_range(base..base + n * hd, &mut kb) } else { &kb[..] };
        let vals = if vb.is_empty() { c.cache.v[layer].f32_range(base..base + n * hd, &mut vb) } else { &vb[..] };
        let qh = &q[row0 * qd + h * hd..];
        // S[tq, n] = Q_h[tq, hd] * K^T[hd, n]
        gemm_strided(tq, n, hd, &mut s, n, qh, qd, 1, keys, 1, hd);
        s.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let valid = start + i + 1;
            for v in row[..valid].iter_mut() {
                *v *= scale;
            }
            attention::softmax(&mut row[..valid]);
            row[valid..].fill(0.0);
        });
        // O_h[tq, hd] = S[tq, n] * V[n, hd], written into att at this head's columns.
        let out = &mut att[row0 * qd + h * hd..];
        gemm_strided(tq, hd, n, out, qd, &s, n, 1, vals, hd, 1);
    }
}

//! Linear layers of the CPU engine: `y = x W^T` for a weight `W` of shape
//! `[out, in]` kept quantized (Q4_1, Q8_0) or dense (f32).
//!
//! Two paths, picked per forward step by its [`Path`]: the step's caller, not the
//! number of rows that happen to share the step, decides, so a sequence gets
//! bit-identical results whether it runs alone or in a batch:
//! - dot products (decode, [`Path::Rows`]; [`Path::Auto`] below `GEMM_MIN_ROWS`
//!   rows): activations are quantized per row to Q8_1 and
//!   each output is an integer dot product with a weight row (llama.cpp's
//!   scheme). Matrices whose output count is a multiple of 8 are kept with the
//!   blocks of 8 columns interleaved (`packed.rs`): one block is unpacked once
//!   for up to 4 rows and its 8 outputs come out of one vector, so batched
//!   decode reads the weights once per step and does little work per row.
//! - GEMM (prefill of one sequence, [`Path::Auto`] from `GEMM_MIN_ROWS` rows;
//!   choice scoring, [`Path::Dense`]): weights are dequantized once to f32
//!   (lazily, cached) and multiplied with the `gemm` crate, which is
//!   compute-bound and much faster than dot products for many rows. Products
//!   small enough for the crate's other kernels are padded (see [`gemm_xwt`])
//!   so that a row's value is the one it gets among many rows.
use std::sync::OnceLock;

use rayon::prelude::*;

use super::packed::{self, PackQ4_1x8, PackQ8_0x8};
use super::quant::{self, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};

/// Rows from which [`Path::Auto`] takes the dense GEMM path.
pub const GEMM_MIN_ROWS: usize = 16;

/// How the linear layers of one forward step are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// GEMM from [`GEMM_MIN_ROWS`] rows, dot products below: for steps of one
    /// sequence (prefill), whose numbers then depend on that sequence alone.
    Auto,
    /// GEMM whatever the row count (choice scoring: the numbers of a long prefill).
    Dense,
    /// Per-row dot products whatever the row count (decode steps of many
    /// sequences: each row's result is independent of the others in the step).
    Rows,
}
/// Output columns per parallel task on the dot-product path for one row, and the
/// least for several (see [`batch_task_cols`]); a multiple of 16: tasks never
/// split a pair of packed column groups.
const COLS_PER_TASK: usize = 32;
const _: () = assert!(COLS_PER_TASK % (2 * packed::COLS) == 0);

pub enum Weight {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    F32(Vec<f32>),
    /// Q4_1 with 8 columns interleaved (made by [`Linear::new`] when `out_dim % 8 == 0`).
    Q4_1x8(Vec<PackQ4_1x8>),
    /// Q8_0 with 8 columns interleaved.
    Q8_0x8(Vec<PackQ8_0x8>),
}

impl Weight {
    /// Number of weight values held.
    pub fn values(&self) -> usize {
        match self {
            Weight::Q4_1(b) => b.len() * QK,
            Weight::Q8_0(b) => b.len() * QK,
            Weight::Q4_1x8(b) => b.len() * packed::COLS * QK,
            Weight::Q8_0x8(b) => b.len() * packed::COLS * QK,
            Weight::F32(v) => v.len(),
        }
    }
}

pub struct Linear {
    pub out_dim: usize,
    pub in_dim: usize,
    pub weight: Weight,
    /// Dense copy for the GEMM path, built on first use.
    dense: OnceLock<Vec<f32>>,
    /// Whether the GEMM path may dequantize (off for very large models).
    pub allow_dense: bool,
}

impl Linear {
    /// A layer over `weight` (`[out_dim, in_dim]`, row-major blocks); quantized
    /// weights with `out_dim % 8 == 0` are re-laid out for the decode kernels.
    pub fn new(out_dim: usize, in_dim: usize, weight: Weight) -> Self {
        let bpr = in_dim / QK;
        let weight = match weight {
            Weight::Q4_1(b) if out_dim % packed::COLS == 0 && b.len() == out_dim * bpr => {
                Weight::Q4_1x8(packed::pack_q4_1(&b, out_dim, bpr))
            }
            Weight::Q8_0(b) if out_dim % packed::COLS == 0 && b.len() == out_dim * bpr => {
                Weight::Q8_0x8(packed::pack_q8_0(&b, out_dim, bpr))
            }
            w => w,
        };
        Linear { out_dim, in_dim, weight, dense: OnceLock::new(), allow_dense: true }
    }

    pub fn kind(&self) -> &'static str {
        match self.weight {
            Weight::Q4_1(_) | Weight::Q4_1x8(_) => "q4_1",
            Weight::Q8_0(_) | Weight::Q8_0x8(_) => "q8_0",
            Weight::F32(_) => "f32",
        }
    }

    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            Weight::Q4_1(b) => std::mem::size_of_val(&b[..]),
            Weight::Q8_0(b) => std::mem::size_of_val(&b[..]),
            Weight::Q4_1x8(b) => std::mem::size_of_val(&b[..]),
            Weight::Q8_0x8(b) => std::mem::size_of_val(&b[..]),
            Weight::F32(v) => v.len() * 4,
        }
    }

    /// Row `r` of the weight as f32 (used for embedding look-ups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let bpr = self.in_dim / QK;
        match &self.weight {
            Weight::Q4_1(b) => quant::dequantize_q4_1(&b[r * bpr..(r + 1) * bpr], out),
            Weight::Q8_0(b) => quant::dequantize_q8_0(&b[r * bpr..(r + 1) * bpr], out),
            Weight::Q4_1x8(b) => packed::dequantize_row_q4_1x8(b, bpr, r, out),
            Weight::Q8_0x8(b) => packed::dequantize_row_q8_0x8(b, bpr, r, out),
            Weight::F32(v) => out.copy_from_slice(&v[r * self.in_dim..(r + 1) * self.in_dim]),
        }
    }

    fn dense(&self) -> &[f32] {
        if let Weight::F32(v) = &self.weight {
            return v;
        }
        if let Some(d) = self.dense.get() {
            return d;
        }
        // Built outside the cell's initialiser: a rayon job inside `get_or_init` deadlocks
        // when a worker that stole part of it picks up another forward pass on the same
        // pool and blocks on the same cell (two requests' first GEMM on one model, seen in
        // the engine-loop tests). Concurrent first users may each build a copy; one is kept.
        let mut out = vec![0f32; self.out_dim * self.in_dim];
        out.par_chunks_mut(self.in_dim).enumerate().for_each(|(r, o)| self.row_f32(r, o));
        self.dense.get_or_init(move || out)
    }

    /// `out[m, out_dim] = x[m, in_dim] W^T`. Runs on the current rayon pool.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.forward_path(x, m, out, Path::Auto);
    }

    /// [`Linear::forward`] on the given [`Path`].
    pub fn forward_path(&self, x: &[f32], m: usize, out: &mut [f32], path: Path) {
        forward_many(&[self], x, m, &mut [out], path);
    }

    fn uses_gemm(&self, m: usize, path: Path) -> bool {
        let gemm = match path {
            Path::Auto => m >= GEMM_MIN_ROWS,
            Path::Dense => true,
            Path::Rows => false,
        };
        gemm && (self.allow_dense || matches!(self.weight, Weight::F32(_)))
    }

    /// Outputs of columns `j0..j0 + n` for all `m` rows, row-major (`out[r * n + c]`).
    /// For packed weights `j0` and `n` are multiples of 8.
    fn col_dots(&self, j0: usize, n: usize, x: &[f32], xq: &[BlockQ8_1], m: usize, out: &mut [f32]) {
        let k = self.in_dim;
        let bpr = k / QK;
        match &self.weight {
            Weight::F32(w) => {
                for c in 0..n {
                    let j = j0 + c;
                    for r in 0..m {
                        out[r * n + c] = quant::dot_f32(&w[j * k..(j + 1) * k], &x[r * k..(r + 1) * k]);
                    }
                }
            }
            Weight::Q4_1(w) => quant_col_dots(w, bpr, j0, n, xq, m, out, quant::dot_q4_1_q8_1, quant::dot4_q4_1_q8_1),
            Weight::Q8_0(w) => quant_col_dots(w, bpr, j0, n, xq, m, out, quant::dot_q8_0_q8_1, quant::dot4_q8_0_q8_1),
            Weight::Q4_1x8(w) => packed_col_dots(w, bpr, j0, n, xq, m, out),
            Weight::Q8_0x8(w) => packed_col_dots(w, bpr, j0, n, xq, m, out),
        }
    }
}

/// Packed columns `j0..j0 + n` (multiples of 8): a pair of column groups at a time
/// (their blocks are interleaved, see [`packed::block_index`]), an odd last group alone.
fn packed_col_dots<P: packed::Packed>(w: &[P], bpr: usize, j0: usize, n: usize, xq: &[BlockQ8_1], m: usize, out: &mut [f32]) {
    debug_assert!(j0 % packed::COLS == 0 && n % packed::COLS == 0);
    let groups = w.len() / bpr.max(1);
    let mut c = 0;
    while c < n {
        let g = (j0 + c) / packed::COLS;
        if g < groups & !1 {
            // Tasks start on pair boundaries (COLS_PER_TASK is a multiple of 16).
            debug_assert!(g % 2 == 0 && c + 2 * packed::COLS <= n);
            packed::group_pair_rows(&w[g * bpr..(g + 2) * bpr], xq, bpr, m, &mut out[c..], n);
            c += 2 * packed::COLS;
        } else {
            let (wg, step) = packed::group_blocks(w, g, groups, bpr);
            packed::group_rows(wg, step, xq, bpr, m, &mut out[c..], n);
            c += packed::COLS;
        }
    }
}

/// Quantized columns `j0..j0 + n` (row-major output): four at a time with the four-row kernel,
/// chosen by column index alone, so a column's value never depends on `m` or
/// on how the columns were split into tasks.
#[allow(clippy::too_many_arguments)]
fn quant_col_dots<B>(
    w: &[B],
    bpr: usize,
    j0: usize,
    n: usize,
    xq: &[BlockQ8_1],
    m: usize,
    out: &mut [f32],
    dot1: fn(&[B], &[BlockQ8_1]) -> f32,
    dot4: fn([&[B]; 4], &[BlockQ8_1]) -> [f32; 4],
) {
    let row = |j: usize| &w[j * bpr..(j + 1) * bpr];
    let mut c = 0;
    while c < n {
        let j = j0 + c;
        if j % 4 == 0 && c + 4 <= n {
            let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
            for r in 0..m {
                let v = dot4(rows, &xq[r * bpr..(r + 1) * bpr]);
                out[r * n + c..r * n + c + 4].copy_from_slice(&v);
            }
            c += 4;
        } else {
            for r in 0..m {
                out[r * n + c] = dot1(row(j), &xq[r * bpr..(r + 1) * bpr]);
            }
            c += 1;
        }
    }
}

/// Several linear layers over the same input (q/k/v, gate/up): the input is
/// quantized once and all their columns share one parallel region.
/// `path` picks GEMM or dot products (see [`Path`]).
pub fn forward_many(layers: &[&Linear], x: &[f32], m: usize, outs: &mut [&mut [f32]], path: Path) {
    if m == 0 || layers.is_empty() {
        return;
    }
    let k = layers[0].in_dim;
    debug_assert!(layers.iter().all(|l| l.in_dim == k));
    debug_assert_eq!(x.len(), m * k);
    let mut dot_layers: Vec<usize> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        debug_assert_eq!(outs[i].len(), m * l.out_dim);
        if l.uses_gemm(m, path) {
            gemm_xwt(x, l.dense(), m, k, l.out_dim, outs[i]);
        } else {
            dot_layers.push(i);
        }
    }
    if dot_layers.is_empty() {
        return;
    }
    let needs_q = dot_layers.iter().any(|&i| !matches!(layers[i].weight, Weight::F32(_)));
    let xq = if needs_q { quantize_rows(x, m, k) } else { Vec::new() };
    if m == 1 {
        // One row (single-sequence decode): each task's columns are a contiguous
        // piece of the output, written in place.
        let mut pieces: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (i, out) in outs.iter_mut().enumerate() {
            if dot_layers.contains(&i) {
                pieces.extend(out.chunks_mut(COLS_PER_TASK).enumerate().map(|(t, o)| (i, t * COLS_PER_TASK, o)));
            }
        }
        pieces.into_par_iter().for_each(|(i, j0, o)| layers[i].col_dots(j0, o.len(), x, &xq, 1, o));
        return;
    }
    let per = batch_task_cols(dot_layers.iter().map(|&i| layers[i].out_dim).sum(), threads());
    let tasks: Vec<(usize, usize, usize)> = dot_layers
        .iter()
        .flat_map(|&i| {
            let n = layers[i].out_dim;
            (0..n).step_by(per).map(move |j| (i, j, per.min(n - j)))
        })
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(i, j0, n)| {
            let mut buf = vec![0f32; n * m];
            layers[i].col_dots(j0, n, x, &xq, m, &mut buf);
            buf
        })
        .collect();
    for (&(i, j0, n), buf) in tasks.iter().zip(&results) {
        let out = &mut *outs[i];
        let width = layers[i].out_dim;
        for r in 0..m {
            out[r * width + j0..r * width + j0 + n].copy_from_slice(&buf[r * n..(r + 1) * n]);
        }
    }
}

/// Output columns per task when several rows share a step: about eight tasks per
/// thread over all the layers of the call (enough to balance the threads), in
/// whole pairs of packed column groups, from [`COLS_PER_TASK`] to 256.
fn batch_task_cols(total_cols: usize, threads: usize) -> usize {
    let pair = 2 * packed::COLS;
    (total_cols / (8 * threads.max(1))).div_ceil(pair).clamp(COLS_PER_TASK / pair, 256 / pair) * pair
}

fn quantize_rows(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8_1> {
    let bpr = k / QK;
    let mut xq = vec![BlockQ8_1::ZERO; m * bpr];
    for r in 0..m {
        quant::quantize_row_q8_1(&x[r * k..(r + 1) * k], &mut xq[r * bpr..(r + 1) * bpr]);
    }
    xq
}

/// Number of threads of the rayon pool we are running on.
fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `out[m, n] = x[m, k] * w[n, k]^T` with the `gemm` crate.
///
/// The crate sends products of at most [`GEMM_SMALL`] outputs (and single rows)
/// to kernels that sum in another order than its blocked matrix kernels; such
/// small products are padded with copies of the first row until they leave
/// that range, so that every row's result is the same whatever `m` is
/// (`gemm_rows_do_not_depend_on_the_row_count` in the model tests).
pub fn gemm_xwt(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    let rows = padded_rows(m, n);
    if rows > m {
        let mut xp = Vec::with_capacity(rows * k);
        xp.extend_from_slice(&x[..m * k]);
        for _ in m..rows {
            xp.extend_from_slice(&x[..k]);
        }
        let mut op = vec![0f32; rows * n];
        gemm_strided(rows, n, k, &mut op, n, &xp, k, 1, w, 1, k);
        out[..m * n].copy_from_slice(&op[..m * n]);
        return;
    }
    // W^T viewed in place: element (kk, j) of W^T is w[j * k + kk].
    gemm_strided(m, n, k, out, n, x, k, 1, w, 1, k);
}

/// Largest output count (`m * n`) that `gemm` 0.19 computes with its small
/// "horizontal" kernels (dot products with a horizontal sum at the end).
const GEMM_SMALL: usize = 16 * 16;

/// Rows to multiply so that `m` rows of `n` outputs take the blocked kernels.
fn padded_rows(m: usize, n: usize) -> usize {
    if n <= 1 || m == 0 {
        return m;
    }
    m.max(2).max(GEMM_SMALL / n + 1)
}

/// `out[m, n] = a[m, k] * b[k, n]` for arbitrary row strides (attention).
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    assert!(m == 0 || n == 0 || out.len() >= (m - 1) * out_rs + n);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: bounds checked above for the given strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_rs as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par(m * n * k),
        )
    }
}

fn par(work: usize) -> gemm::Parallelism {
    let t = threads();
    if t > 1 && work >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(t)
    } else {
        gemm::Parallelism::None
    }
}

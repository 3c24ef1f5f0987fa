//! Weight blocks of eight output columns interleaved for batched decode.
//!
//! The row-major GGML layout (`quant.rs`) makes each integer dot product a
//! horizontal job: 32 weights of one column against 32 activations, summed
//! across a vector. Here the blocks of eight neighbouring columns are
//! interleaved four bytes at a time (the "repacked" layouts llama.cpp uses on
//! ARM, `ggml-cpu/repack.cpp`), so one `vpdpbusd` multiplies four weights of
//! each of the eight columns by the same four activations (broadcast) and the
//! eight lanes of the accumulator *are* the eight outputs: no horizontal sums,
//! one scale multiply-add per block for eight columns. A block is unpacked once
//! and used for up to four activation rows (sequences of a decode batch); on CPUs
//! with AVX-512 VNNI for eight (32 registers hold their accumulators), and two
//! neighbouring column groups share one 512-bit vector (16 outputs per instruction).
//!
//! Column groups are stored in pairs, the blocks of the two interleaved block
//! by block ([`block_index`]), so that the 16-column kernels, which read both
//! groups at once, and the 8-column ones, which read one group after the
//! other, both walk the matrix as one forward stream. (With each group's blocks
//! contiguous, the 16-column kernels read two streams 2.9 KB apart, which the
//! hardware prefetcher follows badly: 8 GB/s of weights from memory on one
//! core, against 23-26 GB/s with the pairs interleaved.)
//!
//! Every output lane goes through the same sequence of float operations
//! whatever the number of rows, so a sequence's logits do not depend on the
//! batch it runs in. The scalar functions are the reference (bit-equal: the
//! SIMD code uses fused multiply-adds in the same order as `f32::mul_add`).
use half::f16;

use super::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};

/// Columns per packed block.
pub const COLS: usize = 8;

/// Eight Q4_1 blocks (one per column). Chunk `c` (bytes `32c..32c+32`) holds,
/// in lane `l`, bytes `4c..4c+4` of column `l`'s original `qs`: low nibbles are
/// values `4c..4c+4`, high nibbles values `16+4c..16+4c+4`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PackQ4_1x8 {
    pub d: [f16; COLS],
    pub m: [f16; COLS],
    pub qs: [u8; COLS * QK / 2],
}

/// Eight Q8_0 blocks: chunk `j` (bytes `32j..32j+32`) holds, in lane `l`,
/// values `4j..4j+4` of column `l`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PackQ8_0x8 {
    pub d: [f16; COLS],
    pub qs: [i8; COLS * QK],
}

const _: () = assert!(std::mem::size_of::<PackQ4_1x8>() == 8 * std::mem::size_of::<BlockQ4_1>());
const _: () = assert!(std::mem::size_of::<PackQ8_0x8>() == 8 * std::mem::size_of::<BlockQ8_0>());

/// Where block `i` of column group `g` (of `groups`, `bpr` blocks each) lies in a
/// packed matrix: groups `2p` and `2p + 1` fill `[2p * bpr, (2p + 2) * bpr)`
/// with their blocks alternating (`g0 b0, g1 b0, g0 b1, ...`); an odd last
/// group follows with its blocks in order.
#[inline]
pub fn block_index(g: usize, i: usize, groups: usize, bpr: usize) -> usize {
    if g < groups & !1 {
        (g & !1) * bpr + 2 * i + (g & 1)
    } else {
        g * bpr + i
    }
}

/// The blocks of one group: a slice starting at its first block, and the step
/// between its blocks (2 inside a pair, 1 for an odd last group).
#[inline]
pub fn group_blocks<P>(w: &[P], g: usize, groups: usize, bpr: usize) -> (&[P], usize) {
    let start = block_index(g, 0, groups, bpr);
    let step = if g < groups & !1 { 2 } else { 1 };
    (&w[start..start + (bpr.max(1) - 1) * step + 1], step)
}

fn pack<B, P: Copy>(blocks: &[B], out_dim: usize, bpr: usize, zero: P, make: impl Fn(&[B], usize) -> P) -> Vec<P> {
    debug_assert_eq!(out_dim % COLS, 0);
    debug_assert_eq!(blocks.len(), out_dim * bpr);
    let groups = out_dim / COLS;
    let mut out = filled_on_huge_pages(groups * bpr, zero);
    for g in 0..groups {
        for i in 0..bpr {
            // Block i of the group's eight columns.
            out[block_index(g, i, groups, bpr)] = make(&blocks[g * COLS * bpr..(g + 1) * COLS * bpr], i);
        }
    }
    out
}

/// `n` copies of `zero` in an allocation the kernel is asked, before anything is
/// written to it, to back with transparent huge pages where it allows that
/// (`madvise` mode): a decode step streams every weight once, and with 4 KiB pages
/// a 30 MB output layer needs thousands of page walks per step. Advice only:
/// nothing changes where it is refused, or for the parts smaller than 2 MB.
fn filled_on_huge_pages<P: Copy>(n: usize, zero: P) -> Vec<P> {
    let mut out: Vec<P> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let p = out.as_ptr() as usize;
        let start = p.div_ceil(HUGE) * HUGE;
        let end = (p + n * std::mem::size_of::<P>()) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the allocation just made, and
            // MADV_HUGEPAGE changes no contents (it only picks the page size).
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    out.resize(n, zero);
    out
}

/// Interleave a row-major `[out_dim, bpr]` matrix of Q4_1 blocks (`out_dim % 8 == 0`)
/// into the layout of [`block_index`].
pub fn pack_q4_1(blocks: &[BlockQ4_1], out_dim: usize, bpr: usize) -> Vec<PackQ4_1x8> {
    let zero = PackQ4_1x8 { d: [f16::ZERO; COLS], m: [f16::ZERO; COLS], qs: [0; COLS * QK / 2] };
    pack(blocks, out_dim, bpr, zero, |cols, i| {
        let mut p = zero;
        for l in 0..COLS {
            let b = &cols[l * bpr + i];
            p.d[l] = b.d;
            p.m[l] = b.m;
            for c in 0..4 {
                p.qs[c * 32 + l * 4..c * 32 + l * 4 + 4].copy_from_slice(&b.qs[4 * c..4 * c + 4]);
            }
        }
        p
    })
}

/// As [`pack_q4_1`] for Q8_0 blocks.
pub fn pack_q8_0(blocks: &[BlockQ8_0], out_dim: usize, bpr: usize) -> Vec<PackQ8_0x8> {
    let zero = PackQ8_0x8 { d: [f16::ZERO; COLS], qs: [0; COLS * QK] };
    pack(blocks, out_dim, bpr, zero, |cols, i| {
        let mut p = zero;
        for l in 0..COLS {
            let b = &cols[l * bpr + i];
            p.d[l] = b.d;
            for j in 0..8 {
                p.qs[j * 32 + l * 4..j * 32 + l * 4 + 4].copy_from_slice(&b.qs[4 * j..4 * j + 4]);
            }
        }
        p
    })
}

fn unpack<P, B: Copy>(w: &[P], bpr: usize, zero: B, take: impl Fn(&P, usize) -> B) -> Vec<B> {
    let groups = w.len() / bpr.max(1);
    let mut out = vec![zero; groups * COLS * bpr];
    for g in 0..groups {
        for i in 0..bpr {
            let p = &w[block_index(g, i, groups, bpr)];
            for l in 0..COLS {
                out[(g * COLS + l) * bpr + i] = take(p, l);
            }
        }
    }
    out
}

/// The row-major Q4_1 blocks back from [`pack_q4_1`]'s layout (for candle).
pub fn unpack_q4_1(w: &[PackQ4_1x8], bpr: usize) -> Vec<BlockQ4_1> {
    let zero = BlockQ4_1 { d: f16::ZERO, m: f16::ZERO, qs: [0; QK / 2] };
    unpack(w, bpr, zero, |p, l| {
        let mut b = BlockQ4_1 { d: p.d[l], m: p.m[l], qs: [0; QK / 2] };
        for c in 0..4 {
            b.qs[4 * c..4 * c + 4].copy_from_slice(&p.qs[c * 32 + l * 4..c * 32 + l * 4 + 4]);
        }
        b
    })
}

/// The row-major Q8_0 blocks back from [`pack_q8_0`]'s layout (for candle).
pub fn unpack_q8_0(w: &[PackQ8_0x8], bpr: usize) -> Vec<BlockQ8_0> {
    let zero = BlockQ8_0 { d: f16::ZERO, qs: [0; QK] };
    unpack(w, bpr, zero, |p, l| {
        let mut b = BlockQ8_0 { d: p.d[l], qs: [0; QK] };
        for j in 0..8 {
            b.qs[4 * j..4 * j + 4].copy_from_slice(&p.qs[j * 32 + l * 4..j * 32 + l * 4 + 4]);
        }
        b
    })
}

/// Row `r` of a packed Q4_1 matrix as f32 (the same values as `quant::dequantize_q4_1`).
pub fn dequantize_row_q4_1x8(w: &[PackQ4_1x8], bpr: usize, r: usize, out: &mut [f32]) {
    let (g, l) = (r / COLS, r % COLS);
    let groups = w.len() / bpr.max(1);
    for (i, o) in out.chunks_exact_mut(QK).enumerate().take(bpr) {
        let p = &w[block_index(g, i, groups, bpr)];
        let (d, m) = (p.d[l].to_f32(), p.m[l].to_f32());
        for c in 0..4 {
            for b in 0..4 {
                let byte = p.qs[c * 32 + l * 4 + b];
                o[4 * c + b] = (byte & 0x0F) as f32 * d + m;
                o[16 + 4 * c + b] = (byte >> 4) as f32 * d + m;
            }
        }
    }
}

/// Row `r` of a packed Q8_0 matrix as f32 (the same values as `quant::dequantize_q8_0`).
pub fn dequantize_row_q8_0x8(w: &[PackQ8_0x8], bpr: usize, r: usize, out: &mut [f32]) {
    let (g, l) = (r / COLS, r % COLS);
    let groups = w.len() / bpr.max(1);
    for (i, o) in out.chunks_exact_mut(QK).enumerate().take(bpr) {
        let p = &w[block_index(g, i, groups, bpr)];
        let d = p.d[l].to_f32();
        for j in 0..8 {
            for b in 0..4 {
                o[4 * j + b] = p.qs[j * 32 + l * 4 + b] as f32 * d;
            }
        }
    }
}

/// Reference: the eight outputs of one column group (`w`: its packed blocks,
/// `step` apart, see [`group_blocks`]) for one activation row.
pub fn dot_q4_1x8_scalar(w: &[PackQ4_1x8], step: usize, a: &[BlockQ8_1]) -> [f32; COLS] {
    let mut acc = [0f32; COLS];
    for (p, y) in w.iter().step_by(step).zip(a) {
        for (l, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for c in 0..4 {
                for b in 0..4 {
                    let byte = p.qs[c * 32 + l * 4 + b];
                    isum += (byte & 0x0F) as i32 * y.qs[4 * c + b] as i32;
                    isum += (byte >> 4) as i32 * y.qs[16 + 4 * c + b] as i32;
                }
            }
            *acc = (isum as f32).mul_add(p.d[l].to_f32() * y.d, *acc);
            *acc = p.m[l].to_f32().mul_add(y.s, *acc);
        }
    }
    acc
}

/// Reference for packed Q8_0 (see [`dot_q4_1x8_scalar`]).
pub fn dot_q8_0x8_scalar(w: &[PackQ8_0x8], step: usize, a: &[BlockQ8_1]) -> [f32; COLS] {
    let mut acc = [0f32; COLS];
    for (p, y) in w.iter().step_by(step).zip(a) {
        for (l, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for j in 0..8 {
                for b in 0..4 {
                    isum += p.qs[j * 32 + l * 4 + b] as i32 * y.qs[4 * j + b] as i32;
                }
            }
            *acc = (isum as f32).mul_add(p.d[l].to_f32() * y.d, *acc);
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackQ4_1x8, PackQ8_0x8, COLS};
    use crate::model::quant::BlockQ8_1;
    use std::arch::x86_64::*;

    /// `acc + sum of 4 u8 x i8 products per 32-bit lane` without VNNI.
    #[inline(always)]
    unsafe fn dp_avx2(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[inline(always)]
    unsafe fn dp_vnni(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, s)
    }

    /// The same instruction in its AVX-512 (EVEX) form: the kernels compiled with
    /// it may use 32 vector registers, enough for eight rows at once.
    #[inline(always)]
    unsafe fn dp_vnni512(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }

    /// Four activation bytes `4j..4j+4` broadcast to all lanes.
    #[inline(always)]
    unsafe fn bcast(y: &BlockQ8_1, j: usize) -> __m256i {
        _mm256_set1_epi32(std::ptr::read_unaligned(y.qs.as_ptr().add(4 * j) as *const i32))
    }

    /// Block pairs ahead of the one being multiplied that the kernels for four
    /// or more rows prefetch into L2. Such a pass over the weights is compute-bound
    /// and reads them slowly, and with only the hardware prefetcher following
    /// that stream its loads wait on memory: prefetching 16 pairs (5-9 KB) ahead
    /// made the 8-row pass over SmolLM2's 30 MB Q8_0 output layer 1.5-2x faster
    /// and decode steps of 8 sequences about 25% faster (`BENCHMARKS.md`). One row
    /// streams the weights at memory speed without it and is left alone.
    const PREFETCH_PAIRS: usize = 16;

    /// Prefetch `blocks` packed blocks from `p`, which may lie past the end of the
    /// matrix: a prefetch does not fault, and the pointer is never read.
    #[inline(always)]
    unsafe fn prefetch_blocks<P>(p: *const P, blocks: usize) {
        let start = p as *const i8;
        let mut o = 0;
        while o < blocks * std::mem::size_of::<P>() {
            _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(o));
            o += 64;
        }
    }

    macro_rules! kernels {
        ($feat:literal, $dp:ident, $q4:ident, $q8:ident, $vnni:literal) => {
            /// `R` activation rows against one packed Q4_1 column group.
            #[target_feature(enable = $feat)]
            /// `w`: the group's blocks, `step` apart ([`super::group_blocks`]).
            pub unsafe fn $q4<const R: usize>(w: &[PackQ4_1x8], step: usize, a: [&[BlockQ8_1]; R]) -> [[f32; COLS]; R] {
                let step = step.max(1);
                let mut n = w.len().div_ceil(step);
                for ar in a.iter() {
                    n = n.min(ar.len());
                }
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); R];
                for i in 0..n {
                    if R >= 4 {
                        // The pair (or lone group) this block belongs to, PREFETCH_PAIRS ahead.
                        prefetch_blocks(w.as_ptr().wrapping_add((i + PREFETCH_PAIRS) * step), step);
                    }
                    let p = w.get_unchecked(i * step);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr() as *const __m128i));
                    let mw = _mm256_cvtph_ps(_mm_loadu_si128(p.m.as_ptr() as *const __m128i));
                    let q = p.qs.as_ptr() as *const __m256i;
                    let c = [
                        _mm256_loadu_si256(q),
                        _mm256_loadu_si256(q.add(1)),
                        _mm256_loadu_si256(q.add(2)),
                        _mm256_loadu_si256(q.add(3)),
                    ];
                    let lo = c.map(|v| _mm256_and_si256(v, mask));
                    let hi = c.map(|v| _mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
                    for r in 0..R {
                        let y = a[r].get_unchecked(i);
                        let isum = if $vnni {
                            let mut s0 = _mm256_setzero_si256();
                            let mut s1 = _mm256_setzero_si256();
                            for k in 0..4 {
                                s0 = $dp(s0, lo[k], bcast(y, k));
                                s1 = $dp(s1, hi[k], bcast(y, 4 + k));
                            }
                            _mm256_add_epi32(s0, s1)
                        } else {
                            // Without VNNI: the eight `maddubs` results summed in 16 bits
                            // before one widening `madd`, instead of widening each of them
                            // (16 products of a nibble and an i8 per lane: |sum| <= 16 * 15
                            // * 128 = 30720, no overflow). The integer sum, and so every
                            // output bit, is the same.
                            let mut p = _mm256_setzero_si256();
                            for k in 0..4 {
                                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[k], bcast(y, k)));
                                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[k], bcast(y, 4 + k)));
                            }
                            _mm256_madd_epi16(p, _mm256_set1_epi16(1))
                        };
                        let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(y.d)), acc[r]);
                        acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(y.s), t);
                    }
                }
                let mut out = [[0f32; COLS]; R];
                for r in 0..R {
                    _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
                }
                out
            }

            /// `R` activation rows against one packed Q8_0 column group.
            #[target_feature(enable = $feat)]
            pub unsafe fn $q8<const R: usize>(w: &[PackQ8_0x8], step: usize, a: [&[BlockQ8_1]; R]) -> [[f32; COLS]; R] {
                let step = step.max(1);
                let mut n = w.len().div_ceil(step);
                for ar in a.iter() {
                    n = n.min(ar.len());
                }
                let mut acc = [_mm256_setzero_ps(); R];
                let flip = _mm256_set1_epi8(-128);
                for i in 0..n {
                    if R >= 4 {
                        prefetch_blocks(w.as_ptr().wrapping_add((i + PREFETCH_PAIRS) * step), step);
                    }
                    let p = w.get_unchecked(i * step);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr() as *const __m128i));
                    let q = p.qs.as_ptr() as *const __m256i;
                    let mut v = [_mm256_setzero_si256(); 8];
                    for (j, vj) in v.iter_mut().enumerate() {
                        *vj = _mm256_loadu_si256(q.add(j));
                    }
                    for r in 0..R {
                        let y = a[r].get_unchecked(i);
                        let mut s0 = _mm256_setzero_si256();
                        let mut s1 = _mm256_setzero_si256();
                        let isum = if $vnni {
                            // (w + 128) as u8 times a, then subtract 128 * sum(a): exact.
                            for k in 0..4 {
                                s0 = $dp(s0, _mm256_xor_si256(v[k], flip), bcast(y, k));
                                s1 = $dp(s1, _mm256_xor_si256(v[4 + k], flip), bcast(y, 4 + k));
                            }
                            _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_set1_epi32(128 * y.sum))
                        } else {
                            // |w| times a with w's sign: maddubs needs an unsigned left side.
                            for k in 0..4 {
                                let (v0, v1) = (v[k], v[4 + k]);
                                s0 = $dp(s0, _mm256_sign_epi8(v0, v0), _mm256_sign_epi8(bcast(y, k), v0));
                                s1 = $dp(s1, _mm256_sign_epi8(v1, v1), _mm256_sign_epi8(bcast(y, 4 + k), v1));
                            }
                            _mm256_add_epi32(s0, s1)
                        };
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(y.d)), acc[r]);
                    }
                }
                let mut out = [[0f32; COLS]; R];
                for r in 0..R {
                    _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
                }
                out
            }
        };
    }

    /// Four activation bytes `4j..4j+4` broadcast to all sixteen lanes.
    #[inline(always)]
    unsafe fn bcast16(y: &BlockQ8_1, j: usize) -> __m512i {
        _mm512_set1_epi32(std::ptr::read_unaligned(y.qs.as_ptr().add(4 * j) as *const i32))
    }

    /// Two 256-bit chunks (column groups `g` and `g + 1`) side by side.
    #[inline(always)]
    unsafe fn pair(a: *const __m256i, b: *const __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(a)), _mm256_loadu_si256(b))
    }

    /// Sixteen f16 scales (eight of each group) as f32.
    #[inline(always)]
    unsafe fn scales16(a: &[half::f16; COLS], b: &[half::f16; COLS]) -> __m512 {
        _mm512_cvtph_ps(_mm256_set_m128i(
            _mm_loadu_si128(b.as_ptr() as *const __m128i),
            _mm_loadu_si128(a.as_ptr() as *const __m128i),
        ))
    }

    /// `R` activation rows against a pair of Q4_1 column groups at once (`w`: the
    /// pair's interleaved blocks), one 512-bit vector holding both: lane for lane
    /// the operations of `q4_1x8_*`, so the outputs are bit-identical, with half
    /// the instructions per row.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn q4_1x16_v512<const R: usize>(w: &[PackQ4_1x8], a: [&[BlockQ8_1]; R]) -> [[f32; 2 * COLS]; R] {
        let mut n = w.len() / 2;
        for ar in a.iter() {
            n = n.min(ar.len());
        }
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        for i in 0..n {
            if R >= 4 {
                prefetch_blocks(w.as_ptr().wrapping_add(2 * (i + PREFETCH_PAIRS)), 2);
            }
            let (p0, p1) = (w.get_unchecked(2 * i), w.get_unchecked(2 * i + 1));
            let dw = scales16(&p0.d, &p1.d);
            let mw = scales16(&p0.m, &p1.m);
            let (q0, q1) = (p0.qs.as_ptr() as *const __m256i, p1.qs.as_ptr() as *const __m256i);
            let c = [pair(q0, q1), pair(q0.add(1), q1.add(1)), pair(q0.add(2), q1.add(2)), pair(q0.add(3), q1.add(3))];
            let lo = c.map(|v| _mm512_and_si512(v, mask));
            let hi = c.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask));
            for r in 0..R {
                let y = a[r].get_unchecked(i);
                // One chain: integer sums are exact in any order, and the
                // rows of the pass keep the units busy.
                let mut isum = _mm512_setzero_si512();
                for k in 0..4 {
                    isum = _mm512_dpbusd_epi32(isum, lo[k], bcast16(y, k));
                }
                for k in 0..4 {
                    isum = _mm512_dpbusd_epi32(isum, hi[k], bcast16(y, 4 + k));
                }
                let t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(y.d)), acc[r]);
                acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y.s), t);
            }
        }
        let mut out = [[0f32; 2 * COLS]; R];
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }

    /// As [`q4_1x16_v512`] for Q8_0 (lane for lane the operations of `q8_0x8_vnni`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn q8_0x16_v512<const R: usize>(w: &[PackQ8_0x8], a: [&[BlockQ8_1]; R]) -> [[f32; 2 * COLS]; R] {
        let mut n = w.len() / 2;
        for ar in a.iter() {
            n = n.min(ar.len());
        }
        let flip = _mm512_set1_epi8(-128);
        let mut acc = [_mm512_setzero_ps(); R];
        for i in 0..n {
            if R >= 4 {
                prefetch_blocks(w.as_ptr().wrapping_add(2 * (i + PREFETCH_PAIRS)), 2);
            }
            let (p0, p1) = (w.get_unchecked(2 * i), w.get_unchecked(2 * i + 1));
            let dw = scales16(&p0.d, &p1.d);
            let (q0, q1) = (p0.qs.as_ptr() as *const __m256i, p1.qs.as_ptr() as *const __m256i);
            let mut v = [_mm512_setzero_si512(); 8];
            for (j, vj) in v.iter_mut().enumerate() {
                // (w + 128) as u8: times a, minus 128 * sum(a), is exact.
                *vj = _mm512_xor_si512(pair(q0.add(j), q1.add(j)), flip);
            }
            for r in 0..R {
                let y = a[r].get_unchecked(i);
                // Start from -128 * sum(a) (the offset of the flipped weights), one chain.
                let mut isum = _mm512_set1_epi32(-128 * y.sum);
                for (k, vk) in v.iter().enumerate() {
                    isum = _mm512_dpbusd_epi32(isum, *vk, bcast16(y, k));
                }
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(y.d)), acc[r]);
            }
        }
        let mut out = [[0f32; 2 * COLS]; R];
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }

    kernels!("avx2,fma,f16c", dp_avx2, q4_1x8_avx2, q8_0x8_avx2, false);
    kernels!("avx2,fma,f16c,avxvnni", dp_vnni, q4_1x8_vnni, q8_0x8_vnni, true);
    kernels!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dp_vnni512, q4_1x8_v512, q8_0x8_v512, true);
}

/// A packed matrix type the row kernels run on.
pub trait Packed: Sized {
    /// `w`, `step`: one group's blocks as [`group_blocks`] gives them.
    fn dot_scalar(w: &[Self], step: usize, a: &[BlockQ8_1]) -> [f32; COLS];
    /// `R` rows at once with the best SIMD level, `None` when there is none.
    fn dot_rows<const R: usize>(w: &[Self], step: usize, a: [&[BlockQ8_1]; R]) -> Option<[[f32; COLS]; R]>;
    /// A pair of column groups (`w`: their interleaved blocks) at once, 16
    /// outputs per row, where AVX-512 VNNI is there; the same values as two
    /// `dot_rows` calls.
    fn dot_rows_x16<const R: usize>(w: &[Self], a: [&[BlockQ8_1]; R]) -> Option<[[f32; 2 * COLS]; R]>;
}

/// Most activation rows one pass over a column group serves: 8 where the
/// kernels have 32 vector registers (AVX-512), else 4.
fn rows_per_pass() -> usize {
    #[cfg(target_arch = "x86_64")]
    if super::quant::has_avx512_vnni() {
        return 8;
    }
    4
}

macro_rules! impl_packed {
    ($t:ty, $scalar:ident, $x16:ident, $v512:ident, $vnni:ident, $avx2:ident) => {
        impl Packed for $t {
            fn dot_scalar(w: &[Self], step: usize, a: &[BlockQ8_1]) -> [f32; COLS] {
                $scalar(w, step, a)
            }
            #[inline]
            fn dot_rows<const R: usize>(w: &[Self], step: usize, a: [&[BlockQ8_1]; R]) -> Option<[[f32; COLS]; R]> {
                #[cfg(target_arch = "x86_64")]
                {
                    if super::quant::has_avx512_vnni() {
                        // SAFETY: the CPU has AVX-512 F/VL/VNNI, FMA and F16C (checked at run time).
                        return Some(unsafe { x86::$v512::<R>(w, step, a) });
                    }
                    if super::quant::has_vnni() {
                        // SAFETY: the CPU has AVX2, FMA, F16C and AVX-VNNI (checked at run time).
                        return Some(unsafe { x86::$vnni::<R>(w, step, a) });
                    }
                    if super::quant::has_avx2() {
                        // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time).
                        return Some(unsafe { x86::$avx2::<R>(w, step, a) });
                    }
                }
                let _ = (w, step, a);
                None
            }
            #[inline]
            fn dot_rows_x16<const R: usize>(w: &[Self], a: [&[BlockQ8_1]; R]) -> Option<[[f32; 2 * COLS]; R]> {
                #[cfg(target_arch = "x86_64")]
                {
                    if super::quant::has_avx512_vnni() {
                        // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI, FMA and F16C (checked at run time).
                        return Some(unsafe { x86::$x16::<R>(w, a) });
                    }
                }
                let _ = (w, a);
                None
            }
        }
    };
}

impl_packed!(PackQ4_1x8, dot_q4_1x8_scalar, q4_1x16_v512, q4_1x8_v512, q4_1x8_vnni, q4_1x8_avx2);
impl_packed!(PackQ8_0x8, dot_q8_0x8_scalar, q8_0x16_v512, q8_0x8_v512, q8_0x8_vnni, q8_0x8_avx2);

/// Outputs of one column group (`w`, `step`: its blocks, see [`group_blocks`]) for
/// `m` activation rows (`xq`: `m * bpr` blocks), written to `out[r * stride + c]`
/// for `c < 8`.
pub fn group_rows<P: Packed>(w: &[P], step: usize, xq: &[BlockQ8_1], bpr: usize, m: usize, out: &mut [f32], stride: usize) {
    let row = |r: usize| &xq[r * bpr..(r + 1) * bpr];
    let mut put = |r: usize, v: &[f32; COLS]| out[r * stride..r * stride + COLS].copy_from_slice(v);
    let wide = rows_per_pass() >= 8;
    let mut r = 0;
    while r < m {
        let left = m - r;
        let done = if wide && left >= 8 {
            let rows = std::array::from_fn(|t| row(r + t));
            P::dot_rows::<8>(w, step, rows).map(|v| v.iter().enumerate().for_each(|(t, v)| put(r + t, v))).map(|_| 8)
        } else if left >= 4 {
            P::dot_rows::<4>(w, step, [row(r), row(r + 1), row(r + 2), row(r + 3)]).map(|v| v.iter().enumerate().for_each(|(t, v)| put(r + t, v))).map(|_| 4)
        } else if left == 3 {
            P::dot_rows::<3>(w, step, [row(r), row(r + 1), row(r + 2)]).map(|v| v.iter().enumerate().for_each(|(t, v)| put(r + t, v))).map(|_| 3)
        } else if left == 2 {
            P::dot_rows::<2>(w, step, [row(r), row(r + 1)]).map(|v| v.iter().enumerate().for_each(|(t, v)| put(r + t, v))).map(|_| 2)
        } else {
            P::dot_rows::<1>(w, step, [row(r)]).map(|v| put(r, &v[0])).map(|_| 1)
        };
        r += done.unwrap_or_else(|| {
            put(r, &P::dot_scalar(w, step, row(r)));
            1
        });
    }
}

/// Outputs of a pair of column groups (`w`: their `2 * bpr` interleaved blocks,
/// 16 columns) for `m` activation rows, written to `out[r * stride + c]` for
/// `c < 16`. Uses the 16-column kernels where there are some, else
/// [`group_rows`] once per group: the values are the same either way.
pub fn group_pair_rows<P: Packed>(w: &[P], xq: &[BlockQ8_1], bpr: usize, m: usize, out: &mut [f32], stride: usize) {
    let mut r = 0;
    while r < m {
        let left = m - r;
        let done = if left >= 8 {
            pair_pass::<P, 8>(w, xq, bpr, r, out, stride)
        } else if left >= 4 {
            pair_pass::<P, 4>(w, xq, bpr, r, out, stride)
        } else if left >= 2 {
            pair_pass::<P, 2>(w, xq, bpr, r, out, stride)
        } else {
            pair_pass::<P, 1>(w, xq, bpr, r, out, stride)
        };
        if done == 0 {
            group_rows(w, 2, &xq[r * bpr..], bpr, m - r, &mut out[r * stride..], stride);
            group_rows(&w[1..], 2, &xq[r * bpr..], bpr, m - r, &mut out[r * stride + COLS..], stride);
            return;
        }
        r += done;
    }
}

/// Rows `r..r + R` of [`group_pair_rows`] with the 16-column kernel: `R`, or 0 where there is none.
#[inline]
fn pair_pass<P: Packed, const R: usize>(w: &[P], xq: &[BlockQ8_1], bpr: usize, r: usize, out: &mut [f32], stride: usize) -> usize {
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|t| &xq[(r + t) * bpr..(r + t + 1) * bpr]);
    match P::dot_rows_x16::<R>(w, rows) {
        Some(v) => {
            for (t, o) in v.iter().enumerate() {
                out[(r + t) * stride..(r + t) * stride + 2 * COLS].copy_from_slice(o);
            }
            R
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quant::{self, dequantize_q4_1, dequantize_q8_0, quantize_q8_0, quantize_row_q8_1};
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-2.0f32..2.0)).collect()
    }

    fn q4_1_blocks(n: usize, seed: u64) -> Vec<BlockQ4_1> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| BlockQ4_1 {
                d: f16::from_f32(r.random_range(0.001f32..0.1)),
                m: f16::from_f32(r.random_range(-0.5f32..0.0)),
                qs: std::array::from_fn(|_| r.random()),
            })
            .collect()
    }

    fn activations(m: usize, k: usize, seed: u64) -> Vec<BlockQ8_1> {
        let x = rand_vec(m * k, seed);
        let mut xq = vec![BlockQ8_1::ZERO; m * k / QK];
        for r in 0..m {
            quantize_row_q8_1(&x[r * k..(r + 1) * k], &mut xq[r * k / QK..(r + 1) * k / QK]);
        }
        xq
    }

    #[test]
    fn packing_keeps_every_value() {
        // 2 groups (one pair) and 3 (a pair and an odd last group).
        for out_dim in [16, 24] {
            let bpr = 3;
            let b4 = q4_1_blocks(out_dim * bpr, 1);
            let p4 = pack_q4_1(&b4, out_dim, bpr);
            let mut w8 = Vec::new();
            quantize_q8_0(&rand_vec(out_dim * bpr * QK, 2), &mut w8);
            let p8 = pack_q8_0(&w8, out_dim, bpr);
            let (mut a, mut b) = (vec![0f32; bpr * QK], vec![0f32; bpr * QK]);
            for r in 0..out_dim {
                dequantize_q4_1(&b4[r * bpr..(r + 1) * bpr], &mut a);
                dequantize_row_q4_1x8(&p4, bpr, r, &mut b);
                assert_eq!(a, b, "q4_1 row {r}");
                dequantize_q8_0(&w8[r * bpr..(r + 1) * bpr], &mut a);
                dequantize_row_q8_0x8(&p8, bpr, r, &mut b);
                assert_eq!(a, b, "q8_0 row {r}");
            }
            let u4 = unpack_q4_1(&p4, bpr);
            assert!(u4.iter().zip(&b4).all(|(x, y)| x.d == y.d && x.m == y.m && x.qs == y.qs));
            let u8 = unpack_q8_0(&p8, bpr);
            assert!(u8.iter().zip(&w8).all(|(x, y)| x.d == y.d && x.qs == y.qs));
        }
        // Pairs interleave their blocks; every block has one place.
        let mut seen = vec![false; 5 * 4];
        for g in 0..5 {
            for i in 0..4 {
                let k = block_index(g, i, 5, 4);
                assert!(!seen[k]);
                seen[k] = true;
            }
        }
        assert_eq!((block_index(0, 1, 5, 4), block_index(1, 1, 5, 4), block_index(4, 1, 5, 4)), (2, 3, 17));
    }

    /// Every SIMD level this CPU has (not only the one dispatch picks) equals the
    /// packed scalar reference bit for bit, for 1, 4 and 8 rows and 16-column pairs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_level_is_bit_identical() {
        let (out_dim, k) = (16, 576);
        let (groups, bpr) = (out_dim / COLS, k / QK);
        let b4 = q4_1_blocks(out_dim * bpr, 5);
        let mut w8 = Vec::new();
        quantize_q8_0(&rand_vec(out_dim * k, 6), &mut w8);
        let (p4, p8) = (pack_q4_1(&b4, out_dim, bpr), pack_q8_0(&w8, out_dim, bpr));
        let xq = activations(8, k, 7);
        let rows: [&[BlockQ8_1]; 8] = std::array::from_fn(|r| &xq[r * bpr..(r + 1) * bpr]);
        let want4: Vec<[f32; COLS]> = (0..16)
            .map(|i| {
                let (w, step) = group_blocks(&p4, i / 8, groups, bpr);
                dot_q4_1x8_scalar(w, step, rows[i % 8])
            })
            .collect();
        let want8: Vec<[f32; COLS]> = (0..16)
            .map(|i| {
                let (w, step) = group_blocks(&p8, i / 8, groups, bpr);
                dot_q8_0x8_scalar(w, step, rows[i % 8])
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let check = |name: &str, got4: [[f32; COLS]; 8], got8: [[f32; COLS]; 8]| {
            for r in 0..8 {
                assert_eq!(bits(&got4[r]), bits(&want4[r]), "{name} q4_1 row {r}");
                assert_eq!(bits(&got8[r]), bits(&want8[r]), "{name} q8_0 row {r}");
            }
        };
        let ((w4, s4), (w8g, s8)) = (group_blocks(&p4, 0, groups, bpr), group_blocks(&p8, 0, groups, bpr));
        // SAFETY (all blocks below): each kernel runs only when the CPU has its features.
        if quant::has_avx2() {
            check("avx2", unsafe { x86::q4_1x8_avx2::<8>(w4, s4, rows) }, unsafe { x86::q8_0x8_avx2::<8>(w8g, s8, rows) });
        }
        if quant::has_avx2() && is_x86_feature_detected!("avxvnni") {
            check("avxvnni", unsafe { x86::q4_1x8_vnni::<8>(w4, s4, rows) }, unsafe { x86::q8_0x8_vnni::<8>(w8g, s8, rows) });
        }
        if quant::has_avx512_vnni() {
            check("avx512", unsafe { x86::q4_1x8_v512::<8>(w4, s4, rows) }, unsafe { x86::q8_0x8_v512::<8>(w8g, s8, rows) });
            let one = unsafe { x86::q4_1x8_v512::<1>(w4, s4, [rows[3]]) };
            assert_eq!(bits(&one[0]), bits(&want4[3]));
            let p4x = unsafe { x86::q4_1x16_v512::<8>(&p4[..2 * bpr], rows) };
            let p8x = unsafe { x86::q8_0x16_v512::<8>(&p8[..2 * bpr], rows) };
            for r in 0..8 {
                assert_eq!(bits(&p4x[r][..COLS]), bits(&want4[r]), "x16 q4_1 row {r} group 0");
                assert_eq!(bits(&p4x[r][COLS..]), bits(&want4[8 + r]), "x16 q4_1 row {r} group 1");
                assert_eq!(bits(&p8x[r][..COLS]), bits(&want8[r]), "x16 q8_0 row {r} group 0");
                assert_eq!(bits(&p8x[r][COLS..]), bits(&want8[8 + r]), "x16 q8_0 row {r} group 1");
            }
        }
    }

    /// The largest integer sums a Q4_1 block can give (every nibble 15, activations
    /// all +127 or all -128) come out exactly on every SIMD level: the AVX2 kernel
    /// sums its products in 16 bits before widening them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn extreme_q4_1_sums_do_not_overflow() {
        let (out_dim, k) = (16, 64);
        let bpr = k / QK;
        let b4: Vec<BlockQ4_1> = (0..out_dim * bpr).map(|_| BlockQ4_1 { d: f16::ONE, m: f16::ZERO, qs: [0xFF; QK / 2] }).collect();
        let p4 = pack_q4_1(&b4, out_dim, bpr);
        let mut xq = vec![BlockQ8_1::ZERO; 8 * bpr];
        for (r, y) in xq.iter_mut().enumerate() {
            let v: i8 = if (r / bpr) % 2 == 0 { 127 } else { -128 };
            *y = BlockQ8_1 { d: 1.0, s: 0.0, sum: 32 * v as i32, qs: [v; QK] };
        }
        let rows: [&[BlockQ8_1]; 8] = std::array::from_fn(|r| &xq[r * bpr..(r + 1) * bpr]);
        let (w, step) = group_blocks(&p4, 0, out_dim / COLS, bpr);
        let want: Vec<[f32; COLS]> = rows.iter().map(|a| dot_q4_1x8_scalar(w, step, a)).collect();
        assert_eq!(want[0][0], (bpr * 32 * 15 * 127) as f32);
        assert_eq!(want[1][0], -((bpr * 32 * 15 * 128) as f32));
        let check = |name: &str, got: [[f32; COLS]; 8]| {
            for r in 0..8 {
                assert_eq!(got[r], want[r], "{name} row {r}");
            }
        };
        // SAFETY (all blocks below): each kernel runs only when the CPU has its features.
        if quant::has_avx2() {
            check("avx2", unsafe { x86::q4_1x8_avx2::<8>(w, step, rows) });
            let four = unsafe { x86::q4_1x8_avx2::<4>(w, step, [rows[0], rows[1], rows[2], rows[3]]) };
            assert_eq!(four[1], want[1]);
        }
        if quant::has_avx2() && is_x86_feature_detected!("avxvnni") {
            check("avxvnni", unsafe { x86::q4_1x8_vnni::<8>(w, step, rows) });
        }
        if quant::has_avx512_vnni() {
            check("avx512", unsafe { x86::q4_1x8_v512::<8>(w, step, rows) });
        }
    }

    /// The packed kernels equal the row-major reference dot products (up to float
    /// order), the SIMD kernels equal the packed reference bit for bit, for every
    /// number of rows, in pairs of groups and in an odd last group.
    #[test]
    fn kernels_match_references_for_any_row_count() {
        let (out_dim, k) = (24, 576);
        let (groups, bpr) = (out_dim / COLS, k / QK);
        let b4 = q4_1_blocks(out_dim * bpr, 3);
        let mut w8 = Vec::new();
        quantize_q8_0(&rand_vec(out_dim * k, 4), &mut w8);
        let (p4, p8) = (pack_q4_1(&b4, out_dim, bpr), pack_q8_0(&w8, out_dim, bpr));
        for m in 1..=9 {
            let xq = activations(m, k, 10 + m as u64);
            let mut got4 = vec![0f32; m * out_dim];
            let mut got8 = vec![0f32; m * out_dim];
            for g in 0..groups {
                let (w, step) = group_blocks(&p4, g, groups, bpr);
                group_rows(w, step, &xq, bpr, m, &mut got4[g * COLS..], out_dim);
                let (w, step) = group_blocks(&p8, g, groups, bpr);
                group_rows(w, step, &xq, bpr, m, &mut got8[g * COLS..], out_dim);
            }
            // The pair of groups 0 and 1 at once (16-column kernels where the CPU has them): the same bits.
            let mut pair4 = vec![0f32; m * out_dim];
            let mut pair8 = vec![0f32; m * out_dim];
            group_pair_rows(&p4[..2 * bpr], &xq, bpr, m, &mut pair4, out_dim);
            group_pair_rows(&p8[..2 * bpr], &xq, bpr, m, &mut pair8, out_dim);
            for r in 0..m {
                for j in 0..2 * COLS {
                    let i = r * out_dim + j;
                    assert_eq!(pair4[i].to_bits(), got4[i].to_bits(), "q4_1 pair m={m} r={r} j={j}");
                    assert_eq!(pair8[i].to_bits(), got8[i].to_bits(), "q8_0 pair m={m} r={r} j={j}");
                }
            }
            for r in 0..m {
                let a = &xq[r * bpr..(r + 1) * bpr];
                for g in 0..groups {
                    let (w, step) = group_blocks(&p4, g, groups, bpr);
                    let s4 = dot_q4_1x8_scalar(w, step, a);
                    let (w, step) = group_blocks(&p8, g, groups, bpr);
                    let s8 = dot_q8_0x8_scalar(w, step, a);
                    for l in 0..COLS {
                        let j = g * COLS + l;
                        assert_eq!(got4[r * out_dim + j].to_bits(), s4[l].to_bits(), "q4_1 m={m} r={r} j={j}");
                        assert_eq!(got8[r * out_dim + j].to_bits(), s8[l].to_bits(), "q8_0 m={m} r={r} j={j}");
                        let ref4 = quant::dot_q4_1_q8_1_scalar(&b4[j * bpr..(j + 1) * bpr], a);
                        let ref8 = quant::dot_q8_0_q8_1_scalar(&w8[j * bpr..(j + 1) * bpr], a);
                        assert!((s4[l] - ref4).abs() <= 1e-4 * (1.0 + ref4.abs()), "{} vs {ref4}", s4[l]);
                        assert!((s8[l] - ref8).abs() <= 1e-4 * (1.0 + ref8.abs()), "{} vs {ref8}", s8[l]);
                    }
                }
            }
        }
    }
}

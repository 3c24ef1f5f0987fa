//! Decode attention and the element-wise steps around it (softmax, SwiGLU).
//!
//! Decode attends one new token of a sequence to its whole cache: a few dot
//! products and a weighted sum of value rows per head, too small for GEMM. With
//! a batch of sequences this is the largest cost after the weight matrices, so
//! it has its own AVX2 kernels:
//! - scores: four cached positions at a time, each with two partial sums per
//!   dot product (eight independent FMA chains), reduced together at the end;
//! - values: one head's output row (up to 64 values, eight registers) kept in
//!   registers while the value rows stream past, instead of an axpy per
//!   position that loads and stores the output row each time;
//! - `exp` as eight-lane polynomial (Cephes' `expf`, within 2 ulp of libm) for
//!   the softmax and SwiGLU.
//!
//! Every function computes each sequence's values the same way whatever else
//! runs in the step, so batched decode stays equal to single decode.

/// Attention of the query heads of one group (`qg`: `g` heads of `hd` values,
/// all sharing one kv head) over the first `n` cached positions of that kv
/// head (`keys`, `vals`: `n * hd` values). `out`: `g * hd` values.
pub fn attend_group(qg: &[f32], keys: &[f32], vals: &[f32], n: usize, hd: usize, out: &mut [f32]) {
    let g = qg.len() / hd;
    debug_assert!(keys.len() >= n * hd && vals.len() >= n * hd && out.len() == g * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    // scores[h * n + p]
    let mut scores = vec![0f32; g * n];
    #[cfg(target_arch = "x86_64")]
    if super::quant::has_avx2() && hd % 8 == 0 {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time); hd is a multiple of 8.
        unsafe {
            avx2::scores(qg, keys, n, hd, scale, &mut scores);
            for s in scores.chunks_exact_mut(n) {
                avx2::softmax(s);
            }
            avx2::weighted_rows(&scores, vals, n, hd, out);
        }
        return;
    }
    for (p, kr) in keys[..n * hd].chunks_exact(hd).enumerate() {
        for (h, qh) in qg.chunks_exact(hd).enumerate() {
            scores[h * n + p] = qh.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
    }
    for s in scores.chunks_exact_mut(n) {
        softmax_scalar(s);
    }
    out.fill(0.0);
    for (p, vr) in vals[..n * hd].chunks_exact(hd).enumerate() {
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            let w = scores[h * n + p];
            for (o, v) in oh.iter_mut().zip(vr) {
                *o += w * v;
            }
        }
    }
}

/// In-place softmax (vectorised where the CPU allows).
pub fn softmax(s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time).
        return unsafe { avx2::softmax(s) };
    }
    softmax_scalar(s)
}

fn softmax_scalar(s: &mut [f32]) {
    let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU in place: `g = silu(g) * u`.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time).
        return unsafe { avx2::silu_mul(g, u) };
    }
    for (gi, ui) in g.iter_mut().zip(u) {
        *gi = *gi / (1.0 + (-*gi).exp()) * ui;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` in eight lanes (Cephes `expf`: range reduction by `ln 2` in two
    /// parts, degree-5 polynomial, exponent bits added). Inputs are clamped to
    /// [-88, 88] (`e^88` is still a finite `f32`, `e^-88` rounds to 0 here).
    #[inline(always)]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0)), _mm256_set1_ps(88.0));
        let fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(0.5)));
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
            y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0)));
        // 2^fx: fx is in [-127, 127] after the clamp; build the exponent bits.
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// `e^x` for one value, the same operations as a lane of [`exp8`].
    #[inline(always)]
    unsafe fn exp1(x: f32) -> f32 {
        _mm256_cvtss_f32(exp8(_mm256_set1_ps(x)))
    }

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    /// Horizontal sums of four vectors, as one `[s0, s1, s2, s3]`.
    #[inline(always)]
    unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let ab = _mm256_hadd_ps(a, b);
        let cd = _mm256_hadd_ps(c, d);
        let abcd = _mm256_hadd_ps(ab, cd);
        _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps::<1>(abcd))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(s: &mut [f32]) {
        let n = s.len();
        let p = s.as_mut_ptr();
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut max = hmax(mv);
        for j in i..n {
            max = max.max(*p.add(j));
        }
        let m8 = _mm256_set1_ps(max);
        let mut sv = _mm256_setzero_ps();
        i = 0;
        while i + 8 <= n {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m8));
            _mm256_storeu_ps(p.add(i), e);
            sv = _mm256_add_ps(sv, e);
            i += 8;
        }
        let mut sum = hsum(sv);
        for j in i..n {
            let e = exp1(*p.add(j) - max);
            *p.add(j) = e;
            sum += e;
        }
        let inv = 1.0 / sum;
        let i8 = _mm256_set1_ps(inv);
        i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), i8));
            i += 8;
        }
        for j in i..n {
            *p.add(j) *= inv;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
        let n = g.len().min(u.len());
        let (gp, up) = (g.as_mut_ptr(), u.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(gp.add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
            _mm256_storeu_ps(gp.add(i), _mm256_mul_ps(s, _mm256_loadu_ps(up.add(i))));
            i += 8;
        }
        for j in i..n {
            let x = *gp.add(j);
            *gp.add(j) = x / (1.0 + exp1(-x)) * *up.add(j);
        }
    }

    /// `scores[h * n + p] = scale * q_h . k_p` for the `g` heads of `qg`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(qg: &[f32], keys: &[f32], n: usize, hd: usize, scale: f32, scores: &mut [f32]) {
        let g = qg.len() / hd;
        let chunks = hd / 8;
        let k = keys.as_ptr();
        let sc = _mm_set1_ps(scale);
        for h in 0..g {
            let q = qg.as_ptr().add(h * hd);
            let out = scores.as_mut_ptr().add(h * n);
            let mut p = 0;
            while p + 4 <= n {
                // Two partial sums per position (even / odd chunks): eight FMA chains.
                let mut a = [_mm256_setzero_ps(); 8];
                let mut c = 0;
                while c < chunks {
                    let half = c & 1;
                    let qv = _mm256_loadu_ps(q.add(8 * c));
                    for j in 0..4 {
                        a[2 * j + half] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add((p + j) * hd + 8 * c)), a[2 * j + half]);
                    }
                    c += 1;
                }
                let s = hsum4(
                    _mm256_add_ps(a[0], a[1]),
                    _mm256_add_ps(a[2], a[3]),
                    _mm256_add_ps(a[4], a[5]),
                    _mm256_add_ps(a[6], a[7]),
                );
                _mm_storeu_ps(out.add(p), _mm_mul_ps(s, sc));
                p += 4;
            }
            while p < n {
                let mut a = [_mm256_setzero_ps(); 2];
                for c in 0..chunks {
                    a[c & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(8 * c)), _mm256_loadu_ps(k.add(p * hd + 8 * c)), a[c & 1]);
                }
                *out.add(p) = hsum(_mm256_add_ps(a[0], a[1])) * scale;
                p += 1;
            }
        }
    }

    /// `out_h = sum_p w[h * n + p] * v_p` for each head `h` of `out` (`g * hd`):
    /// 64 output values at a time held in registers over all positions.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows(w: &[f32], vals: &[f32], n: usize, hd: usize, out: &mut [f32]) {
        let g = out.len() / hd;
        let v = vals.as_ptr();
        for h in 0..g {
            let wh = w.as_ptr().add(h * n);
            let mut c0 = 0;
            while c0 < hd {
                let width = (hd - c0).min(64) / 8;
                let mut acc = [_mm256_setzero_ps(); 8];
                for p in 0..n {
                    let s = _mm256_broadcast_ss(&*wh.add(p));
                    let row = v.add(p * hd + c0);
                    for (c, a) in acc.iter_mut().enumerate().take(width) {
                        *a = _mm256_fmadd_ps(s, _mm256_loadu_ps(row.add(8 * c)), *a);
                    }
                }
                for (c, a) in acc.iter().enumerate().take(width) {
                    _mm256_storeu_ps(out.as_mut_ptr().add(h * hd + c0 + 8 * c), *a);
                }
                c0 += 64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-scale..scale)).collect()
    }

    /// Naive f64 attention for one head.
    fn reference(q: &[f32], keys: &[f32], vals: &[f32], n: usize, hd: usize) -> Vec<f64> {
        let scale = 1.0 / (hd as f64).sqrt();
        let s: Vec<f64> = (0..n).map(|p| (0..hd).map(|i| q[i] as f64 * keys[p * hd + i] as f64).sum::<f64>() * scale).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..hd).map(|i| (0..n).map(|p| e[p] / sum * vals[p * hd + i] as f64).sum()).collect()
    }

    #[test]
    fn attend_group_matches_reference() {
        for (g, hd, n) in [(3, 64, 1), (3, 64, 7), (3, 64, 130), (7, 64, 33), (1, 128, 50), (2, 16, 5), (2, 6, 9)] {
            let q = rand_vec(g * hd, 1 + n as u64, 1.0);
            let keys = rand_vec(n * hd, 2 + n as u64, 1.0);
            let vals = rand_vec(n * hd, 3 + n as u64, 1.0);
            let mut out = vec![0f32; g * hd];
            attend_group(&q, &keys, &vals, n, hd, &mut out);
            for h in 0..g {
                let want = reference(&q[h * hd..(h + 1) * hd], &keys, &vals, n, hd);
                for (i, w) in want.iter().enumerate() {
                    let got = out[h * hd + i] as f64;
                    assert!((got - w).abs() < 1e-5 * (1.0 + w.abs()), "g {g} hd {hd} n {n} head {h} [{i}]: {got} vs {w}");
                }
            }
        }
    }

    #[test]
    fn vector_exp_softmax_and_silu_are_accurate() {
        let x = rand_vec(1000, 9, 30.0);
        let mut s = x.clone();
        softmax(&mut s);
        // The reference exponentiates the same f32 differences (their rounding is not the exp's error).
        let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
        for (a, &v) in s.iter().zip(&x) {
            let want = ((v - max) as f64).exp() / sum;
            assert!((*a as f64 - want).abs() <= 4e-7 * want + 1e-30, "{a} vs {want}");
        }
        let mut g: Vec<f32> = x.iter().map(|v| v * 4.0).chain([-100.0, -88.0, 0.0, 88.0, 100.0, 1e-3]).collect();
        let u = vec![1.5f32; g.len()];
        let want: Vec<f64> = g.iter().map(|&v| v as f64 / (1.0 + (-(v as f64)).exp()) * 1.5).collect();
        silu_mul(&mut g, &u);
        for (a, w) in g.iter().zip(&want) {
            assert!((*a as f64 - w).abs() <= 1e-6 * w.abs() + 1e-30, "{a} vs {w}");
            assert!(a.is_finite());
        }
    }
}

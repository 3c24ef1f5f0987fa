//! Decode attention and the element-wise steps around it (softmax, SwiGLU).
//!
//! Decode attends one new token of a sequence to its whole cache: a few dot
//! products and a weighted sum of value rows per head, too small for GEMM. With
//! a batch of sequences this is the largest cost after the weight matrices (the
//! caches of eight sequences are more bytes than the weights), so it has its own
//! AVX2 kernels, which read f16 caches (`vcvtph2ps` on load) or f32 ones:
//! - scores: the query heads that share a kv head are served together, each
//!   cached key row loaded (and converted) once for all of them, a few
//!   positions at a time so that every head has independent FMA chains;
//! - values: the output rows of all heads of the group held in registers, a
//!   few 8-value chunks at a time, while the value rows stream past;
//! - `exp` as an eight-lane polynomial (Cephes' `expf`) for the softmax and
//!   SwiGLU.
//!
//! Every function computes each sequence's values the same way whatever else
//! runs in the step, so batched decode stays equal to single decode.
use half::f16;

/// Cached keys or values of one kv head: `n * hd` elements.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvRows<'_> {
    fn get(&self, i: usize) -> f32 {
        match self {
            KvRows::F32(v) => v[i],
            KvRows::F16(v) => v[i].to_f32(),
        }
    }

    fn len(&self) -> usize {
        match self {
            KvRows::F32(v) => v.len(),
            KvRows::F16(v) => v.len(),
        }
    }
}

/// Attention of the query heads of one group (`qg`: `g` heads of `hd` values,
/// all sharing one kv head) over the first `n` cached positions of that kv
/// head. `out`: `g * hd` values.
pub fn attend_group(qg: &[f32], keys: KvRows<'_>, vals: KvRows<'_>, n: usize, hd: usize, out: &mut [f32]) {
    let g = qg.len() / hd;
    assert!(keys.len() >= n * hd && vals.len() >= n * hd && out.len() == g * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    // scores[h * n + p]
    let mut scores = vec![0f32; g * n];
    #[cfg(target_arch = "x86_64")]
    if super::quant::has_avx2() && hd % 8 == 0 {
        // SAFETY: the CPU has AVX2, FMA and F16C (has_avx2 checks all three); hd is a
        // multiple of 8 and the slices hold n * hd elements (asserted above).
        let done = unsafe {
            match (keys, vals) {
                (KvRows::F32(k), KvRows::F32(v)) => avx2::attend(qg, k.as_ptr(), v.as_ptr(), n, hd, scale, &mut scores, out),
                (KvRows::F16(k), KvRows::F16(v)) => avx2::attend(qg, k.as_ptr(), v.as_ptr(), n, hd, scale, &mut scores, out),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    for p in 0..n {
        for (h, qh) in qg.chunks_exact(hd).enumerate() {
            scores[h * n + p] = qh.iter().enumerate().map(|(i, a)| a * keys.get(p * hd + i)).sum::<f32>() * scale;
        }
    }
    for s in scores.chunks_exact_mut(n) {
        softmax_scalar(s);
    }
    out.fill(0.0);
    for p in 0..n {
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            let w = scores[h * n + p];
            for (i, o) in oh.iter_mut().enumerate() {
                *o += w * vals.get(p * hd + i);
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
    #[allow(clippy::excessive_precision)] // Cephes' coefficients as published
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

    /// Eight cached values as f32.
    pub trait Load8: Copy {
        unsafe fn load8(p: *const Self) -> __m256;
    }
    impl Load8 for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }
    impl Load8 for half::f16 {
        #[inline(always)]
        unsafe fn load8(p: *const half::f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    /// The whole of [`super::attend_group`] for `g` heads per kv head; false (nothing
    /// done) for group sizes without a kernel.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attend<T: Load8>(qg: &[f32], k: *const T, v: *const T, n: usize, hd: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) -> bool {
        // Registers: G * P score accumulators + P key chunks + 1 query chunk, and
        // G * C value accumulators + C value chunks + 1 weight: at most 16.
        macro_rules! run {
            ($g:literal, $p:literal, $c:literal) => {{
                scores_g::<T, $g, $p>(qg, k, v, n, hd, scale, scores);
                for s in scores.chunks_exact_mut(n) {
                    softmax(s);
                }
                values_g::<T, $g, $c>(scores, v, n, hd, out);
                true
            }};
        }
        match qg.len() / hd {
            1 => run!(1, 7, 7),
            2 => run!(2, 5, 5),
            3 => run!(3, 3, 3),
            4 => run!(4, 3, 3),
            5 => run!(5, 2, 2),
            6 => run!(6, 2, 2),
            7 => run!(7, 1, 1),
            8 => run!(8, 1, 1),
            _ => false,
        }
    }

    /// `scores[h * n + p] = scale * q_h . k_p` for the `G` heads of `qg`, `P` positions per pass.
    #[inline(always)]
    unsafe fn scores_g<T: Load8, const G: usize, const P: usize>(qg: &[f32], k: *const T, v: *const T, n: usize, hd: usize, scale: f32, scores: &mut [f32]) {
        for p in 0..PREFETCH_ROWS.min(n) {
            prefetch_row(k, p, hd);
            prefetch_row(v, p, hd);
        }
        let mut p = 0;
        while p + P <= n {
            score_block::<T, G, P>(qg, k, v, p, n, hd, scale, scores);
            p += P;
        }
        while p < n {
            score_block::<T, G, 1>(qg, k, v, p, n, hd, scale, scores);
            p += 1;
        }
    }

    /// Positions ahead of the one being scored whose key and value rows are
    /// prefetched: a task reads its sequence's rows once, as short streams the
    /// hardware prefetcher picks up too late (measured: half the attention time).
    const PREFETCH_ROWS: usize = 16;

    /// Prefetch row `p` (`hd` elements) of `rows`, whose end may be passed (a prefetch does not fault).
    #[inline(always)]
    unsafe fn prefetch_row<T>(rows: *const T, p: usize, hd: usize) {
        let start = rows.wrapping_add(p * hd) as *const i8;
        let bytes = hd * std::mem::size_of::<T>();
        let mut o = 0;
        while o < bytes {
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(o));
            o += 64;
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn score_block<T: Load8, const G: usize, const P: usize>(qg: &[f32], k: *const T, v: *const T, p: usize, n: usize, hd: usize, scale: f32, scores: &mut [f32]) {
        // The value rows are read right after the scores: fetch them along with the keys.
        for j in 0..P {
            prefetch_row(k, p + j + PREFETCH_ROWS, hd);
            prefetch_row(v, p + j + PREFETCH_ROWS, hd);
        }
        let q = qg.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); P]; G];
        for c in 0..hd / 8 {
            let kv: [__m256; P] = std::array::from_fn(|j| T::load8(k.add((p + j) * hd + 8 * c)));
            for (h, ah) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.add(h * hd + 8 * c));
                for j in 0..P {
                    ah[j] = _mm256_fmadd_ps(qv, kv[j], ah[j]);
                }
            }
        }
        for (h, ah) in acc.iter().enumerate() {
            for (j, a) in ah.iter().enumerate() {
                *scores.get_unchecked_mut(h * n + p + j) = hsum(*a) * scale;
            }
        }
    }

    /// `out_h = sum_p w[h * n + p] * v_p` for the `G` heads of `out` (`G * hd`), `C` chunks of 8 per pass.
    #[inline(always)]
    unsafe fn values_g<T: Load8, const G: usize, const C: usize>(w: &[f32], v: *const T, n: usize, hd: usize, out: &mut [f32]) {
        let chunks = hd / 8;
        let mut c0 = 0;
        while c0 + C <= chunks {
            value_block::<T, G, C>(w, v, c0, n, hd, out);
            c0 += C;
        }
        while c0 < chunks {
            value_block::<T, G, 1>(w, v, c0, n, hd, out);
            c0 += 1;
        }
    }

    #[inline(always)]
    unsafe fn value_block<T: Load8, const G: usize, const C: usize>(w: &[f32], v: *const T, c0: usize, n: usize, hd: usize, out: &mut [f32]) {
        let mut acc = [[_mm256_setzero_ps(); C]; G];
        for p in 0..n {
            let vv: [__m256; C] = std::array::from_fn(|i| T::load8(v.add(p * hd + 8 * (c0 + i))));
            for (h, ah) in acc.iter_mut().enumerate() {
                let s = _mm256_broadcast_ss(w.get_unchecked(h * n + p));
                for i in 0..C {
                    ah[i] = _mm256_fmadd_ps(s, vv[i], ah[i]);
                }
            }
        }
        for (h, ah) in acc.iter().enumerate() {
            for (i, a) in ah.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(h * hd + 8 * (c0 + i)), *a);
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
        for (g, hd, n) in [(3, 64, 1), (3, 64, 7), (3, 64, 130), (7, 64, 33), (1, 128, 50), (2, 16, 5), (2, 6, 9), (4, 72, 11), (5, 64, 9), (12, 64, 5)] {
            let q = rand_vec(g * hd, 1 + n as u64, 1.0);
            let keys = rand_vec(n * hd, 2 + n as u64, 1.0);
            let vals = rand_vec(n * hd, 3 + n as u64, 1.0);
            let mut out = vec![0f32; g * hd];
            attend_group(&q, KvRows::F32(&keys), KvRows::F32(&vals), n, hd, &mut out);
            // An f16 cache: the same as f32 rows holding the f16 values.
            let (k16, v16): (Vec<f16>, Vec<f16>) = (keys.iter().map(|&x| f16::from_f32(x)).collect(), vals.iter().map(|&x| f16::from_f32(x)).collect());
            let (kr, vr): (Vec<f32>, Vec<f32>) = (k16.iter().map(|x| x.to_f32()).collect(), v16.iter().map(|x| x.to_f32()).collect());
            let mut out16 = vec![0f32; g * hd];
            attend_group(&q, KvRows::F16(&k16), KvRows::F16(&v16), n, hd, &mut out16);
            let mut outr = vec![0f32; g * hd];
            attend_group(&q, KvRows::F32(&kr), KvRows::F32(&vr), n, hd, &mut outr);
            assert_eq!(out16, outr, "g {g} hd {hd} n {n}: f16 rows");
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

//! GGML block formats and the integer dot-product kernels of the CPU engine.
//!
//! Weights stay in the block layout of the GGUF file (`Q4_1`, `Q8_0`); other
//! quantized types are re-encoded as `Q8_0` at load. Activations are quantized
//! per 32-value block to `Q8_1` / `Q8_0`, as llama.cpp does (`ggml-quants.c`,
//! `ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q8_0_q8_0`), so a dot product is
//! integer multiply-adds plus one scale per block. AVX2 kernels are chosen at
//! run time; the scalar versions are the reference and the fallback.
use half::f16;

pub const QK: usize = 32;

/// ggml `block_q4_1`: x = d * q + m, q in 0..16, two nibbles a byte
/// (low nibbles hold values 0..16 of the block, high nibbles 16..32).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// ggml `block_q8_0`: x = d * q.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// Activation block for Q4_1 dot products: like Q8_0 plus `s = d * sum(q)`.
/// Kept in f32 (ggml stores f16) so that scores are a little more precise.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(4))]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    /// `sum(qs)`, exact (the packed Q8_0 kernels correct an offset with it).
    pub sum: i32,
    pub qs: [i8; QK],
}

impl BlockQ8_1 {
    pub const ZERO: BlockQ8_1 = BlockQ8_1 { d: 0.0, s: 0.0, sum: 0, qs: [0; QK] };
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Reinterpret GGUF bytes as blocks (copying: the file buffer is not aligned).
pub fn blocks_from_bytes<T: Copy>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if size == 0 || bytes.len() % size != 0 {
        return None;
    }
    let n = bytes.len() / size;
    let mut out: Vec<T> = Vec::with_capacity(n);
    // SAFETY: T is a plain-old-data repr(C) block made of f16/u8/i8 fields; any bit
    // pattern is a valid value, the destination has capacity for n elements and the
    // copy is byte-wise, so the unaligned source is fine.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, n * size);
        out.set_len(n);
    }
    Some(out)
}

pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..QK / 2 {
            o[j] = (b.qs[j] & 0x0F) as f32 * d + m;
            o[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK {
            o[j] = b.qs[j] as f32 * d;
        }
    }
}

/// Quantize f32 values (length a multiple of 32) to Q8_0, ggml's rounding.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<BlockQ8_0>) {
    out.clear();
    for c in x.chunks_exact(QK) {
        let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, v) in qs.iter_mut().zip(c) {
            *q = (v * id).round() as i8;
        }
        out.push(BlockQ8_0 { d: f16::from_f32(d), qs });
    }
}

/// Quantize one activation row to Q8_1 (f32 scales). Runs once per row and
/// linear layer in decode; the AVX2 version gives bit-identical blocks.
pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { quantize_row_q8_1_avx2(x, out) };
        }
    }
    quantize_row_q8_1_scalar(x, out)
}

/// `(v * id).round()` (halves away from zero) for eight lanes, exactly: the
/// fraction `y - trunc(y)` is exact in f32, so comparing it with 0.5 decides
/// the rounding as `f32::round` does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn round_away_avx2(y: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let step = _mm256_or_ps(_mm256_and_ps(y, sign), _mm256_set1_ps(1.0)); // +-1 with y's sign
    _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_q8_1_avx2(x: &[f32], out: &mut [BlockQ8_1]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = c.as_ptr();
        let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vk in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vk));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2))).max(0.0);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let q = v.map(|vk| round_away_avx2(_mm256_mul_ps(vk, idv)));
        let s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256::<1>(s8));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2)));
        // i32 -> i8 in order: the packs work per 128-bit half, the permute restores the order.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, ordered);
        b.d = d;
        b.s = d * sum as f32;
        b.sum = sum;
    }
}

/// The reference [`quantize_row_q8_1`].
pub fn quantize_row_q8_1_scalar(x: &[f32], out: &mut [BlockQ8_1]) {
    for (c, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(c) {
            let r = (v * id).round() as i32;
            *q = r as i8;
            sum += r;
        }
        b.d = d;
        b.s = d * sum as f32;
        b.sum = sum;
    }
}

// ---------------------------------------------------------------------------
// Dot products: one weight row (blocks) against one activation row (blocks).
// ---------------------------------------------------------------------------

pub fn dot_q4_1_q8_1_scalar(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            isum += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
            isum += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
        }
        acc += x.d.to_f32() * y.d * isum as f32 + x.m.to_f32() * y.s;
    }
    acc
}

/// Q8_0 weights against Q8_1 activations (the `s` field is unused).
pub fn dot_q8_0_q8_1_scalar(w: &[BlockQ8_0], a: &[BlockQ8_1]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..QK {
            isum += x.qs[j] as i32 * y.qs[j] as i32;
        }
        acc += x.d.to_f32() * y.d * isum as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Sum of 32 products of unsigned (`ux` in 0..=127 or nibbles) and signed bytes,
    /// as 8 f32 lanes.
    #[inline(always)]
    unsafe fn mul_sum_us8(ux: __m256i, sy: __m256i) -> __m256 {
        let dot16 = _mm256_maddubs_epi16(ux, sy);
        let dot32 = _mm256_madd_epi16(dot16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(dot32)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
        let n = w.len().min(a.len());
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        let mask = _mm256_set1_epi8(0x0F);
        for i in 0..n {
            let x = w.get_unchecked(i);
            let y = a.get_unchecked(i);
            let dx = f16_to_f32(x.d);
            let mx = f16_to_f32(x.m);
            summs += mx * y.s;
            let q = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
            let hi = _mm_srli_epi16(q, 4);
            let bx = _mm256_and_si256(_mm256_set_m128i(hi, q), mask);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let p = mul_sum_us8(bx, by);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * y.d), p, acc);
        }
        hsum(acc) + summs
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0_q8_1(w: &[BlockQ8_0], a: &[BlockQ8_1]) -> f32 {
        let n = w.len().min(a.len());
        let mut acc = _mm256_setzero_ps();
        for i in 0..n {
            let x = w.get_unchecked(i);
            let y = a.get_unchecked(i);
            let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            // |x| * sign(y, x): maddubs needs an unsigned left operand.
            let ax = _mm256_sign_epi8(bx, bx);
            let sy = _mm256_sign_epi8(by, bx);
            let p = mul_sum_us8(ax, sy);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x.d) * y.d), p, acc);
        }
        hsum(acc)
    }

    /// The four-row kernels, compiled once for AVX2 and once for AVX-VNNI
    /// (`vpdpbusd` replaces `vpmaddubsw` + `vpmaddwd`).
    macro_rules! dot4_kernels {
        ($feat:literal, $mul:ident, $q4:ident, $q8:ident) => {
    /// Four weight rows against one activation row: four independent
    /// accumulator chains, and each activation block loaded once.
    #[target_feature(enable = $feat)]
    pub unsafe fn $q4(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
        let n = a.len().min(w[0].len()).min(w[1].len()).min(w[2].len()).min(w[3].len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut summs = _mm_setzero_ps();
        let mask = _mm256_set1_epi8(0x0F);
        // The next four rows follow row 3 in memory: prefetch them while this group runs.
        let next = (w[3].as_ptr() as *const i8).wrapping_add(std::mem::size_of_val(w[3]));
        for i in 0..n {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * 80));
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * 80 + 64));
            let y = a.get_unchecked(i);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let x0 = w[0].get_unchecked(i);
            let x1 = w[1].get_unchecked(i);
            let x2 = w[2].get_unchecked(i);
            let x3 = w[3].get_unchecked(i);
            // d and m of the four rows, converted together
            let dm = _mm_cvtph_ps(_mm_set_epi16(
                0, 0, 0, 0,
                x3.d.to_bits() as i16, x2.d.to_bits() as i16, x1.d.to_bits() as i16, x0.d.to_bits() as i16,
            ));
            let mm = _mm_cvtph_ps(_mm_set_epi16(
                0, 0, 0, 0,
                x3.m.to_bits() as i16, x2.m.to_bits() as i16, x1.m.to_bits() as i16, x0.m.to_bits() as i16,
            ));
            summs = _mm_fmadd_ps(mm, _mm_set1_ps(y.s), summs);
            let scale = _mm_mul_ps(dm, _mm_set1_ps(y.d));
            let mut sc = [0f32; 4];
            _mm_storeu_ps(sc.as_mut_ptr(), scale);
            for (c, x) in [x0, x1, x2, x3].into_iter().enumerate() {
                let q = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
                let hi = _mm_srli_epi16(q, 4);
                let bx = _mm256_and_si256(_mm256_set_m128i(hi, q), mask);
                let p = $mul(bx, by);
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[c]), p, acc[c]);
            }
        }
        let mut sm = [0f32; 4];
        _mm_storeu_ps(sm.as_mut_ptr(), summs);
        [hsum(acc[0]) + sm[0], hsum(acc[1]) + sm[1], hsum(acc[2]) + sm[2], hsum(acc[3]) + sm[3]]
    }

    #[target_feature(enable = $feat)]
    pub unsafe fn $q8(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
        let n = a.len().min(w[0].len()).min(w[1].len()).min(w[2].len()).min(w[3].len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let next = (w[3].as_ptr() as *const i8).wrapping_add(std::mem::size_of_val(w[3]));
        for i in 0..n {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * 136));
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * 136 + 64));
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * 136 + 128));
            let y = a.get_unchecked(i);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let x0 = w[0].get_unchecked(i);
            let x1 = w[1].get_unchecked(i);
            let x2 = w[2].get_unchecked(i);
            let x3 = w[3].get_unchecked(i);
            let dm = _mm_cvtph_ps(_mm_set_epi16(
                0, 0, 0, 0,
                x3.d.to_bits() as i16, x2.d.to_bits() as i16, x1.d.to_bits() as i16, x0.d.to_bits() as i16,
            ));
            let scale = _mm_mul_ps(dm, _mm_set1_ps(y.d));
            let mut sc = [0f32; 4];
            _mm_storeu_ps(sc.as_mut_ptr(), scale);
            for (c, x) in [x0, x1, x2, x3].into_iter().enumerate() {
                let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                let ax = _mm256_sign_epi8(bx, bx);
                let sy = _mm256_sign_epi8(by, bx);
                let p = $mul(ax, sy);
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[c]), p, acc[c]);
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }

        };
    }

    dot4_kernels!("avx2,fma,f16c", mul_sum_us8, dot4_q4_1_q8_1, dot4_q8_0_q8_1);
    dot4_kernels!("avx2,fma,f16c,avxvnni", mul_sum_us8_vnni, dot4_q4_1_q8_1_vnni, dot4_q8_0_q8_1_vnni);

    /// As `mul_sum_us8`, with one AVX-VNNI instruction.
    #[inline(always)]
    unsafe fn mul_sum_us8_vnni(ux: __m256i, sy: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ux, sy))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// y += alpha * x
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let yv = _mm256_loadu_ps(y.as_ptr().add(i));
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), yv);
            _mm256_storeu_ps(y.as_mut_ptr().add(i), r);
            i += 8;
        }
        while i < n {
            y[i] += alpha * x[i];
            i += 1;
        }
    }

    #[inline(always)]
    unsafe fn f16_to_f32(h: half::f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
    }

    #[allow(dead_code)]
    const _: usize = QK;
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2() && std::env::var("LOGLM_NO_VNNI").is_err() && is_x86_feature_detected!("avxvnni")
    })
}

/// AVX-512 F/VL/VNNI on top of AVX2/FMA/F16C (`LOGLM_NO_AVX512` or `LOGLM_NO_VNNI` turn it off).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512_vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && std::env::var("LOGLM_NO_AVX512").is_err()
            && std::env::var("LOGLM_NO_VNNI").is_err()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var("LOGLM_FORCE_SCALAR").is_err()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Which SIMD level the kernels run with ("avx2" or "scalar").
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vnni() {
        return if has_vnni() { "avx2+avxvnni+avx512vnni" } else { "avx2+avx512vnni" };
    }
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        return "avx2+avxvnni";
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return "avx2";
    }
    "scalar"
}

#[inline]
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the kernel is compiled for.
        return unsafe { avx2::dot_q4_1_q8_1(w, a) };
    }
    dot_q4_1_q8_1_scalar(w, a)
}

#[inline]
pub fn dot_q8_0_q8_1(w: &[BlockQ8_0], a: &[BlockQ8_1]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::dot_q8_0_q8_1(w, a) };
    }
    dot_q8_0_q8_1_scalar(w, a)
}

/// Four weight rows against one activation row (same results as four `dot_q4_1_q8_1`
/// calls up to float summation order).
#[inline]
pub fn dot4_q4_1_q8_1(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX-VNNI (checked at run time).
        return unsafe { avx2::dot4_q4_1_q8_1_vnni(w, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::dot4_q4_1_q8_1(w, a) };
    }
    w.map(|r| dot_q4_1_q8_1_scalar(r, a))
}

#[inline]
pub fn dot4_q8_0_q8_1(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX-VNNI (checked at run time).
        return unsafe { avx2::dot4_q8_0_q8_1_vnni(w, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::dot4_q8_0_q8_1(w, a) };
    }
    w.map(|r| dot_q8_0_q8_1_scalar(r, a))
}

#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::dot_f32(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// y += alpha * x
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::axpy(alpha, x, y) };
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-2.0f32..2.0)).collect()
    }

    fn q4_1_of(x: &[f32]) -> Vec<BlockQ4_1> {
        x.chunks_exact(QK)
            .map(|c| {
                let min = c.iter().cloned().fold(f32::INFINITY, f32::min);
                let max = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let mut qs = [0u8; QK / 2];
                for j in 0..QK / 2 {
                    let a = (((c[j] - min) * id).round() as u8).min(15);
                    let b = (((c[j + 16] - min) * id).round() as u8).min(15);
                    qs[j] = a | (b << 4);
                }
                BlockQ4_1 { d: f16::from_f32(d), m: f16::from_f32(min), qs }
            })
            .collect()
    }

    #[test]
    fn simd_kernels_equal_scalar_and_approximate_f32() {
        let n = 576;
        let w = rand_vec(n, 1);
        let x = rand_vec(n, 2);
        let wq = q4_1_of(&w);
        let mut wd = vec![0f32; n];
        dequantize_q4_1(&wq, &mut wd);
        let mut xq = vec![BlockQ8_1::ZERO; n / QK];
        quantize_row_q8_1(&x, &mut xq);
        let exact: f32 = wd.iter().zip(&x).map(|(a, b)| a * b).sum();
        let s = dot_q4_1_q8_1_scalar(&wq, &xq);
        let v = dot_q4_1_q8_1(&wq, &xq);
        assert!((s - v).abs() < 1e-3 * (1.0 + s.abs()), "{s} vs {v}");
        assert!((s - exact).abs() < 0.05 * (1.0 + exact.abs()), "{s} vs {exact}");

        let mut w8 = Vec::new();
        quantize_q8_0(&w, &mut w8);
        let s8 = dot_q8_0_q8_1_scalar(&w8, &xq);
        let v8 = dot_q8_0_q8_1(&w8, &xq);
        let exact8: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((s8 - v8).abs() < 1e-3 * (1.0 + s8.abs()));
        assert!((s8 - exact8).abs() < 0.05 * (1.0 + exact8.abs()));
        assert!((dot_f32(&w, &x) - exact8).abs() < 1e-3);

        // four-row kernels equal four single-row calls
        let rows: Vec<Vec<f32>> = (0..4).map(|i| rand_vec(n, 10 + i)).collect();
        let q4: Vec<Vec<BlockQ4_1>> = rows.iter().map(|r| q4_1_of(r)).collect();
        let got = dot4_q4_1_q8_1([&q4[0], &q4[1], &q4[2], &q4[3]], &xq);
        for c in 0..4 {
            let one = dot_q4_1_q8_1(&q4[c], &xq);
            assert!((got[c] - one).abs() < 1e-3 * (1.0 + one.abs()), "q4_1 col {c}: {} vs {one}", got[c]);
        }
        let q8: Vec<Vec<BlockQ8_0>> = rows
            .iter()
            .map(|r| {
                let mut b = Vec::new();
                quantize_q8_0(r, &mut b);
                b
            })
            .collect();
        let got = dot4_q8_0_q8_1([&q8[0], &q8[1], &q8[2], &q8[3]], &xq);
        for c in 0..4 {
            let one = dot_q8_0_q8_1(&q8[c], &xq);
            assert!((got[c] - one).abs() < 1e-3 * (1.0 + one.abs()), "q8_0 col {c}");
        }
    }

    #[test]
    fn simd_q8_1_quantization_is_bit_identical() {
        let mut x = rand_vec(32 * 40, 7);
        for (i, v) in x.iter_mut().enumerate().take(64) {
            *v *= 1000.0 * (i % 5) as f32; // large values, zero blocks' worth of zeros
        }
        // exact ties: amax 127 makes the scale 1, so k + 0.5 rounds away from zero
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
        }
        x[96..128].fill(0.0);
        x[128..160].copy_from_slice(&[-0.0; 32]);
        let mut a = vec![BlockQ8_1::ZERO; x.len() / QK];
        let mut b = a.clone();
        quantize_row_q8_1(&x, &mut a);
        quantize_row_q8_1_scalar(&x, &mut b);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.qs, q.qs, "block {i}");
            assert_eq!((p.d.to_bits(), p.s.to_bits(), p.sum), (q.d.to_bits(), q.s.to_bits(), q.sum), "block {i}");
        }
        assert_eq!(b[2].qs[1], -15); // -15.5 rounds away from zero
        assert_eq!(b[2].qs[31], 16); // 15.5
    }

    #[test]
    fn blocks_from_bytes_checks_length() {
        assert!(blocks_from_bytes::<BlockQ8_0>(&[0u8; 33]).is_none());
        assert_eq!(blocks_from_bytes::<BlockQ8_0>(&[0u8; 68]).unwrap().len(), 2);
    }
}

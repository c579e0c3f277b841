//! The x86-64 kernels of the FWHT: the whole transform compiled for AVX-512 / AVX2 + FMA, spans
//! 1–8 of each 16-element chunk in registers, the fused sign flip, the column form.
//!
//! In registers, each stage is one lane permute and one FMA: `w · s + p`, with `s = ±1` and `p`
//! the partner lane, is `w + p` where `s = 1` and `p − w` where `s = −1`, each rounded once —
//! the bits of the butterfly's add and subtract (the product by ±1 is exact, signed zeros
//! included).
use super::{columns, fwht_impl};
use crate::elem::Accum;
use crate::simd::Isa;
use std::arch::x86_64::{
    __m256, __m512, _mm256_add_ps, _mm256_and_si256, _mm256_castsi256_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_permute_ps, _mm256_set1_epi32,
    _mm256_setr_epi32, _mm256_setr_ps, _mm256_sllv_epi32, _mm256_storeu_ps, _mm256_sub_ps,
    _mm256_xor_ps, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_mov_ps, _mm512_mask_xor_epi32, _mm512_permute_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps,
};

/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fwht_avx512<A: Accum>(x: &mut [A]) {
    fwht_impl(x, Isa::Avx512);
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fwht_avx2<A: Accum>(x: &mut [A]) {
    fwht_impl(x, Isa::Avx2);
}

/// Spans 1, 2, 4 and 8 of one 16-lane vector.
#[target_feature(enable = "avx512f")]
#[inline]
fn span1_8_512(w: __m512) -> __m512 {
    let (one, minus) = (_mm512_set1_ps(1.0), _mm512_set1_ps(-1.0));
    // −1 on the upper element of each pair of the stage.
    let s1 = _mm512_mask_mov_ps(one, 0xAAAA, minus);
    let s2 = _mm512_mask_mov_ps(one, 0xCCCC, minus);
    let s4 = _mm512_mask_mov_ps(one, 0xF0F0, minus);
    let s8 = _mm512_mask_mov_ps(one, 0xFF00, minus);
    let w = _mm512_fmadd_ps(w, s1, _mm512_permute_ps::<0xB1>(w));
    let w = _mm512_fmadd_ps(w, s2, _mm512_permute_ps::<0x4E>(w));
    // Spans 4 and 8: the same across 128-bit lanes.
    let w = _mm512_fmadd_ps(w, s4, _mm512_shuffle_f32x4::<0xB1>(w, w));
    _mm512_fmadd_ps(w, s8, _mm512_shuffle_f32x4::<0x4E>(w, w))
}

/// Spans 1, 2, 4 and 8 of 16 lanes held as two 8-lane halves (span 8 pairs the halves).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn span1_8_256(lo: __m256, hi: __m256) -> (__m256, __m256) {
    let s1 = _mm256_setr_ps(1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0);
    let s2 = _mm256_setr_ps(1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0);
    let s4 = _mm256_setr_ps(1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0);
    let half = |w: __m256| {
        let w = _mm256_fmadd_ps(w, s1, _mm256_permute_ps::<0xB1>(w));
        let w = _mm256_fmadd_ps(w, s2, _mm256_permute_ps::<0x4E>(w));
        _mm256_fmadd_ps(w, s4, _mm256_permute2f128_ps::<0x01>(w, w))
    };
    let (a, b) = (half(lo), half(hi));
    (_mm256_add_ps(a, b), _mm256_sub_ps(a, b))
}

/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn span1_4_avx512(blk: &mut [f32]) {
    for ch in blk.chunks_exact_mut(16) {
        // SAFETY: `ch` holds 16 f32.
        unsafe { _mm512_storeu_ps(ch.as_mut_ptr(), span1_8_512(_mm512_loadu_ps(ch.as_ptr()))) };
    }
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn span1_4_avx2(blk: &mut [f32]) {
    for ch in blk.chunks_exact_mut(16) {
        let p = ch.as_mut_ptr();
        // SAFETY: `ch` holds 16 f32: two 8-lane halves.
        unsafe {
            let (lo, hi) = span1_8_256(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            _mm256_storeu_ps(p, lo);
            _mm256_storeu_ps(p.add(8), hi);
        }
    }
}

/// `blk = spans 1–8 of (±x)` per 16-element chunk (the rest of the block's stages follow in the
/// caller).
///
/// # Safety
/// AVX-512F must be available; `x` and `blk` hold `FWHT_BLOCK` values (the caller asserts it),
/// `signs` their bits.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn signed_block_avx512(signs: &[u64], x: &[f32], ahead: &[f32], blk: &mut [f32]) {
    let sign = _mm512_set1_epi32(i32::MIN);
    for (c, (xs, ch)) in x.chunks_exact(16).zip(blk.chunks_exact_mut(16)).enumerate() {
        let mask = (signs[c / 4] >> (16 * (c % 4))) as u16;
        prefetch(ahead, c);
        // SAFETY: `xs` and `ch` hold 16 f32 each.
        unsafe {
            let v = _mm512_castps_si512(_mm512_loadu_ps(xs.as_ptr()));
            let w = _mm512_castsi512_ps(_mm512_mask_xor_epi32(v, mask, v, sign));
            _mm512_storeu_ps(ch.as_mut_ptr(), span1_8_512(w));
        }
    }
}

/// As [`signed_block_avx512`], for AVX2 + FMA.
///
/// # Safety
/// AVX2 and FMA must be available; `x` and `blk` hold `FWHT_BLOCK` values (the caller asserts
/// it), `signs` their bits.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn signed_block_avx2(signs: &[u64], x: &[f32], ahead: &[f32], blk: &mut [f32]) {
    // Lane `l` of a half shifts its sign bit (bit `l`, or `8 + l`) to bit 31.
    let shift_lo = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    let shift_hi = _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16);
    let top = _mm256_set1_epi32(i32::MIN);
    for (c, (xs, ch)) in x.chunks_exact(16).zip(blk.chunks_exact_mut(16)).enumerate() {
        let bits = _mm256_set1_epi32(i32::from((signs[c / 4] >> (16 * (c % 4))) as u16));
        let flip_lo = _mm256_and_si256(_mm256_sllv_epi32(bits, shift_lo), top);
        let flip_hi = _mm256_and_si256(_mm256_sllv_epi32(bits, shift_hi), top);
        prefetch(ahead, c);
        let (src, dst) = (xs.as_ptr(), ch.as_mut_ptr());
        // SAFETY: `xs` and `ch` hold 16 f32 each: two 8-lane halves.
        unsafe {
            let lo = _mm256_xor_ps(_mm256_loadu_ps(src), _mm256_castsi256_ps(flip_lo));
            let hi = _mm256_xor_ps(_mm256_loadu_ps(src.add(8)), _mm256_castsi256_ps(flip_hi));
            let (lo, hi) = span1_8_256(lo, hi);
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst.add(8), hi);
        }
    }
}

/// Asks for line `c` (values `16c …`) of the next block's input, if it has one: the input
/// streams from memory, and the block's other stages issue no loads the hardware prefetcher
/// could follow.
#[inline(always)]
fn prefetch(ahead: &[f32], c: usize) {
    if let Some(v) = ahead.get(16 * c) {
        crate::simd::prefetch(v);
    }
}

/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn columns_avx512(buf: &[f32], each: &mut impl FnMut(usize, &[f32])) {
    columns(buf, each);
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn columns_avx2(buf: &[f32], each: &mut impl FnMut(usize, &[f32])) {
    columns(buf, each);
}

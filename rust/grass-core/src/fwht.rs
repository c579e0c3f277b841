//! In-place unnormalized fast Walsh–Hadamard transform (the SRHT's core).
//!
//! The operations are the contract's (docs/CONTRACT.md §6): radix-4 butterflies of spans
//! 1, 4, 16, … below [`FWHT_BLOCK`] inside each block (one radix-2 stage when the number of
//! in-block stages is odd), then radix-4 stages of spans `FWHT_BLOCK`, `4·FWHT_BLOCK`, … over the
//! whole buffer (one radix-2 stage last when needed). Stage grouping does not change the bits: each
//! stage pairs the same elements, so any grouping that keeps the stages in increasing span order
//! performs the same additions in the same order; the large stages run three at a time (radix-8)
//! to stream the buffer through L2 fewer times. With AVX-512 the stages of spans 1 and 2
//! (and 4 and 8) of each 16-element chunk run in one register (lane permutes + masked blends of
//! the same sums and differences), and the rest is compiled for AVX-512 too. Every element goes
//! through the same additions in the same order, so the bits do not depend on the CPU.
use crate::elem::Accum;

/// Butterfly stages with span below this many elements run block by block (in cache).
pub const FWHT_BLOCK: usize = 2048;

#[inline(always)]
fn add<A: Accum>(a: A, b: A) -> A {
    let mut s = a;
    s += b;
    s
}

#[inline(always)]
fn sub<A: Accum>(a: A, b: A) -> A {
    add(a, b.flip(true))
}

#[inline(always)]
fn bfly4<A: Accum>(a: &mut A, b: &mut A, c: &mut A, d: &mut A) {
    let (s0, s1) = (add(*a, *b), sub(*a, *b));
    let (s2, s3) = (add(*c, *d), sub(*c, *d));
    *a = add(s0, s2);
    *b = add(s1, s3);
    *c = sub(s0, s2);
    *d = sub(s1, s3);
}

/// `x ← H x` (`x.len()` a power of two).
pub fn fwht<A: Accum>(x: &mut [A]) {
    assert!(
        x.len().is_power_of_two(),
        "the length must be a power of two"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { fwht_avx512(x) };
        }
    }
    fwht_impl(x, false);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fwht_avx512<A: Accum>(x: &mut [A]) {
    fwht_impl(x, true);
}

#[inline(always)]
fn fwht_impl<A: Accum>(x: &mut [A], avx512: bool) {
    let block = FWHT_BLOCK.min(x.len());
    for blk in x.chunks_exact_mut(block) {
        block_stages(blk, avx512);
    }
    large_stages(x);
}

/// The stages of spans `FWHT_BLOCK`, `4·FWHT_BLOCK`, … (none when `x.len() ≤ FWHT_BLOCK`).
#[inline(always)]
pub(crate) fn large_stages<A: Accum>(x: &mut [A]) {
    let n = x.len();
    let block = FWHT_BLOCK.min(n);
    let mut h = block;
    // Three stages per pass over the buffer while they fit (each large pass streams the whole
    // buffer through L2), then at most one radix-4 and one radix-2 pass.
    while 8 * h <= n {
        radix8(x, h);
        h *= 8;
    }
    while 4 * h <= n {
        radix4(x, h);
        h *= 4;
    }
    if h < n {
        radix2(x, h);
    }
}

/// The stages of spans below `blk.len()` (a power of two ≤ `FWHT_BLOCK`) on one block.
#[inline(always)]
pub(crate) fn block_stages<A: Accum>(blk: &mut [A], avx512: bool) {
    let len = blk.len();
    let mut h = 1;
    if len >= 16 {
        // Spans 1 and 4 on each 16-element chunk.
        let done = avx512 && span1_4_f32(blk);
        if !done {
            for ch in blk.chunks_exact_mut(16) {
                let ch: &mut [A; 16] = ch.try_into().unwrap();
                span1_4(ch);
            }
        }
        h = 16;
    }
    while 4 * h <= len {
        radix4(blk, h);
        h *= 4;
    }
    if h < len {
        radix2(blk, h);
    }
}

/// Spans 1 and 4 of an `f32` block with AVX-512 in-register permutes; `false` for other types.
#[inline(always)]
fn span1_4_f32<A: Accum>(blk: &mut [A]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::any::TypeId::of::<A>() == std::any::TypeId::of::<f32>()
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            // SAFETY: `A` is `f32` (same type id), so the slice is an `f32` slice of the same
            // length; AVX-512F is available (checked).
            unsafe {
                let f = std::slice::from_raw_parts_mut(blk.as_mut_ptr().cast::<f32>(), blk.len());
                span1_4_avx512(f);
            }
            return true;
        }
    }
    let _ = blk;
    false
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn span1_4_avx512(blk: &mut [f32]) {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_loadu_ps, _mm512_mask_blend_ps, _mm512_permute_ps,
        _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_sub_ps,
    };
    for ch in blk.chunks_exact_mut(16) {
        // SAFETY: `ch` holds 16 f32.
        let mut w = unsafe { _mm512_loadu_ps(ch.as_ptr()) };
        // Span 1: pairs (a, b) → (a + b, a − b); then span 2: (s0, s1, s2, s3) → (s0 + s2, s1 + s3,
        // s0 − s2, s1 − s3). The partner `p` holds a at b's position, so `p − w` is a − b there.
        let p = _mm512_permute_ps::<0xB1>(w);
        w = _mm512_mask_blend_ps(0xAAAA, _mm512_add_ps(w, p), _mm512_sub_ps(p, w));
        let p = _mm512_permute_ps::<0x4E>(w);
        w = _mm512_mask_blend_ps(0xCCCC, _mm512_add_ps(w, p), _mm512_sub_ps(p, w));
        // Spans 4 and 8: the same across 128-bit lanes.
        let p = _mm512_shuffle_f32x4::<0xB1>(w, w);
        w = _mm512_mask_blend_ps(0xF0F0, _mm512_add_ps(w, p), _mm512_sub_ps(p, w));
        let p = _mm512_shuffle_f32x4::<0x4E>(w, w);
        w = _mm512_mask_blend_ps(0xFF00, _mm512_add_ps(w, p), _mm512_sub_ps(p, w));
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(ch.as_mut_ptr(), w) };
    }
}

#[inline(always)]
fn span1_4<A: Accum>(v: &mut [A; 16]) {
    for q in 0..4 {
        let [a, b, c, d] = &mut v[4 * q..4 * q + 4] else {
            unreachable!()
        };
        bfly4(a, b, c, d);
    }
    for i in 0..4 {
        let (mut a, mut b, mut c, mut d) = (v[i], v[i + 4], v[i + 8], v[i + 12]);
        bfly4(&mut a, &mut b, &mut c, &mut d);
        (v[i], v[i + 4], v[i + 8], v[i + 12]) = (a, b, c, d);
    }
}

#[inline(always)]
fn radix2<A: Accum>(x: &mut [A], h: usize) {
    for chunk in x.chunks_exact_mut(2 * h) {
        let (lo, hi) = chunk.split_at_mut(h);
        for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
            let (a, b) = (*u, *v);
            *u = add(a, b);
            *v = sub(a, b);
        }
    }
}

#[inline(always)]
fn radix4<A: Accum>(x: &mut [A], h: usize) {
    for chunk in x.chunks_exact_mut(4 * h) {
        let (ab, cd) = chunk.split_at_mut(2 * h);
        let (qa, qb) = ab.split_at_mut(h);
        let (qc, qd) = cd.split_at_mut(h);
        for (((a, b), c), d) in qa
            .iter_mut()
            .zip(qb.iter_mut())
            .zip(qc.iter_mut())
            .zip(qd.iter_mut())
        {
            bfly4(a, b, c, d);
        }
    }
}

/// Stages of spans `h`, `2h` and `4h` in one pass over the 8 rows `i + r·h` of each chunk: the
/// same additions, in the same stage order, as three radix-2 passes.
#[inline(always)]
fn radix8<A: Accum>(x: &mut [A], h: usize) {
    for chunk in x.chunks_exact_mut(8 * h) {
        let (q0, rest) = chunk.split_at_mut(h);
        let (q1, rest) = rest.split_at_mut(h);
        let (q2, rest) = rest.split_at_mut(h);
        let (q3, rest) = rest.split_at_mut(h);
        let (q4, rest) = rest.split_at_mut(h);
        let (q5, rest) = rest.split_at_mut(h);
        let (q6, q7) = rest.split_at_mut(h);
        for i in 0..h {
            let mut v = [q0[i], q1[i], q2[i], q3[i], q4[i], q5[i], q6[i], q7[i]];
            for s in [1, 2, 4] {
                for r in 0..8 {
                    if r & s == 0 {
                        let (a, b) = (v[r], v[r + s]);
                        v[r] = add(a, b);
                        v[r + s] = sub(a, b);
                    }
                }
            }
            (q0[i], q1[i], q2[i], q3[i]) = (v[0], v[1], v[2], v[3]);
            (q4[i], q5[i], q6[i], q7[i]) = (v[4], v[5], v[6], v[7]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash;

    /// The contract's stage-by-stage sweep, scalar.
    fn sweep<A: Accum>(x: &mut [A]) {
        fn stages<A: Accum>(x: &mut [A], h0: usize, end: usize) {
            let mut h = h0;
            while 4 * h <= end {
                radix4(x, h);
                h *= 4;
            }
            if h < end {
                radix2(x, h);
            }
        }
        let n = x.len();
        let block = FWHT_BLOCK.min(n);
        for blk in x.chunks_exact_mut(block) {
            stages(blk, 1, block);
        }
        stages(x, block, n);
    }

    #[test]
    fn same_bits_as_the_stage_sweep() {
        for n in [
            1usize,
            2,
            4,
            8,
            16,
            32,
            64,
            512,
            2048,
            4096,
            8192,
            1 << 15,
            1 << 17,
        ] {
            let x: Vec<f32> = (0..n)
                .map(|i| (hash(7, i as u64) >> 40) as f32 / 16_777_216.0 - 0.5)
                .collect();
            let (mut a, mut b) = (x.clone(), x.clone());
            fwht(&mut a);
            sweep(&mut b);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "f32, n = {n}"
            );
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v) * 1.1).collect();
            let (mut a, mut b) = (x64.clone(), x64.clone());
            fwht(&mut a);
            sweep(&mut b);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "f64, n = {n}"
            );
        }
    }
}

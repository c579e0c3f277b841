//! In-place unnormalized fast Walsh–Hadamard transform (the SRHT's core).
//!
//! The operations are the contract's (docs/CONTRACT.md §6): radix-4 butterflies of spans
//! 1, 4, 16, … below [`FWHT_BLOCK`] inside each block (one radix-2 stage when the number of
//! in-block stages is odd), then radix-4 stages of spans `FWHT_BLOCK`, `4·FWHT_BLOCK`, … over the
//! whole buffer (one radix-2 stage last when needed). Stage grouping does not change the bits: each
//! stage pairs the same elements, so any grouping that keeps the stages in increasing span order
//! performs the same additions in the same order; the large stages run three at a time (radix-8)
//! to stream the buffer through L2 fewer times, or, for the SRHT's `f32` projection, column strip
//! by column strip in L1 ([`large_stages_by_columns`]: one read of the buffer, no write).
//!
//! The code is compiled for the widest instruction set the CPU has ([`Isa`]: AVX-512F, AVX2 +
//! FMA, or the baseline), and the stages of spans 1–8 of each 16-element chunk run in registers
//! (`x86.rs`: one lane permute and one FMA by ±1 per stage, which rounds exactly as the add or
//! subtract). Every element goes through the same additions in the same order, so the bits do
//! not depend on the CPU or the instruction set (tests compare every set the CPU has).
use crate::elem::Accum;
use crate::simd::{lines_mut, Isa, Lanes, Line, LANES};

#[cfg(target_arch = "x86_64")]
mod x86;

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

/// What a butterfly combines: one accumulator value, or 16 `f32` lanes (the column form of the
/// large stages, [`large_stages_by_columns`]); each lane goes through the scalar operations.
trait Bf: Copy {
    fn plus(self, o: Self) -> Self;
    fn minus(self, o: Self) -> Self;
}

impl<A: Accum> Bf for A {
    #[inline(always)]
    fn plus(self, o: Self) -> Self {
        add(self, o)
    }
    #[inline(always)]
    fn minus(self, o: Self) -> Self {
        sub(self, o)
    }
}

impl Bf for Lanes<f32> {
    #[inline(always)]
    fn plus(self, o: Self) -> Self {
        std::array::from_fn(|l| add(self[l], o[l]))
    }
    #[inline(always)]
    fn minus(self, o: Self) -> Self {
        std::array::from_fn(|l| sub(self[l], o[l]))
    }
}

#[inline(always)]
fn bfly4<B: Bf>(a: &mut B, b: &mut B, c: &mut B, d: &mut B) {
    let (s0, s1) = (a.plus(*b), a.minus(*b));
    let (s2, s3) = (c.plus(*d), c.minus(*d));
    *a = s0.plus(s2);
    *b = s1.plus(s3);
    *c = s0.minus(s2);
    *d = s1.minus(s3);
}

/// `x ← H x` (`x.len()` a power of two).
pub fn fwht<A: Accum>(x: &mut [A]) {
    assert!(
        x.len().is_power_of_two(),
        "the length must be a power of two"
    );
    match Isa::detect() {
        // SAFETY: the CPU has the instruction set (detected).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::fwht_avx512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::fwht_avx2(x) },
        _ => fwht_impl(x, Isa::Base),
    }
}

#[inline(always)]
fn fwht_impl<A: Accum>(x: &mut [A], isa: Isa) {
    let block = FWHT_BLOCK.min(x.len());
    for blk in x.chunks_exact_mut(block) {
        block_stages(blk, isa);
    }
    large_stages(x);
}

/// The stages of spans `FWHT_BLOCK`, `4·FWHT_BLOCK`, … (none when `x.len() ≤ FWHT_BLOCK`).
#[inline(always)]
pub(crate) fn large_stages<A: Accum>(x: &mut [A]) {
    spans_from(x, FWHT_BLOCK.min(x.len()));
}

/// The stages of spans `h`, `2h`, … below `x.len()`: three per pass over the buffer while they
/// fit (each large pass streams the whole buffer through L2), then at most one radix-4 and one
/// radix-2 pass.
#[inline(always)]
fn spans_from<B: Bf>(x: &mut [B], mut h: usize) {
    let n = x.len();
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

/// The stages of spans below `blk.len()` (a power of two ≤ `FWHT_BLOCK`) on one block, with
/// the kernels of `isa` (which the CPU must have; the caller is compiled for it).
#[inline(always)]
pub(crate) fn block_stages<A: Accum>(blk: &mut [A], isa: Isa) {
    let len = blk.len();
    let mut h = 1;
    if len >= 16 {
        // Spans 1 and 4 on each 16-element chunk.
        if !span1_4_f32(blk, isa) {
            for ch in blk.chunks_exact_mut(16) {
                let ch: &mut [A; 16] = ch.try_into().unwrap();
                span1_4(ch);
            }
        }
        h = 16;
    }
    stages_from(blk, h);
}

/// The stages of spans `h`, `4h`, … below `blk.len()` (radix 4, one radix-2 stage last).
#[inline(always)]
fn stages_from<A: Accum>(blk: &mut [A], mut h: usize) {
    let len = blk.len();
    while 4 * h <= len {
        radix4(blk, h);
        h *= 4;
    }
    if h < len {
        radix2(blk, h);
    }
}

/// `A` as `f32`, when it is.
#[inline(always)]
fn as_f32_mut<A: Accum>(v: &mut [A]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<A>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: `A` is `f32` (same type id): the same values, the same type and length; the
        // borrow carries over.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    })
}

/// Spans 1–8 of each 16-element chunk of an `f32` block in registers (AVX-512 or AVX2 + FMA);
/// `false` for other types and instruction sets.
#[inline(always)]
fn span1_4_f32<A: Accum>(blk: &mut [A], isa: Isa) -> bool {
    let Some(f) = as_f32_mut(blk) else {
        return false;
    };
    match isa {
        // SAFETY: the caller's CPU has `isa` (this function's contract).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::span1_4_avx512(f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::span1_4_avx2(f) },
        _ => return false,
    }
    true
}

/// The sign flip `blk = ±x` and every in-block stage of one full block of `f32`
/// (`x.len() == blk.len() == FWHT_BLOCK`; `signs` starts at the word of `x[0]`, bit set =
/// negate): the flip and spans 1–8 of each 16-element chunk run in registers between one load of
/// `x` and one store into `blk`, and each line of `ahead` (the next block's input, or less) is
/// prefetched. Returns `false`, writing nothing, unless `A` is `f32` and `isa`
/// (which the CPU must have) is AVX-512 or AVX2.
#[inline(always)]
pub(crate) fn signed_block_f32<A: Accum>(
    signs: &[u64],
    x: &[f32],
    ahead: &[f32],
    blk: &mut [A],
    isa: Isa,
) -> bool {
    assert!(
        x.len() == FWHT_BLOCK && blk.len() == FWHT_BLOCK && signs.len() * 64 >= FWHT_BLOCK,
        "a signed block is FWHT_BLOCK values"
    );
    let Some(b) = as_f32_mut(blk) else {
        return false;
    };
    match isa {
        // SAFETY: the CPU has `isa` (this function's contract); the lengths are asserted.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::signed_block_avx512(signs, x, ahead, b) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::signed_block_avx2(signs, x, ahead, b) },
        _ => return false,
    }
    stages_from(b, 16);
    true
}

/// Most rows (`n / FWHT_BLOCK`) the column form of the large stages takes (a 16-column strip of
/// 128 rows is 8 KiB, L1-resident).
const COLUMN_ROWS: usize = 128;

/// Whether a transform of length `n` has large stages that fit the column form:
/// `FWHT_BLOCK < n ≤ COLUMN_ROWS · FWHT_BLOCK`, a power of two.
pub(crate) fn columns_fit(n: usize) -> bool {
    n.is_power_of_two() && FWHT_BLOCK < n && n <= COLUMN_ROWS * FWHT_BLOCK
}

/// Whether [`large_stages_by_columns`] runs on `n` values of `A` with `isa`: `A` is `f32`,
/// `isa` is AVX-512 or AVX2, and [`columns_fit`]`(n)`.
fn by_columns<A: Accum>(n: usize, isa: Isa) -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<f32>()
        && columns_fit(n)
        && matches!(isa, Isa::Avx2 | Isa::Avx512)
}

/// The large stages (spans `FWHT_BLOCK` … `n/2`) of an `f32` buffer, 16 columns at a time:
/// for each strip `g` of columns `16g … 16g + 15` of the `(n / FWHT_BLOCK, FWHT_BLOCK)` view,
/// the strip is copied out, transformed in L1, and handed to `each(g, strip)` with
/// `strip[t · 16 + l]` the result at `t · FWHT_BLOCK + 16g + l`. Every large stage pairs
/// elements of one column, so this performs the same additions in the same order as
/// [`large_stages`], with one read of the buffer (from L2 / L3) and no write, where the
/// whole-buffer passes read and write it twice. `buf` is not changed. (A strip-major buffer,
/// which the strips read sequentially, measured no faster: the in-block phase's scattered
/// stores cost what the strided reads save.)
///
/// Returns `false`, calling nothing, unless [`by_columns`]`(n, isa)` (`isa` the CPU must have).
#[inline(always)]
pub(crate) fn large_stages_by_columns<A: Accum>(
    buf: &[A],
    isa: Isa,
    mut each: impl FnMut(usize, &[A]),
) -> bool {
    let n = buf.len();
    if !by_columns::<A>(n, isa) {
        return false;
    }
    // SAFETY: `A` is `f32` (`by_columns`), so both casts view the same values as the same type.
    let f = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<f32>(), n) };
    let mut each_f32 = |g: usize, strip: &[f32]| {
        // SAFETY: as above.
        each(g, unsafe {
            std::slice::from_raw_parts(strip.as_ptr().cast::<A>(), strip.len())
        });
    };
    match isa {
        // SAFETY: the CPU has `isa` (this function's contract).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::columns_avx512(f, &mut each_f32) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::columns_avx2(f, &mut each_f32) },
        _ => return false,
    }
    true
}

/// The body of the column form (compiled for each instruction set by its wrapper).
#[inline(always)]
fn columns(buf: &[f32], each: &mut impl FnMut(usize, &[f32])) {
    let rows = buf.len() / FWHT_BLOCK;
    let mut lines = [Line([0f32; LANES]); COLUMN_ROWS];
    let strip = &mut lines_mut(&mut lines)[..rows];
    for g in 0..FWHT_BLOCK / LANES {
        for (t, v) in strip.iter_mut().enumerate() {
            let at = t * FWHT_BLOCK + g * LANES;
            *v = buf[at..at + LANES].try_into().unwrap();
        }
        spans_from(strip, 1);
        each(g, strip.as_flattened());
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
fn radix2<B: Bf>(x: &mut [B], h: usize) {
    for chunk in x.chunks_exact_mut(2 * h) {
        let (lo, hi) = chunk.split_at_mut(h);
        for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
            let (a, b) = (*u, *v);
            *u = a.plus(b);
            *v = a.minus(b);
        }
    }
}

#[inline(always)]
fn radix4<B: Bf>(x: &mut [B], h: usize) {
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
fn radix8<B: Bf>(x: &mut [B], h: usize) {
    for chunk in x.chunks_exact_mut(8 * h) {
        let (q0, rest) = chunk.split_at_mut(h);
        let (q1, rest) = rest.split_at_mut(h);
        let (q2, rest) = rest.split_at_mut(h);
        let (q3, rest) = rest.split_at_mut(h);
        let (q4, rest) = rest.split_at_mut(h);
        let (q5, rest) = rest.split_at_mut(h);
        let (q6, q7) = rest.split_at_mut(h);
        for i in 0..h {
            let [mut v0, mut v1, mut v2, mut v3] = [q0[i], q1[i], q2[i], q3[i]];
            let [mut v4, mut v5, mut v6, mut v7] = [q4[i], q5[i], q6[i], q7[i]];
            // Written out (not looped) so that 16-lane values stay in registers.
            macro_rules! bf {
                ($a:ident, $b:ident) => {
                    ($a, $b) = ($a.plus($b), $a.minus($b));
                };
            }
            bf!(v0, v1);
            bf!(v2, v3);
            bf!(v4, v5);
            bf!(v6, v7);
            bf!(v0, v2);
            bf!(v1, v3);
            bf!(v4, v6);
            bf!(v5, v7);
            bf!(v0, v4);
            bf!(v1, v5);
            bf!(v2, v6);
            bf!(v3, v7);
            (q0[i], q1[i], q2[i], q3[i]) = (v0, v1, v2, v3);
            (q4[i], q5[i], q6[i], q7[i]) = (v4, v5, v6, v7);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hash::hash;

    /// The contract's stage-by-stage sweep, scalar.
    pub(crate) fn sweep<A: Accum>(x: &mut [A]) {
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

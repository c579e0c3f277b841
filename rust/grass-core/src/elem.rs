//! Element types: what can be read (`f32`, `f64`, `f16`, `bf16`) and what is accumulated
//! (`f32`, or `f64` for `f64` input) — as Rust types ([`Load`], [`Accum`]) and as the run-time tag
//! of a buffer ([`ElemType`]), shared by the CPU and CUDA paths and the Python binding.
use crate::micro::Micro;
use crate::simd::{Lanes, LANES};
use half::{bf16, f16};
use std::ops::{AddAssign, Mul};

/// An accumulator / output scalar (`f32` or `f64`).
pub trait Accum:
    Copy
    + Send
    + Sync
    + Default
    + AddAssign
    + Mul<Output = Self>
    + PartialEq
    + std::fmt::Debug
    + Micro
    + 'static
{
    /// Additive identity.
    const ZERO: Self;
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Converts from `f32` (exact).
    fn from_f32(v: f32) -> Self;
    /// Negates `self` when `negative` is true, branch-free (flips the IEEE sign bit).
    fn flip(self, negative: bool) -> Self;
    /// `self · a + b` with one rounding (a single instruction only where the caller's target
    /// features include FMA; a slow library call otherwise).
    fn mul_add(self, a: Self, b: Self) -> Self;

    /// `C += A · B` for row-major `A` `(m, k)`, `B` given by its strides `(k, n)`, `C` `(m, n)`
    /// (matrixmultiply's SIMD kernels; each `C` element sums over `k` in the same order for any
    /// `m`, so results do not depend on the batch split).
    fn gemm_acc(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        b: &[Self],
        rsb: usize,
        csb: usize,
        c: &mut [Self],
    );
}

/// Checks the extents a strided `(rows, cols)` view touches.
fn check_extent(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        assert!(
            (rows - 1) * rs + (cols - 1) * cs < len,
            "gemm operand out of bounds"
        );
    }
}

macro_rules! impl_gemm {
    ($f:path) => {
        fn gemm_acc(
            m: usize,
            k: usize,
            n: usize,
            a: &[Self],
            b: &[Self],
            rsb: usize,
            csb: usize,
            c: &mut [Self],
        ) {
            check_extent(a.len(), m, k, k, 1);
            check_extent(b.len(), k, n, rsb, csb);
            check_extent(c.len(), m, n, n, 1);
            if m == 0 || n == 0 || k == 0 {
                return;
            }
            // SAFETY: the three extent checks above prove every element the kernel reads or
            // writes lies inside its slice; `c` is exclusively borrowed and cannot alias `a`/`b`.
            unsafe {
                $f(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    rsb as isize,
                    csb as isize,
                    1.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
    };
}

impl Accum for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn flip(self, negative: bool) -> Self {
        f32::from_bits(self.to_bits() ^ (u32::from(negative) << 31))
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    impl_gemm!(matrixmultiply::sgemm);
}

impl Accum for f64 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
    #[inline(always)]
    fn flip(self, negative: bool) -> Self {
        f64::from_bits(self.to_bits() ^ (u64::from(negative) << 63))
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    impl_gemm!(matrixmultiply::dgemm);
}

/// An input element that is read and widened to the accumulator `A`.
pub trait Load<A: Accum>: Copy + Send + Sync {
    /// Widens to the accumulator type (exact).
    fn load(self) -> A;

    /// Optional fast path: `xt[m][l] = src[l][j0 + m]` (a vectorized transpose). Returns
    /// `false` when not provided, and the caller falls back to element-wise loads.
    fn transpose_block(_src: &[&[Self]; LANES], _j0: usize, _xt: &mut [Lanes<A>]) -> bool {
        false
    }

    /// Optional fast path: the SJLT lane scatter of the first columns `j0 ..` of a block
    /// read straight from the rows (`simd::scatter_rows`); returns how many columns
    /// it did (0 when not provided).
    fn scatter_rows(
        _src: &[&[Self]; LANES],
        _j0: usize,
        _c: usize,
        _entries: &[u32],
        _acc: &mut [Lanes<A>],
    ) -> usize {
        0
    }

    /// Optional fast path: `out[j] = ±x[j]`, negated where bit `j mod 64` of `signs[j / 64]` is
    /// set (a vectorized sign flip). Returns `false` when not provided.
    fn flip_signs(_signs: &[u64], _x: &[Self], _out: &mut [A]) -> bool {
        false
    }

    /// The values as `f32` when `Self` is `f32` (for kernels written for `f32` only).
    fn as_f32(_x: &[Self]) -> Option<&[f32]> {
        None
    }

    /// Optional fast path for 16-bit types: `out[j] = x[j]` widened to `f32` (exactly, as
    /// [`Load::load`]), vectorized. Returns `false` (writing nothing) when not provided.
    fn widen(_x: &[Self], _out: &mut [f32]) -> bool {
        false
    }
}

/// The [`Load::scatter_rows`] of a type with a 16-wide AVX-512 load ([`crate::simd::Load16`]).
macro_rules! direct_scatter {
    () => {
        fn scatter_rows(
            src: &[&[Self]; LANES],
            j0: usize,
            c: usize,
            entries: &[u32],
            acc: &mut [Lanes<f32>],
        ) -> usize {
            crate::simd::scatter_rows(src, j0, c, entries, acc)
        }
    };
}

impl Load<f32> for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }

    fn transpose_block(src: &[&[f32]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
        crate::simd::transpose_f32(src, j0, xt)
    }

    direct_scatter!();

    #[inline(always)]
    fn flip_signs(signs: &[u64], x: &[f32], out: &mut [f32]) -> bool {
        crate::simd::flip_signs_f32(signs, x, out)
    }

    #[inline(always)]
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
}
/// IEEE half → `f32`, exactly, branch-free and inlinable (the `half` crate's `to_f32` checks for
/// F16C at run time on every call, which kept f16 loops scalar: an f16 SRHT took 3× its f32
/// time). The same bits as `f16::to_f32` for every input (tested over all 2¹⁶), NaNs quieted.
#[inline(always)]
pub(crate) fn f16_to_f32(h: f16) -> f32 {
    let h = h.to_bits();
    let sign = u32::from(h & 0x8000) << 16;
    let em = u32::from(h & 0x7fff);
    let bits = if em >= 0x7c00 {
        // ±∞ and NaN: the exponent all ones, the mantissa moved up, NaNs made quiet.
        0x7f80_0000 | ((em & 0x3ff) << 13) | (u32::from(em > 0x7c00) << 22)
    } else if em >= 0x0400 {
        // Normal: rebias the exponent (15 → 127).
        (em << 13) + ((127 - 15) << 23)
    } else {
        // Zero and subnormals: em · 2⁻²⁴, exact (an integer below 2¹⁰ times a power of two,
        // with no subnormal operand, so flush-to-zero settings cannot touch it).
        (em as f32 * f32::from_bits(0x3380_0000)).to_bits()
    };
    f32::from_bits(bits | sign)
}

impl Load<f32> for f16 {
    #[inline(always)]
    fn load(self) -> f32 {
        f16_to_f32(self)
    }

    fn transpose_block(src: &[&[f16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
        crate::simd::transpose_f16(src, j0, xt)
    }

    direct_scatter!();

    fn widen(x: &[f16], out: &mut [f32]) -> bool {
        crate::simd::widen_f16(x, out)
    }
}
impl Load<f32> for bf16 {
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }

    fn transpose_block(src: &[&[bf16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
        crate::simd::transpose_bf16(src, j0, xt)
    }

    direct_scatter!();

    fn widen(x: &[bf16], out: &mut [f32]) -> bool {
        crate::simd::widen_bf16(x, out)
    }
}
impl Load<f64> for f64 {
    #[inline(always)]
    fn load(self) -> f64 {
        self
    }
}

/// The element type of a buffer, known at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// float32.
    F32,
    /// float64.
    F64,
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }
    /// The accumulator / output type: `F64` for `F64`, `F32` otherwise.
    #[must_use]
    pub fn accum(self) -> Self {
        if self == Self::F64 {
            Self::F64
        } else {
            Self::F32
        }
    }
    /// Whether this type is an accumulator type (`F32` or `F64`).
    pub fn is_accum(self) -> bool {
        self.accum() == self
    }
    /// Lower-case name, also the CUDA kernel name suffix (`f16`, `bf16`, `f32`, `f64`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }
}

/// `v` rounded to `f16` and to `bf16`, each with its exact `f32` values (tests of the 16-bit
/// paths compare a projection of the first with one of the second).
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn sixteen_bit(v: &[f32]) -> ((Vec<f16>, Vec<f32>), (Vec<bf16>, Vec<f32>)) {
    let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    let hw = h.iter().map(|x| x.to_f32()).collect();
    let bw = b.iter().map(|x| x.to_f32()).collect();
    ((h, hw), (b, bw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_is_half_to_f32_for_every_input() {
        for b in 0..=u16::MAX {
            let h = f16::from_bits(b);
            let (got, want) = (f16_to_f32(h), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits(),
                "{b:#06x}: {:#010x} vs {:#010x}",
                got.to_bits(),
                want.to_bits()
            );
        }
    }

    #[test]
    fn elem_types() {
        assert_eq!(ElemType::BF16.accum(), ElemType::F32);
        assert_eq!(ElemType::F64.accum(), ElemType::F64);
        assert!(ElemType::F32.is_accum() && !ElemType::F16.is_accum());
        assert_eq!(ElemType::F16.size(), 2);
        assert_eq!(ElemType::BF16.suffix(), "bf16");
    }
}

//! Register-blocked outer-product micro-kernels (`acc += Σ_t a_t ⊗ b_t` on small tiles), shared
//! by FactGraSS's masked outer products ([`crate::outer`]) and the dense projection
//! ([`crate::dense`]): a portable kernel plus AVX2 / AVX-512 ones picked at run time.
use std::ops::{AddAssign, Mul};

/// The arithmetic the portable kernel needs (`f32`, `f64`).
pub trait Scalar: Copy + Default + AddAssign + Mul<Output = Self> + 'static {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// `tile(a, lda, b, ldb, tc, acc, ldc, zero)` of a [`Kernel`].
type TileFn<A> = unsafe fn(&[A], usize, &[A], usize, usize, &mut [A], usize, bool);

/// A register-blocked outer-product kernel: `acc[r·ldc + c] += Σ_t a[t·lda + r] · b[t·ldb + c]`
/// for `t < tc` in token order, `r < mr`, `c < nr`, into an `(mr, nr)` accumulator of row
/// stride `ldc` (starting from zero instead of `acc`'s values when `zero`).
pub struct Kernel<A> {
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    /// `tile(a, lda, b, ldb, tc, acc, ldc, zero)`; panics unless `a` / `b` hold `tc` strided
    /// rows, `ldc ≥ nr` and `acc` holds `mr` rows of stride `ldc`.
    ///
    /// # Safety
    /// The CPU must have the kernel's target features.
    pub(crate) tile: TileFn<A>,
}

/// Outer-product kernels of an accumulator type (`f32`, `f64`; a supertrait of `Accum`).
pub trait Micro: Scalar {
    /// The widest kernel this CPU runs.
    fn kernel() -> Kernel<Self>;
    /// Runs `f` on this thread's two scratch buffers (kept for the thread's lifetime): the
    /// first holds a masked outer product's gather panels, the second a block on its way to
    /// a projection.
    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>, &mut Vec<Self>) -> R) -> R;
}

/// Checks that `a` / `b` hold `tc` rows of strides `lda` / `ldb` and widths `mr` / `nr`, and
/// `acc` `mr` rows of stride `ldc` and width `nr`.
#[allow(clippy::too_many_arguments)]
fn check_panels<A>(
    a: &[A],
    lda: usize,
    b: &[A],
    ldb: usize,
    tc: usize,
    acc: &[A],
    ldc: usize,
    (mr, nr): (usize, usize),
) {
    assert!(
        tc > 0
            && lda >= mr
            && ldb >= nr
            && ldc >= nr
            && a.len() >= (tc - 1) * lda + mr
            && b.len() >= (tc - 1) * ldb + nr
            && acc.len() >= (mr - 1) * ldc + nr,
        "outer-product panels out of bounds"
    );
}

/// The portable kernel (`4 × 4`, separate multiply and add).
#[allow(clippy::too_many_arguments)]
fn tile_portable<A: Scalar>(
    a: &[A],
    lda: usize,
    b: &[A],
    ldb: usize,
    tc: usize,
    acc: &mut [A],
    ldc: usize,
    zero: bool,
) {
    const M: usize = 4;
    check_panels(a, lda, b, ldb, tc, acc, ldc, (M, M));
    let mut c = [[A::default(); M]; M];
    if !zero {
        for (r, row) in c.iter_mut().enumerate() {
            row.copy_from_slice(&acc[r * ldc..][..M]);
        }
    }
    for t in 0..tc {
        let (at, bt) = (&a[t * lda..][..M], &b[t * ldb..][..M]);
        for r in 0..M {
            for k in 0..M {
                c[r][k] += at[r] * bt[k];
            }
        }
    }
    for (r, row) in c.iter().enumerate() {
        acc[r * ldc..][..M].copy_from_slice(row);
    }
}

/// An x86 SIMD kernel: `$mr` rows × `$nv` vectors of `$lanes` lanes, fused multiply-add.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_tile {
    ($name:ident, $feat:literal, $t:ty, $lanes:expr, $mr:expr, $nv:expr,
     $load:ident, $store:ident, $set1:ident, $fma:ident) => {
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        fn $name(
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            tc: usize,
            acc: &mut [$t],
            ldc: usize,
            zero: bool,
        ) {
            use std::arch::x86_64::*;
            const NR: usize = $nv * $lanes;
            check_panels(a, lda, b, ldb, tc, acc, ldc, ($mr, NR));
            let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
            // SAFETY (all pointer reads / writes): rows `r·ldc .. r·ldc + NR` of `acc` for
            // `r < $mr`, and for `t < tc` rows `t·lda .. t·lda + $mr` of `a` and
            // `t·ldb .. t·ldb + NR` of `b` are in bounds (checked above); unaligned loads /
            // stores are used throughout.
            unsafe {
                let mut c = [[$set1(0.0); $nv]; $mr];
                if !zero {
                    for r in 0..$mr {
                        for v in 0..$nv {
                            c[r][v] = $load(pc.add(r * ldc + v * $lanes));
                        }
                    }
                }
                for t in 0..tc {
                    let mut bv = [$set1(0.0); $nv];
                    for v in 0..$nv {
                        bv[v] = $load(pb.add(t * ldb + v * $lanes));
                    }
                    for r in 0..$mr {
                        let ar = $set1(*pa.add(t * lda + r));
                        for v in 0..$nv {
                            c[r][v] = $fma(ar, bv[v], c[r][v]);
                        }
                    }
                }
                for r in 0..$mr {
                    for v in 0..$nv {
                        $store(pc.add(r * ldc + v * $lanes), c[r][v]);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
simd_tile!(
    tile_f32_avx512,
    "avx512f",
    f32,
    16,
    8,
    2,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps
);
#[cfg(target_arch = "x86_64")]
simd_tile!(
    tile_f64_avx512,
    "avx512f",
    f64,
    8,
    8,
    2,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd
);
#[cfg(target_arch = "x86_64")]
simd_tile!(
    tile_f32_avx2,
    "avx2,fma",
    f32,
    8,
    6,
    2,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps
);
#[cfg(target_arch = "x86_64")]
simd_tile!(
    tile_f64_avx2,
    "avx2,fma",
    f64,
    4,
    6,
    2,
    _mm256_loadu_pd,
    _mm256_storeu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd
);

macro_rules! impl_micro {
    ($t:ty, $avx512:ident, $lanes512:expr, $avx2:ident, $lanes2:expr) => {
        impl Micro for $t {
            fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>, &mut Vec<Self>) -> R) -> R {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<(Vec<$t>, Vec<$t>)> =
                        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
                }
                SCRATCH.with(|s| match s.try_borrow_mut() {
                    Ok(mut v) => {
                        let (a, b) = &mut *v;
                        f(a, b)
                    }
                    // Re-entered (a nested call): fresh buffers.
                    Err(_) => f(&mut Vec::new(), &mut Vec::new()),
                })
            }

            fn kernel() -> Kernel<Self> {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        return Kernel {
                            mr: 8,
                            nr: 2 * $lanes512,
                            tile: $avx512,
                        };
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        return Kernel {
                            mr: 6,
                            nr: 2 * $lanes2,
                            tile: $avx2,
                        };
                    }
                }
                Kernel {
                    mr: 4,
                    nr: 4,
                    tile: tile_portable::<$t>,
                }
            }
        }
    };
}
impl_micro!(f32, tile_f32_avx512, 16, tile_f32_avx2, 8);
impl_micro!(f64, tile_f64_avx512, 8, tile_f64_avx2, 4);

/// A 64-bit LCG step returning a value in `[-0.5, 0.5)`: the test inputs of this module,
/// `outer` and `conv`.
#[cfg(test)]
pub(crate) fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU can run (portable, AVX2, AVX-512) against the plain sum, on strided
    /// panels, accumulating onto a non-zero `acc`.
    fn kernels_match<A: Scalar + Into<f64>>(
        kernels: &[(usize, usize, TileFn<A>)],
        from: fn(f64) -> A,
        tol: f64,
    ) {
        let mut st = 11u64;
        for &(mr, nr, tile) in kernels {
            // A strided accumulator (`ldc > nr`), accumulated onto or started from zero; the
            // values between its rows must stay as they are.
            for (ldc, zero) in [(nr, false), (nr + 7, false), (nr + 7, true)] {
                let (tc, lda, ldb) = (37, mr + 3, nr + 5);
                let a: Vec<A> = (0..tc * lda).map(|_| from(lcg(&mut st))).collect();
                let b: Vec<A> = (0..tc * ldb).map(|_| from(lcg(&mut st))).collect();
                let init: Vec<A> = (0..mr * ldc).map(|_| from(lcg(&mut st))).collect();
                let mut acc = init.clone();
                // SAFETY: the kernels listed are the ones this CPU supports (checked by the caller).
                unsafe { tile(&a, lda, &b, ldb, tc, &mut acc, ldc, zero) };
                for r in 0..mr {
                    for c in 0..ldc {
                        let (i, got): (usize, f64) = (r * ldc + c, acc[r * ldc + c].into());
                        if c >= nr {
                            assert!(
                                got == init[i].into(),
                                "{mr}x{nr}: padding [{r}][{c}] changed"
                            );
                            continue;
                        }
                        let start: f64 = if zero { 0.0 } else { init[i].into() };
                        let want = start
                            + (0..tc)
                                .map(|t| a[t * lda + r].into() * b[t * ldb + c].into())
                                .sum::<f64>();
                        assert!(
                            (got - want).abs() <= tol,
                            "{mr}x{nr} ldc {ldc} zero {zero} [{r}][{c}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_sum() {
        let mut k32: Vec<(usize, usize, TileFn<f32>)> = vec![(4, 4, tile_portable::<f32>)];
        let mut k64: Vec<(usize, usize, TileFn<f64>)> = vec![(4, 4, tile_portable::<f64>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                k32.push((6, 16, tile_f32_avx2));
                k64.push((6, 8, tile_f64_avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                k32.push((8, 32, tile_f32_avx512));
                k64.push((8, 16, tile_f64_avx512));
            }
        }
        kernels_match(&k32, |v| v as f32, 1e-5);
        kernels_match(&k64, |v| v, 1e-12);
        let (a, b) = (f32::kernel(), f64::kernel());
        assert!(a.mr * a.nr >= 16 && b.mr * b.nr >= 16);
    }
}

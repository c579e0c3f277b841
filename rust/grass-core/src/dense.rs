//! Dense Gaussian and Rademacher projections, generated on the fly from the hash (no stored
//! `k × p` matrix): the baselines GraSS is compared against.
//!
//! Entry `(i, j)` (output `i`, input `j`) has linear index `n = j·k + i`:
//! * Gaussian: `h = hash(key, n / 2)`; `u₁ = ((h >> 40) + ½)·2⁻²⁴`, `u₂ = ((h >> 16) & 0xFFFFFF)·2⁻²⁴`;
//!   `z = √(−2 ln u₁)·cos(2πu₂)` for even `n`, `sin` for odd `n` (Box–Muller), value `z/√k`, in `f32`,
//!   with the contract's own `ln` and `cos`/`sin` ([`crate::gauss`]): bit-identical everywhere.
//! * Rademacher: bit `n mod 64` of `hash(key, n / 64)`; set = negative; value `±1/√k`.
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::gauss;
use crate::hash::{hash, stream_key, Stream};
use crate::sjlt::SyncPtr;
use crate::{check_len, parallel};
use rayon::prelude::*;

/// Which dense distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseKind {
    /// `N(0, 1/k)` entries.
    Gaussian,
    /// `±1/√k` entries.
    Rademacher,
}

/// Writes the Box–Muller pairs of pair indices `q0, q0 + 1, …`: `zc[t]`, `zs[t]` are entries
/// `2(q0+t)` and `2(q0+t)+1`, computed with the widest vector unit the CPU has (same bits).
fn gaussian_pairs(key: u64, q0: u64, inv: f32, zc: &mut [f32], zs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU supports AVX-512F/DQ (checked just above).
            return unsafe { gaussian_pairs_avx512(key, q0, inv, zc, zs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { gaussian_pairs_avx2(key, q0, inv, zc, zs) };
        }
    }
    gaussian_pairs_portable(key, q0, inv, zc, zs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn gaussian_pairs_avx512(key: u64, q0: u64, inv: f32, zc: &mut [f32], zs: &mut [f32]) {
    gaussian_pairs_portable(key, q0, inv, zc, zs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gaussian_pairs_avx2(key: u64, q0: u64, inv: f32, zc: &mut [f32], zs: &mut [f32]) {
    gaussian_pairs_portable(key, q0, inv, zc, zs);
}

#[inline(always)]
fn gaussian_pairs_portable(key: u64, q0: u64, inv: f32, zc: &mut [f32], zs: &mut [f32]) {
    for (t, (c, s)) in zc.iter_mut().zip(zs.iter_mut()).enumerate() {
        (*c, *s) = gauss::pair(hash(key, q0 + t as u64), inv);
    }
}

/// Output columns per parallel task.
const COLS: usize = 256;
/// Input rows per generated tile.
const ROWS: usize = 128;

/// A seeded, matrix-free dense projection.
#[derive(Debug, Clone)]
pub struct Dense {
    kind: DenseKind,
    in_dim: usize,
    out_dim: usize,
    seed: u64,
    key: u64,
}

impl Dense {
    /// Builds the projection.
    ///
    /// # Errors
    /// `InvalidArgument` when a dimension is zero.
    pub fn new(kind: DenseKind, in_dim: usize, out_dim: usize, seed: u64) -> Result<Self> {
        if in_dim == 0 {
            return Err(invalid("in_dim", "must be at least 1"));
        }
        if out_dim == 0 {
            return Err(invalid("out_dim", "must be at least 1"));
        }
        in_dim.checked_mul(out_dim).ok_or(crate::Error::TooLarge {
            what: "in_dim * out_dim",
        })?;
        let stream = match kind {
            DenseKind::Gaussian => Stream::Gaussian,
            DenseKind::Rademacher => Stream::Rademacher,
        };
        Ok(Self {
            kind,
            in_dim,
            out_dim,
            seed,
            key: stream_key(seed, stream),
        })
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Output dimension.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The distribution.
    pub fn kind(&self) -> DenseKind {
        self.kind
    }

    /// Matrix entry `(i, j)`: output `i`, input `j`.
    #[inline(always)]
    pub fn entry(&self, i: usize, j: usize) -> f32 {
        let n = j as u64 * self.out_dim as u64 + i as u64;
        let inv = 1.0 / (self.out_dim as f32).sqrt();
        match self.kind {
            DenseKind::Gaussian => {
                let (z0, z1) = self.gaussian_pair(n >> 1, inv);
                if n & 1 == 0 {
                    z0
                } else {
                    z1
                }
            }
            DenseKind::Rademacher => {
                let h = hash(self.key, n >> 6);
                if (h >> (n & 63)) & 1 == 1 {
                    -inv
                } else {
                    inv
                }
            }
        }
    }

    /// The Box–Muller pair `(z₀, z₁)/√k` of Gaussian pair index `q` (entries `2q`, `2q + 1`).
    #[inline(always)]
    fn gaussian_pair(&self, q: u64, inv: f32) -> (f32, f32) {
        gauss::pair(hash(self.key, q), inv)
    }

    /// Fills `tile[r][c] = entry(i0 + c, j0 + r)` for a `rows × cols` tile (entries are `f32`,
    /// widened exactly to `A`).
    fn tile<A: Accum>(&self, j0: usize, rows: usize, i0: usize, cols: usize, tile: &mut Vec<A>) {
        tile.clear();
        if self.kind == DenseKind::Rademacher {
            for j in j0..j0 + rows {
                tile.extend((i0..i0 + cols).map(|i| A::from_f32(self.entry(i, j))));
            }
            return;
        }
        // Gaussian: the pairs covering the linear indices `n0 .. n0 + len` of each run, generated in
        // one vectorized pass (entry `2q0 + m` is `zc[m/2]` for even `m`, `zs[m/2]` for odd). A
        // full-width tile (all `k` outputs) is one contiguous run; otherwise one run per row.
        let (k, inv) = (self.out_dim as u64, 1.0 / (self.out_dim as f32).sqrt());
        let (runs, len) = if i0 == 0 && cols as u64 == k {
            (1, rows * cols)
        } else {
            (rows, cols)
        };
        let (mut zc, mut zs) = (vec![0f32; len / 2 + 2], vec![0f32; len / 2 + 2]);
        for r in 0..runs {
            let n0 = (j0 + r) as u64 * k + i0 as u64;
            let q0 = n0 >> 1;
            let count = ((n0 + len as u64 - 1) / 2 - q0 + 1) as usize;
            gaussian_pairs(self.key, q0, inv, &mut zc[..count], &mut zs[..count]);
            let off = (n0 - 2 * q0) as usize;
            tile.extend(
                (off..off + len)
                    .map(|m| A::from_f32(if m & 1 == 0 { zc[m / 2] } else { zs[m / 2] })),
            );
        }
    }

    /// Projects `(batch, in_dim)` → `out` `(batch, out_dim)`; each output is a sum over the
    /// inputs in order (bit-identical for any thread count or batch split).
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn project<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim);
        check_len("x", x.len(), batch, p)?;
        check_len("out", out.len(), batch, k)?;
        if batch == 0 {
            return Ok(());
        }
        let dst = SyncPtr::new(out);
        parallel::install(|| {
            (0..k.div_ceil(COLS)).into_par_iter().for_each(|blk| {
                let i0 = blk * COLS;
                let cols = COLS.min(k - i0);
                let mut acc = vec![A::ZERO; batch * cols];
                let (mut tile, mut xb) = (Vec::new(), Vec::new());
                for j0 in (0..p).step_by(ROWS) {
                    let rows = ROWS.min(p - j0);
                    self.tile(j0, rows, i0, cols, &mut tile);
                    xb.clear();
                    for b in 0..batch {
                        xb.extend(x[b * p + j0..b * p + j0 + rows].iter().map(|v| v.load()));
                    }
                    A::gemm_acc(batch, rows, cols, &xb, &tile, cols, 1, &mut acc);
                }
                for (b, a) in acc.chunks_exact(cols).enumerate() {
                    for (c, &v) in a.iter().enumerate() {
                        dst.write(b * k + i0 + c, v);
                    }
                }
            });
        });
        Ok(())
    }

    /// The adjoint `Pᵀ`: `(batch, out_dim)` → `(batch, in_dim)`.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn transpose<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim);
        check_len("y", y.len(), batch, k)?;
        check_len("out", out.len(), batch, p)?;
        if batch == 0 {
            return Ok(());
        }
        let dst = SyncPtr::new(out);
        let rows_per = (ROWS * COLS / k).clamp(1, ROWS);
        parallel::install(|| {
            (0..p.div_ceil(rows_per)).into_par_iter().for_each(|blk| {
                let j0 = blk * rows_per;
                let rows = rows_per.min(p - j0);
                let mut tile = Vec::with_capacity(rows * k);
                self.tile(j0, rows, 0, k, &mut tile);
                // (batch, rows) = y (batch, k) · tileᵀ (k, rows): tile is row-major (rows, k).
                let mut acc = vec![A::ZERO; batch * rows];
                A::gemm_acc(batch, k, rows, y, &tile, 1, k, &mut acc);
                for (b, a) in acc.chunks_exact(rows).enumerate() {
                    for (r, &v) in a.iter().enumerate() {
                        dst.write(b * p + j0 + r, v);
                    }
                }
            });
        });
        Ok(())
    }
}

//! Dense Gaussian and Rademacher projections, generated on the fly from the hash (no stored
//! `k × p` matrix): the baselines GraSS is compared against.
//!
//! Entry `(i, j)` (output `i`, input `j`) has linear index `n = j·k + i`:
//! * Gaussian: `h = hash(key, n / 2)`; `u₁ = ((h >> 40) + ½)·2⁻²⁴`, `u₂ = ((h >> 16) & 0xFFFFFF)·2⁻²⁴`;
//!   `z = √(−2 ln u₁)·cos(2πu₂)` for even `n`, `sin` for odd `n` (Box–Muller), value `z/√k`, in `f32`,
//!   with the contract's own `ln` and `cos`/`sin` ([`crate::gauss`]): bit-identical everywhere.
//! * Rademacher: bit `n mod 64` of `hash(key, n / 64)`; set = negative; value `±1/√k`.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{at_least_one, Error, Result};
use crate::gauss;
use crate::hash::{hash, stream_key, Stream};
use crate::parallel::{self, SyncPtr};
use crate::projection::Projection;

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
        at_least_one("in_dim", in_dim)?;
        at_least_one("out_dim", out_dim)?;
        in_dim.checked_mul(out_dim).ok_or(Error::TooLarge {
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
            // entries 2q0 + off .. 2q0 + off + len, interleaved: zc[0], zs[0], zc[1], zs[1], …
            let (off, end) = ((n0 - 2 * q0) as usize, (n0 - 2 * q0) as usize + len);
            let start = tile.len();
            tile.resize(start + len, A::ZERO);
            let dst = &mut tile[start..];
            if off == 1 {
                dst[0] = A::from_f32(zs[0]);
            }
            let (c0, c1) = (off.div_ceil(2), end / 2);
            for (d, (&c, &s)) in dst[off & 1..]
                .chunks_exact_mut(2)
                .zip(zc[c0..c1].iter().zip(&zs[c0..c1]))
            {
                d[0] = A::from_f32(c);
                d[1] = A::from_f32(s);
            }
            if end % 2 == 1 {
                dst[len - 1] = A::from_f32(zc[end / 2]);
            }
        }
    }
}

impl Projection for Dense {
    fn in_dim(&self) -> usize {
        self.in_dim
    }
    fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Each output is a sum over the inputs in order (bit-identical for any thread count or
    /// batch split).
    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim);
        // Work items: (block of COLS outputs) × (block of BATCH_BLOCK samples); each generates its
        // matrix tiles (cheap) and accumulates them with the outer-product kernel of `outer.rs`:
        // every output is a sum over the inputs in increasing order, by one item.
        let kern = A::kernel();
        let (mr, nr) = (kern.mr, kern.nr);
        // Split the batch only when there are fewer column blocks than threads: every item
        // generates its own tiles.
        let col_blocks = k.div_ceil(COLS);
        let splits = parallel::get_num_threads().div_ceil(col_blocks).max(1);
        let batch_block = batch.div_ceil(splits).div_ceil(mr) * mr;
        let items: Vec<(usize, usize)> = (0..k.div_ceil(COLS))
            .flat_map(|cb| (0..batch.div_ceil(batch_block)).map(move |bb| (cb, bb)))
            .collect();
        let dst = SyncPtr::new(out);
        let stop = Stop::current();
        parallel::try_for_each(items.len(), |item| {
            let (cb, bb) = items[item];
            let (i0, b0) = (cb * COLS, bb * batch_block);
            let (cols, nb) = (COLS.min(k - i0), batch_block.min(batch - b0));
            let (cols_pad, nb_pad) = (cols.div_ceil(nr) * nr, nb.div_ceil(mr) * mr);
            // acc: micro tiles (row tile r, column tile c), each `mr × nr` row-major
            let mut acc = alloc::vec_of(nb_pad * cols_pad, A::ZERO, "dense accumulators")?;
            let (mut tile, mut tb, mut xt) = (Vec::new(), Vec::new(), Vec::new());
            for j0 in (0..p).step_by(ROWS) {
                stop.check()?;
                let rows = ROWS.min(p - j0);
                self.tile(j0, rows, i0, cols, &mut tile);
                let b_pan: &[A] = if cols == cols_pad {
                    &tile
                } else {
                    tb.clear();
                    for row in tile.chunks_exact(cols) {
                        tb.extend_from_slice(row);
                        tb.resize(tb.len() + cols_pad - cols, A::ZERO);
                    }
                    &tb
                };
                // xt: the batch block's inputs transposed into panels of `mr` samples,
                // `xt[rt][j][r] = x[b0 + rt·mr + r][j0 + j]` (zero-padded)
                xt.clear();
                xt.resize(rows * nb_pad, A::ZERO);
                for b in 0..nb {
                    let xr = &x[(b0 + b) * p + j0..][..rows];
                    let panel = &mut xt[(b / mr) * rows * mr + b % mr..];
                    for (j, v) in xr.iter().enumerate() {
                        panel[j * mr] = v.load();
                    }
                }
                // Column tiles outer: one `b_pan` strip stays in L1 while the panels stream.
                let col_tiles = cols_pad / nr;
                for ct in 0..col_tiles {
                    for rt in 0..nb_pad / mr {
                        let acc_t = &mut acc[(rt * col_tiles + ct) * mr * nr..][..mr * nr];
                        // SAFETY: `A::kernel()` only returns kernels this CPU runs; the panel
                        // holds `rows` rows of `mr`, `b_pan` `rows` rows of stride
                        // `cols_pad ≥ ct·nr + nr`; `acc_t` has `mr · nr` elements.
                        unsafe {
                            (kern.tile)(
                                &xt[rt * rows * mr..][..rows * mr],
                                mr,
                                &b_pan[ct * nr..],
                                cols_pad,
                                rows,
                                acc_t,
                                nr,
                                false,
                            );
                        }
                    }
                }
            }
            for (t, acc_t) in acc.chunks_exact(mr * nr).enumerate() {
                let (r0, c0) = ((t / (cols_pad / nr)) * mr, (t % (cols_pad / nr)) * nr);
                for (r, row) in acc_t.chunks_exact(nr).enumerate() {
                    for (c, &v) in row.iter().enumerate() {
                        if r0 + r < nb && c0 + c < cols {
                            dst.write((b0 + r0 + r) * k + i0 + c0 + c, v);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim);
        let dst = SyncPtr::new(out);
        let rows_per = (ROWS * COLS / k).clamp(1, ROWS);
        let stop = Stop::current();
        parallel::try_for_each(p.div_ceil(rows_per), |blk| {
            stop.check()?;
            let j0 = blk * rows_per;
            let rows = rows_per.min(p - j0);
            let mut tile = alloc::with_capacity(rows * k, "dense matrix tile entries")?;
            self.tile(j0, rows, 0, k, &mut tile);
            // (batch, rows) = y (batch, k) · tileᵀ (k, rows): tile is row-major (rows, k).
            let mut acc = alloc::vec_of(batch * rows, A::ZERO, "dense adjoint sums")?;
            A::gemm_acc(batch, k, rows, y, &tile, 1, k, &mut acc);
            for (b, a) in acc.chunks_exact(rows).enumerate() {
                for (r, &v) in a.iter().enumerate() {
                    dst.write(b * p + j0 + r, v);
                }
            }
            Ok(())
        })
    }
}

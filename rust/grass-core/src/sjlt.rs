//! Sparse Johnson–Lindenstrauss transform (block CountSketch).
//!
//! The `k × p` matrix has, in every column `j`, exactly `c` nonzeros `±1/√c`: repeat `r` of
//! column `j` falls in block `r` of the output, rows `⌊r·k/c⌋ .. ⌊(r+1)·k/c⌋`, so the `c`
//! buckets are always distinct. Bucket and sign come from `hash(key, j·c + r)`.
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::hash::{below, hash, stream_key, Stream};
use crate::lanes::{gather_lanes, lane_rows, project_group, project_one, Lanes, LANES};
use crate::{check_len, parallel};
use rayon::prelude::*;

/// Largest `in_dim · c` whose index table is cached (larger ones are hashed on the fly).
pub const TABLE_LIMIT: usize = 1 << 25;
/// Coordinates processed per block (the unit of on-the-fly index generation).
pub(crate) const BLOCK: usize = 4096;
/// Batches up to this size are projected sample by sample (see [`Sjlt::project_with`]).
pub(crate) const SCALAR_ROWS: usize = 2;
/// Bit of a table entry that holds the sign (set = negative).
pub const SIGN_BIT: u32 = 1 << 31;

/// A seeded SJLT from `in_dim` to `out_dim` with `c` nonzeros per column.
#[derive(Debug, Clone)]
pub struct Sjlt {
    in_dim: usize,
    out_dim: usize,
    c: usize,
    seed: u64,
    key: u64,
    table: Option<Vec<u32>>,
}

impl Sjlt {
    /// Builds the transform.
    ///
    /// # Errors
    /// `InvalidArgument` when a dimension is zero, `out_dim ≥ 2³¹`, or `c ∉ 1..=out_dim`.
    pub fn new(in_dim: usize, out_dim: usize, c: usize, seed: u64) -> Result<Self> {
        if in_dim == 0 {
            return Err(invalid("in_dim", "must be at least 1"));
        }
        if out_dim == 0 || out_dim >= SIGN_BIT as usize {
            return Err(invalid(
                "out_dim",
                format!("must be in 1..2^31, got {out_dim}"),
            ));
        }
        if c == 0 || c > out_dim {
            return Err(invalid(
                "c",
                format!("must be in 1..=out_dim ({out_dim}), got {c}"),
            ));
        }
        let len = in_dim
            .checked_mul(c)
            .ok_or(crate::Error::TooLarge { what: "in_dim * c" })?;
        let mut s = Self {
            in_dim,
            out_dim,
            c,
            seed,
            key: stream_key(seed, Stream::Sjlt),
            table: None,
        };
        if len <= TABLE_LIMIT {
            let mut table = vec![0u32; len];
            parallel::install(|| {
                table
                    .par_chunks_mut(BLOCK * c)
                    .enumerate()
                    .for_each(|(i, chunk)| s.fill_entries(i * BLOCK, chunk));
            });
            s.table = Some(table);
        }
        Ok(s)
    }

    /// Input dimension `p`.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Output dimension `k`.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// Nonzeros per column.
    pub fn c(&self) -> usize {
        self.c
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The scale of every nonzero, `1/√c`, rounded to `A`.
    pub fn scale<A: Accum>(&self) -> A {
        A::from_f64(1.0 / (self.c as f64).sqrt())
    }

    /// The packed entry (bucket | sign bit) of repeat `r` of column `j`.
    #[inline(always)]
    pub fn entry(&self, j: usize, r: usize) -> u32 {
        let (k, c) = (self.out_dim as u64, self.c as u64);
        let lo = r as u64 * k / c;
        let hi = (r as u64 + 1) * k / c;
        let h = hash(self.key, j as u64 * c + r as u64);
        let bucket = lo + below(h, hi - lo);
        bucket as u32 | ((h as u32 & 1) << 31)
    }

    /// Writes the entries of columns `j0 ..` into `out` (`c` per column, in column order).
    pub(crate) fn fill_entries(&self, j0: usize, out: &mut [u32]) {
        for (i, e) in out.iter_mut().enumerate() {
            *e = self.entry(j0 + i / self.c, i % self.c);
        }
    }

    /// Entries of columns `j0 .. j0 + n`: borrowed from the table or generated into `buf`.
    pub(crate) fn entries<'a>(&'a self, j0: usize, n: usize, buf: &'a mut Vec<u32>) -> &'a [u32] {
        if let Some(t) = &self.table {
            return &t[j0 * self.c..(j0 + n) * self.c];
        }
        buf.resize(n * self.c, 0);
        self.fill_entries(j0, buf);
        buf
    }

    /// All `(bucket, negative)` pairs of column `j`.
    pub fn column(&self, j: usize) -> Vec<(usize, bool)> {
        (0..self.c)
            .map(|r| self.entry(j, r))
            .map(|e| ((e & !SIGN_BIT) as usize, e & SIGN_BIT != 0))
            .collect()
    }

    /// Projects a row-major `(batch, in_dim)` input into `out` `(batch, out_dim)` (overwritten).
    ///
    /// Each sample's sum runs over the coordinates in order, so the result is bit-identical for
    /// any thread count and any split of the batch.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn project<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        check_len("x", x.len(), batch, self.in_dim)?;
        check_len("out", out.len(), batch, self.out_dim)?;
        let p = self.in_dim;
        self.project_with(
            batch,
            out,
            p,
            |b0, rows, j0, xt| {
                let (n, src) = (xt.len(), lane_rows(x, p, b0, rows));
                if !T::transpose_block(&src, j0, xt) {
                    gather_lanes(&src, j0..j0 + n, xt);
                }
            },
            |b, j0, vals| {
                let row = &x[b * p + j0..][..vals.len()];
                for (v, &xv) in vals.iter_mut().zip(row) {
                    *v = xv.load();
                }
            },
        );
        Ok(())
    }

    /// Core loop shared with GraSS: samples are processed in groups of [`LANES`] (see
    /// [`crate::lanes`]); `fill(b0, rows, j0, xt)` writes column `j0 + m` of sample `b0 + l` into
    /// `xt[m][l]` for `l < rows`. Batches of at most [`SCALAR_ROWS`] samples are projected one
    /// sample per task instead (the same arithmetic in the same order, without a lane group's
    /// 16-wide work for one sample); `row(b, j0, vals)` writes columns `j0 ..` of sample `b`.
    pub(crate) fn project_with<A: Accum>(
        &self,
        batch: usize,
        out: &mut [A],
        n_cols: usize,
        fill: impl Fn(usize, usize, usize, &mut [Lanes<A>]) + Sync,
        row: impl Fn(usize, usize, &mut [A]) + Sync,
    ) {
        let k = self.out_dim;
        if batch == 0 {
            return;
        }
        if batch <= SCALAR_ROWS {
            let one =
                |(b, o): (usize, &mut [A])| project_one(self, n_cols, |j0, v| row(b, j0, v), o);
            if batch == 1 || n_cols < 1 << 16 {
                out.chunks_mut(k).enumerate().for_each(one);
            } else {
                parallel::install(|| out.par_chunks_mut(k).enumerate().for_each(one));
            }
            return;
        }
        if batch <= LANES {
            // One group: nothing to parallelize, so run on the calling thread (waking pool
            // threads costs more than such a call on a virtualized machine).
            project_group(self, n_cols, batch, |j0, xt| fill(0, batch, j0, xt), out);
            return;
        }
        parallel::install(|| {
            out.par_chunks_mut(LANES * k)
                .enumerate()
                .for_each(|(g, group)| {
                    let rows = group.len() / k;
                    project_group(
                        self,
                        n_cols,
                        rows,
                        |j0, xt| fill(g * LANES, rows, j0, xt),
                        group,
                    );
                });
        });
    }

    /// Applies the adjoint `Pᵀ`: `y` `(batch, out_dim)` → `out` `(batch, in_dim)` (overwritten).
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn transpose<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        check_len("y", y.len(), batch, self.out_dim)?;
        check_len("out", out.len(), batch, self.in_dim)?;
        let p = self.in_dim;
        let dst = SyncPtr::new(out);
        self.transpose_with(y, batch, p, |b, m, v| dst.write(b * p + m, v));
        Ok(())
    }

    /// Shared adjoint loop: `put(b, m, value)` receives `(Pᵀy)[b, m]` for every `m < n_cols`.
    pub(crate) fn transpose_with<A: Accum>(
        &self,
        y: &[A],
        batch: usize,
        n_cols: usize,
        put: impl Fn(usize, usize, A) + Sync,
    ) {
        let (k, c) = (self.out_dim, self.c);
        let scale: A = self.scale();
        parallel::install(|| {
            (0..n_cols.div_ceil(BLOCK)).into_par_iter().for_each(|blk| {
                let j0 = blk * BLOCK;
                let n = BLOCK.min(n_cols - j0);
                let mut buf = Vec::new();
                let entries = self.entries(j0, n, &mut buf);
                for b in 0..batch {
                    let yb = &y[b * k..(b + 1) * k];
                    for (m, col) in entries.chunks_exact(c).enumerate() {
                        let mut acc = A::ZERO;
                        for &e in col {
                            acc += yb[(e & !SIGN_BIT) as usize].flip(e & SIGN_BIT != 0);
                        }
                        put(b, j0 + m, if c > 1 { acc * scale } else { acc });
                    }
                }
            });
        });
    }
}

/// A mutable output shared by parallel workers that write disjoint elements.
pub(crate) struct SyncPtr<A> {
    ptr: *mut A,
    len: usize,
}

// SAFETY: `SyncPtr` is only built from a `&mut [A]` that outlives the parallel region using it,
// and its users write each index from exactly one worker (they own disjoint column blocks), so
// sharing the pointer across threads creates no data race.
unsafe impl<A: Send> Sync for SyncPtr<A> {}
// SAFETY: as above.
unsafe impl<A: Send> Send for SyncPtr<A> {}

impl<A> SyncPtr<A> {
    pub(crate) fn new(out: &mut [A]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// Writes element `i` (each index by exactly one worker; see the `Sync` impl).
    #[inline(always)]
    pub(crate) fn write(&self, i: usize, v: A) {
        assert!(i < self.len);
        // SAFETY: `i < len` (checked), the slice is alive for the region, and no other worker
        // writes or reads index `i` concurrently.
        unsafe { self.ptr.add(i).write(v) };
    }
}

//! Sparse Johnson–Lindenstrauss transform (block CountSketch).
//!
//! The `k × p` matrix has, in every column `j`, exactly `c` nonzeros `±1/√c`: repeat `r` of
//! column `j` falls in block `r` of the output, rows `⌊r·k/c⌋ .. ⌊(r+1)·k/c⌋`, so the `c`
//! buckets are always distinct. Bucket and sign come from `hash(key, j·c + r)` ([`Buckets`]).
use crate::buckets::{Buckets, BLOCK};
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{at_least_one, invalid, Error, Result};
use crate::hash::{stream_key, Stream};
use crate::lanes::{
    gather_lanes, lane_rows, lead_to_line, project_group, project_one, project_one_by_repeat,
    Lanes, LANES,
};
use crate::parallel::{self, SyncPtr};
use crate::projection::Projection;

pub use crate::buckets::{SIGN_BIT, TABLE_LIMIT};

/// Batches up to this size are projected sample by sample (see [`Sjlt::project_with`]).
pub(crate) const SCALAR_ROWS: usize = 2;

/// From this many columns, one sample with `c ≥ 2` is projected by its repeats in parallel
/// ([`project_one_by_repeat`]) when there is more than one thread.
const REPEAT_SPLIT: usize = 1 << 15;

/// A seeded SJLT from `in_dim` to `out_dim` with `c` nonzeros per column.
#[derive(Debug, Clone)]
pub struct Sjlt {
    seed: u64,
    buckets: Buckets,
}

impl Sjlt {
    /// Builds the transform.
    ///
    /// # Errors
    /// `InvalidArgument` when a dimension is zero, `out_dim ≥ 2³¹`, or `c ∉ 1..=out_dim`;
    /// `TooLarge` when `in_dim · c` overflows. Nothing is allocated: the entry table of a small
    /// transform is built on its first projection (which may then fail with `OutOfMemory`).
    pub fn new(in_dim: usize, out_dim: usize, c: usize, seed: u64) -> Result<Self> {
        at_least_one("in_dim", in_dim)?;
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
        in_dim
            .checked_mul(c)
            .ok_or(Error::TooLarge { what: "in_dim * c" })?;
        let key = stream_key(seed, Stream::Sjlt);
        Ok(Self {
            seed,
            buckets: Buckets::new(in_dim, out_dim, c, key),
        })
    }

    /// Nonzeros per column.
    pub fn c(&self) -> usize {
        self.buckets.c()
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The scale of every nonzero, `1/√c`, rounded to `A`.
    pub fn scale<A: Accum>(&self) -> A {
        self.buckets.scale()
    }
    /// The packed entry (bucket | sign bit) of repeat `r` of column `j`.
    #[inline(always)]
    pub fn entry(&self, j: usize, r: usize) -> u32 {
        self.buckets.entry(j, r)
    }
    /// The hashed entry table (built lazily by [`Buckets::prepare`]).
    pub(crate) fn buckets(&self) -> &Buckets {
        &self.buckets
    }
    /// All `(bucket, negative)` pairs of column `j`.
    pub fn column(&self, j: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.buckets.column(j)
    }

    /// Core loop shared with GraSS: samples are processed in groups of [`LANES`] (see
    /// [`crate::lanes`]); `fill(b0, rows, j0, xt)` writes column `j0 + m` of sample `b0 + l` into
    /// `xt[m][l]` for `l < rows`. Batches of at most [`SCALAR_ROWS`] samples are projected one
    /// sample per task instead (the same arithmetic in the same order, without a lane group's
    /// 16-wide work for one sample); `row(b, j0, vals)` writes columns `j0 ..` of sample `b`.
    /// `lead` is the length of the lane groups' first column block ([`crate::lanes::blocks`]).
    /// `direct(b0, rows, j0, entries, acc)` may do a block's scatter straight from the input,
    /// returning how many of its first columns it did (the rest go through `fill`).
    ///
    /// Each sample's sum runs over the columns in order, so the result is bit-identical for any
    /// thread count and any split of the batch.
    pub(crate) fn project_with<A: Accum>(
        &self,
        batch: usize,
        out: &mut [A],
        n_cols: usize,
        lead: usize,
        fill: impl Fn(usize, usize, usize, &mut [Lanes<A>]) + Sync,
        direct: impl Fn(usize, usize, usize, &[u32], &mut [Lanes<A>]) -> usize + Sync,
        row: impl Fn(usize, usize, &mut [A]) + Sync,
    ) -> Result<()> {
        let (k, b) = (self.out_dim(), &self.buckets);
        b.prepare()?;
        let stop = Stop::current();
        if batch <= SCALAR_ROWS {
            if batch == 1 && b.c() >= 2 && n_cols >= REPEAT_SPLIT && parallel::get_num_threads() > 1
            {
                return project_one_by_repeat(b, n_cols, |j0, v| row(0, j0, v), out, &stop);
            }
            let one =
                |(i, o): (usize, &mut [A])| project_one(b, n_cols, |j0, v| row(i, j0, v), o, &stop);
            if batch == 1 || n_cols < 1 << 16 {
                return out.chunks_mut(k).enumerate().try_for_each(one);
            }
            return parallel::try_chunks_mut(out, k, |i, o| one((i, o)));
        }
        if batch <= LANES {
            // One group: nothing to parallelize, so run on the calling thread (waking pool
            // threads costs more than such a call on a virtualized machine).
            return project_group(
                b,
                n_cols,
                lead,
                batch,
                |j0, xt| fill(0, batch, j0, xt),
                |j0, e, acc| direct(0, batch, j0, e, acc),
                out,
                &stop,
            );
        }
        parallel::try_chunks_mut(out, LANES * k, |g, group| {
            let rows = group.len() / k;
            let fill_g = |j0, xt: &mut [Lanes<A>]| fill(g * LANES, rows, j0, xt);
            let direct_g =
                |j0, e: &[u32], acc: &mut [Lanes<A>]| direct(g * LANES, rows, j0, e, acc);
            project_group(b, n_cols, lead, rows, fill_g, direct_g, group, &stop)
        })
    }

    /// Shared adjoint loop: `put(b, m, value)` receives `(Pᵀy)[b, m]` for every `m < n_cols`.
    pub(crate) fn transpose_with<A: Accum>(
        &self,
        y: &[A],
        batch: usize,
        n_cols: usize,
        put: impl Fn(usize, usize, A) + Sync,
    ) -> Result<()> {
        let (k, c) = (self.out_dim(), self.c());
        let scale: A = self.scale();
        self.buckets.prepare()?;
        let stop = Stop::current();
        parallel::try_for_each(n_cols.div_ceil(BLOCK), |blk| {
            stop.check()?;
            let j0 = blk * BLOCK;
            let n = BLOCK.min(n_cols - j0);
            let mut buf = Vec::new();
            let entries = self.buckets.entries(j0, n, &mut buf)?;
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
            Ok(())
        })
    }
}

impl Projection for Sjlt {
    fn in_dim(&self) -> usize {
        self.buckets.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.buckets.out_dim()
    }

    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let p = self.in_dim();
        let fill = |b0, rows, j0, xt: &mut [Lanes<A>]| {
            let (n, src) = (xt.len(), lane_rows(x, p, b0, rows));
            if !T::transpose_block(&src, j0, xt) {
                gather_lanes(&src, j0..j0 + n, xt);
            }
        };
        let row = |b, j0, vals: &mut [A]| {
            let row = &x[b * p + j0..][..vals.len()];
            for (v, &xv) in vals.iter_mut().zip(row) {
                *v = xv.load();
            }
        };
        let direct = |b0, rows, j0, e: &[u32], acc: &mut [Lanes<A>]| {
            T::scatter_rows(&lane_rows(x, p, b0, rows), j0, self.c(), e, acc)
        };
        self.project_with(batch, out, p, lead_to_line(x, p), fill, direct, row)
    }

    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let p = self.in_dim();
        let dst = SyncPtr::new(out);
        self.transpose_with(y, batch, p, |b, m, v| dst.write(b * p + m, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows that start off a cache line (a numpy array's data, 16 bytes past one) are blocked so
    /// that later blocks' loads are aligned, and the lane groups' scatter read straight from the
    /// rows (AVX-512) or through a transposed block: the same bits as each sample projected
    /// alone (scalar code), at every float offset, with and without a tail of < 16 columns.
    #[test]
    fn rows_off_a_cache_line_project_alike() {
        for p in [1024usize, 1000] {
            rows_off_a_line(p);
        }
    }

    fn rows_off_a_line(p: usize) {
        let (k, batch) = (64usize, 21usize);
        let base: Vec<f32> = (0..batch * p + 16)
            .map(|i| (i as f32 * 0.37).cos() * 2.0)
            .collect();
        for c in [1usize, 3] {
            let s = Sjlt::new(p, k, c, 5).unwrap();
            let mut leads = Vec::new();
            for off in 0..16 {
                let x = &base[off..off + batch * p];
                leads.push(lead_to_line(x, p));
                let mut got = vec![0f32; batch * k];
                s.project(x, batch, &mut got).unwrap();
                for b in 0..batch {
                    let mut one = vec![0f32; k];
                    s.project(&x[b * p..(b + 1) * p], 1, &mut one).unwrap();
                    assert_eq!(
                        &got[b * k..(b + 1) * k],
                        &one[..],
                        "c {c}, offset {off}, row {b}"
                    );
                }
            }
            if p.is_multiple_of(16) {
                assert!(leads.iter().filter(|&&l| l > 0).count() >= 15, "{leads:?}");
            }
        }
    }

    /// 16-bit inputs (vectorized widening transposes in lane groups) project to the bits of their
    /// exact `f32` values, for every batch split: scalar rows, partial and whole lane groups.
    #[test]
    fn half_inputs_project_as_their_f32_values() {
        let (p, k) = (1000usize, 64usize);
        for c in [1usize, 3] {
            let s = Sjlt::new(p, k, c, 9).unwrap();
            for batch in [1usize, 2, 3, 16, 21] {
                let v: Vec<f32> = (0..batch * p)
                    .map(|i| (i as f32 * 0.61).sin() * 3.0)
                    .collect();
                let ((h, hw), (b, bw)) = crate::elem::sixteen_bit(&v);
                let mut got = vec![0f32; batch * k];
                let mut want = vec![0f32; batch * k];
                s.project(&h, batch, &mut got).unwrap();
                s.project(&hw, batch, &mut want).unwrap();
                assert_eq!(got, want, "f16, c {c}, batch {batch}");
                s.project(&b, batch, &mut got).unwrap();
                s.project(&bw, batch, &mut want).unwrap();
                assert_eq!(got, want, "bf16, c {c}, batch {batch}");
            }
        }
    }
}

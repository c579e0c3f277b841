//! GraSS: `SJLT_{mask_dim → out_dim} ∘ MASK_{in_dim → mask_dim}`, fused so that only the
//! `mask_dim` selected coordinates of the input are ever read (sub-linear in `in_dim`).
//!
//! With the same seed, `Grass::new(p, k, k', c, s)` is exactly `Sjlt::new(k', k, c, s)` applied
//! after `Mask::new(p, k', s, false)`.
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::lanes::{gather_lanes, lane_rows, Lanes, LBLOCK};
use crate::mask::{dense, gather_rows, group, streams_dense_masks, Lines, Mask, GATHER_ROWS};
use crate::projection::Projection;
use crate::simd::LANES;
use crate::sjlt::Sjlt;

/// A seeded GraSS compressor.
#[derive(Debug, Clone)]
pub struct Grass {
    mask: Mask,
    sjlt: Sjlt,
}

impl Grass {
    /// Builds the compressor.
    ///
    /// # Errors
    /// `InvalidArgument` unless `out_dim ≤ mask_dim ≤ in_dim` and `1 ≤ c ≤ out_dim`;
    /// `OutOfMemory`; `Cancelled`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        mask_dim: usize,
        c: usize,
        seed: u64,
    ) -> Result<Self> {
        if mask_dim < out_dim {
            return Err(invalid(
                "mask_dim",
                format!("must be ≥ out_dim ({out_dim}), got {mask_dim}"),
            ));
        }
        if mask_dim > in_dim {
            return Err(invalid(
                "mask_dim",
                format!("must be ≤ in_dim ({in_dim}), got {mask_dim}"),
            ));
        }
        let sjlt = Sjlt::new(mask_dim, out_dim, c, seed)?;
        Ok(Self {
            mask: Mask::new(in_dim, mask_dim, seed, false)?,
            sjlt,
        })
    }

    /// The mask stage.
    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    /// The SJLT stage.
    pub fn sjlt(&self) -> &Sjlt {
        &self.sjlt
    }
}

impl Projection for Grass {
    fn in_dim(&self) -> usize {
        self.mask.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.sjlt.out_dim()
    }

    /// Projects, reading only the masked coordinates.
    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let fill = Fill::for_mask(self.mask.indices(), self.in_dim(), std::mem::size_of::<T>());
        self.project_fill(x, batch, out, fill)
    }

    /// The adjoint `Maskᵀ · SJLTᵀ`.
    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let (p, idx) = (self.in_dim(), self.mask.indices());
        let dst = Mask::zero_out(out);
        self.sjlt
            .transpose_with(y, batch, idx.len(), |b, m, v| dst.write(b * p + idx[m], v))
    }
}

/// How GraSS gathers a lane group's masked columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// [`GATHER_ROWS`] rows at a time in memory order into a block, bringing the lines in as
    /// the [`Lines`] say, then transposed in L1 ([`fill_block`]).
    Block(Lines),
    /// The 16 lanes' rows column by column, straight into the transposed layout.
    Lanes,
}

impl Fill {
    /// A streamed block for dense masks where the CPU [`streams_dense_masks`] (AMD); the column gather
    /// for the other dense masks; a touched-line block for sparse ones. Measured (`floor` bench,
    /// medians of 7–9 alternating runs): on an AMD VM the 16 column streams of [`Fill::Lanes`]
    /// were followed worse than four streamed rows (session 7); on an Intel Xeon (family 6 model
    /// 207, session 9), 2¹⁷ → 8192 → 2048 (64 % of the lines) took 0.72 ms by columns, 0.83 ms
    /// by touched-line blocks and 1.03 ms streamed, and 2²³ → 8192 → 2048 (1.6 % of the lines,
    /// L3-resident) 2.4 ms by columns and 1.96 ms by touched-line blocks (equal, ~5 ms, with the
    /// lines evicted).
    fn for_mask(idx: &[usize], p: usize, elem: usize) -> Self {
        match (dense(idx, p, elem), streams_dense_masks()) {
            (true, true) => Self::Block(Lines::Stream),
            (true, false) => Self::Lanes,
            (false, _) => Self::Block(Lines::Touched),
        }
    }
}

impl Grass {
    /// [`Projection::project_batch`] with each lane group's columns gathered as `fill` says.
    fn project_fill<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
        fill: Fill,
    ) -> Result<()> {
        let (p, idx) = (self.in_dim(), self.mask.indices());
        let fill = |b0, rows, j0, xt: &mut [Lanes<A>]| {
            let sel = &idx[j0..j0 + xt.len()];
            match fill {
                Fill::Block(lines) => fill_block(&x[b0 * p..(b0 + rows) * p], p, sel, xt, lines),
                Fill::Lanes => gather_lanes(&lane_rows(x, p, b0, rows), sel.iter().copied(), xt),
            }
        };
        let row = |b, j0, vals: &mut [A]| {
            let row = &x[b * p..(b + 1) * p];
            for (v, &i) in vals.iter_mut().zip(&idx[j0..]) {
                *v = row[i].load();
            }
        };
        self.sjlt
            .project_with(batch, out, idx.len(), 0, fill, |_, _, _, _, _| 0, row)
    }
}

/// `xt[m][l] = x[l][sel[m]]` for the (at most [`LANES`]) rows of `x` (the other lanes zero): the
/// rows are gathered [`GATHER_ROWS`] at a time in memory order, bringing the lines in as `lines`
/// says (as MASK does), into a row-major block that is then transposed in L1.
fn fill_block<T: Load<A>, A: Accum>(
    x: &[T],
    p: usize,
    sel: &[usize],
    xt: &mut [Lanes<A>],
    lines: Lines,
) {
    let (rows, n) = (x.len() / p, sel.len());
    assert!(rows <= LANES && n <= LBLOCK && xt.len() == n);
    let mut block = [A::ZERO; LANES * LBLOCK];
    for g in 0..rows.div_ceil(GATHER_ROWS) {
        let (xg, after) = group(x, p, g);
        // SAFETY: every mask index is `< p` (`Mask::new` samples them from `0..p`).
        unsafe {
            gather_rows(
                xg,
                p,
                sel,
                &mut block[g * GATHER_ROWS * LBLOCK..],
                LBLOCK,
                lines,
                after,
            );
        }
    }
    for (m, d) in xt.iter_mut().enumerate() {
        for (l, v) in d.iter_mut().enumerate() {
            *v = block[l * LBLOCK + m];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lane group (streamed and touched-line block gathers and column gathers, each for
    /// dense and sparse masks) gives the bits of projecting each sample alone (the scalar path),
    /// for batches that fill lane groups partly and wholly, in f32 and f64.
    #[test]
    fn lane_groups_match_one_sample_at_a_time() {
        for (p, kp, k) in [
            (3000usize, 1500usize, 64usize),
            (3000, 40, 16),
            (700, 700, 32),
        ] {
            let g = Grass::new(p, k, kp, 2, 5).unwrap();
            for batch in [3usize, 5, 16, 17, 40] {
                let x: Vec<f64> = (0..batch * p).map(|i| (i as f64 * 0.37).sin()).collect();
                let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                for fill in [
                    Fill::Block(Lines::Stream),
                    Fill::Block(Lines::Touched),
                    Fill::Lanes,
                ] {
                    let (mut out, mut out32) = (vec![0.0; batch * k], vec![0f32; batch * k]);
                    g.project_fill(&x, batch, &mut out, fill).unwrap();
                    g.project_fill(&x32, batch, &mut out32, fill).unwrap();
                    for b in 0..batch {
                        let (mut one, mut one32) = (vec![0.0; k], vec![0f32; k]);
                        g.project(&x[b * p..(b + 1) * p], 1, &mut one).unwrap();
                        g.project(&x32[b * p..(b + 1) * p], 1, &mut one32).unwrap();
                        let at = format!("p {p} k' {kp} batch {batch} {fill:?}");
                        assert_eq!(out[b * k..(b + 1) * k], one[..], "f64 {at}");
                        assert_eq!(out32[b * k..(b + 1) * k], one32[..], "f32 {at}");
                    }
                }
            }
        }
    }
}

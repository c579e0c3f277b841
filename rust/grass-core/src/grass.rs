//! GraSS: `SJLT_{mask_dim → out_dim} ∘ MASK_{in_dim → mask_dim}`, fused so that only the
//! `mask_dim` selected coordinates of the input are ever read (sub-linear in `in_dim`).
//!
//! With the same seed, `Grass::new(p, k, k', c, s)` is exactly `Sjlt::new(k', k, c, s)` applied
//! after `Mask::new(p, k', s, false)`.
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::lanes::{gather_lanes, lane_rows, Lanes};
use crate::mask::Mask;
use crate::projection::Projection;
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
        let (p, idx) = (self.in_dim(), self.mask.indices());
        let fill = |b0, rows, j0, xt: &mut [Lanes<A>]| {
            let sel = &idx[j0..j0 + xt.len()];
            gather_lanes(&lane_rows(x, p, b0, rows), sel.iter().copied(), xt);
        };
        let row = |b, j0, vals: &mut [A]| {
            let row = &x[b * p..(b + 1) * p];
            for (v, &i) in vals.iter_mut().zip(&idx[j0..]) {
                *v = row[i].load();
            }
        };
        self.sjlt.project_with(batch, out, idx.len(), fill, row)
    }

    /// The adjoint `Maskᵀ · SJLTᵀ`.
    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let (p, idx) = (self.in_dim(), self.mask.indices());
        let dst = Mask::zero_out(out);
        self.sjlt
            .transpose_with(y, batch, idx.len(), |b, m, v| dst.write(b * p + idx[m], v))
    }
}

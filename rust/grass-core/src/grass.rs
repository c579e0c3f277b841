//! GraSS: `SJLT_{mask_dim → out_dim} ∘ MASK_{in_dim → mask_dim}`, fused so that only the
//! `mask_dim` selected coordinates of the input are ever read (sub-linear in `in_dim`).
//!
//! With the same seed, `Grass::new(p, k, k', c, s)` is exactly `Sjlt::new(k', k, c, s)` applied
//! after `Mask::new(p, k', s, false)`.
use crate::check_len;
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::lanes::{gather_lanes, lane_rows};
use crate::mask::Mask;
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
    /// `InvalidArgument` unless `out_dim ≤ mask_dim ≤ in_dim` and `1 ≤ c ≤ out_dim`.
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
    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.mask.in_dim()
    }
    /// Output dimension.
    pub fn out_dim(&self) -> usize {
        self.sjlt.out_dim()
    }

    /// Projects `(batch, in_dim)` → `out` `(batch, out_dim)`, reading only masked coordinates.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn project<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let p = self.in_dim();
        check_len("x", x.len(), batch, p)?;
        check_len("out", out.len(), batch, self.out_dim())?;
        let idx = self.mask.indices();
        self.sjlt.project_with(
            batch,
            out,
            idx.len(),
            |b0, rows, j0, xt| {
                let sel = &idx[j0..j0 + xt.len()];
                gather_lanes(&lane_rows(x, p, b0, rows), sel.iter().copied(), xt);
            },
            |b, j0, vals| {
                let row = &x[b * p..(b + 1) * p];
                for (v, &i) in vals.iter_mut().zip(&idx[j0..]) {
                    *v = row[i].load();
                }
            },
        );
        Ok(())
    }

    /// The adjoint `Maskᵀ · SJLTᵀ`: `(batch, out_dim)` → `(batch, in_dim)`.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn transpose<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let p = self.in_dim();
        check_len("y", y.len(), batch, self.out_dim())?;
        check_len("out", out.len(), batch, p)?;
        let idx = self.mask.indices();
        let dst = Mask::zero_out(out);
        self.sjlt
            .transpose_with(y, batch, idx.len(), |b, m, v| dst.write(b * p + idx[m], v));
        Ok(())
    }
}

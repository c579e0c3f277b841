//! The [`Projection`] trait: what every projector implements, with the shape checks of
//! `project` / `transpose` written once.
use crate::elem::{Accum, Load};
use crate::error::{check_len, Result};

/// A fixed linear map `P` from `in_dim` to `out_dim`, applied to row-major batches.
///
/// Implementors provide [`project_batch`](Self::project_batch) and
/// [`transpose_batch`](Self::transpose_batch), which may assume checked buffer lengths and a
/// non-empty batch; callers use [`project`](Self::project) and [`transpose`](Self::transpose).
///
/// Long calls poll the calling thread's cancellation flag ([`crate::cancel`]); a cancelled call
/// returns `Cancelled` and leaves `out` unspecified.
pub trait Projection: Send + Sync {
    /// Input dimension `p`.
    fn in_dim(&self) -> usize;
    /// Output dimension `k`.
    fn out_dim(&self) -> usize;

    /// `out = P x` for `batch ≥ 1` samples; `x.len() == batch · in_dim` and
    /// `out.len() == batch · out_dim` (checked by [`project`](Self::project)).
    ///
    /// # Errors
    /// `OutOfMemory` when scratch space cannot be allocated; `Cancelled`.
    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()>;

    /// `out = Pᵀ y` for `batch ≥ 1` samples; `y.len() == batch · out_dim` and
    /// `out.len() == batch · in_dim` (checked by [`transpose`](Self::transpose)).
    ///
    /// # Errors
    /// `OutOfMemory` when scratch space cannot be allocated; `Cancelled`.
    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()>;

    /// Projects a row-major `(batch, in_dim)` input into `out` `(batch, out_dim)` (overwritten).
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`; `OutOfMemory`; `Cancelled`.
    fn project<T: Load<A>, A: Accum>(&self, x: &[T], batch: usize, out: &mut [A]) -> Result<()> {
        check_len("x", x.len(), batch, self.in_dim())?;
        check_len("out", out.len(), batch, self.out_dim())?;
        if batch == 0 {
            return Ok(());
        }
        self.project_batch(x, batch, out)
    }

    /// Applies the adjoint `Pᵀ`: `y` `(batch, out_dim)` → `out` `(batch, in_dim)` (overwritten).
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`; `OutOfMemory`; `Cancelled`.
    fn transpose<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        check_len("y", y.len(), batch, self.out_dim())?;
        check_len("out", out.len(), batch, self.in_dim())?;
        if batch == 0 {
            return Ok(());
        }
        self.transpose_batch(y, batch, out)
    }
}

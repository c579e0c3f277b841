//! # grass-core
//!
//! The pure-Rust core of grass-rs: seeded, matrix-free random projections for compressing
//! per-sample gradients (GraSS, arXiv 2505.18976).
//!
//! * [`Sjlt`] — sparse Johnson–Lindenstrauss transform (block CountSketch, `c` nonzeros per column);
//! * [`Mask`] — uniform random coordinate selection without replacement;
//! * [`Grass`] — `SJLT ∘ MASK`, fused so that only the selected coordinates are read;
//! * [`Dense`] — dense Gaussian / Rademacher projections generated on the fly from the hash;
//! * [`outer::masked_outer`] — FactGraSS's masked block `Σ_t δ_t[rows] ⊗ x̃_t[cols]`, fused;
//! * [`Srht`] — subsampled randomized Hadamard transform (FJLT), `O(p log p)` per sample.
//!
//! Every random choice comes from one counter-based hash ([`hash`]); the seed → matrix contract is
//! documented in `docs/CONTRACT.md` and pinned by test vectors.
//!
//! The core never touches Python: inputs are plain slices, row-major `(batch, dim)`.
#![warn(missing_docs)]

/// The GPU path (a stub returning `CudaUnavailable` without the `cuda` feature).
pub mod cuda;
pub mod dense;
pub mod elem;
pub mod error;
pub mod gauss;
pub mod grass;
pub mod hash;
pub mod lanes;
pub mod mask;
pub mod outer;
pub mod parallel;
mod simd;
pub mod sjlt;
pub mod srht;

pub use dense::{Dense, DenseKind};
pub use elem::{Accum, Load};
pub use error::{Error, Result};
pub use grass::Grass;
pub use mask::Mask;
pub use sjlt::Sjlt;
pub use srht::Srht;

/// Checks that a row-major `(batch, dim)` buffer has the right length.
pub(crate) fn check_len(what: &'static str, len: usize, batch: usize, dim: usize) -> Result<()> {
    let expected = batch.checked_mul(dim).ok_or(Error::TooLarge { what })?;
    if len == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected,
            got: len,
        })
    }
}

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
//! * [`conv::conv_masked_outer`] — the same for convolutions, gathering the masked im2col
//!   columns straight from the NCHW input;
//! * [`Srht`] — subsampled randomized Hadamard transform (FJLT), `O(p log p)` per sample.
//!
//! Every random choice comes from one counter-based hash ([`hash`]); the seed → matrix contract is
//! documented in `docs/CONTRACT.md` and pinned by test vectors.
//!
//! Every projector implements [`Projection`]; [`Projector`] is the one enum over all of them.
//!
//! The core never touches Python: inputs are plain slices, row-major `(batch, dim)`. Module
//! dependencies form a DAG (checked by `tests/module_graph.rs`): `error`, `alloc`, `cancel`,
//! `hash`, `gauss`, `simd`, `micro` at the bottom; `projector` and `cuda` at the top.
#![warn(missing_docs)]

mod alloc;
mod buckets;
pub mod cancel;
pub mod conv;
/// The GPU path (a stub returning `CudaUnavailable` without the `cuda` feature).
pub mod cuda;
pub mod dense;
pub mod elem;
pub mod error;
mod fwht;
pub mod gauss;
pub mod grass;
pub mod hash;
pub mod lanes;
pub mod mask;
pub mod micro;
pub mod openmp;
pub mod outer;
pub mod parallel;
pub mod projection;
pub mod projector;
mod simd;
pub mod sjlt;
pub mod srht;

pub use dense::{Dense, DenseKind};
pub use elem::{Accum, ElemType, Load};
pub use error::{Error, Result};
pub use grass::Grass;
pub use mask::Mask;
pub use projection::Projection;
pub use projector::Projector;
pub use sjlt::Sjlt;
pub use srht::Srht;

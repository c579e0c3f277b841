//! The GPU path: the projectors applied to CUDA device memory by PTX kernels launched through
//! cudarc on a caller-given (foreign) `CUstream`.
//!
//! The same seed gives the same matrix as on the CPU: the kernels use the contract hash
//! (`kernels/hash.cuh`, identical to [`crate::hash`]), mask coordinates are computed on the host
//! and uploaded once per projector and device (`DeviceCache`). Two modes for SJLT/GraSS:
//! *atomic* (float atomics, fast, not bit-reproducible) and *deterministic* (a CSR of `Pᵀ` built
//! on the host, fixed-order sums). MASK, the adjoints and the dense projections are always
//! deterministic.
//!
//! Without the `cuda` feature every entry point exists and returns
//! [`Error::CudaUnavailable`](crate::Error::CudaUnavailable).
pub use crate::elem::ElemType;
use crate::error::{invalid, Result};
use crate::projector::Projector;

#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod memory;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(not(feature = "cuda"))]
#[path = "stub.rs"]
mod ops;
#[cfg(feature = "cuda")]
pub mod plan;
#[cfg(feature = "cuda")]
pub mod ptx;

/// Where and how to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// CUDA device ordinal of the buffers.
    pub device: i32,
    /// The raw `CUstream` to launch on (0: the legacy default stream), e.g. PyTorch's
    /// `torch.cuda.current_stream(device).cuda_stream`.
    pub stream: usize,
    /// Deterministic mode (SJLT/GraSS projections without float atomics).
    pub deterministic: bool,
}

/// Per-projector device tables (mask coordinates, the CSR of `Pᵀ`), uploaded on first use on
/// each device and freed when dropped.
#[derive(Default)]
pub struct DeviceCache(ops::Cache);

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCache")
    }
}

/// Whether this build has the CUDA path.
pub const COMPILED: bool = cfg!(feature = "cuda");

/// Number of CUDA devices visible to the driver; 0 without the feature, a driver or a device.
/// Never panics.
pub fn device_count() -> usize {
    ops::device_count()
}

/// `out = P x` on the GPU (SJLT, mask, GraSS and dense projectors; others are `NoCudaPath`): `x` `(batch, in_dim)` of `x_type`, `out` `(batch, out_dim)` of
/// `x_type.accum()`, both C-contiguous device buffers on `launch.device`. Asynchronous on
/// `launch.stream` (the first call per projector and device also uploads its tables and
/// synchronizes that stream).
///
/// # Errors
/// `CudaUnavailable` without a driver or device, `Cuda` on a driver error, `InvalidArgument`.
///
/// # Safety
/// `x` and `out` must be valid device pointers on `launch.device` to at least the sizes above,
/// must not overlap, and must stay allocated until the work queued on `launch.stream` is done;
/// `launch.stream` must be a live stream of that device's primary context (or 0).
pub unsafe fn project(
    op: &Projector,
    cache: &DeviceCache,
    x: u64,
    x_type: ElemType,
    out: u64,
    batch: usize,
    launch: Launch,
) -> Result<()> {
    check_launch(op, launch)?;
    // SAFETY: forwarded from this function's contract.
    unsafe { ops::project(op, &cache.0, x, x_type, out, batch, launch) }
}

/// `out = Pᵀ y` on the GPU: `y` `(batch, out_dim)` and `out` `(batch, in_dim)`, both of `y_type`
/// (`F32` or `F64`). Asynchronous on `launch.stream`; always deterministic.
///
/// # Errors
/// As [`project`]; `InvalidArgument` for a half-precision `y_type`.
///
/// # Safety
/// As [`project`].
pub unsafe fn transpose(
    op: &Projector,
    cache: &DeviceCache,
    y: u64,
    y_type: ElemType,
    out: u64,
    batch: usize,
    launch: Launch,
) -> Result<()> {
    check_launch(op, launch)?;
    if !y_type.is_accum() {
        return Err(invalid("y", "the adjoint takes float32 or float64"));
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { ops::transpose(op, &cache.0, y, y_type, out, batch, launch) }
}

/// Whether `op` has a GPU path.
pub fn supported(op: &Projector) -> bool {
    !matches!(op, Projector::Srht(_))
}

fn check_launch(op: &Projector, launch: Launch) -> Result<()> {
    if !supported(op) {
        return Err(crate::Error::NoCudaPath(op.kind_name()));
    }
    if launch.device < 0 {
        return Err(invalid(
            "device",
            format!("must be a CUDA device ordinal, got {}", launch.device),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srht_has_no_gpu_path() {
        let s = Projector::from(crate::Srht::new(8, 4, 0).unwrap());
        let launch = Launch {
            device: 0,
            stream: 0,
            deterministic: false,
        };
        let cache = DeviceCache::default();
        // SAFETY: the call is rejected before any pointer is used.
        let r = unsafe { project(&s, &cache, 0, ElemType::F32, 0, 1, launch) };
        assert_eq!(r, Err(crate::Error::NoCudaPath("Srht")));
    }

    #[test]
    fn no_gpu_is_an_error_not_a_panic() {
        // On a machine without a driver (CI) this must be 0 and calls must fail cleanly; on a
        // GPU machine the count is positive.
        let n = device_count();
        if n == 0 {
            let s = Projector::from(crate::Sjlt::new(8, 4, 1, 0).unwrap());
            let launch = Launch {
                device: 0,
                stream: 0,
                deterministic: false,
            };
            // SAFETY: with no device the call returns before touching the (null) pointers.
            let r = unsafe { project(&s, &DeviceCache::default(), 0, ElemType::F32, 0, 1, launch) };
            assert!(matches!(r, Err(crate::Error::CudaUnavailable(_))), "{r:?}");
        }
    }
}

//! The CUDA entry points of the binding: CUDA tensors borrowed through DLPack (no stream sync is
//! requested from the producer: the kernels run on the stream the caller passes, PyTorch's
//! current stream), shape/dtype/device checks, then `grass_core::cuda` with the GIL released.
use crate::errors::{new_err, Kind};
use crate::gil::run_detached;
use crate::tensor::{borrow_cuda, check_adjoint, check_io, disjoint};
use grass_core::cuda::{self, DeviceCache, Launch};
use grass_core::{Projection, Projector};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// Fails with `CudaUnavailableError` unless this build has CUDA and a device is visible.
fn require_cuda() -> PyResult<()> {
    if !cuda::COMPILED {
        return Err(new_err(
            Kind::CudaUnavailable,
            "grass-rs was given a CUDA tensor, but this build has no CUDA path (built without the \
             `cuda` feature); move the tensor to the CPU",
        ));
    }
    if cuda::device_count() == 0 {
        return Err(new_err(
            Kind::CudaUnavailable,
            "grass-rs was given a CUDA tensor, but no CUDA driver or device is available",
        ));
    }
    Ok(())
}

/// Fails unless `op` has a GPU path.
fn require_path(op: &Projector) -> PyResult<()> {
    if cuda::supported(op) {
        Ok(())
    } else {
        Err(crate::errors::PyGrassError(grass_core::Error::NoCudaPath(op.kind_name())).into())
    }
}

/// `out = P x` on the GPU (see `Projector.project_cuda`).
pub fn project(
    py: Python<'_>,
    op: &Projector,
    cache: &DeviceCache,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: usize,
    deterministic: bool,
) -> PyResult<()> {
    require_cuda()?;
    require_path(op)?;
    let (xv, ov) = (borrow_cuda(x, "x")?, borrow_cuda(out, "out")?);
    xv.check_shape("x", None, op.in_dim())?;
    ov.check_shape("out", Some(xv.rows), op.out_dim())?;
    disjoint(&xv, &ov)?;
    let xt = check_io(xv.dtype, ov.dtype)?;
    let launch = Launch {
        device: xv.device,
        stream,
        deterministic,
    };
    let (xp, op_, batch) = (xv.ptr, ov.ptr, xv.rows);
    // SAFETY: both views are checked CUDA buffers of the right shapes and dtypes on one device,
    // disjoint, kept alive by the caller's frame; the work is queued on the caller's (PyTorch's
    // current) stream of that device, so the caching allocator orders any reuse after it.
    run_detached(py, 0, || unsafe {
        cuda::project(op, cache, xp, xt, op_, batch, launch)
    })
}

/// `out = Pᵀ y` on the GPU (see `Projector.transpose_cuda`).
pub fn transpose(
    py: Python<'_>,
    op: &Projector,
    cache: &DeviceCache,
    y: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: usize,
) -> PyResult<()> {
    require_cuda()?;
    require_path(op)?;
    let (yv, ov) = (borrow_cuda(y, "y")?, borrow_cuda(out, "out")?);
    yv.check_shape("y", None, op.out_dim())?;
    ov.check_shape("out", Some(yv.rows), op.in_dim())?;
    disjoint(&yv, &ov)?;
    let yt = check_adjoint(yv.dtype, ov.dtype)?;
    let launch = Launch {
        device: yv.device,
        stream,
        deterministic: true,
    };
    let (yp, op_, batch) = (yv.ptr, ov.ptr, yv.rows);
    // SAFETY: as in `project`.
    run_detached(py, 0, || unsafe {
        cuda::transpose(op, cache, yp, yt, op_, batch, launch)
    })
}

/// The deterministic-mode override: 0 = follow `torch.are_deterministic_algorithms_enabled()`,
/// 1 = on, 2 = off.
static DETERMINISTIC: AtomicU8 = AtomicU8::new(0);

/// Number of CUDA devices grass-rs can use (0 without the `cuda` feature, a driver or a device).
#[pyfunction]
pub fn cuda_device_count() -> usize {
    cuda::device_count()
}

/// Sets the CUDA deterministic mode for SJLT/GraSS projections: True (fixed-order sums, no float
/// atomics, bit-reproducible), False (float atomics, fastest), or None (the default: follow
/// `torch.are_deterministic_algorithms_enabled()`).
#[pyfunction]
#[pyo3(signature = (flag))]
pub fn set_deterministic(flag: Option<bool>) {
    DETERMINISTIC.store(
        match flag {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        Ordering::Relaxed,
    );
}

/// The CUDA deterministic-mode override: True, False, or None (follow PyTorch's setting).
#[pyfunction]
pub fn get_deterministic() -> Option<bool> {
    match DETERMINISTIC.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

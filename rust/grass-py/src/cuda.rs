//! The CUDA entry points of the binding: CUDA tensors borrowed through DLPack (no stream sync is
//! requested from the producer: the kernels run on the stream the caller passes, PyTorch's
//! current stream), shape/dtype/device checks, then `grass_core::cuda` with the GIL released.
use crate::errors::CudaUnavailableError;
use crate::gil::run_detached;
use grass_core::cuda::{self, DeviceCache, ElemType, Launch, Op};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::tensor::{borrow_raw, dtype_error, DLDataType, DL_CUDA};

/// A borrowed, C-contiguous 2-D CUDA tensor (the capsule keeps the producer's tensor alive).
struct CudaView<'py> {
    _capsule: Bound<'py, PyAny>,
    ptr: u64,
    rows: usize,
    cols: usize,
    dtype: ElemType,
    device: i32,
}

impl CudaView<'_> {
    fn span(&self) -> (u64, u64) {
        (
            self.ptr,
            self.ptr + (self.rows * self.cols * self.dtype.size()) as u64,
        )
    }
}

fn elem_type(t: DLDataType) -> Option<ElemType> {
    match (t.code, t.bits, t.lanes) {
        (2, 16, 1) => Some(ElemType::F16),
        (4, 16, 1) => Some(ElemType::BF16),
        (2, 32, 1) => Some(ElemType::F32),
        (2, 64, 1) => Some(ElemType::F64),
        _ => None,
    }
}

/// Borrows `obj` (via `__dlpack__(stream=-1)`: no producer-side synchronization) as a 2-D
/// C-contiguous CUDA tensor named `name`.
fn borrow_cuda<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<CudaView<'py>> {
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("stream", -1)?;
    let raw = borrow_raw(obj, name, DL_CUDA, Some(&kwargs))?;
    let dtype = elem_type(raw.dtype).ok_or_else(|| dtype_error(name))?;
    Ok(CudaView {
        _capsule: raw.capsule,
        ptr: raw.ptr,
        rows: raw.rows,
        cols: raw.cols,
        dtype,
        device: raw.device_id,
    })
}

/// Fails with `CudaUnavailableError` unless this build has CUDA and a device is visible.
fn require_cuda() -> PyResult<()> {
    if !cuda::COMPILED {
        return Err(CudaUnavailableError::new_err(
            "grass-rs was given a CUDA tensor, but this build has no CUDA path (built without the `cuda` \
             feature); move the tensor to the CPU",
        ));
    }
    if cuda::device_count() == 0 {
        return Err(CudaUnavailableError::new_err(
            "grass-rs was given a CUDA tensor, but no CUDA driver or device is available",
        ));
    }
    Ok(())
}

fn check(v: &CudaView<'_>, name: &str, rows: Option<usize>, cols: usize) -> PyResult<()> {
    if v.cols != cols {
        return Err(PyValueError::new_err(format!(
            "`{name}` must have {cols} columns, got {}",
            v.cols
        )));
    }
    if let Some(r) = rows {
        if v.rows != r {
            return Err(PyValueError::new_err(format!(
                "`{name}` must have {r} rows, got {}",
                v.rows
            )));
        }
    }
    Ok(())
}

fn check_pair(a: &CudaView<'_>, b: &CudaView<'_>) -> PyResult<()> {
    if a.device != b.device {
        return Err(PyValueError::new_err(format!(
            "input and output are on different devices (cuda:{} and cuda:{})",
            a.device, b.device
        )));
    }
    let ((a0, a1), (b0, b1)) = (a.span(), b.span());
    if a0 < b1 && b0 < a1 {
        return Err(PyValueError::new_err(
            "the output must not overlap the input",
        ));
    }
    Ok(())
}

/// `out = P x` on the GPU (see `Projector.project_cuda`).
pub fn project(
    py: Python<'_>,
    op: Option<Op<'_>>,
    cache: &DeviceCache,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: usize,
    deterministic: bool,
) -> PyResult<()> {
    require_cuda()?;
    let op =
        op.ok_or_else(|| PyTypeError::new_err("this projector has no CUDA path; use CPU tensors"))?;
    let (p, k) = op.dims();
    let (xv, ov) = (borrow_cuda(x, "x")?, borrow_cuda(out, "out")?);
    check(&xv, "x", None, p)?;
    check(&ov, "out", Some(xv.rows), k)?;
    check_pair(&xv, &ov)?;
    if ov.dtype != xv.dtype.accum() {
        return Err(PyTypeError::new_err(
            "`out` must be float64 for float64 input, float32 otherwise",
        ));
    }
    let launch = Launch {
        device: xv.device,
        stream,
        deterministic,
    };
    let (xp, op_, batch, xt) = (xv.ptr, ov.ptr, xv.rows, xv.dtype);
    // SAFETY: both views are checked CUDA buffers of the right shapes and dtypes on one device,
    // disjoint, kept alive by the caller's frame; the work is queued on the caller's (PyTorch's
    // current) stream of that device, so the caching allocator orders any reuse after it.
    run_detached(py, || unsafe {
        cuda::project(op, cache, xp, xt, op_, batch, launch)
    })
}

/// `out = Pᵀ y` on the GPU (see `Projector.transpose_cuda`).
pub fn transpose(
    py: Python<'_>,
    op: Option<Op<'_>>,
    cache: &DeviceCache,
    y: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: usize,
) -> PyResult<()> {
    require_cuda()?;
    let op =
        op.ok_or_else(|| PyTypeError::new_err("this projector has no CUDA path; use CPU tensors"))?;
    let (p, k) = op.dims();
    let (yv, ov) = (borrow_cuda(y, "y")?, borrow_cuda(out, "out")?);
    check(&yv, "y", None, k)?;
    check(&ov, "out", Some(yv.rows), p)?;
    check_pair(&yv, &ov)?;
    if yv.dtype != ov.dtype || yv.dtype.accum() != yv.dtype {
        return Err(PyTypeError::new_err(
            "`y` and `out` must both be float32 or both float64",
        ));
    }
    let launch = Launch {
        device: yv.device,
        stream,
        deterministic: true,
    };
    let (yp, op_, batch, yt) = (yv.ptr, ov.ptr, yv.rows, yv.dtype);
    // SAFETY: as in `project`.
    run_detached(py, || unsafe {
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

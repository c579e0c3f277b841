//! `_core.gather_columns`: a parallel column gather used by the factorized compressors.
use crate::gil::run_detached;
use crate::tensor::{borrow, disjoint, DType};
use half::{bf16, f16};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// `out[b][m] = x[b][idx[m]]`: `x` `(rows, p)`, `out` `(rows, len(idx))`, C-contiguous CPU
/// tensors; `out` is float32 (float64 for float64 input).
#[pyfunction]
pub fn gather_columns(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    idx: Vec<usize>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (xv, ov) = (borrow(x, "x")?, borrow(out, "out")?);
    if ov.rows != xv.rows || ov.cols != idx.len() {
        return Err(PyValueError::new_err(format!(
            "`out` must have shape ({}, {}), got ({}, {})",
            xv.rows,
            idx.len(),
            ov.rows,
            ov.cols
        )));
    }
    disjoint(&xv, &ov)?;
    let (rows, p) = (xv.rows, xv.cols);
    let idx = &idx;
    // SAFETY (all arms): the slice types match the checked dtypes, `x` and `out` are disjoint,
    // and both Python objects are borrowed by this frame for the whole call.
    unsafe {
        match (xv.dtype, ov.dtype) {
            (DType::F32, DType::F32) => {
                let (a, b) = (xv.slice::<f32>(), ov.slice_mut::<f32>());
                run_detached(py, || grass_core::mask::gather_columns(a, rows, p, idx, b))
            }
            (DType::F16, DType::F32) => {
                let (a, b) = (xv.slice::<f16>(), ov.slice_mut::<f32>());
                run_detached(py, || grass_core::mask::gather_columns(a, rows, p, idx, b))
            }
            (DType::BF16, DType::F32) => {
                let (a, b) = (xv.slice::<bf16>(), ov.slice_mut::<f32>());
                run_detached(py, || grass_core::mask::gather_columns(a, rows, p, idx, b))
            }
            (DType::F64, DType::F64) => {
                let (a, b) = (xv.slice::<f64>(), ov.slice_mut::<f64>());
                run_detached(py, || grass_core::mask::gather_columns(a, rows, p, idx, b))
            }
            _ => Err(PyTypeError::new_err(
                "`out` must be float64 for float64 input, float32 otherwise",
            )),
        }
    }
}

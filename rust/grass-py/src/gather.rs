//! `_core.gather_columns`: a parallel column gather used by the factorized compressors.
use crate::args::usize_arg;
use crate::errors::{type_error, value_error};
use crate::gil::run_detached;
use crate::projector::PyProjector;
use crate::tensor::{borrow, disjoint, with_io_types, TensorView};
use grass_core::outer::Sink;
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
        return Err(value_error(format!(
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
        with_io_types!(xv.dtype, ov.dtype, |T, A| {
            let (a, b) = (xv.slice::<T>(), ov.slice_mut::<A>());
            let work = b.len();
            run_detached(py, work, || {
                grass_core::mask::gather_columns(a, rows, p, idx, b)
            })
        })
    }
}

/// FactGraSS's masked block, fused: `out[b] = Σ_t go[b, t, rows] ⊗ [x[b, t, cols], 1 if bias]`.
///
/// `go` `(batch · tokens, d_out)` and `x` `(batch · tokens, d_in)` are C-contiguous CPU tensors
/// of one dtype; `out` is `(batch, len(rows) · (len(cols) + bias))`, float32 (float64 for
/// float64 input). With `sjlt` (an SJLT projector from the block size), `out` is `(batch, k)`:
/// each block projected in the same pass, bit-identical to projecting the blocks after.
#[pyfunction]
#[pyo3(signature = (go, x, tokens, rows, cols, bias, out, sjlt=None))]
#[allow(clippy::too_many_arguments)]
pub fn masked_outer(
    py: Python<'_>,
    go: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    tokens: &Bound<'_, PyAny>,
    rows: Vec<usize>,
    cols: Vec<usize>,
    bias: bool,
    out: &Bound<'_, PyAny>,
    sjlt: Option<PyRef<'_, PyProjector>>,
) -> PyResult<()> {
    let tokens = usize_arg(tokens, "tokens")?;
    let sjlt = sjlt.as_deref().map(|p| p.as_sjlt("sjlt")).transpose()?;
    let (gv, xv, ov) = borrow_outer(go, x, out)?;
    if tokens == 0 || gv.rows % tokens != 0 || xv.rows != gv.rows {
        return Err(value_error(format!(
            "`go` ({} rows) and `x` ({} rows) must both have batch · tokens rows, tokens = {tokens}",
            gv.rows, xv.rows
        )));
    }
    let shape = grass_core::outer::OuterShape {
        batch: gv.rows / tokens,
        tokens,
        d_out: gv.cols,
        d_in: xv.cols,
    };
    let (rows, cols) = (&rows, &cols);
    run_masked_outer!(py, gv, xv, ov, |g, x, o| {
        let sink = match sjlt {
            Some(sjlt) => Sink::Projected { sjlt, out: o },
            None => Sink::Blocks(o),
        };
        grass_core::outer::masked_outer_into(g, x, shape, rows, cols, bias, sink)
    })
}

/// Borrows the `go`, `x` and `out` of a masked outer product (dense or convolution), checking
/// that `go` and `x` share a dtype.
pub(crate) fn borrow_outer<'py>(
    go: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    out: &Bound<'py, PyAny>,
) -> PyResult<(TensorView<'py>, TensorView<'py>, TensorView<'py>)> {
    let (gv, xv, ov) = (borrow(go, "go")?, borrow(x, "x")?, borrow(out, "out")?);
    if gv.dtype != xv.dtype {
        return Err(type_error(format!(
            "`go` and `x` must have the same dtype, got {:?} and {:?}",
            gv.dtype, xv.dtype
        )));
    }
    Ok((gv, xv, ov))
}

/// Checks that the view `$ov` overlaps neither `$gv` nor `$xv` (views from [`borrow_outer`],
/// borrowed by the calling frame for the whole call), then evaluates `$call` with the GIL
/// released, `$g`, `$x`, `$o` bound to the three slices at the dtypes [`with_io_types!`] picks.
macro_rules! run_masked_outer {
    ($py:expr, $gv:ident, $xv:ident, $ov:ident, |$g:ident, $x:ident, $o:ident| $call:expr) => {{
        $crate::tensor::disjoint(&$gv, &$ov)?;
        $crate::tensor::disjoint(&$xv, &$ov)?;
        // SAFETY (all arms): the slice types match the checked dtypes, `out` is disjoint from
        // both inputs, and all three Python objects are borrowed by the calling frame for the
        // whole call.
        unsafe {
            $crate::tensor::with_io_types!($gv.dtype, $ov.dtype, |T, A| {
                let ($g, $x, $o) = ($gv.slice::<T>(), $xv.slice::<T>(), $ov.slice_mut::<A>());
                let work = $g.len() + $x.len() + $o.len();
                $crate::gil::run_detached($py, work, || $call)
            })
        }
    }};
}
pub(crate) use run_masked_outer;

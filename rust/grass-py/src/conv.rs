//! `_core.conv_masked_outer`: FactGraSS's masked block of a convolution, gathered from its input.
use crate::errors::value_error;
use crate::gather::{borrow_outer, run_masked_outer};
use crate::projector::PyProjector;
use grass_core::outer::Sink;
use pyo3::prelude::*;

/// `out[b] = Σ_pos go[b, rows, pos] ⊗ [patch_pos(x[b])[cols], 1 if bias]` (see
/// `grass_core::conv`).
///
/// `go` `(batch · c_out, h_out · w_out)` and `x` `(batch · c_in, h · w)` are the NCHW output
/// gradient and (unpadded) input as C-contiguous 2-D CPU tensors of one dtype; `geometry` is
/// `[batch, c_in, h, w, c_out, h_out, w_out, kh, kw, sh, sw, dh, dw, pad_top, pad_left]`; `out` is
/// `(batch, len(rows) · (len(cols) + bias))`, float32 (float64 for float64 input); with `sjlt`
/// (an SJLT projector from the block size) it is `(batch, k)`, the blocks projected in the same
/// pass.
#[pyfunction]
#[pyo3(signature = (go, x, geometry, rows, cols, bias, out, sjlt=None))]
#[allow(clippy::too_many_arguments)]
pub fn conv_masked_outer(
    py: Python<'_>,
    go: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    geometry: Vec<usize>,
    rows: Vec<usize>,
    cols: Vec<usize>,
    bias: bool,
    out: &Bound<'_, PyAny>,
    sjlt: Option<PyRef<'_, PyProjector>>,
) -> PyResult<()> {
    let sjlt = sjlt.as_deref().map(|p| p.as_sjlt("sjlt")).transpose()?;
    let g: [usize; 15] = geometry.as_slice().try_into().map_err(|_| {
        value_error(format!(
            "`geometry` must have 15 entries, got {}",
            geometry.len()
        ))
    })?;
    let shape = grass_core::conv::ConvShape {
        batch: g[0],
        c_in: g[1],
        h: g[2],
        w: g[3],
        c_out: g[4],
        h_out: g[5],
        w_out: g[6],
        kernel: (g[7], g[8]),
        stride: (g[9], g[10]),
        dilation: (g[11], g[12]),
        pad: (g[13], g[14]),
    };
    let (gv, xv, ov) = borrow_outer(go, x, out)?;
    let (rows, cols) = (&rows, &cols);
    run_masked_outer!(py, gv, xv, ov, |g, x, o| {
        let sink = match sjlt {
            Some(sjlt) => Sink::Projected { sjlt, out: o },
            None => Sink::Blocks(o),
        };
        grass_core::conv::conv_masked_outer_into(g, x, shape, rows, cols, bias, sink)
    })
}

//! `_core.Projector`: one Python class over every grass-core projector.
use crate::gil::run_detached;
use crate::tensor::{borrow, disjoint, with_io_types, DType, TensorView};
use grass_core::{Dense, DenseKind, Grass, Mask, Sjlt, Srht};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::sync::Arc;

enum Inner {
    Sjlt(Sjlt),
    Mask(Mask),
    Grass(Grass),
    Dense(Dense),
    Srht(Srht),
}

/// Projects `x` into `out` with one concrete projector and element types.
macro_rules! with_inner {
    ($inner:expr, $p:ident => $body:expr) => {
        match $inner {
            Inner::Sjlt($p) => $body,
            Inner::Mask($p) => $body,
            Inner::Grass($p) => $body,
            Inner::Dense($p) => $body,
            Inner::Srht($p) => $body,
        }
    };
}

impl Inner {
    fn dims(&self) -> (usize, usize) {
        with_inner!(self, p => (p.in_dim(), p.out_dim()))
    }

    /// The projector as a CUDA operation, when it has a GPU path.
    fn cuda_op(&self) -> Option<grass_core::cuda::Op<'_>> {
        use grass_core::cuda::Op;
        match self {
            Inner::Sjlt(p) => Some(Op::Sjlt(p)),
            Inner::Mask(p) => Some(Op::Mask(p)),
            Inner::Grass(p) => Some(Op::Grass(p)),
            Inner::Dense(p) => Some(Op::Dense(p)),
            Inner::Srht(_) => None,
        }
    }
}

/// A compiled projector (SJLT, mask, GraSS, Gaussian, Rademacher or SRHT).
#[pyclass(name = "Projector", module = "grass_rs._core", frozen)]
pub struct PyProjector {
    inner: Arc<Inner>,
    /// Device tables of the CUDA path (uploaded on first use per device).
    cuda: grass_core::cuda::DeviceCache,
}

fn wrap(r: grass_core::Result<Inner>) -> PyResult<PyProjector> {
    r.map(|inner| PyProjector {
        inner: Arc::new(inner),
        cuda: grass_core::cuda::DeviceCache::default(),
    })
    .map_err(|e| crate::errors::PyGrassError(e).into())
}

fn check(view: &TensorView<'_>, name: &str, rows: Option<usize>, cols: usize) -> PyResult<()> {
    if view.cols != cols {
        return Err(PyValueError::new_err(format!(
            "`{name}` must have {cols} columns, got {}",
            view.cols
        )));
    }
    if let Some(r) = rows {
        if view.rows != r {
            return Err(PyValueError::new_err(format!(
                "`{name}` must have {r} rows, got {}",
                view.rows
            )));
        }
    }
    Ok(())
}

#[pymethods]
impl PyProjector {
    /// SJLT from `in_dim` to `out_dim` with `c` nonzeros per column.
    #[staticmethod]
    fn sjlt(in_dim: usize, out_dim: usize, c: usize, seed: u64) -> PyResult<Self> {
        wrap(Sjlt::new(in_dim, out_dim, c, seed).map(Inner::Sjlt))
    }

    /// Coordinate mask, optionally scaled by `√(in_dim/out_dim)`.
    #[staticmethod]
    fn mask(in_dim: usize, out_dim: usize, seed: u64, scale: bool) -> PyResult<Self> {
        wrap(Mask::new(in_dim, out_dim, seed, scale).map(Inner::Mask))
    }

    /// GraSS: SJLT to `out_dim` after a mask to `mask_dim`.
    #[staticmethod]
    fn grass(
        in_dim: usize,
        out_dim: usize,
        mask_dim: usize,
        c: usize,
        seed: u64,
    ) -> PyResult<Self> {
        wrap(Grass::new(in_dim, out_dim, mask_dim, c, seed).map(Inner::Grass))
    }

    /// Dense matrix-free projection; `kind` is "gaussian" or "rademacher".
    #[staticmethod]
    fn dense(kind: &str, in_dim: usize, out_dim: usize, seed: u64) -> PyResult<Self> {
        let kind = match kind {
            "gaussian" => DenseKind::Gaussian,
            "rademacher" => DenseKind::Rademacher,
            _ => {
                return Err(PyValueError::new_err(
                    "kind must be 'gaussian' or 'rademacher'",
                ))
            }
        };
        wrap(Dense::new(kind, in_dim, out_dim, seed).map(Inner::Dense))
    }

    /// Subsampled randomized Hadamard transform (FJLT) from `in_dim` to `out_dim`.
    #[staticmethod]
    fn srht(in_dim: usize, out_dim: usize, seed: u64) -> PyResult<Self> {
        wrap(Srht::new(in_dim, out_dim, seed).map(Inner::Srht))
    }

    /// SRHT only: the kept Hadamard rows (increasing) and, per input coordinate, whether its
    /// random sign is negative.
    fn srht_parts(&self) -> PyResult<(Vec<usize>, Vec<bool>)> {
        match &*self.inner {
            Inner::Srht(s) => Ok((
                s.rows().to_vec(),
                (0..s.in_dim()).map(|j| s.negative(j)).collect(),
            )),
            _ => Err(PyTypeError::new_err("this projector is not an SRHT")),
        }
    }

    #[getter]
    fn in_dim(&self) -> usize {
        self.inner.dims().0
    }

    #[getter]
    fn out_dim(&self) -> usize {
        self.inner.dims().1
    }

    /// Mask coordinates (mask and GraSS), increasing.
    fn mask_indices(&self) -> PyResult<Vec<usize>> {
        match &*self.inner {
            Inner::Mask(m) => Ok(m.indices().to_vec()),
            Inner::Grass(g) => Ok(g.mask().indices().to_vec()),
            _ => Err(PyTypeError::new_err("this projector has no mask")),
        }
    }

    /// SJLT entries of columns `j0 .. j0 + n` as `(bucket, negative)` pairs, `c` per column.
    fn sjlt_columns(&self, j0: usize, n: usize) -> PyResult<Vec<(usize, bool)>> {
        let s = match &*self.inner {
            Inner::Sjlt(s) => s,
            Inner::Grass(g) => g.sjlt(),
            _ => return Err(PyTypeError::new_err("this projector has no SJLT stage")),
        };
        if j0.checked_add(n).is_none_or(|e| e > s.in_dim()) {
            return Err(PyValueError::new_err("column range out of bounds"));
        }
        Ok((j0..j0 + n).flat_map(|j| s.column(j)).collect())
    }

    /// `out[b] = P x[b]`; `x` `(batch, in_dim)` float16/bfloat16/float32 → `out` float32, or
    /// float64 → float64; both C-contiguous CPU tensors supporting DLPack.
    fn project(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (p, k) = self.inner.dims();
        let (xv, ov) = (borrow(x, "x")?, borrow(out, "out")?);
        check(&xv, "x", None, p)?;
        check(&ov, "out", Some(xv.rows), k)?;
        disjoint(&xv, &ov)?;
        let (inner, batch) = (Arc::clone(&self.inner), xv.rows);
        // SAFETY (all arms): the slice types match the checked dtypes, `x` and `out` are disjoint,
        // and both Python objects are borrowed by this frame for the whole call.
        unsafe {
            with_io_types!(xv.dtype, ov.dtype, |T, A| {
                run(py, &inner, xv.slice::<T>(), batch, ov.slice_mut::<A>())
            })
        }
    }

    /// `project` on CUDA tensors: work queued on the raw CUDA stream `stream` of the tensors'
    /// device (pass `torch.cuda.current_stream(device).cuda_stream`); `deterministic` selects
    /// fixed-order sums for SJLT/GraSS. Raises `CudaUnavailableError` without CUDA.
    #[pyo3(signature = (x, out, stream, deterministic = false))]
    fn project_cuda(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        stream: usize,
        deterministic: bool,
    ) -> PyResult<()> {
        crate::cuda::project(
            py,
            self.inner.cuda_op(),
            &self.cuda,
            x,
            out,
            stream,
            deterministic,
        )
    }

    /// `transpose` on CUDA tensors, on the raw CUDA stream `stream` (always deterministic).
    fn transpose_cuda(
        &self,
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        stream: usize,
    ) -> PyResult<()> {
        crate::cuda::transpose(py, self.inner.cuda_op(), &self.cuda, y, out, stream)
    }

    /// `out[b] = Pᵀ y[b]`; `y` `(batch, out_dim)` and `out` `(batch, in_dim)`, both float32 or float64.
    fn transpose(
        &self,
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (p, k) = self.inner.dims();
        let (yv, ov) = (borrow(y, "y")?, borrow(out, "out")?);
        check(&yv, "y", None, k)?;
        check(&ov, "out", Some(yv.rows), p)?;
        disjoint(&yv, &ov)?;
        let (inner, batch) = (Arc::clone(&self.inner), yv.rows);
        // SAFETY: as in `project`.
        unsafe {
            match (yv.dtype, ov.dtype) {
                (DType::F32, DType::F32) => {
                    run_t(py, &inner, yv.slice::<f32>(), batch, ov.slice_mut::<f32>())
                }
                (DType::F64, DType::F64) => {
                    run_t(py, &inner, yv.slice::<f64>(), batch, ov.slice_mut::<f64>())
                }
                _ => Err(PyTypeError::new_err(
                    "`y` and `out` must both be float32 or both float64",
                )),
            }
        }
    }
}

fn run<T, A>(py: Python<'_>, inner: &Inner, x: &[T], batch: usize, out: &mut [A]) -> PyResult<()>
where
    T: grass_core::Load<A>,
    A: grass_core::Accum,
{
    run_detached(py, || with_inner!(inner, p => p.project(x, batch, out)))
}

fn run_t<A: grass_core::Accum>(
    py: Python<'_>,
    inner: &Inner,
    y: &[A],
    batch: usize,
    out: &mut [A],
) -> PyResult<()> {
    run_detached(py, || with_inner!(inner, p => p.transpose(y, batch, out)))
}

//! `_core.Projector`: one Python class over [`grass_core::Projector`] (every projector kind).
use crate::args::{u64_arg, usize_arg};
use crate::errors::{type_error, value_error};
use crate::gil::run_detached;
use crate::tensor::{borrow, check_adjoint, disjoint, with_io_types};
use grass_core::{Dense, DenseKind, Grass, Mask, Projection, Projector, Sjlt, Srht};
use pyo3::prelude::*;

/// A compiled projector (SJLT, mask, GraSS, Gaussian, Rademacher or SRHT).
#[pyclass(name = "Projector", module = "grass_rs._core", frozen)]
pub struct PyProjector {
    inner: Projector,
    /// Device tables of the CUDA path (uploaded on first use per device).
    cuda: grass_core::cuda::DeviceCache,
}

/// Builds a projector with the GIL released (interruptible when `work` is large).
fn build<P: Into<Projector>>(
    py: Python<'_>,
    work: usize,
    f: impl FnOnce() -> grass_core::Result<P> + Send,
) -> PyResult<PyProjector> {
    let inner = run_detached(py, work, || f().map(Into::into))?;
    Ok(PyProjector {
        inner,
        cuda: grass_core::cuda::DeviceCache::default(),
    })
}

/// An int or tensor argument (checked in the body).
type Arg<'a, 'py> = &'a Bound<'py, PyAny>;

impl PyProjector {
    /// The SJLT this projector is, or a `TypeError` naming `what`.
    pub(crate) fn as_sjlt(&self, what: &str) -> PyResult<&Sjlt> {
        match &self.inner {
            Projector::Sjlt(s) => Ok(s),
            _ => Err(type_error(format!("`{what}` must be an SJLT projector"))),
        }
    }
}

#[pymethods]
impl PyProjector {
    /// SJLT from `in_dim` to `out_dim` with `c` nonzeros per column.
    #[staticmethod]
    fn sjlt(py: Python<'_>, in_dim: Arg, out_dim: Arg, c: Arg, seed: Arg) -> PyResult<Self> {
        let (p, k) = (usize_arg(in_dim, "in_dim")?, usize_arg(out_dim, "out_dim")?);
        let (c, seed) = (usize_arg(c, "c")?, u64_arg(seed, "seed")?);
        build(py, p, || Sjlt::new(p, k, c, seed))
    }

    /// Coordinate mask, optionally scaled by `√(in_dim/out_dim)`.
    #[staticmethod]
    fn mask(py: Python<'_>, in_dim: Arg, out_dim: Arg, seed: Arg, scale: bool) -> PyResult<Self> {
        let (p, k) = (usize_arg(in_dim, "in_dim")?, usize_arg(out_dim, "out_dim")?);
        let seed = u64_arg(seed, "seed")?;
        build(py, k, || Mask::new(p, k, seed, scale))
    }

    /// GraSS: SJLT to `out_dim` after a mask to `mask_dim`.
    #[staticmethod]
    fn grass(
        py: Python<'_>,
        in_dim: Arg,
        out_dim: Arg,
        mask_dim: Arg,
        c: Arg,
        seed: Arg,
    ) -> PyResult<Self> {
        let (p, k) = (usize_arg(in_dim, "in_dim")?, usize_arg(out_dim, "out_dim")?);
        let (m, c) = (usize_arg(mask_dim, "mask_dim")?, usize_arg(c, "c")?);
        let seed = u64_arg(seed, "seed")?;
        build(py, m, || Grass::new(p, k, m, c, seed))
    }

    /// Dense matrix-free projection; `kind` is "gaussian" or "rademacher".
    #[staticmethod]
    fn dense(py: Python<'_>, kind: &str, in_dim: Arg, out_dim: Arg, seed: Arg) -> PyResult<Self> {
        let kind = match kind {
            "gaussian" => DenseKind::Gaussian,
            "rademacher" => DenseKind::Rademacher,
            _ => return Err(value_error("kind must be 'gaussian' or 'rademacher'")),
        };
        let (p, k) = (usize_arg(in_dim, "in_dim")?, usize_arg(out_dim, "out_dim")?);
        let seed = u64_arg(seed, "seed")?;
        build(py, 0, || Dense::new(kind, p, k, seed))
    }

    /// Subsampled randomized Hadamard transform (FJLT) from `in_dim` to `out_dim`.
    #[staticmethod]
    fn srht(py: Python<'_>, in_dim: Arg, out_dim: Arg, seed: Arg) -> PyResult<Self> {
        let (p, k) = (usize_arg(in_dim, "in_dim")?, usize_arg(out_dim, "out_dim")?);
        let seed = u64_arg(seed, "seed")?;
        build(py, p, || Srht::new(p, k, seed))
    }

    /// SRHT only: the kept Hadamard rows (increasing) and, per input coordinate, whether its
    /// random sign is negative.
    fn srht_parts(&self) -> PyResult<(Vec<usize>, Vec<bool>)> {
        let Projector::Srht(s) = &self.inner else {
            return Err(type_error("this projector is not an SRHT"));
        };
        let mut signs = Vec::new();
        signs
            .try_reserve_exact(s.in_dim())
            .map_err(|_| memory_error(s.in_dim(), "SRHT signs"))?;
        signs.extend((0..s.in_dim()).map(|j| s.negative(j)));
        Ok((s.rows().to_vec(), signs))
    }

    #[getter]
    fn in_dim(&self) -> usize {
        self.inner.in_dim()
    }

    #[getter]
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }

    /// Mask coordinates (mask and GraSS), increasing.
    fn mask_indices(&self) -> PyResult<Vec<usize>> {
        match &self.inner {
            Projector::Mask(m) => Ok(m.indices().to_vec()),
            Projector::Grass(g) => Ok(g.mask().indices().to_vec()),
            _ => Err(type_error("this projector has no mask")),
        }
    }

    /// SJLT entries of columns `j0 .. j0 + n` as `(bucket, negative)` pairs, `c` per column.
    fn sjlt_columns(&self, j0: Arg, n: Arg) -> PyResult<Vec<(usize, bool)>> {
        let s = match &self.inner {
            Projector::Sjlt(s) => s,
            Projector::Grass(g) => g.sjlt(),
            _ => return Err(type_error("this projector has no SJLT stage")),
        };
        let p = s.in_dim();
        let (j0, n) = (usize_arg(j0, "j0")?, usize_arg(n, "n")?);
        if j0.checked_add(n).is_none_or(|e| e > p) {
            let msg =
                format!("columns `j0` .. `j0 + n` must lie in 0..={p}, got {j0} .. {j0} + {n}");
            return Err(value_error(msg));
        }
        let mut out = Vec::new();
        out.try_reserve_exact(n * s.c())
            .map_err(|_| memory_error(n * s.c(), "SJLT entries"))?;
        out.extend((j0..j0 + n).flat_map(|j| s.column(j)));
        Ok(out)
    }

    /// `out[b] = P x[b]`; `x` `(batch, in_dim)` float16/bfloat16/float32 → `out` float32, or
    /// float64 → float64; both C-contiguous CPU tensors supporting DLPack. Interruptible with
    /// Ctrl-C (`KeyboardInterrupt`; `out` is then unspecified).
    fn project(&self, py: Python<'_>, x: Arg, out: Arg) -> PyResult<()> {
        let (p, k) = (self.inner.in_dim(), self.inner.out_dim());
        let (xv, ov) = (borrow(x, "x")?, borrow(out, "out")?);
        xv.check_shape("x", None, p)?;
        ov.check_shape("out", Some(xv.rows), k)?;
        disjoint(&xv, &ov)?;
        let (inner, batch, work) = (&self.inner, xv.rows, xv.len() + ov.len());
        // SAFETY (all arms): the slice types match the checked dtypes, `x` and `out` are disjoint,
        // and both Python objects are borrowed by this frame for the whole call.
        unsafe {
            with_io_types!(xv.dtype, ov.dtype, |T, A| {
                let (x, o) = (xv.slice::<T>(), ov.slice_mut::<A>());
                run_detached(py, work, || inner.project(x, batch, o))
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
        x: Arg,
        out: Arg,
        stream: Arg,
        deterministic: bool,
    ) -> PyResult<()> {
        let stream = usize_arg(stream, "stream")?;
        crate::cuda::project(py, &self.inner, &self.cuda, x, out, stream, deterministic)
    }

    /// `transpose` on CUDA tensors, on the raw CUDA stream `stream` (always deterministic).
    fn transpose_cuda(&self, py: Python<'_>, y: Arg, out: Arg, stream: Arg) -> PyResult<()> {
        let stream = usize_arg(stream, "stream")?;
        crate::cuda::transpose(py, &self.inner, &self.cuda, y, out, stream)
    }

    /// `out[b] = Pᵀ y[b]`; `y` `(batch, out_dim)` and `out` `(batch, in_dim)`, both float32 or
    /// float64. Interruptible like `project`.
    fn transpose(&self, py: Python<'_>, y: Arg, out: Arg) -> PyResult<()> {
        let (p, k) = (self.inner.in_dim(), self.inner.out_dim());
        let (yv, ov) = (borrow(y, "y")?, borrow(out, "out")?);
        yv.check_shape("y", None, k)?;
        ov.check_shape("out", Some(yv.rows), p)?;
        disjoint(&yv, &ov)?;
        let (inner, batch, work) = (&self.inner, yv.rows, yv.len() + ov.len());
        // SAFETY: as in `project`.
        unsafe {
            if check_adjoint(yv.dtype, ov.dtype)? == grass_core::ElemType::F64 {
                let (y, o) = (yv.slice::<f64>(), ov.slice_mut::<f64>());
                run_detached(py, work, || inner.transpose(y, batch, o))
            } else {
                let (y, o) = (yv.slice::<f32>(), ov.slice_mut::<f32>());
                run_detached(py, work, || inner.transpose(y, batch, o))
            }
        }
    }
}

fn memory_error(count: usize, what: &str) -> PyErr {
    crate::errors::new_err(
        crate::errors::Kind::Memory,
        format!("cannot allocate {count} {what}"),
    )
}

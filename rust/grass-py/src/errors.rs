//! The one mapping from core errors to Python exceptions.
use grass_core::Error;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    _core,
    GrassError,
    pyo3::exceptions::PyException,
    "Base class of grass-rs errors."
);
pyo3::create_exception!(
    _core,
    CudaUnavailableError,
    PyRuntimeError,
    "CUDA was requested but is not available."
);

/// Newtype that lets core errors convert into `PyErr` (orphan rule).
pub struct PyGrassError(pub Error);

impl From<Error> for PyGrassError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<PyGrassError> for PyErr {
    fn from(e: PyGrassError) -> Self {
        let msg = e.0.to_string();
        match e.0 {
            Error::InvalidArgument { .. } | Error::Shape { .. } => PyValueError::new_err(msg),
            Error::TooLarge { .. } => PyOverflowError::new_err(msg),
            Error::CudaUnavailable(_) => CudaUnavailableError::new_err(msg),
            Error::Cuda(_) => GrassError::new_err(msg),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("GrassError", py.get_type::<GrassError>())?;
    m.add(
        "CudaUnavailableError",
        py.get_type::<CudaUnavailableError>(),
    )?;
    Ok(())
}

//! The one place where the GIL is released.
use crate::errors::PyGrassError;
use pyo3::prelude::*;

/// Runs `f` with the GIL released and maps a core error to a Python exception.
pub fn run_detached<R: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> grass_core::Result<R> + Send,
) -> PyResult<R> {
    py.detach(f).map_err(|e| PyGrassError(e).into())
}

//! The one mapping from core errors to Python exceptions, and the exception classes.
//!
//! `GrassError` is the root of every error grass-rs raises. Each other class also derives from
//! the built-in exception it refines, so `except ValueError` keeps working:
//!
//! | class | bases | raised for |
//! |---|---|---|
//! | `GrassValueError` | `GrassError`, `ValueError` | invalid arguments, shape mismatches |
//! | `GrassTypeError` | `GrassError`, `TypeError` | wrong dtypes / kinds, non-int arguments |
//! | `GrassOverflowError` | `GrassError`, `OverflowError`, `ValueError` | ints out of range, sizes that overflow |
//! | `GrassMemoryError` | `GrassError`, `MemoryError` | buffers the allocator refuses |
//! | `CudaUnavailableError` | `GrassError`, `RuntimeError` | CUDA requested but absent |
//!
//! A cancelled call (Ctrl-C) raises the interpreter's own `KeyboardInterrupt`.
use grass_core::Error;
use pyo3::exceptions::{
    PyException, PyKeyboardInterrupt, PyMemoryError, PyOverflowError, PyRuntimeError, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    _core,
    GrassError,
    PyException,
    "Base class of every grass-rs error."
);

/// The exception classes with two or more bases (created at import with `type(...)`).
#[derive(Clone, Copy)]
pub enum Kind {
    /// `GrassValueError(GrassError, ValueError)`.
    Value,
    /// `GrassTypeError(GrassError, TypeError)`.
    Type,
    /// `GrassOverflowError(GrassError, OverflowError, ValueError)`.
    Overflow,
    /// `GrassMemoryError(GrassError, MemoryError)`.
    Memory,
    /// `CudaUnavailableError(GrassError, RuntimeError)`.
    CudaUnavailable,
}

/// `(name, docstring)` of each [`Kind`], in declaration order.
const CLASSES: [(&str, &str); 5] = [
    (
        "GrassValueError",
        "An argument has an invalid value or shape.",
    ),
    ("GrassTypeError", "An argument has the wrong type or dtype."),
    (
        "GrassOverflowError",
        "An integer argument or a size is out of range.",
    ),
    (
        "GrassMemoryError",
        "A buffer sized by the arguments cannot be allocated.",
    ),
    (
        "CudaUnavailableError",
        "CUDA was requested but is not available.",
    ),
];

static TYPES: PyOnceLock<[Py<PyType>; 5]> = PyOnceLock::new();

fn bases(py: Python<'_>, kind: Kind) -> Vec<Bound<'_, PyType>> {
    let mut b = vec![py.get_type::<GrassError>()];
    b.extend(match kind {
        Kind::Value => vec![py.get_type::<PyValueError>()],
        Kind::Type => vec![py.get_type::<PyTypeError>()],
        Kind::Overflow => vec![
            py.get_type::<PyOverflowError>(),
            py.get_type::<PyValueError>(),
        ],
        Kind::Memory => vec![py.get_type::<PyMemoryError>()],
        Kind::CudaUnavailable => vec![py.get_type::<PyRuntimeError>()],
    });
    b
}

fn create(py: Python<'_>, kind: Kind) -> PyResult<Py<PyType>> {
    let (name, doc) = CLASSES[kind as usize];
    let ns = PyDict::new(py);
    ns.set_item("__module__", "grass_rs._core")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases(py, kind))?;
    let cls = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(cls.cast_into::<PyType>()?.unbind())
}

fn types(py: Python<'_>) -> PyResult<&[Py<PyType>; 5]> {
    TYPES.get_or_try_init(py, || {
        Ok([
            create(py, Kind::Value)?,
            create(py, Kind::Type)?,
            create(py, Kind::Overflow)?,
            create(py, Kind::Memory)?,
            create(py, Kind::CudaUnavailable)?,
        ])
    })
}

/// An exception of class `kind` with message `msg`.
pub fn new_err(kind: Kind, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match types(py) {
        Ok(t) => PyErr::from_type(t[kind as usize].bind(py).clone(), msg),
        Err(e) => e,
    })
}

/// `GrassValueError(msg)`.
pub fn value_error(msg: impl Into<String>) -> PyErr {
    new_err(Kind::Value, msg)
}

/// `GrassTypeError(msg)`.
pub fn type_error(msg: impl Into<String>) -> PyErr {
    new_err(Kind::Type, msg)
}

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
        let kind = match e.0 {
            Error::InvalidArgument { .. } | Error::Shape { .. } => Kind::Value,
            Error::TooLarge { .. } => Kind::Overflow,
            Error::OutOfMemory { .. } => Kind::Memory,
            Error::NoCudaPath(_) => Kind::Type,
            Error::CudaUnavailable(_) => Kind::CudaUnavailable,
            Error::Cancelled => return PyKeyboardInterrupt::new_err(msg),
            Error::Cuda(_) => return GrassError::new_err(msg),
        };
        new_err(kind, msg)
    }
}

/// Adds `GrassError` and the classes of [`Kind`] to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("GrassError", py.get_type::<GrassError>())?;
    for ((name, _), ty) in CLASSES.iter().zip(types(py)?) {
        m.add(*name, ty.bind(py))?;
    }
    Ok(())
}

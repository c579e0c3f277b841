//! Error type of the core.
use thiserror::Error;

/// Errors reported by grass-core. Each names the argument at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// An argument is outside its valid range.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A buffer does not have the length its shape implies.
    #[error("`{what}` has {got} elements, expected {expected}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Expected number of elements.
        expected: usize,
        /// Actual number of elements.
        got: usize,
    },
    /// A size computation overflowed.
    #[error("`{what}` is too large: its size overflows")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
    },
    /// A CUDA tensor was given but the CUDA path is unavailable.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA driver call failed (the message names the call and the driver's error).
    #[error("CUDA error: {0}")]
    Cuda(String),
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name,
        reason: reason.into(),
    }
}

//! Error type of the core.
use thiserror::Error;

/// Errors reported by grass-core. Each names the argument or buffer at fault.
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
    /// A buffer sized by the arguments could not be allocated.
    #[error(
        "cannot allocate {} {what} ({})",
        fmt_count(*.count),
        fmt_bytes(*.bytes)
    )]
    OutOfMemory {
        /// What the buffer holds (plural noun, e.g. "mask indices").
        what: &'static str,
        /// Number of elements requested.
        count: u128,
        /// Bytes requested.
        bytes: u128,
    },
    /// The call was cancelled (see [`crate::cancel`]); its output buffer is unspecified.
    #[error("the call was cancelled")]
    Cancelled,
    /// A CUDA tensor was given but the CUDA path is unavailable.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// The projector has no CUDA path (use CPU tensors).
    #[error("{0} has no CUDA path; use CPU tensors")]
    NoCudaPath(&'static str),
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

/// `InvalidArgument` for `name` when the dimension `value` is zero.
pub(crate) fn at_least_one(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        Err(invalid(name, "must be at least 1"))
    } else {
        Ok(())
    }
}

/// Checks that a row-major `(batch, dim)` buffer has the right length.
///
/// # Errors
/// `TooLarge` when `batch · dim` overflows, `Shape` when `len` differs from it.
pub fn check_len(what: &'static str, len: usize, batch: usize, dim: usize) -> Result<()> {
    let expected = batch.checked_mul(dim).ok_or(Error::TooLarge { what })?;
    if len == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected,
            got: len,
        })
    }
}

/// `2^e` for a power of two (≥ 2¹⁰), the decimal number otherwise.
pub(crate) fn fmt_count(n: u128) -> String {
    if n >= 1024 && n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

/// A byte count in binary units, rounded down (`2 EiB`, `1.5 GiB`, `12 bytes`).
pub(crate) fn fmt_bytes(b: u128) -> String {
    const UNITS: [&str; 7] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"];
    if b < 1024 {
        return format!("{b} bytes");
    }
    let mut unit = 0;
    while unit + 1 < UNITS.len() && b >= 1u128 << (10 * (unit + 2)) {
        unit += 1;
    }
    let scale = 1u128 << (10 * (unit + 1));
    let (whole, tenth) = (b / scale, (b % scale) * 10 / scale);
    if tenth == 0 {
        format!("{whole} {}", UNITS[unit])
    } else {
        format!("{whole}.{tenth} {}", UNITS[unit])
    }
}

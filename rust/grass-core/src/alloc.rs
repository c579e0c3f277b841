//! Fallible allocation of every buffer whose size comes from the caller's arguments: a request
//! the allocator refuses is an [`Error::OutOfMemory`] naming the buffer and its size, never an
//! abort of the process.
use crate::error::{Error, Result};

/// The error for `count` elements of `T` in the buffer `what`.
pub(crate) fn oom<T>(what: &'static str, count: usize) -> Error {
    Error::OutOfMemory {
        what,
        count: count as u128,
        bytes: count as u128 * std::mem::size_of::<T>() as u128,
    }
}

/// Reserves room for exactly `count` more elements of `v`.
///
/// # Errors
/// `OutOfMemory` when the allocator refuses.
pub(crate) fn reserve<T>(v: &mut Vec<T>, count: usize, what: &'static str) -> Result<()> {
    v.try_reserve_exact(count)
        .map_err(|_| oom::<T>(what, count))
}

/// `vec![value; count]`, fallibly.
///
/// # Errors
/// `OutOfMemory` when the allocator refuses.
pub(crate) fn vec_of<T: Clone>(count: usize, value: T, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    reserve(&mut v, count, what)?;
    v.resize(count, value);
    Ok(v)
}

/// An empty vector with room for `count` elements, fallibly.
///
/// # Errors
/// `OutOfMemory` when the allocator refuses.
pub(crate) fn with_capacity<T>(count: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    reserve(&mut v, count, what)?;
    Ok(v)
}

/// Resizes `v` to `len` (filling with `value`), fallibly.
///
/// # Errors
/// `OutOfMemory` when the allocator refuses.
pub(crate) fn resize<T: Clone>(
    v: &mut Vec<T>,
    len: usize,
    value: T,
    what: &'static str,
) -> Result<()> {
    if len > v.len() {
        reserve(v, len - v.len(), what)?;
    }
    v.resize(len, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{fmt_bytes, fmt_count};

    #[test]
    fn sizes_are_readable() {
        assert_eq!(fmt_count(1 << 58), "2^58");
        assert_eq!(fmt_count(1000), "1000");
        assert_eq!(fmt_bytes(1 << 61), "2 EiB");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
        assert_eq!(fmt_bytes(12), "12 bytes");
        assert!(fmt_bytes(u128::MAX).ends_with(" ZiB"));
    }

    #[test]
    fn impossible_requests_are_errors() {
        let e = vec_of(1usize << 58, 0usize, "mask indices").unwrap_err();
        assert_eq!(e.to_string(), "cannot allocate 2^58 mask indices (2 EiB)");
        assert!(with_capacity::<u64>(usize::MAX, "words").is_err());
        let mut v = vec![1u8];
        assert!(resize(&mut v, usize::MAX, 0, "bytes").is_err());
        assert_eq!(v, [1]);
    }
}

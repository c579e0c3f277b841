//! Integer arguments taken as any Python int and range-checked here, so that `-1`, `2**64` or
//! `1.5` give an error naming the argument and the allowed range instead of PyO3's bare
//! `OverflowError` / `TypeError`.
use crate::errors::{new_err, type_error, Kind};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;

/// `obj` as an integer in `lo..=hi`, named `name` in errors.
fn int_in(obj: &Bound<'_, PyAny>, name: &str, lo: i128, hi: i128) -> PyResult<i128> {
    let range = || format!("`{name}` must be an int in {lo}..={hi}, got {}", show(obj));
    match obj.extract::<i128>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        Ok(_) => Err(new_err(Kind::Overflow, range())),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(new_err(Kind::Overflow, range()))
        }
        Err(_) => Err(type_error(format!(
            "`{name}` must be an int, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))),
    }
}

fn show(obj: &Bound<'_, PyAny>) -> String {
    obj.str().map_or_else(|_| "?".into(), |s| s.to_string())
}

/// A size or index: an int in `0..=usize::MAX`.
pub fn usize_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    Ok(int_in(obj, name, 0, usize::MAX as i128)? as usize)
}

/// A seed, key or counter: an int in `0..=2^64 − 1`.
pub fn u64_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    Ok(int_in(obj, name, 0, u64::MAX as i128)? as u64)
}

/// Any int that fits in `i128` (wider ones are out of range for every use).
pub fn i128_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i128> {
    int_in(obj, name, i128::MIN, i128::MAX)
}

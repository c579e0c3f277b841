//! The CUDA path when the `cuda` feature is off: the same entry points, each reporting that
//! CUDA is unavailable.
use super::{ElemType, Launch};
use crate::error::{Error, Result};
use crate::projector::Projector;

/// No device tables without CUDA.
#[derive(Default)]
pub struct Cache;

pub fn device_count() -> usize {
    0
}

fn unavailable() -> Error {
    Error::CudaUnavailable("grass-rs was built without the `cuda` feature".into())
}

/// Always `CudaUnavailable`.
///
/// # Safety
/// No requirement (nothing is touched).
pub unsafe fn project(
    _: &Projector,
    _: &Cache,
    _: u64,
    _: ElemType,
    _: u64,
    _: usize,
    _: Launch,
) -> Result<()> {
    Err(unavailable())
}

/// Always `CudaUnavailable`.
///
/// # Safety
/// No requirement (nothing is touched).
pub unsafe fn transpose(
    _: &Projector,
    _: &Cache,
    _: u64,
    _: ElemType,
    _: u64,
    _: usize,
    _: Launch,
) -> Result<()> {
    Err(unavailable())
}

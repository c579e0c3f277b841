//! `grass_rs._core`: the PyO3 binding of grass-core. Conversion, GIL release and error mapping
//! only; the algorithms live in `grass-core`.
mod cuda;
mod errors;
mod gather;
mod gil;
mod projector;
mod tensor;

use pyo3::prelude::*;

/// The compiled extension module.
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::gather::{gather_columns, masked_outer};
    #[pymodule_export]
    use super::projector::PyProjector;

    #[pymodule_export]
    use super::cuda::{cuda_device_count, get_deterministic, set_deterministic};

    use super::errors::PyGrassError;
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::errors::register(m)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("CUDA_COMPILED", cfg!(feature = "cuda"))?;
        Ok(())
    }

    /// Sets the number of threads of grass-rs's own pool.
    #[pyfunction]
    fn set_num_threads(n: usize) -> PyResult<()> {
        grass_core::parallel::set_num_threads(n).map_err(|e| PyGrassError(e).into())
    }

    /// The number of threads of grass-rs's own pool.
    #[pyfunction]
    fn get_num_threads() -> usize {
        grass_core::parallel::get_num_threads()
    }

    /// The contract hash: the `counter`-th word of stream `key` (see docs/CONTRACT.md).
    #[pyfunction]
    fn hash(key: u64, counter: u64) -> u64 {
        grass_core::hash::hash(key, counter)
    }

    /// The key of stream `stream` (1 SJLT, 2 mask, 3 Gaussian, 4 Rademacher, 5 SRHT) of `seed`.
    #[pyfunction]
    fn stream_key(seed: u64, stream: u64) -> PyResult<u64> {
        use grass_core::hash::Stream;
        let s = match stream {
            1 => Stream::Sjlt,
            2 => Stream::Mask,
            3 => Stream::Gaussian,
            4 => Stream::Rademacher,
            5 => Stream::Srht,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "stream must be in 1..=5",
                ))
            }
        };
        Ok(grass_core::hash::stream_key(seed, s))
    }
}

//! `grass_rs._core`: the PyO3 binding of grass-core. Conversion, GIL release and error mapping
//! only; the algorithms live in `grass-core`.
mod args;
mod conv;
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
    use super::conv::conv_masked_outer;
    #[pymodule_export]
    use super::gather::{gather_columns, masked_outer};
    #[pymodule_export]
    use super::projector::PyProjector;

    #[pymodule_export]
    use super::cuda::{cuda_device_count, get_deterministic, set_deterministic};

    use super::args::{i128_arg, u64_arg};
    use super::errors::{value_error, PyGrassError};
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::errors::register(m)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("CUDA_COMPILED", cfg!(feature = "cuda"))?;
        Ok(())
    }

    /// Sets the number of threads grass-rs uses: `1 ≤ n ≤ min(4 × cores, 1024)`
    /// (`InvalidArgumentError` otherwise), or `None` for the default again.
    #[pyfunction]
    fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
        if n.is_none() {
            grass_core::parallel::reset_num_threads();
            return Ok(());
        }
        let n = grass_core::parallel::check_num_threads(i128_arg(n, "n")?).map_err(PyGrassError)?;
        grass_core::parallel::set_num_threads(n).map_err(|e| PyGrassError(e).into())
    }

    /// The number of threads grass-rs's parallel calls use now.
    #[pyfunction]
    fn get_num_threads() -> usize {
        grass_core::parallel::get_num_threads()
    }

    /// Runs grass-rs's parallel work on the team of the GNU OpenMP runtime at `path` (which must
    /// already be loaded: torch's libgomp), or on grass-rs's rayon pool again with `None`.
    #[pyfunction]
    #[pyo3(signature = (path))]
    fn _use_openmp(path: Option<&str>) -> PyResult<()> {
        if let Some(p) = path {
            grass_core::openmp::attach(p).map_err(|e| PyGrassError(e).into())
        } else {
            grass_core::openmp::detach();
            Ok(())
        }
    }

    /// The path of the OpenMP runtime whose team runs grass-rs's work, or `None` (rayon pool).
    #[pyfunction]
    fn _openmp_runtime() -> Option<&'static str> {
        grass_core::openmp::active_path()
    }

    /// The contract hash: the `counter`-th word of stream `key` (see docs/CONTRACT.md).
    #[pyfunction]
    fn hash(key: &Bound<'_, PyAny>, counter: &Bound<'_, PyAny>) -> PyResult<u64> {
        let (key, counter) = (u64_arg(key, "key")?, u64_arg(counter, "counter")?);
        Ok(grass_core::hash::hash(key, counter))
    }

    /// The key of stream `stream` (1 SJLT, 2 mask, 3 Gaussian, 4 Rademacher, 5 SRHT) of `seed`.
    #[pyfunction]
    fn stream_key(seed: &Bound<'_, PyAny>, stream: &Bound<'_, PyAny>) -> PyResult<u64> {
        use grass_core::hash::Stream;
        let seed = u64_arg(seed, "seed")?;
        let s = match u64_arg(stream, "stream")? {
            1 => Stream::Sjlt,
            2 => Stream::Mask,
            3 => Stream::Gaussian,
            4 => Stream::Rademacher,
            5 => Stream::Srht,
            other => {
                return Err(value_error(format!(
                    "`stream` must be in 1..=5, got {other}"
                )))
            }
        };
        Ok(grass_core::hash::stream_key(seed, s))
    }
}

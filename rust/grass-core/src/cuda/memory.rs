//! Device memory of the CUDA path: the per-projector tables (mask coordinates, the CSR of `Pᵀ`)
//! uploaded once per device and freed with the projector, and stream-ordered zeroing.
use super::driver::{cuda_err, lock, Current};
use super::plan;
use crate::alloc;
use crate::error::Result;
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Zeroes `bytes` at `ptr` on `stream`.
///
/// # Safety
/// `ptr` must be valid for `bytes` bytes until the work on `stream` completes.
pub(super) unsafe fn zero(ptr: u64, bytes: usize, stream: sys::CUstream) -> Result<()> {
    // SAFETY: the caller's contract.
    unsafe { result::memset_d8_async(ptr, 0, bytes, stream) }
        .map_err(|e| cuda_err("cuMemsetD8Async", e))
}

/// Device memory owned by a projector's cache; freed (after a device sync) in its context.
pub(super) struct DevBuf {
    pub(super) ptr: u64,
    device: i32,
}

impl DevBuf {
    /// Uploads `data` to `device` (whose context is current) through `stream`, and waits for it.
    fn upload<T: Copy>(data: &[T], device: i32, stream: sys::CUstream) -> Result<Self> {
        let bytes = std::mem::size_of_val(data).max(1);
        // SAFETY: a plain allocation in the current context.
        let ptr = unsafe { result::malloc_sync(bytes) }.map_err(|e| cuda_err("cuMemAlloc", e))?;
        let buf = Self { ptr, device };
        if !data.is_empty() {
            // SAFETY: `ptr` holds `bytes` bytes; `data` stays alive until the stream sync below.
            unsafe { result::memcpy_htod_async(ptr, data, stream) }
                .map_err(|e| cuda_err("cuMemcpyHtoDAsync", e))?;
        }
        // SAFETY: `stream` is live (caller's contract of `project`).
        unsafe { result::stream::synchronize(stream) }
            .map_err(|e| cuda_err("cuStreamSynchronize", e))?;
        Ok(buf)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if let Ok(_ctx) = Current::push(self.device) {
            // Kernels queued on any stream may still read the table: wait for the device first.
            let _ = result::ctx::synchronize();
            // SAFETY: `ptr` came from cuMemAlloc in this context and is freed exactly once.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// The tables of one projector on one device.
#[derive(Default)]
struct Tables {
    idx: Option<Arc<DevBuf>>,
    csr: Option<Arc<DevCsr>>,
}

/// The deterministic projection's chunked CSR on a device.
pub(super) struct DevCsr {
    pub(super) n_chunks: usize,
    pub(super) row_ptr: DevBuf,
    pub(super) entries: DevBuf,
}

/// Per-projector device tables, keyed by device ordinal.
#[derive(Default)]
pub struct Cache {
    tables: Mutex<HashMap<i32, Tables>>,
}

impl Cache {
    pub(super) fn indices(
        &self,
        device: i32,
        stream: sys::CUstream,
        indices: &[usize],
    ) -> Result<Arc<DevBuf>> {
        let mut t = lock(&self.tables);
        let e = t.entry(device).or_default();
        if let Some(b) = &e.idx {
            return Ok(Arc::clone(b));
        }
        let mut host = alloc::with_capacity::<u64>(indices.len(), "device mask indices")?;
        host.extend(indices.iter().map(|&i| i as u64));
        let b = Arc::new(DevBuf::upload(&host, device, stream)?);
        e.idx = Some(Arc::clone(&b));
        Ok(b)
    }

    pub(super) fn csr(
        &self,
        device: i32,
        stream: sys::CUstream,
        build: impl FnOnce() -> Result<plan::Csr>,
    ) -> Result<Arc<DevCsr>> {
        let mut t = lock(&self.tables);
        let e = t.entry(device).or_default();
        if let Some(b) = &e.csr {
            return Ok(Arc::clone(b));
        }
        let csr = build()?;
        let row_ptr = DevBuf::upload(&csr.row_ptr, device, stream)?;
        let entries = DevBuf::upload(&csr.entries, device, stream)?;
        let b = Arc::new(DevCsr {
            n_chunks: csr.n_chunks,
            row_ptr,
            entries,
        });
        e.csr = Some(Arc::clone(&b));
        Ok(b)
    }
}

//! Driver-API plumbing of the CUDA path: the driver is loaded at run time (cudarc's dynamic
//! loading, probed first so a missing driver is an error, never a panic); work runs inside the
//! primary context of the buffers' device, pushed for the call and popped after (no
//! current-device side effects remain); PTX modules and their functions are cached per device.
use super::{ptx, Launch};
use crate::error::{Error, Result};
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Mutex, OnceLock, PoisonError};

pub(super) fn cuda_err(what: &str, e: result::DriverError) -> Error {
    Error::Cuda(format!("{what} failed: {e}"))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads and initializes the driver once; `CudaUnavailable` when there is none.
fn driver() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only tries to dlopen the driver library by its usual names; nothing else runs.
        if !unsafe { sys::is_culib_present() } {
            return Err("no CUDA driver (libcuda.so) was found".into());
        }
        result::init().map_err(|e| format!("cuInit failed: {e}"))
    })
    .clone()
    .map_err(Error::CudaUnavailable)
}

pub(super) fn device_count() -> usize {
    if driver().is_err() {
        return 0;
    }
    result::device::get_count().map_or(0, |n| n.max(0) as usize)
}

/// The primary context of `device`, retained once for the process (as PyTorch does).
fn primary_context(device: i32) -> Result<sys::CUcontext> {
    static CONTEXTS: OnceLock<Mutex<HashMap<i32, usize>>> = OnceLock::new();
    let mut map = lock(CONTEXTS.get_or_init(Mutex::default));
    if let Some(&ctx) = map.get(&device) {
        return Ok(ctx as sys::CUcontext);
    }
    let dev = result::device::get(device).map_err(|e| cuda_err("cuDeviceGet", e))?;
    // SAFETY: `dev` comes from `device::get`; the reference is intentionally never released.
    let ctx = unsafe { result::primary_ctx::retain(dev) }
        .map_err(|e| cuda_err("cuDevicePrimaryCtxRetain", e))?;
    map.insert(device, ctx as usize);
    Ok(ctx)
}

/// Makes `device`'s primary context current for the guard's lifetime, restoring the caller's.
pub(super) struct Current;

impl Current {
    pub(super) fn push(device: i32) -> Result<Self> {
        let ctx = primary_context(device)?;
        // SAFETY: `ctx` is a retained, live primary context; the guard pops it exactly once.
        unsafe { sys::cuCtxPushCurrent_v2(ctx) }
            .result()
            .map_err(|e| cuda_err("cuCtxPushCurrent", e))?;
        Ok(Self)
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let mut popped: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: this guard pushed a context on this thread, so the stack is non-empty and its
        // top is ours; popping restores the caller's current context.
        let _ = unsafe { sys::cuCtxPopCurrent_v2(&raw mut popped) };
    }
}

/// A kernel function of `module` on `device` (the device's context must be current). Modules are
/// JIT-loaded from the embedded PTX once per device and cached with their functions.
pub(super) fn function(device: i32, module: &ptx::Module, name: &str) -> Result<sys::CUfunction> {
    static FUNCS: OnceLock<Mutex<HashMap<(i32, String), usize>>> = OnceLock::new();
    static MODULES: OnceLock<Mutex<HashMap<(i32, &'static str), usize>>> = OnceLock::new();
    let mut funcs = lock(FUNCS.get_or_init(Mutex::default));
    if let Some(&f) = funcs.get(&(device, name.to_string())) {
        return Ok(f as sys::CUfunction);
    }
    let module_handle = {
        let mut modules = lock(MODULES.get_or_init(Mutex::default));
        if let Some(&m) = modules.get(&(device, module.name)) {
            m as sys::CUmodule
        } else {
            let image = CString::new(module.ptx)
                .map_err(|_| Error::Cuda("PTX contains a NUL byte".into()))?;
            // SAFETY: `image` is a NUL-terminated PTX text alive for the call; the context of
            // `device` is current (caller's obligation). The module is kept for the process.
            let m = unsafe { result::module::load_data(image.as_ptr().cast()) }
                .map_err(|e| cuda_err(&format!("cuModuleLoadData({})", module.name), e))?;
            modules.insert((device, module.name), m as usize);
            m
        }
    };
    let cname = CString::new(name).map_err(|_| Error::Cuda("bad kernel name".into()))?;
    // SAFETY: `module_handle` is a loaded, never-unloaded module of the current context.
    let f = unsafe { result::module::get_function(module_handle, cname) }
        .map_err(|e| cuda_err(&format!("cuModuleGetFunction({name})"), e))?;
    funcs.insert((device, name.to_string()), f as usize);
    Ok(f)
}

/// Checks the device and makes its context current.
pub(super) fn enter(cfg: Launch) -> Result<Current> {
    driver()?;
    let n = device_count();
    if cfg.device as usize >= n {
        return Err(Error::CudaUnavailable(format!(
            "CUDA device {} does not exist ({n} visible)",
            cfg.device
        )));
    }
    Current::push(cfg.device)
}

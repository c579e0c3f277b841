//! Driver-API plumbing of the CUDA path: the driver is loaded at run time (cudarc's dynamic
//! loading, probed first so a missing driver is an error, never a panic); kernels are launched
//! with the low-level `result` API on the caller's foreign `CUstream`, inside the primary
//! context of the buffers' device, pushed for the call and popped after (no current-device side
//! effects remain).
use super::plan::{self, Grid, BLOCK};
use super::{ptx, ElemType, Launch, Op};
use crate::error::{Error, Result};
use crate::hash::{stream_key, Stream};
use crate::{DenseKind, Sjlt};
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

fn cuda_err(what: &str, e: result::DriverError) -> Error {
    Error::Cuda(format!("{what} failed: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

pub fn device_count() -> usize {
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
struct Current;

impl Current {
    fn push(device: i32) -> Result<Self> {
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
fn function(device: i32, module: &ptx::Module, name: &str) -> Result<sys::CUfunction> {
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

/// A kernel argument (the exact C type of the kernel parameter).
#[derive(Clone, Copy)]
enum Arg {
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
}

fn usize_arg(v: usize) -> Arg {
    Arg::U64(v as u64)
}

/// A float argument of the accumulator type `acc`, rounded like `Accum::from_f64` on the CPU.
fn acc_arg(acc: ElemType, v: f64) -> Arg {
    if acc == ElemType::F64 {
        Arg::F64(v)
    } else {
        Arg::F32(v as f32)
    }
}

/// Launches `f` with [`BLOCK`] threads per block.
///
/// # Safety
/// The arguments must match the kernel's parameters, and every pointer among them must be valid
/// for the accesses the kernel makes, until the work on `stream` completes.
unsafe fn launch(
    f: sys::CUfunction,
    grid: Grid,
    smem: u32,
    stream: sys::CUstream,
    args: &[Arg],
) -> Result<()> {
    let mut vals = args.to_vec();
    let mut ptrs: Vec<*mut c_void> = vals
        .iter_mut()
        .map(|a| match a {
            Arg::U64(v) => std::ptr::from_mut(v).cast(),
            Arg::I32(v) => std::ptr::from_mut(v).cast(),
            Arg::F32(v) => std::ptr::from_mut(v).cast(),
            Arg::F64(v) => std::ptr::from_mut(v).cast(),
        })
        .collect();
    // SAFETY: `ptrs` point into `vals`, alive for the call (cuLaunchKernel copies the values);
    // the kernel contract is the caller's.
    unsafe { result::launch_kernel(f, grid, (BLOCK, 1, 1), smem, stream, &mut ptrs) }
        .map_err(|e| cuda_err("cuLaunchKernel", e))
}

/// Zeroes `bytes` at `ptr` on `stream`.
///
/// # Safety
/// `ptr` must be valid for `bytes` bytes until the work on `stream` completes.
unsafe fn zero(ptr: u64, bytes: usize, stream: sys::CUstream) -> Result<()> {
    // SAFETY: the caller's contract.
    unsafe { result::memset_d8_async(ptr, 0, bytes, stream) }
        .map_err(|e| cuda_err("cuMemsetD8Async", e))
}

/// Device memory owned by a projector's cache; freed (after a device sync) in its context.
struct DevBuf {
    ptr: u64,
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
struct DevCsr {
    n_chunks: usize,
    row_ptr: DevBuf,
    entries: DevBuf,
}

/// Per-projector device tables, keyed by device ordinal.
#[derive(Default)]
pub struct Cache {
    tables: Mutex<HashMap<i32, Tables>>,
}

impl Cache {
    fn indices(
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
        let host: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
        let b = Arc::new(DevBuf::upload(&host, device, stream)?);
        e.idx = Some(Arc::clone(&b));
        Ok(b)
    }

    fn csr(
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

/// Checks the device and makes its context current.
fn enter(cfg: Launch) -> Result<Current> {
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

/// Buffers and types of one call.
struct Io {
    input: u64,
    in_type: ElemType,
    out: u64,
    acc: ElemType,
    batch: usize,
    device: i32,
    stream: sys::CUstream,
}

impl Io {
    /// Kernel `{base}_{suffix of ty}` of `module` on this call's device.
    fn kernel(&self, module: &ptx::Module, base: &str, ty: ElemType) -> Result<sys::CUfunction> {
        function(self.device, module, &format!("{base}_{}", ty.suffix()))
    }

    fn new(
        input: u64,
        in_type: ElemType,
        out: u64,
        acc: ElemType,
        batch: usize,
        cfg: Launch,
    ) -> Self {
        let stream = cfg.stream as sys::CUstream;
        Self {
            input,
            in_type,
            out,
            acc,
            batch,
            device: cfg.device,
            stream,
        }
    }

    /// Byte offset of row `b` of the input (`cols` wide) and of the output (`out_cols` wide).
    fn rows(&self, b: usize, cols: usize, out_cols: usize) -> Result<(u64, u64)> {
        Ok((
            self.input + plan::row_offset(b, cols, self.in_type.size())?,
            self.out + plan::row_offset(b, out_cols, self.acc.size())?,
        ))
    }
    fn out_bytes(&self, cols: usize) -> Result<usize> {
        self.batch
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(self.acc.size()))
            .ok_or(Error::TooLarge { what: "out" })
    }
}

fn sjlt_key(s: &Sjlt) -> u64 {
    stream_key(s.seed(), Stream::Sjlt)
}

pub unsafe fn project(
    op: Op<'_>,
    cache: &Cache,
    x: u64,
    x_type: ElemType,
    out: u64,
    batch: usize,
    cfg: Launch,
) -> Result<()> {
    let _ctx = enter(cfg)?;
    if batch == 0 {
        return Ok(());
    }
    let io = Io::new(x, x_type, out, x_type.accum(), batch, cfg);
    let in_dim = op.dims().0;
    // SAFETY (all arms): the buffers satisfy this function's contract, forwarded to the kernels.
    unsafe {
        match op {
            Op::Sjlt(s) => sjlt_project(&io, cache, s, in_dim, None, cfg.deterministic),
            Op::Grass(g) => {
                let idx = cache.indices(io.device, io.stream, g.mask().indices())?;
                sjlt_project(
                    &io,
                    cache,
                    g.sjlt(),
                    in_dim,
                    Some((idx.ptr, g.mask().indices())),
                    cfg.deterministic,
                )
            }
            Op::Mask(m) => {
                let idx = cache.indices(io.device, io.stream, m.indices())?;
                let f = function(
                    io.device,
                    &ptx::MASK,
                    &format!("mask_project_{}", x_type.suffix()),
                )?;
                let factor = m.factor();
                let args = [
                    Arg::U64(io.input),
                    Arg::U64(io.out),
                    usize_arg(batch),
                    usize_arg(in_dim),
                    usize_arg(m.out_dim()),
                    Arg::U64(idx.ptr),
                    acc_arg(io.acc, factor),
                    Arg::I32(i32::from(factor != 1.0)),
                ];
                launch(f, plan::mask_grid(m.out_dim(), batch), 0, io.stream, &args)
            }
            Op::Dense(d) => dense_project(&io, d),
        }
    }
}

/// SJLT (or GraSS, with `idx` = the mask's device and host coordinates) projection.
unsafe fn sjlt_project(
    io: &Io,
    cache: &Cache,
    s: &Sjlt,
    in_dim: usize,
    idx: Option<(u64, &[usize])>,
    deterministic: bool,
) -> Result<()> {
    let (n_cols, k, c) = (s.in_dim(), s.out_dim(), s.c());
    let scale = 1.0 / (c as f64).sqrt();
    if deterministic {
        let coords = idx.map(|(_, h)| h);
        let csr = cache.csr(io.device, io.stream, || {
            plan::build_csr(
                in_dim,
                k,
                n_cols,
                c,
                |m, r| s.entry(m, r),
                |m| coords.map_or(m, |h| h[m]),
            )
        })?;
        // SAFETY: the CSR tables are alive (held by `csr`, then by the cache); buffers per contract.
        return unsafe { csr_project(io, &csr, in_dim, k, scale, c > 1) };
    }
    // SAFETY: `out` holds batch · k accumulators (contract).
    unsafe { zero(io.out, io.out_bytes(k)?, io.stream)? };
    let plan = plan::atomic_plan(n_cols, io.batch, k, io.acc.size());
    let f = io.kernel(&ptx::SJLT, "sjlt_project_atomic", io.in_type)?;
    for (b0, nb) in plan::batch_chunks(io.batch, plan.batch_per_launch) {
        let (xp, op) = io.rows(b0, in_dim, k)?;
        let grid = (plan.grid.0, nb.div_ceil(plan.group) as u32, 1);
        let args = [
            Arg::U64(xp),
            Arg::U64(op),
            usize_arg(nb),
            usize_arg(in_dim),
            usize_arg(k),
            usize_arg(c),
            Arg::U64(sjlt_key(s)),
            usize_arg(n_cols),
            Arg::U64(idx.map_or(0, |(p, _)| p)),
            usize_arg(plan.group),
            usize_arg(plan.cols_per_block),
            Arg::I32(i32::from(plan.use_smem)),
        ];
        // SAFETY: rows `b0 .. b0 + nb` of both buffers are in bounds; smem within the 48 KiB default.
        unsafe { launch(f, grid, plan.smem_bytes, io.stream, &args)? };
    }
    if c > 1 {
        let f = io.kernel(&ptx::SJLT, "scale", io.acc)?;
        let n = io.batch * k;
        let args = [Arg::U64(io.out), usize_arg(n), acc_arg(io.acc, scale)];
        // SAFETY: `out` holds n accumulators.
        unsafe { launch(f, (plan::grid_1d(n), 1, 1), 0, io.stream, &args)? };
    }
    Ok(())
}

/// The deterministic projection: per-chunk fixed-order sums from the CSR, then (with several
/// chunks) an in-order reduction over the chunks through a stream-ordered scratch buffer.
unsafe fn csr_project(
    io: &Io,
    csr: &DevCsr,
    in_dim: usize,
    k: usize,
    scale: f64,
    apply: bool,
) -> Result<()> {
    let f = io.kernel(&ptx::SJLT, "sjlt_project_csr", io.in_type)?;
    let reduce = io.kernel(&ptx::SJLT, "csr_reduce", io.acc)?;
    let plan = plan::csr_plan(csr.n_chunks, k, io.acc.size());
    for (b0, nb) in plan::batch_chunks(io.batch, plan.batch_per_launch) {
        let (xp, op) = io.rows(b0, in_dim, k)?;
        let scratch = plan::CsrPlan::scratch_bytes(csr.n_chunks, k, nb, io.acc.size());
        let grid = plan::csr_grid(nb, k, csr.n_chunks);
        let main = |part: u64, direct: bool| {
            let args = [
                Arg::U64(xp),
                Arg::U64(part),
                usize_arg(nb),
                usize_arg(in_dim),
                usize_arg(k),
                usize_arg(csr.n_chunks),
                Arg::U64(csr.row_ptr.ptr),
                Arg::U64(csr.entries.ptr),
                acc_arg(io.acc, scale),
                Arg::I32(i32::from(apply && direct)),
            ];
            // SAFETY: `part` holds n_chunks · nb · k accumulators (or is the output rows with one
            // chunk); the tables hold the CSR the kernel indexes.
            unsafe { launch(f, grid, 0, io.stream, &args) }
        };
        let fold = |part: u64| {
            let n = nb * k;
            let args = [
                Arg::U64(part),
                Arg::U64(op),
                usize_arg(n),
                usize_arg(csr.n_chunks),
                acc_arg(io.acc, scale),
                Arg::I32(i32::from(apply)),
            ];
            // SAFETY: `part` and the output rows are in bounds.
            unsafe { launch(reduce, (plan::grid_1d(n), 1, 1), 0, io.stream, &args) }
        };
        // SAFETY: `op` is the output rows of this launch's samples.
        unsafe { split_reduce(io, op, scratch, main, fold)? };
    }
    Ok(())
}

/// Runs a split computation: `main(part, direct)` writes partial results into `part`, and with
/// `scratch_bytes == 0` that is the output rows `out_rows` themselves (`direct`); otherwise `part`
/// is a stream-ordered scratch allocation that `fold(part)` reduces into the output rows, freed
/// after it in stream order (also when a launch failed).
///
/// # Safety
/// `out_rows` must be valid for what `main` writes when `direct`; the closures' launches must
/// only touch `part` and the output rows.
unsafe fn split_reduce(
    io: &Io,
    out_rows: u64,
    scratch_bytes: usize,
    main: impl FnOnce(u64, bool) -> Result<()>,
    fold: impl FnOnce(u64) -> Result<()>,
) -> Result<()> {
    if scratch_bytes == 0 {
        return main(out_rows, true);
    }
    // SAFETY: a stream-ordered allocation in the current context, freed below on the same stream.
    let part = unsafe { result::malloc_async(io.stream, scratch_bytes) }
        .map_err(|e| cuda_err("cuMemAllocAsync", e))?;
    let r = main(part, false).and_then(|()| fold(part));
    // SAFETY: `part` came from cuMemAllocAsync on this stream; the kernels using it precede the free.
    let freed =
        unsafe { result::free_async(part, io.stream) }.map_err(|e| cuda_err("cuMemFreeAsync", e));
    r.and(freed)
}

fn dense_key(d: &crate::Dense) -> (u64, i32) {
    match d.kind() {
        DenseKind::Gaussian => (stream_key(d.seed(), Stream::Gaussian), 0),
        DenseKind::Rademacher => (stream_key(d.seed(), Stream::Rademacher), 1),
    }
}

/// `1/√k` in f32, exactly as `Dense::entry`.
fn dense_inv(k: usize) -> f32 {
    1.0 / (k as f32).sqrt()
}

unsafe fn dense_project(io: &Io, d: &crate::Dense) -> Result<()> {
    let (p, k) = (d.in_dim(), d.out_dim());
    let (key, kind) = dense_key(d);
    let plan = plan::dense_plan(p, k, io.acc.size());
    let f = io.kernel(&ptx::DENSE, "dense_project", io.in_type)?;
    let reduce = io.kernel(&ptx::DENSE, "dense_reduce", io.acc)?;
    for (b0, nb) in plan::batch_chunks(io.batch, plan.batch_per_launch) {
        let (xp, op) = io.rows(b0, p, k)?;
        let scratch_bytes = plan.scratch_bytes(k, nb, io.acc.size());
        let main = |part: u64, _direct: bool| {
            let args = [
                Arg::U64(xp),
                Arg::U64(part),
                usize_arg(nb),
                usize_arg(p),
                usize_arg(k),
                Arg::U64(key),
                Arg::I32(kind),
                Arg::F32(dense_inv(k)),
                usize_arg(plan.chunk),
            ];
            // SAFETY: `part` holds n_split · nb · k accumulators (or is the output rows when
            // n_split = 1).
            unsafe { launch(f, plan.grid(k, nb), 0, io.stream, &args) }
        };
        let fold = |part: u64| {
            let args = [
                Arg::U64(part),
                Arg::U64(op),
                usize_arg(nb * k),
                usize_arg(plan.n_split),
            ];
            // SAFETY: `part` and the output rows are in bounds.
            unsafe { launch(reduce, (plan::grid_1d(nb * k), 1, 1), 0, io.stream, &args) }
        };
        // SAFETY: `op` is the output rows of this launch's samples.
        unsafe { split_reduce(io, op, scratch_bytes, main, fold)? };
    }
    Ok(())
}

pub unsafe fn transpose(
    op: Op<'_>,
    cache: &Cache,
    y: u64,
    y_type: ElemType,
    out: u64,
    batch: usize,
    cfg: Launch,
) -> Result<()> {
    let _ctx = enter(cfg)?;
    if batch == 0 {
        return Ok(());
    }
    let io = Io::new(y, y_type, out, y_type, batch, cfg);
    let (in_dim, k) = op.dims();
    let sfx = y_type.suffix();
    // SAFETY (all arms): the buffers satisfy this function's contract, forwarded to the kernels.
    unsafe {
        match op {
            Op::Sjlt(s) => sjlt_transpose(&io, s, in_dim, None),
            Op::Grass(g) => {
                let idx = cache.indices(io.device, io.stream, g.mask().indices())?;
                zero(io.out, io.out_bytes(in_dim)?, io.stream)?;
                sjlt_transpose(&io, g.sjlt(), in_dim, Some(idx.ptr))
            }
            Op::Mask(m) => {
                let idx = cache.indices(io.device, io.stream, m.indices())?;
                zero(io.out, io.out_bytes(in_dim)?, io.stream)?;
                let f = function(io.device, &ptx::MASK, &format!("mask_transpose_{sfx}"))?;
                let factor = m.factor();
                let args = [
                    Arg::U64(io.input),
                    Arg::U64(io.out),
                    usize_arg(batch),
                    usize_arg(in_dim),
                    usize_arg(k),
                    Arg::U64(idx.ptr),
                    acc_arg(io.acc, factor),
                    Arg::I32(i32::from(factor != 1.0)),
                ];
                launch(f, plan::mask_grid(k, batch), 0, io.stream, &args)
            }
            Op::Dense(d) => {
                let (key, kind) = dense_key(d);
                let f = function(io.device, &ptx::DENSE, &format!("dense_transpose_{sfx}"))?;
                for (b0, nb) in plan::batch_chunks(batch, plan::DENSE_GROUP * plan::MAX_GRID_YZ) {
                    let (yp, op) = io.rows(b0, k, in_dim)?;
                    let args = [
                        Arg::U64(yp),
                        Arg::U64(op),
                        usize_arg(nb),
                        usize_arg(in_dim),
                        usize_arg(k),
                        Arg::U64(key),
                        Arg::I32(kind),
                        Arg::F32(dense_inv(k)),
                    ];
                    launch(
                        f,
                        plan::dense_transpose_grid(in_dim, nb),
                        0,
                        io.stream,
                        &args,
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// SJLT (or GraSS, with `idx` = the mask's device coordinates) adjoint.
unsafe fn sjlt_transpose(io: &Io, s: &Sjlt, in_dim: usize, idx: Option<u64>) -> Result<()> {
    let (n_cols, k, c) = (s.in_dim(), s.out_dim(), s.c());
    let f = io.kernel(&ptx::SJLT, "sjlt_transpose", io.acc)?;
    for (b0, nb) in plan::batch_chunks(io.batch, plan::GROUP * plan::MAX_GRID_YZ) {
        let (yp, op) = io.rows(b0, k, in_dim)?;
        let args = [
            Arg::U64(yp),
            Arg::U64(op),
            usize_arg(nb),
            usize_arg(in_dim),
            usize_arg(k),
            usize_arg(c),
            Arg::U64(sjlt_key(s)),
            usize_arg(n_cols),
            Arg::U64(idx.unwrap_or(0)),
            acc_arg(io.acc, 1.0 / (c as f64).sqrt()),
            Arg::I32(i32::from(c > 1)),
        ];
        let grid = plan::sjlt_transpose_grid(n_cols, nb);
        // SAFETY: rows `b0 .. b0 + nb` of both buffers are in bounds (contract).
        unsafe { launch(f, grid, 0, io.stream, &args)? };
    }
    Ok(())
}

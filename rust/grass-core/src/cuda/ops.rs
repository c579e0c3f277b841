//! The per-projector launchers of the CUDA path and their dispatch on [`Projector`].
use super::driver::enter;
use super::launch::{launch, split_reduce, Args, Chunk, Io};
use super::memory::{zero, DevCsr};
use super::plan;
use super::{ptx, ElemType, Launch};
use crate::dense::{Dense, DenseKind};
use crate::error::{Error, Result};
use crate::hash::{stream_key, Stream};
use crate::mask::Mask;
use crate::projection::Projection;
use crate::projector::Projector;
use crate::sjlt::Sjlt;

pub(super) use super::driver::device_count;
pub(super) use super::memory::Cache;

/// `out = P x` (see [`super::project`]).
///
/// # Safety
/// As [`super::project`].
pub(super) unsafe fn project(
    op: &Projector,
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
    let dims = (op.in_dim(), op.out_dim());
    let io = Io::project(x, x_type, out, batch, dims, cfg);
    // SAFETY (all arms): the buffers satisfy this function's contract, forwarded to the kernels.
    unsafe {
        match op {
            Projector::Sjlt(s) => sjlt_project(&io, cache, s, None, cfg.deterministic),
            Projector::Grass(g) => {
                let host = g.mask().indices();
                let idx = cache.indices(io.device, io.stream, host)?;
                let idx = Some((idx.ptr, host));
                sjlt_project(&io, cache, g.sjlt(), idx, cfg.deterministic)
            }
            Projector::Mask(m) => mask(&io, cache, m, "mask_project"),
            Projector::Dense(d) => dense_project(&io, d),
            Projector::Srht(_) => Err(Error::NoCudaPath(op.kind_name())),
        }
    }
}

/// `out = Pᵀ y` (see [`super::transpose`]).
///
/// # Safety
/// As [`super::transpose`].
pub(super) unsafe fn transpose(
    op: &Projector,
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
    let dims = (op.in_dim(), op.out_dim());
    let io = Io::adjoint(y, y_type, out, batch, dims, cfg);
    // SAFETY (all arms): the buffers satisfy this function's contract, forwarded to the kernels.
    unsafe {
        match op {
            Projector::Sjlt(s) => sjlt_transpose(&io, s, None),
            Projector::Grass(g) => {
                let idx = cache.indices(io.device, io.stream, g.mask().indices())?;
                zero(io.out, io.out_bytes()?, io.stream)?;
                sjlt_transpose(&io, g.sjlt(), Some(idx.ptr))
            }
            Projector::Mask(m) => {
                zero(io.out, io.out_bytes()?, io.stream)?;
                mask(&io, cache, m, "mask_transpose")
            }
            Projector::Dense(d) => dense_transpose(&io, d),
            Projector::Srht(_) => Err(Error::NoCudaPath(op.kind_name())),
        }
    }
}

/// The mask gather (`mask_project`) or scatter (`mask_transpose`, onto a zeroed output).
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract.
unsafe fn mask(io: &Io, cache: &Cache, m: &Mask, base: &str) -> Result<()> {
    let idx = cache.indices(io.device, io.stream, m.indices())?;
    let f = io.kernel(&ptx::MASK, base, io.in_type)?;
    let factor = m.factor();
    let args = io
        .args(io.all(), None)
        .u64(idx.ptr)
        .acc(io.acc, factor)
        .flag(factor != 1.0);
    let grid = plan::mask_grid(m.out_dim(), io.batch);
    // SAFETY: whole-batch buffers per contract; `idx` holds the `out_dim` coordinates.
    unsafe { launch(f, grid, 0, io.stream, args) }
}

/// The arguments of the SJLT kernels after the common prefix: `(c, key, n_cols, idx)`.
fn sjlt_args(args: Args, s: &Sjlt, idx: Option<u64>) -> Args {
    args.n(s.c())
        .u64(stream_key(s.seed(), Stream::Sjlt))
        .n(s.in_dim())
        .u64(idx.unwrap_or(0))
}

/// SJLT (or GraSS, with `idx` = the mask's device and host coordinates) projection.
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract.
unsafe fn sjlt_project(
    io: &Io,
    cache: &Cache,
    s: &Sjlt,
    idx: Option<(u64, &[usize])>,
    deterministic: bool,
) -> Result<()> {
    let (n_cols, k, c) = (s.in_dim(), s.out_dim(), s.c());
    let scale = 1.0 / (c as f64).sqrt();
    if deterministic {
        let coords = idx.map(|(_, h)| h);
        let csr = cache.csr(io.device, io.stream, || {
            let coord = |m| coords.map_or(m, |h: &[usize]| h[m]);
            plan::build_csr(io.in_dim, k, n_cols, c, |m, r| s.entry(m, r), coord)
        })?;
        // SAFETY: the CSR tables are alive (held by `csr`, then by the cache); buffers per contract.
        return unsafe { csr_project(io, &csr, scale, c > 1) };
    }
    // SAFETY: `out` holds batch · k accumulators (contract).
    unsafe { zero(io.out, io.out_bytes()?, io.stream)? };
    let plan = plan::atomic_plan(n_cols, io.batch, k, io.acc.size());
    let f = io.kernel(&ptx::SJLT, "sjlt_project_atomic", io.in_type)?;
    io.for_chunks(plan.batch_per_launch, |chunk| {
        let grid = (plan.grid.0, chunk.nb.div_ceil(plan.group) as u32, 1);
        let args = sjlt_args(io.args(chunk, None), s, idx.map(|(p, _)| p))
            .n(plan.group)
            .n(plan.cols_per_block)
            .flag(plan.use_smem);
        // SAFETY: the chunk's rows of both buffers are in bounds; smem within the 48 KiB default.
        unsafe { launch(f, grid, plan.smem_bytes, io.stream, args) }
    })?;
    if c > 1 {
        let f = io.kernel(&ptx::SJLT, "scale", io.acc)?;
        let n = io.batch * k;
        let args = Args::default().u64(io.out).n(n).acc(io.acc, scale);
        // SAFETY: `out` holds n accumulators.
        unsafe { launch(f, (plan::grid_1d(n), 1, 1), 0, io.stream, args)? };
    }
    Ok(())
}

/// The deterministic projection: per-chunk fixed-order sums from the CSR, then (with several
/// chunks) an in-order reduction over the chunks through a stream-ordered scratch buffer.
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract; `csr` is alive on `io.device`.
unsafe fn csr_project(io: &Io, csr: &DevCsr, scale: f64, apply: bool) -> Result<()> {
    let k = io.k;
    let f = io.kernel(&ptx::SJLT, "sjlt_project_csr", io.in_type)?;
    let reduce = io.kernel(&ptx::SJLT, "csr_reduce", io.acc)?;
    let plan = plan::csr_plan(csr.n_chunks, k, io.acc.size());
    io.for_chunks(plan.batch_per_launch, |chunk: Chunk| {
        let scratch = plan::CsrPlan::scratch_bytes(csr.n_chunks, k, chunk.nb, io.acc.size());
        let grid = plan::csr_grid(chunk.nb, k, csr.n_chunks);
        let main = |part: u64, direct: bool| {
            let args = io
                .args(chunk, Some(part))
                .n(csr.n_chunks)
                .u64(csr.row_ptr.ptr)
                .u64(csr.entries.ptr)
                .acc(io.acc, scale)
                .flag(apply && direct);
            // SAFETY: `part` holds n_chunks · nb · k accumulators (or is the output rows with one
            // chunk); the tables hold the CSR the kernel indexes.
            unsafe { launch(f, grid, 0, io.stream, args) }
        };
        let fold = |part: u64| {
            let n = chunk.nb * k;
            let args = Args::default()
                .u64(part)
                .u64(chunk.out)
                .n(n)
                .n(csr.n_chunks)
                .acc(io.acc, scale)
                .flag(apply);
            // SAFETY: `part` and the output rows are in bounds.
            unsafe { launch(reduce, (plan::grid_1d(n), 1, 1), 0, io.stream, args) }
        };
        // SAFETY: `chunk.out` is the output rows of this launch's samples.
        unsafe { split_reduce(io, chunk.out, scratch, main, fold) }
    })
}

/// SJLT (or GraSS, with `idx` = the mask's device coordinates) adjoint.
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract.
unsafe fn sjlt_transpose(io: &Io, s: &Sjlt, idx: Option<u64>) -> Result<()> {
    let c = s.c();
    let f = io.kernel(&ptx::SJLT, "sjlt_transpose", io.acc)?;
    io.for_chunks(plan::GROUP * plan::MAX_GRID_YZ, |chunk| {
        let args = sjlt_args(io.args(chunk, None), s, idx)
            .acc(io.acc, 1.0 / (c as f64).sqrt())
            .flag(c > 1);
        let grid = plan::sjlt_transpose_grid(s.in_dim(), chunk.nb);
        // SAFETY: the chunk's rows of both buffers are in bounds (contract).
        unsafe { launch(f, grid, 0, io.stream, args) }
    })
}

/// The arguments of the dense kernels after the common prefix: `(key, kind, 1/√k)`, with `1/√k`
/// in f32 exactly as `Dense::entry`.
fn dense_args(args: Args, d: &Dense) -> Args {
    let (stream, kind) = match d.kind() {
        DenseKind::Gaussian => (Stream::Gaussian, 0),
        DenseKind::Rademacher => (Stream::Rademacher, 1),
    };
    args.u64(stream_key(d.seed(), stream))
        .i32(kind)
        .f32(1.0 / (d.out_dim() as f32).sqrt())
}

/// The dense projection: per-split partial sums, reduced in order when split.
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract.
unsafe fn dense_project(io: &Io, d: &Dense) -> Result<()> {
    let (p, k) = (d.in_dim(), d.out_dim());
    let plan = plan::dense_plan(p, k, io.acc.size());
    let f = io.kernel(&ptx::DENSE, "dense_project", io.in_type)?;
    let reduce = io.kernel(&ptx::DENSE, "dense_reduce", io.acc)?;
    io.for_chunks(plan.batch_per_launch, |chunk| {
        let scratch_bytes = plan.scratch_bytes(k, chunk.nb, io.acc.size());
        let main = |part: u64, _direct: bool| {
            let args = dense_args(io.args(chunk, Some(part)), d).n(plan.chunk);
            // SAFETY: `part` holds n_split · nb · k accumulators (or is the output rows when
            // n_split = 1).
            unsafe { launch(f, plan.grid(k, chunk.nb), 0, io.stream, args) }
        };
        let fold = |part: u64| {
            let n = chunk.nb * k;
            let args = Args::default()
                .u64(part)
                .u64(chunk.out)
                .n(n)
                .n(plan.n_split);
            // SAFETY: `part` and the output rows are in bounds.
            unsafe { launch(reduce, (plan::grid_1d(n), 1, 1), 0, io.stream, args) }
        };
        // SAFETY: `chunk.out` is the output rows of this launch's samples.
        unsafe { split_reduce(io, chunk.out, scratch_bytes, main, fold) }
    })
}

/// The dense adjoint.
///
/// # Safety
/// The buffers of `io` satisfy the entry point's contract.
unsafe fn dense_transpose(io: &Io, d: &Dense) -> Result<()> {
    let f = io.kernel(&ptx::DENSE, "dense_transpose", io.in_type)?;
    io.for_chunks(plan::DENSE_GROUP * plan::MAX_GRID_YZ, |chunk| {
        let grid = plan::dense_transpose_grid(io.in_dim, chunk.nb);
        let args = dense_args(io.args(chunk, None), d);
        // SAFETY: the chunk's rows of both buffers are in bounds (contract).
        unsafe { launch(f, grid, 0, io.stream, args) }
    })
}

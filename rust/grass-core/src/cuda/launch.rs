//! Kernel launches: the typed argument list ([`Args`]), the launch itself, the buffers of one
//! call ([`Io`]) with its batch-chunk loop, and the split / reduce pattern through a
//! stream-ordered scratch buffer.
use super::driver::{cuda_err, function};
use super::plan::{self, Grid, BLOCK};
use super::{ptx, ElemType, Launch};
use crate::error::{Error, Result};
use cudarc::driver::{result, sys};
use std::ffi::c_void;

/// A kernel argument (the exact C type of the kernel parameter).
#[derive(Clone, Copy)]
enum Arg {
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
}

/// A kernel's argument list, in parameter order.
#[derive(Clone, Default)]
pub(super) struct Args(Vec<Arg>);

impl Args {
    /// A pointer or 64-bit key (`unsigned long long`).
    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.push(Arg::U64(v));
        self
    }
    /// A size (`unsigned long long`).
    pub(super) fn n(self, v: usize) -> Self {
        self.u64(v as u64)
    }
    /// An `int`.
    pub(super) fn i32(mut self, v: i32) -> Self {
        self.0.push(Arg::I32(v));
        self
    }
    /// A flag (`int` 0 / 1).
    pub(super) fn flag(self, v: bool) -> Self {
        self.i32(i32::from(v))
    }
    /// A `float`.
    pub(super) fn f32(mut self, v: f32) -> Self {
        self.0.push(Arg::F32(v));
        self
    }
    /// A float of the accumulator type `acc`, rounded like `Accum::from_f64` on the CPU.
    pub(super) fn acc(mut self, acc: ElemType, v: f64) -> Self {
        self.0.push(if acc == ElemType::F64 {
            Arg::F64(v)
        } else {
            Arg::F32(v as f32)
        });
        self
    }
}

/// Launches `f` with [`BLOCK`] threads per block.
///
/// # Safety
/// The arguments must match the kernel's parameters, and every pointer among them must be valid
/// for the accesses the kernel makes, until the work on `stream` completes.
pub(super) unsafe fn launch(
    f: sys::CUfunction,
    grid: Grid,
    smem: u32,
    stream: sys::CUstream,
    args: Args,
) -> Result<()> {
    let mut vals = args.0;
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

/// Buffers and types of one call: `input` `(batch, in_cols)` of `in_type`, `out`
/// `(batch, out_cols)` of `acc`, for a projector from `in_dim` to `k`.
pub(super) struct Io {
    pub(super) input: u64,
    pub(super) in_type: ElemType,
    pub(super) out: u64,
    pub(super) acc: ElemType,
    pub(super) batch: usize,
    pub(super) in_dim: usize,
    pub(super) k: usize,
    /// Whether this is the adjoint (`input` is `(batch, k)`, `out` `(batch, in_dim)`).
    pub(super) adjoint: bool,
    pub(super) device: i32,
    pub(super) stream: sys::CUstream,
}

/// Rows `b0 .. b0 + nb` of one launch: the addresses of their first input and output rows.
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    pub(super) nb: usize,
    pub(super) input: u64,
    pub(super) out: u64,
}

impl Io {
    /// The projection `(batch, in_dim)` of `x_type` → `(batch, k)` of its accumulator type.
    pub(super) fn project(
        x: u64,
        x_type: ElemType,
        out: u64,
        batch: usize,
        dims: (usize, usize),
        cfg: Launch,
    ) -> Self {
        Self::new(x, x_type, out, x_type.accum(), batch, dims, false, cfg)
    }

    /// The adjoint `(batch, k)` → `(batch, in_dim)`, both of `y_type`.
    pub(super) fn adjoint(
        y: u64,
        y_type: ElemType,
        out: u64,
        batch: usize,
        dims: (usize, usize),
        cfg: Launch,
    ) -> Self {
        Self::new(y, y_type, out, y_type, batch, dims, true, cfg)
    }

    fn new(
        input: u64,
        in_type: ElemType,
        out: u64,
        acc: ElemType,
        batch: usize,
        (in_dim, k): (usize, usize),
        adjoint: bool,
        cfg: Launch,
    ) -> Self {
        Self {
            input,
            in_type,
            out,
            acc,
            batch,
            in_dim,
            k,
            adjoint,
            device: cfg.device,
            stream: cfg.stream as sys::CUstream,
        }
    }

    /// Kernel `{base}_{suffix of ty}` of `module` on this call's device.
    pub(super) fn kernel(
        &self,
        module: &ptx::Module,
        base: &str,
        ty: ElemType,
    ) -> Result<sys::CUfunction> {
        function(self.device, module, &format!("{base}_{}", ty.suffix()))
    }

    /// Widths of the input and output rows.
    fn cols(&self) -> (usize, usize) {
        if self.adjoint {
            (self.k, self.in_dim)
        } else {
            (self.in_dim, self.k)
        }
    }

    /// Bytes of the whole output.
    pub(super) fn out_bytes(&self) -> Result<usize> {
        self.batch
            .checked_mul(self.cols().1)
            .and_then(|n| n.checked_mul(self.acc.size()))
            .ok_or(Error::TooLarge { what: "out" })
    }

    /// The whole batch as one chunk.
    pub(super) fn all(&self) -> Chunk {
        Chunk {
            nb: self.batch,
            input: self.input,
            out: self.out,
        }
    }

    /// Runs `f` on consecutive chunks of at most `per` samples.
    pub(super) fn for_chunks(
        &self,
        per: usize,
        mut f: impl FnMut(Chunk) -> Result<()>,
    ) -> Result<()> {
        let (in_cols, out_cols) = self.cols();
        for (b0, nb) in plan::batch_chunks(self.batch, per) {
            f(Chunk {
                nb,
                input: self.input + plan::row_offset(b0, in_cols, self.in_type.size())?,
                out: self.out + plan::row_offset(b0, out_cols, self.acc.size())?,
            })?;
        }
        Ok(())
    }

    /// The arguments every kernel starts with: `(input, out, nb, in_dim, k)` of `chunk`, with
    /// `out` replaced by `part` when given (a split computation's partial sums).
    pub(super) fn args(&self, chunk: Chunk, part: Option<u64>) -> Args {
        Args::default()
            .u64(chunk.input)
            .u64(part.unwrap_or(chunk.out))
            .n(chunk.nb)
            .n(self.in_dim)
            .n(self.k)
    }
}

/// Runs a split computation: `main(part, direct)` writes partial results into `part`, and with
/// `scratch_bytes == 0` that is the output rows `out_rows` themselves (`direct`); otherwise `part`
/// is a stream-ordered scratch allocation that `fold(part)` reduces into the output rows, freed
/// after it in stream order (also when a launch failed).
///
/// # Safety
/// `out_rows` must be valid for what `main` writes when `direct`; the closures' launches must
/// only touch `part` and the output rows.
pub(super) unsafe fn split_reduce(
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

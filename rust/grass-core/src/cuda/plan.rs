//! Launch configurations and host-side index tables of the CUDA kernels: pure integer math,
//! unit-tested on the CPU (no GPU needed).
use crate::alloc;
use crate::cancel::Stop;
use crate::error::{invalid, Error, Result};

/// Threads per block of every kernel.
pub const BLOCK: u32 = 256;
/// Samples per thread in the SJLT/GraSS kernels (`GRASS_GROUP` in `kernels/common.cuh`).
pub const GROUP: usize = 8;
/// Samples per block in the dense kernels (`DENSE_GROUP` in `kernels/dense.cu`).
pub const DENSE_GROUP: usize = 32;
/// Inputs per shared-memory tile in the dense kernels (`DENSE_TILE` in `kernels/dense.cu`).
pub const DENSE_TILE: usize = 32;
/// Shared memory the atomic SJLT kernel may use for its accumulators (the default 48 KiB limit).
pub const SMEM_BUDGET: usize = 48 * 1024;
/// Largest `gridDim.y` / `gridDim.z`.
pub const MAX_GRID_YZ: usize = 65_535;
/// Largest `gridDim.x` used by grid-stride kernels (plenty to fill any GPU).
pub const MAX_GRID_X: usize = 1 << 20;
/// Blocks the atomic SJLT kernel aims for (enough to fill a large GPU several times).
pub const TARGET_BLOCKS: usize = 2048;
/// Inputs per chunk of the dense projection's split (the chunking depends only on sizes).
pub const DENSE_CHUNK: usize = 8192;
/// Most chunks of the dense projection's split.
pub const DENSE_MAX_SPLIT: usize = 64;
/// Largest scratch buffer of the dense projection's partial sums, in bytes.
pub const DENSE_SCRATCH: usize = 256 << 20;
/// Bit of a CSR entry that holds the sign (set = negative), as in `Sjlt::entry`.
pub const SIGN_BIT: u32 = 1 << 31;

/// A 3-D grid.
pub type Grid = (u32, u32, u32);

/// Splits `0..batch` into consecutive `(start, len)` chunks of at most `per` samples.
pub fn batch_chunks(batch: usize, per: usize) -> impl Iterator<Item = (usize, usize)> {
    let per = per.max(1);
    (0..batch.div_ceil(per)).map(move |i| (i * per, per.min(batch - i * per)))
}

/// Blocks of [`BLOCK`] threads for a grid-stride loop over `n` items (at least 1).
pub fn grid_1d(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID_X) as u32
}

/// Byte offset of row `row` of a row-major matrix with `cols` columns of `size`-byte elements.
///
/// # Errors
/// `TooLarge` when the offset overflows.
pub fn row_offset(row: usize, cols: usize, size: usize) -> Result<u64> {
    row.checked_mul(cols)
        .and_then(|n| n.checked_mul(size))
        .map(|b| b as u64)
        .ok_or(Error::TooLarge {
            what: "tensor byte offset",
        })
}

/// Launch plan of the atomic SJLT / GraSS projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicPlan {
    /// Samples per block (`gridDim.y` counts groups).
    pub group: usize,
    /// Whether the block accumulates in shared memory.
    pub use_smem: bool,
    /// Dynamic shared memory per block, in bytes.
    pub smem_bytes: u32,
    /// Columns per block (a multiple of [`BLOCK`]).
    pub cols_per_block: usize,
    /// Most samples per launch (`gridDim.y ≤ 65535`).
    pub batch_per_launch: usize,
    /// Grid of a launch with `batch_per_launch` (or fewer) samples.
    pub grid: Grid,
}

/// Plans the atomic projection of `batch` samples over `n_cols` columns into `k` buckets with
/// `acc_size`-byte accumulators.
pub fn atomic_plan(n_cols: usize, batch: usize, k: usize, acc_size: usize) -> AtomicPlan {
    let batch = batch.max(1);
    let per_sample = k * acc_size;
    let fit = SMEM_BUDGET / per_sample.max(1);
    let (group, use_smem) = if fit >= 1 {
        (fit.min(GROUP).min(batch), true)
    } else {
        (GROUP.min(batch), false)
    };
    let batch_per_launch = group * MAX_GRID_YZ;
    let groups = batch.min(batch_per_launch).div_ceil(group);
    let blocks_x = TARGET_BLOCKS
        .div_ceil(groups)
        .clamp(1, n_cols.div_ceil(BLOCK as usize).max(1));
    let mut cols_per_block = n_cols.div_ceil(blocks_x).next_multiple_of(BLOCK as usize);
    if use_smem {
        // Flushing costs one atomic per accumulator: give each block at least about k columns.
        cols_per_block = cols_per_block.max(k.min(n_cols).next_multiple_of(BLOCK as usize));
    }
    while n_cols.div_ceil(cols_per_block) > i32::MAX as usize {
        cols_per_block *= 2;
    }
    let grid_x = n_cols.div_ceil(cols_per_block).max(1) as u32;
    let smem_bytes = if use_smem {
        (group * per_sample) as u32
    } else {
        0
    };
    AtomicPlan {
        group,
        use_smem,
        smem_bytes,
        cols_per_block,
        batch_per_launch,
        grid: (grid_x, groups as u32, 1),
    }
}

/// Grid of the adjoint SJLT / GraSS kernel for a chunk of `batch` samples (≤ `GROUP · 65535`).
pub fn sjlt_transpose_grid(n_cols: usize, batch: usize) -> Grid {
    (
        grid_1d(n_cols),
        batch.div_ceil(GROUP).clamp(1, MAX_GRID_YZ) as u32,
        1,
    )
}

/// Grid of the deterministic CSR kernel: one warp per `(group of GROUP samples, chunk, bucket)`,
/// grid-stride.
pub fn csr_grid(batch: usize, k: usize, n_chunks: usize) -> Grid {
    let warps = batch
        .div_ceil(GROUP)
        .saturating_mul(k)
        .saturating_mul(n_chunks);
    let per_block = (BLOCK / 32) as usize;
    (warps.div_ceil(per_block).clamp(1, MAX_GRID_X) as u32, 1, 1)
}

/// Grid of the mask gather / scatter kernels (grid-stride in both dimensions).
pub fn mask_grid(m_dim: usize, batch: usize) -> Grid {
    (
        grid_1d(m_dim).min(1 << 16),
        batch.clamp(1, MAX_GRID_YZ) as u32,
        1,
    )
}

/// Plan of the dense projection: the input split and the batch chunking of its scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DensePlan {
    /// Inputs per chunk (a multiple of [`DENSE_TILE`]).
    pub chunk: usize,
    /// Number of chunks (`gridDim.z`); depends only on `in_dim`.
    pub n_split: usize,
    /// Most samples per launch.
    pub batch_per_launch: usize,
}

/// Plans the dense projection of `(batch, in_dim)` to `k` outputs of `acc_size` bytes.
pub fn dense_plan(in_dim: usize, k: usize, acc_size: usize) -> DensePlan {
    let n_split = in_dim.div_ceil(DENSE_CHUNK).clamp(1, DENSE_MAX_SPLIT);
    let chunk = in_dim.div_ceil(n_split).next_multiple_of(DENSE_TILE);
    let n_split = in_dim.div_ceil(chunk).max(1);
    let per_sample = n_split.saturating_mul(k).saturating_mul(acc_size).max(1);
    let fit = (DENSE_SCRATCH / per_sample / DENSE_GROUP * DENSE_GROUP).max(DENSE_GROUP);
    DensePlan {
        chunk,
        n_split,
        batch_per_launch: fit.min(DENSE_GROUP * MAX_GRID_YZ),
    }
}

impl DensePlan {
    /// Grid of the projection kernel for a chunk of `batch` samples.
    pub fn grid(&self, k: usize, batch: usize) -> Grid {
        (
            k.div_ceil(BLOCK as usize) as u32,
            batch.div_ceil(DENSE_GROUP).max(1) as u32,
            self.n_split as u32,
        )
    }
    /// Scratch bytes for a chunk of `batch` samples (0 when there is a single split).
    pub fn scratch_bytes(&self, k: usize, batch: usize, acc_size: usize) -> usize {
        if self.n_split == 1 {
            0
        } else {
            self.n_split * batch * k * acc_size
        }
    }
}

/// Grid of the dense adjoint for a chunk of `batch` samples (≤ `DENSE_GROUP · 65535`).
pub fn dense_transpose_grid(in_dim: usize, batch: usize) -> Grid {
    (
        in_dim.div_ceil(BLOCK as usize).max(1) as u32,
        batch.div_ceil(DENSE_GROUP).max(1) as u32,
        1,
    )
}

/// Input coordinates per chunk of the deterministic projection's CSR (`GRASS_CSR_CHUNK` in
/// `kernels/common.cuh`): one chunk of 8 samples stays in L2 while its gathers run.
pub const CSR_CHUNK: usize = 1 << 18;

/// The chunked CSR of `Pᵀ` for the deterministic SJLT / GraSS projection: the input coordinates
/// are cut into `n_chunks` chunks of [`CSR_CHUNK`]; row `(chunk, i)` lists `coordinate | sign bit`
/// of bucket `i`'s nonzeros in that chunk, in increasing column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// Number of coordinate chunks, `⌈in_dim / CSR_CHUNK⌉` (depends only on `in_dim`).
    pub n_chunks: usize,
    /// Row `(chunk, i)` is `entries[row_ptr[chunk·k + i] .. row_ptr[chunk·k + i + 1]]`.
    pub row_ptr: Vec<u64>,
    /// Packed `coordinate | sign bit`.
    pub entries: Vec<u32>,
}

/// Builds the chunked CSR of `Pᵀ` from the packed entries `entry(m, r)` (`bucket | sign bit`, the
/// same as `Sjlt::entry`) of `n_cols` columns with `c` nonzeros each; column `m` reads input
/// coordinate `coord(m) < in_dim`, increasing in `m`; `in_dim ≤ 2³¹`.
///
/// # Errors
/// `InvalidArgument` when `in_dim > 2³¹`; `TooLarge` on overflow.
pub fn build_csr(
    in_dim: usize,
    k: usize,
    n_cols: usize,
    c: usize,
    entry: impl Fn(usize, usize) -> u32 + Sync,
    coord: impl Fn(usize) -> usize,
) -> Result<Csr> {
    let nnz = n_cols
        .checked_mul(c)
        .ok_or(Error::TooLarge { what: "in_dim * c" })?;
    if in_dim > SIGN_BIT as usize {
        return Err(invalid(
            "in_dim",
            "deterministic CUDA mode needs in_dim ≤ 2^31; use the atomic mode (deterministic=False)",
        ));
    }
    let n_chunks = in_dim.div_ceil(CSR_CHUNK).max(1);
    let rows = n_chunks
        .checked_mul(k)
        .ok_or(Error::TooLarge { what: "CSR rows" })?;
    // The entries (the hashing) in parallel, then a sequential stable counting sort by row.
    let mut packed = alloc::vec_of(nnz, 0u32, "CSR entries")?;
    let per = 4096 * c;
    let stop = Stop::current();
    crate::parallel::try_chunks_mut(&mut packed, per, |ci, chunk| {
        stop.check()?;
        for (t, e) in chunk.iter_mut().enumerate() {
            let n = ci * per + t;
            *e = entry(n / c, n % c);
        }
        Ok(())
    })?;
    let row_of = |t: usize, e: u32| coord(t / c) / CSR_CHUNK * k + (e & !SIGN_BIT) as usize;
    let mut counts = alloc::vec_of(rows + 1, 0u64, "CSR row pointers")?;
    for (t, &e) in packed.iter().enumerate() {
        counts[row_of(t, e) + 1] += 1;
    }
    for i in 0..rows {
        counts[i + 1] += counts[i];
    }
    let mut row_ptr = alloc::with_capacity(rows + 1, "CSR row pointers")?;
    row_ptr.extend_from_slice(&counts);
    let mut next = counts;
    let mut entries = alloc::vec_of(nnz, 0u32, "CSR entries")?;
    for (t, &e) in packed.iter().enumerate() {
        let slot = &mut next[row_of(t, e)];
        entries[*slot as usize] = coord(t / c) as u32 | (e & SIGN_BIT);
        *slot += 1;
    }
    Ok(Csr {
        n_chunks,
        row_ptr,
        entries,
    })
}

/// Plan of the deterministic projection: its grid and its batch chunking (the chunk partial sums
/// `n_chunks · batch · k` accumulators are kept under [`DENSE_SCRATCH`] bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrPlan {
    /// Most samples per launch (a multiple of [`GROUP`]).
    pub batch_per_launch: usize,
}

/// Plans the deterministic projection for `n_chunks` chunks, `k` buckets, `acc_size`-byte sums.
pub fn csr_plan(n_chunks: usize, k: usize, acc_size: usize) -> CsrPlan {
    let per_sample = n_chunks.saturating_mul(k).saturating_mul(acc_size).max(1);
    let fit = if n_chunks == 1 {
        usize::MAX
    } else {
        DENSE_SCRATCH / per_sample
    };
    CsrPlan {
        batch_per_launch: (fit / GROUP * GROUP).max(GROUP),
    }
}

impl CsrPlan {
    /// Scratch bytes for a launch of `batch` samples (0 with a single chunk: sums go to `out`).
    pub fn scratch_bytes(n_chunks: usize, k: usize, batch: usize, acc_size: usize) -> usize {
        if n_chunks == 1 {
            0
        } else {
            n_chunks * batch * k * acc_size
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grass, Projection, Sjlt};

    #[test]
    fn chunks_cover_the_batch() {
        let v: Vec<_> = batch_chunks(10, 4).collect();
        assert_eq!(v, vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(batch_chunks(0, 4).count(), 0);
        let big = batch_chunks(GROUP * MAX_GRID_YZ * 2 + 3, GROUP * MAX_GRID_YZ);
        assert_eq!(
            big.map(|(_, n)| n).sum::<usize>(),
            GROUP * MAX_GRID_YZ * 2 + 3
        );
    }

    #[test]
    fn offsets_are_64_bit() {
        // batch 2 × (2³⁰ + 7) bfloat16: the second row starts past 2³¹ bytes.
        let p = (1usize << 30) + 7;
        assert_eq!(row_offset(1, p, 2).unwrap(), 2 * p as u64);
        assert!(row_offset(1, p, 2).unwrap() > u64::from(u32::MAX) / 2);
        assert!(row_offset(usize::MAX, 2, 1).is_err());
    }

    #[test]
    fn atomic_plan_fits_limits() {
        for &(n, b, k, a) in &[
            (1usize << 20, 64usize, 4096usize, 4usize),
            (1 << 24, 64, 8192, 4),
            (1 << 24, 64, 32768, 4),
            (1000, 3, 16, 8),
            (1, 1, 1, 4),
            ((1 << 30) + 7, 2, 4096, 4),
            (1 << 20, 1_000_000, 512, 4),
        ] {
            let plan = atomic_plan(n, b, k, a);
            assert!(plan.group >= 1 && plan.group <= GROUP);
            assert!(plan.smem_bytes as usize <= SMEM_BUDGET);
            assert_eq!(plan.cols_per_block % BLOCK as usize, 0);
            assert!(
                (plan.grid.0 as usize) * plan.cols_per_block >= n,
                "{n} {plan:?}"
            );
            assert!((plan.grid.1 as usize) <= MAX_GRID_YZ);
            assert!((plan.grid.1 as usize) * plan.group >= b.min(plan.batch_per_launch));
            if plan.use_smem {
                assert_eq!(plan.smem_bytes as usize, plan.group * k * a);
            }
        }
        // k too large for shared memory: global atomics.
        assert!(!atomic_plan(1 << 20, 8, 1 << 14, 4).use_smem);
    }

    #[test]
    fn grids_are_in_range() {
        assert_eq!(grid_1d(0), 1);
        assert_eq!(grid_1d(257), 2);
        assert_eq!(grid_1d(usize::MAX), MAX_GRID_X as u32);
        let (x, y, _) = sjlt_transpose_grid(1 << 24, 64);
        assert_eq!((x, y), ((1 << 16), 8));
        assert_eq!(csr_grid(64, 4096, 1).0 as usize, 8 * 4096 / 8);
        assert_eq!(csr_grid(64, 4096, 64).0 as usize, 64 * 4096);
        assert_eq!(csr_grid(usize::MAX, 1 << 20, 1).0 as usize, MAX_GRID_X);
        assert_eq!(mask_grid(10, 1_000_000).1 as usize, MAX_GRID_YZ);
    }

    #[test]
    fn dense_plan_is_size_only() {
        let a = dense_plan(1 << 20, 4096, 4);
        assert_eq!(a.n_split, DENSE_MAX_SPLIT);
        assert!(a.chunk * a.n_split >= 1 << 20 && a.chunk.is_multiple_of(DENSE_TILE));
        assert!(a.scratch_bytes(4096, a.batch_per_launch, 4) <= DENSE_SCRATCH);
        assert_eq!(a.grid(4096, 64), (16, 2, DENSE_MAX_SPLIT as u32));
        let small = dense_plan(100, 7, 8);
        assert_eq!((small.n_split, small.chunk), (1, 128));
        assert_eq!(small.scratch_bytes(7, 5, 8), 0);
        assert_eq!(dense_transpose_grid(1000, 33), (4, 2, 1));
    }

    /// Checks every row of `csr` against the SJLT entries (`coord` maps columns to coordinates).
    fn check_csr(csr: &Csr, s: &Sjlt, in_dim: usize, coord: &dyn Fn(usize) -> usize) {
        let (k, c, n_cols) = (s.out_dim(), s.c(), s.in_dim());
        assert_eq!(csr.n_chunks, in_dim.div_ceil(CSR_CHUNK));
        assert_eq!(csr.row_ptr.len(), csr.n_chunks * k + 1);
        assert_eq!(*csr.row_ptr.last().unwrap() as usize, n_cols * c);
        let col_of: std::collections::HashMap<usize, usize> =
            (0..n_cols).map(|m| (coord(m), m)).collect();
        let mut seen = 0;
        for row in 0..csr.n_chunks * k {
            let (chunk, i) = (row / k, row % k);
            let mut prev = None;
            for &e in &csr.entries[csr.row_ptr[row] as usize..csr.row_ptr[row + 1] as usize] {
                let j = (e & !SIGN_BIT) as usize;
                assert_eq!(j / CSR_CHUNK, chunk, "coordinate in the wrong chunk");
                assert!(prev.is_none_or(|p| p < j), "row {row} not increasing");
                prev = Some(j);
                let m = col_of[&j];
                let r = (0..c)
                    .find(|&r| (s.entry(m, r) & !SIGN_BIT) as usize == i)
                    .unwrap();
                assert_eq!(s.entry(m, r) & SIGN_BIT, e & SIGN_BIT);
                seen += 1;
            }
        }
        assert_eq!(seen, n_cols * c);
    }

    #[test]
    fn csr_matches_sjlt_entries() {
        let s = Sjlt::new(1000, 37, 3, 5).unwrap();
        let csr = build_csr(1000, 37, 1000, 3, |m, r| s.entry(m, r), |m| m).unwrap();
        assert_eq!(csr.n_chunks, 1);
        check_csr(&csr, &s, 1000, &|m| m);
        // Several chunks.
        let p = 2 * CSR_CHUNK + 100;
        let s = Sjlt::new(p, 16, 2, 9).unwrap();
        let csr = build_csr(p, 16, p, 2, |m, r| s.entry(m, r), |m| m).unwrap();
        assert_eq!(csr.n_chunks, 3);
        check_csr(&csr, &s, p, &|m| m);
    }

    #[test]
    fn csr_of_grass_uses_mask_coordinates() {
        let p = 3 * CSR_CHUNK;
        let g = Grass::new(p, 8, 400, 2, 11).unwrap();
        let idx = g.mask().indices();
        let csr = build_csr(p, 8, 400, 2, |m, r| g.sjlt().entry(m, r), |m| idx[m]).unwrap();
        check_csr(&csr, g.sjlt(), p, &|m| idx[m]);
        assert!(build_csr((1 << 31) + 1, 1, 1, 1, |_, _| 0, |_| 0).is_err());
    }

    #[test]
    fn csr_plan_bounds_scratch() {
        assert_eq!(csr_plan(1, 4096, 4).batch_per_launch % GROUP, 0);
        assert!(csr_plan(1, 4096, 4).batch_per_launch >= 1 << 20);
        let plan = csr_plan(64, 4096, 4);
        assert_eq!(plan.batch_per_launch % GROUP, 0);
        assert!(CsrPlan::scratch_bytes(64, 4096, plan.batch_per_launch, 4) <= DENSE_SCRATCH);
        assert_eq!(CsrPlan::scratch_bytes(1, 4096, 64, 4), 0);
        assert_eq!(csr_plan(4096, 1 << 20, 8).batch_per_launch, GROUP);
    }
}

//! The masked block of factorized per-sample gradients (FactGraSS's inner step), fused:
//!
//! `Z[b] = Σ_t δ[b, t, rows] ⊗ x̃[b, t, cols]`, `(s_out, s_in [+1])` per sample, where `x̃` is the
//! layer input with a constant-one bias column appended. This is `G[rows][:, cols]` of each
//! sample's gradient `G = Σ_t δ_t x̃_tᵀ` without forming `G` (`d_out · d_in` values), and without
//! materializing the gathered factors either: each worker gathers a token chunk of its sample
//! into two small row-major panels (L2-resident, strides padded by a cache line) and runs a
//! register-blocked outer-product kernel on them (`MR × NR` accumulators, `MR` rows of `δ`
//! broadcast against `NR` columns of `x̃`), so the gathered values are read from L1/L2 while the
//! accumulators stay in registers.
//!
//! Every element of `Z` is summed over `t = 0, 1, …, T−1` in that order by exactly one kernel
//! (chunks reload the partial sums into the accumulators), so the result does not depend on the
//! number of threads, the chunk size or the work split.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{check_len, invalid, Error, Result};
use crate::lanes::project_one;
use crate::mask::{gather_rows, group, Lines, GATHER_ROWS};
use crate::micro::Kernel;
use crate::parallel;
use crate::projection::Projection;
use crate::sjlt::Sjlt;

/// Tokens gathered per chunk (the two panels of a 128 + 128-column block are ~150 KiB in `f32`,
/// L2-resident).
const CHUNK: usize = 128;

/// Below this many gathered plus written elements a call runs on the calling thread.
const SMALL_WORK: usize = 1 << 16;

/// The shape of a [`masked_outer`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterShape {
    /// Samples.
    pub batch: usize,
    /// Tokens per sample (`1` for 2-D layer inputs).
    pub tokens: usize,
    /// Width of `δ` (the layer's output dimension).
    pub d_out: usize,
    /// Width of `x` (the layer's input dimension, without the bias column).
    pub d_in: usize,
}

/// `out[b] = Σ_t δ[b, t, rows] ⊗ [x[b, t, cols], 1 if bias]`, row-major `(len(rows), len(cols) + bias)`.
///
/// `go` is row-major `(batch, tokens, d_out)`, `x` `(batch, tokens, d_in)`; `rows` / `cols` are
/// indices into `d_out` / `d_in` (any order, repeats allowed); `bias` appends the column of the
/// constant-one input (the bias gradient `Σ_t δ[b, t, rows]`) last.
///
/// # Errors
/// `Shape` when a buffer's length does not match; `InvalidArgument` when an index is out of range.
pub fn masked_outer<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: OuterShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    out: &mut [A],
) -> Result<()> {
    masked_outer_into(go, x, shape, rows, cols, bias, Sink::Blocks(out))
}

/// [`masked_outer`] into any [`Sink`]: with [`Sink::Projected`], FactGraSS from the factors in one
/// pass.
///
/// # Errors
/// As [`masked_outer`], and as [`Sink::check`].
pub fn masked_outer_into<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: OuterShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    sink: Sink<'_, A>,
) -> Result<()> {
    let threads = parallel::get_num_threads();
    masked_outer_split(go, x, shape, rows, cols, bias, sink, threads)
}

/// Where the blocks of a masked outer product go.
pub enum Sink<'a, A> {
    /// The blocks themselves: `(batch, m · n)` row-major.
    Blocks(&'a mut [A]),
    /// Each sample's block projected by `sjlt` (`in_dim = m · n`) into `out`, `(batch, k)`.
    ///
    /// Bit-identical to the blocks followed by `sjlt.project_batch`, but the blocks are never
    /// stored: each sample's block is projected by the worker that summed it, while it is in
    /// that core's cache (with fewer samples than twice the thread count the rows of a block
    /// are split between workers, and the blocks are stored and projected after).
    Projected {
        /// The projection of each block.
        sjlt: &'a Sjlt,
        /// `(batch, k)` row-major.
        out: &'a mut [A],
    },
}

impl<A> Sink<'_, A> {
    /// Checks the sink's buffer (and projection) against `batch` blocks of `m · n` values: the
    /// callers do before any work.
    ///
    /// # Errors
    /// `Shape` naming `out` (the blocks, or the projections); `InvalidArgument` naming `sjlt`.
    pub fn check(&self, batch: usize, m: usize, n: usize) -> Result<()> {
        let size = m.saturating_mul(n);
        match self {
            Sink::Blocks(out) => check_len("out", out.len(), batch, size),
            Sink::Projected { sjlt, out } => {
                if sjlt.in_dim() != size {
                    return Err(invalid(
                        "sjlt",
                        format!(
                            "in_dim must be the block size {m} · {n} = {size}, got {}",
                            sjlt.in_dim()
                        ),
                    ));
                }
                check_len("out", out.len(), batch, sjlt.out_dim())
            }
        }
    }
}

/// [`masked_outer`] with the work split for `threads` workers (the result does not depend on it).
#[allow(clippy::too_many_arguments)]
fn masked_outer_split<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: OuterShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    sink: Sink<'_, A>,
    threads: usize,
) -> Result<()> {
    let OuterShape {
        batch,
        tokens,
        d_out,
        d_in,
    } = shape;
    let bt = batch
        .checked_mul(tokens)
        .ok_or(Error::TooLarge { what: "go" })?;
    check_len("go", go.len(), bt, d_out)?;
    check_len("x", x.len(), bt, d_in)?;
    let n = cols.len() + usize::from(bias);
    sink.check(batch, rows.len(), n)?;
    if let Some(&bad) = rows.iter().find(|&&i| i >= d_out) {
        return Err(invalid(
            "rows",
            format!("index {bad} is out of range for d_out = {d_out}"),
        ));
    }
    if let Some(&bad) = cols.iter().find(|&&i| i >= d_in) {
        return Err(invalid(
            "cols",
            format!("index {bad} is out of range for d_in = {d_in}"),
        ));
    }
    let job = Job {
        go,
        x,
        shape,
        rows,
        cols,
        bias,
    };
    let work = bt
        .saturating_mul(rows.len() + cols.len())
        .saturating_add(batch.saturating_mul(rows.len()).saturating_mul(n));
    for_each_block(
        sink,
        batch,
        rows.len(),
        n,
        work,
        threads,
        |b, r0, z, scratch| job.run(b, r0, z, scratch),
    )
}

/// Runs `f(b, r0, z, scratch)` on every block of `batch` samples of `(m, n)` row-major (checked
/// by [`Sink::check`]): `z` is sample `b`'s rows `r0 .. r0 + z.len() / n`, `scratch` the
/// worker's own buffer. Blocks run in parallel unless the call is small (`work` gathered plus
/// written elements) or `threads == 1`; the cancellation flag is polled before each block.
/// With [`Sink::Projected`] and whole samples per item, `z` is a worker's scratch block that is
/// projected into `y[b]` right after `f`.
pub(crate) fn for_each_block<A: Accum + Load<A>>(
    sink: Sink<'_, A>,
    batch: usize,
    m: usize,
    n: usize,
    work: usize,
    threads: usize,
    f: impl Fn(usize, usize, &mut [A], &mut Vec<A>) -> Result<()> + Sync,
) -> Result<()> {
    if batch == 0 {
        return Ok(());
    }
    let groups = row_groups(batch, m, threads);
    let (sjlt, y) = match sink {
        Sink::Blocks(out) => return blocks(out, batch, m, n, &groups, work, threads, f),
        Sink::Projected { sjlt, out } => (sjlt, out),
    };
    if groups.len() > 1 {
        // Rows split between workers (few samples): store the blocks, then project them.
        let len = batch.checked_mul(m * n).ok_or(Error::TooLarge {
            what: "masked outer-product blocks",
        })?;
        let mut out = alloc::vec_of(len, A::ZERO, "masked outer-product blocks")?;
        blocks(&mut out, batch, m, n, &groups, work, threads, f)?;
        return sjlt.project_batch(&out, batch, y);
    }
    let buckets = sjlt.buckets();
    buckets.prepare()?;
    let size = m * n;
    let stop = Stop::current();
    let run = |b: usize, yb: &mut [A]| {
        stop.check()?;
        A::with_scratch(|scratch, z| {
            if z.len() < size {
                alloc::resize(z, size, A::ZERO, "masked outer-product block")?;
            }
            let z = &mut z[..size];
            f(b, 0, z, scratch)?;
            let z = &*z;
            // `project_one` sums each sample's columns in order, as `project_batch` does.
            project_one(
                buckets,
                size,
                |j0, v| v.copy_from_slice(&z[j0..][..v.len()]),
                yb,
                &stop,
            )
        })
    };
    let k = sjlt.out_dim();
    if work < SMALL_WORK || threads == 1 {
        y.chunks_mut(k)
            .enumerate()
            .try_for_each(|(b, yb)| run(b, yb))
    } else {
        parallel::try_chunks_mut(y, k, run)
    }
}

/// [`for_each_block`] into stored blocks, `out` `(batch, m · n)`, rows split by `groups`.
#[allow(clippy::too_many_arguments)]
fn blocks<A: Accum>(
    out: &mut [A],
    batch: usize,
    m: usize,
    n: usize,
    groups: &[(usize, usize)],
    work: usize,
    threads: usize,
    f: impl Fn(usize, usize, &mut [A], &mut Vec<A>) -> Result<()> + Sync,
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    // Item `i` is sample `i / groups.len()`'s row group `i % groups.len()`: consecutive parts
    // of `out`, in order.
    let mut ends: Vec<usize> = alloc::with_capacity(batch * groups.len(), "work items")?;
    for b in 0..batch {
        ends.extend(groups.iter().map(|&(_, r1)| (b * m + r1) * n));
    }
    let stop = Stop::current();
    let run = |i: usize, z: &mut [A]| {
        stop.check()?;
        let (b, (r0, _)) = (i / groups.len(), groups[i % groups.len()]);
        A::with_scratch(|scratch, _| f(b, r0, z, scratch))
    };
    // Small calls run on the calling thread: waking the pool costs tens of microseconds here.
    if work < SMALL_WORK || threads == 1 {
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            run(i, &mut out[start..end])?;
            start = end;
        }
        Ok(())
    } else {
        parallel::try_parts_mut(out, &ends, run)
    }
}

/// The two gather panels of one block and its accumulator tile, carved out of a worker's scratch.
pub(crate) struct Panels<'s, A> {
    /// `(chunk, m_pad)` row-major: the chunk's `m` gathered rows of `δ` per token.
    pub(crate) ap: &'s mut [A],
    /// Row stride of `ap`.
    pub(crate) m_pad: usize,
    /// `(chunk, n_pad)` row-major: the chunk's `n` gathered input columns per token.
    pub(crate) bp: &'s mut [A],
    /// Row stride of `bp`.
    pub(crate) n_pad: usize,
    acc: &'s mut [A],
    kernel: Kernel<A>,
    m: usize,
    n: usize,
    /// Whether column `n − 1` is the constant-one input's (summed apart, not by the kernels).
    bias: bool,
}

impl<'s, A: Accum> Panels<'s, A> {
    /// Panels for `chunk` tokens of an `(m, n)` block. The callers write the first `m` (`ap`) and
    /// `n − bias` (`bp`) values of each token's row. The rest keeps whatever earlier calls left
    /// in the scratch buffer: the kernels read the padding up to whole tiles, but accumulator
    /// `(r, c)` sums only `ap[·][r] · bp[·][c]`, and the lanes of padding rows and columns are
    /// never stored.
    /// When `bias`, column `n − 1` of the block is the constant-one input's: [`Panels::accumulate`]
    /// sums `ap` into it, and `bp` holds only the other `n − 1` columns.
    pub(crate) fn new(
        scratch: &'s mut Vec<A>,
        chunk: usize,
        m: usize,
        n: usize,
        bias: bool,
    ) -> Result<Self> {
        let kernel = A::kernel();
        let (mr, nr) = (kernel.mr, kernel.nr);
        // Row strides: whole tiles plus one 64-byte line, so that a tile's column strip (one
        // short run per token) spreads over all L1 sets instead of a few power-of-two ones.
        let line = (64 / std::mem::size_of::<A>()).max(1);
        let nk = n - usize::from(bias);
        let (m_tiles, n_tiles) = (m.div_ceil(mr) * mr, nk.div_ceil(nr) * nr);
        let (m_pad, n_pad) = (m_tiles + line, n_tiles + line);
        // `scratch` is the worker's own buffer, kept across items and calls (no page faults),
        // and not cleared (zeroing it rewrote ~164 KiB per work item in FactGraSS's GPT-2 layer;
        // without that and with `bp` one tile narrower, `floor --outer` 1.79 → 1.75 ms).
        let (a_len, b_len) = (chunk * m_pad, chunk * n_pad);
        // One line more, so that the panels can start on a cache line: the kernels' 64-byte
        // loads of whole tiles then never straddle two lines (row strides are whole lines).
        let len = a_len + b_len + mr * nr + line;
        if scratch.len() < len {
            alloc::resize(scratch, len, A::ZERO, "outer-product panel values")?;
        }
        let off = scratch.as_ptr().align_offset(64).min(line);
        let (ap, rest) = scratch[off..].split_at_mut(a_len);
        let (bp, rest) = rest.split_at_mut(b_len);
        let acc = &mut rest[..mr * nr];
        Ok(Self {
            ap,
            m_pad,
            bp,
            n_pad,
            acc,
            kernel,
            m,
            n,
            bias,
        })
    }

    /// `z += Σ_{t < tc} ap_t ⊗ bp_t` over the `(m, n)` block `z` (row-major), in token order;
    /// `first` starts from zero instead of reloading `z` (the first chunk).
    pub(crate) fn accumulate(&mut self, tc: usize, first: bool, z: &mut [A]) {
        let (mr, nr, m, n) = (self.kernel.mr, self.kernel.nr, self.m, self.n);
        let (m_pad, n_pad) = (self.m_pad, self.n_pad);
        let acc = &mut *self.acc;
        // The bias column is the plain sum of `ap` over tokens (`a · 1 + s` rounds as `a + s`,
        // so these are the kernels' bits), one pass instead of a column tile of its own that
        // the kernels would fill with `nr − 1` columns of padding.
        let nk = n - usize::from(self.bias);
        if self.bias {
            for i in (0..m).step_by(acc.len()) {
                let w = acc.len().min(m - i);
                let s = &mut acc[..w];
                if first {
                    s.fill(A::ZERO);
                } else {
                    for (r, v) in s.iter_mut().enumerate() {
                        *v = z[(i + r) * n + nk];
                    }
                }
                for row in self.ap.chunks_exact(m_pad).take(tc) {
                    for (v, &a) in s.iter_mut().zip(&row[i..i + w]) {
                        *v += a;
                    }
                }
                for (r, &v) in s.iter().enumerate() {
                    z[(i + r) * n + nk] = v;
                }
            }
        }
        // Column tiles outer: one column strip of `bp` stays in L1 while the row strips stream.
        for j in (0..nk).step_by(nr) {
            let nw = nr.min(nk - j);
            let bs = &self.bp[j..(tc - 1) * n_pad + j + nr];
            for i in (0..m).step_by(mr) {
                let mh = mr.min(m - i);
                let a_s = &self.ap[i..(tc - 1) * m_pad + i + mr];
                if mh == mr && nw == nr {
                    // A whole tile: the kernel reads and writes its rows of `z` in place.
                    // SAFETY: `A::kernel()` only returns kernels whose target features this
                    // CPU has; `a_s` / `bs` hold `tc` rows of strides `m_pad` / `n_pad` (the
                    // last one `mr` / `nr` wide) and `z` holds rows `i .. i + mr` of stride
                    // `n ≥ nr` from column `j`, `nr` wide (the kernel checks all three).
                    unsafe {
                        (self.kernel.tile)(
                            a_s,
                            m_pad,
                            bs,
                            n_pad,
                            tc,
                            &mut z[i * n + j..],
                            n,
                            first,
                        );
                    };
                    continue;
                }
                // A partial tile goes through `acc` (the kernels write whole tiles).
                acc.fill(A::ZERO);
                if !first {
                    for r in 0..mh {
                        acc[r * nr..][..nw].copy_from_slice(&z[(i + r) * n + j..][..nw]);
                    }
                }
                // SAFETY: as above, with `acc` `mr` rows of `nr`.
                unsafe { (self.kernel.tile)(a_s, m_pad, bs, n_pad, tc, acc, nr, false) };
                for r in 0..mh {
                    z[(i + r) * n + j..][..nw].copy_from_slice(&acc[r * nr..][..nw]);
                }
            }
        }
    }
}

/// Splits `0..m` rows into contiguous groups so that `batch × groups` work items keep every
/// thread busy (one group per sample when the batch alone suffices).
pub(crate) fn row_groups(batch: usize, m: usize, threads: usize) -> Vec<(usize, usize)> {
    const ALIGN: usize = 8;
    let want = (2 * threads).div_ceil(batch.max(1)).max(1);
    let per = m.div_ceil(want).div_ceil(ALIGN) * ALIGN;
    let per = per.max(ALIGN);
    (0..m)
        .step_by(per)
        .map(|r0| (r0, (r0 + per).min(m)))
        .collect()
}

/// One call's inputs, shared by all work items.
struct Job<'a, T> {
    go: &'a [T],
    x: &'a [T],
    shape: OuterShape,
    rows: &'a [usize],
    cols: &'a [usize],
    bias: bool,
}

impl<T> Job<'_, T> {
    /// Rows `r0 .. r0 + z.len() / n` of sample `b`'s block: gathers each token chunk into the two
    /// [`Panels`], then accumulates every tile of `z` over the chunk ([`Panels::accumulate`]).
    fn run<A: Accum>(&self, b: usize, r0: usize, z: &mut [A], scratch: &mut Vec<A>) -> Result<()>
    where
        T: Load<A>,
    {
        let OuterShape {
            tokens,
            d_out,
            d_in,
            ..
        } = self.shape;
        let n = self.cols.len() + usize::from(self.bias);
        let rows = &self.rows[r0..r0 + z.len() / n];
        let m = rows.len();
        let chunk = CHUNK.min(tokens);
        let mut p = Panels::new(scratch, chunk, m, n, self.bias)?;
        let (m_pad, n_pad) = (p.m_pad, p.n_pad);
        let go = &self.go[b * tokens * d_out..(b + 1) * tokens * d_out];
        let x = &self.x[b * tokens * d_in..(b + 1) * tokens * d_in];
        let size = std::mem::size_of::<T>();
        let (lines_go, lines_x) = (
            Lines::for_mask(rows, d_out, size),
            Lines::for_mask(self.cols, d_in, size),
        );
        for t0 in (0..tokens).step_by(chunk) {
            let tc = chunk.min(tokens - t0);
            // Four tokens at a time: four independent streams of (mostly cache-missing) loads.
            for i in 0..tc.div_ceil(GATHER_ROWS) {
                let t = i * GATHER_ROWS;
                // The rows of this group, and the ones after it (into the next chunk).
                let (g, g_after) = group(&go[t0 * d_out..], d_out, i);
                let (xr, x_after) = group(&x[t0 * d_in..], d_in, i);
                let (g, xr) = (
                    &g[..g.len().min((tc - t) * d_out)],
                    &xr[..xr.len().min((tc - t) * d_in)],
                );
                // SAFETY: `masked_outer` checked every row index `< d_out` and every column
                // index `< d_in` before any work.
                unsafe {
                    gather_rows(
                        g,
                        d_out,
                        rows,
                        &mut p.ap[t * m_pad..],
                        m_pad,
                        lines_go,
                        g_after,
                    );
                    gather_rows(
                        xr,
                        d_in,
                        self.cols,
                        &mut p.bp[t * n_pad..],
                        n_pad,
                        lines_x,
                        x_after,
                    );
                }
            }
            p.accumulate(tc, t0 == 0, z);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::micro::lcg;

    /// The stored blocks of a `threads`-way split (from a NaN-filled buffer).
    fn split_blocks<A: Accum + Load<A>>(
        (go, x, s): (&[A], &[A], OuterShape),
        rows: &[usize],
        cols: &[usize],
        bias: bool,
        threads: usize,
    ) -> Vec<A> {
        let n = cols.len() + usize::from(bias);
        let mut z = vec![A::from_f64(f64::NAN); s.batch * rows.len() * n];
        masked_outer_split(go, x, s, rows, cols, bias, Sink::Blocks(&mut z), threads).unwrap();
        z
    }

    /// The definition, in float64 with plain loops.
    fn reference(
        go: &[f64],
        x: &[f64],
        s: OuterShape,
        rows: &[usize],
        cols: &[usize],
        bias: bool,
    ) -> Vec<f64> {
        let n = cols.len() + usize::from(bias);
        let mut z = vec![0.0; s.batch * rows.len() * n];
        for b in 0..s.batch {
            for t in 0..s.tokens {
                let g = &go[(b * s.tokens + t) * s.d_out..];
                let xr = &x[(b * s.tokens + t) * s.d_in..];
                for (m, &r) in rows.iter().enumerate() {
                    for j in 0..n {
                        let xv = if j < cols.len() { xr[cols[j]] } else { 1.0 };
                        z[(b * rows.len() + m) * n + j] += g[r] * xv;
                    }
                }
            }
        }
        z
    }

    fn case(s: OuterShape, rows: &[usize], cols: &[usize], bias: bool, threads: usize) {
        let mut st = 7u64;
        let go: Vec<f64> = (0..s.batch * s.tokens * s.d_out)
            .map(|_| lcg(&mut st))
            .collect();
        let x: Vec<f64> = (0..s.batch * s.tokens * s.d_in)
            .map(|_| lcg(&mut st))
            .collect();
        let want = reference(&go, &x, s, rows, cols, bias);
        let z64 = split_blocks((&go, &x, s), rows, cols, bias, threads);
        for (g, w) in z64.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{g} vs {w}");
        }
        let go32: Vec<f32> = go.iter().map(|&v| v as f32).collect();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut z32 = vec![f32::NAN; z64.len()];
        masked_outer(&go32, &x32, s, rows, cols, bias, &mut z32).unwrap();
        let tol = 1e-5 * (s.tokens as f64).sqrt();
        for (g, w) in z32.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= tol, "{g} vs {w}");
        }
    }

    #[test]
    fn matches_the_definition() {
        let s = OuterShape {
            batch: 3,
            tokens: 300, // two chunks, the second partial
            d_out: 50,
            d_in: 40,
        };
        let rows: Vec<usize> = (0..50).step_by(3).collect(); // 17: a partial row tile
        let cols = [
            39, 0, 5, 5, 17, 22, 31, 2, 8, 9, 10, 11, 12, 13, 14, 15, 16, 33, 34,
        ];
        for bias in [false, true] {
            for threads in [1, 2, 5] {
                case(s, &rows, &cols, bias, threads);
            }
        }
        let one = OuterShape {
            batch: 1,
            tokens: 1,
            d_out: 3,
            d_in: 2,
        };
        case(one, &[2], &[1], true, 3);
        case(one, &[0, 1, 2], &[], true, 1);
    }

    /// The shape `(batch, tokens, d_out, d_in)` and seeded `f32` factors `go`, `x` of it.
    fn factors(
        [batch, tokens, d_out, d_in]: [usize; 4],
        seed: u64,
    ) -> (OuterShape, Vec<f32>, Vec<f32>) {
        let s = OuterShape {
            batch,
            tokens,
            d_out,
            d_in,
        };
        let mut st = seed;
        let bt = s.batch * s.tokens;
        let go = (0..bt * s.d_out).map(|_| lcg(&mut st) as f32).collect();
        let x = (0..bt * s.d_in).map(|_| lcg(&mut st) as f32).collect();
        (s, go, x)
    }

    #[test]
    fn thread_count_and_chunking_do_not_change_bits() {
        let (s, go, x) = factors([2, 700, 64, 48], 3);
        let rows: Vec<usize> = (0..64).collect();
        let cols: Vec<usize> = (0..48).rev().collect();
        let run = |threads: usize| split_blocks((&go, &x, s), &rows, &cols, true, threads);
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(7));
    }

    /// The bias column is `Σ_t δ[b, t, r]` summed in token order, bit for bit (it is summed apart
    /// from the kernels' tiles), for blocks whose other columns fill no, part of or whole tiles,
    /// and for more rows than one pass of the sum holds (the accumulator tile, 256 with AVX-512).
    #[test]
    fn the_bias_column_is_the_token_order_sum() {
        let (s, go, x) = factors([2, 300, 600, 70], 11);
        for (k, rows) in [
            (0, (0..600).rev().step_by(3).collect::<Vec<usize>>()),
            (5, (0..600).rev().step_by(43).collect()),
            (32, (0..600).rev().collect()),
            (64, (0..600).step_by(2).collect()),
            (70, (0..600).rev().step_by(3).collect()),
        ] {
            let cols: Vec<usize> = (0..k).collect();
            let n = k + 1;
            for threads in [1, 3] {
                let z = split_blocks((&go, &x, s), &rows, &cols, true, threads);
                for b in 0..2 {
                    for (m, &r) in rows.iter().enumerate() {
                        let mut want = 0f32;
                        for t in 0..s.tokens {
                            want += go[(b * s.tokens + t) * s.d_out + r];
                        }
                        let got = z[(b * rows.len() + m) * n + k];
                        assert_eq!(got.to_bits(), want.to_bits(), "k {k} sample {b} row {m}");
                    }
                }
            }
        }
    }

    /// Panels reuse the worker's scratch buffer without clearing it: whatever it holds (NaN here)
    /// must never reach the block, for partial row and column tiles alike.
    #[test]
    fn a_stale_scratch_buffer_changes_nothing() {
        use crate::micro::Micro;
        let (s, go, x) = factors([2, 150, 30, 50], 5);
        let rows: Vec<usize> = (0..30).step_by(2).collect(); // 15: a partial row tile
        let cols: Vec<usize> = (3..40).collect(); // 37: a partial column tile
        let run = |poison: bool| {
            if poison {
                f32::with_scratch(|b, _| {
                    b.clear();
                    b.resize(1 << 20, f32::NAN);
                });
            }
            let mut z = vec![0f32; 2 * 15 * 38];
            // One thread: every block runs on this thread, on the buffer poisoned above.
            masked_outer_split(&go, &x, s, &rows, &cols, true, Sink::Blocks(&mut z), 1).unwrap();
            z
        };
        let clean = run(false);
        assert!(clean.iter().all(|v| v.is_finite()));
        assert_eq!(clean, run(true));
    }

    #[test]
    fn rejects_bad_input() {
        let s = OuterShape {
            batch: 1,
            tokens: 2,
            d_out: 3,
            d_in: 2,
        };
        let (go, x) = (vec![0f32; 6], vec![0f32; 4]);
        let mut z = vec![0f32; 2];
        assert!(matches!(
            masked_outer(&go, &x, s, &[3], &[0], true, &mut z),
            Err(crate::Error::InvalidArgument { name: "rows", .. })
        ));
        assert!(matches!(
            masked_outer(&go, &x, s, &[0], &[2], true, &mut z),
            Err(crate::Error::InvalidArgument { name: "cols", .. })
        ));
        assert!(matches!(
            masked_outer(&go, &x, s, &[0], &[1], false, &mut z),
            Err(crate::Error::Shape { what: "out", .. })
        ));
        assert!(matches!(
            masked_outer(&go[..5], &x, s, &[0], &[1], true, &mut z),
            Err(crate::Error::Shape { what: "go", .. })
        ));
    }

    /// The fused projection is the blocks followed by `project_batch`, bit for bit: whole
    /// samples per worker (projected in the worker) and split rows (stored, then projected),
    /// any thread count, with and without the bias column, `c = 1` and `c = 3`.
    #[test]
    fn the_projected_blocks_are_the_blocks_projected() {
        for (batch, threads) in [(1, 1), (1, 2), (3, 2), (5, 1), (8, 2), (17, 3), (40, 2)] {
            for (bias, c) in [(false, 1), (true, 3)] {
                let (s, go, x) = factors([batch, 70, 40, 30], batch as u64);
                let rows: Vec<usize> = (0..40).step_by(3).collect(); // 14
                let cols: Vec<usize> = (1..30).step_by(2).collect(); // 15
                let n = cols.len() + usize::from(bias);
                let sjlt = Sjlt::new(rows.len() * n, 64, c, 9).unwrap();
                let z = split_blocks((&go, &x, s), &rows, &cols, bias, threads);
                let mut want = vec![0f32; batch * 64];
                sjlt.project_batch(&z, batch, &mut want).unwrap();
                let mut y = vec![f32::NAN; batch * 64];
                let sink = Sink::Projected {
                    sjlt: &sjlt,
                    out: &mut y,
                };
                masked_outer_split(&go, &x, s, &rows, &cols, bias, sink, threads).unwrap();
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "batch {batch}, threads {threads}, bias {bias}, c {c}"
                );
            }
        }
    }

    #[test]
    fn the_projection_must_fit_the_blocks() {
        let (s, go, x) = factors([2, 3, 4, 5], 1);
        let (rows, cols) = ([0, 2], [1, 3, 4]);
        let run = |sjlt: &Sjlt, out: &mut [f32]| {
            masked_outer_into(
                &go,
                &x,
                s,
                &rows,
                &cols,
                true,
                Sink::Projected { sjlt, out },
            )
        };
        let mut y = vec![0f32; 2 * 8];
        let wrong = Sjlt::new(2 * 3, 8, 1, 0).unwrap(); // the block is 2 · (3 + 1)
        assert!(matches!(
            run(&wrong, &mut y),
            Err(crate::Error::InvalidArgument { name: "sjlt", .. })
        ));
        let sjlt = Sjlt::new(2 * 4, 8, 1, 0).unwrap();
        assert!(matches!(
            run(&sjlt, &mut y[..15]),
            Err(crate::Error::Shape { what: "out", .. })
        ));
        run(&sjlt, &mut y).unwrap();
    }
}

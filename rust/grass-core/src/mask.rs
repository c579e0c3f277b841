//! Random coordinate masks: `out_dim` distinct coordinates of `0..in_dim`, uniformly without
//! replacement (Floyd's algorithm driven by the `Mask` hash stream), kept in increasing order.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{at_least_one, check_len, invalid, Result};
use crate::hash::{below, hash, stream_key, Stream};
use crate::parallel::{self, SyncPtr};
use crate::projection::Projection;
use std::collections::HashSet;

/// Draws between cancellation polls of the sampler.
const POLL: usize = 1 << 16;

/// Draws the sorted mask of `m` coordinates out of `n` for `seed`.
///
/// Floyd's algorithm: for `t = 0 .. m`, with `j = n − m + t`, draw `r = below(hash(key, t), j + 1)`;
/// insert `r` unless already chosen, else insert `j`. The set is returned sorted.
///
/// # Errors
/// `OutOfMemory` when the `m` indices (or the sampler's `n`-bit set) cannot be allocated;
/// `Cancelled`.
pub fn sample(n: usize, m: usize, seed: u64) -> Result<Vec<usize>> {
    sample_keyed(n, m, stream_key(seed, Stream::Mask))
}

/// [`sample`] driven by an explicit stream `key` instead of `stream_key(seed, Stream::Mask)`
/// (used by the SRHT to draw its rows from its own stream).
///
/// Requires `m ≤ n`.
///
/// # Errors
/// As [`sample`].
pub fn sample_keyed(n: usize, m: usize, key: u64) -> Result<Vec<usize>> {
    let mut out = alloc::with_capacity(m, "mask indices")?;
    let stop = Stop::current();
    let draws = (0..m).map(|t| {
        if t % POLL == 0 {
            stop.check()?;
        }
        let j = n - m + t;
        Ok((below(hash(key, t as u64), j as u64 + 1) as usize, j))
    });
    if m.saturating_mul(64) >= n {
        let mut bits = alloc::vec_of(n.div_ceil(64), 0u64, "mask bitmap words")?;
        for d in draws {
            let (r, j) = d?;
            let pick = if bits[r / 64] >> (r % 64) & 1 == 0 {
                r
            } else {
                j
            };
            bits[pick / 64] |= 1 << (pick % 64);
        }
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(w * 64 + word.trailing_zeros() as usize);
                word &= word - 1;
            }
        }
    } else {
        let mut set = HashSet::new();
        set.try_reserve(m)
            .map_err(|_| alloc::oom::<(usize, u64)>("mask set entries", m))?;
        for d in draws {
            let (r, j) = d?;
            if !set.insert(r) {
                set.insert(j);
            }
        }
        out.extend(set);
        out.sort_unstable();
    }
    Ok(out)
}

/// Gathers columns: `out[b][m] = x[b][idx[m]]` for a row-major `(batch, p)` input, in parallel
/// over rows (`idx` in any order, repeats allowed).
///
/// # Errors
/// `Shape` when a buffer's length does not match; `InvalidArgument` when an index is `≥ p`;
/// `Cancelled`.
pub fn gather_columns<T: Load<A>, A: Accum>(
    x: &[T],
    batch: usize,
    p: usize,
    idx: &[usize],
    out: &mut [A],
) -> Result<()> {
    let k = idx.len();
    check_len("x", x.len(), batch, p)?;
    check_len("out", out.len(), batch, k)?;
    if let Some(&bad) = idx.iter().find(|&&i| i >= p) {
        return Err(invalid(
            "idx",
            format!("index {bad} is out of range for {p} columns"),
        ));
    }
    if batch == 0 || k == 0 {
        return Ok(());
    }
    // Tasks of whole groups of `GATHER_ROWS` rows: a few per thread (an even split of the rows:
    // the gather is memory-bound, so a thread left with one more task than the others sets
    // the time), each of at least ~2¹⁵ values.
    let groups = batch.div_ceil(GATHER_ROWS);
    let tasks = (4 * parallel::get_num_threads())
        .min((batch * k) >> 15)
        .max(1);
    let rows_per_task = GATHER_ROWS * groups.div_ceil(tasks);
    let lines = Lines::for_mask(idx, p, std::mem::size_of::<T>());
    let stop = Stop::current();
    if batch * k <= SERIAL_GATHER {
        // Small gathers run on the calling thread: waking the pool costs more than they take.
        for (g, og) in out.chunks_mut(k * GATHER_ROWS).enumerate() {
            stop.check()?;
            let (xg, after) = group(x, p, g);
            // SAFETY: every index is `< p` (checked above).
            unsafe { gather_rows(xg, p, idx, og, k, lines, after) };
        }
        return Ok(());
    }
    parallel::try_chunks_mut(out, k * rows_per_task, |t, o| {
        stop.check()?;
        let xs = &x[t * p * rows_per_task..];
        for (g, og) in o.chunks_mut(k * GATHER_ROWS).enumerate() {
            let (xg, after) = group(xs, p, g);
            // SAFETY: every index is `< p` (checked above).
            unsafe { gather_rows(xg, p, idx, og, k, lines, after) };
        }
        Ok(())
    })
}

/// Group `g` of `GATHER_ROWS` rows of the row-major `x` (fewer at the end) and the group after it
/// (empty at the end): the `x` and `after` of [`gather_rows`].
pub(crate) fn group<T>(x: &[T], p: usize, g: usize) -> (&[T], &[T]) {
    let n = GATHER_ROWS * p;
    let start = (g * n).min(x.len());
    let (xg, rest) = x[start..].split_at(n.min(x.len() - start));
    (xg, &rest[..n.min(rest.len())])
}

/// Elements per task of the element-wise passes (zeroing, scaling).
const ELEMENTWISE_CHUNK: usize = 1 << 16;

/// Gathers of at most this many elements run on the calling thread (about 0.2 ms of work).
const SERIAL_GATHER: usize = 1 << 16;

/// Rows gathered together: each kept column is read from `GATHER_ROWS` rows in turn, which
/// keeps more independent cache misses in flight than one row at a time (1.5–2× faster
/// for masks that touch most cache lines of a row).
pub(crate) const GATHER_ROWS: usize = 4;

/// Lines ahead of the gather that a streamed gather ([`Lines::Stream`]) asks for.
const STREAM_AHEAD: usize = 4;

/// How a gather brings its rows' cache lines in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lines {
    /// Only the lines holding kept columns (the hardware prefetcher is left alone).
    Touched,
    /// Every line of the span, prefetched [`STREAM_AHEAD`] lines ahead in memory order, the
    /// gaps between kept columns included: on CPUs where four rows streamed in order arrive
    /// faster than the touched lines alone, gaps and all ([`streams_dense_masks`]).
    Stream,
}

impl Lines {
    /// [`Lines::Stream`] for a [`dense`] mask on a CPU that [`streams_dense_masks`], else
    /// [`Lines::Touched`].
    pub(crate) fn for_mask(idx: &[usize], p: usize, elem: usize) -> Self {
        if streams_dense_masks() && dense(idx, p, elem) {
            Self::Stream
        } else {
            Self::Touched
        }
    }
}

/// Whether `idx` (increasing) touches at least a third of the lines of a row of `p` values of
/// `elem` bytes (touching every line then reads at most three times the lines the mask needs).
pub(crate) fn dense(idx: &[usize], p: usize, elem: usize) -> bool {
    let per = (64 / elem.max(1)).max(1);
    let mut touched = 0usize;
    let mut last = usize::MAX;
    for &i in idx {
        if i / per != last {
            last = i / per;
            touched += 1;
        }
    }
    3 * touched >= p.div_ceil(per)
}

/// Whether a dense mask's gather is faster streaming every line ([`Lines::Stream`]) than reading
/// only the touched ones, which depends on the CPU's prefetchers (`floor` bench, MASK 2¹⁷ → 8192,
/// 64 % of the lines):
/// - AMD (Zen 2 VM, session 7): streamed 1.5–2.0 ms vs touched-only 2.0–3.0 ms: stream;
/// - Intel (Xeon, family 6 model 207, session 9): streamed 0.84 ms vs touched-only 0.70 ms
///   (medians of 7 alternating runs), and likewise for GraSS 2¹⁷ → 8192 (1.01 vs 0.74 ms) and
///   FactGraSS's masked factors (2.41 vs 2.14 ms): touched.
///
/// AMD CPUs stream; every other CPU reads the touched lines. Either way the results are the same
/// bits (a gather only copies).
pub(crate) fn streams_dense_masks() -> bool {
    static STREAMS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STREAMS.get_or_init(|| cpu_vendor() == *b"AuthenticAMD")
}

/// The CPU's vendor string (`cpuid` leaf 0), or zeros off x86-64.
fn cpu_vendor() -> [u8; 12] {
    let mut v = [0u8; 12];
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `cpuid` leaf 0 exists on every x86-64 CPU and only reads identification.
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        v[..4].copy_from_slice(&r.ebx.to_le_bytes());
        v[4..8].copy_from_slice(&r.edx.to_le_bytes());
        v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    }
    v
}

/// `out[r · stride + m] = x[r][idx[m]]` for the (1 to `GATHER_ROWS`) rows of the row-major
/// `(rows, p)` input `x`, all rows at once (independent streams of loads), bringing the lines in
/// as `lines` says. `after` is what follows `x` in memory (the next rows to gather, if any: a
/// streamed gather starts asking for their first lines as it ends these, so that short rows do
/// not wait for each start).
///
/// # Safety
/// Every index must be `< p` (the callers validate their index lists once, up front).
#[inline]
pub(crate) unsafe fn gather_rows<T: Load<A>, A: Accum>(
    x: &[T],
    p: usize,
    idx: &[usize],
    out: &mut [A],
    stride: usize,
    lines: Lines,
    after: &[T],
) {
    let k = idx.len();
    let rows = x.len() / p;
    assert!(x.len() == rows * p && (1..=GATHER_ROWS).contains(&rows) && k <= stride);
    assert!(out.len() >= (rows - 1) * stride + k, "output too short");
    debug_assert!(idx.iter().all(|&i| i < p), "index out of range");
    if rows < GATHER_ROWS {
        for (orow, xrow) in out.chunks_mut(stride).zip(x.chunks_exact(p)) {
            for (dst, &i) in orow.iter_mut().zip(idx) {
                // SAFETY: every index is `< p` (the caller's contract) and `xrow.len() == p`.
                *dst = unsafe { *xrow.get_unchecked(i) }.load();
            }
        }
        return;
    }
    let (o01, o23) = out.split_at_mut(2 * stride);
    let (o0, o1) = o01.split_at_mut(stride);
    let (o2, o3) = o23.split_at_mut(stride);
    let o = [&mut o0[..k], &mut o1[..k], &mut o2[..k], &mut o3[..k]];
    let xr: [&[T]; GATHER_ROWS] = std::array::from_fn(|r| &x[r * p..(r + 1) * p]);
    match lines {
        // SAFETY: passed on from the caller.
        Lines::Touched => unsafe { gather4::<T, A, false>(xr, idx, o, after) },
        // SAFETY: passed on from the caller.
        Lines::Stream => unsafe { gather4::<T, A, true>(xr, idx, o, after) },
    }
}

/// Four rows of [`gather_rows`]; `STREAM` prefetches every line [`STREAM_AHEAD`] lines ahead.
///
/// # Safety
/// Every index must be `< p`, the length of each row.
#[inline(always)]
unsafe fn gather4<T: Load<A>, A: Accum, const STREAM: bool>(
    xr: [&[T]; GATHER_ROWS],
    idx: &[usize],
    o: [&mut [A]; GATHER_ROWS],
    after: &[T],
) {
    let [o0, o1, o2, o3] = o;
    let p = xr[0].len();
    let per = (64 / std::mem::size_of::<T>().max(1)).max(1);
    // The next element (a line's worth apart) to prefetch in every row, from the first kept
    // one's line (a block of a row starts mid-row); past the row's end, the same place of the
    // row `GATHER_ROWS` further on (in `after`).
    let mut next = idx.first().map_or(0, |&i| i - i % per);
    for (m, &i) in idx.iter().enumerate() {
        if STREAM {
            let want = i + STREAM_AHEAD * per;
            while next <= want {
                for (r, row) in xr.iter().enumerate() {
                    if let Some(v) = row.get(next) {
                        crate::simd::prefetch(v);
                    } else if let Some(v) = after.get(r * p + next - p) {
                        crate::simd::prefetch(v);
                    }
                }
                next += per;
            }
        }
        // SAFETY: every index is `< p` (the caller's contract) and each `xr[r]` holds `p` elements.
        unsafe {
            o0[m] = xr[0].get_unchecked(i).load();
            o1[m] = xr[1].get_unchecked(i).load();
            o2[m] = xr[2].get_unchecked(i).load();
            o3[m] = xr[3].get_unchecked(i).load();
        }
    }
}

/// A seeded coordinate mask from `in_dim` to `out_dim`, optionally scaled by `√(in_dim/out_dim)`.
#[derive(Debug, Clone)]
pub struct Mask {
    in_dim: usize,
    seed: u64,
    scale: bool,
    indices: Vec<usize>,
}

impl Mask {
    /// Builds the mask.
    ///
    /// # Errors
    /// `InvalidArgument` unless `1 ≤ out_dim ≤ in_dim`; `OutOfMemory` when the `out_dim`
    /// indices cannot be allocated; `Cancelled`.
    pub fn new(in_dim: usize, out_dim: usize, seed: u64, scale: bool) -> Result<Self> {
        at_least_one("in_dim", in_dim)?;
        if out_dim == 0 || out_dim > in_dim {
            return Err(invalid(
                "out_dim",
                format!("must be in 1..=in_dim ({in_dim}), got {out_dim}"),
            ));
        }
        Ok(Self {
            in_dim,
            seed,
            scale,
            indices: sample(in_dim, out_dim, seed)?,
        })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The kept coordinates, increasing.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
    /// The factor applied to kept values: `√(in_dim/out_dim)` when scaled, else 1.
    pub fn factor(&self) -> f64 {
        if self.scale {
            (self.in_dim as f64 / self.out_dim() as f64).sqrt()
        } else {
            1.0
        }
    }

    /// Zeroes `out` in parallel and returns a writer for the adjoint scatter of GraSS.
    pub(crate) fn zero_out<A: Accum>(out: &mut [A]) -> SyncPtr<A> {
        let zero = |_, o: &mut [A]| {
            o.fill(A::ZERO);
            Ok(())
        };
        parallel::try_chunks_mut(out, ELEMENTWISE_CHUNK, zero).expect("zeroing cannot fail");
        SyncPtr::new(out)
    }
}

impl Projection for Mask {
    fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// The number of kept coordinates.
    fn out_dim(&self) -> usize {
        self.indices.len()
    }

    /// Gathers the kept coordinates (times the factor when scaled).
    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        gather_columns(x, batch, self.in_dim, &self.indices, out)?;
        if self.scale {
            let f = A::from_f64(self.factor());
            parallel::try_chunks_mut(out, ELEMENTWISE_CHUNK, |_, o| {
                for v in o.iter_mut() {
                    *v = *v * f;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Scatters the kept coordinates back, zeros elsewhere.
    fn transpose_batch<A: Accum>(&self, y: &[A], _batch: usize, out: &mut [A]) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim());
        let f = A::from_f64(self.factor());
        let stop = Stop::current();
        parallel::try_chunks_mut(out, p, |b, o| {
            stop.check()?;
            o.fill(A::ZERO);
            for (&v, &i) in y[b * k..(b + 1) * k].iter().zip(&self.indices) {
                o[i] = if self.scale { v * f } else { v };
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: a loop over rows and kept columns.
    fn reference(x: &[f32], p: usize, idx: &[usize]) -> Vec<f32> {
        x.chunks_exact(p)
            .flat_map(|row| idx.iter().map(|&i| row[i]))
            .collect()
    }

    fn input(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32).sin()).collect()
    }

    #[test]
    fn density_follows_the_touched_fraction() {
        let p = 1 << 12;
        let every_16th: Vec<usize> = (0..p).step_by(16).collect();
        assert!(dense(&every_16th, p, 4));
        let every_64th: Vec<usize> = (0..p).step_by(64).collect();
        assert!(!dense(&every_64th, p, 4));
        // A third of the lines is enough; the same mask over 16-bit values (32 per line) touches
        // half of their lines.
        let every_48th: Vec<usize> = (0..p).step_by(48).collect();
        assert!(dense(&every_48th, p, 4));
        assert!(dense(&every_64th, p, 2));
        assert!(!dense(&every_64th, p, 8));
        // Streaming is chosen for dense masks only, and only where the CPU streams them faster.
        let stream = streams_dense_masks();
        assert_eq!(Lines::for_mask(&every_16th, p, 4) == Lines::Stream, stream);
        assert_eq!(Lines::for_mask(&every_64th, p, 4), Lines::Touched);
    }

    /// The `cpuid` vendor string is the kernel's `vendor_id` (an independent reading of it), so
    /// the registers are put together in the right order.
    #[test]
    fn the_vendor_is_the_kernels() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return; // not Linux: no second reading to compare with
        };
        let Some(want) = info.lines().find_map(|l| {
            l.strip_prefix("vendor_id")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        }) else {
            return; // not x86 (cpuinfo has no vendor_id): `cpu_vendor` is zeros there
        };
        assert_eq!(std::str::from_utf8(&cpu_vendor()), Ok(want.trim_end()));
    }

    #[test]
    fn both_line_modes_gather_the_same_values() {
        for p in [1usize, 7, 16, 17, 100, 1000, 5000] {
            for frac in [0.02, 0.4, 1.0] {
                let k = ((p as f64 * frac) as usize).max(1);
                let mut lists = vec![sample(p, k, 3).unwrap()];
                // Any order, repeats allowed.
                lists.push(lists[0].iter().rev().chain(&lists[0]).copied().collect());
                for idx in &lists {
                    for rows in 1..=GATHER_ROWS {
                        let x = input((rows + GATHER_ROWS) * p);
                        let (xg, after) = group(&x, p, 0);
                        let xg = &xg[..rows * p];
                        let want = reference(xg, p, idx);
                        for lines in [Lines::Touched, Lines::Stream] {
                            let mut out = vec![f32::NAN; rows * idx.len()];
                            // SAFETY: every index is `< p` (sampled from `0..p`).
                            unsafe { gather_rows(xg, p, idx, &mut out, idx.len(), lines, after) };
                            assert_eq!(out, want, "p {p}, k {k}, rows {rows}, {lines:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gather_columns_is_the_loop_for_any_batch() {
        for (p, k) in [(5000usize, 2500usize), (5000, 60), (64, 64), (3, 2)] {
            let idx = sample(p, k, 11).unwrap();
            for batch in [1usize, 4, 5, 9, 17, 64] {
                let x = input(batch * p);
                let mut out = vec![f32::NAN; batch * k];
                gather_columns(&x, batch, p, &idx, &mut out).unwrap();
                assert_eq!(out, reference(&x, p, &idx), "p {p}, k {k}, batch {batch}");
            }
        }
    }

    #[test]
    fn groups_cover_the_rows_with_what_follows() {
        let x: Vec<u32> = (0..10 * 3).collect();
        let (g0, a0) = group(&x, 3, 0);
        assert_eq!((g0, a0), (&x[..12], &x[12..24]));
        let (g2, a2) = group(&x, 3, 2);
        assert_eq!((g2, a2), (&x[24..], &x[30..]));
        assert_eq!(group(&x, 3, 3), (&x[30..], &x[30..]));
    }
}

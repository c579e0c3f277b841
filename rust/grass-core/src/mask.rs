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
    // Tasks of whole groups of `GATHER_ROWS` rows.
    let rows_per_task = ((1 << 16) / k.max(1) + 1).next_multiple_of(GATHER_ROWS);
    let stop = Stop::current();
    if batch * k <= SERIAL_GATHER {
        // Small gathers run on the calling thread: waking the pool costs more than they take.
        for (og, xg) in out
            .chunks_mut(k * GATHER_ROWS)
            .zip(x.chunks(p * GATHER_ROWS))
        {
            stop.check()?;
            // SAFETY: every index is `< p` (checked above).
            unsafe { gather_rows(xg, p, idx, og, k) };
        }
        return Ok(());
    }
    parallel::try_chunks_mut(out, k * rows_per_task, |t, o| {
        stop.check()?;
        let xs = &x[t * p * rows_per_task..];
        for (og, xg) in o
            .chunks_mut(k * GATHER_ROWS)
            .zip(xs.chunks(p * GATHER_ROWS))
        {
            // SAFETY: every index is `< p` (checked above).
            unsafe { gather_rows(xg, p, idx, og, k) };
        }
        Ok(())
    })
}

/// Elements per task of the element-wise passes (zeroing, scaling).
const ELEMENTWISE_CHUNK: usize = 1 << 16;

/// Gathers of at most this many elements run on the calling thread (about 0.2 ms of work).
const SERIAL_GATHER: usize = 1 << 16;

/// Rows gathered together: each kept column is read from `GATHER_ROWS` rows in turn, which
/// keeps more independent cache misses in flight than one row at a time (1.5–2× faster
/// for masks that touch most cache lines of a row).
pub(crate) const GATHER_ROWS: usize = 4;

/// `out[r · stride + m] = x[r][idx[m]]` for the (1 to `GATHER_ROWS`) rows of the row-major
/// `(rows, p)` input `x`, all rows at once (independent streams of loads).
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
    let (o0, o1, o2, o3) = (&mut o0[..k], &mut o1[..k], &mut o2[..k], &mut o3[..k]);
    let xr: [&[T]; GATHER_ROWS] = std::array::from_fn(|r| &x[r * p..(r + 1) * p]);
    for (m, &i) in idx.iter().enumerate() {
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

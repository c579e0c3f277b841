//! Random coordinate masks: `out_dim` distinct coordinates of `0..in_dim`, uniformly without
//! replacement (Floyd's algorithm driven by the `Mask` hash stream), kept in increasing order.
use crate::elem::{Accum, Load};
use crate::error::{invalid, Result};
use crate::hash::{below, hash, stream_key, Stream};
use crate::sjlt::SyncPtr;
use crate::{check_len, parallel};
use rayon::prelude::*;
use std::collections::HashSet;

/// Draws the sorted mask of `m` coordinates out of `n` for `seed`.
///
/// Floyd's algorithm: for `t = 0 .. m`, with `j = n − m + t`, draw `r = below(hash(key, t), j + 1)`;
/// insert `r` unless already chosen, else insert `j`. The set is returned sorted.
pub fn sample(n: usize, m: usize, seed: u64) -> Vec<usize> {
    sample_keyed(n, m, stream_key(seed, Stream::Mask))
}

/// [`sample`] driven by an explicit stream `key` instead of `stream_key(seed, Stream::Mask)`
/// (used by the SRHT to draw its rows from its own stream).
///
/// Requires `m ≤ n`.
pub fn sample_keyed(n: usize, m: usize, key: u64) -> Vec<usize> {
    let draws = (0..m).map(|t| {
        let j = n - m + t;
        (below(hash(key, t as u64), j as u64 + 1) as usize, j)
    });
    if m.saturating_mul(64) >= n {
        let mut bits = vec![0u64; n.div_ceil(64)];
        for (r, j) in draws {
            let pick = if bits[r / 64] >> (r % 64) & 1 == 0 {
                r
            } else {
                j
            };
            bits[pick / 64] |= 1 << (pick % 64);
        }
        let mut out = Vec::with_capacity(m);
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(w * 64 + word.trailing_zeros() as usize);
                word &= word - 1;
            }
        }
        out
    } else {
        let mut set = HashSet::with_capacity(m);
        for (r, j) in draws {
            if !set.insert(r) {
                set.insert(j);
            }
        }
        let mut out: Vec<usize> = set.into_iter().collect();
        out.sort_unstable();
        out
    }
}

/// Gathers columns: `out[b][m] = x[b][idx[m]]` for a row-major `(batch, p)` input, in parallel
/// over rows (`idx` in any order, repeats allowed).
///
/// # Errors
/// `Shape` when a buffer's length does not match; `InvalidArgument` when an index is `≥ p`.
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
    let rows_per_task = (1 << 16) / k.max(1) + 1;
    parallel::install(|| {
        out.par_chunks_mut(k * rows_per_task)
            .zip(x.par_chunks(p * rows_per_task))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_exact_mut(k).zip(xs.chunks_exact(p)) {
                    for (dst, &i) in orow.iter_mut().zip(idx) {
                        // SAFETY: every index was checked to be `< p` above and `xrow.len() == p`.
                        *dst = unsafe { *xrow.get_unchecked(i) }.load();
                    }
                }
            });
    });
    Ok(())
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
    /// `InvalidArgument` unless `1 ≤ out_dim ≤ in_dim`.
    pub fn new(in_dim: usize, out_dim: usize, seed: u64, scale: bool) -> Result<Self> {
        if in_dim == 0 {
            return Err(invalid("in_dim", "must be at least 1"));
        }
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
            indices: sample(in_dim, out_dim, seed),
        })
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Output dimension (number of kept coordinates).
    pub fn out_dim(&self) -> usize {
        self.indices.len()
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

    /// Gathers the kept coordinates: `(batch, in_dim)` → `out` `(batch, out_dim)`.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn project<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim());
        check_len("x", x.len(), batch, p)?;
        check_len("out", out.len(), batch, k)?;
        if batch == 0 {
            return Ok(());
        }
        gather_columns(x, batch, p, &self.indices, out)?;
        if self.scale {
            let f = A::from_f64(self.factor());
            parallel::install(|| out.par_iter_mut().for_each(|v| *v = *v * f));
        }
        Ok(())
    }

    /// The adjoint: scatters `(batch, out_dim)` back to zeros elsewhere in `(batch, in_dim)`.
    ///
    /// # Errors
    /// `Shape` when a buffer's length does not match `batch`.
    pub fn transpose<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let (p, k) = (self.in_dim, self.out_dim());
        check_len("y", y.len(), batch, k)?;
        check_len("out", out.len(), batch, p)?;
        if batch == 0 {
            return Ok(());
        }
        let f = A::from_f64(self.factor());
        parallel::install(|| {
            out.par_chunks_mut(p)
                .zip(y.par_chunks(k))
                .for_each(|(o, ys)| {
                    o.fill(A::ZERO);
                    for (&v, &i) in ys.iter().zip(&self.indices) {
                        o[i] = if self.scale { v * f } else { v };
                    }
                });
        });
        Ok(())
    }

    /// Zeroes `out` in parallel and returns a writer for the adjoint scatter of GraSS.
    pub(crate) fn zero_out<A: Accum>(out: &mut [A]) -> SyncPtr<A> {
        parallel::install(|| out.par_iter_mut().for_each(|v| *v = A::ZERO));
        SyncPtr::new(out)
    }
}

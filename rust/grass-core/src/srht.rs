//! Subsampled randomized Hadamard transform (SRHT, a.k.a. FJLT), `O(p log p)` per sample.
//!
//! With `n = in_dim.next_power_of_two()` and `k = out_dim ≤ n`, the `k × p` matrix is
//!
//! `P = √(n/k) · S · (H/√n) · D = (1/√k) · S · H · D`
//!
//! applied to `x` zero-padded to length `n`, where
//! * `D = diag(d₀ … d_{p−1})`, `d_j = −1` iff `hash(key, j) & 1 == 1`, with
//!   `key = stream_key(seed, Stream::Srht)`;
//! * `H` is the `n × n` Sylvester–Walsh–Hadamard matrix, `H[r][j] = (−1)^popcount(r & j)`
//!   (the same ordering as `scipy.linalg.hadamard`);
//! * `S` keeps the rows `r₀ < r₁ < … < r_{k−1}` drawn by Floyd's sampler
//!   [`mask::sample_keyed`]`(n, k, mix64(key))`; output `i` is row `rᵢ`.
//!
//! So `P[i][j] = d_j · (−1)^popcount(rᵢ & j) / √k`, and `E‖Px‖² = ‖x‖²` over the row draw.
//! `project` runs one in-place fast Walsh–Hadamard transform per sample; `transpose` (the adjoint)
//! scatters into the kept rows, transforms, and applies the signs.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{at_least_one, invalid, Result};
use crate::fwht::{columns_fit, signed_block_f32, FWHT_BLOCK};
use crate::hash::{hash, mix64, stream_key, Stream};
use crate::mask;
use crate::parallel;
use crate::projection::Projection;
use crate::simd::{flat_mut, Isa, Line, LANES};

pub use crate::fwht::fwht;

/// A seeded SRHT from `in_dim` to `out_dim`.
#[derive(Debug, Clone)]
pub struct Srht {
    in_dim: usize,
    padded: usize,
    seed: u64,
    /// Sign bits of `D`, bit `j` set = `d_j = −1`.
    signs: Vec<u64>,
    rows: Vec<usize>,
    /// The kept rows by 16-column strip of the `(padded / FWHT_BLOCK, FWHT_BLOCK)` view (the
    /// column form of the large FWHT stages hands out one strip at a time).
    strips: Strips,
}

/// Kept rows grouped by strip: strip `g` holds the `(output index, place in the strip)` pairs
/// `entries[start[g] .. start[g + 1]]`.
#[derive(Debug, Clone, Default)]
struct Strips {
    start: Vec<u32>,
    entries: Vec<(u32, u32)>,
}

impl Strips {
    /// Empty (unused) unless the large stages can run by columns; `O(k)`.
    fn new(padded: usize, rows: &[usize]) -> Result<Self> {
        let block = FWHT_BLOCK;
        if !columns_fit(padded) {
            return Ok(Self::default());
        }
        let strips = block / LANES;
        let strip = |r: usize| (r % block) / LANES;
        let mut start = alloc::vec_of(strips + 1, 0u32, "SRHT strip offsets")?;
        for &r in rows {
            start[strip(r) + 1] += 1;
        }
        for g in 0..strips {
            start[g + 1] += start[g];
        }
        let mut fill: Vec<u32> = start[..strips].to_vec();
        let mut entries = alloc::vec_of(rows.len(), (0u32, 0u32), "SRHT strip entries")?;
        for (i, &r) in rows.iter().enumerate() {
            let g = strip(r);
            // Row `r` is row `r / block` of its strip, lane `r % LANES`.
            entries[fill[g] as usize] = (i as u32, ((r / block) * LANES + r % LANES) as u32);
            fill[g] += 1;
        }
        Ok(Self { start, entries })
    }

    /// The `(output index, place)` pairs of strip `g`.
    fn of(&self, g: usize) -> &[(u32, u32)] {
        &self.entries[self.start[g] as usize..self.start[g + 1] as usize]
    }
}

impl Srht {
    /// Builds the transform.
    ///
    /// # Errors
    /// `InvalidArgument` when `in_dim == 0` or `out_dim ∉ 1..=in_dim.next_power_of_two()`;
    /// `OutOfMemory` when the `in_dim` signs or `out_dim` rows cannot be allocated; `Cancelled`.
    pub fn new(in_dim: usize, out_dim: usize, seed: u64) -> Result<Self> {
        at_least_one("in_dim", in_dim)?;
        let padded = in_dim
            .checked_next_power_of_two()
            .ok_or_else(|| invalid("in_dim", "its next power of two overflows"))?;
        if out_dim == 0 || out_dim > padded {
            return Err(invalid(
                "out_dim",
                format!("must be in 1..=next_power_of_two(in_dim) ({padded}), got {out_dim}"),
            ));
        }
        let key = stream_key(seed, Stream::Srht);
        let mut signs = alloc::vec_of(in_dim.div_ceil(64), 0u64, "SRHT sign words")?;
        let stop = Stop::current();
        parallel::try_chunks_mut(&mut signs, 1024, |c, words| {
            stop.check()?;
            for (i, word) in words.iter_mut().enumerate() {
                for bit in 0..64 {
                    let j = (c * 1024 + i) * 64 + bit;
                    if j < in_dim && hash(key, j as u64) & 1 == 1 {
                        *word |= 1 << bit;
                    }
                }
            }
            Ok(())
        })?;
        let rows = mask::sample_keyed(padded, out_dim, mix64(key))?;
        let strips = Strips::new(padded, &rows)?;
        Ok(Self {
            in_dim,
            padded,
            seed,
            signs,
            rows,
            strips,
        })
    }

    /// Padded dimension `n`: the next power of two `≥ p`.
    pub fn padded_dim(&self) -> usize {
        self.padded
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The kept Hadamard rows, increasing.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }
    /// Whether the sign `d_j` of input coordinate `j` is negative.
    ///
    /// # Panics
    /// When `j ≥ in_dim`.
    pub fn negative(&self, j: usize) -> bool {
        assert!(
            j < self.in_dim,
            "coordinate {j} out of range (in_dim = {})",
            self.in_dim
        );
        self.signs[j / 64] >> (j % 64) & 1 == 1
    }

    /// The scale `1/√k` of every entry.
    fn scale<A: Accum>(&self) -> A {
        A::from_f64(1.0 / (self.out_dim() as f64).sqrt())
    }

    /// Runs `f(sample, buf, out_row)` on each of the `batch` samples of `input` (`in_len` values
    /// each) and rows of `out` (`out_len` values each), in parallel, checking for cancellation
    /// before each sample. `buf` is a scratch buffer of `padded` values, one per task of a few
    /// samples (rayon may call a `for_each_init` init once per sample, and a fresh buffer of
    /// `padded` values is mapped and faulted in each time); `f` must not rely on its contents.
    fn per_sample<I: Sync, A: Accum>(
        &self,
        input: &[I],
        in_len: usize,
        out: &mut [A],
        out_len: usize,
        batch: usize,
        f: impl Fn(&[I], &mut [A], &mut [A]) + Sync,
    ) -> Result<()> {
        let stop = Stop::current();
        let per_task = batch.div_ceil(2 * parallel::get_num_threads()).max(1);
        parallel::try_chunks_mut(out, out_len * per_task, |t, o| {
            let xs = &input[t * in_len * per_task..];
            // Cache-line aligned: the transform's 64-byte vectors never straddle two lines.
            let zero = Line([A::ZERO; LANES]);
            let mut lines = alloc::vec_of(self.padded.div_ceil(LANES), zero, "SRHT padded values")?;
            let buf = &mut flat_mut(&mut lines)[..self.padded];
            for (o, xs) in o.chunks_exact_mut(out_len).zip(xs.chunks_exact(in_len)) {
                stop.check()?;
                f(xs, buf, o);
            }
            Ok(())
        })
    }
}

impl Projection for Srht {
    fn in_dim(&self) -> usize {
        self.in_dim
    }
    fn out_dim(&self) -> usize {
        self.rows.len()
    }

    /// Each sample is transformed independently with a fixed operation order, so the result is
    /// bit-identical for any thread count and any split of the batch.
    fn project_batch<T: Load<A>, A: Accum>(
        &self,
        x: &[T],
        batch: usize,
        out: &mut [A],
    ) -> Result<()> {
        let (scale, isa): (A, _) = (self.scale(), Isa::detect());
        self.per_sample(x, self.in_dim, out, self.out_dim(), batch, |xs, buf, o| {
            project_sample(isa, self, scale, xs, buf, o);
        })
    }

    /// The adjoint `Pᵀ = (1/√k) · D · H · Sᵀ` (truncated to the first `in_dim` coordinates).
    fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
        let scale: A = self.scale();
        self.per_sample(y, self.out_dim(), out, self.in_dim, batch, |ys, buf, o| {
            buf.fill(A::ZERO);
            for (&v, &r) in ys.iter().zip(&self.rows) {
                buf[r] = v;
            }
            fwht(buf);
            for (j, (dst, &b)) in o.iter_mut().zip(buf.iter()).enumerate() {
                *dst = (b * scale).flip(self.signs[j / 64] >> (j % 64) & 1 == 1);
            }
        })
    }
}

/// One sample: signs, transform, kept rows, with the kernels of `isa` (which the CPU must have;
/// `project_batch` passes the widest).
fn project_sample<T: Load<A>, A: Accum>(
    isa: Isa,
    s: &Srht,
    scale: A,
    x: &[T],
    buf: &mut [A],
    out: &mut [A],
) {
    assert!(isa <= Isa::detect(), "{isa:?} is not available on this CPU");
    match isa {
        // SAFETY: the CPU has the instruction set (asserted just above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { project_sample_avx512(s, scale, x, buf, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { project_sample_avx2(s, scale, x, buf, out) },
        _ => project_sample_impl(s, scale, x, buf, out, Isa::Base),
    }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn project_sample_avx512<T: Load<A>, A: Accum>(
    s: &Srht,
    scale: A,
    x: &[T],
    buf: &mut [A],
    out: &mut [A],
) {
    project_sample_impl(s, scale, x, buf, out, Isa::Avx512);
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn project_sample_avx2<T: Load<A>, A: Accum>(
    s: &Srht,
    scale: A,
    x: &[T],
    buf: &mut [A],
    out: &mut [A],
) {
    project_sample_impl(s, scale, x, buf, out, Isa::Avx2);
}

#[inline(always)]
fn project_sample_impl<T: Load<A>, A: Accum>(
    s: &Srht,
    scale: A,
    x: &[T],
    buf: &mut [A],
    out: &mut [A],
    isa: Isa,
) {
    // Signs and the in-block stages one block at a time (the block stays in L1), then the
    // large spans. (No closures here: a closure is not compiled for the caller's instruction
    // set, and the in-block stages ran in SSE2 inside one.)
    let n = s.padded;
    for (i, blk) in buf.chunks_exact_mut(FWHT_BLOCK.min(n)).enumerate() {
        in_block(s, x, i, blk, isa);
    }
    // The large stages 16 columns at a time, each strip's kept rows read as it completes; else
    // over the whole buffer, then the kept rows.
    let by_columns = crate::fwht::large_stages_by_columns(buf, isa, |g, strip| {
        for &(i, at) in s.strips.of(g) {
            out[i as usize] = strip[at as usize] * scale;
        }
    });
    if !by_columns {
        crate::fwht::large_stages(buf);
        for (dst, &r) in out.iter_mut().zip(&s.rows) {
            *dst = buf[r] * scale;
        }
    }
}

/// How many blocks ahead the input is prefetched.
const PREFETCH_BLOCKS: usize = 1;

/// Block `i` of one sample (`blk.len()` values): signs, then the in-block stages; a block of
/// padding stays +0 through its stages, so it is only zeroed.
#[inline(always)]
fn in_block<T: Load<A>, A: Accum>(s: &Srht, x: &[T], i: usize, blk: &mut [A], isa: Isa) {
    let (p, block) = (x.len(), blk.len());
    let j0 = i * block;
    if j0 >= p {
        blk.fill(A::ZERO);
        return;
    }
    let m = block.min(p - j0);
    let signs = &s.signs[j0 / 64..];
    let xs = &x[j0..j0 + m];
    if m == FWHT_BLOCK {
        if let Some(xf) = T::as_f32(&x[j0..]) {
            let ahead = &xf[(PREFETCH_BLOCKS * block).min(xf.len())..];
            if signed_block_f32(signs, &xf[..m], ahead, blk, isa) {
                return;
            }
        } else if std::mem::size_of::<T>() == 2 {
            // 16-bit input: widened into an L1 buffer (vectorized), then the same fused kernel;
            // the next block's lines are asked for first (its own prefetch only sees `wide`).
            // (A compile-time test: `f64` blocks pay nothing here.)
            let next = &x[(j0 + PREFETCH_BLOCKS * block).min(p)..];
            let per = (64 / std::mem::size_of::<T>().max(1)).max(1);
            for v in next.iter().take(block).step_by(per) {
                crate::simd::prefetch(v);
            }
            let mut wide = [0f32; FWHT_BLOCK];
            if T::widen(xs, &mut wide) && signed_block_f32(signs, &wide, &[], blk, isa) {
                return;
            }
        }
    }
    apply_signs(signs, xs, &mut blk[..m]);
    blk[m..].fill(A::ZERO);
    crate::fwht::block_stages(blk, isa);
}

/// `buf[j] = ±x[j]` with the sign bits of `D` (`signs` starts at the word of `x[0]`, which
/// starts a word).
#[inline(always)]
fn apply_signs<T: Load<A>, A: Accum>(signs: &[u64], x: &[T], buf: &mut [A]) {
    if T::flip_signs(signs, x, buf) {
        return;
    }
    for ((b, xs), &word) in buf.chunks_mut(64).zip(x.chunks(64)).zip(signs) {
        for (bit, (d, &v)) in b.iter_mut().zip(xs).enumerate() {
            *d = v.load().flip(word >> bit & 1 == 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16-bit input (widened a block at a time into the fused kernel) gives the bits of the SRHT of
    /// its exact `f32` values, with full, partial and padding blocks.
    #[test]
    fn half_inputs_project_as_their_f32_values() {
        for (p, k) in [
            (3 * FWHT_BLOCK, 64usize),
            (5 * FWHT_BLOCK + 100, 32),
            (1 << 17, 128),
        ] {
            let s = Srht::new(p, k, 4).unwrap();
            for batch in [1usize, 3] {
                let v: Vec<f32> = (0..batch * p).map(|i| (i as f32 * 0.37).cos()).collect();
                let ((h, hw), (b, bw)) = crate::elem::sixteen_bit(&v);
                let (mut got, mut want) = (vec![0f32; batch * k], vec![0f32; batch * k]);
                s.project(&h, batch, &mut got).unwrap();
                s.project(&hw, batch, &mut want).unwrap();
                assert_eq!(got, want, "f16, p {p}, batch {batch}");
                s.project(&b, batch, &mut got).unwrap();
                s.project(&bw, batch, &mut want).unwrap();
                assert_eq!(got, want, "bf16, p {p}, batch {batch}");
            }
        }
    }

    /// Dense reference `P[i][j] = d_j (−1)^popcount(r_i & j) / √k`, from the public accessors.
    fn reference(s: &Srht) -> Vec<f64> {
        let (p, k) = (s.in_dim(), s.out_dim());
        let mut m = vec![0.0; k * p];
        for (i, &r) in s.rows().iter().enumerate() {
            for j in 0..p {
                let h = if (r & j).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                let d = if s.negative(j) { -1.0 } else { 1.0 };
                m[i * p + j] = h * d / (k as f64).sqrt();
            }
        }
        m
    }

    fn data(len: usize, salt: u64) -> Vec<f64> {
        (0..len)
            .map(|i| (hash(salt, i as u64) >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            .collect()
    }

    #[test]
    fn fwht_matches_dense_hadamard() {
        for n in [1usize, 2, 8, 64, 4096, 8192] {
            let x = data(n, 3);
            let mut y = x.clone();
            fwht(&mut y);
            for r in (0..n).step_by((n / 16).max(1)) {
                let want: f64 = (0..n)
                    .map(|j| {
                        if (r & j).count_ones() % 2 == 0 {
                            x[j]
                        } else {
                            -x[j]
                        }
                    })
                    .sum();
                assert!((y[r] - want).abs() < 1e-9 * n as f64, "n={n} r={r}");
            }
        }
    }

    #[test]
    fn project_matches_materialized_matrix() {
        for (p, k, seed) in [
            (1, 1, 0),
            (5, 3, 1),
            (8, 8, 2),
            (37, 20, 3),
            (100, 128, 4),
            (300, 17, 5),
        ] {
            let s = Srht::new(p, k, seed).unwrap();
            let m = reference(&s);
            let batch = 3;
            let x = data(batch * p, seed + 10);
            let mut out = vec![0.0; batch * k];
            s.project(&x, batch, &mut out).unwrap();
            for b in 0..batch {
                for i in 0..k {
                    let want: f64 = (0..p).map(|j| m[i * p + j] * x[b * p + j]).sum();
                    assert!(
                        (out[b * k + i] - want).abs() < 1e-12,
                        "p={p} k={k} b={b} i={i}"
                    );
                }
            }
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut outf = vec![0f32; batch * k];
            s.project(&xf, batch, &mut outf).unwrap();
            for (a, b) in outf.iter().zip(&out) {
                assert!((f64::from(*a) - b).abs() < 1e-5);
            }
        }
    }

    /// Every path of `project` — the fused sign block and the column form of the large stages
    /// (`f32`), partial and padding blocks, more rows than the column form takes, `f64` — gives
    /// the bits of the contract's sequence done one step at a time: signs, the stage-by-stage
    /// sweep, the kept rows, the scale.
    #[test]
    fn same_bits_as_signs_then_sweep() {
        fn check<A: Accum + Load<A> + Into<f64>>(s: &Srht, x: &[A], batch: usize) {
            let (p, k) = (s.in_dim(), s.out_dim());
            let mut out = vec![A::ZERO; batch * k];
            s.project(x, batch, &mut out).unwrap();
            let scale = A::from_f64(1.0 / (k as f64).sqrt());
            for b in 0..batch {
                let mut buf = vec![A::ZERO; s.padded_dim()];
                for (j, v) in buf[..p].iter_mut().enumerate() {
                    *v = x[b * p + j].flip(s.negative(j));
                }
                crate::fwht::tests::sweep(&mut buf);
                for (i, &r) in s.rows().iter().enumerate() {
                    let (got, want): (f64, f64) = (out[b * k + i].into(), (buf[r] * scale).into());
                    assert_eq!(got.to_bits(), want.to_bits(), "p={p} b={b} i={i}");
                }
            }
        }
        for p in [3 * 2048 + 5, 1 << 15, 1 << 17, 1 << 18, (1 << 18) + 1] {
            let s = Srht::new(p, 2048, p as u64).unwrap();
            let x = data(2 * p, 5);
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            check(&s, &xf, 2);
            if p <= 1 << 15 {
                check(&s, &x, 2);
            }
        }
    }

    /// Each instruction set this CPU has (not only the widest, which `project` picks) gives the
    /// same bits, on the paths above.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        for p in [3 * 2048 + 5, 1 << 17, (1 << 18) + 1] {
            let s = Srht::new(p, 2048, 3).unwrap();
            let x: Vec<f32> = data(p, 6).iter().map(|&v| v as f32).collect();
            let (k, scale) = (s.out_dim(), s.scale::<f32>());
            let run = |isa: Isa| {
                let mut buf = vec![0f32; s.padded_dim()];
                let mut out = vec![0f32; k];
                project_sample(isa, &s, scale, &x, &mut buf, &mut out);
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let base = run(Isa::Base);
            for isa in [Isa::Avx2, Isa::Avx512] {
                if isa <= Isa::detect() {
                    assert_eq!(run(isa), base, "p={p} {isa:?}");
                }
            }
        }
    }

    #[test]
    fn transpose_is_adjoint() {
        for (p, k, seed) in [(1, 1, 0), (7, 4, 1), (64, 64, 2), (1000, 50, 3)] {
            let s = Srht::new(p, k, seed).unwrap();
            let batch = 2;
            let (x, y) = (data(batch * p, 20), data(batch * k, 21));
            let (mut px, mut pty) = (vec![0.0; batch * k], vec![0.0; batch * p]);
            s.project(&x, batch, &mut px).unwrap();
            s.transpose(&y, batch, &mut pty).unwrap();
            for b in 0..batch {
                let lhs: f64 = px[b * k..(b + 1) * k]
                    .iter()
                    .zip(&y[b * k..(b + 1) * k])
                    .map(|(a, c)| a * c)
                    .sum();
                let rhs: f64 = x[b * p..(b + 1) * p]
                    .iter()
                    .zip(&pty[b * p..(b + 1) * p])
                    .map(|(a, c)| a * c)
                    .sum();
                assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "p={p} k={k}");
            }
        }
    }

    #[test]
    fn full_rows_on_power_of_two_is_orthogonal() {
        let s = Srht::new(256, 256, 9).unwrap();
        let x = data(256, 1);
        let mut y = vec![0.0; 256];
        s.project(&x, 1, &mut y).unwrap();
        let (nx, ny): (f64, f64) = (x.iter().map(|v| v * v).sum(), y.iter().map(|v| v * v).sum());
        assert!((nx - ny).abs() < 1e-12 * nx);
    }

    #[test]
    fn rows_distinct_sorted_and_seeded() {
        let a = Srht::new(1000, 300, 1).unwrap();
        assert_eq!(a.padded_dim(), 1024);
        assert!(a.rows().windows(2).all(|w| w[0] < w[1]));
        assert!(*a.rows().last().unwrap() < 1024);
        let b = Srht::new(1000, 300, 1).unwrap();
        assert_eq!(a.rows(), b.rows());
        let c = Srht::new(1000, 300, 2).unwrap();
        assert_ne!(a.rows(), c.rows());
        // Signs are fair-ish.
        let neg = (0..1000).filter(|&j| a.negative(j)).count();
        assert!((400..600).contains(&neg), "{neg}");
    }

    #[test]
    fn bad_arguments() {
        assert!(matches!(
            Srht::new(0, 1, 0),
            Err(crate::Error::InvalidArgument { name: "in_dim", .. })
        ));
        assert!(matches!(
            Srht::new(5, 0, 0),
            Err(crate::Error::InvalidArgument {
                name: "out_dim",
                ..
            })
        ));
        assert!(matches!(
            Srht::new(5, 9, 0),
            Err(crate::Error::InvalidArgument {
                name: "out_dim",
                ..
            })
        ));
        assert!(Srht::new(5, 8, 0).is_ok());
        let s = Srht::new(4, 2, 0).unwrap();
        let mut out = vec![0f32; 2];
        assert!(matches!(
            s.project(&[0f32; 3], 1, &mut out),
            Err(crate::Error::Shape { what: "x", .. })
        ));
        assert!(s.project(&[0f32; 0], 0, &mut []).is_ok());
    }
}

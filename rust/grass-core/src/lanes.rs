//! The SJLT scatter kernel, vectorized across samples.
//!
//! A group of up to [`LANES`] samples is processed together: a block of input columns is first
//! transposed into `[column][lane]` order, then every hashed bucket update is one `LANES`-wide
//! vector add into an accumulator laid out `[bucket][lane]` — instead of `LANES` scalar
//! read-modify-writes. Each lane performs exactly the scalar computation (columns in increasing
//! order, repeats in order, sign flips by XOR of the sign bit, no fused multiply-add), so results
//! are bit-identical for any grouping, batch split or thread count. The scatter is compiled for
//! AVX-512 and AVX2 and picked at run time, with a portable fallback.
use crate::alloc;
use crate::buckets::{Buckets, SIGN_BIT};
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::Result;
use crate::simd::{lines_mut, Line};
pub use crate::simd::{Lanes, LANES};

/// Columns per transposed block (a 16 KiB block of lane vectors). 256 rather than 128: on an
/// AVX2-only Zen 3 VM, 10–14 % faster in 8 alternating runs of `floor --sjlt` (c = 1 and 4); on
/// an AVX-512 VM before, no difference in 3 pairs (benches/README.md, sessions 5 and 6).
pub(crate) const LBLOCK: usize = 256;

/// The column blocks `(j0, n)` of a lane group: a first block of `lead` columns when
/// `0 < lead < LBLOCK`, then blocks of [`LBLOCK`]. Any split gives the same bits (every bucket
/// still sums its columns in increasing order); `lead` lets the later blocks' row loads start on
/// a cache line ([`lead_to_line`]).
pub(crate) fn blocks(n_cols: usize, lead: usize) -> impl Iterator<Item = (usize, usize)> {
    let first = if lead > 0 && lead < LBLOCK {
        lead.min(n_cols)
    } else {
        0
    };
    let head = (first > 0).then_some((0, first));
    head.into_iter().chain(
        (first..n_cols)
            .step_by(LBLOCK)
            .map(move |j0| (j0, LBLOCK.min(n_cols - j0))),
    )
}

/// Columns before the first cache-line boundary of every row of the row-major `(_, p)` buffer
/// `x`, when all rows share it (`p` elements span whole lines) — else 0. A numpy array's data
/// usually starts 16 bytes past a line (torch's on one): with 32-byte row loads split across two
/// lines, SJLT c = 1 ran ~1.3× slower on numpy input than on the same values in torch (Zen 4).
pub(crate) fn lead_to_line<T>(x: &[T], p: usize) -> usize {
    let size = std::mem::size_of::<T>();
    let off = x.as_ptr() as usize % 64;
    if size == 0 || !(p * size).is_multiple_of(64) || !off.is_multiple_of(size) {
        return 0;
    }
    (64 - off) % 64 / size
}

/// Projects one group of `rows ≤ LANES` samples.
///
/// Columns run in the blocks of [`blocks`]`(n_cols, lead)`. In each, `direct(j0, entries, acc)`
/// first does the scatter of as many leading columns as it can straight from the input and
/// returns how many (0: none); `fill(j0, xt)` writes column `j0 + m` of sample `l` into
/// `xt[m][l]` for `l < rows` (other lanes must stay zero) for the rest. `out` is the group's
/// `(rows, out_dim)` output, overwritten. `stop` is polled once per block of columns.
///
/// # Errors
/// `OutOfMemory` when the `(out_dim, LANES)` accumulator cannot be allocated; `Cancelled`.
pub(crate) fn project_group<A: Accum>(
    sjlt: &Buckets,
    n_cols: usize,
    lead: usize,
    rows: usize,
    fill: impl Fn(usize, &mut [Lanes<A>]),
    direct: impl Fn(usize, &[u32], &mut [Lanes<A>]) -> usize,
    out: &mut [A],
    stop: &Stop,
) -> Result<()> {
    let (k, c) = (sjlt.out_dim(), sjlt.c());
    debug_assert!(rows <= LANES && out.len() == rows * k);
    let zero = Line([A::ZERO; LANES]);
    let mut acc_lines = alloc::vec_of(k, zero, "SJLT lane accumulators")?;
    let mut xt_lines = vec![zero; LBLOCK.min(n_cols)];
    let (acc, xt) = (lines_mut(&mut acc_lines), lines_mut(&mut xt_lines));
    let mut ebuf = Vec::new();
    for (j0, n) in blocks(n_cols, lead) {
        stop.check()?;
        let entries = sjlt.entries(j0, n, &mut ebuf)?;
        let done = direct(j0, entries, acc);
        if done < n {
            fill(j0 + done, &mut xt[..n - done]);
            scatter(c, &entries[done * c..], &xt[..n - done], acc);
        }
    }
    // Written out `LANES` buckets at a time, each sample's run contiguous: bucket by bucket, the
    // 16 stores of one bucket land in 16 rows `4·k` bytes apart, and this step took ~15 % of a
    // c = 1 projection (measured); blocked, it is a few per cent.
    let scale: A = sjlt.scale();
    for (i0, blk) in acc.chunks(LANES).enumerate() {
        for l in 0..rows {
            let o = &mut out[l * k + i0 * LANES..][..blk.len()];
            for (d, a) in o.iter_mut().zip(blk) {
                *d = if c > 1 { a[l] * scale } else { a[l] };
            }
        }
    }
    Ok(())
}

/// Projects one sample with scalar arithmetic: exactly one lane of [`project_group`] (columns in
/// increasing order, sign flips by XOR, the same final scaling), so results are bit-identical.
///
/// `row(j0, vals)` writes columns `j0 .. j0 + vals.len()` of the sample; `out` is its
/// `(out_dim,)` output, overwritten.
///
/// # Errors
/// `OutOfMemory` (on-the-fly entries); `Cancelled`.
pub(crate) fn project_one<A: Accum>(
    sjlt: &Buckets,
    n_cols: usize,
    row: impl Fn(usize, &mut [A]),
    out: &mut [A],
    stop: &Stop,
) -> Result<()> {
    let c = sjlt.c();
    debug_assert!(out.len() == sjlt.out_dim());
    out.fill(A::ZERO);
    let mut vals = vec![A::ZERO; LBLOCK.min(n_cols)];
    let mut ebuf = Vec::new();
    for j0 in (0..n_cols).step_by(LBLOCK) {
        stop.check()?;
        let n = LBLOCK.min(n_cols - j0);
        let entries = sjlt.entries(j0, n, &mut ebuf)?;
        row(j0, &mut vals[..n]);
        // A literal `c` lets the inlined loop unroll the repeats (c = 1 at 2^14 -> 4096: 1.4x
        // faster, `floor -- --sjlt-one`).
        let vals = &vals[..n];
        match c {
            1 => scatter_one(vals, entries, 1, 0, out),
            2 => scatter_one(vals, entries, 2, 0, out),
            4 => scatter_one(vals, entries, 4, 0, out),
            _ => scatter_one(vals, entries, c, 0, out),
        }
    }
    if c > 1 {
        let scale: A = sjlt.scale();
        for v in out.iter_mut() {
            *v = *v * scale;
        }
    }
    Ok(())
}

/// [`project_one`] with its `c ≥ 2` repeats in parallel: repeat `r` of every column falls in its
/// own row block `⌊r·k/c⌋ .. ⌊(r+1)·k/c⌋` of the output, so each block is one task's, summed over
/// the columns in increasing order exactly as [`project_one`] sums it (the same bits). Each task
/// reads the whole sample (`row` is called `c` times per column block in all) and hashes only its
/// repeat's entries, even when the table is cached: copying one repeat out of the table reads
/// every repeat's entries, `c` times the table in all (2²³ columns, c = 4, 2 threads: 39 ms
/// against 21.7 ms hashed; 41 ms serial).
///
/// # Errors
/// `OutOfMemory`; `Cancelled`.
pub(crate) fn project_one_by_repeat<A: Accum>(
    sjlt: &Buckets,
    n_cols: usize,
    row: impl Fn(usize, &mut [A]) + Sync,
    out: &mut [A],
    stop: &Stop,
) -> Result<()> {
    let (k, c) = (sjlt.out_dim(), sjlt.c());
    debug_assert!(out.len() == k && c >= 2);
    let ends: Vec<usize> = (1..=c).map(|r| r * k / c).collect();
    let scale: A = sjlt.scale();
    crate::parallel::try_parts_mut(out, &ends, |r, part| {
        part.fill(A::ZERO);
        let lo = r * k / c;
        let mut vals = alloc::vec_of(LBLOCK.min(n_cols), A::ZERO, "SJLT column values")?;
        let mut ebuf = Vec::new();
        for j0 in (0..n_cols).step_by(LBLOCK) {
            stop.check()?;
            let n = LBLOCK.min(n_cols - j0);
            let entries = sjlt.repeat_entries(j0, n, r, &mut ebuf)?;
            row(j0, &mut vals[..n]);
            scatter_one(&vals[..n], entries, 1, lo, part);
        }
        for v in part.iter_mut() {
            *v = *v * scale;
        }
        Ok(())
    })
}

/// `out[bucket(e) − lo] ±= v` for each value and its `c` packed entries (bucket | sign bit), in
/// order (`out` starts at bucket `lo`).
#[inline(always)]
fn scatter_one<A: Accum>(vals: &[A], entries: &[u32], c: usize, lo: usize, out: &mut [A]) {
    for (&v, col) in vals.iter().zip(entries.chunks_exact(c)) {
        for &e in col {
            out[(e & !SIGN_BIT) as usize - lo] += v.flip(e & SIGN_BIT != 0);
        }
    }
}

/// The `LANES` input rows of group `b0` (of `rows` real samples) of a row-major `(batch, p)`
/// buffer; missing lanes repeat the first row (their results are computed and discarded).
pub(crate) fn lane_rows<T>(x: &[T], p: usize, b0: usize, rows: usize) -> [&[T]; LANES] {
    std::array::from_fn(|l| {
        let r = b0 + if l < rows { l } else { 0 };
        &x[r * p..(r + 1) * p]
    })
}

/// Transposes: `xt[m][l] = src[l][col(m)]` for each `m` and lane `l`.
#[inline(always)]
pub(crate) fn gather_lanes<T: Load<A>, A: Accum>(
    src: &[&[T]; LANES],
    cols: impl Iterator<Item = usize>,
    xt: &mut [Lanes<A>],
) {
    let len = src[0].len();
    assert!(
        src.iter().all(|r| r.len() == len),
        "lane rows must have equal length"
    );
    for (d, j) in xt.iter_mut().zip(cols) {
        assert!(j < len, "column out of range");
        for l in 0..LANES {
            // SAFETY: `j < len` (asserted) and every lane row has length `len` (asserted above).
            d[l] = unsafe { *src[l].get_unchecked(j) }.load();
        }
    }
}

/// Picks the widest scatter the CPU supports.
fn scatter<A: Accum>(c: usize, entries: &[u32], xt: &[Lanes<A>], acc: &mut [Lanes<A>]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { scatter_avx512(c, entries, xt, acc) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { scatter_avx2(c, entries, xt, acc) };
        }
    }
    scatter_portable(c, entries, xt, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scatter_avx512<A: Accum>(c: usize, entries: &[u32], xt: &[Lanes<A>], acc: &mut [Lanes<A>]) {
    scatter_portable(c, entries, xt, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scatter_avx2<A: Accum>(c: usize, entries: &[u32], xt: &[Lanes<A>], acc: &mut [Lanes<A>]) {
    scatter_portable(c, entries, xt, acc);
}

/// `acc[bucket] ±= xt[m]` for each column `m` and each of its `c` entries.
///
/// Repeat-major: repeat `r` only touches the buckets of block `r` (`k/c` rows of the
/// accumulator), so each pass keeps a smaller part of `acc` hot in L1. Every bucket receives
/// contributions from one repeat only, in increasing `m` — the same order as column-major.
#[inline(always)]
fn scatter_portable<A: Accum>(c: usize, entries: &[u32], xt: &[Lanes<A>], acc: &mut [Lanes<A>]) {
    for r in 0..c {
        for (v, col) in xt.iter().zip(entries.chunks_exact(c)) {
            let e = col[r];
            let a = &mut acc[(e & !SIGN_BIT) as usize];
            let neg = e & SIGN_BIT != 0;
            for l in 0..LANES {
                a[l] += v[l].flip(neg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_in_parallel_are_the_serial_bits() {
        let mut st = 5u64;
        for (n_cols, k, c) in [
            (1usize, 8usize, 2usize),
            (300, 77, 3),
            (4097, 2048, 4),
            (70_000, 1000, 5),
            (9000, 64, 8),
            (5000, 3, 3),
        ] {
            let x: Vec<f32> = (0..n_cols)
                .map(|_| crate::micro::lcg(&mut st) as f32)
                .collect();
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v) * 1.1).collect();
            for built in [false, true] {
                let b = Buckets::new(n_cols, k, c, 0x5EED ^ n_cols as u64);
                if built {
                    b.prepare().unwrap();
                }
                let stop = Stop::current();
                let row = |j0: usize, v: &mut [f32]| v.copy_from_slice(&x[j0..j0 + v.len()]);
                let (mut want, mut got) = (vec![0f32; k], vec![f32::NAN; k]);
                project_one(&b, n_cols, row, &mut want, &stop).unwrap();
                project_one_by_repeat(&b, n_cols, row, &mut got, &stop).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{n_cols} {k} {c} table {built}");
                let row = |j0: usize, v: &mut [f64]| v.copy_from_slice(&x64[j0..j0 + v.len()]);
                let (mut want, mut got) = (vec![0f64; k], vec![f64::NAN; k]);
                project_one(&b, n_cols, row, &mut want, &stop).unwrap();
                project_one_by_repeat(&b, n_cols, row, &mut got, &stop).unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "f64 {n_cols} {k} {c} table {built}"
                );
            }
        }
    }

    #[test]
    fn blocks_cover_the_columns_in_order() {
        for n_cols in [1usize, 15, 255, 256, 257, 1000, 4096] {
            for lead in [0usize, 1, 12, 255, 256, 300] {
                let mut next = 0;
                for (i, (j0, n)) in blocks(n_cols, lead).enumerate() {
                    assert_eq!(j0, next, "n_cols {n_cols}, lead {lead}");
                    assert!(n > 0 && n <= LBLOCK);
                    if i == 0 && lead > 0 && lead < LBLOCK {
                        assert_eq!(n, lead.min(n_cols));
                    }
                    next += n;
                }
                assert_eq!(next, n_cols);
            }
        }
    }
}

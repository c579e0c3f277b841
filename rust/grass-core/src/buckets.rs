//! The hashed column structure of an SJLT (block CountSketch): repeat `r` of column `j` falls in
//! block `r` of the output, rows `⌊r·k/c⌋ .. ⌊(r+1)·k/c⌋`, at the bucket and sign drawn from
//! `hash(key, j·c + r)`. Small transforms cache every packed entry in a table, built on their first
//! projection (construction costs nothing); larger ones hash on the fly, one block of columns at a
//! time. Both give the same entries.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::Accum;
use crate::error::Result;
use crate::hash::{below, hash};
use crate::parallel;

/// Largest `in_dim · c` whose index table is cached (larger ones are hashed on the fly).
pub const TABLE_LIMIT: usize = 1 << 25;
/// Coordinates processed per block (the unit of on-the-fly index generation).
pub(crate) const BLOCK: usize = 4096;
/// Bit of a table entry that holds the sign (set = negative); defined beside the kernels that
/// read entries (`simd` sits below this module).
pub use crate::simd::SIGN_BIT;

/// The packed entries (`bucket | sign bit`) of an SJLT's `c` nonzeros per column.
#[derive(Debug, Clone)]
pub struct Buckets {
    in_dim: usize,
    out_dim: usize,
    c: usize,
    key: u64,
    /// The cached entries, once built by [`Buckets::prepare`] (small transforms only).
    table: std::sync::OnceLock<Vec<u32>>,
}

impl Buckets {
    /// The structure of `in_dim` columns into `out_dim` buckets, `c` per column, drawn from the
    /// stream `key`; the caller has validated `1 ≤ c ≤ out_dim < 2³¹` and `in_dim · c` fits.
    /// Nothing is computed or allocated here.
    pub(crate) fn new(in_dim: usize, out_dim: usize, c: usize, key: u64) -> Self {
        Self {
            in_dim,
            out_dim,
            c,
            key,
            table: std::sync::OnceLock::new(),
        }
    }

    /// Builds and caches the entry table, in parallel, when the transform is small enough
    /// (`in_dim · c ≤ TABLE_LIMIT`) and it is not built yet; callers run it on the calling thread
    /// before fanning out. Without it [`Buckets::entries`] hashes on the fly (the same entries).
    ///
    /// # Errors
    /// `OutOfMemory` when the table cannot be allocated; `Cancelled`.
    pub(crate) fn prepare(&self) -> Result<()> {
        let len = self.in_dim * self.c;
        if len > TABLE_LIMIT || self.table.get().is_some() {
            return Ok(());
        }
        let mut table = alloc::vec_of(len, 0u32, "SJLT table entries")?;
        let stop = Stop::current();
        parallel::try_chunks_mut(&mut table, BLOCK * self.c, |i, chunk| {
            stop.check()?;
            self.fill_entries(i * BLOCK, chunk);
            Ok(())
        })?;
        // Another thread may have built it meanwhile: the same entries, either one is kept.
        let _ = self.table.set(table);
        Ok(())
    }

    /// Number of columns.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Number of buckets `k`.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// Nonzeros per column.
    pub fn c(&self) -> usize {
        self.c
    }
    /// The scale of every nonzero, `1/√c`, rounded to `A`.
    pub fn scale<A: Accum>(&self) -> A {
        A::from_f64(1.0 / (self.c as f64).sqrt())
    }

    /// The packed entry (bucket | sign bit) of repeat `r` of column `j`.
    #[inline(always)]
    pub fn entry(&self, j: usize, r: usize) -> u32 {
        let (k, c) = (self.out_dim as u64, self.c as u64);
        let lo = r as u64 * k / c;
        let hi = (r as u64 + 1) * k / c;
        let h = hash(self.key, j as u64 * c + r as u64);
        let bucket = lo + below(h, hi - lo);
        bucket as u32 | ((h as u32 & 1) << 31)
    }

    /// Writes the entries of columns `j0 ..` into `out` (`c` per column, in column order).
    ///
    /// Entry `i` of `out` hashes counter `j0·c + i`; the repeat's row block depends only on
    /// `i mod c`. With AVX-512 (F + DQ) and `c` dividing 8, eight entries are hashed per vector
    /// (the same integer arithmetic, so the same entries); otherwise one at a time without
    /// divisions.
    pub(crate) fn fill_entries(&self, j0: usize, out: &mut [u32]) {
        let (k, c) = (self.out_dim as u64, self.c as u64);
        let base = j0 as u64 * c;
        #[cfg(target_arch = "x86_64")]
        {
            if 8 % c == 0
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                let lo: [u64; 8] = std::array::from_fn(|l| (l as u64 % c) * k / c);
                let span: [u64; 8] = std::array::from_fn(|l| (l as u64 % c + 1) * k / c - lo[l]);
                // SAFETY: AVX-512F and AVX-512DQ are available (checked just above).
                let done = unsafe { fill_avx512(self.key, base, 1, &lo, &span, out) };
                for (i, e) in out.iter_mut().enumerate().skip(done) {
                    let h = hash(self.key, base + i as u64);
                    let l = i % 8;
                    *e = (lo[l] + below(h, span[l])) as u32 | ((h as u32 & 1) << 31);
                }
                return;
            }
        }
        let blocks: Vec<(u64, u64)> = (0..c)
            .map(|r| (r * k / c, (r + 1) * k / c - r * k / c))
            .collect();
        let mut n = base;
        for col in out.chunks_mut(self.c) {
            for (e, &(lo, span)) in col.iter_mut().zip(&blocks) {
                let h = hash(self.key, n);
                *e = (lo + below(h, span)) as u32 | ((h as u32 & 1) << 31);
                n += 1;
            }
        }
    }

    /// Writes the entries of repeat `r` of columns `j0 ..` into `out` (one per column): entry
    /// `i` hashes counter `(j0 + i)·c + r`, all in repeat `r`'s row block. With AVX-512 (F + DQ)
    /// eight are hashed per vector (the same integer arithmetic).
    pub(crate) fn fill_repeat(&self, j0: usize, r: usize, out: &mut [u32]) {
        let (k, c) = (self.out_dim as u64, self.c as u64);
        let lo = r as u64 * k / c;
        let span = (r as u64 + 1) * k / c - lo;
        let base = j0 as u64 * c + r as u64;
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: AVX-512F and AVX-512DQ are available (checked just above).
                done = unsafe { fill_avx512(self.key, base, c, &[lo; 8], &[span; 8], out) };
            }
        }
        let mut n = base + done as u64 * c;
        for e in &mut out[done..] {
            let h = hash(self.key, n);
            *e = (lo + below(h, span)) as u32 | ((h as u32 & 1) << 31);
            n += c;
        }
    }

    /// Entries of repeat `r` of columns `j0 .. j0 + n` (one per column), hashed into `buf`
    /// ([`Buckets::fill_repeat`]; a cached table holds them interleaved with the other repeats').
    ///
    /// # Errors
    /// `OutOfMemory` when `buf` cannot grow to `n` entries.
    pub(crate) fn repeat_entries<'a>(
        &self,
        j0: usize,
        n: usize,
        r: usize,
        buf: &'a mut Vec<u32>,
    ) -> Result<&'a [u32]> {
        alloc::resize(buf, n, 0, "SJLT entries")?;
        buf.truncate(n);
        self.fill_repeat(j0, r, buf);
        Ok(buf)
    }

    /// Entries of columns `j0 .. j0 + n`: borrowed from the table or generated into `buf`.
    ///
    /// # Errors
    /// `OutOfMemory` when `buf` cannot grow to `n · c` entries.
    pub(crate) fn entries<'a>(
        &'a self,
        j0: usize,
        n: usize,
        buf: &'a mut Vec<u32>,
    ) -> Result<&'a [u32]> {
        if let Some(t) = self.table.get() {
            return Ok(&t[j0 * self.c..(j0 + n) * self.c]);
        }
        alloc::resize(buf, n * self.c, 0, "SJLT entries")?;
        buf.truncate(n * self.c);
        self.fill_entries(j0, buf);
        Ok(buf)
    }

    /// All `(bucket, negative)` pairs of column `j`.
    pub fn column(&self, j: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        (0..self.c)
            .map(move |r| self.entry(j, r))
            .map(|e| ((e & !SIGN_BIT) as usize, e & SIGN_BIT != 0))
    }
}

/// Entries `out[i] = lo[i mod 8] + below(h, span[i mod 8]) | sign` with
/// `h = hash(key, base + i·stride)`, eight at a time; returns how many were written (a multiple
/// of 8).
///
/// `below(h, m)` for `m < 2³²` is computed exactly from 32-bit halves:
/// `(h·m) >> 64 = ((h >> 32)·m + ((h mod 2³²)·m >> 32)) >> 32`.
///
/// # Safety
/// AVX-512F and AVX-512DQ must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn fill_avx512(
    key: u64,
    base: u64,
    stride: u64,
    lo: &[u64; 8],
    span: &[u64; 8],
    out: &mut [u32],
) -> usize {
    use crate::hash::GOLDEN;
    use std::arch::x86_64::{
        __m256i, _mm256_storeu_si256, _mm512_add_epi64, _mm512_and_si512, _mm512_cvtepi64_epi32,
        _mm512_loadu_si512, _mm512_mul_epu32, _mm512_mullo_epi64, _mm512_or_si512,
        _mm512_set1_epi64, _mm512_slli_epi64, _mm512_srli_epi64, _mm512_xor_si512,
    };
    let full = out.len() - out.len() % 8;
    // SAFETY: `lo` and `span` are 8 u64 each (64 bytes, unaligned loads).
    let (lo, span) = unsafe {
        (
            _mm512_loadu_si512(lo.as_ptr().cast()),
            _mm512_loadu_si512(span.as_ptr().cast()),
        )
    };
    let lane: [u64; 8] =
        std::array::from_fn(|l| (l as u64).wrapping_mul(stride).wrapping_mul(GOLDEN));
    // SAFETY: as above.
    let lane = unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) };
    let step = _mm512_set1_epi64(stride.wrapping_mul(8).wrapping_mul(GOLDEN) as i64);
    let (c1, c2) = (
        _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9u64 as i64),
        _mm512_set1_epi64(0x94D0_49BB_1331_11EBu64 as i64),
    );
    let one = _mm512_set1_epi64(1);
    // z = key + (base + 1 + i·stride)·GOLDEN for the 8 lanes of the current group.
    let start = key.wrapping_add(base.wrapping_add(1).wrapping_mul(GOLDEN));
    let mut z0 = _mm512_add_epi64(_mm512_set1_epi64(start as i64), lane);
    for i in (0..full).step_by(8) {
        let mut z = z0;
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), c1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), c2);
        z = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
        let hi = _mm512_mul_epu32(_mm512_srli_epi64::<32>(z), span);
        let lo_part = _mm512_srli_epi64::<32>(_mm512_mul_epu32(z, span));
        let q = _mm512_srli_epi64::<32>(_mm512_add_epi64(hi, lo_part));
        let sign = _mm512_slli_epi64::<31>(_mm512_and_si512(z, one));
        let e = _mm512_or_si512(_mm512_add_epi64(lo, q), sign);
        // SAFETY: `i + 8 ≤ full ≤ out.len()`: 8 u32 (32 bytes) are in bounds.
        // `storeu` has no alignment requirement, so the cast to `__m256i` is fine.
        #[allow(clippy::cast_ptr_alignment)]
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr().add(i).cast::<__m256i>(),
                _mm512_cvtepi64_epi32(e),
            );
        }
        z0 = _mm512_add_epi64(z0, step);
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_entries_match_the_definition() {
        for (in_dim, k, c) in [
            (1usize, 1usize, 1usize),
            (37, 5, 1),
            (100, 64, 2),
            (999, 2048, 4),
            (1000, 2047, 8),
            (513, 77, 3),
            (300, 10, 5),
            (50, 1 << 30, 4),
        ] {
            let b = Buckets {
                in_dim,
                out_dim: k,
                c,
                key: 0x1234_5678_9ABC_DEF0,
                table: std::sync::OnceLock::new(),
            };
            for j0 in [0usize, 1, 7, in_dim / 2]
                .into_iter()
                .filter(|&j0| j0 < in_dim)
            {
                let n = in_dim - j0;
                let mut out = vec![0u32; n * c];
                b.fill_entries(j0, &mut out);
                for (i, &e) in out.iter().enumerate() {
                    assert_eq!(e, b.entry(j0 + i / c, i % c), "{in_dim} {k} {c} {j0} {i}");
                }
                // One repeat at a time.
                for r in 0..c {
                    let mut one = vec![0u32; n];
                    b.fill_repeat(j0, r, &mut one);
                    let mut buf = Vec::new();
                    let through = b.repeat_entries(j0, n, r, &mut buf).unwrap();
                    for i in 0..n {
                        let want = b.entry(j0 + i, r);
                        assert_eq!((one[i], through[i]), (want, want), "{k} {c} {j0} r {r} {i}");
                    }
                }
            }
        }
    }
}

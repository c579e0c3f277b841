//! The hashed column structure of an SJLT (block CountSketch): repeat `r` of column `j` falls in
//! block `r` of the output, rows `⌊r·k/c⌋ .. ⌊(r+1)·k/c⌋`, at the bucket and sign drawn from
//! `hash(key, j·c + r)`. Small transforms cache every packed entry in a table; larger ones hash
//! on the fly, one block of columns at a time.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::Accum;
use crate::error::Result;
use crate::hash::{below, hash};
use crate::parallel;
use rayon::prelude::*;

/// Largest `in_dim · c` whose index table is cached (larger ones are hashed on the fly).
pub const TABLE_LIMIT: usize = 1 << 25;
/// Coordinates processed per block (the unit of on-the-fly index generation).
pub(crate) const BLOCK: usize = 4096;
/// Bit of a table entry that holds the sign (set = negative).
pub const SIGN_BIT: u32 = 1 << 31;

/// The packed entries (`bucket | sign bit`) of an SJLT's `c` nonzeros per column.
#[derive(Debug, Clone)]
pub struct Buckets {
    in_dim: usize,
    out_dim: usize,
    c: usize,
    key: u64,
    table: Option<Vec<u32>>,
}

impl Buckets {
    /// The structure of `in_dim` columns into `out_dim` buckets, `c` per column, drawn from the
    /// stream `key`; the caller has validated `1 ≤ c ≤ out_dim < 2³¹` and `in_dim · c` fits.
    ///
    /// # Errors
    /// `OutOfMemory` when the table cannot be allocated; `Cancelled`.
    pub(crate) fn new(in_dim: usize, out_dim: usize, c: usize, key: u64) -> Result<Self> {
        let mut b = Self {
            in_dim,
            out_dim,
            c,
            key,
            table: None,
        };
        let len = in_dim * c;
        if len <= TABLE_LIMIT {
            let mut table = alloc::vec_of(len, 0u32, "SJLT table entries")?;
            let stop = Stop::current();
            parallel::install(|| {
                table
                    .par_chunks_mut(BLOCK * c)
                    .enumerate()
                    .try_for_each(|(i, chunk)| {
                        stop.check()?;
                        b.fill_entries(i * BLOCK, chunk);
                        Ok(())
                    })
            })?;
            b.table = Some(table);
        }
        Ok(b)
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
    pub(crate) fn fill_entries(&self, j0: usize, out: &mut [u32]) {
        for (i, e) in out.iter_mut().enumerate() {
            *e = self.entry(j0 + i / self.c, i % self.c);
        }
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
        if let Some(t) = &self.table {
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

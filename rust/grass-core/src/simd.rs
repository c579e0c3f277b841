//! Hand-vectorized helpers (x86-64 AVX), selected at run time; every caller has a portable path.

/// The vector instruction set a kernel runs with, detected at run time (ordered: a CPU with one
/// has the ones before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64).
    Base,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Base
    }
}

/// Asks the caches for the line holding `v` (a hint: no effect on the program's results).
#[inline(always)]
pub(crate) fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only moves a line into the caches; it never faults, and `v` is a
    // valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(v).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Bit of an SJLT entry (`bucket | sign`) that holds the sign (set = negative).
pub const SIGN_BIT: u32 = 1 << 31;

/// Samples per lane group of the SJLT kernel (one 512-bit vector of `f32`).
pub const LANES: usize = 16;

/// A vector of one value per lane.
pub type Lanes<A> = [A; LANES];

/// A lane vector aligned to a cache line: a `[bucket][lane]` accumulator or a transposed block of
/// these never has a 64-byte access split across two lines (measured: an accumulator 16 bytes off
/// made SJLT c = 4 up to 1.6× slower).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct Line<A>(pub Lanes<A>);

/// Views aligned lines as plain lane vectors.
pub fn lines_mut<A>(lines: &mut [Line<A>]) -> &mut [Lanes<A>] {
    assert_eq!(
        std::mem::size_of::<Line<A>>(),
        std::mem::size_of::<Lanes<A>>(),
        "a lane vector must fill whole cache lines"
    );
    // SAFETY: `Line<A>` is `repr(C)` around one `Lanes<A>` of the same size (asserted: no
    // padding), so `lines.len()` lines are exactly `lines.len()` lane vectors, with stricter
    // alignment than `Lanes<A>` needs; the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len()) }
}

/// Views aligned lines as one flat run of values (`LANES` per line), starting on a cache line.
pub fn flat_mut<A>(lines: &mut [Line<A>]) -> &mut [A] {
    let n = lines.len() * LANES;
    // SAFETY: `Line<A>` is `repr(C)` around `LANES` values of `A` with no padding (the size check
    // of `lines_mut`), so the lines are `n` contiguous, initialized `A`s; the borrow carries over.
    unsafe { std::slice::from_raw_parts_mut(lines_mut(lines).as_mut_ptr().cast(), n) }
}

/// Transposes columns `j0 .. j0 + xt.len()` of 16 `f32` rows into `xt[m][l] = src[l][j0 + m]`.
///
/// Returns `false` (and writes nothing) when the CPU lacks AVX.
pub fn transpose_f32(src: &[&[f32]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return transpose_if(
        src,
        j0,
        xt,
        std::arch::is_x86_feature_detected!("avx"),
        transpose_avx,
    );
    #[cfg(not(target_arch = "x86_64"))]
    return transpose_if(src, j0, xt);
}

/// [`transpose_f32`] of 16 `bfloat16` rows, widened to `f32` (exactly: the 16 bits become the
/// top half of the `f32`; a signaling NaN stays signaling, where `bf16::to_f32` quiets it).
/// Returns `false` (and writes nothing) when the CPU lacks AVX2.
pub fn transpose_bf16(src: &[&[half::bf16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return transpose_if(
        src,
        j0,
        xt,
        std::arch::is_x86_feature_detected!("avx2"),
        transpose_avx2_bf16,
    );
    #[cfg(not(target_arch = "x86_64"))]
    return transpose_if(src, j0, xt);
}

/// [`transpose_f32`] of 16 IEEE-half rows, widened to `f32` by the F16C conversion (exact).
/// Returns `false` (and writes nothing) when the CPU lacks AVX or F16C.
pub fn transpose_f16(src: &[&[half::f16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return transpose_if(
        src,
        j0,
        xt,
        std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c"),
        transpose_f16c,
    );
    #[cfg(not(target_arch = "x86_64"))]
    return transpose_if(src, j0, xt);
}

/// `out[j] = x[j]` widened to `f32`, 8 at a time (the tail by `bf16::to_f32`); `false` (writing
/// nothing) without AVX2. Signaling NaNs stay signaling, as in [`transpose_bf16`].
pub fn widen_bf16(x: &[half::bf16], out: &mut [f32]) -> bool {
    assert_eq!(x.len(), out.len(), "widen: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked); the lengths match (asserted).
            unsafe { widen_avx2_bf16(x, out) };
            return true;
        }
    }
    false
}

/// `out[j] = x[j]` widened to `f32` by F16C, 8 at a time; `false` (writing nothing) without
/// AVX and F16C.
pub fn widen_f16(x: &[half::f16], out: &mut [f32]) -> bool {
    assert_eq!(x.len(), out.len(), "widen: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX and F16C are available (checked); the lengths match (asserted).
            unsafe { widen_f16c(x, out) };
            return true;
        }
    }
    false
}

/// # Safety
/// AVX2 must be available and `out.len() == x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_avx2_bf16(x: &[half::bf16], out: &mut [f32]) {
    // SAFETY: passed on.
    unsafe { widen8(x, out, half::bf16::to_f32) }
}

/// # Safety
/// AVX and F16C must be available and `out.len() == x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(x: &[half::f16], out: &mut [f32]) {
    // SAFETY: passed on.
    unsafe { widen8(x, out, half::f16::to_f32) }
}

/// # Safety
/// The CPU must have what `E::load8` uses (and AVX), and `out.len() == x.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn widen8<E: Load8>(x: &[E], out: &mut [f32], one: fn(E) -> f32) {
    let full = x.len() - x.len() % 8;
    for j in (0..full).step_by(8) {
        // SAFETY: `j + 8 ≤ len` for both slices; the features are the caller's contract.
        unsafe {
            let v = E::load8(x.as_ptr().add(j));
            std::arch::x86_64::_mm256_storeu_ps(out.as_mut_ptr().add(j), v);
        }
    }
    for j in full..x.len() {
        out[j] = one(x[j]);
    }
}

/// A transpose compiled for some target features.
#[cfg(target_arch = "x86_64")]
type TransposeFn<E> = unsafe fn(&[&[E]; LANES], usize, &mut [Lanes<f32>]);

/// Checks the rows, then runs `run` when the CPU has its target features (`has`).
#[cfg(target_arch = "x86_64")]
fn transpose_if<E>(
    src: &[&[E]; LANES],
    j0: usize,
    xt: &mut [Lanes<f32>],
    has: bool,
    run: TransposeFn<E>,
) -> bool {
    assert!(
        src.iter().all(|r| r.len() >= j0 + xt.len()),
        "lane rows too short"
    );
    if has {
        // SAFETY: the CPU has `run`'s target features (`has`, checked by the caller), and every
        // row holds columns `j0 .. j0 + xt.len()` (asserted), which is all `run` reads.
        unsafe { run(src, j0, xt) };
    }
    has
}

/// No vectorized transpose off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn transpose_if<E>(src: &[&[E]; LANES], j0: usize, xt: &mut [Lanes<f32>]) -> bool {
    assert!(
        src.iter().all(|r| r.len() >= j0 + xt.len()),
        "lane rows too short"
    );
    false
}

/// Eight consecutive values of a row, widened to a vector of `f32`.
#[cfg(target_arch = "x86_64")]
trait Load8: Copy {
    /// # Safety
    /// `p` must point to 8 readable values, and the CPU must have the instructions the
    /// implementation uses (its caller's target features).
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

#[cfg(target_arch = "x86_64")]
impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: passed on from the caller (AVX; 8 readable values).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Load8 for half::bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{
            _mm256_castsi256_ps, _mm256_cvtepu16_epi32, _mm256_slli_epi32, _mm_loadu_si128,
        };
        // SAFETY: passed on from the caller (AVX2; 8 readable 16-bit values = 16 bytes).
        unsafe {
            let h = _mm_loadu_si128(p.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Load8 for half::f16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{_mm256_cvtph_ps, _mm_loadu_si128};
        // SAFETY: passed on from the caller (AVX + F16C; 8 readable 16-bit values).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// # Safety
/// The CPU must support AVX, and each `src[l]` must hold indices `j0 .. j0 + xt.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: &[&[f32]; LANES], j0: usize, xt: &mut [Lanes<f32>]) {
    // SAFETY: passed on.
    unsafe { transpose_blocks(src, j0, xt, |v| v) }
}

/// # Safety
/// The CPU must support AVX2, and each `src[l]` must hold indices `j0 .. j0 + xt.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2_bf16(src: &[&[half::bf16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) {
    // SAFETY: passed on.
    unsafe { transpose_blocks(src, j0, xt, half::bf16::to_f32) }
}

/// # Safety
/// The CPU must support AVX and F16C, and each `src[l]` must hold indices `j0 .. j0 + xt.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn transpose_f16c(src: &[&[half::f16]; LANES], j0: usize, xt: &mut [Lanes<f32>]) {
    // SAFETY: passed on.
    unsafe { transpose_blocks(src, j0, xt, half::f16::to_f32) }
}

/// 8 × 8 blocks with unpack / shuffle / permute; the `n mod 8` tail columns one by one (`one`
/// widens a single value exactly as [`Load8::load8`] does).
///
/// # Safety
/// The CPU must support AVX and what `E::load8` uses, and each `src[l]` must hold indices
/// `j0 .. j0 + xt.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose_blocks<E: Load8>(
    src: &[&[E]; LANES],
    j0: usize,
    xt: &mut [Lanes<f32>],
    one: fn(E) -> f32,
) {
    let n = xt.len();
    let (full16, full8) = (n - n % 16, n - n % 8);
    // Columns in steps of 16 (one 64-byte line of each `f32` row) so a row's line is used up
    // while it is in L1: rows of power-of-two length all map to the same L1 set and would evict
    // each other.
    for m0 in (0..full16).step_by(16) {
        for half in 0..2 {
            // SAFETY: columns j0 + m0 .. j0 + m0 + 16 ≤ j0 + n lie inside every row.
            unsafe {
                block8(src, half, j0 + m0, &mut xt[m0..m0 + 8]);
                block8(src, half, j0 + m0 + 8, &mut xt[m0 + 8..m0 + 16]);
            }
        }
    }
    if full8 > full16 {
        for half in 0..2 {
            // SAFETY: as above, for the last full 8 columns.
            unsafe { block8(src, half, j0 + full16, &mut xt[full16..full8]) };
        }
    }
    for m in full8..n {
        for l in 0..LANES {
            xt[m][l] = one(src[l][j0 + m]);
        }
    }
}

/// Transposes columns `col .. col + 8` of rows `8·half .. 8·half + 8` into lanes
/// `8·half .. 8·half + 8` of `xt[0..8]`.
///
/// # Safety
/// AVX (and what `E::load8` uses) must be available, and every row must hold columns
/// `col .. col + 8`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block8<E: Load8>(src: &[&[E]; LANES], half: usize, col: usize, xt: &mut [Lanes<f32>]) {
    use std::arch::x86_64::{
        _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
        _mm256_unpacklo_ps,
    };
    debug_assert!(xt.len() == 8);
    let rows = &src[half * 8..half * 8 + 8];
    // Written out, not `array::from_fn`: a closure is not compiled with this function's target
    // features, and the loads' intrinsics then became calls (seen in `perf`: bf16 SJLT 3× slower).
    // SAFETY: the caller guarantees 8 readable columns from `col` in every row.
    let r = unsafe {
        [
            E::load8(rows[0].as_ptr().add(col)),
            E::load8(rows[1].as_ptr().add(col)),
            E::load8(rows[2].as_ptr().add(col)),
            E::load8(rows[3].as_ptr().add(col)),
            E::load8(rows[4].as_ptr().add(col)),
            E::load8(rows[5].as_ptr().add(col)),
            E::load8(rows[6].as_ptr().add(col)),
            E::load8(rows[7].as_ptr().add(col)),
        ]
    };
    // SAFETY (the shuffles below): AVX is available (the caller's contract).
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let cols = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (dst, c) in xt.iter_mut().zip(cols) {
            let d = &mut dst[half * 8..half * 8 + 8];
            _mm256_storeu_ps(d.as_mut_ptr(), c);
        }
    }
}

/// Sixteen consecutive values widened to `f32` in one AVX-512 register (the direct SJLT scatter).
pub(crate) trait Load16: Copy {
    /// # Safety
    /// `p` must point to 16 readable values, and the CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Load16 for f32 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: passed on from the caller (AVX-512F; 16 readable values).
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl Load16 for half::bf16 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{
            _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32, _mm512_slli_epi32,
        };
        // SAFETY: passed on from the caller (AVX-512F; 16 readable 16-bit values = 32 bytes).
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

impl Load16 for half::f16 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{_mm256_loadu_si256, _mm512_cvtph_ps};
        // SAFETY: passed on from the caller (AVX-512F, which has the 16-wide `vcvtph2ps`; 16
        // readable 16-bit values).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

/// The SJLT lane scatter read straight from 16 rows (`f32`, or 16-bit widened exactly as
/// [`transpose_bf16`] / [`transpose_f16`] do): for each column `m` of the first
/// `n − n mod 16` (`n = entries.len() / c`) and each of its `c` entries `e`,
/// `acc[bucket(e)] += ±(src[l][j0 + m])_l` — the transposed column never stored (16 columns
/// transposed in registers, then added). Every bucket gets the same additions in the same
/// order as a transpose followed by the lane scatter (its columns increasing; it belongs to one
/// repeat). Returns the columns done (0 when the CPU lacks AVX-512F).
///
/// # Panics
/// When a row is shorter than `j0 + n − n mod 16` or a bucket is `≥ acc.len()`.
pub(crate) fn scatter_rows<E: Load16>(
    src: &[&[E]; LANES],
    j0: usize,
    c: usize,
    entries: &[u32],
    acc: &mut [Lanes<f32>],
) -> usize {
    let n = entries.len() / c.max(1);
    let full = n - n % 16;
    assert!(src.iter().all(|r| r.len() >= j0 + full), "rows too short");
    #[cfg(target_arch = "x86_64")]
    {
        if full > 0 && std::arch::is_x86_feature_detected!("avx512f") {
            let e = &entries[..full * c];
            // SAFETY: AVX-512F is available (checked); every row holds `j0 + full` values.
            unsafe {
                match c {
                    1 => scatter_rows_avx512_c::<E, 1>(src, j0, e, acc),
                    2 => scatter_rows_avx512_c::<E, 2>(src, j0, e, acc),
                    4 => scatter_rows_avx512_c::<E, 4>(src, j0, e, acc),
                    8 => scatter_rows_avx512_c::<E, 8>(src, j0, e, acc),
                    _ => scatter_rows_avx512(src, j0, c, e, acc),
                }
            }
            return full;
        }
    }
    0
}

/// # Safety
/// AVX-512F must be available, `entries.len()` a multiple of `16 · c` and every row at least
/// `j0 + entries.len() / c` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_rows_avx512<E: Load16>(
    src: &[&[E]; LANES],
    j0: usize,
    c: usize,
    entries: &[u32],
    acc: &mut [Lanes<f32>],
) {
    // SAFETY: passed on.
    unsafe { scatter_rows_body(src, j0, c, entries, acc) }
}

/// [`scatter_rows_avx512`] compiled for `c = C` (the common 1, 2, 4, 8): with `c` a run-time
/// value, the per-column loop over its entries cost c = 1 its whole gain (1.87 vs 1.32 ms,
/// `floor --sjlt 1`).
///
/// # Safety
/// As [`scatter_rows_avx512`] with `c = C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_rows_avx512_c<E: Load16, const C: usize>(
    src: &[&[E]; LANES],
    j0: usize,
    entries: &[u32],
    acc: &mut [Lanes<f32>],
) {
    // SAFETY: passed on.
    unsafe { scatter_rows_body(src, j0, C, entries, acc) }
}

/// The body of [`scatter_rows_avx512`], inlined into each of its compilations.
///
/// # Safety
/// As [`scatter_rows_avx512`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scatter_rows_body<E: Load16>(
    src: &[&[E]; LANES],
    j0: usize,
    c: usize,
    entries: &[u32],
    acc: &mut [Lanes<f32>],
) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_loadu_ps,
        _mm512_set1_epi32, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
        _mm512_unpackhi_ps, _mm512_unpacklo_ps, _mm512_xor_si512,
    };
    // SAFETY: AVX-512F is available (the caller's contract), so are the intrinsics; the row
    // loads stay inside every row (at least `j0 + entries.len() / c` long, the caller's
    // contract); the accumulator is indexed with bounds checks.
    unsafe {
        for (b, es) in entries.chunks_exact(16 * c).enumerate() {
            let col = j0 + 16 * b;
            // Every row holds columns `col .. col + 16` (the caller's contract).
            let r: [__m512; 16] = [
                E::load16(src[0].as_ptr().add(col)),
                E::load16(src[1].as_ptr().add(col)),
                E::load16(src[2].as_ptr().add(col)),
                E::load16(src[3].as_ptr().add(col)),
                E::load16(src[4].as_ptr().add(col)),
                E::load16(src[5].as_ptr().add(col)),
                E::load16(src[6].as_ptr().add(col)),
                E::load16(src[7].as_ptr().add(col)),
                E::load16(src[8].as_ptr().add(col)),
                E::load16(src[9].as_ptr().add(col)),
                E::load16(src[10].as_ptr().add(col)),
                E::load16(src[11].as_ptr().add(col)),
                E::load16(src[12].as_ptr().add(col)),
                E::load16(src[13].as_ptr().add(col)),
                E::load16(src[14].as_ptr().add(col)),
                E::load16(src[15].as_ptr().add(col)),
            ];
            // Within each 128-bit lane L: pairs of rows interleaved, then rows 4i .. 4i + 4 of
            // column 4L + q in `u[4i + q]`.
            let mut t = [r[0]; 16];
            let mut u = [r[0]; 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..4 {
                u[4 * i] = _mm512_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
                u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
                u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
                u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
            }
            let mut cols = [r[0]; 16];
            for q in 0..4 {
                // The 4 × 4 transpose of 128-bit lanes across the four row groups.
                let v0 = _mm512_shuffle_f32x4::<0x44>(u[q], u[4 + q]);
                let v1 = _mm512_shuffle_f32x4::<0xEE>(u[q], u[4 + q]);
                let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + q], u[12 + q]);
                let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + q], u[12 + q]);
                cols[q] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
                cols[q + 4] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
                cols[q + 8] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
                cols[q + 12] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
            }
            // In column order: a bucket hit twice in these 16 columns sums them in order.
            for (col_entries, v) in es.chunks_exact(c).zip(cols) {
                for &e in col_entries {
                    let a = &mut acc[(e & !SIGN_BIT) as usize];
                    let sign = _mm512_set1_epi32((e & SIGN_BIT) as i32);
                    let v = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
                    // `a` is one 16-lane vector.
                    let sum = _mm512_add_ps(_mm512_loadu_ps(a.as_ptr()), v);
                    _mm512_storeu_ps(a.as_mut_ptr(), sum);
                }
            }
        }
    }
}

/// `out[j] = ±x[j]`, negated where bit `j mod 64` of `signs[j / 64]` is set, 16 at a time with
/// AVX-512 masks. Returns `false` (and writes nothing) when the CPU lacks AVX-512F.
#[inline(always)]
pub(crate) fn flip_signs_f32(signs: &[u64], x: &[f32], out: &mut [f32]) -> bool {
    let n = x.len();
    assert!(
        out.len() >= n && signs.len() * 64 >= n,
        "sign flip buffers too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked); `out` and `signs` cover `x` (asserted).
            unsafe { flip_signs_avx512(signs, x, out) };
            return true;
        }
    }
    false
}

/// # Safety
/// AVX-512F must be available, `out.len() ≥ x.len()` and `64 · signs.len() ≥ x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn flip_signs_avx512(signs: &[u64], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{
        _mm512_castps_si512, _mm512_castsi512_ps, _mm512_loadu_ps, _mm512_mask_xor_epi32,
        _mm512_set1_epi32, _mm512_storeu_ps,
    };
    let n = x.len();
    let full = n - n % 16;
    let sign = _mm512_set1_epi32(i32::MIN);
    for j in (0..full).step_by(16) {
        let mask = (signs[j / 64] >> (j % 64)) as u16;
        // SAFETY: `j + 16 ≤ n ≤ out.len()`, so both 16-lane accesses are in bounds.
        unsafe {
            let v = _mm512_castps_si512(_mm512_loadu_ps(x.as_ptr().add(j)));
            let v = _mm512_castsi512_ps(_mm512_mask_xor_epi32(v, mask, v, sign));
            _mm512_storeu_ps(out.as_mut_ptr().add(j), v);
        }
    }
    for j in full..n {
        let neg = signs[j / 64] >> (j % 64) & 1 == 1;
        out[j] = f32::from_bits(x[j].to_bits() ^ (u32::from(neg) << 31));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cache_aligned_lane_vectors() {
        let mut f = vec![Line([0f32; LANES]); 7];
        let mut d = vec![Line([0f64; LANES]); 5];
        let (vf, vd) = (lines_mut(&mut f), lines_mut(&mut d));
        assert_eq!((vf.len(), vd.len()), (7, 5));
        for (i, v) in vf.iter_mut().enumerate() {
            assert_eq!(v.as_ptr() as usize % 64, 0);
            v[LANES - 1] = i as f32;
        }
        assert_eq!(vd[4].as_ptr() as usize % 64, 0);
        assert!(f
            .iter()
            .enumerate()
            .all(|(i, l)| l.0[LANES - 1] == i as f32));
    }

    #[test]
    fn transpose_matches_scalar() {
        for n in [0usize, 1, 7, 8, 9, 31, 64] {
            let rows: Vec<Vec<f32>> = (0..LANES)
                .map(|l| (0..n + 5).map(|j| (l * 1000 + j) as f32).collect())
                .collect();
            let src: [&[f32]; LANES] = std::array::from_fn(|l| rows[l].as_slice());
            let mut xt = vec![[0f32; LANES]; n];
            if transpose_f32(&src, 3, &mut xt) {
                for (m, row) in xt.iter().enumerate() {
                    for (l, &v) in row.iter().enumerate() {
                        assert_eq!(v, rows[l][3 + m]);
                    }
                }
            }
        }
    }

    /// The 16-bit transposes widen exactly as the scalar conversions do, over every bit pattern
    /// class (normals, subnormals, ±0, ±∞, NaN) and every tail length.
    #[test]
    fn half_transposes_match_scalar_widening() {
        let bits = |l: usize, j: usize| ((l * 4099 + j * 257) as u16).wrapping_mul(40503);
        for n in [0usize, 1, 7, 8, 9, 16, 17, 31, 64, 75] {
            let h: Vec<Vec<half::f16>> = (0..LANES)
                .map(|l| {
                    (0..n + 5)
                        .map(|j| half::f16::from_bits(bits(l, j)))
                        .collect()
                })
                .collect();
            let b: Vec<Vec<half::bf16>> = (0..LANES)
                .map(|l| {
                    (0..n + 5)
                        .map(|j| half::bf16::from_bits(bits(l, j)))
                        .collect()
                })
                .collect();
            let hs: [&[half::f16]; LANES] = std::array::from_fn(|l| h[l].as_slice());
            let bs: [&[half::bf16]; LANES] = std::array::from_fn(|l| b[l].as_slice());
            let (mut xh, mut xb) = (vec![[0f32; LANES]; n], vec![[0f32; LANES]; n]);
            let ran = (
                transpose_f16(&hs, 3, &mut xh),
                transpose_bf16(&bs, 3, &mut xb),
            );
            for m in 0..n {
                for l in 0..LANES {
                    let (wh, wb) = (h[l][3 + m].to_f32(), b[l][3 + m].to_f32());
                    if ran.0 {
                        let g = xh[m][l];
                        assert!(g.to_bits() == wh.to_bits() || (g.is_nan() && wh.is_nan()));
                    }
                    if ran.1 {
                        // A signaling NaN stays signaling here (`to_f32` quiets it); any
                        // arithmetic on it quiets it the same way, so projections agree.
                        let g = xb[m][l];
                        assert!(g.to_bits() == wb.to_bits() || (g.is_nan() && wb.is_nan()));
                    }
                }
            }
        }
    }

    /// The AVX-512 direct scatter (where the CPU has it) adds exactly what a loop over columns in
    /// order adds, per lane, for `c` = 1, 2, 4 and 8 (each compiled apart) and 3 (the run-time
    /// `c`), with buckets repeated inside 16-column groups.
    #[test]
    fn direct_scatter_matches_a_column_order_loop() {
        const SIGN: u32 = SIGN_BIT;
        let (p, k, n, j0) = (80usize, 24usize, 48usize, 16usize);
        let data: Vec<f32> = (0..LANES * p)
            .map(|i| (i as f32 * 0.73).sin() * 4.0)
            .collect();
        let rows: [&[f32]; LANES] = std::array::from_fn(|l| &data[l * p..(l + 1) * p]);
        for c in [1usize, 2, 3, 4, 8] {
            let entries: Vec<u32> = (0..n * c)
                .map(|i| ((i * 7 + i / 5) % k) as u32 | if i % 3 == 0 { SIGN } else { 0 })
                .collect();
            let start: Vec<Lanes<f32>> = (0..k).map(|b| [b as f32 * 0.5; LANES]).collect();
            let mut want = start.clone();
            for m in 0..n {
                for &e in &entries[m * c..(m + 1) * c] {
                    for l in 0..LANES {
                        let v = rows[l][j0 + m];
                        want[(e & !SIGN) as usize][l] += if e & SIGN != 0 { -v } else { v };
                    }
                }
            }
            let mut acc = start.clone();
            let done = scatter_rows(&rows, j0, c, &entries, &mut acc);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                assert_eq!(done, n, "c {c}");
                assert_eq!(acc, want, "c {c}");
                continue;
            }
            assert_eq!(
                (done, &acc),
                (0, &start),
                "c {c}: nothing done without AVX-512"
            );
        }
    }
}

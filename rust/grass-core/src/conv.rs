//! FactGraSS's masked block for convolutions, fused with the im2col gather:
//!
//! `Z[b] = Σ_pos δ[b, rows, pos] ⊗ x̃_pos[b, cols]`, `(s_out, s_in [+1])` per sample, where `x̃_pos`
//! is the (bias-augmented) im2col patch at output position `pos`. Column `j = (c·kh + ky)·kw + kx`
//! of the patch at `(oy, ox)` is `x[b, c, oy·sh + ky·dh − pt, ox·sw + kx·dw − pl]`, zero outside
//! the input (zero padding). Each worker gathers a chunk of positions straight from the NCHW
//! input and the NCHW output gradient (row `r` of `δ` is contiguous over positions) into the
//! panels of [`crate::outer`], and runs the same register-blocked outer-product kernel: neither
//! the unfold, nor the padded input, nor a position-major copy of `δ` is formed.
//!
//! As in [`crate::outer`], every element of `Z` is summed over positions `0, 1, …, L−1` in that
//! order by exactly one kernel, so the result does not depend on the number of threads.
use crate::alloc;
use crate::cancel::Stop;
use crate::elem::{Accum, Load};
use crate::error::{check_len, invalid, Error, Result};
use crate::outer::{for_each_block, Panels, Sink};
use crate::parallel;
use std::ops::Range;

/// Output positions gathered per chunk (as [`crate::outer`]'s token chunks).
const CHUNK: usize = 128;

/// The geometry of a [`conv_masked_outer`] call: a 2-D convolution (a 1-D one has `h = kh = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Samples.
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height (unpadded: the padding is `pad`, applied on the fly).
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (rows of `δ`).
    pub c_out: usize,
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
    /// Kernel `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Stride `(sh, sw)`, each `≥ 1`.
    pub stride: (usize, usize),
    /// Dilation `(dh, dw)`, each `≥ 1`.
    pub dilation: (usize, usize),
    /// Zero padding before the input `(top, left)` (the bottom / right amounts only set
    /// `h_out` / `w_out`).
    pub pad: (usize, usize),
}

impl ConvShape {
    /// Output positions per sample, `h_out · w_out`.
    fn positions(&self) -> Result<usize> {
        self.h_out
            .checked_mul(self.w_out)
            .ok_or(Error::TooLarge { what: "positions" })
    }
}

/// `out[b] = Σ_pos go[b, rows, pos] ⊗ [patch_pos(x[b])[cols], 1 if bias]`, row-major
/// `(len(rows), len(cols) + bias)` per sample.
///
/// `go` is row-major `(batch, c_out, h_out · w_out)` (the NCHW output gradient), `x`
/// `(batch, c_in, h, w)` (the NCHW input, unpadded); `rows` index `c_out`, `cols` index the
/// im2col columns `c_in · kh · kw` (any order, repeats allowed); `bias` appends the bias column
/// (`Σ_pos δ[rows, pos]`) last.
///
/// # Errors
/// `Shape` when a buffer's length does not match; `InvalidArgument` for an out-of-range index or
/// a zero kernel size, stride or dilation.
pub fn conv_masked_outer<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: ConvShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    out: &mut [A],
) -> Result<()> {
    conv_masked_outer_into(go, x, shape, rows, cols, bias, Sink::Blocks(out))
}

/// [`conv_masked_outer`] into any [`Sink`] (with [`Sink::Projected`], each block projected in the
/// same pass).
///
/// # Errors
/// As [`conv_masked_outer`], and as [`Sink::check`].
pub fn conv_masked_outer_into<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: ConvShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    sink: Sink<'_, A>,
) -> Result<()> {
    let threads = parallel::get_num_threads();
    conv_masked_outer_split(go, x, shape, rows, cols, bias, sink, threads)
}

/// One im2col column: `x[b]`'s channel offset, the row / column offsets of its tap, and its flat
/// offset `chan + dy·w + dx` from the position's top-left input element.
#[derive(Clone, Copy)]
struct Tap {
    chan: usize,
    dy: isize,
    dx: isize,
    off: isize,
}

/// [`conv_masked_outer`] with the work split for `threads` workers (the result does not depend on it).
#[allow(clippy::too_many_arguments)]
fn conv_masked_outer_split<T: Load<A>, A: Accum + Load<A>>(
    go: &[T],
    x: &[T],
    shape: ConvShape,
    rows: &[usize],
    cols: &[usize],
    bias: bool,
    sink: Sink<'_, A>,
    threads: usize,
) -> Result<()> {
    let s = shape;
    let ((kh, kw), (sh, sw), (dh, dw)) = (s.kernel, s.stride, s.dilation);
    if [kh, kw, sh, sw, dh, dw].contains(&0) {
        return Err(invalid(
            "shape",
            "kernel sizes, strides and dilations must be ≥ 1",
        ));
    }
    let positions = s.positions()?;
    let plane = s.h.checked_mul(s.w).ok_or(Error::TooLarge { what: "x" })?;
    let bc_out = s.batch.checked_mul(s.c_out);
    let bc_in = s.batch.checked_mul(s.c_in);
    let (bc_out, bc_in) = (
        bc_out.ok_or(Error::TooLarge { what: "go" })?,
        bc_in.ok_or(Error::TooLarge { what: "x" })?,
    );
    check_len("go", go.len(), bc_out, positions)?;
    check_len("x", x.len(), bc_in, plane)?;
    let n = cols.len() + usize::from(bias);
    sink.check(s.batch, rows.len(), n)?;
    if let Some(&bad) = rows.iter().find(|&&i| i >= s.c_out) {
        return Err(invalid(
            "rows",
            format!("index {bad} is out of range for c_out = {}", s.c_out),
        ));
    }
    let d_in = s.c_in.saturating_mul(kh).saturating_mul(kw);
    if let Some(&bad) = cols.iter().find(|&&i| i >= d_in) {
        return Err(invalid(
            "cols",
            format!("index {bad} is out of range for c_in · kh · kw = {d_in}"),
        ));
    }
    let taps = make_taps(&s, plane, cols)?;
    let rows_in = inner(s.h_out, sh, s.h, taps.iter().map(|t| t.dy));
    let cols_in = inner(s.w_out, sw, s.w, taps.iter().map(|t| t.dx));
    let work = s
        .batch
        .saturating_mul(positions)
        .saturating_mul(rows.len() + cols.len())
        .saturating_add(s.batch.saturating_mul(rows.len()).saturating_mul(n));
    let job = Job {
        go,
        x,
        shape: s,
        positions,
        plane,
        rows,
        taps: &taps,
        rows_in,
        cols_in,
        bias,
        stop: Stop::current(),
    };
    for_each_block(
        sink,
        s.batch,
        rows.len(),
        n,
        work,
        threads,
        |b, r0, z, scratch| job.run(b, r0, z, scratch),
    )
}

/// The taps of the im2col columns `cols` (each `< c_in · kh · kw`, checked by the caller).
///
/// # Errors
/// `TooLarge` when an offset or input coordinate would not fit in `isize`.
fn make_taps(s: &ConvShape, plane: usize, cols: &[usize]) -> Result<Vec<Tap>> {
    let ((kh, kw), (sh, sw), (dh, dw)) = (s.kernel, s.stride, s.dilation);
    let too_large = || Error::TooLarge {
        what: "conv geometry",
    };
    // The farthest reach of the kernel, `(out − 1)·stride + (k − 1)·dilation`, and the padding
    // fit in `isize`; then so does every `o·stride + k·dilation − pad` below.
    let reach = |out: usize, st: usize, k: usize, d: usize, p: usize| {
        let far = out
            .saturating_sub(1)
            .checked_mul(st)
            .zip((k - 1).checked_mul(d))
            .and_then(|(a, b)| a.checked_add(b));
        far.is_some_and(|f| isize::try_from(f).is_ok()) && isize::try_from(p).is_ok()
    };
    if !(reach(s.h_out, sh, kh, dh, s.pad.0) && reach(s.w_out, sw, kw, dw, s.pad.1)) {
        return Err(too_large());
    }
    let (pt, pl) = (s.pad.0 as isize, s.pad.1 as isize);
    let w = isize::try_from(s.w).map_err(|_| too_large())?;
    let mut taps: Vec<Tap> = alloc::with_capacity(cols.len(), "im2col taps")?;
    for &j in cols {
        let (c, rest) = (j / (kh * kw), j % (kh * kw));
        let (ky, kx) = (rest / kw, rest % kw);
        // No overflow: `ky·dh ≤ (kh − 1)·dh` and `kx·dw` fit in `isize` (checked above).
        let (dy, dx) = ((ky * dh) as isize - pt, (kx * dw) as isize - pl);
        let off = isize::try_from(c * plane)
            .ok()
            .zip(dy.checked_mul(w))
            .and_then(|(a, b)| a.checked_add(b)?.checked_add(dx))
            .ok_or_else(too_large)?;
        taps.push(Tap {
            chan: c * plane,
            dy,
            dx,
            off,
        });
    }
    Ok(taps)
}

/// The output rows (or columns) `o < out` where every tap offset `d` in `ds` puts `o·st + d`
/// inside `[0, size)`: there the gather needs no bounds tests.
fn inner(out: usize, st: usize, size: usize, ds: impl Iterator<Item = isize>) -> Range<usize> {
    // Starting the fold from 0 only narrows the range: every tap is still inside.
    let (lo, hi) = ds.fold((0isize, 0isize), |(lo, hi), d| (lo.min(d), hi.max(d)));
    let first = lo.unsigned_abs().div_ceil(st);
    // The last `o·st` in range is `≤ size − 1 − hi` (`size` fits in `isize`: it is a slice length).
    let room = size as isize - 1 - hi;
    let end = usize::try_from(room).map_or(0, |r| (r / st + 1).min(out));
    first..end.max(first)
}

/// One call's inputs, shared by all work items.
struct Job<'a, T> {
    go: &'a [T],
    x: &'a [T],
    shape: ConvShape,
    positions: usize,
    plane: usize,
    rows: &'a [usize],
    taps: &'a [Tap],
    rows_in: Range<usize>,
    cols_in: Range<usize>,
    bias: bool,
    /// The calling thread's cancellation flag (pool threads have none of their own).
    stop: Stop,
}

impl<T> Job<'_, T> {
    /// Rows `r0 .. r0 + z.len() / n` of sample `b`'s block, chunk by chunk of positions.
    fn run<A: Accum>(&self, b: usize, r0: usize, z: &mut [A], scratch: &mut Vec<A>) -> Result<()>
    where
        T: Load<A>,
    {
        let s = &self.shape;
        let n = self.taps.len() + usize::from(self.bias);
        let rows = &self.rows[r0..r0 + z.len() / n];
        let chunk = CHUNK.min(self.positions);
        let mut p = Panels::new(scratch, chunk, rows.len(), n, self.bias)?;
        let (m_pad, n_pad) = (p.m_pad, p.n_pad);
        let go = &self.go[b * s.c_out * self.positions..][..s.c_out * self.positions];
        let x = &self.x[b * s.c_in * self.plane..][..s.c_in * self.plane];
        for t0 in (0..self.positions).step_by(chunk) {
            self.stop.check()?;
            let tc = chunk.min(self.positions - t0);
            // δ: row `r` is contiguous over positions. Eight rows at a time are read in order
            // and written as one short run per token (eight read streams stay within the L1
            // associativity even when the rows are a power of two apart).
            let mut groups = rows.chunks_exact(8);
            for (g, rs) in (&mut groups).enumerate() {
                let src: [&[T]; 8] =
                    std::array::from_fn(|k| &go[rs[k] * self.positions + t0..][..tc]);
                for (t, arow) in p.ap.chunks_exact_mut(m_pad).take(tc).enumerate() {
                    for (d, s8) in arow[8 * g..8 * g + 8].iter_mut().zip(&src) {
                        *d = s8[t].load();
                    }
                }
            }
            let done = rows.len() - groups.remainder().len();
            for (i, &r) in groups.remainder().iter().enumerate() {
                let src = &go[r * self.positions + t0..][..tc];
                for (arow, v) in p.ap.chunks_exact_mut(m_pad).zip(src) {
                    arow[done + i] = v.load();
                }
            }
            // Patches: row `t` of `bp` is the patch at position `t0 + t` (its kept columns).
            let (w_out, w) = (s.w_out, s.w);
            let (sh, sw) = s.stride;
            let (mut oy, mut ox) = (t0 / w_out, t0 % w_out);
            for brow in p.bp.chunks_exact_mut(n_pad).take(tc) {
                if self.rows_in.contains(&oy) && self.cols_in.contains(&ox) {
                    // Every tap is inside the input here: `base + off` is in `0 .. plane·c_in`.
                    let base = oy * sh * w + ox * sw;
                    for (d, tap) in brow.iter_mut().zip(self.taps) {
                        *d = x[base.wrapping_add_signed(tap.off)].load();
                    }
                } else {
                    let (y0, x0) = ((oy * sh) as isize, (ox * sw) as isize);
                    for (d, tap) in brow.iter_mut().zip(self.taps) {
                        let (iy, ix) = (y0 + tap.dy, x0 + tap.dx);
                        let inside =
                            (0..s.h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                        *d = if inside {
                            x[tap.chan + iy as usize * w + ix as usize].load()
                        } else {
                            A::ZERO
                        };
                    }
                }
                ox += 1;
                if ox == w_out {
                    (oy, ox) = (oy + 1, 0);
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

    /// The definition, in float64 with plain loops over the zero-padded input.
    fn reference(
        go: &[f64],
        x: &[f64],
        s: ConvShape,
        rows: &[usize],
        cols: &[usize],
        bias: bool,
    ) -> Vec<f64> {
        let ((kh, kw), (sh, sw), (dh, dw)) = (s.kernel, s.stride, s.dilation);
        let l = s.h_out * s.w_out;
        let n = cols.len() + usize::from(bias);
        let mut z = vec![0.0; s.batch * rows.len() * n];
        for b in 0..s.batch {
            for pos in 0..l {
                let (oy, ox) = (pos / s.w_out, pos % s.w_out);
                for (m, &r) in rows.iter().enumerate() {
                    let g = go[(b * s.c_out + r) * l + pos];
                    for j in 0..n {
                        let xv = if j < cols.len() {
                            let col = cols[j];
                            let (c, ky, kx) = (col / (kh * kw), col / kw % kh, col % kw);
                            let iy = (oy * sh + ky * dh) as isize - s.pad.0 as isize;
                            let ix = (ox * sw + kx * dw) as isize - s.pad.1 as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                0.0
                            } else {
                                x[((b * s.c_in + c) * s.h + iy as usize) * s.w + ix as usize]
                            }
                        } else {
                            1.0
                        };
                        z[(b * rows.len() + m) * n + j] += g * xv;
                    }
                }
            }
        }
        z
    }

    fn data(s: ConvShape, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut st = seed;
        let go = (0..s.batch * s.c_out * s.h_out * s.w_out)
            .map(|_| lcg(&mut st))
            .collect();
        let x = (0..s.batch * s.c_in * s.h * s.w)
            .map(|_| lcg(&mut st))
            .collect();
        (go, x)
    }

    fn out_size(s: &mut ConvShape, pad_after: (usize, usize)) {
        let ((kh, kw), (sh, sw), (dh, dw)) = (s.kernel, s.stride, s.dilation);
        s.h_out = (s.h + s.pad.0 + pad_after.0 - dh * (kh - 1) - 1) / sh + 1;
        s.w_out = (s.w + s.pad.1 + pad_after.1 - dw * (kw - 1) - 1) / sw + 1;
    }

    fn case(s: ConvShape, rows: &[usize], cols: &[usize], bias: bool) {
        let (go, x) = data(s, 5);
        let want = reference(&go, &x, s, rows, cols, bias);
        let n = cols.len() + usize::from(bias);
        for threads in [1, 2, 5] {
            let mut z = vec![f64::NAN; s.batch * rows.len() * n];
            conv_masked_outer_split(&go, &x, s, rows, cols, bias, Sink::Blocks(&mut z), threads)
                .unwrap();
            for (g, w) in z.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                    "{s:?}: {g} vs {w}"
                );
            }
        }
        let go32: Vec<f32> = go.iter().map(|&v| v as f32).collect();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut z32 = vec![f32::NAN; want.len()];
        conv_masked_outer(&go32, &x32, s, rows, cols, bias, &mut z32).unwrap();
        let tol = 1e-5 * ((s.h_out * s.w_out) as f64).sqrt();
        for (g, w) in z32.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= tol, "{g} vs {w}");
        }
    }

    fn shape(c_in: usize, hw: (usize, usize), c_out: usize, k: (usize, usize)) -> ConvShape {
        ConvShape {
            batch: 3,
            c_in,
            h: hw.0,
            w: hw.1,
            c_out,
            h_out: 0,
            w_out: 0,
            kernel: k,
            stride: (1, 1),
            dilation: (1, 1),
            pad: (0, 0),
        }
    }

    #[test]
    fn matches_the_definition() {
        // (stride, dilation, pad before, pad after)
        type Geo = (
            (usize, usize),
            (usize, usize),
            (usize, usize),
            (usize, usize),
        );
        let geos: [Geo; 6] = [
            ((1, 1), (1, 1), (0, 0), (0, 0)),
            ((1, 1), (1, 1), (1, 1), (1, 1)),
            ((2, 3), (1, 1), (2, 1), (2, 0)),
            ((1, 2), (2, 3), (3, 2), (1, 4)),
            ((3, 1), (2, 1), (0, 5), (4, 5)), // padding wider than the kernel reach
            ((2, 2), (1, 1), (1, 0), (0, 1)),
        ];
        for (stride, dilation, pad, after) in geos {
            let mut s = shape(5, (13, 17), 11, (3, 4));
            (s.stride, s.dilation, s.pad) = (stride, dilation, pad);
            out_size(&mut s, after);
            let rows = [0, 3, 4, 7, 10, 2, 9];
            let cols: Vec<usize> = (0..60).step_by(3).chain([59, 0, 0]).collect();
            for bias in [false, true] {
                case(s, &rows, &cols, bias);
            }
        }
        // Many positions (several chunks, partial last one), a 1-D convolution, a 1 × 1 kernel.
        let mut big = shape(2, (23, 29), 20, (3, 3));
        big.pad = (1, 1);
        out_size(&mut big, (1, 1));
        case(
            big,
            &(0..20).collect::<Vec<_>>(),
            &(0..18).collect::<Vec<_>>(),
            true,
        );
        let mut one_d = shape(4, (1, 300), 6, (1, 5));
        (one_d.stride, one_d.dilation, one_d.pad) = ((1, 2), (1, 3), (0, 2));
        out_size(&mut one_d, (0, 1));
        case(one_d, &[5, 1], &[19, 0, 7, 12], true);
        let mut pointwise = shape(7, (4, 5), 3, (1, 1));
        out_size(&mut pointwise, (0, 0));
        case(pointwise, &[2], &[6, 0], false);
        case(pointwise, &[0, 1, 2], &[], true);
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let mut s = shape(16, (32, 32), 64, (3, 3));
        s.batch = 2;
        s.pad = (1, 1);
        out_size(&mut s, (1, 1));
        let (go, x) = data(s, 9);
        let go: Vec<f32> = go.iter().map(|&v| v as f32).collect();
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let rows: Vec<usize> = (0..64).rev().collect();
        let cols: Vec<usize> = (0..144).step_by(4).collect();
        let run = |threads: usize| {
            let mut z = vec![0f32; 2 * 64 * 37];
            conv_masked_outer_split(
                &go,
                &x,
                s,
                &rows,
                &cols,
                true,
                Sink::Blocks(&mut z),
                threads,
            )
            .unwrap();
            z
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(7));
    }

    #[test]
    fn stops_when_cancelled() {
        let mut s = shape(2, (9, 9), 4, (3, 3));
        out_size(&mut s, (0, 0));
        let (go, x) = data(s, 1);
        let mut z = vec![0.0; 3 * 4 * 5];
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = crate::cancel::with_flag(&flag, || {
            conv_masked_outer_split(
                &go,
                &x,
                s,
                &[0, 1, 2, 3],
                &[0, 5, 9, 17, 2],
                false,
                Sink::Blocks(&mut z),
                2,
            )
        });
        assert!(matches!(r, Err(Error::Cancelled)));
    }

    #[test]
    fn rejects_bad_input() {
        let mut s = shape(2, (3, 3), 2, (2, 2));
        s.batch = 1;
        out_size(&mut s, (0, 0));
        let (go, x) = (vec![0f32; 8], vec![0f32; 18]);
        let mut z = vec![0f32; 2];
        assert!(matches!(
            conv_masked_outer(&go, &x, s, &[2], &[0], true, &mut z),
            Err(Error::InvalidArgument { name: "rows", .. })
        ));
        assert!(matches!(
            conv_masked_outer(&go, &x, s, &[0], &[8], true, &mut z),
            Err(Error::InvalidArgument { name: "cols", .. })
        ));
        assert!(matches!(
            conv_masked_outer(&go, &x, s, &[0], &[1], false, &mut z),
            Err(Error::Shape { what: "out", .. })
        ));
        assert!(matches!(
            conv_masked_outer(&go[..7], &x, s, &[0], &[1], true, &mut z),
            Err(Error::Shape { what: "go", .. })
        ));
        assert!(matches!(
            conv_masked_outer(&go, &x[..17], s, &[0], &[1], true, &mut z),
            Err(Error::Shape { what: "x", .. })
        ));
        let mut zero = s;
        zero.stride = (0, 1);
        assert!(matches!(
            conv_masked_outer(&go, &x, zero, &[0], &[1], true, &mut z),
            Err(Error::InvalidArgument { name: "shape", .. })
        ));
    }
}

//! The memory floor of the masked gathers (issue 14): how fast can *any* code touch the cache lines
//! that MASK / GraSS must read, on this CPU?
//!
//! `cargo bench -p grass-core --bench floor [-- --reps 15]` prints, for MASK k' = 8192 and 2048 of
//! 2¹⁷ (batch 64, 32 MiB, L3-resident once warm) and GraSS's mask k' = 8192 of 2²³ (batch 64, 2 GiB,
//! from DRAM), on 1 and 2 threads, median [min–max] over the repetitions of:
//! - `sum`: the read floor, one vectorized pass over the whole input (the `x.sum()` of compare.py);
//! - `lines`: a pass that loads **one float from each cache line the mask touches**, in memory order,
//!   four rows at a time (the least any gather with this mask can read: every touched line must
//!   come in);
//! - `every line`: one float of **every** line, four rows at a time in memory order (the whole
//!   input streamed: on a VM whose DRAM serves a few streams per core faster than one, this beats
//!   the one-stream `sum`, and at high mask densities it beats `lines` too);
//! - `lines+stream`: `lines`, also prefetching every line 4 ahead (what grass-rs's streamed
//!   gathers do, `mask::Lines::Stream`);
//! - `lines+ahead`: `lines`, also prefetching the touched line 8 or 32 positions further on in
//!   each row (more misses in flight than the out-of-order window keeps);
//! - `grass-rs`: grass-core's own gather (`Mask::project`; GraSS's fused mask + SJLT at 2²³).
//!
//! `--mask K`, `--grass17` and `--grass23` time one gather alone (for A/B runs of two builds);
//! `--grass23` also times it and its touched lines *cold* (evicted before each call, as for a
//! gradient not just read: a large L3 otherwise holds the 32 MiB of touched lines). `--outer`
//! times FactGraSS's masked block, the same floors over its two factors (together and each
//! apart) and its multiply-adds at the measured FMA peak; `--sjlt-one` the SJLT
//! of one sample that FactGraSS's workers run on each block; `--chase` the random cache lines one
//! core can bring in per second (the misses it keeps in flight).
//!
//! `lines / sum` is the physical floor of the gather's ratio to the read floor on this machine; the
//! issue's line-count estimate (~0.63× at k' = 8192) assumes a touched line streams at the sequential
//! rate, which the `lines` row measures instead of assuming.
use grass_core::{Grass, Mask, Projection};
use std::hint::black_box;
use std::time::Instant;

const B: usize = 64;

/// `n` deterministic input values starting on a cache line, as torch allocates (a `Vec<f32>` of
/// this size comes from `mmap` 16 bytes past a page start: half of its 32-byte loads would split
/// across two lines, and the SJLT transposes measured ~1.5× slower than on torch's tensors).
struct Input(Vec<f32>, usize);

impl std::ops::Deref for Input {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0[self.1..]
    }
}

fn input(n: usize, period: usize) -> Input {
    let mut v = vec![0f32; n + 16];
    let off = (64 - v.as_ptr() as usize % 64) % 64 / 4;
    for (i, d) in v[off..off + n].iter_mut().enumerate() {
        *d = (i % period) as f32 * 1e-3;
    }
    v.truncate(off + n);
    Input(v, off)
}

/// One vectorizable pass summing into 16 independent lanes.
fn floor_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ch in v.chunks_exact(16) {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += x;
        }
    }
    acc.iter().sum()
}

/// Sums one float of each line in `lines` (line indices within a row, increasing) of every row,
/// four rows at a time (four independent streams of misses, as grass-rs's gather runs).
fn touch_lines(x: &[f32], p: usize, lines: &[usize]) -> f32 {
    let mut acc = [0f32; 4];
    for rows in x.chunks(4 * p) {
        let r: Vec<&[f32]> = rows.chunks_exact(p).collect();
        if r.len() == 4 {
            for &l in lines {
                for (a, row) in acc.iter_mut().zip(&r) {
                    *a += row[l * 16];
                }
            }
        } else {
            for row in r {
                for &l in lines {
                    acc[0] += row[l * 16];
                }
            }
        }
    }
    acc.iter().sum()
}

/// [`touch_lines`], and also prefetching every line `ahead` lines in front (untouched ones
/// included), so that the rows stream in memory order.
fn touch_lines_stream(x: &[f32], p: usize, lines: &[usize], ahead: usize) -> f32 {
    let mut acc = [0f32; 4];
    for rows in x.chunks(4 * p) {
        let r: Vec<&[f32]> = rows.chunks_exact(p).collect();
        if r.len() == 4 {
            let mut next = 0;
            for &l in lines {
                while next <= (l + ahead).min(p / 16 - 1) {
                    for row in &r {
                        prefetch(&row[next * 16]);
                    }
                    next += 1;
                }
                for (a, row) in acc.iter_mut().zip(&r) {
                    *a += row[l * 16];
                }
            }
        }
    }
    acc.iter().sum()
}

/// [`touch_lines`], also prefetching the touched line `ahead` positions further on in `lines`
/// (in every one of the four rows): more misses in flight than the out-of-order window holds.
fn touch_lines_ahead(x: &[f32], p: usize, lines: &[usize], ahead: usize) -> f32 {
    let mut acc = [0f32; 4];
    for rows in x.chunks(4 * p) {
        let r: Vec<&[f32]> = rows.chunks_exact(p).collect();
        if r.len() == 4 {
            for (j, &l) in lines.iter().enumerate() {
                if let Some(&f) = lines.get(j + ahead) {
                    for row in &r {
                        prefetch(&row[f * 16]);
                    }
                }
                for (a, row) in acc.iter_mut().zip(&r) {
                    *a += row[l * 16];
                }
            }
        }
    }
    acc.iter().sum()
}

/// A pass over the touched lines of `(x, p, lines, ahead)` ([`touch_lines_stream`] or
/// [`touch_lines_ahead`]).
type LinePass = fn(&[f32], usize, &[usize], usize) -> f32;

/// Asks for the cache line holding `v`.
fn prefetch(v: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only moves a line into the caches and never faults; `v` is a reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(v).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Runs `f` on `threads` threads (a persistent rayon pool: no thread start inside the timing),
/// each over its share of the rows.
fn split(x: &[f32], p: usize, threads: usize, f: impl Fn(&[f32]) -> f32 + Sync) -> f32 {
    use rayon::prelude::*;
    thread_local! {
        static POOLS: std::cell::RefCell<Vec<rayon::ThreadPool>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let rows = (x.len() / p).div_ceil(threads);
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        while pools.len() < threads {
            let n = pools.len() + 1;
            pools.push(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            );
        }
        pools[threads - 1].install(|| x.par_chunks(rows * p).map(&f).sum())
    })
}

fn time(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

fn cell(t: &[f64], base: f64) -> String {
    let med = t[t.len() / 2];
    format!(
        "{med:8.3} ms [{:.3}–{:.3}] {:5.2}×",
        t[0],
        t[t.len() - 1],
        med / base
    )
}

fn case(name: &str, p: usize, k: usize, reps: usize) {
    let x = input(B * p, 1021);
    let mask = Mask::new(p, k, 0, false).unwrap();
    let mut lines: Vec<usize> = mask.indices().iter().map(|&j| j / 16).collect();
    lines.dedup();
    let gb = (B * p * 4) as f64 / 1e9;
    println!(
        "\n{name}: batch {B} × p {p} f32 ({gb:.2} GB), mask k' = {k} touches {} of {} lines per row ({:.1} %)",
        lines.len(),
        p / 16,
        100.0 * lines.len() as f64 / (p / 16) as f64
    );
    for threads in [1usize, 2] {
        let sum = time(reps, || {
            black_box(split(&x, p, threads, floor_sum));
        });
        let base = sum[sum.len() / 2];
        let touch = time(reps, || {
            black_box(split(&x, p, threads, |part| touch_lines(part, p, &lines)));
        });
        let every: Vec<usize> = (0..p / 16).collect();
        let all = time(reps, || {
            black_box(split(&x, p, threads, |part| touch_lines(part, p, &every)));
        });
        println!("  {threads} thread(s)  every line {}", cell(&all, base));
        let variants: [(&str, usize, LinePass); 5] = [
            ("stream", 4, touch_lines_stream),
            ("stream", 16, touch_lines_stream),
            ("stream", 64, touch_lines_stream),
            ("ahead", 8, touch_lines_ahead),
            ("ahead", 32, touch_lines_ahead),
        ];
        for (name, ahead, pass) in variants {
            let st = time(reps, || {
                black_box(split(&x, p, threads, |part| pass(part, p, &lines, ahead)));
            });
            println!(
                "  {threads} thread(s)  lines+{name}({ahead}) {}",
                cell(&st, base)
            );
        }
        let line_gbs = (B * lines.len() * 64) as f64 / 1e6 / touch[touch.len() / 2];
        println!(
            "  {threads} thread(s)  sum {}  ({:.1} GB/s) | lines {} ({line_gbs:.1} GB/s of touched lines)",
            cell(&sum, base),
            gb / base * 1e3,
            cell(&touch, base)
        );
        if threads == 2 {
            grass_core::parallel::set_num_threads(2).unwrap();
            let own = if p > 1 << 20 {
                let g = Grass::new(p, 2048, k, 1, 0).unwrap();
                let mut out = vec![0f32; B * 2048];
                time(reps, || g.project(&x, B, &mut out).unwrap())
            } else {
                let mut out = vec![0f32; B * k];
                time(reps, || mask.project(&x, B, &mut out).unwrap())
            };
            println!("  2 threads  grass-rs {}", cell(&own, base));
        }
    }
}

/// `--sjlt C REPS`: only SJLT c = C projections of the 64 × 2¹⁷ input (for instruction counts
/// under callgrind: `valgrind --tool=callgrind target/release/deps/floor-* --sjlt 1 3`).
fn sjlt_only(c: usize, reps: usize) {
    let p = 1 << 17;
    let x = input(B * p, 1021);
    let s = grass_core::Sjlt::new(p, 2048, c, 0).unwrap();
    let mut out = vec![0f32; B * 2048];
    for _ in 0..reps {
        s.project(&x, B, &mut out).unwrap();
    }
    black_box(&out);
    if std::env::var("SJLT_TIME").is_ok() {
        let sum = time(21, || {
            black_box(split(
                &x,
                p,
                grass_core::parallel::get_num_threads(),
                floor_sum,
            ));
        });
        let t = time(21, || s.project(&x, B, &mut out).unwrap());
        println!("SJLT c={c}: {}", cell(&t, sum[sum.len() / 2]));
    }
}

/// `--sjlt-one`: the SJLT 2¹⁴ → 4096 of one sample (FactGraSS's per-worker projection of a
/// 128 × 128 block) for c = 1, 2, 3, one thread, median [min–max] µs of 3000 calls.
fn sjlt_one() {
    let x: Vec<f32> = (0..1 << 14).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; 4096];
    for c in [1, 2, 3] {
        let s = grass_core::Sjlt::new(1 << 14, 4096, c, 3).unwrap();
        let t = time(3000, || s.project(&x, 1, &mut y).unwrap());
        let sum: f64 = y.iter().map(|&v| f64::from(v)).sum();
        let (m, lo, hi) = (t[t.len() / 2] * 1e3, t[0] * 1e3, t[t.len() - 1] * 1e3);
        println!(
            "SJLT 2^14 -> 4096 of one sample, c={c}: {m:.2} µs [{lo:.2}–{hi:.2}] (checksum {sum})"
        );
    }
}

/// `--srht REPS`: SRHT 2¹⁷ → 2048 of the 64 × 2¹⁷ input on 2 threads, median [min–max] and × the
/// 2-thread read floor, for before/after comparisons of the transform.
fn srht_only(reps: usize) {
    let p = 1 << 17;
    let x = input(B * p, 1021);
    grass_core::parallel::set_num_threads(2).unwrap();
    let s = grass_core::Srht::new(p, 2048, 0).unwrap();
    let mut out = vec![0f32; B * 2048];
    let sum = time(reps, || {
        black_box(split(&x, p, 2, floor_sum));
    });
    let t = time(reps, || s.project(&x, B, &mut out).unwrap());
    println!(
        "SRHT 2^17 -> 2048, batch {B}, 2 threads: {}",
        cell(&t, sum[sum.len() / 2])
    );
}

/// `--outer`: FactGraSS's masked block on GPT-2-small MLP factors (batch 8 × 512 tokens,
/// 3072 × 768, 128 × 128 kept, with and without the bias column) on the default threads, median
/// [min–max] ms; its floors are × the first.
fn outer_only(reps: usize) {
    use grass_core::outer::{masked_outer, OuterShape};
    let s = OuterShape {
        batch: 8,
        tokens: 512,
        d_out: 3072,
        d_in: 768,
    };
    let go = input(8 * 512 * 3072, 1021);
    let x = input(8 * 512 * 768, 1013);
    let rows = Mask::new(3072, 128, 1, false).unwrap().indices().to_vec();
    let cols = Mask::new(768, 128, 2, false).unwrap().indices().to_vec();
    let mut z = vec![0f32; 8 * 128 * 129];
    // With the bias column appended, then without (FactGraSS's mask over `d_in + 1` columns keeps
    // the bias one in about 1 layer of 6: 128 / 769).
    let mut med = 0.0;
    for bias in [true, false] {
        let z = &mut z[..8 * 128 * (128 + usize::from(bias))];
        let t = time(reps, || {
            masked_outer(&go, &x, s, &rows, &cols, bias, z).unwrap();
        });
        let (m, lo, hi) = (t[t.len() / 2], t[0], t[t.len() - 1]);
        let what = if bias {
            "+ bias column"
        } else {
            "no bias column"
        };
        println!(
            "masked_outer 8 x 512 x (3072 x 768), 128 x 128 kept, {what}: {m:.3} ms [{lo:.3}–{hi:.3}]"
        );
        if bias {
            med = m;
        }
    }
    // FactGraSS's whole step, no bias column: the blocks stored and then projected by
    // SJLT(128 · 128 → 4096), or each block projected by its worker in the same pass
    // (`Sink::Projected`, the same bits); rounds alternate the two.
    let sjlt = grass_core::Sjlt::new(128 * 128, 4096, 1, 3).unwrap();
    let mut y = vec![0f32; 8 * 4096];
    let (mut two, mut one) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        two.extend(time(reps / 3, || {
            let z = &mut z[..8 * 128 * 128];
            masked_outer(&go, &x, s, &rows, &cols, false, z).unwrap();
            sjlt.project_batch(z, 8, &mut y).unwrap();
        }));
        one.extend(time(reps / 3, || {
            let sink = grass_core::outer::Sink::Projected {
                sjlt: &sjlt,
                out: &mut y,
            };
            grass_core::outer::masked_outer_into(&go, &x, s, &rows, &cols, false, sink).unwrap();
        }));
    }
    two.sort_by(f64::total_cmp);
    one.sort_by(f64::total_cmp);
    let m2 = two[two.len() / 2];
    println!(
        "  + SJLT 16384 -> 4096: blocks stored, then projected {} | projected in the same pass {}",
        cell(&two, m2),
        cell(&one, m2)
    );
    outer_floors(&go, &x, &rows, &cols, med, reps);
}

/// The floors of [`outer_only`]'s block (`med` its median, ms): the lines its gathers touch in
/// both factors, together and apart, and its multiply-adds at the FMA peak.
fn outer_floors(go: &[f32], x: &[f32], rows: &[usize], cols: &[usize], med: f64, reps: usize) {
    // The memory floor of its gather: one float of each cache line it touches in both factors
    // (four rows at a time), and one float of every line (the whole of both factors).
    let line_list = |idx: &[usize]| {
        let mut l: Vec<usize> = idx.iter().map(|&j| j / 16).collect();
        l.dedup();
        l
    };
    let (lg, lx) = (line_list(rows), line_list(cols));
    let (ag, ax): (Vec<usize>, Vec<usize>) = ((0..3072 / 16).collect(), (0..768 / 16).collect());
    let threads = grass_core::parallel::get_num_threads();
    let both = |a: &[usize], b: &[usize]| {
        time(reps, || {
            black_box(split(go, 3072, threads, |part| touch_lines(part, 3072, a)));
            black_box(split(x, 768, threads, |part| touch_lines(part, 768, b)));
        })
    };
    let sum = time(reps, || {
        black_box(split(go, 3072, threads, floor_sum));
        black_box(split(x, 768, threads, floor_sum));
    });
    let (touched, every) = (both(&lg, &lx), both(&ag, &ax));
    println!(
        "  its floor ({threads} threads): touched lines {} | every line {} | sum of both {}",
        cell(&touched, med),
        cell(&every, med),
        cell(&sum, med)
    );
    // Each factor apart: `grad_output` (3072 wide, about half its lines touched) and the input
    // (768 wide, almost every line touched).
    let one = |f: &[f32], p: usize, l: &[usize]| {
        time(reps, || {
            black_box(split(f, p, threads, |part| touch_lines(part, p, l)));
        })
    };
    println!(
        "  grad_output alone: touched lines {} | every line {}; input alone: touched {} | every {}",
        cell(&one(go, 3072, &lg), med),
        cell(&one(go, 3072, &ag), med),
        cell(&one(x, 768, &lx), med),
        cell(&one(x, 768, &ax), med)
    );
    // The multiply-adds at this CPU's peak: 16-lane FMAs per second of one core (a loop of
    // independent ones, each core at once), times the threads.
    let per_core = fma_peak(threads);
    if per_core > 0.0 {
        let fmas = (8 * 128 * 128 * 512 / 16) as f64;
        println!(
            "  its {:.2} M 16-lane multiply-adds (no bias column) at the FMA peak, {per_core:.2} G/s per core x {threads}: {:.3} ms",
            fmas / 1e6,
            fmas / (per_core * 1e9 * threads as f64) * 1e3
        );
    }
}

/// 512-bit FMAs per second of one core (the median of `threads` cores running at once), or 0
/// without AVX-512.
fn fma_peak(threads: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return 0.0;
        }
        #[target_feature(enable = "avx512f")]
        fn run(n: usize) -> f64 {
            use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_set1_ps};
            let (b, c) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-6));
            let mut a = [_mm512_set1_ps(1e-3); 16];
            let t0 = Instant::now();
            // Sixteen independent chains (more than the FMA latency times the ports), kept in
            // registers through 1024 steps at a time (`black_box` every step would add a store
            // and a load per vector).
            for _ in 0..n / 1024 {
                for _ in 0..1024 {
                    for v in &mut a {
                        *v = _mm512_fmadd_ps(*v, b, c);
                    }
                }
                a = black_box(a);
            }
            let dt = t0.elapsed().as_secs_f64();
            (n / 1024 * 1024 * 16) as f64 / dt / 1e9
        }
        let mut rates: Vec<f64> = std::thread::scope(|s| {
            let h: Vec<_> = (0..threads)
                // SAFETY: `avx512f` was detected above.
                .map(|_| s.spawn(|| unsafe { run(20_000_000) }))
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect()
        });
        rates.sort_by(f64::total_cmp);
        return rates[rates.len() / 2];
    }
    #[allow(unreachable_code)]
    0.0
}

/// `--chase`: how many random cache lines one core brings in per second, from a 64 MiB buffer
/// (L3 here, as FactGraSS's factors are): `K` independent chains of dependent loads through a
/// random cyclic order of the buffer's lines, `K` = 1 … 48. One chain gives the latency; the rate
/// stops growing at the misses one core keeps in flight, whatever the code around them. Then
/// independent loads of random lines, alone and prefetched ahead with each hint.
fn chase() {
    let lines = (64usize << 20) / 64;
    // A random cyclic order of the lines (xorshift Fisher–Yates); each line's first word holds
    // the index of the next line's first word.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut s = 88172645463325252u64;
    for i in (1..lines).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; lines * 8 + 8];
    let off = (64 - next.as_ptr() as usize % 64) % 64 / 8;
    for (i, &l) in order.iter().enumerate() {
        next[off + l * 8] = off + order[(i + 1) % lines] * 8;
    }
    println!("random 64-byte lines of a 64 MiB buffer, one thread, K independent chains:");
    for k in [1usize, 2, 4, 8, 12, 16, 20, 24, 32, 48] {
        let steps = (4_000_000 / k).max(200_000);
        let mut at: Vec<usize> = (0..k).map(|c| off + order[lines / k * c] * 8).collect();
        let t = time(5, || {
            for _ in 0..steps {
                for a in &mut at {
                    *a = next[*a];
                }
            }
            black_box(&at);
        });
        let ms = t[t.len() / 2];
        println!(
            "  K = {k:2}: {:6.1} ns per line of a chain, {:5.2} GB/s",
            ms * 1e6 / steps as f64,
            (steps * k * 64) as f64 / (ms * 1e-3) / 1e9
        );
    }
    // Independent loads of random lines (no chains: as many in flight as the core allows), alone
    // and with each line prefetched `D` loads ahead, per hint: a prefetch that got its line
    // without a fill buffer (into L2 only) would raise the rate.
    let lines_at: Vec<usize> = order.iter().map(|&l| off + l * 8).collect();
    let rate = |hint: Option<i32>, d: usize| {
        let t = time(5, || {
            let mut acc = 0usize;
            for i in 0..lines_at.len() - d {
                if let Some(h) = hint {
                    prefetch_hint(&next[lines_at[i + d]], h);
                }
                acc = acc.wrapping_add(next[lines_at[i]]);
            }
            black_box(acc);
        });
        ((lines_at.len() - d) * 64) as f64 / (t[t.len() / 2] * 1e-3) / 1e9
    };
    print!(
        "independent loads of random lines: {:.2} GB/s; prefetched D ahead",
        rate(None, 0)
    );
    for (name, h) in [("T0", 0), ("T1", 1), ("T2", 2)] {
        let r: Vec<String> = [8usize, 32, 128]
            .iter()
            .map(|&d| format!("{:.2}", rate(Some(h), d)))
            .collect();
        print!(" | {name} (D = 8 / 32 / 128): {}", r.join(" / "));
    }
    println!(" GB/s");
}

/// Prefetches the line holding `v` with hint `T0` (0), `T1` (1) or `T2` (2).
fn prefetch_hint<T>(v: &T, hint: i32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only moves a line into the caches; it never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1, _MM_HINT_T2};
        let p = std::ptr::from_ref(v).cast::<i8>();
        match hint {
            0 => _mm_prefetch::<_MM_HINT_T0>(p),
            1 => _mm_prefetch::<_MM_HINT_T1>(p),
            _ => _mm_prefetch::<_MM_HINT_T2>(p),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, hint);
}

/// `--grass17` / `--grass23`: GraSS 2^`log_p` → 8192 → 2048 of the 64 × 2^`log_p` input (at 2¹⁷ a
/// dense mask, 64 % of the lines; at 2²³ 1.6 %) on the default threads, median [min–max] ms of
/// `reps` and × the read floor (`sum_reps` passes); at 2²³ also *cold* (see the module docs).
fn grass_at(log_p: u32, sum_reps: usize, reps: usize) {
    let p = 1 << log_p;
    let x = input(B * p, 1021);
    let g = Grass::new(p, 2048, 8192, 1, 0).unwrap();
    let mut out = vec![0f32; B * 2048];
    let threads = grass_core::parallel::get_num_threads();
    let sum = time(sum_reps, || {
        black_box(split(&x, p, threads, floor_sum));
    });
    let t = time(reps, || g.project(&x, B, &mut out).unwrap());
    println!(
        "GraSS 2^{log_p} -> 8192 -> 2048: {}",
        cell(&t, sum[sum.len() / 2])
    );
    if log_p < 20 {
        return;
    }
    // Cold: the touched lines evicted before each projection (a 512 MiB pass between them, not
    // timed), as for a gradient that was not just read; the warm row has them in a large L3.
    let flush = input(1 << 27, 7);
    let cold = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..15)
            .map(|_| {
                black_box(split(&flush, 1 << 20, threads, floor_sum));
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t
    };
    let base = sum[sum.len() / 2];
    let t = cold(&mut || g.project(&x, B, &mut out).unwrap());
    println!("GraSS 2^{log_p} cold: {}", cell(&t, base));
    let mut lines: Vec<usize> = g.mask().indices().iter().map(|&j| j / 16).collect();
    lines.dedup();
    for ahead in [0usize, 32] {
        let t = cold(&mut || {
            black_box(split(&x, p, threads, |part| match ahead {
                0 => touch_lines(part, p, &lines),
                _ => touch_lines_ahead(part, p, &lines, ahead),
            }));
        });
        println!(
            "  its touched lines cold, {ahead} ahead: {}",
            cell(&t, base)
        );
    }
}

/// `--mask K`: MASK 2¹⁷ → K of the 64 × 2¹⁷ input on the default threads, median [min–max] ms of
/// 31 and × the read floor (for A/B runs of the gather).
fn mask_only(k: usize) {
    let p = 1 << 17;
    let x = input(B * p, 1021);
    let mask = Mask::new(p, k, 0, false).unwrap();
    let mut out = vec![0f32; B * k];
    let threads = grass_core::parallel::get_num_threads();
    let sum = time(31, || {
        black_box(split(&x, p, threads, floor_sum));
    });
    let t = time(31, || mask.project(&x, B, &mut out).unwrap());
    println!("MASK 2^17 -> {k}: {}", cell(&t, sum[sum.len() / 2]));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--grass23") {
        return grass_at(23, 5, 15);
    }
    if args.iter().any(|a| a == "--grass17") {
        return grass_at(17, 21, 21);
    }
    if args.iter().any(|a| a == "--outer") {
        return outer_only(31);
    }
    if args.iter().any(|a| a == "--chase") {
        return chase();
    }
    if args.iter().any(|a| a == "--sjlt-one") {
        return sjlt_one();
    }
    // The number at argument `j`, or `default` (index 0 is the program: never a number).
    let num = |j: usize, default: usize| {
        (j > 0)
            .then(|| args.get(j).and_then(|v| v.parse().ok()))
            .flatten()
            .unwrap_or(default)
    };
    if let Some(i) = args.iter().position(|a| a == "--mask") {
        return mask_only(num(i + 1, 8192));
    }
    if let Some(i) = args.iter().position(|a| a == "--srht") {
        return srht_only(num(i + 1, 21));
    }
    if let Some(i) = args.iter().position(|a| a == "--sjlt") {
        return sjlt_only(num(i + 1, 1), num(i + 2, 1));
    }
    let reps = num(
        args.iter().position(|a| a == "--reps").map_or(0, |i| i + 1),
        15,
    );
    println!(
        "median [min–max] of {reps} repetitions; × = median / median of `sum` on the same threads"
    );
    case("MASK", 1 << 17, 8192, reps);
    case("MASK", 1 << 17, 2048, reps);
    case("GraSS", 1 << 23, 8192, reps.min(7));
}

//! Property tests: every projector equals multiplication by its explicitly materialized matrix,
//! the adjoint is the transpose, GraSS is SJLT ∘ MASK, and results do not depend on threads.
#![allow(clippy::needless_range_loop)]
use grass_core::{parallel, Dense, DenseKind, Grass, Mask, Projection, Sjlt};
use proptest::prelude::*;

/// Dense `k × p` matrix of a projector, built column by column from its public description.
fn sjlt_matrix(s: &Sjlt) -> Vec<Vec<f64>> {
    let mut m = vec![vec![0.0; s.in_dim()]; s.out_dim()];
    let scale = 1.0 / (s.c() as f64).sqrt();
    for j in 0..s.in_dim() {
        for (b, neg) in s.column(j) {
            m[b][j] += if neg { -scale } else { scale };
        }
    }
    m
}

fn mask_matrix(m: &Mask) -> Vec<Vec<f64>> {
    let mut out = vec![vec![0.0; m.in_dim()]; m.out_dim()];
    for (r, &c) in m.indices().iter().enumerate() {
        out[r][c] = m.factor();
    }
    out
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|row| {
            (0..b[0].len())
                .map(|j| row.iter().zip(b).map(|(x, r)| x * r[j]).sum())
                .collect()
        })
        .collect()
}

fn apply(m: &[Vec<f64>], x: &[f64], batch: usize) -> Vec<f64> {
    let p = m[0].len();
    (0..batch)
        .flat_map(|b| {
            m.iter()
                .map(move |row| row.iter().zip(&x[b * p..]).map(|(a, v)| a * v).sum::<f64>())
        })
        .collect()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

fn data(len: usize, seed: u64) -> Vec<f64> {
    (0..len)
        .map(|i| {
            ((grass_core::hash::hash(seed, i as u64) >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sjlt_is_its_matrix(p in 1usize..200, k in 1usize..40, c in 1usize..5, seed: u64, batch in 0usize..5) {
        let c = c.min(k);
        let s = Sjlt::new(p, k, c, seed).unwrap();
        let m = sjlt_matrix(&s);
        for j in 0..p {
            let mut b: Vec<usize> = s.column(j).map(|e| e.0).collect();
            b.sort_unstable();
            b.dedup();
            prop_assert_eq!(b.len(), c, "distinct buckets");
        }
        let x = data(batch * p, seed);
        let mut out = vec![0.0; batch * k];
        s.project(&x, batch, &mut out).unwrap();
        close(&out, &apply(&m, &x, batch));
        let y = data(batch * k, seed ^ 1);
        let mut xt = vec![0.0; batch * p];
        s.transpose(&y, batch, &mut xt).unwrap();
        let mt: Vec<Vec<f64>> = (0..p).map(|j| m.iter().map(|r| r[j]).collect()).collect();
        close(&xt, &apply(&mt, &y, batch));
    }

    #[test]
    fn mask_is_its_matrix(p in 1usize..300, frac in 0.0f64..1.0, seed: u64, scale: bool) {
        let k = ((p as f64 * frac) as usize).max(1);
        let m = Mask::new(p, k, seed, scale).unwrap();
        prop_assert!(m.indices().windows(2).all(|w| w[0] < w[1]));
        prop_assert!(m.indices().iter().all(|&i| i < p));
        prop_assert_eq!(m.indices().len(), k);
        let x = data(3 * p, seed);
        let mut out = vec![0.0; 3 * k];
        m.project(&x, 3, &mut out).unwrap();
        close(&out, &apply(&mask_matrix(&m), &x, 3));
    }

    #[test]
    fn grass_is_sjlt_after_mask(p in 8usize..300, seed: u64, c in 1usize..3) {
        let k = (p / 8).max(c);
        let kp = (p / 2).max(k);
        let g = Grass::new(p, k, kp, c, seed).unwrap();
        let want = matmul(&sjlt_matrix(g.sjlt()), &mask_matrix(g.mask()));
        let x = data(2 * p, seed);
        let mut out = vec![0.0; 2 * k];
        g.project(&x, 2, &mut out).unwrap();
        close(&out, &apply(&want, &x, 2));
        let alone = Mask::new(p, kp, seed, false).unwrap();
        prop_assert_eq!(g.mask().indices(), alone.indices());
    }

    #[test]
    fn dense_is_its_matrix(p in 1usize..100, k in 1usize..300, seed: u64, gaussian: bool) {
        let kind = if gaussian { DenseKind::Gaussian } else { DenseKind::Rademacher };
        let d = Dense::new(kind, p, k, seed).unwrap();
        let m: Vec<Vec<f64>> = (0..k).map(|i| (0..p).map(|j| f64::from(d.entry(i, j))).collect()).collect();
        let x = data(2 * p, seed);
        let mut out = vec![0.0; 2 * k];
        d.project(&x, 2, &mut out).unwrap();
        close(&out, &apply(&m, &x, 2));
        let y = data(2 * k, seed);
        let mut xt = vec![0.0; 2 * p];
        d.transpose(&y, 2, &mut xt).unwrap();
        let mt: Vec<Vec<f64>> = (0..p).map(|j| m.iter().map(|r| r[j]).collect()).collect();
        close(&xt, &apply(&mt, &y, 2));
    }
}

#[test]
fn bit_identical_across_thread_counts() {
    let (p, k, batch) = (20_000, 256, 13);
    let x: Vec<f32> = data(batch * p, 3).into_iter().map(|v| v as f32).collect();
    let s = Sjlt::new(p, k, 3, 1).unwrap();
    let g = Grass::new(p, k, 4096, 1, 1).unwrap();
    let d = Dense::new(DenseKind::Gaussian, 2000, 64, 1).unwrap();
    let run = |n: usize| {
        parallel::set_num_threads(n).unwrap();
        let mut a = vec![0f32; batch * k];
        s.project(&x, batch, &mut a).unwrap();
        let mut b = vec![0f32; batch * k];
        g.project(&x, batch, &mut b).unwrap();
        let mut c = vec![0f32; batch * 64];
        d.project(&x[..batch * 2000], batch, &mut c).unwrap();
        (a, b, c)
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(5));
}

#[test]
fn bit_identical_across_batch_splits() {
    // Batches of 1-2 samples take the per-sample path, 3-16 one lane group, more several
    // groups: every split of the same rows gives the same bits, for SJLT (c = 1 and 3) and
    // GraSS, on one thread and on two.
    let (p, k, batch) = (30_000, 300, 70);
    let x: Vec<f32> = data(batch * p, 5).into_iter().map(|v| v as f32).collect();
    type Project = Box<dyn Fn(&[f32], usize, &mut [f32])>;
    let projectors: Vec<Project> = vec![
        {
            let s = Sjlt::new(p, k, 1, 2).unwrap();
            Box::new(move |x, b, o| s.project(x, b, o).unwrap())
        },
        {
            let s = Sjlt::new(p, k, 3, 2).unwrap();
            Box::new(move |x, b, o| s.project(x, b, o).unwrap())
        },
        {
            let g = Grass::new(p, k, 5000, 2, 2).unwrap();
            Box::new(move |x, b, o| g.project(x, b, o).unwrap())
        },
    ];
    for (proj, threads) in projectors.iter().flat_map(|p| [(p, 1), (p, 2)]) {
        parallel::set_num_threads(threads).unwrap();
        let mut whole = vec![0f32; batch * k];
        proj(&x, batch, &mut whole);
        for split in [1usize, 2, 3, 7, 16, 33, 64] {
            let mut parts = vec![0f32; batch * k];
            for (xs, os) in x.chunks(split * p).zip(parts.chunks_mut(split * k)) {
                proj(xs, xs.len() / p, os);
            }
            assert_eq!(whole, parts, "split {split}, {threads} thread(s)");
        }
    }
}

#[test]
fn on_the_fly_hashing_matches_the_table() {
    // Past TABLE_LIMIT the index table is generated per block instead of cached: same matrix.
    let p = grass_core::sjlt::TABLE_LIMIT / 2 + 3;
    let s = Sjlt::new(p, 64, 4, 9).unwrap(); // in_dim·c > TABLE_LIMIT: hashed on the fly
    let x: Vec<f32> = (0..p)
        .map(|j| {
            if j % 997 == 0 {
                (j % 13) as f32 - 6.0
            } else {
                0.0
            }
        })
        .collect();
    let mut out = vec![0f32; 64];
    s.project(&x, 1, &mut out).unwrap();
    let mut want = vec![0f64; 64];
    for j in (0..p).step_by(997) {
        for (b, neg) in s.column(j) {
            want[b] += if neg { -1.0 } else { 1.0 } * f64::from(x[j]) * 0.5;
        }
    }
    for (a, b) in out.iter().zip(&want) {
        assert!((f64::from(*a) - b).abs() < 1e-3);
    }
}

#[test]
fn errors_name_the_argument() {
    let e = Sjlt::new(10, 4, 5, 0).unwrap_err().to_string();
    assert!(e.contains("`c`"), "{e}");
    let e = Grass::new(10, 4, 3, 1, 0).unwrap_err().to_string();
    assert!(e.contains("mask_dim"), "{e}");
    let e = Mask::new(10, 11, 0, false).unwrap_err().to_string();
    assert!(e.contains("out_dim"), "{e}");
    let s = Sjlt::new(10, 4, 1, 0).unwrap();
    let e = s
        .project(&[0f32; 9], 1, &mut [0f32; 4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`"), "{e}");
}

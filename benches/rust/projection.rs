//! Criterion benches of the CPU core: batch 64 × in_dim 2¹⁷ float32 (the compare table's shape),
//! and FactGraSS's masked block on GPT-2-small MLP factors (batch 8, T 512, 3072 × 768).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grass_core::outer::{masked_outer, OuterShape};
use grass_core::{Dense, DenseKind, Grass, Mask, Projection, Sjlt};
use std::hint::black_box;

const B: usize = 64;
const P: usize = 1 << 17;

fn input() -> Vec<f32> {
    values(B * P)
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((grass_core::hash::hash(1, i as u64) >> 40) as f32) / 16_777_216.0 - 0.5)
        .collect()
}

/// The read floor: one pass summing into 16 independent lanes (vectorizes, unlike a plain
/// sequential float sum).
fn floor_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ch in v.chunks_exact(16) {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += x;
        }
    }
    acc.iter().sum()
}

fn bench(c: &mut Criterion) {
    let x = input();
    let mut g = c.benchmark_group("cpu_f32_b64_p131072");
    g.throughput(Throughput::Bytes((B * P * 4) as u64));
    g.sample_size(20);
    g.bench_function("read_floor_sum", |b| {
        b.iter(|| black_box(floor_sum(&x)));
    });
    for cc in [1usize, 4] {
        let s = Sjlt::new(P, 2048, cc, 0).unwrap();
        let mut out = vec![0f32; B * 2048];
        g.bench_function(BenchmarkId::new("sjlt_k2048_c", cc), |b| {
            b.iter(|| s.project(&x, B, &mut out).unwrap());
        });
    }
    let m = Mask::new(P, 8192, 0, false).unwrap();
    let mut out = vec![0f32; B * 8192];
    g.bench_function("mask_8192", |b| {
        b.iter(|| m.project(&x, B, &mut out).unwrap());
    });
    let gr = Grass::new(P, 2048, 8192, 1, 0).unwrap();
    let mut out = vec![0f32; B * 2048];
    g.bench_function("grass_8192_2048", |b| {
        b.iter(|| gr.project(&x, B, &mut out).unwrap());
    });
    g.finish();
    let mut g = c.benchmark_group("cpu_dense");
    g.sample_size(10);
    let d = Dense::new(DenseKind::Gaussian, 1 << 14, 512, 0).unwrap();
    let mut out = vec![0f32; B * 512];
    g.bench_function("gaussian_b64_p16384_k512", |b| {
        b.iter(|| d.project(&x[..B << 14], B, &mut out).unwrap());
    });
    g.finish();

    // FactGraSS: Σ_t δ_t[rows] ⊗ x_t[cols] for 128 of 3072 rows and 128 of 768 columns; the
    // read floor is one pass over both factors.
    let shape = OuterShape {
        batch: 8,
        tokens: 512,
        d_out: 3072,
        d_in: 768,
    };
    let factors = values(8 * 512 * (3072 + 768));
    let (go, xin) = factors.split_at(8 * 512 * 3072);
    let rows = Mask::new(3072, 128, 1, false).unwrap().indices().to_vec();
    let cols = Mask::new(768, 128, 2, false).unwrap().indices().to_vec();
    let mut z = vec![0f32; 8 * 128 * 128];
    let mut g = c.benchmark_group("cpu_factgrass_b8_t512_3072x768");
    g.throughput(Throughput::Bytes((8 * 512 * (3072 + 768) * 4) as u64));
    g.sample_size(20);
    g.bench_function("read_floor_sum", |b| {
        b.iter(|| black_box(floor_sum(go) + floor_sum(xin)));
    });
    g.bench_function("masked_outer_128x128", |b| {
        b.iter(|| masked_outer(go, xin, shape, &rows, &cols, false, &mut z).unwrap());
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

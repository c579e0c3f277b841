//! Criterion benches of the CPU core: batch 64 × in_dim 2¹⁷ float32 (the compare table's shape).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grass_core::{Dense, DenseKind, Grass, Mask, Sjlt};
use std::hint::black_box;

const B: usize = 64;
const P: usize = 1 << 17;

fn input() -> Vec<f32> {
    (0..B * P)
        .map(|i| ((grass_core::hash::hash(1, i as u64) >> 40) as f32) / 16_777_216.0 - 0.5)
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = input();
    let mut g = c.benchmark_group("cpu_f32_b64_p131072");
    g.throughput(Throughput::Bytes((B * P * 4) as u64));
    g.sample_size(20);
    g.bench_function("read_floor_sum", |b| {
        b.iter(|| black_box(x.iter().sum::<f32>()));
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
}

criterion_group!(benches, bench);
criterion_main!(benches);

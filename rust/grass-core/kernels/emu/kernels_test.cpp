// CPU emulation harness of the grass-rs CUDA kernels (tests only; see tests/test_ptx.py).
// Runs every kernel on small sizes with a std::thread per CUDA thread and checks it against
// sequential references built from the same entry functions. Not part of the PTX.
#include "cuda_emu.h"
#include "sjlt.cu"
#include "mask.cu"
#include "dense.cu"
#include <cstdio>
#include <random>
#include <set>
static int fails = 0;
template <typename A> void cmp(const char* what, const std::vector<A>& got, const std::vector<A>& want, double tol) {
    double err = 0, scale = 1;
    for (size_t i = 0; i < want.size(); ++i) { err = std::max(err, std::fabs((double)got[i] - (double)want[i])); scale = std::max(scale, std::fabs((double)want[i])); }
    bool ok = err <= tol * scale && got.size() == want.size();
    if (!ok) ++fails;
    printf("%-40s %s (max err %.3g)\n", what, ok ? "ok" : "FAIL", err);
}
// `kernels_test entries KEY K C P KIND`: prints the kernels' matrix entries (KIND -1: packed SJLT
// entries of columns 0..P; 0/1: Gaussian/Rademacher entries (i, j) row-major by j) for the Python
// test to compare with the Rust core.
static int print_entries(char** argv) {
    const u64 key = strtoull(argv[2], nullptr, 10), k = strtoull(argv[3], nullptr, 10);
    const u64 c = strtoull(argv[4], nullptr, 10), p = strtoull(argv[5], nullptr, 10);
    const int kind = atoi(argv[6]);
    if (kind < 0) {
        for (u64 j = 0; j < p; ++j) for (u64 r = 0; r < c; ++r) printf("%u\n", grass_sjlt_entry(key, k, c, j, r));
    } else {
        const float inv = 1.0f / std::sqrt((float)k);
        for (u64 j = 0; j < p; ++j) for (u64 i = 0; i < k; ++i) printf("%.9g\n", dense_entry(key, kind, k, i, j, inv));
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 7 && strcmp(argv[1], "entries") == 0) return print_entries(argv);
    if (grass_hash(0, 0) != 0xE220A8397B1DCDAFULL || grass_hash(0, 1) != 0x6E789E6AA1B965F4ULL ||
        grass_hash(0, 2) != 0x06C45D188009454FULL) {
        printf("hash.cuh does not give SplitMix64's published sequence\n1 failures\n");
        return 1;
    }
    std::mt19937_64 rng(1);
    std::normal_distribution<double> nd;
    const u64 p = 3000, k = 37, c = 3, key = 0x1234567890abcdefULL;
    // ---- incremental block bounds (kernels) == direct Sjlt::entry formula, 32- and 64-bit paths
    {
        const u64 ks[] = {1, 2, 37, 4096, 65537, 1u << 20, 0x7FFFFFFFull};
        bool ok = true;
        for (u64 kk : ks) for (u64 cc : {1ull, 2ull, 3ull, 7ull, 64ull, 1000ull}) {
            if (cc > kk) continue;
            for (u64 m = 0; m < 50; ++m) {
                u64 lo = 0;
                for (u64 r = 0; r < cc; ++r) {
                    const u64 hi = cc == 1 ? kk : grass_block_start(r + 1, kk, cc);
                    ok &= grass_sjlt_pack(grass_hash(key, m * cc + r), lo, hi - lo) == grass_sjlt_entry(key, kk, cc, m, r);
                    ok &= hi == (u64)(((unsigned __int128)(r + 1) * kk) / cc);
                    lo = hi;
                }
            }
        }
        if (!ok) ++fails;
        printf("%-40s %s\n", "incremental block bounds", ok ? "ok" : "FAIL");
    }
    // ---- SJLT atomic (smem and global), f32 / f64 / bf16 / f16, with and without idx (GraSS)
    for (int grass = 0; grass < 2; ++grass)
    for (int use_smem = 0; use_smem < 2; ++use_smem) {
        const u64 batch = 11, group = use_smem ? 3 : 8, cpb = 512;
        std::vector<u64> idx; u64 n_cols = p;
        if (grass) { std::set<u64> s; while (s.size() < 500) s.insert(rng() % p); idx.assign(s.begin(), s.end()); n_cols = 500; }
        std::vector<float> x(batch * p); for (auto& v : x) v = (float)nd(rng);
        std::vector<unsigned short> xb(batch * p), xh(batch * p);
        for (size_t i = 0; i < x.size(); ++i) { unsigned u; memcpy(&u, &x[i], 4); xb[i] = u >> 16; _Float16 h = (_Float16)x[i]; memcpy(&xh[i], &h, 2); }
        std::vector<double> xd(x.begin(), x.end());
        auto ref = [&](auto load) {
            std::vector<double> want(batch * k, 0);
            for (u64 b = 0; b < batch; ++b) for (u64 m = 0; m < n_cols; ++m) for (u64 r = 0; r < c; ++r) {
                u32 e = grass_sjlt_entry(key, k, c, m, r); u64 j = grass ? idx[m] : m;
                want[b * k + (e & 0x7fffffff)] += ((e >> 31) ? -1.0 : 1.0) * load(b * p + j);
            }
            for (auto& v : want) v /= std::sqrt((double)c);
            return want;
        };
        dim3_ grid{(unsigned)((n_cols + cpb - 1) / cpb), (unsigned)((batch + group - 1) / group), 1};
        const u64* ip = grass ? idx.data() : nullptr;
        char name[64];
        { std::vector<float> out(batch * k, 0.f);
          launch(grid, 256, [&] { sjlt_project_atomic_f32(x.data(), out.data(), batch, p, k, c, key, n_cols, ip, group, cpb, use_smem); });
          launch({4, 1, 1}, 256, [&] { scale_f32(out.data(), batch * k, (float)(1 / std::sqrt(3.0))); });
          auto w = ref([&](u64 i) { return (double)x[i]; }); std::vector<float> wf(w.begin(), w.end());
          snprintf(name, 64, "atomic f32 grass=%d smem=%d", grass, use_smem); cmp(name, out, wf, 1e-5); }
        { std::vector<double> out(batch * k, 0.);
          launch(grid, 256, [&] { sjlt_project_atomic_f64(xd.data(), out.data(), batch, p, k, c, key, n_cols, ip, group, cpb, use_smem); });
          launch({4, 1, 1}, 256, [&] { scale_f64(out.data(), batch * k, 1 / std::sqrt(3.0)); });
          snprintf(name, 64, "atomic f64 grass=%d smem=%d", grass, use_smem); cmp(name, out, ref([&](u64 i) { return xd[i]; }), 1e-12); }
        { std::vector<float> out(batch * k, 0.f);
          launch(grid, 256, [&] { sjlt_project_atomic_bf16((const grass_bf16*)xb.data(), out.data(), batch, p, k, c, key, n_cols, ip, group, cpb, use_smem); });
          launch({4, 1, 1}, 256, [&] { scale_f32(out.data(), batch * k, (float)(1 / std::sqrt(3.0))); });
          auto w = ref([&](u64 i) { unsigned u = (unsigned)xb[i] << 16; float f; memcpy(&f, &u, 4); return (double)f; }); std::vector<float> wf(w.begin(), w.end());
          snprintf(name, 64, "atomic bf16 grass=%d smem=%d", grass, use_smem); cmp(name, out, wf, 1e-5); }
        { std::vector<float> out(batch * k, 0.f);
          launch(grid, 256, [&] { sjlt_project_atomic_f16((const grass_f16*)xh.data(), out.data(), batch, p, k, c, key, n_cols, ip, group, cpb, use_smem); });
          launch({4, 1, 1}, 256, [&] { scale_f32(out.data(), batch * k, (float)(1 / std::sqrt(3.0))); });
          auto w = ref([&](u64 i) { return (double)emu_half(xh[i]); }); std::vector<float> wf(w.begin(), w.end());
          snprintf(name, 64, "atomic f16 grass=%d smem=%d", grass, use_smem); cmp(name, out, wf, 1e-5); }
        if (use_smem) {
            // CSR deterministic (mirror of plan::build_csr): 1 chunk, then 3 chunks of 1000 coordinates
            for (u64 chunk_size : {p, (u64)1000}) {
                const u64 n_chunks = (p + chunk_size - 1) / chunk_size, rows = n_chunks * k;
                auto row_of = [&](u64 t, u32 e) { u64 j = grass ? idx[t / c] : t / c; return j / chunk_size * k + (e & 0x7fffffff); };
                std::vector<u64> row_ptr(rows + 1, 0); std::vector<u32> packed;
                for (u64 m = 0; m < n_cols; ++m) for (u64 r = 0; r < c; ++r) packed.push_back(grass_sjlt_entry(key, k, c, m, r));
                for (u64 t = 0; t < packed.size(); ++t) row_ptr[row_of(t, packed[t]) + 1]++;
                for (u64 i = 0; i < rows; ++i) row_ptr[i + 1] += row_ptr[i];
                std::vector<u64> next = row_ptr; std::vector<u32> entries(packed.size());
                for (size_t t = 0; t < packed.size(); ++t) { u32 e = packed[t]; u64 j = grass ? idx[t / c] : t / c; entries[next[row_of(t, e)]++] = (u32)j | (e & 0x80000000u); }
                const bool single = n_chunks == 1;
                auto run_f64 = [&](unsigned blocks) {
                    std::vector<double> out(batch * k, -1.), part(n_chunks * batch * k, -3.);
                    double* dst = single ? out.data() : part.data();
                    launch({blocks, 1, 1}, 256, [&] { sjlt_project_csr_f64(xd.data(), dst, batch, p, k, n_chunks, row_ptr.data(), entries.data(), 1 / std::sqrt(3.0), single); });
                    if (!single) launch({2, 1, 1}, 256, [&] { csr_reduce_f64(part.data(), out.data(), batch * k, n_chunks, 1 / std::sqrt(3.0), 1); });
                    return out;
                };
                auto run_bf16 = [&](unsigned blocks) {
                    std::vector<float> out(batch * k, -1.f), part(n_chunks * batch * k, -3.f);
                    float* dst = single ? out.data() : part.data();
                    launch({blocks, 1, 1}, 256, [&] { sjlt_project_csr_bf16((const grass_bf16*)xb.data(), dst, batch, p, k, n_chunks, row_ptr.data(), entries.data(), (float)(1 / std::sqrt(3.0)), single); });
                    if (!single) launch({3, 1, 1}, 256, [&] { csr_reduce_f32(part.data(), out.data(), batch * k, n_chunks, (float)(1 / std::sqrt(3.0)), 1); });
                    return out;
                };
                snprintf(name, 64, "csr f64 grass=%d chunks=%llu", grass, n_chunks); cmp(name, run_f64(5), ref([&](u64 i) { return xd[i]; }), 1e-12);
                auto outf = run_bf16(3), outf2 = run_bf16(50);
                snprintf(name, 64, "csr bf16 grids bit-equal grass=%d chunks=%llu", grass, n_chunks);
                bool eq = memcmp(outf.data(), outf2.data(), outf.size() * 4) == 0; if (!eq) ++fails; printf("%-40s %s\n", name, eq ? "ok" : "FAIL");
                auto w = ref([&](u64 i) { unsigned u = (unsigned)xb[i] << 16; float f; memcpy(&f, &u, 4); return (double)f; }); std::vector<float> wf(w.begin(), w.end());
                snprintf(name, 64, "csr bf16 grass=%d chunks=%llu", grass, n_chunks); cmp(name, outf, wf, 1e-5);
            }
        }
        // transpose (f64), batch 11 = two groups
        { const u64 tb = 11; std::vector<double> y(tb * k); for (auto& v : y) v = nd(rng);
          std::vector<double> out(tb * p, 0.), want(tb * p, 0.);
          for (u64 b = 0; b < tb; ++b) for (u64 m = 0; m < n_cols; ++m) { double a = 0; for (u64 r = 0; r < c; ++r) { u32 e = grass_sjlt_entry(key, k, c, m, r); a += ((e >> 31) ? -1 : 1) * y[b * k + (e & 0x7fffffff)]; } want[b * p + (grass ? idx[m] : m)] = a / std::sqrt(3.0); }
          launch({3, 2, 1}, 256, [&] { sjlt_transpose_f64(y.data(), out.data(), tb, p, k, c, key, n_cols, ip, 1 / std::sqrt(3.0), 1); });
          snprintf(name, 64, "transpose f64 grass=%d", grass); cmp(name, out, want, 1e-12); }
    }
    // ---- mask
    { const u64 batch = 5, md = 700; std::set<u64> s; while (s.size() < md) s.insert(rng() % p); std::vector<u64> idx(s.begin(), s.end());
      std::vector<float> x(batch * p); for (auto& v : x) v = (float)nd(rng);
      std::vector<float> out(batch * md), want(batch * md);
      for (u64 b = 0; b < batch; ++b) for (u64 m = 0; m < md; ++m) want[b * md + m] = x[b * p + idx[m]] * 2.0f;
      launch({2, 3, 1}, 256, [&] { mask_project_f32(x.data(), out.data(), batch, p, md, idx.data(), 2.0f, 1); });
      cmp("mask project", out, want, 0);
      std::vector<float> back(batch * p, 0.f), wb(batch * p, 0.f);
      for (u64 b = 0; b < batch; ++b) for (u64 m = 0; m < md; ++m) wb[b * p + idx[m]] = want[b * md + m];
      launch({1, 2, 1}, 256, [&] { mask_transpose_f32(want.data(), back.data(), batch, p, md, idx.data(), 1.0f, 0); });
      cmp("mask transpose", back, wb, 0); }
    // ---- dense
    for (int kind = 0; kind < 2; ++kind) {
      const u64 batch = 35, pp = 1000, kk = 300; float inv = 1.0f / std::sqrt((float)kk);
      std::vector<float> x(batch * pp); for (auto& v : x) v = (float)nd(rng);
      std::vector<double> want(batch * kk, 0);
      for (u64 b = 0; b < batch; ++b) for (u64 j = 0; j < pp; ++j) for (u64 i = 0; i < kk; ++i) want[b * kk + i] += x[b * pp + j] * (double)dense_entry(key, kind, kk, i, j, inv);
      std::vector<float> wf(want.begin(), want.end());
      for (u64 n_split : {1ull, 3ull}) {
        u64 chunk = ((pp + n_split - 1) / n_split + 31) / 32 * 32; u64 ns = (pp + chunk - 1) / chunk;
        std::vector<float> part(ns * batch * kk), out(batch * kk);
        launch({2, 2, (unsigned)ns}, 256, [&] { dense_project_f32(x.data(), ns == 1 ? out.data() : part.data(), batch, pp, kk, key, kind, inv, chunk); });
        if (ns > 1) launch({3, 1, 1}, 256, [&] { dense_reduce_f32(part.data(), out.data(), batch * kk, ns); });
        char name[64]; snprintf(name, 64, "dense project kind=%d split=%llu", kind, ns); cmp(name, out, wf, 1e-5);
      }
      std::vector<float> y(batch * kk); for (auto& v : y) v = (float)nd(rng);
      std::vector<double> wt(batch * pp, 0);
      for (u64 b = 0; b < batch; ++b) for (u64 j = 0; j < pp; ++j) for (u64 i = 0; i < kk; ++i) wt[b * pp + j] += y[b * kk + i] * (double)dense_entry(key, kind, kk, i, j, inv);
      std::vector<float> wtf(wt.begin(), wt.end()), out(batch * pp);
      launch({4, 2, 1}, 256, [&] { dense_transpose_f32(y.data(), out.data(), batch, pp, kk, key, kind, inv); });
      char name[64]; snprintf(name, 64, "dense transpose kind=%d", kind); cmp(name, out, wtf, 1e-5);
    }
    printf("%d failures\n", fails);
    return fails != 0;
}

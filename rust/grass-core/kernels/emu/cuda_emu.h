// Minimal CPU emulation of the CUDA features the grass-rs kernels use (for testing only).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <algorithm>
using std::min;
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n)
#define __shared__ static
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3_ threadIdx, blockIdx;
inline dim3_ blockDim, gridDim;
inline std::barrier<>* g_block_barrier;
inline std::vector<std::barrier<>*> g_warp_barriers;
inline unsigned char g_smem[1 << 17];
inline std::mutex g_atomic;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
template <typename A> inline A atomicAdd(A* p, A v) { std::lock_guard<std::mutex> l(g_atomic); A o = *p; *p = o + v; return o; }
inline double g_shfl[1024];
template <typename A> inline A __shfl_xor_sync(unsigned, A v, int off) {
    unsigned t = threadIdx.x, w = t / 32, lane = t % 32;
    g_warp_barriers[w]->arrive_and_wait();
    g_shfl[t] = (double)v;
    g_warp_barriers[w]->arrive_and_wait();
    A r = (A)g_shfl[w * 32 + (lane ^ off)];
    g_warp_barriers[w]->arrive_and_wait();
    return r;
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
inline long long __double_as_longlong(double f) { long long u; memcpy(&u, &f, 8); return u; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float emu_half(unsigned short h) { return (float)*(_Float16*)&h; }
// Runs kernel(args) over grid x block, blocks sequentially, threads concurrently.
inline void launch(dim3_ grid, unsigned block, std::function<void()> k) {
    gridDim = grid; blockDim = {block, 1, 1};
    for (unsigned z = 0; z < std::max(grid.z, 1u); ++z)
    for (unsigned y = 0; y < grid.y; ++y)
    for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> bb(block);
        g_block_barrier = &bb;
        std::vector<std::barrier<>*> wb;
        for (unsigned w = 0; w < block / 32; ++w) wb.push_back(new std::barrier<>(32));
        g_warp_barriers = wb;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < block; ++t) ts.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; k(); });
        for (auto& t : ts) t.join();
        for (auto* b : wb) delete b;
    }
}

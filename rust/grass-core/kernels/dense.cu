// Dense Gaussian / Rademacher projections generated on the fly from the contract hash (dense.rs
// `Dense::entry`): no k x p matrix is stored. Entry (i, j) has linear index n = j*k + i.
//
// Projection: blockIdx.x tiles the outputs i (one per thread), blockIdx.y groups DENSE_GROUP
// samples, blockIdx.z splits the inputs j into `n_split` fixed chunks; each block writes its
// partial sums to part[(z * batch + b) * k + i] (or straight to `out` when there is one chunk)
// and `dense_reduce` adds the chunks in order. The chunking depends only on the problem size,
// so results are deterministic. Adjoint: one thread per input j, summing over i in order.
#include "common.cuh"

#define DENSE_GROUP 32
#define DENSE_TILE 32
#define DENSE_GAUSSIAN 0

// The contract's float32 ln / cos-sin / Box-Muller (gauss.rs, docs/CONTRACT.md section 5): one IEEE
// float32 operation at a time (explicit _rn intrinsics: no contraction into FMA), so the entries are
// bit-identical to the CPU's.
__device__ __forceinline__ float grass_ln(float u) {
    const unsigned bits = __float_as_uint(u);
    const int e0 = (int)((bits >> 23) & 0xFFu) - 127;
    const float m0 = __uint_as_float((bits & 0x007FFFFFu) | 0x3F800000u);
    const bool big = m0 > 1.41421356237309504880f;
    const float m = big ? __fmul_rn(m0, 0.5f) : m0;
    const float e = (float)(e0 + (big ? 1 : 0));
    const float f = __fadd_rn(m, -1.0f);
    const float s = __fdiv_rn(f, __fadd_rn(2.0f, f));
    const float z = __fmul_rn(s, s);
    float p = __fdiv_rn(1.0f, 9.0f);
    p = __fadd_rn(__fdiv_rn(1.0f, 7.0f), __fmul_rn(z, p));
    p = __fadd_rn(__fdiv_rn(1.0f, 5.0f), __fmul_rn(z, p));
    p = __fadd_rn(__fdiv_rn(1.0f, 3.0f), __fmul_rn(z, p));
    const float two_s = __fadd_rn(s, s);
    const float ln_m = __fadd_rn(two_s, __fmul_rn(__fmul_rn(two_s, z), p));
    return __fadd_rn(__fmul_rn(e, 0.693359375f), __fadd_rn(__fmul_rn(e, -2.1219444e-4f), ln_m));
}

// (cos 2 pi u, sin 2 pi u) for u in [0, 1).
__device__ __forceinline__ void grass_cos_sin_turn(float u, float* cos_out, float* sin_out) {
    const float t = __fmul_rn(u, 4.0f);
    const float q = floorf(__fadd_rn(t, 0.5f));
    const float x = __fmul_rn(__fadd_rn(t, -q), 1.57079632679489661923f);
    const float x2 = __fmul_rn(x, x);
    float ps = __fdiv_rn(1.0f, 362880.0f);
    ps = __fadd_rn(__fdiv_rn(-1.0f, 5040.0f), __fmul_rn(x2, ps));
    ps = __fadd_rn(__fdiv_rn(1.0f, 120.0f), __fmul_rn(x2, ps));
    ps = __fadd_rn(__fdiv_rn(-1.0f, 6.0f), __fmul_rn(x2, ps));
    const float s = __fadd_rn(x, __fmul_rn(__fmul_rn(x, x2), ps));
    float pc = __fdiv_rn(-1.0f, 3628800.0f);
    pc = __fadd_rn(__fdiv_rn(1.0f, 40320.0f), __fmul_rn(x2, pc));
    pc = __fadd_rn(__fdiv_rn(-1.0f, 720.0f), __fmul_rn(x2, pc));
    pc = __fadd_rn(__fdiv_rn(1.0f, 24.0f), __fmul_rn(x2, pc));
    pc = __fadd_rn(-0.5f, __fmul_rn(x2, pc));
    const float c = __fadd_rn(1.0f, __fmul_rn(x2, pc));
    const unsigned qi = (unsigned)q;
    const float a = (qi & 1u) ? s : c;
    const float b = (qi & 1u) ? c : s;
    *cos_out = __uint_as_float(__float_as_uint(a) ^ (((qi + 1u) & 2u) << 30));
    *sin_out = __uint_as_float(__float_as_uint(b) ^ ((qi & 2u) << 30));
}

// Matrix entry (i, j) in f32, exactly as dense.rs (inv = 1/sqrt(k) from the host).
__device__ __forceinline__ float dense_entry(u64 key, int kind, u64 k, u64 i, u64 j, float inv) {
    const u64 n = j * k + i;
    if (kind == DENSE_GAUSSIAN) {
        const u64 h = grass_hash(key, n >> 1);
        const float u1 = __fmul_rn(__fadd_rn((float)(h >> 40), 0.5f), 1.0f / 16777216.0f);
        const float u2 = __fmul_rn((float)((h >> 16) & 0xFFFFFFULL), 1.0f / 16777216.0f);
        const float r = __fsqrt_rn(__fmul_rn(-2.0f, grass_ln(u1)));
        float c, s;
        grass_cos_sin_turn(u2, &c, &s);
        return __fmul_rn(__fmul_rn(r, (n & 1ULL) ? s : c), inv);
    }
    const u64 h = grass_hash(key, n >> 6);
    return ((h >> (n & 63ULL)) & 1ULL) ? -inv : inv;
}

template <typename T, typename A>
__device__ __forceinline__ void dense_project(const T* __restrict__ x, A* __restrict__ part, u64 batch, u64 in_dim,
                                              u64 k, u64 key, int kind, float inv, u64 chunk) {
    __shared__ A xs[DENSE_GROUP][DENSE_TILE];
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 b0 = (u64)blockIdx.y * DENSE_GROUP;
    const u64 g = min((u64)DENSE_GROUP, batch - b0);
    const u64 j0 = (u64)blockIdx.z * chunk;
    const u64 j1 = min(j0 + chunk, in_dim);
    A acc[DENSE_GROUP];
#pragma unroll
    for (int b = 0; b < DENSE_GROUP; ++b) acc[b] = (A)0;
    for (u64 jt = j0; jt < j1; jt += DENSE_TILE) {
        const u64 n = min((u64)DENSE_TILE, j1 - jt);
        __syncthreads();
        for (u64 t = threadIdx.x; t < DENSE_GROUP * DENSE_TILE; t += blockDim.x) {
            const u64 b = t / DENSE_TILE, jj = t % DENSE_TILE;
            xs[b][jj] = (b < g && jj < n) ? (A)grass_widen(x[(b0 + b) * in_dim + jt + jj]) : (A)0;
        }
        __syncthreads();
        if (i < k) {
            for (u64 jj = 0; jj < n; ++jj) {
                const A e = (A)dense_entry(key, kind, k, i, jt + jj, inv);
#pragma unroll
                for (int b = 0; b < DENSE_GROUP; ++b) acc[b] += xs[b][jj] * e;
            }
        }
    }
    if (i < k) {
        for (u64 b = 0; b < g; ++b) part[((u64)blockIdx.z * batch + b0 + b) * k + i] = acc[b];
    }
}

// out[t] = sum over s < n_split of part[s * n + t], in s order.
template <typename A>
__device__ __forceinline__ void dense_reduce(const A* __restrict__ part, A* __restrict__ out, u64 n, u64 n_split) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
        A s = (A)0;
        for (u64 z = 0; z < n_split; ++z) s += part[z * n + t];
        out[t] = s;
    }
}

// out[b, j] = sum over i of y[b, i] * entry(i, j), in i order.
template <typename A>
__device__ __forceinline__ void dense_transpose(const A* __restrict__ y, A* __restrict__ out, u64 batch, u64 in_dim,
                                                u64 k, u64 key, int kind, float inv) {
    __shared__ A ys[DENSE_GROUP][DENSE_TILE];
    const u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 b0 = (u64)blockIdx.y * DENSE_GROUP;
    const u64 g = min((u64)DENSE_GROUP, batch - b0);
    A acc[DENSE_GROUP];
#pragma unroll
    for (int b = 0; b < DENSE_GROUP; ++b) acc[b] = (A)0;
    for (u64 it = 0; it < k; it += DENSE_TILE) {
        const u64 n = min((u64)DENSE_TILE, k - it);
        __syncthreads();
        for (u64 t = threadIdx.x; t < DENSE_GROUP * DENSE_TILE; t += blockDim.x) {
            const u64 b = t / DENSE_TILE, ii = t % DENSE_TILE;
            ys[b][ii] = (b < g && ii < n) ? y[(b0 + b) * k + it + ii] : (A)0;
        }
        __syncthreads();
        if (j < in_dim) {
            for (u64 ii = 0; ii < n; ++ii) {
                const A e = (A)dense_entry(key, kind, k, it + ii, j, inv);
#pragma unroll
                for (int b = 0; b < DENSE_GROUP; ++b) acc[b] += ys[b][ii] * e;
            }
        }
    }
    if (j < in_dim) {
        for (u64 b = 0; b < g; ++b) out[(b0 + b) * in_dim + j] = acc[b];
    }
}

#define GRASS_DENSE_PROJECT(NAME, T, A)                                                                       \
    extern "C" __global__ void dense_project_##NAME(const T* x, A* part, u64 batch, u64 in_dim, u64 k,         \
                                                    u64 key, int kind, float inv, u64 chunk) {                \
        dense_project<T, A>(x, part, batch, in_dim, k, key, kind, inv, chunk);                                \
    }

GRASS_DENSE_PROJECT(f32, float, float)
GRASS_DENSE_PROJECT(f16, grass_f16, float)
GRASS_DENSE_PROJECT(bf16, grass_bf16, float)
GRASS_DENSE_PROJECT(f64, double, double)

#define GRASS_DENSE_ACCUM(NAME, A)                                                                            \
    extern "C" __global__ void dense_reduce_##NAME(const A* part, A* out, u64 n, u64 n_split) {                \
        dense_reduce<A>(part, out, n, n_split);                                                               \
    }                                                                                                         \
    extern "C" __global__ void dense_transpose_##NAME(const A* y, A* out, u64 batch, u64 in_dim, u64 k,        \
                                                      u64 key, int kind, float inv) {                         \
        dense_transpose<A>(y, out, batch, in_dim, k, key, kind, inv);                                         \
    }

GRASS_DENSE_ACCUM(f32, float)
GRASS_DENSE_ACCUM(f64, double)

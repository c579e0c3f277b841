// SJLT and GraSS kernels (GraSS = SJLT over the masked coordinates: column m reads input
// coordinate idx[m]; SJLT passes idx = NULL and reads coordinate m).
//
// Layout: x (batch, in_dim) row-major of T; out (batch, k) of the accumulator A (f32, or f64
// for f64 input). All offsets are 64-bit. blockIdx.y selects a group of `group` samples.
#include "common.cuh"

// Adds the group's columns m0 .. m1 into `acc` (shared or global memory, known at compile time
// so shared-memory atomics use the native shared path). Each thread computes the c entries of a
// column once and applies them to the group's g samples.
template <typename T, typename A>
__device__ __forceinline__ void sjlt_accumulate(const T* __restrict__ x, A* acc, u64 b0, u64 g, u64 in_dim,
                                                u64 k, u64 c, u64 key, u64 m0, u64 m1,
                                                const u64* __restrict__ idx) {
    for (u64 m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
        const u64 j = idx ? idx[m] : m;
        A v[GRASS_GROUP];
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) {
            v[b] = (u64)b < g ? (A)grass_widen(x[(b0 + b) * in_dim + j]) : (A)0;
        }
        // Block bounds carried from one repeat to the next (one division per repeat).
        u64 lo = 0;
        for (u64 r = 0; r < c; ++r) {
            const u32 e = grass_sjlt_next(key, k, c, m, r, &lo);
            const u64 bucket = e & ~GRASS_SIGN_BIT;
            const bool neg = (e & GRASS_SIGN_BIT) != 0;
#pragma unroll
            for (int b = 0; b < GRASS_GROUP; ++b) {
                if ((u64)b < g) atomicAdd(acc + b * k + bucket, grass_flip(v[b], neg));
            }
        }
    }
}

// Atomic projection: out must be zeroed first; with c > 1 the caller scales by 1/sqrt(c) after.
// With use_smem the block accumulates in shared memory (group * k accumulators) and flushes
// with one atomic per nonzero accumulator; otherwise it adds to `out` directly.
template <typename T, typename A>
__device__ __forceinline__ void sjlt_project_atomic(const T* __restrict__ x, A* __restrict__ out, u64 batch,
                                                    u64 in_dim, u64 k, u64 c, u64 key, u64 n_cols,
                                                    const u64* __restrict__ idx, u64 group,
                                                    u64 cols_per_block, int use_smem) {
    extern __shared__ __align__(16) unsigned char grass_smem[];
    const u64 b0 = (u64)blockIdx.y * group;
    if (b0 >= batch) return;
    const u64 g = min(group, batch - b0);
    const u64 m0 = (u64)blockIdx.x * cols_per_block;
    const u64 m1 = min(m0 + cols_per_block, n_cols);
    if (!use_smem) {
        sjlt_accumulate<T, A>(x, out + b0 * k, b0, g, in_dim, k, c, key, m0, m1, idx);
        return;
    }
    A* acc = reinterpret_cast<A*>(grass_smem);
    for (u64 i = threadIdx.x; i < g * k; i += blockDim.x) acc[i] = (A)0;
    __syncthreads();
    sjlt_accumulate<T, A>(x, acc, b0, g, in_dim, k, c, key, m0, m1, idx);
    __syncthreads();
    for (u64 i = threadIdx.x; i < g * k; i += blockDim.x) {
        const A a = acc[i];
        if (a != (A)0) atomicAdd(out + b0 * k + i, a);
    }
}

// Deterministic projection from a chunked CSR of P^T (built on the host from the same entries):
// the input coordinates are cut into n_chunks fixed chunks (GRASS_CSR_CHUNK coordinates each, so
// the gathers of one chunk stay in L2), and row (chunk, i) = row_ptr[chunk * k + i ..] lists
// (coordinate | sign bit) of bucket i's nonzeros in that chunk, in increasing column order.
// One warp per (sample group, chunk, bucket): each entry is read once for the GRASS_GROUP samples;
// lane l sums entries l, l+32, ... in order, then a fixed butterfly reduction; the chunk's sum goes
// to part[(chunk * batch + b) * k + i] (or, with one chunk, to out, scaled). `csr_reduce` adds the
// chunks in order. Every sum's order depends only on the CSR: bit-identical for any launch
// configuration and batch split.
template <typename T, typename A>
__device__ __forceinline__ void sjlt_project_csr(const T* __restrict__ x, A* __restrict__ part, u64 batch,
                                                 u64 in_dim, u64 k, u64 n_chunks, const u64* __restrict__ row_ptr,
                                                 const u32* __restrict__ entries, A scale, int apply_scale) {
    const u64 lane = threadIdx.x & 31u;
    const u64 warps_per_block = blockDim.x >> 5;
    const u64 n_warps = (u64)gridDim.x * warps_per_block;
    const u64 groups = (batch + GRASS_GROUP - 1) / GRASS_GROUP;
    const u64 rows = n_chunks * k;
    for (u64 w = (u64)blockIdx.x * warps_per_block + (threadIdx.x >> 5); w < groups * rows; w += n_warps) {
        const u64 grp = w / rows, row = w - grp * rows;
        const u64 chunk = row / k, i = row - chunk * k;
        const u64 b0 = grp * GRASS_GROUP;
        const u64 g = min((u64)GRASS_GROUP, batch - b0);
        const T* xb = x + b0 * in_dim;
        A s[GRASS_GROUP];
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) s[b] = (A)0;
        const u64 end = row_ptr[row + 1];
        for (u64 t = row_ptr[row] + lane; t < end; t += 32) {
            const u32 e = entries[t];
            const u64 j = e & ~GRASS_SIGN_BIT;
            const bool neg = (e & GRASS_SIGN_BIT) != 0;
#pragma unroll
            for (int b = 0; b < GRASS_GROUP; ++b) {
                if ((u64)b < g) s[b] += grass_flip((A)grass_widen(xb[b * in_dim + j]), neg);
            }
        }
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) s[b] += __shfl_xor_sync(0xffffffffu, s[b], off);
        }
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) {
            if (lane == (u64)b && (u64)b < g) {
                part[(chunk * batch + b0 + b) * k + i] = apply_scale ? s[b] * scale : s[b];
            }
        }
    }
}

// out[t] = (sum over chunks z of part[z * n + t], in z order) (* scale).
template <typename A>
__device__ __forceinline__ void csr_reduce(const A* __restrict__ part, A* __restrict__ out, u64 n, u64 n_chunks,
                                           A scale, int apply_scale) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
        A s = (A)0;
        for (u64 z = 0; z < n_chunks; ++z) s += part[z * n + t];
        out[t] = apply_scale ? s * scale : s;
    }
}

// Adjoint: out[b, coord(m)] = scale * sum_r sign * y[b, bucket(m, r)], summed in r order like the
// CPU (so bit-identical to it). For GraSS the caller zeroes `out` first (unmasked coordinates).
template <typename A>
__device__ __forceinline__ void sjlt_transpose(const A* __restrict__ y, A* __restrict__ out, u64 batch, u64 in_dim,
                                               u64 k, u64 c, u64 key, u64 n_cols, const u64* __restrict__ idx,
                                               A scale, int apply_scale) {
    const u64 b0 = (u64)blockIdx.y * GRASS_GROUP;
    if (b0 >= batch) return;
    const u64 g = min((u64)GRASS_GROUP, batch - b0);
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 m = (u64)blockIdx.x * blockDim.x + threadIdx.x; m < n_cols; m += stride) {
        A acc[GRASS_GROUP];
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) acc[b] = (A)0;
        u64 lo = 0;
        for (u64 r = 0; r < c; ++r) {
            const u32 e = grass_sjlt_next(key, k, c, m, r, &lo);
            const u64 bucket = e & ~GRASS_SIGN_BIT;
            const bool neg = (e & GRASS_SIGN_BIT) != 0;
#pragma unroll
            for (int b = 0; b < GRASS_GROUP; ++b) {
                if ((u64)b < g) acc[b] += grass_flip(y[(b0 + b) * k + bucket], neg);
            }
        }
        const u64 j = idx ? idx[m] : m;
#pragma unroll
        for (int b = 0; b < GRASS_GROUP; ++b) {
            if ((u64)b < g) out[(b0 + b) * in_dim + j] = apply_scale ? acc[b] * scale : acc[b];
        }
    }
}

#define GRASS_SJLT_PROJECT(NAME, T, A)                                                                        \
    extern "C" __global__ void sjlt_project_atomic_##NAME(const T* x, A* out, u64 batch, u64 in_dim, u64 k,    \
                                                          u64 c, u64 key, u64 n_cols, const u64* idx,         \
                                                          u64 group, u64 cols_per_block, int use_smem) {      \
        sjlt_project_atomic<T, A>(x, out, batch, in_dim, k, c, key, n_cols, idx, group, cols_per_block,       \
                                  use_smem);                                                                  \
    }                                                                                                         \
    extern "C" __global__ void sjlt_project_csr_##NAME(const T* x, A* part, u64 batch, u64 in_dim, u64 k,      \
                                                       u64 n_chunks, const u64* row_ptr, const u32* entries,  \
                                                       A scale, int apply_scale) {                            \
        sjlt_project_csr<T, A>(x, part, batch, in_dim, k, n_chunks, row_ptr, entries, scale, apply_scale);    \
    }

GRASS_SJLT_PROJECT(f32, float, float)
GRASS_SJLT_PROJECT(f16, grass_f16, float)
GRASS_SJLT_PROJECT(bf16, grass_bf16, float)
GRASS_SJLT_PROJECT(f64, double, double)

#define GRASS_SJLT_ACCUM(NAME, A)                                                                             \
    extern "C" __global__ void sjlt_transpose_##NAME(const A* y, A* out, u64 batch, u64 in_dim, u64 k, u64 c,  \
                                                     u64 key, u64 n_cols, const u64* idx, A scale,            \
                                                     int apply_scale) {                                       \
        sjlt_transpose<A>(y, out, batch, in_dim, k, c, key, n_cols, idx, scale, apply_scale);                 \
    }                                                                                                         \
    extern "C" __global__ void scale_##NAME(A* out, u64 n, A s) { grass_scale<A>(out, n, s); }               \
    extern "C" __global__ void csr_reduce_##NAME(const A* part, A* out, u64 n, u64 n_chunks, A scale,          \
                                                 int apply_scale) {                                           \
        csr_reduce<A>(part, out, n, n_chunks, scale, apply_scale);                                            \
    }

GRASS_SJLT_ACCUM(f32, float)
GRASS_SJLT_ACCUM(f64, double)

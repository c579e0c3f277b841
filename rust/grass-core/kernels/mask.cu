// MASK kernels: gather of the (host-computed, uploaded once) sorted mask coordinates, and the
// adjoint scatter. Every output element is one read and one optional multiply, exactly as on the
// CPU, so results are bit-identical to it (and deterministic).
#include "common.cuh"

// out[b, m] = widen(x[b, idx[m]]) (* factor); blockIdx.y (+ y0) is the sample.
template <typename T, typename A>
__device__ __forceinline__ void mask_project(const T* __restrict__ x, A* __restrict__ out, u64 batch, u64 in_dim,
                                             u64 m_dim, const u64* __restrict__ idx, A factor, int apply) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 b = blockIdx.y; b < batch; b += gridDim.y) {
        for (u64 m = (u64)blockIdx.x * blockDim.x + threadIdx.x; m < m_dim; m += stride) {
            const A v = (A)grass_widen(x[b * in_dim + idx[m]]);
            out[b * m_dim + m] = apply ? v * factor : v;
        }
    }
}

// out[b, idx[m]] = y[b, m] (* factor); the caller zeroes `out` first.
template <typename A>
__device__ __forceinline__ void mask_transpose(const A* __restrict__ y, A* __restrict__ out, u64 batch, u64 in_dim,
                                               u64 m_dim, const u64* __restrict__ idx, A factor, int apply) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 b = blockIdx.y; b < batch; b += gridDim.y) {
        for (u64 m = (u64)blockIdx.x * blockDim.x + threadIdx.x; m < m_dim; m += stride) {
            const A v = y[b * m_dim + m];
            out[b * in_dim + idx[m]] = apply ? v * factor : v;
        }
    }
}

#define GRASS_MASK_PROJECT(NAME, T, A)                                                                        \
    extern "C" __global__ void mask_project_##NAME(const T* x, A* out, u64 batch, u64 in_dim, u64 m_dim,       \
                                                   const u64* idx, A factor, int apply) {                     \
        mask_project<T, A>(x, out, batch, in_dim, m_dim, idx, factor, apply);                                 \
    }

GRASS_MASK_PROJECT(f32, float, float)
GRASS_MASK_PROJECT(f16, grass_f16, float)
GRASS_MASK_PROJECT(bf16, grass_bf16, float)
GRASS_MASK_PROJECT(f64, double, double)

#define GRASS_MASK_TRANSPOSE(NAME, A)                                                                         \
    extern "C" __global__ void mask_transpose_##NAME(const A* y, A* out, u64 batch, u64 in_dim, u64 m_dim,     \
                                                     const u64* idx, A factor, int apply) {                   \
        mask_transpose<A>(y, out, batch, in_dim, m_dim, idx, factor, apply);                                  \
    }

GRASS_MASK_TRANSPOSE(f32, float)
GRASS_MASK_TRANSPOSE(f64, double)

// Element types and helpers shared by the grass-rs kernels. No CUDA headers are needed: half
// precision values are read as raw 16-bit words and widened with PTX `cvt` / a shift.
#pragma once
#include "hash.cuh"

struct grass_f16 { u16 bits; };
struct grass_bf16 { u16 bits; };

__device__ __forceinline__ float grass_widen(float v) { return v; }
__device__ __forceinline__ double grass_widen(double v) { return v; }
__device__ __forceinline__ float grass_widen(grass_f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}
__device__ __forceinline__ float grass_widen(grass_bf16 v) {
    return __uint_as_float(((u32)v.bits) << 16);
}

// Negates v when neg (the IEEE sign flip of elem.rs `Accum::flip`).
__device__ __forceinline__ float grass_flip(float v, bool neg) {
    return __uint_as_float(__float_as_uint(v) ^ (neg ? 0x80000000u : 0u));
}
__device__ __forceinline__ double grass_flip(double v, bool neg) {
    return __longlong_as_double(__double_as_longlong(v) ^ (neg ? (long long)0x8000000000000000ULL : 0LL));
}

// Samples handled together by one thread (values kept in registers).
#define GRASS_GROUP 8
// Input coordinates per chunk of the deterministic (CSR) projection (plan.rs `CSR_CHUNK`).
#define GRASS_CSR_CHUNK (1ULL << 18)

// out[i] *= s for i < n (grid-stride, 64-bit).
template <typename A>
__device__ __forceinline__ void grass_scale(A* __restrict__ out, u64 n, A s) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = out[i] * s;
    }
}

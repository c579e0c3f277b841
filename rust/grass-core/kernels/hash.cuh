// The contract hash of grass-rs in CUDA C: the same functions as rust/grass-core/src/hash.rs.
// SplitMix64 finalizer (Stafford's Mix13), counter-based stream words, Lemire's `below`.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#define GRASS_GOLDEN 0x9E3779B97F4A7C15ULL
#define GRASS_SIGN_BIT 0x80000000u

// mix64(z): a bijection on u64 with full avalanche (hash.rs `mix64`).
__device__ __forceinline__ u64 grass_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The `counter`-th word of stream `key`: mix64(key + (counter + 1) * GOLDEN) (hash.rs `hash`).
__device__ __forceinline__ u64 grass_hash(u64 key, u64 counter) {
    return grass_mix64(key + (counter + 1ULL) * GRASS_GOLDEN);
}

// Maps a word to 0..n: the high 64 bits of the 128-bit product h * n (hash.rs `below`).
__device__ __forceinline__ u64 grass_below(u64 h, u64 n) {
    return __umul64hi(h, n);
}

// floor(r * k / c): the first bucket of block r (64-bit; 32-bit division when the product fits).
__device__ __forceinline__ u64 grass_block_start(u64 r, u64 k, u64 c) {
    const u64 prod = r * k;
    return prod <= 0xFFFFFFFFULL ? (u64)((u32)prod / (u32)c) : prod / c;
}

// The packed entry of hash word `h` in the block [lo, lo + span): bucket | sign bit.
__device__ __forceinline__ u32 grass_sjlt_pack(u64 h, u64 lo, u64 span) {
    return (u32)(lo + grass_below(h, span)) | (((u32)h & 1u) << 31);
}

// The packed SJLT entry (bucket | sign bit) of repeat r of column j (sjlt.rs `Sjlt::entry`):
// repeat r falls in block [r*k/c, (r+1)*k/c), bucket from below(h, block size), sign = low bit.
__device__ __forceinline__ u32 grass_sjlt_entry(u64 key, u64 k, u64 c, u64 j, u64 r) {
    u64 lo = 0, span = k;
    if (c != 1) {
        lo = r * k / c;
        span = (r + 1ULL) * k / c - lo;
    }
    return grass_sjlt_pack(grass_hash(key, j * c + r), lo, span);
}

// The same entry when repeats are walked in order r = 0, 1, ...: `lo` carries the start of block
// r (0 for r = 0) and is advanced to the next block, saving one division per repeat.
__device__ __forceinline__ u32 grass_sjlt_next(u64 key, u64 k, u64 c, u64 j, u64 r, u64* lo) {
    const u64 hi = c == 1 ? k : grass_block_start(r + 1, k, c);
    const u32 e = grass_sjlt_pack(grass_hash(key, j * c + r), *lo, hi - *lo);
    *lo = hi;
    return e;
}

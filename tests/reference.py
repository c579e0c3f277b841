"""Slow, obviously-correct pure-Python/torch references for the seed → matrix contract
(docs/CONTRACT.md). They share no code with the Rust core."""

from __future__ import annotations

import math

import numpy as np
import torch

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAMS = {"sjlt": 1, "mask": 2, "gaussian": 3, "rademacher": 4, "srht": 5}


def mix64(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: str) -> int:
    return mix64(seed ^ ((STREAMS[stream] * GOLDEN) & M64))


def hash64(key: int, counter: int) -> int:
    return mix64(key + (counter + 1) * GOLDEN)


def below(h: int, n: int) -> int:
    return (h * n) >> 64


def sjlt_entry(key: int, k: int, c: int, j: int, r: int) -> tuple[int, int]:
    """(bucket, sign) of repeat ``r`` of column ``j``."""
    lo, hi = r * k // c, (r + 1) * k // c
    h = hash64(key, j * c + r)
    return lo + below(h, hi - lo), -1 if h & 1 else 1


def sjlt_matrix(p: int, k: int, c: int, seed: int) -> torch.Tensor:
    key = stream_key(seed, "sjlt")
    m = torch.zeros(k, p, dtype=torch.float64)
    for j in range(p):
        for r in range(c):
            b, s = sjlt_entry(key, k, c, j, r)
            m[b, j] += s / math.sqrt(c)
    return m


def floyd(n: int, m: int, key: int) -> list[int]:
    """Floyd's algorithm driven by the stream ``key``, exactly as the contract states it."""
    chosen: set[int] = set()
    for t in range(m):
        j = n - m + t
        r = below(hash64(key, t), j + 1)
        chosen.add(j if r in chosen else r)
    return sorted(chosen)


def mask_indices(n: int, m: int, seed: int) -> list[int]:
    return floyd(n, m, stream_key(seed, "mask"))


def mask_matrix(p: int, k: int, seed: int, scale: bool = False) -> torch.Tensor:
    m = torch.zeros(k, p, dtype=torch.float64)
    f = math.sqrt(p / k) if scale else 1.0
    for row, col in enumerate(mask_indices(p, k, seed)):
        m[row, col] = f
    return m


def grass_matrix(p: int, k: int, mask_dim: int, c: int, seed: int) -> torch.Tensor:
    return sjlt_matrix(mask_dim, k, c, seed) @ mask_matrix(p, mask_dim, seed)


F32 = np.float32


def f32_ln(u: np.float32) -> np.float32:
    """The contract's float32 ``ln`` (docs/CONTRACT.md §5), one float32 operation at a time."""
    bits = int(np.array(u, dtype=np.float32).view(np.uint32))
    e0 = ((bits >> 23) & 0xFF) - 127
    m = np.array((bits & 0x007FFFFF) | 0x3F800000, dtype=np.uint32).view(np.float32)[()]
    big = m > F32(math.sqrt(2.0))
    if big:
        m = m * F32(0.5)
    e = F32(e0 + int(big))
    f = m - F32(1.0)
    s = f / (F32(2.0) + f)
    z = s * s
    p = F32(1) / F32(3) + z * (F32(1) / F32(5) + z * (F32(1) / F32(7) + z * (F32(1) / F32(9))))
    two_s = s + s
    ln_m = two_s + two_s * z * p
    return e * F32(0.693359375) + (e * F32(-2.1219444e-4) + ln_m)


def f32_cos_sin_turn(u: np.float32) -> tuple[np.float32, np.float32]:
    """The contract's float32 ``(cos 2πu, sin 2πu)`` (docs/CONTRACT.md §5)."""
    t = u * F32(4.0)
    q = np.floor(t + F32(0.5))
    x = (t - q) * F32(math.pi / 2)
    x2 = x * x
    s = x + x * x2 * (
        F32(-1) / F32(6) + x2 * (F32(1) / F32(120) + x2 * (F32(-1) / F32(5040) + x2 * (F32(1) / F32(362880))))
    )
    c = F32(1.0) + x2 * (
        F32(-0.5)
        + x2
        * (
            F32(1) / F32(24)
            + x2 * (F32(-1) / F32(720) + x2 * (F32(1) / F32(40320) + x2 * (F32(-1) / F32(3628800))))
        )
    )
    return [(c, s), (-s, c), (-c, -s), (s, -c)][int(q) % 4]


def dense_matrix(kind: str, p: int, k: int, seed: int) -> torch.Tensor:
    """Entries computed in float32 numpy, as the contract specifies (bit-exact)."""
    key = stream_key(seed, kind)
    m = np.zeros((k, p), dtype=np.float32)
    inv = F32(1.0) / np.sqrt(F32(k))
    for j in range(p):
        for i in range(k):
            n = j * k + i
            if kind == "gaussian":
                h = hash64(key, n >> 1)
                u1 = (F32(h >> 40) + F32(0.5)) * F32(1.0 / 16777216.0)
                u2 = F32((h >> 16) & 0xFFFFFF) * F32(1.0 / 16777216.0)
                r = np.sqrt(F32(-2.0) * f32_ln(u1))
                c, s = f32_cos_sin_turn(u2)
                m[i, j] = r * (c if n % 2 == 0 else s) * inv
            else:
                h = hash64(key, n >> 6)
                m[i, j] = -inv if (h >> (n & 63)) & 1 else inv
    return torch.from_numpy(m).double()

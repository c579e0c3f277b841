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


def dense_matrix(kind: str, p: int, k: int, seed: int) -> torch.Tensor:
    """Entries computed in float32 numpy, as the contract specifies."""
    key = stream_key(seed, kind)
    m = np.zeros((k, p), dtype=np.float32)
    inv = np.float32(1.0) / np.sqrt(np.float32(k))
    for j in range(p):
        for i in range(k):
            n = j * k + i
            if kind == "gaussian":
                h = hash64(key, n >> 1)
                u1 = (np.float32(h >> 40) + np.float32(0.5)) * np.float32(1.0 / 16777216.0)
                u2 = np.float32((h >> 16) & 0xFFFFFF) * np.float32(1.0 / 16777216.0)
                r = np.sqrt(np.float32(-2.0) * np.log(u1))
                t = np.float32(2 * math.pi) * u2
                z = r * (np.cos(t) if n % 2 == 0 else np.sin(t))
                m[i, j] = z * inv
            else:
                h = hash64(key, n >> 6)
                m[i, j] = -inv if (h >> (n & 63)) & 1 else inv
    return torch.from_numpy(m).double()

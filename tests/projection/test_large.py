"""64-bit indexing: batch · in_dim ≥ 2³¹ (and in_dim · c beyond the cached index table)."""

from __future__ import annotations

import pytest
import torch

import grass_rs

P = (1 << 30) + 7  # 2 × P bfloat16 elements = 4.3 GB, past 2³¹ elements


@pytest.fixture(scope="module")
def big() -> tuple[torch.Tensor, list[tuple[int, int, float]]]:
    x = torch.zeros(2, P, dtype=torch.bfloat16)  # 4.3 GB: the CI machine has 24 GB
    hits = [(0, 3, 1.5), (0, P - 1, -2.0), (1, (1 << 30) + 2, 4.0), (1, 5, 0.25)]
    for b, j, v in hits:
        x[b, j] = v
    return x, hits


def _expected_sjlt(proj: grass_rs.SJLT, hits: list[tuple[int, int, float]]) -> torch.Tensor:
    want = torch.zeros(2, proj.out_dim)
    for b, j, v in hits:
        buckets, signs = proj.columns(j, j + 1)
        want[b, buckets[0]] += v * signs[0] / proj.c**0.5
    return want


def test_sjlt_past_2_31(big: tuple) -> None:
    x, hits = big
    proj = grass_rs.SJLT(P, 256, c=2, seed=3)
    torch.testing.assert_close(proj(x), _expected_sjlt(proj, hits), rtol=0, atol=1e-6)


def test_mask_and_grass_past_2_31(big: tuple) -> None:
    x, hits = big
    mask = grass_rs.Mask(P, 1000, seed=4)
    idx = mask.indices
    assert idx[-1] < P and idx.unique().numel() == 1000
    extra = [(1, int(idx[-1]), 7.0), (0, int(idx[0]), -3.0), (1, int(idx[500]), 0.5)]
    try:
        for b, j, v in extra:
            x[b, j] = v
        want = torch.zeros(2, 1000)
        for b, j, v in hits + extra:
            want[b, idx == j] = v
        assert torch.equal(mask(x), want)
        g = grass_rs.GraSS(P, 64, mask_dim=1000, seed=4)
        torch.testing.assert_close(g(x), grass_rs.SJLT(1000, 64, seed=4)(want), rtol=0, atol=1e-6)
    finally:
        for b, j, _ in extra:
            x[b, j] = 0.0

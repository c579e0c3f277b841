"""pytest-benchmark suite of the Python API against pure-torch baselines.

Run: ``pytest benches/python/test_bench_projection.py --benchmark-enable`` (disabled in normal
test runs). Compare pairs ``grass_rs`` vs ``torch`` within one run.
"""

from __future__ import annotations

import pytest
import torch

import grass_rs

B, P, K, KP = 64, 1 << 17, 2048, 8192


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(B, P)


@pytest.mark.benchmark(group="floor")
def test_read_floor(benchmark, x: torch.Tensor) -> None:
    benchmark(x.sum)


@pytest.mark.benchmark(group="sjlt")
@pytest.mark.parametrize("c", [1, 4])
def test_grass_rs_sjlt(benchmark, x: torch.Tensor, c: int) -> None:
    benchmark(grass_rs.SJLT(P, K, c=c), x)


@pytest.mark.benchmark(group="sjlt")
@pytest.mark.parametrize("c", [1, 4])
def test_torch_index_add_sjlt(benchmark, x: torch.Tensor, c: int) -> None:
    buckets, signs = grass_rs.SJLT(P, K, c=c).columns()

    def run() -> torch.Tensor:
        out = torch.zeros(B, K)
        for r in range(c):
            out.index_add_(1, buckets[:, r], x * signs[:, r])
        return out

    benchmark(run)


@pytest.mark.benchmark(group="mask")
def test_grass_rs_mask(benchmark, x: torch.Tensor) -> None:
    benchmark(grass_rs.Mask(P, KP), x)


@pytest.mark.benchmark(group="mask")
def test_torch_index_select(benchmark, x: torch.Tensor) -> None:
    idx = grass_rs.Mask(P, KP).indices
    benchmark(x.index_select, 1, idx)


@pytest.mark.benchmark(group="grass")
def test_grass_rs_grass(benchmark, x: torch.Tensor) -> None:
    benchmark(grass_rs.GraSS(P, K, mask_dim=KP), x)

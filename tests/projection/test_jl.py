"""Johnson–Lindenstrauss distance preservation with explicit (ε, δ), on dense, sparse and
heavy-tailed vectors. Hypothesis draws seeds and shapes; the profile is derandomized, so these
never flake.

For an unbiased sketch with k = 1024 rows, ‖P(u−v)‖² / ‖u−v‖² has standard deviation at most
√(2/k) ≈ 0.044 (Gaussian, Rademacher, SJLT: Var ≤ 2/k); ε = 0.2 is ≥ 4.5σ, so the failure
fraction δ must stay below 1%.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import grass_rs

K, EPS, DELTA, N = 1024, 0.2, 0.01, 24


def vectors(kind: str, n: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "dense":
        return torch.randn(n, p, generator=g, dtype=torch.float64)
    if kind == "sparse":  # 1% nonzeros
        x = torch.randn(n, p, generator=g, dtype=torch.float64)
        return x * (torch.rand(n, p, generator=g, dtype=torch.float64) < 0.01)
    # heavy-tailed: Student-t with 2 degrees of freedom (infinite variance), z / √(χ²₂ / 2)
    z = torch.randn(n, p, generator=g, dtype=torch.float64)
    chi2 = torch.randn(n, p, 2, generator=g, dtype=torch.float64).pow(2).sum(-1)
    return z / (chi2 / 2.0).sqrt()


def distortions(proj: grass_rs.Projector, x: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(proj.project(x))
    i, j = torch.triu_indices(len(x), len(x), 1)
    num = (y[i] - y[j]).pow(2).sum(1)
    den = (x[i] - x[j]).pow(2).sum(1)
    return num / den - 1.0


def factories() -> dict:
    return {
        "sjlt_c1": lambda p, s: grass_rs.SJLT(p, K, c=1, seed=s),
        "sjlt_c4": lambda p, s: grass_rs.SJLT(p, K, c=4, seed=s),
        "gaussian": lambda p, s: grass_rs.Gaussian(p, K, seed=s),
        "rademacher": lambda p, s: grass_rs.Rademacher(p, K, seed=s),
    }


@given(
    name=st.sampled_from(sorted(factories())),
    kind=st.sampled_from(["dense", "sparse", "heavy"]),
    p=st.integers(2048, 6000),
    seed=st.integers(0, 2**64 - 1),
    data_seed=st.integers(0, 2**31 - 1),
)
def test_jl_pairwise_distances(name: str, kind: str, p: int, seed: int, data_seed: int) -> None:
    x = vectors(kind, N, p, data_seed)
    d = distortions(factories()[name](p, seed), x)
    assert d.isfinite().all()
    bad = (d.abs() > EPS).double().mean().item()
    assert bad <= DELTA, f"{name} on {kind}: {bad:.3%} of pairs distorted by more than ε={EPS}"


@given(seed=st.integers(0, 2**64 - 1), data_seed=st.integers(0, 2**31 - 1))
def test_scaled_mask_and_grass_on_dense_vectors(seed: int, data_seed: int) -> None:
    # Masking is only a JL map for "spread" vectors; on isotropic dense vectors the scaled mask
    # and GraSS (rescaled by √(p/k')) preserve distances like the others.
    p, mask_dim = 8192, 4 * K
    x = vectors("dense", N, p, data_seed)
    d_mask = distortions(grass_rs.Mask(p, 2 * K, seed=seed, scale=True), x)
    y = torch.as_tensor(grass_rs.GraSS(p, K, mask_dim=mask_dim, seed=seed).project(x)) * math.sqrt(
        p / mask_dim
    )
    i, j = torch.triu_indices(N, N, 1)
    d_grass = (y[i] - y[j]).pow(2).sum(1) / (x[i] - x[j]).pow(2).sum(1) - 1
    for d in (d_mask, d_grass):
        assert (d.abs() > EPS).double().mean().item() <= DELTA


def test_unbiased_squared_norm() -> None:
    # E‖Px‖² = ‖x‖² over seeds: the mean of 400 independent draws is within 4 standard errors.
    x = vectors("heavy", 1, 3000, 5)[0]
    for name in factories():
        k_small = 64
        ratios = torch.tensor(
            [
                float(
                    torch.as_tensor(_small(name, 3000, k_small, s).project(x)).pow(2).sum() / x.pow(2).sum()
                )
                for s in range(400)
            ]
        )
        se = ratios.std() / math.sqrt(len(ratios))
        assert abs(ratios.mean().item() - 1.0) < 4 * se.item() + 1e-3, name


def _small(name: str, p: int, k: int, s: int) -> grass_rs.Projector:
    if name.startswith("sjlt"):
        return grass_rs.SJLT(p, k, c=int(name[-1]), seed=s)
    return grass_rs.Gaussian(p, k, seed=s) if name == "gaussian" else grass_rs.Rademacher(p, k, seed=s)

"""SRHT / FJLT: matrix contract (independent Python re-implementation), adjoint, norms, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard

import grass_rs
from grass_rs import SRHT

import reference as ref
from reference import floyd, mix64, stream_key

STREAM_SRHT = "srht"
hash_ = ref.hash64


def reference(p: int, k: int, seed: int) -> torch.Tensor:
    """The contract's dense ``(k, p)`` matrix ``S H D / √k`` in float64, from first principles."""
    n = 1 << (p - 1).bit_length()
    key = stream_key(seed, STREAM_SRHT)
    d = torch.tensor([-1.0 if hash_(key, j) & 1 else 1.0 for j in range(p)], dtype=torch.float64)
    rows = floyd(n, k, mix64(key))
    h = torch.from_numpy(hadamard(n).astype(np.float64))
    return h[rows][:, :p] * d / math.sqrt(k)


@pytest.mark.parametrize(
    ("p", "k", "seed"), [(1, 1, 0), (6, 3, 7), (16, 16, 1), (50, 20, 2), (100, 128, 3), (257, 31, 2**64 - 1)]
)
def test_equals_materialized_matrix(p: int, k: int, seed: int) -> None:
    proj = SRHT(p, k, seed=seed)
    ref = reference(p, k, seed)
    torch.testing.assert_close(proj.matrix(torch.float64), ref, rtol=0, atol=1e-12)
    rows, signs = proj.parts()
    n = proj.padded_dim
    assert rows.tolist() == floyd(n, k, mix64(stream_key(seed, STREAM_SRHT)))
    assert signs.shape == (p,)
    # float32 path agrees with the float64 reference.
    x = torch.randn(4, p, generator=torch.Generator().manual_seed(seed % 1000))
    torch.testing.assert_close(proj.project(x), (x.double() @ ref.T).float(), rtol=1e-5, atol=1e-5)


def test_half_precision_inputs() -> None:
    proj = SRHT(300, 40, seed=3)
    x = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    for dt in (torch.float16, torch.bfloat16):
        xh = x.to(dt)
        got = proj.project(xh)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, proj.project(xh.float()), rtol=0, atol=0)


@pytest.mark.parametrize(("p", "k"), [(1, 1), (33, 7), (512, 64), (1000, 1024)])
def test_adjoint(p: int, k: int) -> None:
    proj = SRHT(p, k, seed=11)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, p, dtype=torch.float64, generator=g)
    y = torch.randn(3, k, dtype=torch.float64, generator=g)
    lhs = (proj.project(x) * y).sum(1)
    rhs = (x * proj.transpose(y)).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(proj.transpose(y), y @ proj.matrix(), rtol=1e-10, atol=1e-10)


def test_orthogonal_when_full() -> None:
    proj = SRHT(64, 64, seed=5)
    m = proj.matrix()
    torch.testing.assert_close(m @ m.T, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-12)


def test_norm_preserved_in_expectation() -> None:
    """Over 400 seeds, mean ‖Px‖²/‖x‖² for a fixed spiky x is 1 within 4 standard errors."""
    p, k, trials = 200, 32, 400
    x = torch.zeros(1, p, dtype=torch.float64)
    x[0, :5] = torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0])
    ratios = np.array(
        [float((SRHT(p, k, seed=s).project(x) ** 2).sum() / (x**2).sum()) for s in range(trials)]
    )
    se = ratios.std(ddof=1) / math.sqrt(trials)
    assert abs(ratios.mean() - 1.0) < 4 * se + 1e-12, (ratios.mean(), se)
    # And it is a genuine random quantity (not trivially 1), so the test can fail.
    assert ratios.std() > 0.01


def test_seed_determinism_and_sensitivity() -> None:
    x = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    a, b, c = SRHT(100, 10, seed=1), SRHT(100, 10, seed=1), SRHT(100, 10, seed=2)
    assert torch.equal(a.project(x), b.project(x))
    assert not torch.equal(a.project(x), c.project(x))
    # Batch splits do not change results.
    torch.testing.assert_close(torch.cat([a.project(x[:1]), a.project(x[1:])]), a.project(x), rtol=0, atol=0)


def test_numpy_and_1d() -> None:
    proj = SRHT(20, 8, seed=0)
    x = np.arange(20, dtype=np.float64)
    out = proj.project(x)
    assert isinstance(out, np.ndarray)
    assert out.shape == (8,)
    np.testing.assert_allclose(out, proj.matrix().numpy() @ x, atol=1e-12)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((0, 1), {}, "in_dim"),
        ((10, 0), {}, "out_dim"),
        ((10, 17), {}, "out_dim"),
        ((10, 4), {"seed": -1}, "seed"),
        ((10, 4), {"seed": 2**64}, "seed"),
    ],
)
def test_bad_arguments(args: tuple[int, int], kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SRHT(*args, **kwargs)


def test_bad_shapes() -> None:
    proj = SRHT(10, 4)
    with pytest.raises(ValueError, match="in_dim"):
        proj.project(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="out_dim"):
        proj.transpose(torch.zeros(2, 5))


def test_exported() -> None:
    assert grass_rs.SRHT is SRHT
    assert "SRHT" in grass_rs.__all__
    assert repr(SRHT(10, 4, seed=3)) == "SRHT(in_dim=10, out_dim=4, seed=3)"


# --- the torch path (non-CPU devices, e.g. CUDA), checked here on CPU tensors --------------------


@pytest.mark.parametrize("n", [1, 2, 8, 64, 512])
def test_fwht_is_the_sylvester_hadamard_product(n: int) -> None:
    from grass_rs.projection import fwht

    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    h = torch.from_numpy(hadamard(n).astype(np.float64))
    torch.testing.assert_close(fwht(x.clone()), x @ h)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(2, 6))


@pytest.mark.parametrize(("p", "k"), [(1, 1), (37, 5), (64, 64), (1000, 128)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_torch_path_matches_rust(p: int, k: int, dtype: torch.dtype) -> None:
    proj = SRHT(p, k, seed=p + k)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, p, generator=gen).to(dtype)
    y = torch.randn(4, k, generator=gen).to(dtype)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    got = proj._project_torch(x)
    assert got.dtype == proj.project(x).dtype
    torch.testing.assert_close(got, proj.project(x), **tol)
    torch.testing.assert_close(proj._transpose_torch(y), proj.transpose(y), **tol)

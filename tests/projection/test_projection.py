"""Every projector against independent materialized references, plus structure, adjoint,
determinism, dtypes and array kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grass_rs

import reference as ref

P, K = 300, 40


def make_all(p: int = P, k: int = K, seed: int = 7) -> dict[str, grass_rs.Projector]:
    return {
        "sjlt_c1": grass_rs.SJLT(p, k, seed=seed),
        "sjlt_c3": grass_rs.SJLT(p, k, c=3, seed=seed),
        "mask": grass_rs.Mask(p, k, seed=seed),
        "mask_scaled": grass_rs.Mask(p, k, seed=seed, scale=True),
        "grass": grass_rs.GraSS(p, k, mask_dim=4 * k, seed=seed),
        "grass_c2": grass_rs.GraSS(p, k, mask_dim=2 * k, c=2, seed=seed),
        "gaussian": grass_rs.Gaussian(p, k, seed=seed),
        "rademacher": grass_rs.Rademacher(p, k, seed=seed),
    }


def reference_matrix(name: str, p: grass_rs.Projector) -> torch.Tensor:
    """The matrix built from docs/CONTRACT.md by tests/reference.py (no shared code)."""
    pi, k, s = p.in_dim, p.out_dim, p.seed
    if name.startswith("sjlt"):
        return ref.sjlt_matrix(pi, k, p.c, s)  # type: ignore[attr-defined]
    if name.startswith("mask"):
        return ref.mask_matrix(pi, k, s, scale=p.scale)  # type: ignore[attr-defined]
    if name.startswith("grass"):
        return ref.grass_matrix(pi, k, p.mask_dim, p.c, s)  # type: ignore[attr-defined]
    return ref.dense_matrix(name, pi, k, s)


NAMES = list(make_all())


@pytest.fixture(scope="module")
def projectors() -> dict[str, grass_rs.Projector]:
    return make_all()


@pytest.mark.parametrize("name", NAMES)
def test_equals_reference_matrix(projectors: dict, name: str) -> None:
    p = projectors[name]
    m_ref = reference_matrix(name, p)
    # The materialized matrix (projecting the identity) is the contract's matrix ...
    torch.testing.assert_close(p.matrix(), m_ref, rtol=1e-6, atol=1e-7)
    # ... and projecting data is multiplying by it, in float64 and float32.
    x = torch.randn(9, P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(p.project(x), x @ m_ref.T, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        p.project(x.float()).double(), x.float().double() @ m_ref.T, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("c", [1, 2, 5])
def test_sjlt_column_structure(c: int) -> None:
    p = grass_rs.SJLT(500, 64, c=c, seed=3)
    m = p.matrix()
    nz = m != 0
    assert (nz.sum(0) == c).all(), "every column has exactly c nonzeros"
    assert torch.allclose(m[nz].abs(), torch.full_like(m[nz], c**-0.5))
    buckets, _ = p.columns()
    assert all(len(set(row)) == c for row in buckets.tolist()), "the c buckets of a column are distinct"
    # Both signs and every bucket are used.
    assert (m > 0).any() and (m < 0).any() and nz.any(1).all()


def test_mask_structure() -> None:
    p = grass_rs.Mask(1000, 100, seed=5)
    idx = p.indices.tolist()
    assert idx == sorted(set(idx)) and len(idx) == 100 and 0 <= idx[0] and idx[-1] < 1000
    m = p.matrix()
    assert (m.sum(1) == 1).all() and (m.sum(0) <= 1).all()
    assert torch.equal(m.nonzero()[:, 1], p.indices)


def test_mask_is_uniform() -> None:
    # Each coordinate is kept with probability m/n: count over many seeds (chi-square-free check
    # with a 6-sigma band, deterministic seeds).
    n, m, trials = 20, 5, 2000
    counts = torch.zeros(n)
    for s in range(trials):
        counts[grass_rs.Mask(n, m, seed=s).indices] += 1
    expect = trials * m / n
    sigma = (trials * (m / n) * (1 - m / n)) ** 0.5
    assert ((counts - expect).abs() < 6 * sigma).all(), counts


def test_grass_is_sjlt_after_mask() -> None:
    x = torch.randn(6, 5000, dtype=torch.float64)
    g = grass_rs.GraSS(5000, 64, mask_dim=512, c=2, seed=11)
    mask = grass_rs.Mask(5000, 512, seed=11)
    sjlt = grass_rs.SJLT(512, 64, c=2, seed=11)
    assert torch.equal(g.indices, mask.indices)
    assert torch.equal(g.project(x), sjlt.project(mask.project(x)))
    y = torch.randn(6, 64, dtype=torch.float64)
    assert torch.equal(g.transpose(y), mask.transpose(sjlt.transpose(y)))


@pytest.mark.parametrize("name", NAMES)
def test_adjoint(projectors: dict, name: str) -> None:
    p = projectors[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, P, dtype=torch.float64, generator=g)
    y = torch.randn(5, K, dtype=torch.float64, generator=g)
    lhs = (p.project(x) * y).sum(1)
    rhs = (x * p.transpose(y)).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p.transpose(y), y @ p.matrix(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_seed_reproducibility(name: str) -> None:
    x = torch.randn(4, P)
    a, b, c = make_all(seed=123)[name], make_all(seed=123)[name], make_all(seed=124)[name]
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize("name", NAMES)
def test_thread_count_and_batch_split_determinism(name: str) -> None:
    p = make_all(p=3000, k=128)[name]
    x = torch.randn(37, 3000)
    before = grass_rs.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            grass_rs.set_num_threads(n)
            assert grass_rs.get_num_threads() == n
            outs.append(p(x))
        assert all(torch.equal(outs[0], o) for o in outs[1:])
        parts = torch.cat([p(x[:1]), p(x[1:10]), p(x[10:])])
        assert torch.equal(outs[0], parts)
        assert torch.equal(outs[0][5], p(x[5]))
    finally:
        grass_rs.set_num_threads(before)


@pytest.mark.parametrize(
    "make",
    [
        lambda: grass_rs.SJLT((1 << 15) + 37, 300, c=2, seed=3),
        lambda: grass_rs.SJLT((1 << 15) + 37, 301, c=3, seed=4),
        lambda: grass_rs.SJLT((1 << 16) + 5, 64, c=4, seed=5),
        lambda: grass_rs.GraSS(1 << 17, 96, mask_dim=(1 << 15) + 8, c=4, seed=6),
    ],
)
def test_one_large_sample_with_repeats_is_the_batch_row(make) -> None:
    # One large sample with c ≥ 2 is projected by its repeats in parallel: the same bits as
    # the lane-group path of a batch, on any thread count, and the matrix product's values.
    p = make()
    x = torch.randn(20, p.in_dim, generator=torch.Generator().manual_seed(9))
    before = grass_rs.get_num_threads()
    try:
        batch = p(x)
        for n in (1, 2, 3):
            grass_rs.set_num_threads(n)
            for i in (0, 7):
                assert torch.equal(p(x[i]), batch[i]), (n, i)
                assert torch.equal(p(x[i : i + 1])[0], batch[i]), (n, i)
    finally:
        grass_rs.set_num_threads(before)
    # The matrix row by row through the adjoint (`matrix()` would build the p × p identity).
    m = p.transpose(torch.eye(p.out_dim, dtype=torch.float64))
    want = x[:2].double() @ m.T
    torch.testing.assert_close(p(x[:2].double()), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_inputs_accumulate_in_float32(projectors: dict, name: str, dtype: torch.dtype) -> None:
    p = projectors[name]
    x = torch.randn(4, P).to(dtype)
    out = p(x)
    assert out.dtype == torch.float32
    # Widening is exact, so a half input gives bit-for-bit the float32 result of its upcast.
    assert torch.equal(out, p(x.float()))


def test_output_kinds_and_shapes(projectors: dict) -> None:
    p = projectors["sjlt_c1"]
    x = np.random.default_rng(0).standard_normal((3, P))
    out = p(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (3, K)
    np.testing.assert_allclose(out, p(torch.from_numpy(x)).numpy())
    one = p(x[0].astype(np.float32))
    assert isinstance(one, np.ndarray) and one.shape == (K,) and one.dtype == np.float32
    t = p(torch.randn(P))
    assert isinstance(t, torch.Tensor) and t.shape == (K,)
    assert p(np.zeros((0, P), dtype=np.float32)).shape == (0, K)
    assert p(torch.zeros(0, P)).shape == (0, K)
    assert p.transpose(torch.zeros(0, K)).shape == (0, P)
    assert "SJLT(in_dim=300, out_dim=40, c=1, seed=7)" == repr(p)


def test_noncontiguous_and_readonly_inputs(projectors: dict) -> None:
    p = projectors["grass"]
    base = torch.randn(P, 8, dtype=torch.float64)
    x = base.T  # non-contiguous view
    assert torch.equal(p(x), p(x.contiguous()))
    strided = torch.randn(4, 2 * P, dtype=torch.float64)[:, ::2]
    assert torch.equal(p(strided), p(strided.contiguous()))
    arr = np.random.default_rng(1).standard_normal((2, P))
    arr.setflags(write=False)
    np.testing.assert_array_equal(p(arr), p(arr.copy()))
    big_endian = arr.astype(">f8")
    np.testing.assert_array_equal(p(big_endian), p(arr.copy()))
    with_grad = torch.randn(3, P, requires_grad=True)
    assert torch.equal(p(with_grad), p(with_grad.detach()))


def test_sparse_inputs_exact() -> None:
    # A one-hot input selects exactly one column of the matrix.
    p = grass_rs.SJLT(10_000, 256, c=4, seed=9)
    buckets, signs = p.columns(1234, 1235)
    x = torch.zeros(10_000, dtype=torch.float64)
    x[1234] = 3.0
    want = torch.zeros(256, dtype=torch.float64)
    want[buckets[0]] = 3.0 * signs[0].double() / 2.0
    assert torch.equal(p(x), want)

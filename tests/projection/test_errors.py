"""Bad input gives a clear ValueError/TypeError naming the argument — never a crash."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import grass_rs
from grass_rs import _core


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: grass_rs.SJLT(0, 4), ValueError, "in_dim"),
        (lambda: grass_rs.SJLT(10, 0), ValueError, "out_dim"),
        (lambda: grass_rs.SJLT(10, 4, c=0), ValueError, "`c`"),
        (lambda: grass_rs.SJLT(10, 4, c=5), ValueError, "`c`"),
        (lambda: grass_rs.SJLT(10, 4, seed=-1), ValueError, "seed"),
        (lambda: grass_rs.SJLT(10, 4, seed=2**64), ValueError, "seed"),
        (lambda: grass_rs.SJLT(10, 4, seed=1.5), TypeError, "seed"),
        (lambda: grass_rs.SJLT(10.0, 4), TypeError, "in_dim"),
        (lambda: grass_rs.SJLT(True, 4), TypeError, "in_dim"),
        (lambda: grass_rs.SJLT(10, 2**31), ValueError, "out_dim"),
        (lambda: grass_rs.Mask(10, 11), ValueError, "out_dim"),
        (lambda: grass_rs.GraSS(100, 10, mask_dim=5), ValueError, "mask_dim"),
        (lambda: grass_rs.GraSS(100, 10, mask_dim=101), ValueError, "mask_dim"),
        (lambda: grass_rs.GraSS(100, 10, mask_dim=20, c=11), ValueError, "`c`"),
        (lambda: grass_rs.Gaussian(10, -3), ValueError, "out_dim"),
        (lambda: grass_rs.Rademacher(10, 3, seed="1"), TypeError, "seed"),
    ],
)
def test_bad_constructor_arguments(factory, exc: type, match: str) -> None:
    with pytest.raises(exc, match=re.escape(match)):
        factory()


def test_core_rejects_bad_arguments_too() -> None:
    # The Rust core validates on its own (defense in depth behind the Python checks).
    with pytest.raises(ValueError, match="c"):
        _core.Projector.sjlt(10, 4, 9, 0)
    with pytest.raises(ValueError, match="mask_dim"):
        _core.Projector.grass(10, 4, 2, 1, 0)
    with pytest.raises(OverflowError):
        _core.Projector.sjlt(10, 4, 1, -1)


ALL = [
    grass_rs.SJLT(16, 4, c=2),
    grass_rs.Mask(16, 4),
    grass_rs.GraSS(16, 4, mask_dim=8),
    grass_rs.Gaussian(16, 4),
    grass_rs.Rademacher(16, 4),
]


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_bad_inputs(p: grass_rs.Projector) -> None:
    with pytest.raises(ValueError, match="last dimension in_dim = 16"):
        p(torch.zeros(2, 15))
    with pytest.raises(ValueError, match=re.escape("(in_dim,) or (batch, in_dim)")):
        p(torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match=re.escape("(in_dim,) or (batch, in_dim)")):
        p(torch.tensor(1.0))
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        p(torch.zeros(2, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        p(torch.zeros(2, 16, dtype=torch.complex64))
    with pytest.raises(TypeError, match="float array"):
        p(np.zeros((2, 16), dtype=np.int32))
    with pytest.raises(TypeError, match=r"torch\.Tensor or numpy\.ndarray"):
        p([[0.0] * 16])
    with pytest.raises(ValueError, match="last dimension out_dim = 4"):
        p.transpose(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unsupported device"):
        p(torch.zeros(2, 16, device="meta"))


def test_core_checks_buffers() -> None:
    core = _core.Projector.sjlt(16, 4, 1, 0)
    x = torch.zeros(3, 16)
    with pytest.raises(ValueError, match="`out` must have 3 rows"):
        core.project(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`out` must have 4 columns"):
        core.project(x, torch.zeros(3, 5))
    with pytest.raises(TypeError, match="float64 for float64 input"):
        core.project(x, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        core.project(torch.zeros(16, 3).T, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="overlap"):
        buf = torch.zeros(3, 16)
        core.project(buf, buf.view(-1)[:12].view(3, 4))
    with pytest.raises(TypeError, match="DLPack"):
        core.project([1.0], torch.zeros(1, 4))


@pytest.mark.skipif(
    not torch.cuda.is_available() or grass_rs.cuda_available(),
    reason="needs torch CUDA without grass-rs CUDA",
)
def test_cuda_tensor_without_cuda_path() -> None:
    with pytest.raises(grass_rs.CudaUnavailableError, match="CUDA"):
        grass_rs.SJLT(16, 4)(torch.zeros(2, 16, device="cuda"))


# ---- issue 16: unclear errors made clear ---------------------------------------------------------
def test_sparse_nested_and_longdouble_inputs_are_explained() -> None:
    p = grass_rs.SJLT(16, 4)
    with pytest.raises(TypeError, match=r"layout torch\.sparse_coo.*to_dense"):
        p(torch.randn(2, 16).to_sparse())
    with pytest.raises(TypeError, match="nested tensor"):
        p(torch.nested.nested_tensor([torch.randn(16), torch.randn(16)], layout=torch.jagged))
    with pytest.raises(
        TypeError, match=r"float array \(float16, float32 or float64\), got dtype float128.*astype"
    ):
        p(np.zeros((2, 16), dtype=np.longdouble))
    big_endian = np.arange(32, dtype=">f8").reshape(2, 16)
    assert np.array_equal(p(big_endian), p(big_endian.astype("<f8")))  # byte order is handled


def test_huge_dimensions_and_bad_column_ranges_name_the_argument() -> None:
    with pytest.raises(ValueError, match=re.escape("`in_dim` must be at most 2**63 - 1")):
        grass_rs.SJLT(2**64, 4)
    with pytest.raises(ValueError, match="`out_dim` must be at most"):
        grass_rs.Gaussian(4, 2**70)
    s = grass_rs.SJLT(10, 4, c=2)
    with pytest.raises(ValueError, match=re.escape("`start` must be in [0, 10], got -5")):
        s.columns(-5, 2)
    with pytest.raises(ValueError, match=re.escape("`stop` must be in [0, 10], got 11")):
        s.columns(0, 11)
    with pytest.raises(ValueError, match=r"`stop` .* must be ≥ `start`"):
        s.columns(5, 2)
    with pytest.raises(TypeError, match="`start` must be an int"):
        s.columns(1.5)
    buckets, signs = s.columns(3, 3)
    assert buckets.shape == signs.shape == (0, 2)
    g = grass_rs.GraSS(100, 4, mask_dim=8)
    with pytest.raises(ValueError, match=re.escape("`stop` must be in [0, 8]")):
        g.columns(0, 9)


def test_core_borrows_every_kind_of_tensor_alike() -> None:
    """Plain tensors take torch's C++ DLPack exporter, everything else ``__dlpack__``: same results,
    same refusals (a tensor that requires grad is refused as ``__dlpack__`` refuses it)."""
    core = _core.Projector.sjlt(16, 4, 1, 0)
    x = torch.randn(3, 16)
    want = torch.zeros(3, 4)
    core.project(x.numpy(), want.numpy())  # numpy arrays: the __dlpack__ way
    assert want.abs().sum() > 0
    for arg in (x, torch.nn.Parameter(x.clone(), requires_grad=False), x.clone()[:, :]):
        out = torch.zeros(3, 4)
        core.project(arg, out)
        assert torch.equal(out, want)
    with pytest.raises(TypeError, match="require gradient"):
        core.project(x.clone().requires_grad_(), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="require gradient"):
        core.project(x, torch.zeros(3, 4, requires_grad=True))

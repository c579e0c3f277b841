"""Projectors pickle / deep-copy by their parameters, and are differentiable (the adjoint is the
backward), including under ``torch.func`` transforms (issue 16, items 8 and "requires_grad")."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import grass_rs

ALL = [
    grass_rs.SJLT(24, 6, c=2, seed=3),
    grass_rs.Mask(24, 6, seed=2, scale=True),
    grass_rs.GraSS(24, 6, mask_dim=12, c=2, seed=5),
    grass_rs.Gaussian(24, 6, seed=1),
    grass_rs.Rademacher(24, 6, seed=4),
    grass_rs.SRHT(24, 6, seed=9),
]


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_pickle_and_deepcopy_rebuild_the_same_matrix(p: grass_rs.Projector) -> None:
    x = torch.randn(5, 24, dtype=torch.float64)
    _ = p(x), getattr(p, "indices", None)  # fill the caches first
    if isinstance(p, grass_rs.SRHT):
        p._project_torch(x)
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), copy.copy(p)):
        assert type(q) is type(p) and q == p and repr(q) == repr(p) and hash(q) == hash(p)
        assert torch.equal(q(x), p(x)) and torch.equal(q.transpose(p(x)), p.transpose(p(x)))
    assert p != grass_rs.SJLT(24, 6, seed=12345)


def test_deepcopy_and_torch_save_of_a_model_holding_projectors() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
    model.proj = grass_rs.GraSS(24, 6, mask_dim=12)  # type: ignore[assignment]
    twin = copy.deepcopy(model)
    assert twin.proj == model.proj and twin.proj is not model.proj
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(2, 24)
    assert torch.equal(loaded.proj(x), model.proj(x))


def test_deepcopy_of_a_model_with_an_attached_handle() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with grass_rs.attach(model, grass_rs.Full(grass_rs.SJLT, out_dim=8)):
        x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_autograd_through_project_and_transpose(p: grass_rs.Projector) -> None:
    x = torch.randn(3, 24, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(p.project, (x,))
    assert torch.autograd.gradcheck(p.transpose, (y,))
    assert torch.autograd.gradgradcheck(p.project, (x,))
    out = p(x)
    assert out.requires_grad and out.grad_fn is not None
    (out * y.detach()).sum().backward()
    torch.testing.assert_close(x.grad, p.transpose(y.detach()))  # ∂/∂x ⟨Px, y⟩ = Pᵀy
    one = torch.randn(24, dtype=torch.float64, requires_grad=True)  # 1-D input
    assert torch.autograd.gradcheck(p.project, (one,))


def test_autograd_keeps_the_input_dtype_and_no_grad_is_untracked() -> None:
    p = grass_rs.SJLT(16, 4)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = torch.randn(2, 16, dtype=dtype, requires_grad=True)
        p(x).sum().backward()
        assert x.grad is not None and x.grad.dtype == dtype
    with torch.no_grad():
        assert not p(torch.randn(2, 16, requires_grad=True)).requires_grad


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_torch_func_transforms(p: grass_rs.Projector) -> None:
    x = torch.randn(5, 24, dtype=torch.float64)
    m = p.matrix()
    assert torch.equal(torch.func.vmap(p)(x), p(x))
    torch.testing.assert_close(torch.func.vmap(torch.func.vmap(p))(x.reshape(1, 5, 24))[0], p(x))
    torch.testing.assert_close(torch.func.vmap(p, in_dims=1)(x.T.contiguous()), p(x))
    torch.testing.assert_close(torch.func.jacrev(p)(x[0]), m)
    torch.testing.assert_close(torch.func.jacfwd(p)(x[0]), m)
    per_sample = torch.func.vmap(torch.func.grad(lambda v: (p(v) ** 2).sum()))(x)
    torch.testing.assert_close(per_sample, 2 * p(x) @ m)

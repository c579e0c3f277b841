"""The cheaper per-call paths of whole-model capture give the same results as before (issue 14)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import grass_rs
from grass_rs.capture import hooks as H
from grass_rs.capture import kernels as K
from grass_rs.capture import layers as L
from grass_rs.capture.compressors import FactGraSSCompressor


def _old_layernorm_input(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The x̂ formula before the in-place rewrite (the reference bits)."""
    dims = tuple(range(-len(module.normalized_shape), 0))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    var, mean = torch.var_mean(xf, dim=dims, unbiased=False, keepdim=True)
    xhat = (xf - mean) * torch.rsqrt(var + module.eps)
    return xhat.reshape(*x.shape[: x.ndim - len(dims)], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [[7], [3, 5]])
def test_layernorm_input_is_bit_identical_to_the_old_formula(dtype: torch.dtype, shape: list[int]) -> None:
    gen = torch.Generator().manual_seed(3)
    ln = nn.LayerNorm(shape, eps=1e-3).to(dtype)
    x = (torch.randn(4, 6, *shape, generator=gen) * 3 + 1).to(dtype)
    assert H.LAYERNORM_STATS == "recompute"
    assert torch.equal(H._layernorm_input(ln, x, ln(x)), _old_layernorm_input(ln, x))


@pytest.mark.parametrize("bias", [False, True])
def test_masked_outer_with_cached_index_lists_is_bit_identical(bias: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    info = L.LayerInfo("fc", "linear", 40, 30, bias)
    comp = FactGraSSCompressor(info, 16, 8, 1, 11)
    go, x = torch.randn(3, 5, 40, generator=gen), torch.randn(3, 5, 30, generator=gen)
    rows, cols = comp.mask_out.indices, comp._cols
    old = K.masked_outer(info, go, x, rows, cols, comp._bias_col, torch.float32)
    new = K.masked_outer(
        info, go, x, rows, cols, comp._bias_col, torch.float32, (rows.tolist(), cols.tolist())
    )
    assert torch.equal(old, new)
    first, second = comp.compress_factors(go, x), comp.compress_factors(go, x)  # lists built, then reused
    assert comp._lists is not None
    assert torch.equal(first, second)
    assert torch.equal(first, torch.as_tensor(grass_rs.SJLT(comp.sjlt.in_dim, 16, seed=comp.sjlt.seed)(old)))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.fc(x))))


def _capture(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    old = H.LAYERNORM_STATS
    H.LAYERNORM_STATS = mode
    try:
        with grass_rs.attach(model, grass_rs.FactGraSS(16, mask_dim=36, seed=2)) as h:
            nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").backward()
        out = h.gradients()
        assert isinstance(out, dict)
        return out
    finally:
        H.LAYERNORM_STATS = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_layernorm_stats_match_recompute_and_torch_func(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = _Net().to(dtype)
    x, y = torch.randn(4, 5, 6, dtype=dtype), torch.randint(0, 3, (4, 5))
    exact, saved = _capture(model, x, y, "recompute"), _capture(model, x, y, "saved")
    assert list(exact) == list(saved)
    for name in ("fc", "head"):  # matrix layers do not read x̂: same bits
        assert torch.equal(exact[name], saved[name])
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(saved["norm"], exact["norm"], rtol=tol, atol=tol)

    # against torch.func: the LayerNorm's exact per-sample [∂γ | ∂β], compressed the same way
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xs.unsqueeze(0),))
        return nn.functional.cross_entropy(out.flatten(0, 1), ys, reduction="sum")

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    ref = torch.cat([g["norm.weight"], g["norm.bias"]], dim=1)
    comp = grass_rs.FactGraSS(16, mask_dim=36, seed=2).build(L.describe("norm", model.norm))
    torch.testing.assert_close(saved["norm"], comp.compress_full(ref), rtol=tol * 10, atol=tol * 10)


def test_saved_stats_fall_back_when_the_output_is_not_a_layer_norm() -> None:
    ln = nn.LayerNorm(4)
    x = torch.randn(2, 3, 4, requires_grad=True)
    assert H._saved_stats(ln, x, x * 2) is None  # not native_layer_norm's output
    with torch.no_grad():
        assert H._saved_stats(ln, x, ln(x)) is None  # no graph
    mean, rstd = H._saved_stats(ln, x, ln(x)) or (None, None)
    assert mean is not None and rstd is not None and mean.shape == (2, 3, 1)
    old = H.LAYERNORM_STATS
    try:
        H.LAYERNORM_STATS = "saved"
        xd = x.detach()
        torch.testing.assert_close(H._layernorm_input(ln, xd, x * 2), _old_layernorm_input(ln, xd))
        torch.testing.assert_close(
            H._layernorm_input(ln, xd, ln(x)), _old_layernorm_input(ln, xd), rtol=1e-5, atol=1e-5
        )
    finally:
        H.LAYERNORM_STATS = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 8, 20])
@pytest.mark.parametrize("bias", [False, True])
def test_masked_outer_projected_in_the_same_pass_is_bit_identical(
    batch: int, bias: bool, dtype: torch.dtype
) -> None:
    """``project=`` gives the bits of the blocks projected after (whole samples per worker and,
    for small batches, rows split between workers), and FactGraSS's layer path uses it."""
    gen = torch.Generator().manual_seed(batch)
    info = L.LayerInfo("fc", "linear", 96, 50, bias)
    comp = FactGraSSCompressor(info, 64, 16, 2, 5)
    go = torch.randn(batch, 130, 96, generator=gen, dtype=dtype)
    x = torch.randn(batch, 130, 50, generator=gen, dtype=dtype)
    rows, cols = comp.mask_out.indices, comp._cols
    block = K.masked_outer(info, go, x, rows, cols, comp._bias_col, dtype)
    want = comp.sjlt.project(block)
    got = K.masked_outer(info, go, x, rows, cols, comp._bias_col, dtype, project=comp.sjlt)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)
    assert torch.equal(comp.compress_factors(go, x), want)
    before = grass_rs.get_num_threads()
    try:
        for threads in (1, 3):  # whole samples per worker or rows split: the same bits
            grass_rs.set_num_threads(threads)
            assert torch.equal(comp.compress_factors(go, x), want)
    finally:
        grass_rs.set_num_threads(before)
    # The torch path (autograd inputs) projects its blocks the same way.
    slow = K.masked_outer(info, go.requires_grad_(), x, rows, cols, comp._bias_col, dtype, project=comp.sjlt)
    torch.testing.assert_close(slow.detach(), want)


def test_masked_outer_rejects_a_projection_that_does_not_fit() -> None:
    go, x = torch.zeros(2 * 3, 4), torch.zeros(2 * 3, 5)
    out = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="sjlt"):  # the block is 2 · (2 + 1)
        grass_rs._core.masked_outer(go, x, 3, [0, 2], [1, 3], True, out, grass_rs.SJLT(5, 8)._core)
    with pytest.raises(TypeError, match="sjlt"):
        grass_rs._core.masked_outer(go, x, 3, [0, 2], [1, 3], True, out, grass_rs.Mask(8, 6)._core)
    with pytest.raises(ValueError, match="`out`"):
        grass_rs._core.masked_outer(
            go, x, 3, [0, 2], [1, 3], True, torch.zeros(2, 7), grass_rs.SJLT(6, 8)._core
        )
    grass_rs._core.masked_outer(go, x, 3, [0, 2], [1, 3], True, out, grass_rs.SJLT(6, 8)._core)

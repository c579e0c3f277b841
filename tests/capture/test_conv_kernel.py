"""The fused Rust FactGraSS kernel for convolutions (``_core.conv_masked_outer``).

Every check is against float64 references: per-sample parameter gradients from ``torch.func``
(``vmap(grad)`` of the module alone) and masked blocks formed from ``F.unfold``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import grass_rs
from grass_rs import _core
from grass_rs.capture import kernels as K
from grass_rs.capture import layers as L
from grass_rs.errors import InvalidArgumentError

F = nn.functional

# (module builder, input shape): stride / padding / dilation / bias variants, asymmetric "same"
# padding, 1-D convolutions, kernels as large as the input, 1 × 1 kernels, odd sizes.
CASES = {
    "3x3-pad1": (lambda: nn.Conv2d(5, 7, 3, padding=1), (3, 5, 9, 11)),
    "stride-dilation-nobias": (
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), bias=False),
        (2, 4, 10, 8),
    ),
    "stride>kernel": (lambda: nn.Conv2d(3, 5, 2, stride=3, padding=2), (2, 3, 13, 7)),
    "same-even-kernel": (lambda: nn.Conv2d(4, 6, 4, padding="same"), (2, 4, 7, 6)),
    "same-dilated": (lambda: nn.Conv2d(3, 4, 3, padding="same", dilation=2), (2, 3, 6, 9)),
    "kernel-fills-input": (lambda: nn.Conv2d(3, 4, (5, 6)), (3, 3, 5, 6)),
    "pointwise": (lambda: nn.Conv2d(9, 3, 1, bias=False), (2, 9, 3, 5)),
    "big-padding": (lambda: nn.Conv2d(2, 3, 3, padding=4, stride=2), (2, 2, 5, 4)),
    "many-positions": (lambda: nn.Conv2d(3, 8, 3, padding=1), (2, 3, 23, 19)),
    "conv1d": (lambda: nn.Conv1d(3, 6, 5, stride=2, padding=3, dilation=2), (4, 3, 30)),
    "conv1d-nobias-long": (lambda: nn.Conv1d(2, 5, 3, bias=False), (2, 2, 301)),
    "reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 6, 7)),
    "circular-1d": (lambda: nn.Conv1d(2, 4, 3, padding=2, padding_mode="circular"), (3, 2, 9)),
}


def per_sample_grad(m: nn.Module, x: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """``[∂W.reshape(C_out, -1) | ∂b]`` per sample for ``loss = Σ out · go`` (float64, torch.func)."""
    params = {n: p.detach() for n, p in m.named_parameters()}

    def loss(p, xi, gi):
        return (functional_call(m, p, (xi.unsqueeze(0),)) * gi.unsqueeze(0)).sum()

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, go)
    w = g["weight"].reshape(x.shape[0], m.out_channels, -1)
    return torch.cat([w, g["bias"].unsqueeze(-1)], dim=2) if "bias" in g else w


def build(name: str, dtype=torch.float64, seed: int = 0):
    make, shape = CASES[name]
    torch.manual_seed(seed)
    m = make().to(dtype)
    x = torch.randn(*shape, dtype=dtype)
    go = torch.randn_like(m(x).detach())
    return m, L.describe("conv", m), x, go


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("k", [4, 16, 64])
def test_factgrass_matches_torch_func(name: str, k: int) -> None:
    m, info, x, go = build(name)
    exact = per_sample_grad(m, x, go)
    assert torch.allclose(L.materialize(info, go, x), exact, atol=1e-12)
    comp = grass_rs.FactGraSS(k, mask_dim=4 * k, seed=k).build(info)
    got = comp.compress_factors(go, x)
    want = comp.compress_full(exact)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def unfold_block(info, x, go, rows, cols, bias):
    """The masked block from the full unfold (float64)."""
    go_t, x_pad = L.conv_factors(info, go, x)
    patches = L.unfold(info, x_pad)
    if bias:
        patches = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2)
        cols = [*cols, info.d_in]
    return torch.einsum("blo,bli->boi", go_t[..., rows], patches[..., cols]).reshape(x.shape[0], -1)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("reflect", "circular-1d")])
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_matches_unfold_any_index_order(name: str, bias: bool) -> None:
    _, info, x, go = build(name, seed=1)
    geo = info.conv
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(0, info.d_out, (5,), generator=g).tolist()  # any order, repeats
    cols = torch.randint(0, info.d_in, (7,), generator=g).tolist()
    x4 = x.unsqueeze(2) if geo.spatial == 1 else x
    pad = (0, 0, *geo.pad) if geo.spatial == 1 else (*geo.pad[2:], *geo.pad[:2])
    got = K.conv_masked_outer(info, go, x4, rows, cols, bias, pad)
    assert got is not None
    torch.testing.assert_close(got, unfold_block(info, x, go, rows, cols, bias), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs_accumulate_in_float32(dtype: torch.dtype) -> None:
    m, info, x, go = build("3x3-pad1")
    exact = per_sample_grad(m, x, go)
    comp = grass_rs.FactGraSS(16).build(info)
    got = comp.compress_factors(go.to(dtype), x.to(dtype))
    assert got.dtype == torch.float32
    want = comp.compress_full(L.materialize(info, go.to(dtype).double(), x.to(dtype).double()))
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())
    mixed = comp.compress_factors(go.float(), x)  # float32 δ, float64 x: computed in float64
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, comp.compress_full(exact), rtol=1e-6, atol=1e-6)


def test_fast_path_is_taken_and_equals_the_torch_path() -> None:
    _, info, x, go = build("stride-dilation-nobias", dtype=torch.float32)
    comp = grass_rs.FactGraSS(64).build(info)
    fast = comp.compress_factors(go, x)
    # The torch gather path (what other devices run): inputs that need autograd skip the kernel.
    slow = comp.compress_factors(go.requires_grad_(), x.requires_grad_()).detach()
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    calls = []
    orig = _core.conv_masked_outer
    try:
        K._core.conv_masked_outer = lambda *a: (calls.append(a), orig(*a))[1]  # type: ignore[attr-defined]
        comp.compress_factors(go.detach(), x.detach())
    finally:
        K._core.conv_masked_outer = orig  # type: ignore[attr-defined]
    assert len(calls) == 1


def test_non_contiguous_factors() -> None:
    m, info, x, go = build("3x3-pad1")
    comp = grass_rs.FactGraSS(16).build(info)
    want = comp.compress_full(per_sample_grad(m, x, go))
    xc = x.to(memory_format=torch.channels_last)
    gc = go.to(memory_format=torch.channels_last)
    torch.testing.assert_close(comp.compress_factors(gc, xc), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["many-positions", "conv1d-nobias-long"])
def test_thread_count_does_not_change_bits(name: str) -> None:
    _, info, x, go = build(name, dtype=torch.float32)
    x = torch.randn(33, *x.shape[1:])  # more samples than threads, odd
    go = torch.randn(33, *go.shape[1:])
    comp = grass_rs.FactGraSS(256).build(info)
    before = grass_rs.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3, 8):
            grass_rs.set_num_threads(n)
            outs.append(comp.compress_factors(go, x))
    finally:
        grass_rs.set_num_threads(before)
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


def test_bad_factors_are_reported_by_the_general_path() -> None:
    _, info, x, go = build("3x3-pad1")
    comp = grass_rs.FactGraSS(16).build(info)
    with pytest.raises(InvalidArgumentError, match="grad_output"):
        comp.compress_factors(go[..., :-1], x)
    with pytest.raises(InvalidArgumentError, match="layer_input"):
        comp.compress_factors(go, x[:, :-1])
    with pytest.raises(InvalidArgumentError):
        comp.compress_factors(go.flatten(2), x)
    with pytest.raises(InvalidArgumentError, match="empty"):
        comp.compress_factors(go[:0], x[:0])


def test_core_rejects_bad_arguments() -> None:
    x, go = torch.zeros(2, 9), torch.zeros(2, 4)  # batch 1, c_in 2, 3 × 3; c_out 2, 2 × 2
    out = torch.zeros(1, 2)
    geo = [1, 2, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0]
    _core.conv_masked_outer(go, x, geo, [1], [7], True, out)
    with pytest.raises(ValueError, match="15 entries"):
        _core.conv_masked_outer(go, x, geo[:-1], [1], [7], True, out)
    with pytest.raises(ValueError, match="cols"):
        _core.conv_masked_outer(go, x, geo, [1], [8], True, out)
    with pytest.raises(ValueError, match="rows"):
        _core.conv_masked_outer(go, x, geo, [2], [0], True, out)
    with pytest.raises(ValueError):
        _core.conv_masked_outer(go, x, [*geo[:9], 0, *geo[10:]], [0], [0], True, out)
    with pytest.raises(ValueError):
        _core.conv_masked_outer(go, x[:, :8].contiguous(), geo, [0], [0], True, out)
    with pytest.raises(TypeError):
        _core.conv_masked_outer(go.double(), x, geo, [0], [0], True, out)


@pytest.mark.parametrize("bias", [False, True])
def test_projected_in_the_same_pass_is_the_blocks_projected(bias: bool) -> None:
    _, info, x, go = build("3x3-pad1", seed=2)
    geo = info.conv
    rows, cols = [0, 2, 3], [1, 4, 5, 9]
    pad = (*geo.pad[2:], *geo.pad[:2])
    sjlt = grass_rs.SJLT(len(rows) * (len(cols) + bias), 8, c=2, seed=4)
    block = K.conv_masked_outer(info, go, x, rows, cols, bias, pad)
    got = K.conv_masked_outer(info, go, x, rows, cols, bias, pad, sjlt)
    assert block is not None and got is not None
    assert torch.equal(got, sjlt.project(block))

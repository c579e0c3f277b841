"""Per-sample gradient capture (grass_rs.attach) against torch.func per-sample gradients."""

from __future__ import annotations

import gc
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

import grass_rs
from grass_rs.capture import kernels as K
from grass_rs.capture import layers as L
from grass_rs.capture.compressors import (
    FactGraSSCompressor,
    FullCompressor,
    LoGraCompressor,
    VectorCompressor,
    dense_matrix,
)

F = nn.functional

FACTORIES = {
    "factgrass": lambda: grass_rs.FactGraSS(9, mask_dim=16, seed=5),
    "factgrass_c2": lambda: grass_rs.FactGraSS(6, mask_dim=36, c=2, seed=1),
    "logra": lambda: grass_rs.LoGra(9, seed=5),
    "full_grass": lambda: grass_rs.Full(grass_rs.GraSS, out_dim=8, mask_dim=12, seed=2),
    "full_gaussian": lambda: grass_rs.Full(grass_rs.Gaussian, out_dim=7),
}


# --- references -------------------------------------------------------------------------------


def per_sample_grads(model: nn.Module, loss_one, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """torch.func: gradient of each sample's loss w.r.t. every parameter, ``(B, *param.shape)``."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, *sample):
        out = functional_call(model, p, tuple(s.unsqueeze(0) for s in sample[:1]))
        return loss_one(out, *(s.unsqueeze(0) for s in sample[1:]))

    return vmap(grad(f), in_dims=(None, *([0] * len(batch))))(params, *batch)


def reference_matrix(name: str, module: nn.Module, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's exact per-sample gradient in grass_rs's convention, from parameter gradients."""
    w = g[f"{name}.weight"]
    b = g.get(f"{name}.bias")
    if isinstance(module, nn.LayerNorm):
        parts = [w.flatten(1)] + ([b.flatten(1)] if b is not None else [])
        return torch.cat(parts, dim=1)
    if isinstance(module, nn.Embedding) or type(module).__name__ == "Conv1D":
        w = w.transpose(1, 2)  # stored (d_in, d_out) / (V, d): Linear convention is the transpose
    return w if b is None else torch.cat([w, b.unsqueeze(-1)], dim=2)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype
    tol = 1e-9 if actual.dtype == torch.float64 else 2e-4
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def check_against_reference(handle, model: nn.Module, g: dict[str, torch.Tensor]) -> None:
    mods = dict(model.named_modules())
    got = handle.gradients()
    assert list(got) == list(handle.compressors)
    for name, comp in handle.compressors.items():
        ref = reference_matrix(name, mods[name], g)
        assert_close(got[name], comp.compress_full(ref))


# --- models -----------------------------------------------------------------------------------


class MLP(nn.Module):
    """Linear (bias) → tanh → Linear (no bias) → LayerNorm → Linear (bias)."""

    def __init__(self, d_in: int = 6) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 8)
        self.fc2 = nn.Linear(8, 5, bias=False)
        self.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.fc2(torch.tanh(self.fc1(x)))))


def token_loss(out: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample loss = Σ over tokens of cross-entropy; batch loss = Σ or mean over samples."""
    per_sample = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
    total = per_sample.sum()
    return total / out.shape[0] if reduction == "mean" else total


def mlp_batch(three_d: bool, dtype: torch.dtype, batch: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 3, 6) if three_d else (batch, 6)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, shape[:-1], generator=gen)
    return x, y


def tiny_gpt2(dtype: torch.dtype = torch.float32, tie: bool = False) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).to(dtype).eval()


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all tokens of the batch."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1))


# --- recorded gradients == compressor(exact per-sample gradient) -------------------------------


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("three_d", [False, True], ids=["2d", "3d"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_mlp_matches_torch_func(factory: str, three_d: bool, reduction: str, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    model = MLP().to(dtype)
    x, y = mlp_batch(three_d, dtype)
    with grass_rs.attach(model, FACTORIES[factory](), loss_reduction=reduction) as handle:
        token_loss(model(x), y, reduction).backward()
    assert set(handle.compressors) == {"fc1", "fc2", "norm", "head"}
    for g in handle.gradients().values():
        assert g.shape == (4, handle.compressors["fc1"].out_dim)
        assert g.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = per_sample_grads(model, lambda o, t: token_loss(o, t, "sum"), x, y)
    check_against_reference(handle, model, ref)


@pytest.mark.parametrize("factory", ["factgrass", "logra", "full_gaussian"])
def test_tiny_gpt2_every_layer(factory: str) -> None:
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(3))
    with grass_rs.attach(model, FACTORIES[factory](), loss_reduction="mean") as handle:
        lm_loss(model(input_ids=ids).logits, ids).backward()  # batch size read from the kwargs
    kinds = {type(m).__name__ for n, m in model.named_modules() if n in handle.compressors}
    assert kinds == {"Embedding", "LayerNorm", "Conv1D", "Linear"}
    assert "transformer.wpe" in handle.compressors  # position ids (1, T) broadcast over the batch
    ref = per_sample_grads(model, lambda out, t: lm_loss(out.logits, t), ids, ids)
    check_against_reference(handle, model, ref)


def test_tiny_gpt2_float64_sum() -> None:
    model = tiny_gpt2(torch.float64)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(4))

    def loss(logits, t):
        v = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), t[:, 1:].reshape(-1), reduction="sum")

    with grass_rs.attach(model, grass_rs.FactGraSS(16, mask_dim=64)) as handle:
        loss(model(ids).logits, ids).backward()
    check_against_reference(handle, model, per_sample_grads(model, lambda o, t: loss(o.logits, t), ids, ids))
    assert handle.flat().dtype == torch.float64


def test_embedding_padding_idx_and_1d_ids() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Linear(4, 2))
    ids = torch.tensor([0, 3, 0, 9, 3])  # (B,) ids: one token per sample, two padding samples
    y = torch.tensor([1, 0, 1, 1, 0])
    for factory in (
        grass_rs.FactGraSS(4, mask_dim=16),
        grass_rs.LoGra(4),
        grass_rs.Full(grass_rs.SJLT, out_dim=5),
    ):
        model.zero_grad()
        with grass_rs.attach(model, factory) as handle:
            F.cross_entropy(model(ids), y, reduction="sum").backward()
        got = handle.gradients()
        assert torch.all(got["0"][ids == 0] == 0)  # padding tokens have no gradient
        ref = per_sample_grads(model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), ids, y)
        check_against_reference(handle, model, ref)


def test_layernorm_over_two_dims_and_4d_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm([2, 3]), nn.Linear(3, 2))
    x, y = torch.randn(4, 5, 2, 3), torch.randint(0, 2, (4, 5, 2))
    with grass_rs.attach(model, grass_rs.FactGraSS(4, mask_dim=9), loss_reduction="mean") as handle:
        token_loss(model(x), y, "mean").backward()
    assert handle.compressors["1"].in_dim == 12
    ref = per_sample_grads(model, lambda o, t: token_loss(o, t, "sum"), x, y)
    check_against_reference(handle, model, ref)


def test_multihead_attention_is_one_unit_or_named_when_sequence_first() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    model.add_module("attn", nn.MultiheadAttention(4, 2))  # batch_first=False: the sequence comes first
    with pytest.warns(grass_rs.capture.CoverageWarning, match=r"attn\.in_proj_weight.*batch_first=False"):
        handle = grass_rs.attach(model, grass_rs.LoGra(4))
    with handle:
        assert list(handle.compressors) == ["0"]
        assert set(handle.coverage.left_out) == {
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"
        }  # fmt: skip
    model.attn = nn.MultiheadAttention(4, 2, batch_first=True)
    with grass_rs.attach(model, grass_rs.LoGra(4), strict=True) as handle:
        assert list(handle.compressors) == ["0", "attn"]  # out_proj is part of the attention unit
        assert handle.coverage.units == {"0": "fast", "attn": "fallback"}


def test_module_called_twice_records_the_sum() -> None:
    torch.manual_seed(0)
    shared, head = nn.Linear(4, 4), nn.Linear(4, 2)
    model = nn.ModuleDict({"shared": shared, "head": head})

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m["head"](self.m["shared"](torch.tanh(self.m["shared"](x))))

    net = Twice()
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    with grass_rs.attach(net, grass_rs.LoGra(4)) as handle:
        F.cross_entropy(net(x), y, reduction="sum").backward()
    check_against_reference(
        handle, net, per_sample_grads(net, lambda o, t: F.cross_entropy(o, t, reduction="sum"), x, y)
    )


def test_tied_gpt2_records_each_module() -> None:
    model = tiny_gpt2(tie=True)
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(5))
    identity = grass_rs.Full(grass_rs.Mask, out_dim=50 * 32)  # Mask keeping every coordinate: G itself
    with grass_rs.attach(model, identity, layers=["lm_head", "transformer.wte"], loss_reduction="mean") as h:
        lm_loss(model(ids).logits, ids).backward()
    got = h.gradients()
    # lm_head and wte share one weight (50, 32); each module records its own part, in its own layout
    # (lm_head: (V, d) like its weight; wte: the Linear convention (d, V)); together they are the
    # tied parameter's per-sample gradient.
    g = per_sample_grads(model, lambda out, t: lm_loss(out.logits, t), ids, ids)["transformer.wte.weight"]
    total = got["lm_head"].reshape(2, 50, 32) + got["transformer.wte"].reshape(2, 32, 50).transpose(1, 2)
    assert_close(total, g)
    assert got["lm_head"].abs().sum() > 0 and got["transformer.wte"].abs().sum() > 0


# --- compressors against explicit formulas ------------------------------------------------------


def linear_info(d_out: int, d_in: int, bias: bool, dtype=torch.float64) -> L.LayerInfo:
    return L.LayerInfo("layer", "linear", d_out, d_in, bias, None, dtype)


def explicit_grad(go: torch.Tensor, x: torch.Tensor, bias: bool) -> torch.Tensor:
    """Σ_t δ_t [x_t, 1]ᵀ by a loop over samples and tokens."""
    rows = []
    for b in range(go.shape[0]):
        acc = 0
        for t in range(go.shape[1]):
            xt = torch.cat([x[b, t], x.new_ones(1)]) if bias else x[b, t]
            acc = acc + torch.outer(go[b, t], xt)
        rows.append(acc)
    return torch.stack(rows)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_factgrass_formula(bias: bool, seed: int) -> None:
    comp = grass_rs.FactGraSS(5, mask_dim=9, seed=seed).build(linear_info(7, 4, bias))
    assert isinstance(comp, FactGraSSCompressor)
    gen = torch.Generator().manual_seed(seed)
    go, x = (
        torch.randn(3, 6, 7, generator=gen, dtype=torch.float64),
        torch.randn(3, 6, 4, generator=gen, dtype=torch.float64),
    )
    G = explicit_grad(go, x, bias)
    block = G[:, comp.mask_out.indices][:, :, comp.mask_in.indices].reshape(3, -1)
    expected = block @ comp.sjlt.matrix().T
    torch.testing.assert_close(comp.compress_full(G), expected)
    torch.testing.assert_close(comp.compress_factors(go, x), expected)
    # float32 factors give float32 with the same map
    torch.testing.assert_close(
        comp.compress_factors(go.float(), x.float()), expected.float(), rtol=1e-4, atol=1e-5
    )


def test_factgrass_bias_column_is_selected_sometimes() -> None:
    # over seeds the masked input side (3 of 5 columns incl. bias) includes the bias column at least once
    hits = [
        int(grass_rs.FactGraSS(4, mask_dim=9, seed=s).build(linear_info(6, 4, True)).mask_in.indices[-1]) == 4
        for s in range(4)
    ]
    assert any(hits) and not all(hits)


def test_factgrass_narrow_layer_keeps_all_coordinates() -> None:
    comp = grass_rs.FactGraSS(16, mask_dim=64).build(linear_info(3, 5, True))
    assert isinstance(comp, FactGraSSCompressor)
    assert comp.mask_out.indices.tolist() == [0, 1, 2] and comp.mask_in.indices.tolist() == list(range(6))
    assert comp.sjlt.in_dim == 18 and comp.out_dim == 16


@pytest.mark.parametrize("bias", [False, True])
def test_logra_formula(bias: bool) -> None:
    comp = grass_rs.LoGra(16, seed=3).build(linear_info(7, 5, bias))
    assert isinstance(comp, LoGraCompressor)
    gen = torch.Generator().manual_seed(0)
    go, x = (
        torch.randn(2, 3, 7, generator=gen, dtype=torch.float64),
        torch.randn(2, 3, 5, generator=gen, dtype=torch.float64),
    )
    G = explicit_grad(go, x, bias)
    expected = (comp.proj_out.matrix() @ G @ comp.proj_in.matrix().T).reshape(2, -1)
    torch.testing.assert_close(comp.compress_full(G), expected)
    torch.testing.assert_close(comp.compress_factors(go, x), expected)
    torch.testing.assert_close(
        comp.compress_factors(go[:, 0], x[:, 0]), comp.compress_full(explicit_grad(go[:, :1], x[:, :1], bias))
    )


def test_dense_matrix_equals_matrix() -> None:
    for in_dim, out_dim in [(20, 4), (4, 20), (7, 7)]:
        p = grass_rs.Gaussian(in_dim, out_dim, seed=9)
        torch.testing.assert_close(dense_matrix(p), p.matrix())


def test_full_and_vector_formula() -> None:
    info = linear_info(4, 3, True)
    comp = grass_rs.Full(grass_rs.SJLT, out_dim=5, c=2, seed=7).build(info)
    assert isinstance(comp, FullCompressor)
    G = torch.randn(2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(comp.compress_full(G), G.reshape(2, -1) @ comp.projector.matrix().T)
    ln = L.LayerInfo("ln", "layernorm", 6, 6, True, None, torch.float64)
    for factory in (grass_rs.FactGraSS(4, mask_dim=9), grass_rs.FactGraSS(4, mask_dim=16), grass_rs.LoGra(4)):
        vc = factory.build(ln)
        assert isinstance(vc, VectorCompressor) and vc.in_dim == 12
        go, xh = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
        g = torch.cat([(go * xh).sum(1), go.sum(1)], dim=1)
        torch.testing.assert_close(vc.compress_factors(go, xh), g @ vc.projector.matrix().T)
    assert type(grass_rs.FactGraSS(4, mask_dim=9).build(ln).projector) is grass_rs.GraSS  # p = 12 > k' = 9
    assert type(grass_rs.FactGraSS(4, mask_dim=16).build(ln).projector) is grass_rs.SJLT  # p ≤ k'


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["linear", "embedding", "layernorm"]),
    d_out=st.integers(1, 9),
    d_in=st.integers(1, 9),
    bias=st.booleans(),
    tokens=st.integers(1, 4),
    factory=st.sampled_from(["factgrass", "factgrass_c2", "logra", "full_gaussian"]),
    seed=st.integers(0, 2**64 - 1),
)
def test_factors_equal_full_property(kind, d_out, d_in, bias, tokens, factory, seed) -> None:
    if kind == "layernorm":
        d_in = d_out
    bias = bias and kind != "embedding"
    info = L.LayerInfo("l", kind, d_out, d_in, bias, 1 if kind == "embedding" else None, torch.float64)
    fac = {
        "factgrass": grass_rs.FactGraSS(4, mask_dim=9, seed=seed),
        "logra": grass_rs.LoGra(4, seed=seed),
    }.get(factory, FACTORIES[factory]())
    comp = fac.build(info)
    gen = torch.Generator().manual_seed(seed % 2**63)
    go = torch.randn(3, tokens, d_out, generator=gen, dtype=torch.float64)
    if kind == "embedding":
        x = torch.randint(0, d_in, (3, tokens), generator=gen)
    else:
        x = torch.randn(3, tokens, d_in, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(comp.compress_factors(go, x), comp.compress_full(L.materialize(info, go, x)))


def test_materialize_embedding_is_transposed_weight_grad() -> None:
    info = L.LayerInfo("e", "embedding", 3, 6, False, 2, torch.float64)
    go, ids = torch.randn(2, 4, 3, dtype=torch.float64), torch.tensor([[1, 2, 5, 1], [0, 0, 4, 2]])
    expected = torch.zeros(2, 3, 6, dtype=torch.float64)
    for b in range(2):
        for t in range(4):
            if ids[b, t] != 2:
                expected[b, :, ids[b, t]] += go[b, t]
    torch.testing.assert_close(L.materialize(info, go, ids), expected)


# --- seeds ----------------------------------------------------------------------------------------


def test_factgrass_default_mask_dim_is_the_smallest_square_at_least_4k() -> None:
    assert grass_rs.FactGraSS(16).mask_dim == 64  # 4k itself when a square
    assert grass_rs.FactGraSS(8).mask_dim == 36  # 4k = 32 → 6²
    assert grass_rs.FactGraSS(1).mask_dim == 4
    assert all(math.isqrt(grass_rs.FactGraSS(k).mask_dim) ** 2 >= 4 * k for k in range(1, 300))


def test_layer_seed_is_stable_and_distinct() -> None:
    a = grass_rs.layer_seed(0, "fc1", "sjlt")
    assert a == LAYER_SEED_0_FC1_SJLT  # fixed value: the same in every process and on every machine
    assert (
        len(
            {
                a,
                grass_rs.layer_seed(1, "fc1", "sjlt"),
                grass_rs.layer_seed(0, "fc2", "sjlt"),
                grass_rs.layer_seed(0, "fc1", "x"),
            }
        )
        == 4
    )


LAYER_SEED_0_FC1_SJLT = 0x3B20F14224D137EE


def test_same_seed_same_compression_different_seed_differs() -> None:
    torch.manual_seed(0)
    model = MLP()
    x, y = mlp_batch(False, torch.float32)

    def run(seed: int) -> torch.Tensor:
        model.zero_grad()
        with grass_rs.attach(model, grass_rs.FactGraSS(9, mask_dim=16, seed=seed)) as h:
            token_loss(model(x), y, "sum").backward()
        return h.flat()

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


# --- attaching changes nothing else; hooks go away; no growth ------------------------------------


def _fwd_bwd(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logits = model(ids).logits
    lm_loss(logits, ids).backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _hook_counts(model: nn.Module) -> list[int]:
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    ]


def test_outputs_grads_unchanged_and_hooks_removed() -> None:
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(1))
    before = _hook_counts(model)
    out0, grads0 = _fwd_bwd(model, ids)
    with grass_rs.attach(model, grass_rs.FactGraSS(9, mask_dim=16)) as handle:
        assert _hook_counts(model) != before
        out1, grads1 = _fwd_bwd(model, ids)
    assert _hook_counts(model) == before
    assert torch.equal(out0, out1)
    for k in grads0:  # wpe's gradient is summed in a different order once ids are expanded
        torch.testing.assert_close(grads1[k], grads0[k], rtol=1e-6, atol=1e-7)
    recorded = handle.flat().clone()
    _fwd_bwd(model, ids[:2])  # after removal nothing is recorded any more
    assert torch.equal(handle.flat(), recorded)


def test_new_batch_replaces_state_and_nothing_grows() -> None:
    torch.manual_seed(0)
    model = MLP()
    factory = grass_rs.FactGraSS(9, mask_dim=16)
    batches = [mlp_batch(True, torch.float32, batch=b, seed=s) for s, b in enumerate([3, 2, 2, 2, 2, 2])]
    counts = []
    with grass_rs.attach(model, factory) as handle:
        for x, y in batches:
            token_loss(model(x), y, "sum").backward()
            del x, y
            gc.collect()
            counts.append(sum(isinstance(o, torch.Tensor) for o in gc.get_objects()))
        last = handle.flat()
    assert last.shape == (2, 36)
    assert len(set(counts[1:])) == 1  # steady state: the handle keeps one (batch, k) tensor per layer
    with grass_rs.attach(model, factory) as fresh:
        token_loss(model(batches[-1][0]), batches[-1][1], "sum").backward()
    torch.testing.assert_close(last, fresh.flat())


def test_submodule_called_directly_with_changing_batch() -> None:
    torch.manual_seed(0)
    outer = nn.Sequential(MLP())
    inner = outer[0]
    with grass_rs.attach(outer, grass_rs.LoGra(4)) as handle:  # hooks on the root, but only `inner` is called
        for b in (4, 2):
            x, y = mlp_batch(False, torch.float32, batch=b)
            token_loss(inner(x), y, "sum").backward()
            assert handle.flat().shape == (b, 16)
    ref = per_sample_grads(outer, lambda o, t: token_loss(o, t, "sum"), x, y)
    check_against_reference(handle, outer, ref)


def test_layer_without_gradient_records_zeros_and_no_backward_raises() -> None:
    torch.manual_seed(0)
    model = MLP()
    x, _ = mlp_batch(False, torch.float32)
    with grass_rs.attach(model, grass_rs.LoGra(4)) as handle:
        with pytest.raises(RuntimeError, match="no gradients recorded"):
            handle.gradients()
        out = model(x)
        (out.sum() * 0 + model.fc1(x).sum()).backward()  # only fc1 reaches the loss
    g = handle.gradients()
    assert torch.all(g["head"] == 0) and g["head"].shape == (4, 4)
    assert torch.any(g["fc1"] != 0)


# --- selection ------------------------------------------------------------------------------------


def test_layer_selection() -> None:
    model = MLP()
    fac = grass_rs.LoGra(4)

    def sel(layers) -> list[str]:
        with grass_rs.attach(model, fac, layers=layers) as handle:
            return list(handle.compressors)

    assert sel(None) == ["fc1", "fc2", "norm", "head"]
    assert sel("fc2") == ["fc2"]
    assert sel(nn.Linear) == ["fc1", "fc2", "head"]
    assert sel(["head", nn.LayerNorm]) == ["norm", "head"]  # module order
    assert sel(lambda name, m: name.startswith("f")) == ["fc1", "fc2"]
    model.fc1.requires_grad_(False)
    assert sel(None) == ["fc2", "norm", "head"]  # frozen layers skipped by default
    assert sel("fc1") == ["fc1"]
    assert not any(_hook_counts(model))  # every handle removed its hooks on exit


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: grass_rs.FactGraSS(8, mask_dim=50), ValueError, "perfect square"),
        (lambda: grass_rs.FactGraSS(100, mask_dim=64), ValueError, r"out_dim.*≤ mask_dim"),
        (lambda: grass_rs.FactGraSS(4, mask_dim=16, c=5), ValueError, "`c`"),
        (lambda: grass_rs.LoGra(10), ValueError, "perfect square"),
        (lambda: grass_rs.Full(int), TypeError, "Projector subclass"),
        (lambda: grass_rs.Full(grass_rs.GraSS, out_dim=4), TypeError, "mask_dim"),
        (lambda: grass_rs.Full(grass_rs.SJLT, in_dim=3, out_dim=4), TypeError, "in_dim"),
    ],
)
def test_bad_factory(make, exc, match) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_bad_attach_configurations() -> None:
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Conv1d(1, 1, 1), nn.LayerNorm(6, elementwise_affine=False)
    )
    fac = grass_rs.FactGraSS(4, mask_dim=9)
    with pytest.raises(TypeError, match=r"'1' \(ReLU\) has no trainable parameters"):
        grass_rs.attach(model, fac, layers="1")
    with pytest.raises(TypeError, match=r"module names or nn\.Module types"):
        grass_rs.attach(model, fac, layers=[int])
    with pytest.raises(ValueError, match=r"does not have.*'nope'"):
        grass_rs.attach(model, fac, layers=["0", "nope"])
    with pytest.raises(ValueError, match="elementwise_affine=False"):
        grass_rs.attach(model, fac, layers="3")
    with pytest.raises(ValueError, match="selects no layer"):
        grass_rs.attach(model, fac, layers=lambda n, m: False)
    with pytest.raises(ValueError, match="loss_reduction"):
        grass_rs.attach(model, fac, loss_reduction="avg")
    with pytest.raises(TypeError, match="factory"):
        grass_rs.attach(model, grass_rs.SJLT(10, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"layer '0'.*out_dim"):
        grass_rs.attach(model, grass_rs.Full(grass_rs.Mask, out_dim=40))  # p = 30 < 40
    with pytest.raises(ValueError, match="scale_grad_by_freq"):
        grass_rs.attach(nn.Embedding(5, 2, scale_grad_by_freq=True), fac)


def test_flattened_batch_is_rejected() -> None:
    class Flatten(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.reshape(-1, 3))  # (B, T, 3) → (B·T, 3): samples no longer in dim 0

    model = Flatten()
    with grass_rs.attach(model, grass_rs.LoGra(4)), pytest.raises(ValueError, match="sample dimension first"):
        model(torch.randn(2, 5, 3))


def test_compress_input_validation() -> None:
    comp = grass_rs.FactGraSS(4, mask_dim=9).build(linear_info(4, 3, True, torch.float32))
    with pytest.raises(ValueError, match=r"\(batch, 4, 4\)"):
        comp.compress_full(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="grad_output"):
        comp.compress_factors(torch.randn(2, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="disagree"):
        comp.compress_factors(torch.randn(2, 4), torch.randn(3, 3))
    emb = grass_rs.LoGra(4).build(L.LayerInfo("e", "embedding", 3, 6, False))
    with pytest.raises(TypeError, match="integer token ids"):
        emb.compress_factors(torch.randn(2, 3), torch.randn(2, 6))


# --- the fused CPU kernel behind FactGraSS (layers.masked_outer) --------------------------------


def masked_outer_reference(go: torch.Tensor, x: torch.Tensor, rows, cols, bias: bool) -> torch.Tensor:
    """``Σ_t δ_t[rows] ⊗ [x_t[cols], 1]`` with a float64 for-loop over tokens."""
    go64, x64 = go.double(), x.double()
    xt = x64[:, :, cols]
    if bias:
        xt = torch.cat([xt, torch.ones(*xt.shape[:2], 1, dtype=torch.float64)], dim=2)
    z = torch.zeros(go.shape[0], len(rows), xt.shape[2], dtype=torch.float64)
    for t in range(go.shape[1]):
        z += go64[:, t, rows].unsqueeze(2) * xt[:, t].unsqueeze(1)
    return z.reshape(go.shape[0], -1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    ("dtype", "tol"),
    [(torch.float64, 1e-12), (torch.float32, 2e-5), (torch.bfloat16, 2e-5), (torch.float16, 2e-5)],
)
def test_fused_masked_outer_matches_loop(bias: bool, dtype: torch.dtype, tol: float) -> None:
    # 300 tokens: three 128-token chunks, the last partial; 21 rows / 37 columns: partial tiles
    gen = torch.Generator().manual_seed(3)
    go = torch.randn(3, 300, 50, generator=gen).to(dtype)
    x = torch.randn(3, 300, 45, generator=gen).to(dtype)
    rows = torch.tensor(sorted(torch.randperm(50, generator=gen)[:21].tolist()))
    cols = torch.tensor([44, 0, 3, 3, *range(5, 38)])  # any order, repeats allowed
    info = linear_info(50, 45, bias)
    cdt = L.compute_dtype(go, x)
    got = K.masked_outer(info, go, x, rows, cols, bias, cdt)
    assert got.dtype == cdt and got.shape == (3, 21 * (37 + bias))
    want = masked_outer_reference(go, x, rows, cols, bias)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 300**0.5)
    # the gather + bmm path (taken for tensors that require grad) agrees
    slow = K.masked_outer(info, go.requires_grad_(), x, rows, cols, bias, cdt).detach()
    torch.testing.assert_close(got, slow, rtol=1e-4, atol=1e-4 if cdt == torch.float32 else 1e-10)


def test_fused_masked_outer_mixed_dtypes_strided_and_thread_count() -> None:
    gen = torch.Generator().manual_seed(4)
    go = torch.randn(2, 40, 33, generator=gen, dtype=torch.float64)[:, :, ::3]  # 11 strided columns
    x = torch.randn(2, 40, 9, generator=gen)  # float32
    rows, cols = torch.arange(11), torch.tensor([8, 1, 2])
    info = linear_info(11, 9, True)
    got = K.masked_outer(info, go, x, rows, cols, True, torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, masked_outer_reference(go, x.double(), rows, cols, True))
    before = grass_rs.get_num_threads()
    try:
        grass_rs.set_num_threads(1)
        one = K.masked_outer(info, go, x, rows, cols, True, torch.float64)
        grass_rs.set_num_threads(3)
        three = K.masked_outer(info, go, x, rows, cols, True, torch.float64)
    finally:
        grass_rs.set_num_threads(before)
    assert torch.equal(one, got) and torch.equal(three, got)  # bit-identical for any thread count

"""Every trainable parameter of real models: Conv1d/Conv2d in the factored form, the RMSNorm family,
the generic exact fallback, coverage reports, gradient checkpointing and empty batches — each
against float64 ``torch.func`` per-sample gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

import grass_rs
from grass_rs.capture import CoverageWarning
from grass_rs.capture import layers as L
from grass_rs.evaluation.tasks.cnn import resnet9

F = nn.functional
f64 = torch.float64

FACTORIES = {
    "factgrass": lambda: grass_rs.FactGraSS(9, mask_dim=16, seed=5),
    "logra": lambda: grass_rs.LoGra(9, seed=5),
    "full": lambda: grass_rs.Full(grass_rs.GraSS, out_dim=4, mask_dim=12, seed=2),
}


# --- references -----------------------------------------------------------------------------------


def per_sample_grads(model: nn.Module, loss_one, *batch, kwargs=None) -> dict[str, torch.Tensor]:
    """torch.func: each sample's loss gradient w.r.t. every trainable parameter, ``(B, *shape)``."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f(p, *sample):
        out = functional_call(model, p, (sample[0].unsqueeze(0),), kwargs or {})
        return loss_one(out, *(s.unsqueeze(0) for s in sample[1:]))

    return vmap(grad(f), in_dims=(None, *([0] * len(batch))))(params, *batch)


def reference(handle, name: str, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """The exact per-sample gradient of unit ``name`` in grass_rs's layout, from parameter gradients."""
    unit = handle._units[name]
    prefix = f"{name}." if name else ""
    info, module = unit.info, unit.module
    if info.kind == "module":
        return torch.cat([g[prefix + n].flatten(1) for n in unit.params], dim=1)
    w, b = g[prefix + "weight"], g.get(prefix + "bias")
    if info.is_vector:
        return torch.cat([w.flatten(1)] + ([b.flatten(1)] if b is not None else []), dim=1)
    if isinstance(module, nn.Embedding) or type(module).__name__ == "Conv1D":
        w = w.transpose(1, 2)
    w = w.flatten(2)  # conv: (B, C_out, C_in·kh·kw)
    return w if b is None else torch.cat([w, b.unsqueeze(-1)], dim=2)


def check(handle, g: dict[str, torch.Tensor]) -> None:
    got = handle.gradients()
    assert list(got) == list(handle.compressors)
    for name, comp in handle.compressors.items():
        ref = reference(handle, name, g)
        want = comp.compress_full(ref)
        tol = 1e-8 if want.dtype == f64 else 2e-4
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got[name], want, rtol=tol, atol=tol * scale, msg=name)


def sum_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum")


def run(model, factory, x, y, reduction="sum", **kw):
    with grass_rs.attach(model, factory, loss_reduction=reduction, **kw) as h:
        loss = sum_ce(model(x), y)
        (loss / x.shape[0] if reduction == "mean" else loss).backward()
    return h


# --- convolutions -----------------------------------------------------------------------------------

CONV2D = {
    "plain": {"kernel_size": 3},
    "stride_pad": {"kernel_size": 3, "stride": 2, "padding": 1},
    "dilation_nobias": {"kernel_size": (2, 3), "dilation": (2, 1), "padding": (1, 2), "bias": False},
    "same_even": {"kernel_size": (2, 4), "padding": "same"},
    "reflect": {"kernel_size": 3, "padding": 1, "padding_mode": "reflect", "stride": (1, 2)},
    "circular_1x1": {"kernel_size": 1, "padding": 1, "padding_mode": "circular"},
}


class ConvNet(nn.Module):
    def __init__(self, conv: nn.Module, flat: int) -> None:
        super().__init__()
        self.conv, self.head = conv, nn.Linear(flat, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def conv2d_net(cfg: dict) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, **cfg)
    x = torch.randn(4, 3, 7, 6, dtype=f64)
    flat = conv.to(f64)(x).flatten(1).shape[1]
    return ConvNet(conv, flat).to(f64), x, torch.randint(0, 3, (4,))


@pytest.mark.parametrize("cfg", sorted(CONV2D))
@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_conv2d_matches_torch_func(cfg: str, factory: str, reduction: str) -> None:
    model, x, y = conv2d_net(CONV2D[cfg])
    h = run(model, FACTORIES[factory](), x, y, reduction)
    assert h.layers["conv"].kind == "conv" and h.coverage.complete
    check(h, per_sample_grads(model, sum_ce, x, y))


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize(
    "cfg",
    [{"kernel_size": 3}, {"kernel_size": 2, "stride": 2, "padding": 1, "bias": False}, {"kernel_size": 3,
     "dilation": 2, "padding": "same", "padding_mode": "replicate"}],
    ids=["plain", "stride_pad", "dilated_same"],
)  # fmt: skip
def test_conv1d_matches_torch_func(factory: str, cfg: dict) -> None:
    torch.manual_seed(1)
    conv = nn.Conv1d(4, 6, **cfg).to(f64)
    x = torch.randn(3, 4, 9, dtype=f64)
    model = ConvNet(conv, conv(x).flatten(1).shape[1]).to(f64)
    y = torch.randint(0, 3, (3,))
    h = run(model, FACTORIES[factory](), x, y)
    assert h.layers["conv"].kind == "conv" and h.layers["conv"].d_in == 4 * conv.kernel_size[0]
    check(h, per_sample_grads(model, sum_ce, x, y))


def test_factgrass_conv_never_unfolds_and_equals_full(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, _ = conv2d_net(CONV2D["stride_pad"])
    comp = grass_rs.FactGraSS(16, mask_dim=64, seed=3).build(L.describe("conv", model.conv))
    go = torch.randn(4, 5, 4, 3, dtype=f64)
    full = comp.compress_full(L.materialize(comp.layer, go, x))

    def no_unfold(*a, **k):
        raise AssertionError("FactGraSS must not form the im2col unfold")

    monkeypatch.setattr(F, "unfold", no_unfold)
    torch.testing.assert_close(comp.compress_factors(go, x), full)
    logra = grass_rs.LoGra(16).build(comp.layer)  # LoGra projects patches with a convolution
    monkeypatch.undo()
    torch.testing.assert_close(
        logra.compress_factors(go, x), logra.compress_full(L.materialize(comp.layer, go, x))
    )


def test_grouped_and_3d_convs_go_to_the_exact_fallback() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).to(f64)
    x, y = torch.randn(3, 4, 5, 5, dtype=f64), torch.randint(0, 2, (3,))
    h = run(model, grass_rs.FactGraSS(9, mask_dim=16), x, y, strict=True)
    assert h.layers["0"].kind == "module" and h.coverage.units["0"] == "fallback"
    check(h, per_sample_grads(model, sum_ce, x, y))
    with pytest.raises(ValueError, match="groups=2 has no factored form"):
        L.describe("0", model[0])


# --- the RMSNorm family --------------------------------------------------------------------------------


class LlamaRMSNorm(nn.Module):  # HF's code, by structure (transformers is not imported for it)
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d) + 0.1 * torch.randn(d))
        self.variance_epsilon = eps

    def forward(self, h):
        dtype = h.dtype
        h = h.to(torch.float32) if dtype != f64 else h
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


class T5LayerNorm(LlamaRMSNorm):
    pass


class GemmaRMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(0.1 * torch.randn(d))

    def forward(self, x):
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return out * (1.0 + self.weight)


class NotRMSNorm(LlamaRMSNorm):  # the right name and structure, another function: not recognised
    def forward(self, h):
        return self.weight * torch.tanh(h)


NORMS = {
    "nn.RMSNorm": lambda: nn.RMSNorm(6),
    "nn.RMSNorm_eps_2d": lambda: nn.RMSNorm([2, 3], eps=1e-3),
    "llama": lambda: LlamaRMSNorm(6),
    "t5": lambda: T5LayerNorm(6),
    "gemma": lambda: GemmaRMSNorm(6),
}


class NormNet(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.fc, self.norm, self.head = nn.Linear(6, 6), norm, nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc(x)
        if isinstance(self.norm, nn.RMSNorm) and len(self.norm.normalized_shape) == 2:
            return self.head(self.norm(h.unflatten(-1, (2, 3))).flatten(-2))
        return self.head(self.norm(h))


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_rmsnorms_match_torch_func(norm: str, factory: str) -> None:
    torch.manual_seed(3)
    model = NormNet(NORMS[norm]()).to(f64)
    with torch.no_grad():
        model.norm.weight.add_(0.1 * torch.randn_like(model.norm.weight))
    x, y = torch.randn(4, 5, 6, dtype=f64), torch.randint(0, 3, (4, 5))
    h = run(model, FACTORIES[factory](), x, y, "mean")
    assert h.layers["norm"].kind == "rmsnorm" and h.coverage.units["norm"] == "fast"
    check(h, per_sample_grads(model, sum_ce, x, y))


def test_rmsnorm_lookalike_is_not_taken_for_one() -> None:
    assert L.rmsnorm_variant(NotRMSNorm(4)) is None
    assert L.rmsnorm_variant(GemmaRMSNorm(4)) == "offset" and L.rmsnorm_variant(LlamaRMSNorm(4)) == "scale"
    model = NormNet(NotRMSNorm(6)).to(f64)
    x, y = torch.randn(3, 6, dtype=f64), torch.randint(0, 3, (3,))
    h = run(model, grass_rs.FactGraSS(4, mask_dim=9), x, y)
    assert h.layers["norm"].kind == "module"  # still exact, through the fallback
    check(h, per_sample_grads(model, sum_ce, x, y))


# --- the generic fallback --------------------------------------------------------------------------------


class Gated(nn.Module):
    """A custom layer with its own parameters and a nonlinear use of them, and a Linear child."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.randn(d))
        self.scale = nn.Parameter(torch.randn(2, d))
        self.inner = nn.Linear(d, d)

    def forward(self, x, *, shift=None):
        h = self.inner(x) * torch.sigmoid(self.gate) + self.scale[0] * torch.tanh(x * self.scale[1])
        return h if shift is None else h + shift


class FallbackNet(nn.Module):
    def __init__(self, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if norm == "batchnorm" else nn.GroupNorm(2, 4)
        self.gated = Gated(4 * 4 * 4)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        h = F.relu(self.norm(self.conv(x))).flatten(1)
        return self.head(self.gated(h, shift=torch.ones(1, 64, dtype=h.dtype)))


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm"])
@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fallback_matches_torch_func(norm: str, factory: str, reduction: str) -> None:
    torch.manual_seed(4)
    model = FallbackNet(norm).to(f64)
    if norm == "batchnorm":
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    model.eval()
    x, y = torch.randn(5, 2, 4, 4, dtype=f64), torch.randint(0, 3, (5,))
    h = run(model, FACTORIES[factory](), x, y, reduction, strict=True)
    assert {n: i.kind for n, i in h.layers.items()} == {
        "conv": "conv", "norm": "module", "gated": "module", "gated.inner": "linear", "head": "linear"
    }  # fmt: skip
    assert h.coverage.by_path["fallback"] == 8 + 64 + 2 * 64 and h.coverage.fraction == 1.0
    check(h, per_sample_grads(model, sum_ce, x, y))


def test_batchnorm_in_train_mode_is_a_clear_error() -> None:
    model = FallbackNet("batchnorm").train()
    with grass_rs.attach(model, grass_rs.LoGra(4)), pytest.raises(ValueError, match="couples the samples"):
        model(torch.randn(2, 2, 4, 4))


# --- whole models: coverage 100 % and every block exact -------------------------------------------------


def randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)


@pytest.mark.parametrize("factory", ["factgrass", "logra"])
def test_resnet9_every_parameter_exact(factory: str) -> None:
    torch.manual_seed(5)
    model = resnet9(width=4, classes=3).to(f64)
    randomize_bn(model)
    model.eval()
    x, y = torch.randn(3, 3, 16, 16, dtype=f64), torch.randint(0, 3, (3,))
    h = run(model, FACTORIES[factory](), x, y, "mean")
    cov = h.coverage
    assert cov.fraction == 1.0 and cov.complete and cov.total == sum(p.numel() for p in model.parameters())
    assert cov.by_kind["conv"] > 0.9 * cov.total and cov.by_kind["module"] > 0  # BatchNorms: fallback
    check(h, per_sample_grads(model, sum_ce, x, y))


def tiny_llama(dtype=f64) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=False,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(6)
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tiny_bert(dtype=f64) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(7)
    return BertForSequenceClassification(cfg).to(dtype).eval()


def lm_sum(logits, ids):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="sum")


@pytest.mark.parametrize("factory", ["factgrass", "logra"])
def test_hf_llama_every_parameter_exact(factory: str) -> None:
    model = tiny_llama()
    ids = torch.randint(0, 40, (3, 7), generator=torch.Generator().manual_seed(8))
    with grass_rs.attach(model, FACTORIES[factory](), strict=True) as h:
        lm_sum(model(ids).logits, ids).backward()
    kinds = {i.kind for i in h.layers.values()}
    assert kinds == {"embedding", "linear", "rmsnorm"} and h.coverage.fraction == 1.0
    assert h.coverage.by_path["fallback"] == 0
    check(h, per_sample_grads(model, lambda out, t: lm_sum(out.logits, t), ids, ids))


def test_hf_bert_every_parameter_exact() -> None:
    model = tiny_bert()
    ids = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(9))
    y = torch.tensor([0, 2, 1])
    with grass_rs.attach(model, grass_rs.FactGraSS(9, mask_dim=16), strict=True) as h:
        sum_ce(model(ids).logits, y).backward()
    assert h.coverage.fraction == 1.0 and h.coverage.by_path["fallback"] == 0
    assert {i.kind for i in h.layers.values()} == {"embedding", "linear", "layernorm"}
    check(h, per_sample_grads(model, lambda out, t: sum_ce(out.logits, t), ids, y))


# --- strict and the warning ------------------------------------------------------------------------------


def test_strict_and_warning_name_what_is_left_out_and_why() -> None:
    model = FallbackNet("groupnorm")
    fac = grass_rs.LoGra(4)
    with pytest.raises(
        ValueError, match=r"strict=True.*norm\.weight, norm\.bias .*GroupNorm has no fast form"
    ):
        grass_rs.attach(model, fac, fallback=False, strict=True)
    with pytest.warns(CoverageWarning, match=r"gated\.gate, gated\.scale \(Gated has no fast form"):
        h = grass_rs.attach(model, fac, fallback=False)
    h.remove()
    assert set(h.coverage.left_out) == {"norm.weight", "norm.bias", "gated.gate", "gated.scale"}
    assert 0 < h.coverage.fraction < 1 and "left out" in str(h.coverage)
    with pytest.raises(ValueError, match=r"strict=True.*head\.weight.*not selected by `layers`"):
        grass_rs.attach(model, fac, layers=["conv"], strict=True)
    with grass_rs.attach(model, fac, layers=["conv"]) as h:  # the caller's own choice: no warning
        assert "head.bias" in h.coverage.left_out


# --- gradient checkpointing (issue 16, item 1) -----------------------------------------------------------


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 5)
        self.norm, self.gated = nn.LayerNorm(16), Gated(16)
        self.reentrant = reentrant

    def block(self, h):
        return self.gated(self.norm(F.relu(self.b(h))))

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.reentrant is not None:
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)  # the same modules twice
        else:
            h = self.block(self.block(h))
        return self.c(h)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_gradient_checkpointing_is_exact(reentrant: bool) -> None:
    torch.manual_seed(10)
    model = Checkpointed(reentrant).to(f64)
    x, y = torch.randn(4, 10, dtype=f64, requires_grad=reentrant), torch.randint(0, 5, (4,))
    fac = grass_rs.Full(grass_rs.SJLT, out_dim=8)
    with grass_rs.attach(model, fac) as h:
        for _ in range(2):  # the second step replaces the first, checkpointing included
            sum_ce(model(x), y).backward()
    model.reentrant = None
    g = per_sample_grads(model, sum_ce, x.detach(), y)
    assert h.gradients()["c"].abs().sum() > 0
    check(h, g)


# --- empty batches (issue 16) -------------------------------------------------------------------------------


def test_empty_batch_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with grass_rs.attach(model, grass_rs.FactGraSS(4, mask_dim=9)):
        with pytest.raises(ValueError, match=r"batch is empty \(0 samples\)"):
            model(torch.zeros(0, 3))
        with pytest.raises(ValueError, match=r"layer '0'.*batch is empty"):
            model[0](torch.zeros(0, 3))
    comp = grass_rs.LoGra(4).build(L.describe("0", model[0]))
    with pytest.raises(ValueError, match="batch is empty"):
        comp.compress_factors(torch.zeros(0, 4), torch.zeros(0, 3))


# --- Embedding under FactGraSS: the vocabulary side is hashed, not masked ----------------------------------


def test_embedding_vocabulary_is_hashed_so_no_block_is_all_zeros() -> None:
    torch.manual_seed(11)
    emb = nn.Embedding(871, 16, padding_idx=0).to(f64)
    model = nn.Sequential(emb, nn.Flatten(), nn.Linear(16 * 6, 3)).to(f64)
    ids = torch.randint(1, 871, (64, 6), generator=torch.Generator().manual_seed(12))
    y = torch.randint(0, 3, (64,))
    fac = grass_rs.FactGraSS(64, mask_dim=256)  # √k' = 16 of 871 vocabulary columns
    h = run(model, fac, ids, y)
    comp = h.compressors["0"]
    assert comp.mask_in is None and comp.hash_in.in_dim == 871 and comp.hash_in.out_dim == 16
    assert bool((h.gradients()["0"].abs().sum(1) > 0).all())  # masking 16 of 871 zeroed most rows
    check(h, per_sample_grads(model, sum_ce, ids, y))

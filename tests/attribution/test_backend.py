"""``Attributor(backend=...)``: the backend is what the caller says, validated before any data is read,
and the default does not depend on how the model is wrapped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import grass_rs
from grass_rs.capture import FuncGradients, HookGradients, make_source


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Never:
    """A loader that fails the test if anything iterates it."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("data was read")


def test_default_is_the_same_for_a_wrapped_model() -> None:
    m = _mlp()
    plain = grass_rs.Attributor(m, k=16)
    wrapped = grass_rs.Attributor(Wrapper(m), k=16)
    assert isinstance(plain.source, HookGradients) and isinstance(wrapped.source, HookGradients)
    assert repr(plain.source.factory) == repr(wrapped.source.factory) == repr(grass_rs.FactGraSS(16))
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    a, b = plain.source(x, y), wrapped.source(x, y)
    # the same layers are covered (seeds follow module names, so values differ with the prefix)
    assert [n.removeprefix("inner.") for n in b] == list(a) == ["0", "1", "3"]
    assert [g.shape for g in a.values()] == [g.shape for g in b.values()]


@pytest.mark.parametrize(
    ("compressor", "backend", "kind"),
    [
        ("default", "hooks", HookGradients),
        ("default", "func", FuncGradients),
        ("grass", "func", FuncGradients),
        ("sjlt", "hooks", HookGradients),
        (None, "hooks", HookGradients),
        (None, "func", FuncGradients),
        (lambda name, p: grass_rs.SJLT(p, 4), "hooks", HookGradients),
        (lambda name, p: grass_rs.SJLT(p, 4), "func", FuncGradients),
    ],
)
def test_backend_is_what_the_caller_says(compressor: object, backend: str, kind: type) -> None:
    assert isinstance(make_source(_mlp(), lambda o, t: o.sum(), compressor, k=16, backend=backend), kind)


def test_both_backends_agree_on_raw_gradients() -> None:
    m = _mlp()
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    loss = grass_rs.attribution.sum_cross_entropy
    layers = ["0", "3"]
    a = make_source(m, loss, None, layers=layers, backend="hooks")(x, y)
    b = make_source(m, loss, None, layers=layers, backend="func")(x, y)
    for name in layers:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "vmap"}, grass_rs.InvalidArgumentError, "backend"),
        ({"compressor": grass_rs.FactGraSS(16), "backend": "func"}, grass_rs.ArgumentTypeError, "hooks"),
        ({"compressor": "factgrass", "backend": "func"}, grass_rs.InvalidArgumentError, "hooks"),
        ({"compressor": "bogus"}, grass_rs.InvalidArgumentError, "compressor"),
        ({"compressor": 3.0}, grass_rs.ArgumentTypeError, "compressor"),
        ({"layers": ["nope"]}, grass_rs.InvalidArgumentError, "nope"),
        ({"layers": ["nope"], "backend": "func"}, grass_rs.InvalidArgumentError, "nope"),
        ({"layers": ["2"]}, grass_rs.ArgumentTypeError, "Tanh"),
    ],
)
def test_bad_configurations_fail_at_construction(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        grass_rs.Attributor(_mlp(), k=16, **kwargs).fit(Never())  # type: ignore[arg-type]

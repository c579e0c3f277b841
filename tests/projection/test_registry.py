"""``grass_rs.projector`` builds every kind by name, equal to the class; ``ProjectorFactory`` and
``Full`` share one per-layer seed rule."""

from __future__ import annotations

import pytest
import torch

import grass_rs
from grass_rs.capture.layers import LayerInfo
from grass_rs.projection import KINDS, default_mask_dim


@pytest.mark.parametrize(
    ("kind", "direct"),
    [
        ("sjlt", lambda: grass_rs.SJLT(300, 16, c=2, seed=7)),
        ("mask", lambda: grass_rs.Mask(300, 16, seed=7, scale=True)),
        ("grass", lambda: grass_rs.GraSS(300, 16, mask_dim=64, seed=7)),
        ("gaussian", lambda: grass_rs.Gaussian(300, 16, seed=7)),
        ("rademacher", lambda: grass_rs.Rademacher(300, 16, seed=7)),
        ("srht", lambda: grass_rs.SRHT(300, 16, seed=7)),
    ],
)
def test_projector_by_name_is_the_class(kind: str, direct) -> None:  # type: ignore[no-untyped-def]
    opts = {"c": 2} if kind == "sjlt" else {"scale": True} if kind == "mask" else {}
    p = grass_rs.projector(kind, 300, 16, seed=7, **opts)
    x = torch.randn(5, 300, dtype=torch.float64)
    assert type(p) is type(direct())
    assert torch.equal(torch.as_tensor(p(x)), torch.as_tensor(direct()(x)))


def test_grass_default_mask_dim_is_min_4k_p() -> None:
    assert grass_rs.projector("grass", 1000, 16).mask_dim == 64  # type: ignore[attr-defined]
    assert grass_rs.projector("grass", 40, 16).mask_dim == 40  # type: ignore[attr-defined]
    assert default_mask_dim(40, 16) == 40


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "dense"}, "kind"),
        ({"kind": "mask", "c": 2}, "`c`"),
        ({"kind": "sjlt", "mask_dim": 32}, "mask_dim"),
        ({"kind": "gaussian", "scale": True}, "scale"),
    ],
)
def test_projector_rejects_unknown_kinds_and_foreign_options(kwargs: dict, match: str) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(grass_rs.InvalidArgumentError, match=match):
        grass_rs.projector(kind, 100, 8, **kwargs)


def test_one_seed_rule_for_projector_factory_and_full() -> None:
    info = LayerInfo("blocks.0.fc", "linear", 6, 9, True)
    for kind in KINDS:
        if kind == "srht":
            continue
        cls = type(grass_rs.projector(kind, 60, 8))
        extra = {"mask_dim": default_mask_dim(60, 8)} if kind == "grass" else {}
        via_full = grass_rs.Full(cls, out_dim=8, seed=3, **extra).build(info)
        via_factory = grass_rs.ProjectorFactory(kind, 8, seed=3)("blocks.0.fc", 60)
        g = torch.randn(4, 60, dtype=torch.float64)
        assert torch.equal(via_full.compress_full(g), torch.as_tensor(via_factory(g)))

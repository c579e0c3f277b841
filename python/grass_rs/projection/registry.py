"""Projectors by name: the one place a projector is built from a ``kind`` string, and the one
per-layer seed rule.

* :func:`projector` — ``projector("grass", in_dim, out_dim, seed=0)`` builds any projector by name
  (GraSS's ``mask_dim`` defaults to ``min(4·out_dim, in_dim)``, the paper's ratio);
* :func:`layer_seed` — the seed of projector ``part`` of layer ``name`` (BLAKE2b of the base seed and
  the names: stable across runs, processes and machines);
* :class:`ProjectorFactory` — ``factory(layer_name, in_dim)``: one seeded projector per layer, used by
  the hook and ``torch.func`` backends alike (so both give identical gradients).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .._validate import positive_int
from .._validate import seed as check_seed
from ..errors import InvalidArgumentError
from .projectors import SJLT, SRHT, Gaussian, GraSS, Mask, Projector, Rademacher

__all__ = ["KINDS", "PROJECTORS", "ProjectorFactory", "default_mask_dim", "layer_seed", "projector"]

#: Projector kinds by name.
PROJECTORS: dict[str, type[Projector]] = {
    "grass": GraSS,
    "sjlt": SJLT,
    "mask": Mask,
    "gaussian": Gaussian,
    "rademacher": Rademacher,
    "srht": SRHT,
}
KINDS = tuple(PROJECTORS)
#: GraSS keeps ``MASK_FACTOR · k`` coordinates before its SJLT by default (paper arXiv 2505.18976).
MASK_FACTOR = 4


def layer_seed(seed: int, name: str, part: str = "") -> int:
    """A 64-bit seed for projector ``part`` of layer ``name``: BLAKE2b-64 of ``"{seed}/{name}/{part}"``.

    Stable across runs, processes and machines (unlike Python's ``hash``).
    """
    digest = hashlib.blake2b(f"{seed}/{name}/{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def default_mask_dim(in_dim: int, out_dim: int, mask_factor: int = MASK_FACTOR) -> int:
    """GraSS's default ``mask_dim``: ``min(mask_factor · out_dim, in_dim)``."""
    return min(mask_factor * out_dim, in_dim)


def projector(
    kind: str,
    in_dim: int,
    out_dim: int,
    *,
    seed: int = 0,
    c: int = 1,
    mask_dim: int | None = None,
    scale: bool = False,
) -> Projector:
    """Builds the projector ``kind`` from ``in_dim`` to ``out_dim``.

    Args:
        kind: ``"grass"``, ``"sjlt"``, ``"mask"``, ``"gaussian"``, ``"rademacher"`` or ``"srht"``.
        in_dim: input dimension ``p``.
        out_dim: output dimension ``k``.
        seed: seed in ``[0, 2**64)``.
        c: nonzeros per column (SJLT, GraSS).
        mask_dim: GraSS's mask size ``k'`` (default :func:`default_mask_dim`).
        scale: Mask only: rescale kept values by ``√(in_dim/out_dim)``.

    Raises:
        InvalidArgumentError: unknown ``kind``, or an option the kind does not take.
    """
    if kind not in PROJECTORS:
        raise InvalidArgumentError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    if kind not in ("sjlt", "grass") and c != 1:
        raise InvalidArgumentError(f"`c` applies to 'sjlt' and 'grass' only, not {kind!r}")
    if kind != "grass" and mask_dim is not None:
        raise InvalidArgumentError(f"`mask_dim` applies to 'grass' only, not {kind!r}")
    if kind != "mask" and scale:
        raise InvalidArgumentError(f"`scale` applies to 'mask' only, not {kind!r}")
    if kind == "grass":
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        m = default_mask_dim(in_dim, out_dim) if mask_dim is None else mask_dim
        return GraSS(in_dim, out_dim, mask_dim=m, c=c, seed=seed)
    if kind == "sjlt":
        return SJLT(in_dim, out_dim, c=c, seed=seed)
    if kind == "mask":
        return Mask(in_dim, out_dim, seed=seed, scale=scale)
    cls: Any = PROJECTORS[kind]
    return cls(in_dim, out_dim, seed=seed)  # type: ignore[no-any-return]


class ProjectorFactory:
    """Builds one seeded projector per layer: ``factory(layer_name, in_dim) -> Projector``.

    Every layer gets ``projector(kind, in_dim, min(out_dim, in_dim), seed=layer_seed(seed, name,
    "full"))`` — the same rule as :class:`grass_rs.Full`, so the hook and ``torch.func`` backends
    and ``Full`` give identical compressed gradients.

    Args:
        kind: a :data:`PROJECTORS` name.
        out_dim: ``k`` per layer (clipped to the layer's ``in_dim``).
        seed: base seed.
        mask_factor: GraSS keeps ``min(mask_factor · k, in_dim)`` coordinates before its SJLT (paper: 4).
    """

    def __init__(self, kind: str, out_dim: int, *, seed: int = 0, mask_factor: int = MASK_FACTOR) -> None:
        if kind not in PROJECTORS:
            raise InvalidArgumentError(f"unknown projector {kind!r}; choose one of {sorted(PROJECTORS)}")
        self.kind, self.out_dim = kind, positive_int(out_dim, "out_dim")
        self.seed, self.mask_factor = check_seed(seed), positive_int(mask_factor, "mask_factor")

    def __call__(self, name: str, in_dim: int) -> Projector:
        k = min(self.out_dim, in_dim)
        m = default_mask_dim(in_dim, k, self.mask_factor) if self.kind == "grass" else None
        return projector(self.kind, in_dim, k, seed=layer_seed(self.seed, name, "full"), mask_dim=m)

    def __repr__(self) -> str:
        args = f"out_dim={self.out_dim}, seed={self.seed}, mask_factor={self.mask_factor}"
        return f"ProjectorFactory({self.kind!r}, {args})"

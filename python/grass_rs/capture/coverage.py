"""Which module captures which trainable parameter: the capture plan of :func:`grass_rs.attach` and
its :class:`Coverage` report.

Every module that owns trainable parameters becomes one *unit*:

* a layer with a fast form (:func:`grass_rs.capture.layers.describe`: Linear, Conv1D, Conv1d/2d,
  Embedding, LayerNorm, RMSNorms) is captured from its factors;
* any other module goes to the generic exact fallback (:mod:`.fallback`) with its own (direct)
  trainable parameters; ``nn.MultiheadAttention`` is one unit with all its parameters (it uses its
  ``out_proj`` weights without calling ``out_proj``).

Parameters are left out — and named, with the reason, in :attr:`Coverage.left_out` — when ``layers``
does not select their module, when ``fallback=False`` and their module has no fast form, or when no
per-sample gradient exists in their module's configuration (e.g. ``nn.MultiheadAttention`` with
``batch_first=False``, which puts the sequence first; ``nn.Embedding(scale_grad_by_freq=True)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Union

from torch import nn

from ..errors import ArgumentTypeError, InvalidArgumentError
from . import layers as L

__all__ = ["Coverage", "CoverageWarning", "Selector", "Unit", "plan"]

Selector = Union[str, type, Callable[[str, nn.Module], bool], Iterable[Union[str, type]], None]  # noqa: UP007
NOT_SELECTED = "not selected by `layers`"


class CoverageWarning(UserWarning):
    """Some trainable parameters are not captured (the message names them and says why)."""


@dataclass
class Unit:
    """One captured module.

    Attributes:
        name: the module's name (``""`` for the root).
        module: the module.
        info: its :class:`~grass_rs.capture.layers.LayerInfo` (kind ``"module"`` for the fallback).
        path: ``"fast"`` (factored / exact vector form) or ``"fallback"``.
        params: parameter name relative to ``module`` → the trainable parameter (fallback units).
    """

    name: str
    module: nn.Module
    info: L.LayerInfo
    path: str
    params: dict[str, nn.Parameter] = field(default_factory=dict)


@dataclass
class Coverage:
    """How much of a model's trainable parameters a handle captures.

    Attributes:
        total: number of trainable parameter entries (shared parameters counted once).
        by_path: ``"fast"`` / ``"fallback"`` → covered parameter entries on that path.
        by_kind: layer kind (``"linear"``, ``"conv"``, ..., ``"module"``) → covered entries.
        units: captured module name → its path.
        left_out: parameter name → why it is not captured.
    """

    total: int
    by_path: dict[str, int]
    by_kind: dict[str, int]
    units: dict[str, str]
    left_out: dict[str, str]

    @property
    def covered(self) -> int:
        """Captured parameter entries."""
        return sum(self.by_path.values())

    @property
    def fraction(self) -> float:
        """``covered / total`` (1.0 for a model without trainable parameters)."""
        return self.covered / self.total if self.total else 1.0

    @property
    def complete(self) -> bool:
        """Whether every trainable parameter is captured."""
        return not self.left_out

    def describe_left_out(self, limit: int = 8) -> str:
        """The left-out parameters grouped by reason: ``name, name (reason); ...`` (``limit`` names each)."""
        return _grouped(self.left_out, limit)

    def __str__(self) -> str:
        paths = ", ".join(f"{k}: {v}" for k, v in self.by_path.items())
        pct = 100 * self.fraction
        s = f"{self.covered}/{self.total} trainable parameters captured ({pct:.1f} %; {paths})"
        return s + (f"; left out: {self.describe_left_out()}" if self.left_out else "")


def _check_type(t: object) -> None:
    if not (isinstance(t, type) and issubclass(t, nn.Module)):
        raise ArgumentTypeError(f"`layers` entries must be module names or nn.Module types, got {t!r}")


def _chooser(model: nn.Module, layers: Selector) -> tuple[Callable[[str, nn.Module], bool], set[str]]:
    """``chosen(name, module)`` for a selector, and the names it lists explicitly."""
    if layers is None:
        return (lambda n, m: True), set()
    if isinstance(layers, (str, type)):
        layers = [layers]
    elif callable(layers):
        return layers, set()
    elif not isinstance(layers, Iterable):
        kind = type(layers).__name__
        raise ArgumentTypeError(f"`layers` must be None, a name, a type, a list or a predicate, got {kind}")
    items = list(layers)
    names = {c for c in items if isinstance(c, str)}
    types = tuple(c for c in items if not isinstance(c, str))
    for t in types:
        _check_type(t)
    missing = sorted(names - dict(model.named_modules()).keys())
    if missing:
        raise InvalidArgumentError(f"`layers` names modules the model does not have: {missing}")
    return (lambda n, m: n in names or bool(types and isinstance(m, types))), names


def _own_params(m: nn.Module) -> dict[str, nn.Parameter]:
    recurse = isinstance(m, nn.MultiheadAttention)  # it calls none of its submodules
    return {n: p for n, p in m.named_parameters(recurse=recurse) if p.requires_grad}


def _refusal(m: nn.Module) -> str | None:
    """Why a module's parameters have no per-sample gradient in its configuration, or ``None``."""
    if isinstance(m, nn.MultiheadAttention) and not m.batch_first:
        return (
            "nn.MultiheadAttention(batch_first=False) puts the sequence first; per-sample gradients "
            "need the sample dimension first (use batch_first=True)"
        )
    if isinstance(m, nn.Embedding) and m.scale_grad_by_freq:
        return (
            "nn.Embedding(scale_grad_by_freq=True) scales by batch-wide frequencies (no per-sample gradient)"
        )
    return None


def _fast(name: str, m: nn.Module) -> tuple[L.LayerInfo | None, str | None]:
    """The fast-form info of a module, or why it has none (``None`` reason: not a fast type)."""
    if not L.is_supported(m):
        return None, None
    try:
        return L.describe(name, m), None
    except (InvalidArgumentError, ArgumentTypeError) as e:
        return None, str(e)


def _unit(
    name: str, m: nn.Module, explicit: bool, fallback: bool
) -> tuple[Unit | None, dict[str, nn.Parameter], str]:
    """The unit capturing module ``m``, or ``None`` with the reason its parameters are left out."""
    own = _own_params(m)
    info, why = _fast(name, m)
    if info is not None and (own or explicit):
        return Unit(name, m, info, "fast", own), own, ""
    if not own:
        if explicit:
            if why is not None:
                raise InvalidArgumentError(why)
            raise ArgumentTypeError(
                f"layer {name!r} ({type(m).__name__}) has no trainable parameters of its own to capture"
            )
        return None, own, ""
    refusal = _refusal(m)
    if refusal is not None:
        return None, own, refusal
    if not fallback:
        return None, own, f"{type(m).__name__} has no fast form and fallback=False"
    dtype = next(iter(own.values())).dtype
    info = L.describe_module(name, sum(p.numel() for p in own.values()), dtype)
    return Unit(name, m, info, "fallback", own), own, ""


def plan(model: nn.Module, layers: Selector = None, fallback: bool = True) -> tuple[list[Unit], Coverage]:
    """The units capturing ``model``'s parameters (module order) and the coverage they give.

    Args:
        model: the model.
        layers: ``None`` (every module with trainable parameters), a module name, a module type, a
            list of names and/or types, or a predicate ``(name, module) -> bool``. A module named
            explicitly is captured even if frozen (when it has a fast form).
        fallback: capture modules without a fast form through the generic exact fallback.

    Raises:
        InvalidArgumentError: unknown names, nothing selected, a named module in a configuration
            without per-sample gradients.
        ArgumentTypeError: a malformed ``layers``, a named module without parameters.
    """
    chosen, names = _chooser(model, layers)
    inside_mha = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention))
    units: list[Unit] = []
    reasons: dict[int, str] = {}
    for name, m in model.named_modules():
        if inside_mha and name.startswith(inside_mha):
            continue
        if not chosen(name, m):
            for p in _own_params(m).values():
                reasons.setdefault(id(p), NOT_SELECTED)
            continue
        unit, own, why = _unit(name, m, name in names, fallback)
        if unit is not None:
            units.append(unit)
        else:
            for p in own.values():
                reasons[id(p)] = why
    coverage = _coverage(model, units, reasons)
    if not units:
        why = f": {coverage.describe_left_out()}" if coverage.left_out else ""
        raise InvalidArgumentError(f"`layers`={layers!r} selects no layer with parameters to capture{why}")
    return units, coverage


def _coverage(model: nn.Module, units: list[Unit], reasons: dict[int, str]) -> Coverage:
    owner: dict[int, Unit] = {}
    for u in units:
        params = u.params or dict(u.module.named_parameters(recurse=False))
        for p in params.values():
            owner.setdefault(id(p), u)
    by_path: dict[str, int] = {"fast": 0, "fallback": 0}
    by_kind: dict[str, int] = {}
    left_out: dict[str, str] = {}
    total = 0
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        total += p.numel()
        unit = owner.get(id(p))
        if unit is None:
            left_out[pname] = reasons.get(id(p), "its module is not captured")
            continue
        by_path[unit.path] += p.numel()
        by_kind[unit.info.kind] = by_kind.get(unit.info.kind, 0) + p.numel()
    return Coverage(total, by_path, by_kind, {u.name: u.path for u in units}, left_out)


def enforce(coverage: Coverage, strict: bool) -> None:
    """Raises (``strict``) or warns (:class:`CoverageWarning`) about left-out parameters.

    Without ``strict``, parameters left out only because ``layers`` did not select them are the
    caller's choice and are not warned about.
    """
    if coverage.complete:
        return
    if strict:
        raise InvalidArgumentError(
            f"strict=True: {len(coverage.left_out)} trainable parameters are not captured: "
            f"{coverage.describe_left_out()}"
        )
    unexpected = {n: r for n, r in coverage.left_out.items() if r != NOT_SELECTED}
    if unexpected:
        warnings.warn(
            f"{len(unexpected)} trainable parameters are not captured: {_grouped(unexpected, 8)}. "
            "Pass strict=True to make this an error.",
            CoverageWarning,
            stacklevel=4,
        )


def _grouped(left_out: dict[str, str], limit: int) -> str:
    by_reason: dict[str, list[str]] = {}
    for name, reason in left_out.items():
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in by_reason.items():
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        parts.append(f"{', '.join(names[:limit])}{more} ({reason})")
    return "; ".join(parts)

"""Per-layer compressor choice: a factory per module-name pattern (e.g. a larger ``k`` for the MLPs).

::

    factory = PerLayer(FactGraSS(256), {"*.mlp.*": FactGraSS(1024), "lm_head": FactGraSS(64)})
    factory = per_layer_k("factgrass", 256, {"*.mlp.*": 1024}, seed=0)     # the same, by name and k
    grass_rs.attach(model, factory)

Patterns are :func:`fnmatch.fnmatchcase` patterns on the module names of :func:`grass_rs.attach`
(``*`` also crosses dots); the **first** matching pattern wins (mapping order), the default takes the
layers no pattern matches. Each layer's compressor is exactly the one its factory builds for that
layer alone (seeds come from ``(seed, layer name, part)``), so a layer's gradients do not depend on
the other layers' settings. The ``repr`` lists every rule, so store and index fingerprints change
whenever a per-layer ``k`` does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

from ..errors import ArgumentTypeError, InvalidArgumentError
from .compressors import CompressorFactory, LayerCompressor, make_compressor
from .layers import LayerInfo

__all__ = ["PerLayer", "parse_layer_k", "per_layer_k"]


class PerLayer(CompressorFactory):
    """A :class:`CompressorFactory` that picks a factory per layer by name pattern.

    Args:
        default: the factory for layers no pattern matches.
        rules: ``pattern → factory`` (a mapping, or ``(pattern, factory)`` pairs); first match wins.

    Raises:
        ArgumentTypeError: a rule whose factory is not a :class:`CompressorFactory`, a non-string pattern.
    """

    def __init__(
        self,
        default: CompressorFactory,
        rules: Mapping[str, CompressorFactory] | Sequence[tuple[str, CompressorFactory]] = (),
    ) -> None:
        pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
        for pattern, factory in [("<default>", default), *pairs]:
            if not isinstance(pattern, str) or not pattern:
                raise ArgumentTypeError(f"a per-layer pattern must be a non-empty string, got {pattern!r}")
            if not isinstance(factory, CompressorFactory):
                raise ArgumentTypeError(
                    f"the factory for {pattern!r} must be a compressor factory such as FactGraSS(k), "
                    f"got {type(factory).__name__}"
                )
        self.default, self.rules = default, pairs
        self.seed = default.seed

    def factory_for(self, name: str) -> CompressorFactory:
        """The factory of layer ``name`` (the first matching rule, else the default)."""
        for pattern, factory in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                return factory
        return self.default

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The patterns that match none of ``names`` (usually a typo)."""
        names = list(names)
        return [p for p, _ in self.rules if not any(fnmatch.fnmatchcase(n, p) for n in names)]

    def build(self, layer: LayerInfo) -> LayerCompressor:
        return self.factory_for(layer.name).build(layer)  # the rule's own error message

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        return self.build(layer)

    def __repr__(self) -> str:
        rules = ", ".join(f"{p!r}: {f!r}" for p, f in self.rules)
        return f"PerLayer({self.default!r}, {{{rules}}})"


def per_layer_k(name: str, k: int, layer_k: Mapping[str, int] | None, *, seed: int = 0) -> CompressorFactory:
    """The compressor ``name`` (see :func:`~grass_rs.capture.compressors.make_compressor`) with ``k``
    per layer, except ``layer_k[pattern]`` for layers matching ``pattern``; without rules, the plain
    factory (so its fingerprint is unchanged).

    Raises:
        InvalidArgumentError: an unknown name, or a ``k`` the compressor does not take (named).
    """
    default = make_compressor(name, k, seed=seed)
    if not layer_k:
        return default
    rules = []
    for pattern, kp in layer_k.items():
        if isinstance(kp, bool) or not isinstance(kp, int) or kp < 1:
            raise InvalidArgumentError(
                f"the per-layer k of {pattern!r} must be a positive integer, got {kp!r}"
            )
        try:
            rules.append((pattern, make_compressor(name, kp, seed=seed)))
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"per-layer k {pattern}={kp}: {e}") from None
    return PerLayer(default, rules)


def parse_layer_k(items: Sequence[str] | None) -> dict[str, int]:
    """``["PATTERN=K", ...]`` (the ``--layer-k`` option) → ``{pattern: k}``, in order.

    Raises:
        InvalidArgumentError: a malformed item, a non-positive ``k`` or a repeated pattern.
    """
    out: dict[str, int] = {}
    for item in items or ():
        pattern, sep, value = item.rpartition("=")
        try:
            k = int(value)
        except ValueError:
            k = 0
        if not sep or not pattern or k < 1:
            raise InvalidArgumentError(
                f"--layer-k {item!r}: expected PATTERN=K with a positive integer K (e.g. '*.mlp.*=512')"
            )
        if pattern in out:
            raise InvalidArgumentError(f"--layer-k: pattern {pattern!r} is given twice")
        out[pattern] = k
    return out

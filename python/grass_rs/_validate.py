"""Argument checks shared by the public API: each error names the argument at fault."""

from __future__ import annotations

import operator

from .errors import ArgumentTypeError, InvalidArgumentError

MAX_SEED = 2**64 - 1


def positive_int(value: object, name: str) -> int:
    """Returns ``value`` as an ``int`` ≥ 1, else raises ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"`{name}` must be an int, got bool")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"`{name}` must be an int, got {type(value).__name__}") from None
    if v < 1:
        raise InvalidArgumentError(f"`{name}` must be at least 1, got {v}")
    return v


def seed(value: object, name: str = "seed") -> int:
    """Returns a seed in ``[0, 2**64)``."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"`{name}` must be an int, got bool")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"`{name}` must be an int, got {type(value).__name__}") from None
    if not 0 <= v <= MAX_SEED:
        raise InvalidArgumentError(f"`{name}` must be in [0, 2**64), got {v}")
    return v

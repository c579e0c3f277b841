"""Argument checks shared by the public API: each error names the argument at fault."""

from __future__ import annotations

import math
import numbers
import operator

from .errors import ArgumentTypeError, InvalidArgumentError

MAX_SEED = 2**64 - 1
#: Largest dimension / index accepted anywhere (torch indexes with int64).
MAX_DIM = 2**63 - 1


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ArgumentTypeError(f"`{name}` must be an int, got bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"`{name}` must be an int, got {type(value).__name__}") from None


def positive_int(value: object, name: str, *, maximum: int = MAX_DIM) -> int:
    """Returns ``value`` as an ``int`` in ``[1, maximum]``, else raises ``TypeError``/``ValueError``
    naming ``name``."""
    v = _as_int(value, name)
    if v < 1:
        raise InvalidArgumentError(f"`{name}` must be at least 1, got {v}")
    if v > maximum:
        limit = "2**63 - 1" if maximum == MAX_DIM else str(maximum)
        raise InvalidArgumentError(f"`{name}` must be at most {limit}, got {v}")
    return v


def int_in_range(value: object, name: str, low: int, high: int) -> int:
    """Returns ``value`` as an ``int`` in ``[low, high]``, else raises naming ``name``."""
    v = _as_int(value, name)
    if not low <= v <= high:
        raise InvalidArgumentError(f"`{name}` must be in [{low}, {high}], got {v}")
    return v


def seed(value: object, name: str = "seed") -> int:
    """Returns a seed in ``[0, 2**64)``."""
    v = _as_int(value, name)
    if not 0 <= v <= MAX_SEED:
        raise InvalidArgumentError(f"`{name}` must be in [0, 2**64), got {v}")
    return v


def damping(value: object, name: str = "damping") -> float:
    """Returns a damping ``λ`` (or relative factor) as a finite ``float`` ≥ 0.

    Raises:
        ArgumentTypeError: not a real number (``None``, a string, a bool, ...).
        InvalidArgumentError: NaN, infinite or negative.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"`{name}` must be a real number (a finite float ≥ 0), got {type(value).__name__} {value!r}"
        )
    v = float(value)
    if not math.isfinite(v):
        raise InvalidArgumentError(f"`{name}` must be finite (a float ≥ 0), got {v}")
    if v < 0:
        raise InvalidArgumentError(f"`{name}` must be ≥ 0, got {v}")
    return v

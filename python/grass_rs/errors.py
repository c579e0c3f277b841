"""The grass-rs exception hierarchy: one root, :class:`GrassError`.

``except grass_rs.GrassError`` catches every error grass-rs raises on purpose. Each subclass also
derives from the built-in exception that fits, so ``except ValueError`` / ``except TypeError`` keep
working::

    GrassError
    ├── InvalidArgumentError (ValueError)    a bad value: wrong shape, out of range, inconsistent
    ├── ArgumentTypeError (TypeError)        an argument of the wrong type
    ├── CudaUnavailableError (RuntimeError)  CUDA requested but not built / no driver / no device
    └── StoreError (RuntimeError)            a gradient store or index is corrupt, incomplete, locked
        └── StoreMismatchError               ... or was written for another model / compressor

``GrassError`` and ``CudaUnavailableError`` are defined by the compiled extension (the Rust core
raises them); the others are defined here on top of them.
"""

from __future__ import annotations

from ._core import CudaUnavailableError, GrassError

__all__ = [
    "ArgumentTypeError",
    "CudaUnavailableError",
    "GrassError",
    "InvalidArgumentError",
    "StoreError",
    "StoreMismatchError",
]


class InvalidArgumentError(GrassError, ValueError):
    """An argument has an invalid value (the message names the argument and what is allowed)."""


class ArgumentTypeError(GrassError, TypeError):
    """An argument has the wrong type (the message names the argument and what is allowed)."""


class StoreError(GrassError, RuntimeError):
    """A gradient store or index is corrupt, incomplete, unreadable or locked by another writer."""


class StoreMismatchError(StoreError):
    """The store was written for another configuration (model, compressor, seed, k, ...)."""

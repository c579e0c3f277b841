"""The grass-rs exception hierarchy: one root, :class:`GrassError`.

``except grass_rs.GrassError`` catches every error grass-rs raises on purpose. Each subclass also
derives from the built-in exception that fits, so ``except ValueError`` / ``except TypeError`` keep
working::

    GrassError
    ├── InvalidArgumentError (ValueError)    a bad value: wrong shape, out of range, inconsistent
    ├── ArgumentOverflowError (OverflowError, ValueError)  an int outside what a size/seed takes
    ├── ArgumentTypeError (TypeError)        an argument of the wrong type
    ├── OutOfMemoryError (MemoryError)       a buffer sized by the arguments cannot be allocated
    ├── CudaUnavailableError (RuntimeError)  CUDA requested but not built / no driver / no device
    └── StoreError (RuntimeError)            a gradient store or index is corrupt, incomplete, locked
        └── StoreMismatchError               ... or was written for another model / compressor

The first five are defined by the compiled extension (the Rust core raises them too; their
``_core`` names are ``GrassValueError``, ``GrassOverflowError``, ``GrassTypeError``,
``GrassMemoryError``); the store errors are defined here on top of them. An interrupted call
(Ctrl-C) raises the built-in ``KeyboardInterrupt``.
"""

from __future__ import annotations

from ._core import CudaUnavailableError, GrassError
from ._core import GrassMemoryError as OutOfMemoryError
from ._core import GrassOverflowError as ArgumentOverflowError
from ._core import GrassTypeError as ArgumentTypeError
from ._core import GrassValueError as InvalidArgumentError

__all__ = [
    "ArgumentOverflowError",
    "ArgumentTypeError",
    "CudaUnavailableError",
    "GrassError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "StoreError",
    "StoreMismatchError",
]


class StoreError(GrassError, RuntimeError):
    """A gradient store or index is corrupt, incomplete, unreadable or locked by another writer."""


class StoreMismatchError(StoreError):
    """The store was written for another configuration (model, compressor, seed, k, ...)."""

"""Conversion between user arrays (torch tensors, numpy arrays) and what ``_core`` reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import torch

from .errors import ArgumentTypeError, InvalidArgumentError

Array: TypeAlias = torch.Tensor | np.ndarray

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class Batch:
    """A 2-D, C-contiguous view of the user's input and how to give the result back."""

    tensor: torch.Tensor
    was_numpy: bool
    was_1d: bool

    def result(self, out: torch.Tensor) -> Array:
        """Shapes ``out`` like the input (drops the batch axis for 1-D input, numpy for numpy)."""
        if self.was_1d:
            out = out[0]
        return out.numpy() if self.was_numpy else out


def as_batch(x: object, name: str, dim: int, *, dims_name: str = "in_dim") -> Batch:
    """Validates ``x`` (shape ``(dim,)`` or ``(batch, dim)``, a float dtype) and makes it contiguous.

    Raises:
        TypeError: not an array, or not a float16/bfloat16/float32/float64 array.
        ValueError: wrong number of dimensions or wrong last dimension.
    """
    was_numpy = isinstance(x, np.ndarray)
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(_numpy_compatible(x, name))
    elif isinstance(x, torch.Tensor):
        t = x
    else:
        raise ArgumentTypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"`{name}` must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.ndim not in (1, 2):
        raise InvalidArgumentError(
            f"`{name}` must have shape ({dims_name},) or (batch, {dims_name}), got {tuple(t.shape)}"
        )
    if t.shape[-1] != dim:
        raise InvalidArgumentError(
            f"`{name}` must have last dimension {dims_name} = {dim}, got {t.shape[-1]}"
        )
    was_1d = t.ndim == 1
    t = t.detach()
    if was_1d:
        t = t.unsqueeze(0)
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return Batch(t.contiguous(), was_numpy, was_1d)


def _numpy_compatible(arr: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous, writable, native-endian float array (copied only when needed)."""
    if arr.dtype.kind != "f":
        raise ArgumentTypeError(f"`{name}` must be a float array (float16/32/64), got dtype {arr.dtype}")
    if arr.flags.c_contiguous and arr.flags.writeable and arr.dtype.isnative:
        return arr
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type accumulates and returns in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32

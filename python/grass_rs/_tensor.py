"""Conversion between user arrays (torch tensors, numpy arrays) and what ``_core`` reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import torch

from .errors import ArgumentTypeError, InvalidArgumentError

Array: TypeAlias = torch.Tensor | np.ndarray

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NUMPY_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


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


def is_transformed(t: torch.Tensor) -> bool:
    """Whether ``t`` is wrapped by a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``, ...)."""
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - torch without functorch
        return False


def check_tensor(t: torch.Tensor, name: str, dim: int, dims_name: str) -> None:
    """Checks layout, dtype and shape of a torch tensor (without touching its data).

    Raises:
        TypeError: sparse, nested or quantized layout, or not a float16/bfloat16/float32/float64 tensor.
        ValueError: wrong number of dimensions or wrong last dimension.
    """
    if t.is_nested:
        raise ArgumentTypeError(
            f"`{name}` is a nested tensor: projectors take dense (batch, {dims_name}) tensors because "
            "every row must have the same length; pad it (torch.nested.to_padded_tensor) or project "
            "each row"
        )
    if t.layout != torch.strided:
        raise ArgumentTypeError(
            f"`{name}` has layout {t.layout}: projectors take dense (strided) tensors because the Rust "
            f"kernels read a dense buffer; convert it with `{name}.to_dense()`"
        )
    if t.is_quantized or t.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"`{name}` must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.ndim not in (1, 2):
        raise InvalidArgumentError(
            f"`{name}` must have shape ({dims_name},) or (batch, {dims_name}), got {tuple(t.shape)}"
        )
    if t.shape[-1] != dim:
        raise InvalidArgumentError(
            f"`{name}` must have last dimension {dims_name} = {dim}, got {t.shape[-1]}"
        )


def as_batch(x: object, name: str, dim: int, *, dims_name: str = "in_dim") -> Batch:
    """Validates ``x`` (shape ``(dim,)`` or ``(batch, dim)``, a float dtype) and makes it contiguous.

    Raises:
        TypeError: not an array, not a float16/bfloat16/float32/float64 array, or a sparse/nested
            tensor.
        ValueError: wrong number of dimensions or wrong last dimension.
    """
    was_numpy = isinstance(x, np.ndarray)
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(_numpy_compatible(x, name))
    elif isinstance(x, torch.Tensor):
        t = x
    else:
        raise ArgumentTypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    check_tensor(t, name, dim, dims_name)
    was_1d = t.ndim == 1
    t = t.detach()
    if was_1d:
        t = t.unsqueeze(0)
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return Batch(t.contiguous(), was_numpy, was_1d)


def _numpy_compatible(arr: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous, writable, native-endian float16/32/64 array (copied only when needed)."""
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
    if native not in NUMPY_DTYPES:
        hint = f"; convert it with {name}.astype(np.float64)" if arr.dtype.kind == "f" else ""
        raise ArgumentTypeError(
            f"`{name}` must be a float array (float16, float32 or float64), got dtype {arr.dtype.name}{hint}"
        )
    if arr.flags.c_contiguous and arr.flags.writeable and arr.dtype.isnative:
        return arr
    return np.array(arr, dtype=native, order="C", copy=True)


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type accumulates and returns in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32

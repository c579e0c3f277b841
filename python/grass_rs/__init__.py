"""grass-rs: Rust-accelerated gradient compression and training-data attribution for PyTorch.

Compressors (``project(x)``/``transpose(y)`` on torch tensors or numpy arrays): :class:`SJLT`,
:class:`Mask`, :class:`GraSS`, :class:`Gaussian`, :class:`Rademacher`.
"""

from __future__ import annotations

from . import _core
from ._core import CudaUnavailableError, GrassError, get_num_threads, set_num_threads
from .projection import SJLT, Gaussian, GraSS, Mask, Projector, Rademacher

__version__: str = _core.__version__

__all__ = [
    "SJLT",
    "CudaUnavailableError",
    "Gaussian",
    "GraSS",
    "GrassError",
    "Mask",
    "Projector",
    "Rademacher",
    "__version__",
    "cuda_available",
    "get_num_threads",
    "set_num_threads",
]


def cuda_available() -> bool:
    """Whether grass-rs can run on CUDA tensors here (a CUDA build, a driver and a device)."""
    return bool(getattr(_core, "CUDA_COMPILED", False)) and bool(getattr(_core, "cuda_device_count", lambda: 0)())


# --- extensions: each block is owned by one module; keep them one import per line ---
# hooks / compressors (issue 5)
# influence pipeline (issue 6)
# evaluation (issue 7)

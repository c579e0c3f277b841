"""grass-rs: Rust-accelerated gradient compression and training-data attribution for PyTorch.

* Projectors (``project(x)``/``transpose(y)`` on torch tensors or numpy arrays, CPU and CUDA):
  :class:`SJLT`, :class:`Mask`, :class:`GraSS`, :class:`Gaussian`, :class:`Rademacher`,
  :class:`SRHT`.
* Per-sample gradient capture with hooks: :func:`attach` with :class:`FactGraSS`, :class:`LoGra`
  or :class:`Full` compressors.
* Attribution: :func:`influence_scores`, :class:`Attributor`, :class:`TRAK`, the on-disk
  :class:`GradientStore`, block-diagonal :class:`BlockFisher`.
* Evaluation: :mod:`grass_rs.lds` (linear datamodeling score), :mod:`grass_rs.study`.
"""

from __future__ import annotations

from . import _core, layers, lds
from ._core import (
    CudaUnavailableError,
    GrassError,
    get_deterministic,
    get_num_threads,
    set_deterministic,
    set_num_threads,
)
from ._persample import ProjectorFactory
from .attributor import Attributor
from .compressors import CompressorFactory, FactGraSS, Full, LayerCompressor, LoGra, layer_seed
from .fim import BlockFisher, FisherBlock
from .hooks import GradientHandle, attach
from .influence import influence_scores, top_k
from .projection import SJLT, SRHT, Gaussian, GraSS, Mask, Projector, Rademacher
from .store import GradientStore, StoreError, StoreMismatchError
from .trak import TRAK, trak_scores

__version__: str = _core.__version__

__all__ = [
    "SJLT",
    "SRHT",
    "TRAK",
    "Attributor",
    "BlockFisher",
    "CompressorFactory",
    "CudaUnavailableError",
    "FactGraSS",
    "FisherBlock",
    "Full",
    "Gaussian",
    "GraSS",
    "GradientHandle",
    "GradientStore",
    "GrassError",
    "LayerCompressor",
    "LoGra",
    "Mask",
    "Projector",
    "ProjectorFactory",
    "Rademacher",
    "StoreError",
    "StoreMismatchError",
    "__version__",
    "attach",
    "cuda_available",
    "get_deterministic",
    "get_num_threads",
    "influence_scores",
    "layer_seed",
    "layers",
    "lds",
    "set_deterministic",
    "set_num_threads",
    "top_k",
    "trak_scores",
]


def cuda_available() -> bool:
    """Whether grass-rs can run on CUDA tensors here (a CUDA build, a driver and a device)."""
    return bool(_core.CUDA_COMPILED) and _core.cuda_device_count() > 0

"""grass-rs: Rust-accelerated gradient compression and training-data attribution for PyTorch.

Subpackages (imports flow one way: cli → evaluation → attribution → capture → projection → _core):

* :mod:`grass_rs.projection` — projectors (``project(x)``/``transpose(y)`` on torch tensors or numpy
  arrays, CPU and CUDA): :class:`SJLT`, :class:`Mask`, :class:`GraSS`, :class:`Gaussian`,
  :class:`Rademacher`, :class:`SRHT`, and :func:`projector` (build one by name).
* :mod:`grass_rs.capture` — per-sample gradient capture with hooks: :func:`attach` with
  :class:`FactGraSS`, :class:`LoGra` or :class:`Full` compressors.
* :mod:`grass_rs.attribution` — :func:`influence_scores`, :class:`Attributor`, :class:`TRAK`, the
  on-disk :class:`GradientStore`, the block-diagonal :class:`BlockFisher`.
* :mod:`grass_rs.evaluation` — the linear datamodeling score (:mod:`grass_rs.evaluation.lds`) and the
  speed–fidelity study.
* :mod:`grass_rs.errors` — every error derives from :class:`GrassError`.
"""

from __future__ import annotations

import sys

from . import _core, _threads
from ._core import get_deterministic, get_num_threads, set_deterministic, set_num_threads
from ._threads import set_thread_backend, thread_backend
from .attribution import (
    TRAK,
    Attributor,
    BlockFisher,
    FisherBlock,
    GradientStore,
    influence_scores,
    top_k,
    trak_scores,
)
from .capture import (
    CompressorFactory,
    Coverage,
    CoverageWarning,
    FactGraSS,
    Full,
    GradientHandle,
    LayerCompressor,
    LoGra,
    attach,
    layers,
)
from .errors import (
    ArgumentTypeError,
    CudaUnavailableError,
    GrassError,
    InvalidArgumentError,
    StoreError,
    StoreMismatchError,
)
from .evaluation import lds
from .index import Index
from .projection import (
    SJLT,
    SRHT,
    Gaussian,
    GraSS,
    Mask,
    Projector,
    ProjectorFactory,
    Rademacher,
    cuda_available,
    layer_seed,
    projector,
)

__version__: str = _core.__version__

__all__ = [
    "SJLT",
    "SRHT",
    "TRAK",
    "ArgumentTypeError",
    "Attributor",
    "BlockFisher",
    "CompressorFactory",
    "Coverage",
    "CoverageWarning",
    "CudaUnavailableError",
    "FactGraSS",
    "FisherBlock",
    "Full",
    "Gaussian",
    "GraSS",
    "GradientHandle",
    "GradientStore",
    "GrassError",
    "Index",
    "InvalidArgumentError",
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
    "projector",
    "set_deterministic",
    "set_num_threads",
    "set_thread_backend",
    "thread_backend",
    "top_k",
    "trak_scores",
]

_threads.configure()

# Module paths of earlier releases (``import grass_rs.lds``, ``from grass_rs.hooks import attach``)
# keep working as aliases of their new homes.
for _old, _new in {
    "lds": lds,
    "layers": layers,
    "hooks": sys.modules[f"{__name__}.capture.hooks"],
    "compressors": sys.modules[f"{__name__}.capture.compressors"],
    "fim": sys.modules[f"{__name__}.attribution.fim"],
    "influence": sys.modules[f"{__name__}.attribution.influence"],
    "trak": sys.modules[f"{__name__}.attribution.trak"],
    "store": sys.modules[f"{__name__}.attribution.store"],
    "attributor": sys.modules[f"{__name__}.attribution.attributor"],
    "distributed": sys.modules[f"{__name__}.attribution.distributed"],
}.items():
    sys.modules.setdefault(f"{__name__}.{_old}", _new)
del _old, _new

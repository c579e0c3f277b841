"""Per-sample gradient capture: layer types (:mod:`.layers`), per-layer compressors
(:mod:`.compressors`: FactGraSS, LoGra, Full), the hooks that feed them (:mod:`.hooks`:
:func:`attach`), the generic exact fallback for other modules (:mod:`.fallback`), what is covered
(:mod:`.coverage`), the Rust kernels they call (:mod:`.kernels`) and the gradient sources the
attribution pipeline reads (:mod:`.sources`: hooks or ``torch.func``)."""

from __future__ import annotations

from . import coverage, fallback, layers
from .compressors import (
    CompressorFactory,
    FactGraSS,
    Full,
    LayerCompressor,
    LoGra,
    PerLayerProjectors,
)
from .coverage import Coverage, CoverageWarning
from .hooks import GradientHandle, Selector, attach, select_layers
from .per_layer import PerLayer, parse_layer_k, per_layer_k
from .sources import (
    BACKENDS,
    FuncGradients,
    GradientSource,
    HookGradients,
    linear_layers,
    make_source,
    state_fingerprint,
)

__all__ = [
    "BACKENDS",
    "CompressorFactory",
    "Coverage",
    "CoverageWarning",
    "FactGraSS",
    "Full",
    "FuncGradients",
    "GradientHandle",
    "GradientSource",
    "HookGradients",
    "LayerCompressor",
    "LoGra",
    "PerLayer",
    "PerLayerProjectors",
    "Selector",
    "attach",
    "coverage",
    "fallback",
    "layers",
    "linear_layers",
    "make_source",
    "parse_layer_k",
    "per_layer_k",
    "select_layers",
    "state_fingerprint",
]

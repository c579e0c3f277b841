"""Seeded, matrix-free random projections backed by the Rust core, and the registry that builds
them by name (:func:`projector`). See :mod:`grass_rs.projection.projectors` for each kind and
``docs/CONTRACT.md`` for the seed → matrix contract."""

from __future__ import annotations

from .projectors import (
    SJLT,
    SRHT,
    Gaussian,
    GraSS,
    Mask,
    Projector,
    Rademacher,
    apply_projector,
    cuda_available,
    dense_matrix,
    fwht,
)
from .registry import KINDS, PROJECTORS, ProjectorFactory, default_mask_dim, layer_seed, projector

__all__ = [
    "KINDS",
    "PROJECTORS",
    "SJLT",
    "SRHT",
    "Gaussian",
    "GraSS",
    "Mask",
    "Projector",
    "ProjectorFactory",
    "Rademacher",
    "apply_projector",
    "cuda_available",
    "default_mask_dim",
    "dense_matrix",
    "fwht",
    "layer_seed",
    "projector",
]

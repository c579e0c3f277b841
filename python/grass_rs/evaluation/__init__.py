"""Evaluation of attribution quality: the linear datamodeling score (:mod:`.lds`, the metric only)
and the speed–fidelity study (:mod:`.study`, one runner over the tasks in :mod:`.tasks`)."""

from __future__ import annotations

from . import lds

__all__ = ["lds"]

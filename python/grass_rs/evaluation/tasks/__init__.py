"""The study's tasks: the :class:`EvalTask` protocol the runner needs, classification tasks on
scikit-learn's bundled data, and a tiny GPT-2 on standard-library text."""

from __future__ import annotations

from .base import DAMPINGS, STUDY_VERSION, EvalTask

__all__ = ["DAMPINGS", "STUDY_VERSION", "EvalTask"]

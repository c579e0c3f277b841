"""What the study's runner needs from a task (:class:`EvalTask`), and the pieces every task shares:
deterministic single-threaded training and the cache version."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ...data.bundled import single_thread

__all__ = ["DAMPINGS", "STUDY_VERSION", "EvalTask", "single_thread"]

#: Part of every retrained-model cache key: bump it when a task's data, model or training changes.
STUDY_VERSION = 1
#: Damping grid searched on the validation half of the test set.
DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


class EvalTask(Protocol):
    """An attribution task with its retraining ground truth.

    Attributes:
        name: task name (a row's ``task``).
        subsets: ``(M, n_train)`` membership of the retraining subsets.
        outputs: ``(M, n_test)`` ground-truth outputs of the subset models.
        p: parameter count of the attributed model.
        fixed_s: seconds every row pays before compression (e.g. per-sample gradients), or 0.
        compressors: the compressor names the task takes.
    """

    name: str
    subsets: np.ndarray
    outputs: np.ndarray

    @property
    def p(self) -> int: ...

    @property
    def fixed_s(self) -> float: ...

    @property
    def compressors(self) -> tuple[str, ...]: ...

    def compress(self, compressor: str, k: int, seed: int, *, repeats: int) -> tuple[Any, Any, float]:
        """``(train, test, seconds)``: compressed gradients of the full-data model (float64 tensors,
        or layer → tensor dicts) and the compression time (best of ``repeats`` warm runs when
        ``repeats > 0``)."""
        ...

    def row_k(self, compressor: str, k: int) -> int:
        """The ``k`` reported for this configuration (e.g. ``p`` for uncompressed gradients)."""
        ...

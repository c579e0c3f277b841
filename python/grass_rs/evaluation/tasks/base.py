"""What the study's runner needs from a task (:class:`EvalTask`), and the pieces every task shares:
deterministic single-threaded training and the cache version."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ...capture.compressors import CompressorFactory, make_compressor
from ...errors import InvalidArgumentError

__all__ = ["DAMPINGS", "STUDY_VERSION", "EvalTask", "HookedTask", "cache_spec"]

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


def cache_spec(task: str, *, n_train: int, seed: int, alpha: float, hp: Any, **extra: Any) -> dict[str, Any]:
    """The retrained-model cache key of a task: everything its subset models depend on."""
    return {
        "task": task,
        "version": STUDY_VERSION,
        "n_train": n_train,
        "model_seed": seed,
        "data_seed": seed,
        "subset_seed": seed,
        "alpha": alpha,
        "hp": hp,
        **extra,
    }


class HookedTask:
    """Base of the tasks whose per-layer gradients are captured with :func:`grass_rs.attach` hooks
    (an :class:`EvalTask` once ``name``, ``subsets``, ``outputs`` and ``model`` are set): a subclass
    names its compressors and implements :meth:`capture` of one split."""

    COMPRESSORS: ClassVar[tuple[str, ...]] = ()
    name: str
    model: torch.nn.Module

    @property
    def p(self) -> int:
        """Parameter count of the model."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def fixed_s(self) -> float:
        """Nothing is shared between rows (the capture is part of each row's compression time)."""
        return 0.0

    @property
    def compressors(self) -> tuple[str, ...]:
        """The compressor names this task compares."""
        return self.COMPRESSORS

    def row_k(self, compressor: str, k: int) -> int:
        """``k`` per layer."""
        return int(k)

    def capture(
        self, factory: CompressorFactory, split: str, limit: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Layer → compressed per-sample gradients of split ``"train"`` or ``"test"`` (the first
        ``limit`` examples)."""
        raise NotImplementedError

    def compress(self, compressor: str, k: int, seed: int, *, repeats: int) -> tuple[Any, Any, float]:
        """Per-layer compressed gradients (float64) of every training and test example and the
        capture time (forward, backward and compression with hooks, after a warm-up; one timed run
        when ``repeats``)."""
        if compressor not in self.COMPRESSORS:
            raise InvalidArgumentError(
                f"`compressor` must be one of {self.COMPRESSORS} for {self.name}, got {compressor!r}"
            )
        factory = make_compressor(compressor, k, seed=seed)
        self.capture(factory, "train", limit=32)  # warm-up (builds the compressors' caches)
        t0 = time.perf_counter()
        tr, te = self.capture(factory, "train"), self.capture(factory, "test")
        t = time.perf_counter() - t0
        as64 = lambda g: {n: v.double() for n, v in g.items()}  # noqa: E731
        return as64(tr), as64(te), t if repeats > 0 else 0.0

"""Pieces shared by the study's tasks (:mod:`grass_rs.study` and :mod:`grass_rs.study_lm`):
deterministic single-threaded training, scoring and LDS evaluation per projector seed, and the
combination of seeds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import lds as L
from .influence import influence_scores

#: Part of every retrained-model cache key: bump it when a task's data, model or training changes.
STUDY_VERSION = 1
DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Runs torch single-threaded inside (tiny models: threads only add contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, hp: dict[str, float]
) -> nn.Module:
    """Full-batch Adam with L2 penalty (mean loss + wd/2 ‖θ‖²), deterministic given ``build``."""
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    with _single_thread():
        for _ in range(int(hp["steps"])):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss = loss + 0.5 * hp["weight_decay"] * sum((p * p).sum() for p in model.parameters())
            loss.backward()
            opt.step()
    return model.eval()


def _scorer(train: Any, test: Any) -> Callable[[float, np.ndarray], torch.Tensor]:
    """``score(damping, test_idx)`` → influence scores of the selected test rows (tensor or layer dict)."""

    def score(damping: float, idx: np.ndarray) -> torch.Tensor:
        i = torch.as_tensor(idx)
        sub = {n: g[i] for n, g in test.items()} if isinstance(test, dict) else test[i]
        return influence_scores(train, sub, damping=damping)

    return score


def _evaluate(task: Any, tr64: Any, te64: Any, dampings: Any, seed: int) -> Any:
    """LDS of one projector seed (no bootstrap: seeds are combined afterwards)."""
    return L.evaluate(
        _scorer(tr64, te64), task.subsets, task.outputs, dampings=dampings, seed=seed, n_bootstrap=0
    )


def _combine(results: Sequence[L.LDSResult], n_bootstrap: int, seed: int) -> L.LDSResult:
    """Averages per-example correlations over projector seeds, then bootstraps over test examples."""
    stack = np.stack([r.per_example for r in results])
    count = (~np.isnan(stack)).sum(0)
    per = np.where(count > 0, np.nan_to_num(stack).sum(0) / np.maximum(count, 1), np.nan)
    valid = per[~np.isnan(per)]
    mean = float(valid.mean())
    lo = hi = mean
    if n_bootstrap > 0 and valid.size > 1:
        rng = np.random.default_rng(seed)
        means = valid[rng.integers(0, valid.size, size=(n_bootstrap, valid.size))].mean(1)
        lo, hi = (float(v) for v in np.quantile(means, [0.025, 0.975]))
    return L.LDSResult(mean, lo, hi, per, results[0].n_subsets, 0.95, results[0].damping)

"""The study's classification tasks on scikit-learn's bundled data (nothing is downloaded):

* ``digits`` — an MLP ``64 → 128 → 10`` (``p = 9 610``), 1 000 train / 797 test;
* ``breast_cancer`` — logistic regression ``30 → 2`` (``p = 62``), 400 / 169.

Per-sample gradients of the full-data model are computed once with ``torch.func`` and flattened;
each compressor is a projector (:func:`grass_rs.projector`) applied to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ...data.bundled import load_classification, train_classifier
from ...errors import InvalidArgumentError
from ...projection import Projector, projector
from .. import lds as L
from .base import cache_spec

__all__ = [
    "CLASSIFICATION_TASKS",
    "COMPRESSORS",
    "DEFAULT_KS",
    "TRAIN_HP",
    "Task",
    "build_task",
    "make_projector",
    "per_sample_grads",
    "retrain_classifiers",
]

CLASSIFICATION_TASKS = ("digits", "breast_cancer")
COMPRESSORS = ("mask", "sjlt", "grass", "gaussian", "srht")
DEFAULT_KS: dict[str, tuple[int, ...]] = {"digits": (32, 128, 512), "breast_cancer": (8, 16, 32)}
TRAIN_HP: dict[str, dict[str, float]] = {
    "digits": {"steps": 300, "lr": 1e-2, "weight_decay": 1e-3},
    "breast_cancer": {"steps": 300, "lr": 5e-2, "weight_decay": 1e-2},
}
_N_TRAIN = {"digits": 1000, "breast_cancer": 400}


def _builder(name: str, seed: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        if name == "digits":
            return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
        return nn.Sequential(nn.Linear(30, 2))

    return build


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Per-sample gradients of the cross-entropy loss, all parameters flattened: ``(n, p)`` float32."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(pr: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, pr, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))
    rows = []
    for s in range(0, x.shape[0], chunk):
        d = g(params, x[s : s + chunk], y[s : s + chunk])
        rows.append(torch.cat([d[k].reshape(d[k].shape[0], -1) for k in params], dim=1))
    return torch.cat(rows).float().contiguous()


def make_projector(kind: str, p: int, k: int, seed: int = 0) -> Projector | None:
    """The study's projector ``kind`` from ``p`` to ``k`` (``None`` for ``"none"``: raw gradients),
    built by :func:`grass_rs.projector` (GraSS keeps ``min(4k, p)`` coordinates; MASK is unscaled)."""
    if kind == "none":
        return None
    if kind not in COMPRESSORS:
        raise InvalidArgumentError(f"`compressor` must be one of {(*COMPRESSORS, 'none')}, got {kind!r}")
    return projector(kind, p, k, seed=seed)


def _timed_project(proj: Projector, x: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    """``proj.project(x)`` after one warm-up call; the best of ``repeats`` timings."""
    out = torch.as_tensor(proj.project(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = torch.as_tensor(proj.project(x))
        best = min(best, time.perf_counter() - t0)
    return out, best if repeats > 0 else 0.0


@dataclass
class Task:
    """A classification task with its retraining ground truth and full-model gradients
    (an :class:`~grass_rs.evaluation.tasks.base.EvalTask`).

    Attributes:
        name: task name.
        subsets: ``(M, n_train)`` membership of the retraining subsets.
        outputs: ``(M, n_test)`` ground-truth test margins.
        train_grads: ``(n_train, p)`` float32 per-sample loss gradients of the full model.
        test_grads: ``(n_test, p)`` float32 per-sample loss gradients of the full model.
        grad_s: seconds spent computing the per-sample gradients.
        retrain_s: seconds spent on the ground truth (training or loading cached models).
    """

    name: str
    subsets: np.ndarray
    outputs: np.ndarray
    train_grads: torch.Tensor
    test_grads: torch.Tensor
    grad_s: float
    retrain_s: float

    @property
    def p(self) -> int:
        """Gradient dimension."""
        return int(self.train_grads.shape[1])

    @property
    def fixed_s(self) -> float:
        """The per-sample gradient time every row pays."""
        return self.grad_s

    @property
    def compressors(self) -> tuple[str, ...]:
        """The projectors this task compares (plus ``"none"``)."""
        return (*COMPRESSORS, "none")

    def row_k(self, compressor: str, k: int) -> int:
        """``p`` for the uncompressed reference, else ``k``."""
        return self.p if compressor == "none" else int(k)

    def compress(self, compressor: str, k: int, seed: int, *, repeats: int) -> tuple[Any, Any, float]:
        """Projects all training and test gradients at once (float64 results)."""
        proj = make_projector(compressor, self.p, k, seed)
        if proj is None:
            return self.train_grads.double(), self.test_grads.double(), 0.0
        both, t = _timed_project(proj, torch.cat([self.train_grads, self.test_grads]), repeats)
        n = self.train_grads.shape[0]
        return both[:n].double(), both[n:].double(), t


def retrain_classifiers(
    name: str,
    build: Callable[[], nn.Module],
    hp: dict[str, float],
    data: tuple[torch.Tensor, ...],
    n_models: int,
    alpha: float,
    cache_dir: str | Path,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, float, nn.Module]:
    """The LDS ground truth of a classifier task: ``M`` random ``alpha``-subsets, the test margins
    of a model retrained on each (or loaded from the cache), the seconds that took, and the model
    trained on every training example.

    Args:
        name: task name (part of the cache key).
        build: a fresh model (the same initialization every call).
        hp: :func:`~grass_rs.data.bundled.train_classifier` hyper-parameters.
        data: ``(x_train, y_train, x_test, y_test)``.
    """
    x_tr, y_tr, x_te, y_te = data
    subsets = L.sample_subsets(x_tr.shape[0], n_models, alpha, seed=seed)
    spec = cache_spec(name, n_train=int(x_tr.shape[0]), seed=seed, alpha=alpha, hp=hp)
    t0 = time.perf_counter()
    outputs = L.ground_truth(
        lambda idx, m: train_classifier(build, x_tr[idx], y_tr[idx], hp),
        lambda model: L.margin(model(x_te), y_te),
        subsets,
        cache=L.ModelCache(cache_dir, spec),
        build_fn=build,
        progress=progress,
    )
    return subsets, outputs, time.perf_counter() - t0, train_classifier(build, x_tr, y_tr, hp)


def build_task(
    name: str,
    *,
    n_models: int = 50,
    alpha: float = 0.5,
    cache_dir: str | Path = "grass-rs-output/lds-cache",
    seed: int = 0,
    progress: bool = False,
) -> Task:
    """Loads the data, runs (or loads) the ``M`` retrainings and computes the full-model gradients."""
    if name not in CLASSIFICATION_TASKS:
        raise InvalidArgumentError(f"`task` must be one of {CLASSIFICATION_TASKS}, got {name!r}")
    x_tr, y_tr, x_te, y_te = load_classification(name, n_train=_N_TRAIN[name], seed=seed)
    build, hp = _builder(name, seed), TRAIN_HP[name]
    subsets, outputs, retrain_s, full = retrain_classifiers(
        name, build, hp, (x_tr, y_tr, x_te, y_te), n_models, alpha, cache_dir, seed, progress
    )
    t0 = time.perf_counter()
    g_tr, g_te = per_sample_grads(full, x_tr, y_tr), per_sample_grads(full, x_te, y_te)
    return Task(name, subsets, outputs, g_tr, g_te, time.perf_counter() - t0, retrain_s)

"""The study's convolutional task: a small CNN on scikit-learn's bundled 8×8 digits reshaped as
``(1, 8, 8)`` images (1 000 train / 797 test; nothing is downloaded)::

    Conv2d(1, 8, 3, padding=1) → ReLU → Conv2d(8, 16, 3, stride=2, padding=1) → ReLU
        → Flatten → Linear(256, 10)                                           (p = 3 818)

Every compressor runs per layer through :func:`grass_rs.attach` (conv layers in the factored
im2col form): FactGraSS and LoGra from the factors, GraSS and the dense Gaussian on each layer's
materialized per-sample gradient. Ground truth: the margins of the test digits under models
retrained on random halves of the training set (full-batch Adam, one fixed initialization).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...capture import attach
from ...data.bundled import load_classification
from .base import HookedTask
from .classification import retrain_classifiers

__all__ = ["CNN_COMPRESSORS", "CNN_HP", "CNN_KS", "CNNTask", "build_cnn", "build_cnn_task", "resnet9"]

CNN_COMPRESSORS = ("grass", "factgrass", "logra", "gaussian")
#: ``k`` per layer (perfect squares, as LoGra needs).
CNN_KS = (16, 64)
CNN_HP: dict[str, float] = {"steps": 300, "lr": 1e-2, "weight_decay": 1e-3}
_N_TRAIN = 1000


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = _conv_bn(c, c), _conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


def resnet9(width: int = 64, classes: int = 10) -> nn.Sequential:
    """ResNet-9, the GraSS paper's CIFAR model (``width=64`` is the original, 6.57 M parameters):
    conv-BN-ReLU blocks with max-pooling, two residual blocks, a max-pool and a Linear head. Used by
    ``benches/python/bench_cnn.py`` and the whole-model coverage tests (in ``eval()`` mode there:
    BatchNorm couples the samples of a batch in train mode)."""
    w = width
    return nn.Sequential(
        _conv_bn(3, w), _conv_bn(w, 2 * w, pool=True), _Residual(2 * w),
        _conv_bn(2 * w, 4 * w, pool=True), _conv_bn(4 * w, 8 * w, pool=True), _Residual(8 * w),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, classes),
    )  # fmt: skip


def build_cnn(seed: int = 0) -> nn.Module:
    """The task's CNN with its fixed initialization (``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


@dataclass
class CNNTask(HookedTask):
    """The CNN task (an :class:`~grass_rs.evaluation.tasks.base.EvalTask`): ground truth plus the
    full-data model and its data; gradients are captured per compressor through hooks.

    Attributes:
        name: ``"cnn"``.
        subsets: ``(M, n_train)`` membership of the retraining subsets.
        outputs: ``(M, n_test)`` ground-truth test margins.
        model: the model trained on all training digits.
        x_train, y_train, x_test, y_test: ``(n, 64)`` float32 pixels in ``[0, 1]``, int64 labels.
        retrain_s: seconds spent on the ground truth.
    """

    name: str
    subsets: np.ndarray
    outputs: np.ndarray
    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    retrain_s: float
    COMPRESSORS = CNN_COMPRESSORS

    def capture(self, factory: Any, split: str, limit: int | None = None) -> dict[str, torch.Tensor]:
        """Compressed per-sample gradients of the summed cross-entropy (batches of 256; every
        trainable parameter is captured: ``strict=True``)."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        x, y = x[:limit], y[:limit]
        parts: list[dict[str, torch.Tensor]] = []
        with attach(self.model, factory, loss_reduction="sum", strict=True) as h:
            for s in range(0, x.shape[0], 256):
                out = self.model(x[s : s + 256])
                loss = nn.functional.cross_entropy(out, y[s : s + 256], reduction="sum")
                torch.autograd.grad(loss, list(self.model.parameters()))
                g = h.gradients()
                assert isinstance(g, dict)
                parts.append(g)
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def build_cnn_task(
    *,
    n_models: int = 50,
    alpha: float = 0.5,
    cache_dir: str | Path = "grass-rs-output/lds-cache",
    seed: int = 0,
    progress: bool = False,
) -> CNNTask:
    """Trains (or loads) the ``M`` subset CNNs; ground truth = margins of the test digits."""
    x_tr, y_tr, x_te, y_te = load_classification("digits", n_train=_N_TRAIN, seed=seed)
    build = lambda: build_cnn(seed)  # noqa: E731
    subsets, outputs, retrain_s, full = retrain_classifiers(
        "cnn", build, CNN_HP, (x_tr, y_tr, x_te, y_te), n_models, alpha, cache_dir, seed, progress
    )
    return CNNTask("cnn", subsets, outputs, full, x_tr, y_tr, x_te, y_te, retrain_s)

"""The bundled default task: a small MLP trained in-process on scikit-learn's digits (8×8 images).

Needs ``scikit-learn`` (the ``cli``/``test`` extras); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsTask", "digits_mlp", "digits_task", "load_digits_split"]


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits, scaled to ``[0, 1]``, split at random into train and test.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: ``(n, 64)`` float32 and ``(n,)`` int64 tensors
        (1437 / 360 examples for the default fraction).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("the digits task needs scikit-learn: pip install 'grass-rs[cli]'") from e
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    te, tr = order[:n_test], order[n_test:]
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    return xt[tr], yt[tr], xt[te], yt[te]


def digits_mlp(hidden: int = 64, seed: int = 0) -> torch.nn.Sequential:
    """``Linear(64, hidden) → ReLU → Linear(hidden, hidden) → ReLU → Linear(hidden, 10)``."""
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(64, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 10),
        )


def train(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 300, lr: float = 1e-2
) -> float:
    """Full-batch Adam with weight decay; returns the final training loss. Deterministic on CPU."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


@dataclass
class DigitsTask:
    """A trained digits MLP and its data."""

    model: torch.nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_loss: float
    test_accuracy: float

    def loaders(self, batch_size: int = 128, n_test: int | None = None) -> tuple[DataLoader, DataLoader]:
        """Fixed-order ``(train, test)`` loaders of ``(x, y)`` (the first ``n_test`` test examples)."""
        n = len(self.y_test) if n_test is None else n_test
        train = DataLoader(TensorDataset(self.x_train, self.y_train), batch_size=batch_size, shuffle=False)
        test = DataLoader(
            TensorDataset(self.x_test[:n], self.y_test[:n]), batch_size=batch_size, shuffle=False
        )
        return train, test


def digits_task(hidden: int = 64, steps: int = 300, seed: int = 0, n_train: int | None = None) -> DigitsTask:
    """Loads digits and trains :func:`digits_mlp` on it (about a second on one CPU core).

    Args:
        hidden: hidden width.
        steps: full-batch Adam steps.
        seed: split and initialization seed.
        n_train: keep only the first ``n_train`` training examples (tests).
    """
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=seed)
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    model = digits_mlp(hidden, seed)
    loss = train(model, x_tr, y_tr, steps=steps)
    with torch.no_grad():
        acc = float((model(x_te).argmax(1) == y_te).float().mean())
    return DigitsTask(model, x_tr, y_tr, x_te, y_te, loss, acc)

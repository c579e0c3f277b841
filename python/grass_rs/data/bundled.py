"""Data that ships with Python and scikit-learn (nothing is downloaded), and the small models
trained on it in-process:

* :func:`load_classification` — scikit-learn's ``load_digits`` (8×8 images) or
  ``load_breast_cancer``, shuffled and split;
* :func:`load_digits_split`, :func:`digits_task` — the bundled default task of ``grass-rs attribute``:
  a small MLP trained on digits;
* :func:`train_classifier` — deterministic full-batch Adam with an L2 penalty (also the study's);
* :func:`stdlib_sequences` — byte windows of the standard library's own source text.

The scikit-learn loaders need the ``cli``/``test`` extras.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..errors import InvalidArgumentError

__all__ = [
    "DigitsTask",
    "digits_mlp",
    "digits_task",
    "load_classification",
    "load_digits_split",
    "single_thread",
    "stdlib_sequences",
    "train_classifier",
]


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"the {name} data needs scikit-learn: pip install 'grass-rs[cli]'") from e
    if name == "digits":
        x, y = datasets.load_digits(return_X_y=True)
        return x / 16.0, y
    if name == "breast_cancer":
        return datasets.load_breast_cancer(return_X_y=True)
    raise InvalidArgumentError(f"`name` must be 'digits' or 'breast_cancer', got {name!r}")


def load_classification(name: str, *, n_train: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A bundled scikit-learn dataset, shuffled with ``seed``; the first ``n_train`` examples train.

    Digits are scaled to ``[0, 1]``; breast-cancer features are standardized with the training
    statistics.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 features, int64 labels.
    """
    x, y = _sklearn(name)
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm], y[perm]
    if name == "breast_cancer":
        mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-8
        x = (x - mu) / sd
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Runs torch single-threaded inside (tiny models: threads only add contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_classifier(
    build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, hp: dict[str, float]
) -> nn.Module:
    """Full-batch Adam on mean cross-entropy + ``weight_decay/2 · ‖θ‖²`` for ``steps`` steps at ``lr``,
    single-threaded, so the result depends only on ``build`` and the data. Returns the model in eval mode."""
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    with single_thread():
        for _ in range(int(hp["steps"])):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss = loss + 0.5 * hp["weight_decay"] * sum((p * p).sum() for p in model.parameters())
            loss.backward()
            opt.step()
    return model.eval()


def stdlib_sequences(n: int, seq_len: int, seed: int = 0, n_files: int = 8) -> torch.Tensor:
    """``n`` byte sequences of length ``seq_len`` from the standard library's own ``.py`` files.

    Non-overlapping windows of the first ``n_files`` modules (sorted by name) of the directory of
    ``os.py``, shuffled with ``seed``. The text depends on the Python version.
    """
    files = sorted(Path(os.__file__).parent.glob("*.py"))[:n_files]
    windows: list[bytes] = []
    for f in files:
        data = f.read_bytes()
        windows += [data[i : i + seq_len] for i in range(0, len(data) - seq_len + 1, seq_len)]
    if len(windows) < n:
        raise InvalidArgumentError(
            f"only {len(windows)} windows of {seq_len} bytes in {len(files)} files, need `n` = {n}"
        )
    order = np.random.default_rng(seed).permutation(len(windows))[:n]
    return torch.tensor([list(windows[i]) for i in order], dtype=torch.int64)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits, scaled to ``[0, 1]``, split at random into train and test (the test set drawn first).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: ``(n, 64)`` float32 and ``(n,)`` int64 tensors
        (1437 / 360 examples for the default fraction).
    """
    x, y = _sklearn("digits")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    te, tr = order[:n_test], order[n_test:]
    xt = torch.tensor(x, dtype=torch.float32)
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
    hp = {"steps": steps, "lr": 1e-2, "weight_decay": 1e-4}
    model = train_classifier(lambda: digits_mlp(hidden, seed), x_tr, y_tr, hp)
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(x_tr), y_tr))
        acc = float((model(x_te).argmax(1) == y_te).float().mean())
    return DigitsTask(model, x_tr, y_tr, x_te, y_te, loss, acc)

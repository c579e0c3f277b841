"""TRAK (Park et al. 2023, MadryLab/trak) on compressed features, ensembled over checkpoints/models.

For each model ``m`` with projected training features ``Φ_m`` (``(n_train, k)``, gradients of the
model *output function*, for classification the margin ``log p/(1-p)`` of the correct class) and
test features ``φ_m``, TRAK computes

    τ = ( 1/M Σ_m  φ_m (Φ_mᵀ Φ_m + λI)⁻¹ Φ_mᵀ ) · diag( 1/M Σ_m Q_m ),

with the out-to-loss reweighting ``Q_m = diag(1 − p_m(correct class of the training example))``.
As in MadryLab/trak, the kernel is ``ΦᵀΦ`` (not divided by ``n``) and ``λ`` is an absolute ridge.
Features given as dicts (layer → ``(n, k_l)``) are treated block-diagonally and summed over layers,
like :func:`grass_rs.influence_scores`. Positive scores mean the training example helps the test
prediction (same sign convention as the influence scores).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .._validate import damping as check_damping
from ..errors import InvalidArgumentError
from .influence import Grads, _check_match, as_layers

__all__ = ["TRAK", "classification_margin", "margin", "out_to_loss", "trak_scores"]


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-odds of the correct class per example, ``log p_y − log(1 − p_y) = z_y − logsumexp_{c≠y} z_c``
    (TRAK's model output function for classification; the LDS ground truth of the bundled tasks).

    Args:
        logits: ``(n, C)`` (``C ≥ 2``).
        labels: ``(n,)`` int64.

    Returns:
        ``(n,)`` margins. Safe under ``torch.func.vmap`` (no in-place scatter).
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InvalidArgumentError(f"`logits` must have shape (n, C ≥ 2), got {tuple(logits.shape)}")
    correct = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    is_label = torch.arange(logits.shape[1], device=logits.device)[None, :] == labels.view(-1, 1)
    return correct - torch.logsumexp(logits.masked_fill(is_label, float("-inf")), dim=1)


def classification_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`margin` summed over the batch (a scalar whose per-sample gradients are TRAK's features).

    Args:
        logits: ``(batch, classes)``.
        labels: ``(batch,)`` int64.
    """
    return margin(logits, labels).sum()


def out_to_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TRAK's ``Q`` diagonal for classification: ``1 − softmax(logits)[y]``, ``(batch,)``."""
    p = torch.softmax(logits.detach().double(), dim=1).gather(1, labels[:, None]).squeeze(1)
    return (1 - p).float()


def _one_model(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], damping: float) -> torch.Tensor:
    out = torch.zeros(
        next(iter(test.values())).shape[0], next(iter(train.values())).shape[0], dtype=torch.float64
    )
    for name, x in train.items():
        x64, t64 = x.double(), test[name].double()
        kernel = x64.T @ x64 + damping * torch.eye(x64.shape[1], dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(kernel)
        if int(info) != 0:
            advice = "use damping > 0 or fewer dimensions" if damping == 0 else "use a larger damping"
            raise InvalidArgumentError(f"layer {name!r}: ΦᵀΦ + λI is singular at λ = {damping:.3g}; {advice}")
        out += torch.cholesky_solve(t64.T, factor).T @ x64.T
    return out


def trak_scores(
    train_features: Sequence[Grads],
    test_features: Sequence[Grads],
    train_out_to_loss: Sequence[torch.Tensor],
    *,
    damping: float = 0.0,
) -> torch.Tensor:
    """TRAK scores ensembled over ``M`` models (module docstring for the formula).

    Args:
        train_features: ``M`` items, each ``(n_train, k)`` or dict layer → ``(n_train, k_l)``.
        test_features: ``M`` items, each ``(n_test, k)`` / dict, same layers as the training ones.
        train_out_to_loss: ``M`` tensors ``(n_train,)``, e.g. :func:`out_to_loss`.
        damping: absolute ridge ``λ`` added to ``ΦᵀΦ`` (≥ 0).

    Returns:
        ``(n_test, n_train)`` float32.

    Raises:
        ValueError: no models, inconsistent counts or shapes, singular kernel.
    """
    if not train_features or not (len(train_features) == len(test_features) == len(train_out_to_loss)):
        raise InvalidArgumentError(
            "need the same number (≥ 1) of train features, test features and out-to-loss vectors"
        )
    damping = check_damping(damping)
    total: torch.Tensor | None = None
    q_sum: torch.Tensor | None = None
    for tr_raw, te_raw, q in zip(train_features, test_features, train_out_to_loss, strict=True):
        tr, te = as_layers(tr_raw, "train_features"), as_layers(te_raw, "test_features")
        te = _check_match(tr, te)
        q = torch.as_tensor(q).double().reshape(-1)
        if q.shape[0] != next(iter(tr.values())).shape[0]:
            raise InvalidArgumentError(
                f"out-to-loss has {q.shape[0]} entries for {next(iter(tr.values())).shape[0]} examples"
            )
        if not bool(torch.isfinite(q).all()):
            bad = int((~torch.isfinite(q)).nonzero()[0, 0])
            raise InvalidArgumentError(
                f"`train_out_to_loss` contains NaN or infinite weights (first at example {bad}); "
                "each weight must be finite (1 − p(correct class) ∈ [0, 1] for classification)"
            )
        part = _one_model(tr, te, damping)
        total = part if total is None else total + part
        q_sum = q if q_sum is None else q_sum + q
    assert total is not None and q_sum is not None
    m = len(train_features)
    return ((total / m) * (q_sum / m)[None, :]).float()


class TRAK:
    """TRAK over an ensemble of trained models / checkpoints of a classifier.

    Features are compressed per-sample gradients of :func:`classification_margin` (any compressor
    the :class:`~grass_rs.attributor.Attributor` accepts); kept in memory.

    Args:
        models: ``M`` models (e.g. checkpoints, or models trained on different subsets/seeds).
        damping: absolute ridge on ``ΦᵀΦ``.
        **kwargs: compressor options for :class:`~grass_rs.attributor.Attributor`
            (``compressor``, ``k``, ``layers``, ``seed``, ``progress``).
    """

    def __init__(self, models: Sequence[torch.nn.Module], *, damping: float = 0.0, **kwargs: object) -> None:
        from .attributor import Attributor

        if not models:
            raise InvalidArgumentError("TRAK needs at least one model")
        damping = check_damping(damping)
        self.attributors = [Attributor(m, loss_fn=classification_margin, **kwargs) for m in models]  # type: ignore[arg-type]
        self.damping = damping
        self.train_features: list[dict[str, torch.Tensor]] = []
        self.out_to_loss: list[torch.Tensor] = []

    def fit(self, train_loader: Iterable[Any]) -> TRAK:
        """Computes every model's training features and out-to-loss weights."""
        self.train_features = [a.gradients(train_loader, "TRAK train features") for a in self.attributors]
        self.out_to_loss = [_out_to_loss(a.model, train_loader) for a in self.attributors]
        return self

    def score(self, test_loader: Iterable[Any]) -> torch.Tensor:
        """``(n_test, n_train)`` TRAK scores (module docstring)."""
        if not self.train_features:
            raise RuntimeError("call fit() before score()")
        test = [a.gradients(test_loader, "TRAK test features") for a in self.attributors]
        return trak_scores(self.train_features, test, self.out_to_loss, damping=self.damping)


def _out_to_loss(model: torch.nn.Module, loader: Iterable[Any]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([out_to_loss(model(x), y).cpu() for x, y in loader])

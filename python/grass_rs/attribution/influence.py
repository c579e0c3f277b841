"""Influence scores in compressed gradient space.

Sign convention (used everywhere in grass-rs): the classical influence of upweighting training
example ``z`` on the loss of test example ``z'`` is ``−∇L(z')ᵀ H⁻¹ ∇L(z)``. grass-rs reports its
negation, the **helpfulness**

    score(z', z) = Σ_layers ĝ_testᵀ (F + λI)⁻¹ ĝ_train,

so a *positive* score means training on ``z`` lowers the loss on ``z'`` (a helpful, "proponent"
example) and a *negative* score means it raises it (harmful, "opponent"). ``F`` is the per-layer
(block-diagonal) empirical Fisher of the compressed training gradients, see :mod:`grass_rs.fim`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Union

import numpy as np
import torch

from ..errors import ArgumentTypeError, InvalidArgumentError
from .fim import BlockFisher

__all__ = ["as_layers", "influence_scores", "score_chunks", "top_k"]

Grads = Union[torch.Tensor, np.ndarray, Mapping[str, Union[torch.Tensor, np.ndarray]]]  # noqa: UP007 (runtime alias, py3.10)


def as_layers(grads: Grads, name: str) -> dict[str, torch.Tensor]:
    """Normalizes one ``(n, k)`` array or a dict layer → ``(n, k_layer)`` to a dict of tensors.

    Raises:
        TypeError: not an array / dict of arrays.
        ValueError: empty dict, not 2-D, different ``n`` across layers, or non-finite values.
    """
    if isinstance(grads, (torch.Tensor, np.ndarray)):
        layers: dict[str, torch.Tensor] = {"": torch.as_tensor(grads)}
    elif isinstance(grads, Mapping):
        layers = {str(k): torch.as_tensor(v) for k, v in grads.items()}
    else:
        raise ArgumentTypeError(
            f"`{name}` must be a tensor/array (n, k) or a dict layer -> (n, k), got {type(grads).__name__}"
        )
    if not layers:
        raise InvalidArgumentError(f"`{name}` has no layers")
    n = None
    for layer, g in layers.items():
        if g.ndim != 2:
            raise InvalidArgumentError(f"`{name}`[{layer!r}] must have shape (n, k), got {tuple(g.shape)}")
        if not g.is_floating_point():
            raise ArgumentTypeError(f"`{name}`[{layer!r}] must be a float array, got {g.dtype}")
        if n is not None and g.shape[0] != n:
            raise InvalidArgumentError(
                f"`{name}` layers have different numbers of rows ({n} vs {g.shape[0]})"
            )
        n = g.shape[0]
        if not bool(torch.isfinite(g).all()):
            raise InvalidArgumentError(f"`{name}`[{layer!r}] contains NaN or infinite values")
    return layers


def _check_match(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor]) -> None:
    if list(train) != list(test):
        raise InvalidArgumentError(f"train and test have different layers: {list(train)} vs {list(test)}")
    for layer in train:
        if train[layer].shape[1] != test[layer].shape[1]:
            raise InvalidArgumentError(
                f"layer {layer!r}: train has k={train[layer].shape[1]}, test has k={test[layer].shape[1]}"
            )


def influence_scores(
    train: Grads, test: Grads, *, damping: float = 1e-3, relative: bool = True
) -> torch.Tensor:
    """Helpfulness scores ``Σ_layers ĝ_testᵀ (F + λI)⁻¹ ĝ_train`` (module docstring for the sign).

    ``F = ĝ_trainᵀ ĝ_train / n_train`` per layer block (float64), ``λ = damping · trace(F)/k`` when
    ``relative`` else ``λ = damping``.

    Args:
        train: ``(n_train, k)`` compressed training gradients, or a dict layer → ``(n_train, k_l)``.
        test: the same for the test gradients, ``(n_test, k)`` / dict with the same layers.
        damping: damping factor (relative) or value (absolute), ≥ 0.
        relative: whether ``damping`` is relative to the mean eigenvalue of each block.

    Returns:
        ``(n_test, n_train)`` float32 tensor.

    Raises:
        ValueError: empty training set, mismatched layers/dims, NaN/inf gradients, singular system.
    """
    tr, te = as_layers(train, "train"), as_layers(test, "test")
    _check_match(tr, te)
    if next(iter(tr.values())).shape[0] == 0:
        raise InvalidArgumentError("`train` is empty: at least one training gradient is needed to build F")
    fisher = BlockFisher({name: g.shape[1] for name, g in tr.items()}, solver="cholesky")
    fisher.update(tr)
    return score_chunks(fisher, te, [tr], damping=damping, relative=relative)


def score_chunks(
    fisher: BlockFisher,
    test: Grads,
    train_chunks: Iterable[Mapping[str, torch.Tensor]],
    *,
    damping: float = 1e-3,
    relative: bool = True,
    test_chunk: int = 4096,
) -> torch.Tensor:
    """Scores test gradients against training gradients that arrive in chunks (bounded memory).

    The iHVP is applied to the test side once per test chunk (``(F + λI)⁻¹ ĝ_test``), then every
    training chunk contributes ``ĝ_test_preconditionedᵀ ĝ_train`` summed over layers.

    Args:
        fisher: the fitted block Fisher.
        test: ``(n_test, k)`` or dict layer → ``(n_test, k_l)``.
        train_chunks: dicts layer → ``(n_chunk, k_l)``; a re-iterable (list, store) is read once per
            test chunk so only one training chunk is in memory; a one-shot iterator is materialized.
        damping: see :func:`influence_scores`.
        relative: see :func:`influence_scores`.
        test_chunk: test rows preconditioned at a time.

    Returns:
        ``(n_test, n_train)`` float32 tensor.
    """
    te = as_layers(test, "test")
    if list(te) == [""] and list(fisher.blocks) != [""]:
        raise InvalidArgumentError("`test` is a single tensor but the Fisher has several layers")
    chunks = list(train_chunks) if iter(train_chunks) is train_chunks else train_chunks  # one-shot iterators
    n_test = next(iter(te.values())).shape[0]
    rows = []
    for start in range(0, max(n_test, 1), test_chunk):
        sub = {name: g[start : start + test_chunk] for name, g in te.items()}
        pre = fisher.solve(sub, damping, relative)
        cols = [_chunk_scores(pre, chunk, fisher.blocks[next(iter(pre))].dtype) for chunk in chunks]
        rows.append(torch.cat(cols, dim=1) if cols else torch.zeros(sub[next(iter(sub))].shape[0], 0))
    return torch.cat(rows, dim=0).to(torch.float32)


def _chunk_scores(
    pre: Mapping[str, torch.Tensor], chunk: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    out: torch.Tensor | None = None
    for name, p in pre.items():
        g = torch.as_tensor(chunk[name]).to("cpu", dtype)
        part = p @ g.T
        out = part if out is None else out + part
    assert out is not None
    return out


def top_k(scores: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` most helpful and most harmful training examples per test example.

    Args:
        scores: ``(n_test, n_train)`` helpfulness scores.
        k: how many of each (clipped to ``n_train``).

    Returns:
        ``(helpful, harmful)``, two ``(n_test, k)`` int64 tensors: ``helpful[i]`` by decreasing
        score, ``harmful[i]`` by increasing score.
    """
    k = min(int(k), scores.shape[1])
    helpful = torch.topk(scores, k, dim=1, largest=True).indices
    harmful = torch.topk(scores, k, dim=1, largest=False).indices
    return helpful, harmful

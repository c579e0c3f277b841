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

from .._validate import damping as check_damping
from .._validate import positive_int
from ..errors import ArgumentTypeError, InvalidArgumentError
from .fim import BlockFisher

__all__ = ["as_layers", "influence_scores", "score_chunks", "top_k"]

Grads = Union[torch.Tensor, np.ndarray, Mapping[str, Union[torch.Tensor, np.ndarray]]]  # noqa: UP007 (runtime alias, py3.10)


def as_layers(grads: Grads, name: str) -> dict[str, torch.Tensor]:
    """Normalizes one ``(n, k)`` array or a dict layer → ``(n, k_layer)`` to a dict of tensors.

    Layer keys are names (``str``); other keys (ints) are converted with ``str``, and two keys with
    the same name (``0`` and ``"0"``) are refused rather than one silently dropped.

    Raises:
        TypeError: not an array / dict of arrays.
        ValueError: empty dict, colliding layer names, not 2-D, no columns, different ``n`` across
            layers, or non-finite values.
    """
    if isinstance(grads, (torch.Tensor, np.ndarray)):
        layers: dict[str, torch.Tensor] = {"": _tensor(grads, name)}
    elif isinstance(grads, Mapping):
        layers = {}
        originals: dict[str, object] = {}
        for k, v in grads.items():
            key = str(k)
            if key in layers:
                raise InvalidArgumentError(
                    f"`{name}` has layer keys {originals[key]!r} and {k!r}, which both name layer {key!r}; "
                    "use distinct (string) layer names"
                )
            layers[key], originals[key] = _tensor(v, f"{name}[{k!r}]"), k
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
        if g.shape[1] == 0:
            raise InvalidArgumentError(
                f"`{name}`[{layer!r}] has k = 0 columns; every layer needs at least one dimension"
            )
        if n is not None and g.shape[0] != n:
            raise InvalidArgumentError(
                f"`{name}` layers have different numbers of rows ({n} vs {g.shape[0]})"
            )
        n = g.shape[0]
        if not bool(torch.isfinite(g).all()):
            raise InvalidArgumentError(f"`{name}`[{layer!r}] contains NaN or infinite values")
    return layers


def _tensor(value: object, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ArgumentTypeError(f"`{name}` must be a tensor or array of shape (n, k): {e}") from None


def _check_match(
    train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``test`` in ``train``'s layer order (layers are matched by name, not position)."""
    if set(train) != set(test):
        raise InvalidArgumentError(f"train and test have different layers: {list(train)} vs {list(test)}")
    for layer in train:
        if train[layer].shape[1] != test[layer].shape[1]:
            raise InvalidArgumentError(
                f"layer {layer!r}: train has k={train[layer].shape[1]}, test has k={test[layer].shape[1]}"
            )
    return {layer: test[layer] for layer in train}


def influence_scores(
    train: Grads, test: Grads, *, damping: float = 1e-3, relative: bool = True
) -> torch.Tensor:
    """Helpfulness scores ``Σ_layers ĝ_testᵀ (F + λI)⁻¹ ĝ_train`` (module docstring for the sign).

    ``F = ĝ_trainᵀ ĝ_train / n_train`` per layer block (float64), ``λ = damping · trace(F)/k`` when
    ``relative`` else ``λ = damping``.

    Args:
        train: ``(n_train, k)`` compressed training gradients, or a dict layer → ``(n_train, k_l)``.
        test: the same for the test gradients, ``(n_test, k)`` / dict with the same layers (matched
            by name, in any order).
        damping: damping factor (relative) or value (absolute), a finite float ≥ 0.
        relative: whether ``damping`` is relative to the mean eigenvalue of each block.

    Returns:
        ``(n_test, n_train)`` float32 tensor.

    Raises:
        TypeError: ``damping`` is not a real number, gradients are not arrays.
        ValueError: empty training set, mismatched layers/dims, NaN/inf gradients or damping, negative
            damping, singular system.
    """
    damping = check_damping(damping)
    tr, te = as_layers(train, "train"), as_layers(test, "test")
    te = _check_match(tr, te)
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

    Raises:
        TypeError/ValueError: invalid ``damping`` or ``test_chunk``, mismatched layers.
    """
    damping = check_damping(damping)
    test_chunk = positive_int(test_chunk, "test_chunk")
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
        scores: ``(n_test, n_train)`` helpfulness scores (a tensor or numpy array).
        k: how many of each, ≥ 1 (clipped to ``n_train``).

    Returns:
        ``(helpful, harmful)``, two ``(n_test, k)`` int64 tensors: ``helpful[i]`` by decreasing
        score, ``harmful[i]`` by increasing score.

    Raises:
        TypeError: ``scores`` is not an array or ``k`` not an int.
        ValueError: ``scores`` is not 2-D, or ``k < 1``.
    """
    k = positive_int(k, "k")
    scores = _tensor(scores, "scores")
    if scores.ndim != 2:
        raise InvalidArgumentError(
            f"`scores` must have shape (n_test, n_train), got {tuple(scores.shape)} "
            "(for one test example use scores[None, :])"
        )
    k = min(k, scores.shape[1])
    helpful = torch.topk(scores, k, dim=1, largest=True).indices
    harmful = torch.topk(scores, k, dim=1, largest=False).indices
    return helpful, harmful

"""Linear datamodeling score (LDS): how well attribution scores predict retraining outcomes.

Protocol (Park et al., TRAK; GraSS arXiv 2505.18976 §5):

1. draw ``M`` random subsets ``S_1 … S_M`` of the training set, each of ``⌊α·n_train⌉`` examples
   (:func:`sample_subsets`, deterministic in ``seed``);
2. retrain the model on every subset and record each test example's ground-truth output
   ``f_j(S_m)`` (:func:`ground_truth`; classification: the margin / log-odds of the correct class
   :func:`margin`; language models: ``log p − log(1 − p)`` of the test sequence,
   :func:`sequence_log_odds`). Retrained models are cached on disk (:class:`ModelCache`) so they
   are reused across compressors and a killed run resumes where it stopped;
3. predict ``f_j(S_m) ≈ Σ_{i ∈ S_m} τ(z_j, z_i)`` from a score matrix ``τ`` (``(n_test, n_train)``,
   positive = helpful, as :func:`grass_rs.influence_scores` returns);
4. LDS = Spearman correlation between predicted and true outputs across the ``M`` subsets, per
   test example, averaged over test examples (:func:`lds`), with a percentile bootstrap confidence
   interval over test examples.

Damping is a hyper-parameter of the scores: :func:`select_damping` picks it on a held-out
validation split of the test examples (:func:`split_test`) and the LDS is reported on the other
split only (:func:`evaluate`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write
from ..attribution.trak import margin
from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "LDSResult",
    "ModelCache",
    "evaluate",
    "ground_truth",
    "lds",
    "margin",
    "sample_subsets",
    "select_damping",
    "sequence_log_odds",
    "split_test",
]

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class LDSResult:
    """An LDS estimate.

    Attributes:
        mean: mean Spearman correlation over the test examples with a defined correlation.
        ci_low: lower end of the bootstrap confidence interval.
        ci_high: upper end of the bootstrap confidence interval.
        per_example: ``(n_test,)`` per-example correlations (NaN where undefined: constant
            prediction or constant ground truth across subsets).
        n_subsets: ``M``.
        confidence: the confidence level of the interval.
        damping: the damping used for the scores, when chosen by :func:`evaluate`.
        extra: free-form metadata (e.g. the validation LDS of each damping tried).
    """

    mean: float
    ci_low: float
    ci_high: float
    per_example: np.ndarray = field(repr=False)
    n_subsets: int
    confidence: float = 0.95
    damping: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``per_example`` as a list, NaN as ``None``)."""
        d = asdict(self)
        d["per_example"] = [None if math.isnan(v) else float(v) for v in self.per_example]
        return d

    def __str__(self) -> str:
        half = (self.ci_high - self.ci_low) / 2
        ci = f"[{self.ci_low:.3f}, {self.ci_high:.3f}]"
        return f"LDS {self.mean:.3f} ± {half:.3f} ({self.confidence:.0%} CI {ci})"


def _np(a: ArrayLike, name: str, ndim: int) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise ArgumentTypeError(f"`{name}` must be a numpy array or torch tensor, got {type(a).__name__}")
    if a.ndim != ndim:
        raise InvalidArgumentError(f"`{name}` must be {ndim}-D, got shape {a.shape}")
    return a


def sample_subsets(n_train: int, n_subsets: int = 50, alpha: float = 0.5, *, seed: int = 0) -> np.ndarray:
    """Draws ``n_subsets`` random training subsets of size ``round(alpha · n_train)``.

    Subset ``m`` depends only on ``(seed, m, n_train, alpha)`` (``numpy.random.default_rng([seed, m])``),
    so growing ``n_subsets`` keeps the earlier subsets (and their cached models).

    Args:
        n_train: training-set size (≥ 2).
        n_subsets: ``M`` (≥ 2).
        alpha: subset fraction in ``(0, 1)``.
        seed: non-negative integer seed.

    Returns:
        ``(n_subsets, n_train)`` boolean membership matrix.

    Raises:
        ValueError: an argument is out of range (the message names it).
    """
    if int(n_train) != n_train or n_train < 2:
        raise InvalidArgumentError(f"`n_train` must be an integer ≥ 2, got {n_train}")
    if int(n_subsets) != n_subsets or n_subsets < 2:
        raise InvalidArgumentError(f"`n_subsets` must be an integer ≥ 2, got {n_subsets}")
    if not 0.0 < float(alpha) < 1.0:
        raise InvalidArgumentError(f"`alpha` must be in (0, 1), got {alpha}")
    if int(seed) != seed or seed < 0:
        raise InvalidArgumentError(f"`seed` must be a non-negative integer, got {seed}")
    size = min(max(round(alpha * n_train), 1), n_train - 1)
    out = np.zeros((int(n_subsets), int(n_train)), dtype=bool)
    for m in range(int(n_subsets)):
        rng = np.random.default_rng([int(seed), m])
        out[m, rng.choice(int(n_train), size=size, replace=False)] = True
    return out


def sequence_log_odds(log_prob: torch.Tensor) -> torch.Tensor:
    """``log p − log(1 − p)`` of a sequence from its total log-probability ``log p`` (``≤ 0``).

    Computed stably as ``log p − log(−expm1(log p))``.

    Args:
        log_prob: ``(n,)`` summed token log-probabilities of each sequence.

    Returns:
        ``(n,)`` log-odds.
    """
    lp = log_prob.clamp(max=-1e-12)
    return lp - torch.log(-torch.expm1(lp))


def _spearman_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``pred`` with the same column of ``true``."""
    from scipy.stats import rankdata

    rp, rt = rankdata(pred, axis=0), rankdata(true, axis=0)
    rp -= rp.mean(0)
    rt -= rt.mean(0)
    num = (rp * rt).sum(0)
    den = np.sqrt((rp * rp).sum(0) * (rt * rt).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def lds(
    scores: ArrayLike,
    subsets: ArrayLike,
    outputs: ArrayLike,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LDSResult:
    """Linear datamodeling score of a score matrix.

    Args:
        scores: ``(n_test, n_train)`` attribution scores, positive = increases the output.
        subsets: ``(M, n_train)`` boolean (or 0/1) membership matrix of the retraining subsets.
        outputs: ``(M, n_test)`` ground-truth output of each test example under the model
            retrained on each subset.
        n_bootstrap: bootstrap resamples of the test examples for the interval (0: no interval,
            ``ci_low = ci_high = mean``).
        confidence: interval level in ``(0, 1)``.
        seed: bootstrap seed.

    Returns:
        The :class:`LDSResult`.

    Raises:
        ValueError: inconsistent shapes, non-finite values, or no test example with a defined
            correlation (the message names the argument).
    """
    s = _np(scores, "scores", 2).astype(np.float64)
    sub = _np(subsets, "subsets", 2).astype(np.float64)
    out = _np(outputs, "outputs", 2).astype(np.float64)
    if sub.shape[1] != s.shape[1]:
        raise InvalidArgumentError(
            f"`subsets` has {sub.shape[1]} columns but `scores` has n_train = {s.shape[1]}"
        )
    if out.shape != (sub.shape[0], s.shape[0]):
        raise InvalidArgumentError(
            f"`outputs` must have shape (M, n_test) = {(sub.shape[0], s.shape[0])}, got {out.shape}"
        )
    if sub.shape[0] < 2:
        raise InvalidArgumentError(f"`subsets` must hold at least 2 subsets, got {sub.shape[0]}")
    if not np.isfinite(s).all():
        raise InvalidArgumentError("`scores` contains NaN or infinite values")
    if not np.isfinite(out).all():
        raise InvalidArgumentError("`outputs` contains NaN or infinite values")
    if not 0.0 < confidence < 1.0:
        raise InvalidArgumentError(f"`confidence` must be in (0, 1), got {confidence}")
    if n_bootstrap < 0:
        raise InvalidArgumentError(f"`n_bootstrap` must be ≥ 0, got {n_bootstrap}")
    pred = sub @ s.T  # (M, n_test)
    rho = _spearman_columns(pred, out)
    valid = rho[~np.isnan(rho)]
    if valid.size == 0:
        raise InvalidArgumentError(
            "no test example has a defined correlation (constant predictions or `outputs`)"
        )
    mean = float(valid.mean())
    lo = hi = mean
    if n_bootstrap > 0 and valid.size > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, valid.size, size=(n_bootstrap, valid.size))
        means = valid[idx].mean(1)
        tail = (1.0 - confidence) / 2
        lo, hi = (float(v) for v in np.quantile(means, [tail, 1.0 - tail]))
    return LDSResult(mean, lo, hi, rho, int(sub.shape[0]), confidence)


def split_test(n_test: int, val_fraction: float = 0.5, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Splits test indices into a validation part (hyper-parameters) and a reported part.

    Returns:
        ``(val_idx, eval_idx)``, disjoint sorted int64 arrays covering ``range(n_test)``, both non-empty.
    """
    if n_test < 2:
        raise InvalidArgumentError(f"`n_test` must be ≥ 2 to split, got {n_test}")
    if not 0.0 < val_fraction < 1.0:
        raise InvalidArgumentError(f"`val_fraction` must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng([int(seed), 0x5EED]).permutation(n_test)
    n_val = min(max(round(val_fraction * n_test), 1), n_test - 1)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


ScoreFn = Callable[[float, np.ndarray], ArrayLike]


def select_damping(
    score_fn: ScoreFn,
    dampings: Sequence[float],
    subsets: ArrayLike,
    outputs: ArrayLike,
    val_idx: np.ndarray,
) -> tuple[float, dict[float, float]]:
    """Picks the damping with the best LDS on the validation test examples only.

    Args:
        score_fn: ``score_fn(damping, test_idx)`` → ``(len(test_idx), n_train)`` scores.
        dampings: candidates (non-empty).
        subsets: ``(M, n_train)`` membership.
        outputs: ``(M, n_test)`` ground truth (all test examples; only ``val_idx`` columns are read).
        val_idx: validation test indices.

    Returns:
        ``(best damping, {damping: validation LDS})`` (NaN LDS counts as worst).
    """
    if len(dampings) == 0:
        raise InvalidArgumentError("`dampings` must not be empty")
    out = _np(outputs, "outputs", 2)
    table: dict[float, float] = {}
    for d in dampings:
        try:
            table[float(d)] = lds(score_fn(float(d), val_idx), subsets, out[:, val_idx], n_bootstrap=0).mean
        except ValueError:
            table[float(d)] = float("nan")
    best = max(table, key=lambda d: -math.inf if math.isnan(table[d]) else table[d])
    return best, table


def evaluate(
    score_fn: ScoreFn,
    subsets: ArrayLike,
    outputs: ArrayLike,
    *,
    dampings: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    val_fraction: float = 0.5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
) -> LDSResult:
    """LDS with damping chosen on a validation split and reported on the disjoint rest.

    Args:
        score_fn: ``score_fn(damping, test_idx)`` → ``(len(test_idx), n_train)`` scores, e.g.
            ``lambda d, idx: grass_rs.influence_scores(train, test[idx], damping=d)``.
        subsets: ``(M, n_train)`` membership.
        outputs: ``(M, n_test)`` ground-truth outputs.
        dampings: candidate dampings.
        val_fraction: fraction of test examples used for validation.
        seed: split and bootstrap seed.
        n_bootstrap: see :func:`lds`.
        confidence: see :func:`lds`.

    Returns:
        The LDS on the reported split, with ``damping`` set and ``extra`` holding
        ``validation`` (damping → validation LDS), ``eval_idx`` and ``val_idx``.
    """
    out = _np(outputs, "outputs", 2)
    val_idx, eval_idx = split_test(out.shape[1], val_fraction, seed=seed)
    best, table = select_damping(score_fn, dampings, subsets, out, val_idx)
    res = lds(
        score_fn(best, eval_idx),
        subsets,
        out[:, eval_idx],
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
    extra = {"validation": table, "val_idx": val_idx.tolist(), "eval_idx": eval_idx.tolist()}
    return LDSResult(
        res.mean, res.ci_low, res.ci_high, res.per_example, res.n_subsets, confidence, best, extra
    )


def _atomic_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


class ModelCache:
    """On-disk cache of retrained models (``state_dict``s), written atomically.

    The file of subset model ``m`` is ``root / f"{key}-{m:04d}.pt"`` with
    ``key = sha256(json(spec))[:16]``; ``spec`` must hold everything the model depends on (model
    and data description, model seed, subset seed, ``alpha``, training hyper-parameters), so a
    cached model is only reused for the same experiment — across compressors, and after a killed
    run. Writes go to a temporary file in the same folder, then ``os.replace``.

    Args:
        root: cache folder (created on first write).
        spec: JSON-able description of the experiment.
    """

    def __init__(self, root: str | os.PathLike[str], spec: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.spec = dict(spec)
        blob = json.dumps(self.spec, sort_keys=True, default=str).encode()
        self.key = hashlib.sha256(blob).hexdigest()[:16]

    def path(self, m: int) -> Path:
        """The cache file of subset model ``m``."""
        return self.root / f"{self.key}-{m:04d}.pt"

    def get(self, m: int) -> dict[str, torch.Tensor] | None:
        """The cached ``state_dict`` of subset ``m``, or ``None``."""
        p = self.path(m)
        if not p.exists():
            return None
        return torch.load(p, map_location="cpu", weights_only=True)

    def put(self, m: int, state: Mapping[str, torch.Tensor]) -> None:
        """Stores the ``state_dict`` of subset ``m`` atomically (and the spec, once)."""
        spec_path = self.root / f"{self.key}.json"
        if not spec_path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(spec_path, json.dumps(self.spec, sort_keys=True, default=str, indent=1).encode())
        _atomic_save({k: v.detach().cpu().clone() for k, v in state.items()}, self.path(m))


def ground_truth(
    train_fn: Callable[[np.ndarray, int], torch.nn.Module],
    output_fn: Callable[[torch.nn.Module], ArrayLike],
    subsets: ArrayLike,
    *,
    cache: ModelCache | None = None,
    build_fn: Callable[[], torch.nn.Module] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Retrains on every subset (or loads the cached model) and records the test outputs.

    Args:
        train_fn: ``train_fn(train_indices, m)`` → the model trained on those examples (sorted
            int64 indices; ``m`` is the subset number, to derive per-subset seeds if wanted).
        output_fn: ``output_fn(model)`` → ``(n_test,)`` ground-truth outputs.
        subsets: ``(M, n_train)`` membership.
        cache: where to cache the retrained models (``None``: no caching).
        build_fn: a fresh untrained model to load a cached ``state_dict`` into (required with
            ``cache``).
        progress: show a tqdm bar.

    Returns:
        ``(M, n_test)`` float64 outputs.
    """
    sub = _np(subsets, "subsets", 2).astype(bool)
    if cache is not None and build_fn is None:
        raise InvalidArgumentError("`build_fn` is required when `cache` is given")
    rows = []
    it: Any = range(sub.shape[0])
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="retraining", leave=False)
    for m in it:
        state = cache.get(m) if cache is not None else None
        if state is not None and build_fn is not None:
            model = build_fn()
            model.load_state_dict(state)
        else:
            model = train_fn(np.flatnonzero(sub[m]), m)
            if cache is not None:
                cache.put(m, model.state_dict())
        model.eval()
        with torch.no_grad():
            rows.append(
                np.asarray(_np(torch.as_tensor(output_fn(model)), "output_fn(model)", 1), dtype=np.float64)
            )
    return np.stack(rows)

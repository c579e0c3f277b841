"""Speed–fidelity study: LDS and compression time of every compressor at several ``k``, with one
runner (:func:`run_one`) over any :class:`~grass_rs.evaluation.tasks.base.EvalTask`.

Tasks (nothing is downloaded; see :mod:`grass_rs.evaluation.tasks`):

* ``digits``, ``breast_cancer`` — classifiers on scikit-learn's bundled data; MASK, SJLT, GraSS,
  dense Gaussian and SRHT on the flattened per-sample gradient;
* ``gpt2`` — a tiny GPT-2 on standard-library text; LoGra vs FactGraSS per layer through hooks.

For each task the study trains ``M`` models on random ``α``-subsets (cached on disk, see
:class:`grass_rs.evaluation.lds.ModelCache`), records the ground truth, compresses the full-data
model's per-sample gradients, scores with :func:`grass_rs.influence_scores` (damping picked on a
validation half of the test set) and reports the LDS on the other half, averaged over several
projector seeds. Training is deterministic (full-batch Adam from one fixed initialization for every
subset), so the ground truth varies only with the subset.

Run ``grass-rs study``; ``results.json``, ``table.md`` and ``lds_vs_k_<task>.png`` /
``lds_vs_time_<task>.png`` go to ``grass-rs-output/study`` by default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attribution.influence import influence_scores
from ..errors import InvalidArgumentError
from . import lds as L
from .tasks.base import DAMPINGS, EvalTask
from .tasks.classification import CLASSIFICATION_TASKS, COMPRESSORS, DEFAULT_KS, build_task
from .tasks.cnn import CNN_KS, build_cnn_task
from .tasks.gpt2 import LM_KS, LM_MODELS, build_lm_task

__all__ = ["TASKS", "build_eval_task", "plot", "run_one", "run_study", "table"]

TASKS = (*CLASSIFICATION_TASKS, "gpt2", "cnn")


def build_eval_task(
    name: str,
    *,
    n_models: int = 50,
    alpha: float = 0.5,
    cache_dir: str | Path = "grass-rs-output/lds-cache",
    seed: int = 0,
    progress: bool = False,
) -> EvalTask:
    """The task ``name`` (one of :data:`TASKS`) with its ground truth (retrained or cached)."""
    if name == "gpt2":
        return build_lm_task(
            n_models=n_models, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
        )
    if name == "cnn":
        return build_cnn_task(
            n_models=n_models, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
        )
    if name in CLASSIFICATION_TASKS:
        return build_task(
            name, n_models=n_models, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
        )
    raise InvalidArgumentError(f"`task` must be one of {TASKS}, got {name!r}")


def _scorer(train: Any, test: Any) -> Callable[[float, np.ndarray], torch.Tensor]:
    """``score(damping, test_idx)`` → influence scores of the selected test rows (tensor or layer dict)."""

    def score(damping: float, idx: np.ndarray) -> torch.Tensor:
        i = torch.as_tensor(idx)
        sub = {n: g[i] for n, g in test.items()} if isinstance(test, dict) else test[i]
        return influence_scores(train, sub, damping=damping)

    return score


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


def run_one(
    task: EvalTask,
    compressor: str,
    k: int,
    *,
    seed: int = 0,
    n_proj_seeds: int = 5,
    dampings: Sequence[float] = DAMPINGS,
    n_bootstrap: int = 1000,
    repeats: int = 3,
) -> dict[str, Any]:
    """Compresses, scores and evaluates one ``(compressor, k)`` on ``task``; returns a table row.

    The LDS is computed for ``n_proj_seeds`` projector seeds (``seed, seed+1, …``; damping chosen
    on the validation split for each; one seed for ``"none"``); the per-example correlations are
    averaged over the seeds and the bootstrap interval is over the reported test examples.
    ``compress_s`` is the task's compression time of all training and test gradients (first seed,
    best of ``repeats``); ``score_s`` the scoring and evaluation time of the first seed.
    """
    if compressor not in task.compressors:
        raise InvalidArgumentError(
            f"`compressor` must be one of {task.compressors} for {task.name}, got {compressor!r}"
        )
    seeds = [seed] if compressor == "none" else [seed + i for i in range(n_proj_seeds)]
    per_seed: list[L.LDSResult] = []
    compress_s = score_s = 0.0
    for i, s in enumerate(seeds):
        tr, te, t_c = task.compress(compressor, k, s, repeats=repeats if i == 0 else 0)
        t0 = time.perf_counter()
        per_seed.append(
            L.evaluate(
                _scorer(tr, te), task.subsets, task.outputs, dampings=dampings, seed=seed, n_bootstrap=0
            )
        )
        if i == 0:
            compress_s, score_s = t_c, time.perf_counter() - t0
    res = _combine(per_seed, n_bootstrap, seed)
    means = [r.mean for r in per_seed]
    return {
        "task": task.name,
        "compressor": compressor,
        "k": task.row_k(compressor, k),
        "p": task.p,
        "lds": res.mean,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "lds_str": str(res),
        "lds_per_seed": means,
        "lds_seed_sd": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
        "damping": [r.damping for r in per_seed],
        "compress_s": compress_s,
        "score_s": score_s,
        "total_s": task.fixed_s + compress_s + score_s,
        "n_models": res.n_subsets,
    }


def run_study(
    out: str | Path,
    *,
    tasks: Sequence[str] = TASKS,
    compressors: Sequence[str] = COMPRESSORS,
    ks: dict[str, Sequence[int]] | None = None,
    n_models: int = 50,
    lm_models: int = LM_MODELS,
    alpha: float = 0.5,
    cache_dir: str | Path = "grass-rs-output/lds-cache",
    seed: int = 0,
    n_proj_seeds: int = 5,
    full: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Runs the study and writes ``results.json``, ``table.md`` and the plots into ``out``.

    Args:
        out: output folder.
        tasks: any of :data:`TASKS`.
        compressors: projectors for the classification tasks (the GPT-2 task compares LoGra and
            FactGraSS).
        ks: per-task ``k`` values (default ``DEFAULT_KS``; GPT-2: ``LM_KS`` per layer).
        n_models: ``M`` for the classification tasks.
        lm_models: ``M`` for the GPT-2 task.
        alpha: subset fraction.
        cache_dir: retrained-model cache (reused across runs; a killed run resumes).
        seed: data, model, subset seed, and first projector seed.
        n_proj_seeds: projector seeds averaged per configuration.
        full: also score the uncompressed gradients (classification; a reference, slow for large ``p``).
        progress: progress bars.

    Returns:
        The table rows (also written to ``results.json``).
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise InvalidArgumentError(f"`tasks` must be among {TASKS}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ks = {**DEFAULT_KS, "gpt2": LM_KS, "cnn": CNN_KS, **(ks or {})}

    def emit(r: dict[str, Any]) -> None:
        rows.append(r)
        print(
            f"  {r['compressor']:>9} k={r['k']:<5} {r['lds_str']}  compress {r['compress_s'] * 1e3:.2f} ms",
            flush=True,
        )
        (out / "results.json").write_text(json.dumps(rows, indent=1))

    for name in tasks:
        m = lm_models if name == "gpt2" else n_models
        task = build_eval_task(
            name, n_models=m, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
        )
        print(f"[{name}] p={task.p}", flush=True)
        names = [c for c in task.compressors if c != "none"]
        if name in CLASSIFICATION_TASKS:
            names = [c for c in compressors if c in names]
            if full:
                emit(run_one(task, "none", task.p, seed=seed))
        for k in ks[name]:
            for c in names:
                if c in ("mask", "grass") and k > task.p:
                    continue
                emit(run_one(task, c, k, seed=seed, n_proj_seeds=n_proj_seeds))
    (out / "table.md").write_text(table(rows))
    plot(rows, out)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the rows.

    ``compression`` is the time to project all training and test gradients (best of 3, warm);
    for the GPT-2 rows it is the whole hooked capture (forward + backward + compression).
    ``damping`` lists the damping chosen on the validation split for each projector seed; ``seed sd``
    is the standard deviation of the LDS across projector seeds (the CI covers test examples only).
    """
    lines = [
        "| task | compressor | k | LDS ± 95% CI | seed sd | per-seed LDS | damping "
        "| compression (ms) | total (s) |",
        "|---|---|---:|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        half = (r["ci_high"] - r["ci_low"]) / 2
        seeds = ", ".join(f"{v:.3f}" for v in r["lds_per_seed"])
        damp = ", ".join(f"{d:g}" for d in r["damping"])
        lines.append(
            f"| {r['task']} | {r['compressor']} | {r['k']} | {r['lds']:.3f} ± {half:.3f} "
            f"| {r['lds_seed_sd']:.3f} | {seeds} | {damp} "
            f"| {r['compress_s'] * 1e3:.2f} | {r['total_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Writes ``lds_vs_k_<task>.png`` and ``lds_vs_time_<task>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in sorted({r["task"] for r in rows}):
        rs = [r for r in rows if r["task"] == name and r["compressor"] != "none"]
        full = [r for r in rows if r["task"] == name and r["compressor"] == "none"]
        for xkey, fname, xlabel in (
            ("k", f"lds_vs_k_{name}.png", "k"),
            ("compress_s", f"lds_vs_time_{name}.png", "compression time (s)"),
        ):
            fig, ax = plt.subplots(figsize=(5, 3.6))
            for c in sorted({r["compressor"] for r in rs}):
                cr = sorted((r for r in rs if r["compressor"] == c), key=lambda r: r["k"])
                xs = [r[xkey] for r in cr]
                ys = np.array([r["lds"] for r in cr])
                err = np.array([[r["lds"] - r["ci_low"] for r in cr], [r["ci_high"] - r["lds"] for r in cr]])
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=c)
            if full:
                ax.axhline(full[0]["lds"], color="gray", ls="--", label="full gradient")
            if xkey == "k":
                ks = sorted({r["k"] for r in rs})
                ax.set_xscale("log", base=2)
                ax.set_xticks(ks, [str(k) for k in ks])
                ax.minorticks_off()
            else:
                ax.set_xscale("log")
                for r in rs:
                    ax.annotate(
                        str(r["k"]),
                        (r[xkey], r["lds"]),
                        fontsize=6,
                        xytext=(3, -8),
                        textcoords="offset points",
                    )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("LDS")
            ax.set_title(name)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(out / fname, dpi=120)
            plt.close(fig)

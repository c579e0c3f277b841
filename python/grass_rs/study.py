"""Speed–fidelity study: LDS and compression time of every projector at several ``k``.

Tasks (nothing is downloaded):

* ``digits`` — an MLP ``64 → 128 → 10`` (``p = 9 610``) on scikit-learn's ``load_digits``
  (1 000 train / 797 test), ``k ∈ {32, 128, 512}``;
* ``breast_cancer`` — logistic regression ``30 → 2`` (``p = 62``) on ``load_breast_cancer``
  (400 / 169), ``k ∈ {8, 16, 32}``;
* ``gpt2`` — a 2-layer GPT-2 (``n_embd = 32``, byte vocabulary, built from a config) trained on
  32-byte windows of the standard library's own ``.py`` files (256 train / 128 test); LoGra vs
  FactGraSS with ``k ∈ {16, 64, 256}`` per layer, through :func:`grass_rs.attach`.

For each task the study trains ``M`` models on random ``α``-subsets (cached on disk, see
:class:`grass_rs.lds.ModelCache`), records the ground truth (test margins / sequence log-odds),
computes per-sample loss gradients of the model trained on the full training set, compresses them
(MASK, SJLT, GraSS, dense Gaussian, SRHT on the flattened gradient; LoGra/FactGraSS per layer for
GPT-2), scores with :func:`grass_rs.influence_scores` (damping picked on a validation half of the
test set) and reports the LDS on the other half, averaged over several projector seeds.

Training is deterministic: full-batch Adam from one fixed initialization for every subset, so the
ground truth varies only with the subset (this keeps the LDS noise floor low).

Run ``python -m grass_rs.study`` (or ``grass-rs study`` once wired into the CLI); outputs
``results.json``, ``table.md`` and ``lds_vs_k_<task>.png`` / ``lds_vs_time_<task>.png`` go to
``grass-rs-output/study`` by default.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from . import lds as L
from ._study_common import DAMPINGS, STUDY_VERSION, _combine, _evaluate, _train
from .projection import SJLT, SRHT, Gaussian, GraSS, Mask, Projector
from .study_lm import (
    LM_COMPRESSORS,
    LM_HP,
    LM_KS,
    LM_MODELS,
    LMTask,
    build_lm_task,
    run_lm_one,
    seq_log_prob,
    stdlib_sequences,
)

__all__ = [
    "COMPRESSORS",
    "DAMPINGS",
    "LM_COMPRESSORS",
    "LM_HP",
    "LM_KS",
    "LM_MODELS",
    "STUDY_VERSION",
    "LMTask",
    "Task",
    "add_common_args",
    "add_study_parser",
    "build_lm_task",
    "build_task",
    "main",
    "make_projector",
    "run_lm_one",
    "run_one",
    "run_study",
    "run_study_cli",
    "seq_log_prob",
    "stdlib_sequences",
]

COMPRESSORS = ("mask", "sjlt", "grass", "gaussian", "srht")
DEFAULT_KS: dict[str, tuple[int, ...]] = {"digits": (32, 128, 512), "breast_cancer": (8, 16, 32)}


@dataclass
class Task:
    """One attribution task with its retraining ground truth and full-model gradients.

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


def _load(
    name: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Callable[[], nn.Module]]:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "digits":
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        n_train = 1000

        def build() -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))

    elif name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
        n_train = 400

        def build() -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(30, 2))

    else:
        raise ValueError(f"`task` must be 'digits' or 'breast_cancer', got {name!r}")
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm], y[perm]
    if name == "breast_cancer":
        mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-8
        x = (x - mu) / sd
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:], build


TRAIN_HP: dict[str, dict[str, float]] = {
    "digits": {"steps": 300, "lr": 1e-2, "weight_decay": 1e-3},
    "breast_cancer": {"steps": 300, "lr": 5e-2, "weight_decay": 1e-2},
}


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
    x_tr, y_tr, x_te, y_te, build = _load(name, seed)
    hp = TRAIN_HP[name]
    subsets = L.sample_subsets(x_tr.shape[0], n_models, alpha, seed=seed)
    spec = {
        "task": name,
        "version": STUDY_VERSION,
        "n_train": int(x_tr.shape[0]),
        "model_seed": seed,
        "data_seed": seed,
        "subset_seed": seed,
        "alpha": alpha,
        "hp": hp,
    }
    cache = L.ModelCache(cache_dir, spec)
    t0 = time.perf_counter()
    outputs = L.ground_truth(
        lambda idx, m: _train(build, x_tr[idx], y_tr[idx], hp),
        lambda model: L.margin(model(x_te), y_te),
        subsets,
        cache=cache,
        build_fn=build,
        progress=progress,
    )
    retrain_s = time.perf_counter() - t0
    full = _train(build, x_tr, y_tr, hp)
    t0 = time.perf_counter()
    g_tr, g_te = per_sample_grads(full, x_tr, y_tr), per_sample_grads(full, x_te, y_te)
    return Task(name, subsets, outputs, g_tr, g_te, time.perf_counter() - t0, retrain_s)


def make_projector(kind: str, p: int, k: int, seed: int = 0) -> Projector | None:
    """The projector ``kind`` from ``p`` to ``k`` (``None`` for ``"none"``: raw gradients).

    GraSS keeps ``min(4k, p)`` coordinates before its SJLT (paper default ratio); MASK keeps ``k``
    coordinates unscaled. ``k`` must be ``≤ p`` for MASK and GraSS.
    """
    if kind == "none":
        return None
    if kind == "mask":
        return Mask(p, k, seed=seed)
    if kind == "sjlt":
        return SJLT(p, k, seed=seed)
    if kind == "grass":
        return GraSS(p, k, mask_dim=min(4 * k, p), seed=seed)
    if kind == "gaussian":
        return Gaussian(p, k, seed=seed)
    if kind == "srht":
        return SRHT(p, k, seed=seed)
    raise ValueError(f"`compressor` must be one of {(*COMPRESSORS, 'none')}, got {kind!r}")


def _timed_project(proj: Projector, x: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    """``proj.project(x)`` after one warm-up call; the best of ``repeats`` timings."""
    out = torch.as_tensor(proj.project(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = torch.as_tensor(proj.project(x))
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_one(
    task: Task,
    compressor: str,
    k: int,
    *,
    seed: int = 0,
    n_proj_seeds: int = 5,
    dampings: Sequence[float] = DAMPINGS,
    n_bootstrap: int = 1000,
    repeats: int = 3,
) -> dict[str, Any]:
    """Compresses, scores and evaluates one ``(compressor, k)``; returns a table row (JSON-able).

    The LDS is computed for ``n_proj_seeds`` projector seeds (``seed, seed+1, …``; damping chosen
    on the validation split for each); the per-example correlations are averaged over the seeds and
    the bootstrap interval is over the reported test examples. ``compress_s`` is the best of
    ``repeats`` warm timings of projecting all training and test gradients (first seed).
    """
    seeds = [seed] if compressor == "none" else [seed + i for i in range(n_proj_seeds)]
    per_seed: list[L.LDSResult] = []
    compress_s = score_s = 0.0
    for i, s in enumerate(seeds):
        proj = make_projector(compressor, task.p, k, s)
        if proj is None:
            tr, te, t_c = task.train_grads, task.test_grads, 0.0
        else:
            both, t_c = _timed_project(
                proj, torch.cat([task.train_grads, task.test_grads]), repeats if i == 0 else 0
            )
            tr, te = both[: task.train_grads.shape[0]], both[task.train_grads.shape[0] :]
        if i == 0:
            compress_s = t_c
        t0 = time.perf_counter()
        tr64, te64 = tr.double(), te.double()
        per_seed.append(_evaluate(task, tr64, te64, dampings, seed))
        if i == 0:
            score_s = time.perf_counter() - t0
    res = _combine(per_seed, n_bootstrap, seed)
    return {
        "task": task.name,
        "compressor": compressor,
        "k": int(k) if compressor != "none" else task.p,
        "p": task.p,
        "lds": res.mean,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "lds_str": str(res),
        "lds_per_seed": [r.mean for r in per_seed],
        "lds_seed_sd": float(np.std([r.mean for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0,
        "damping": [r.damping for r in per_seed],
        "compress_s": compress_s,
        "score_s": score_s,
        "total_s": task.grad_s + compress_s + score_s,
        "n_models": res.n_subsets,
    }


def run_study(
    out: str | Path,
    *,
    tasks: Sequence[str] = ("digits", "breast_cancer", "gpt2"),
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
        tasks: any of ``"digits"``, ``"breast_cancer"``, ``"gpt2"``.
        compressors: projectors for the classification tasks (the GPT-2 task compares LoGra and
            FactGraSS).
        ks: per-task ``k`` values (default :data:`DEFAULT_KS`; GPT-2: :data:`LM_KS` per layer).
        n_models: ``M`` for the classification tasks.
        lm_models: ``M`` for the GPT-2 task.
        alpha: subset fraction.
        cache_dir: retrained-model cache (reused across runs; a killed run resumes).
        seed: data, model, subset seed, and first projector seed.
        n_proj_seeds: projector seeds averaged per configuration.
        full: also score the uncompressed gradients (a reference; slow for large ``p``).
        progress: progress bars.

    Returns:
        The table rows (also written to ``results.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ks = {**DEFAULT_KS, "gpt2": LM_KS, **(ks or {})}

    def emit(r: dict[str, Any]) -> None:
        rows.append(r)
        print(
            f"  {r['compressor']:>9} k={r['k']:<5} {r['lds_str']}  compress {r['compress_s'] * 1e3:.2f} ms",
            flush=True,
        )
        (out / "results.json").write_text(json.dumps(rows, indent=1))

    for name in tasks:
        if name == "gpt2":
            lm = build_lm_task(
                n_models=lm_models, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
            )
            print(f"[gpt2] ground truth {lm.retrain_s:.1f}s", flush=True)
            for k in ks["gpt2"]:
                for c in LM_COMPRESSORS:
                    emit(run_lm_one(lm, c, k, seed=seed, n_proj_seeds=n_proj_seeds))
            continue
        task = build_task(
            name, n_models=n_models, alpha=alpha, cache_dir=cache_dir, seed=seed, progress=progress
        )
        print(
            f"[{name}] p={task.p}, ground truth {task.retrain_s:.1f}s, gradients {task.grad_s:.2f}s",
            flush=True,
        )
        if full:
            emit(run_one(task, "none", task.p, seed=seed))
        for k in ks[name]:
            for c in compressors:
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


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``grass-rs lds`` and ``grass-rs study``."""
    p.add_argument(
        "--task", default="digits", choices=["digits", "breast_cancer", "gpt2"], help="bundled task"
    )
    p.add_argument("--models", type=int, default=50, help="M, number of retrained subset models")
    p.add_argument("--alpha", type=float, default=0.5, help="subset fraction")
    p.add_argument("--cache-dir", default="grass-rs-output/lds-cache", help="retrained-model cache")
    p.add_argument("--seed", type=int, default=0, help="model, data, subset and projector seed")


def add_study_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``study`` sub-command to an ``argparse`` sub-parsers object and returns its parser."""
    p = subparsers.add_parser("study", help="speed–fidelity study of every projector (table + plots)")
    _study_args(p)
    p.set_defaults(func=run_study_cli)
    return p


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="grass-rs-output/study", help="output folder")
    p.add_argument("--tasks", default="digits,breast_cancer,gpt2", help="comma-separated tasks")
    p.add_argument("--compressors", default=",".join(COMPRESSORS), help="comma-separated compressors")
    p.add_argument("--models", type=int, default=50, help="M, number of retrained subset models")
    p.add_argument("--lm-models", type=int, default=LM_MODELS, help="M for the GPT-2 task")
    p.add_argument("--alpha", type=float, default=0.5, help="subset fraction")
    p.add_argument("--cache-dir", default="grass-rs-output/lds-cache", help="retrained-model cache")
    p.add_argument("--seed", type=int, default=0, help="model, data, subset and projector seed")
    p.add_argument("--proj-seeds", type=int, default=5, help="projector seeds averaged per configuration")
    p.add_argument("--no-full", action="store_true", help="skip the uncompressed-gradient reference rows")


def run_study_cli(args: argparse.Namespace) -> int:
    """Runs ``grass-rs study`` with parsed ``args``."""
    rows = run_study(
        args.out,
        tasks=[t for t in args.tasks.split(",") if t],
        compressors=[c for c in args.compressors.split(",") if c],
        n_models=args.models,
        lm_models=args.lm_models,
        alpha=args.alpha,
        cache_dir=args.cache_dir,
        seed=args.seed,
        n_proj_seeds=args.proj_seeds,
        full=not args.no_full,
    )
    print(table(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grass_rs.study``."""
    p = argparse.ArgumentParser(prog="python -m grass_rs.study", description=__doc__)
    _study_args(p)
    return run_study_cli(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

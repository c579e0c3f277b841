"""``grass-rs lds`` (the LDS of one compressor on a bundled task) and ``grass-rs study`` (the
speed–fidelity study of every compressor)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "run_lds", "run_study"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=0.5, help="subset fraction")
    p.add_argument("--cache-dir", default="grass-rs-output/lds-cache", help="retrained-model cache")
    p.add_argument("--seed", type=int, default=0, help="model, data, subset and projector seed")


def add_parsers(sub: Any) -> None:
    """Adds ``lds`` and ``study`` to the sub-parsers ``sub``."""
    from ..evaluation.study import TASKS
    from ..evaluation.tasks.classification import COMPRESSORS
    from ..evaluation.tasks.gpt2 import LM_MODELS

    p = sub.add_parser(
        "lds",
        help="linear datamodeling score of one compressor on a bundled task",
        description="Trains M models on random α-subsets (cached), scores with the given compressor, "
        "and prints the LDS with a bootstrap CI (damping chosen on a validation split).",
    )
    p.add_argument("--task", default="digits", choices=TASKS, help="bundled task")
    p.add_argument("--models", type=int, default=50, help="M, number of retrained subset models")
    _common(p)
    p.add_argument(
        "--compressor",
        default="grass",
        help="mask, sjlt, grass, gaussian, srht or none (digits, breast_cancer); logra or factgrass (gpt2)",
    )
    p.add_argument("--k", type=int, default=256, help="projection dimension (per layer for gpt2)")
    p.add_argument("--proj-seeds", type=int, default=1, help="projector seeds averaged")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.set_defaults(func=run_lds)

    s = sub.add_parser("study", help="speed–fidelity study of every projector (table + plots)")
    s.add_argument("--out", default="grass-rs-output/study", help="output folder")
    s.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    s.add_argument("--compressors", default=",".join(COMPRESSORS), help="comma-separated compressors")
    s.add_argument("--models", type=int, default=50, help="M, number of retrained subset models")
    s.add_argument("--lm-models", type=int, default=LM_MODELS, help="M for the GPT-2 task")
    _common(s)
    s.add_argument("--proj-seeds", type=int, default=5, help="projector seeds averaged per configuration")
    s.add_argument("--no-full", action="store_true", help="skip the uncompressed-gradient reference rows")
    s.set_defaults(func=run_study)


def run_lds(args: argparse.Namespace) -> int:
    """``grass-rs lds``: prints the result (and writes ``--json``)."""
    from ..evaluation.study import build_eval_task, run_one

    task = build_eval_task(
        args.task, n_models=args.models, alpha=args.alpha, cache_dir=args.cache_dir, seed=args.seed
    )
    row = run_one(task, args.compressor, args.k, seed=args.seed, n_proj_seeds=args.proj_seeds)
    print(
        f"{args.task} {args.compressor} k={row['k']}: {row['lds_str']}  compression {row['compress_s']:.4f}s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1, default=str))
    return 0


def run_study(args: argparse.Namespace) -> int:
    """``grass-rs study``: writes the table, JSON and plots, prints the table."""
    from ..evaluation import study

    rows = study.run_study(
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
    print(study.table(rows))
    return 0

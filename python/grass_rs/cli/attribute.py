"""``grass-rs attribute``: the whole attribution job on the bundled digits MLP.

Trains a small MLP on scikit-learn's bundled digits, fits an :class:`~grass_rs.Attributor` on the
training set (compressed gradients in a resumable store under ``--output``), scores the test set,
prints the most helpful / harmful training digits for a few test digits and writes ``scores.npy``,
``top_k.json``, ``summary.json`` and ``influence.png`` to ``--output``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..capture.compressors import COMPRESSOR_NAMES
from ..errors import InvalidArgumentError

__all__ = ["add_parser", "attribute"]

COMPRESSORS = (*COMPRESSOR_NAMES, "none")


def add_parser(sub: Any) -> None:
    """Adds ``attribute`` to the sub-parsers ``sub``."""
    a = sub.add_parser("attribute", help="influence of digits training examples on test predictions")
    a.add_argument(
        "--compressor", choices=COMPRESSORS, default="grass", help="gradient compressor (default grass)"
    )
    a.add_argument(
        "-k", "--k", type=positive_int, default=256, help="compressed dimension per layer (default 256)"
    )
    a.add_argument(
        "--damping", type=damping, default=1e-3, help="damping λ, finite and ≥ 0 (default 1e-3, relative)"
    )
    a.add_argument("--absolute", action="store_true", help="absolute instead of relative damping")
    a.add_argument(
        "--solver", choices=("eigh", "cholesky", "identity"), default="eigh", help="FIM solve (default eigh)"
    )
    a.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    a.add_argument("--output", type=Path, default=Path("grass-rs-output"), help="output folder")
    a.add_argument(
        "--nproc", type=positive_int, default=1, help="processes (torch.distributed, gloo/nccl; default 1)"
    )
    a.add_argument(
        "--n-test", type=positive_int, default=None, help="score only the first N ≥ 1 test examples"
    )
    a.add_argument(
        "--show", type=non_negative_int, default=4, help="test examples to print and draw (default 4)"
    )
    a.add_argument(
        "--top", type=positive_int, default=3, help="helpful/harmful examples per test example (default 3)"
    )
    a.add_argument("--seed", type=non_negative_int, default=0, help="data split, model and compressor seed")
    a.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads per process (default 1)"
    )
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    a.set_defaults(func=attribute)


def positive_int(text: str) -> int:
    """argparse type: an int ≥ 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int ≥ 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {value}")
    return value


def damping(text: str) -> float:
    """argparse type: a finite float ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_output(out: Path) -> None:
    """``--output`` must be (or become) a writable folder: checked before any work starts."""
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"is under the file {parent}"
                raise InvalidArgumentError(f"--output {out} {what}; choose a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InvalidArgumentError(f"--output {out}: {parent} is not writable")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidArgumentError(f"--output {out}: cannot create the folder ({e.strerror or e})") from None


def _check_dependencies(args: argparse.Namespace) -> None:
    """Optional dependencies, checked before any work: scikit-learn (the bundled digits) is needed;
    without matplotlib the job runs and skips ``influence.png`` (one-line note)."""
    if importlib.util.find_spec("sklearn") is None:
        raise InvalidArgumentError(
            "`grass-rs attribute` needs scikit-learn for the bundled digits data: "
            "pip install scikit-learn (or 'grass-rs[cli]')"
        )
    args.draw = _has_matplotlib()
    if not args.draw:
        _log("note: matplotlib is not installed, so influence.png is skipped (pip install matplotlib)")


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---- attribute --------------------------------------------------------------------------------------
def _attribute_job(args: argparse.Namespace, task: Any) -> None:
    """Runs on every rank (or once): fit, score, and on rank 0 write the results."""
    from ..attribution import Attributor
    from ..attribution import distributed as D

    torch.set_num_threads(args.threads)
    rank, world = D.rank_and_world()
    device = torch.device(args.device)
    model = task.model.to(device)
    train, test = task.loaders(batch_size=128, n_test=args.n_test)
    att = Attributor(
        model,
        compressor=None if args.compressor == "none" else args.compressor,
        k=args.k,
        seed=args.seed,
        store=args.output / f"store-{args.compressor}-k{args.k}-seed{args.seed}",
        damping=args.damping,
        relative=not args.absolute,
        solver=args.solver,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    times = {}
    t0 = time.perf_counter()
    att.fit(_to_device(train, device))
    times["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = att.score(_to_device(test, device))
    times["score_s"] = time.perf_counter() - t0
    if rank == 0:
        _report(args, task, scores, times, world)


def _to_device(loader: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return loader
    from torch.utils.data import DataLoader, TensorDataset

    ds = loader.dataset
    moved = TensorDataset(*(t.to(device) for t in ds.tensors))
    return DataLoader(moved, batch_size=loader.batch_size, shuffle=False)


def _report(
    args: argparse.Namespace, task: Any, scores: torch.Tensor, times: dict[str, float], world: int
) -> None:
    from ..attribution import top_k

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    helpful, harmful = top_k(scores, args.top)
    np.save(out / "scores.npy", scores.numpy())
    rows = []
    with torch.no_grad():
        pred = task.model.cpu()(task.x_test[: scores.shape[0]]).argmax(1)
    for i in range(scores.shape[0]):
        rows.append(
            {
                "test": i,
                "label": int(task.y_test[i]),
                "predicted": int(pred[i]),
                "helpful": [[int(j), float(scores[i, j])] for j in helpful[i]],
                "harmful": [[int(j), float(scores[i, j])] for j in harmful[i]],
            }
        )
    (out / "top_k.json").write_text(json.dumps(rows, indent=1))
    summary = {
        "command": "attribute",
        "compressor": args.compressor,
        "k": args.k,
        "damping": args.damping,
        "relative": not args.absolute,
        "solver": args.solver,
        "processes": world,
        "n_train": scores.shape[1],
        "n_test": scores.shape[0],
        "test_accuracy": task.test_accuracy,
        **times,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _print_table(task, rows[: args.show])
    drawn = getattr(args, "draw", True) and _draw(task, rows[: args.show], out / "influence.png")
    shape = f"{scores.shape[0]}×{scores.shape[1]}"
    png = ", influence.png" if drawn else ""
    print(f"\nwrote {out / 'scores.npy'} ({shape}), top_k.json, summary.json{png}")


def _print_table(task: Any, rows: list[dict[str, Any]]) -> None:
    print("score = ĝ_testᵀ (F + λI)⁻¹ ĝ_train: > 0 helpful (lowers the test loss), < 0 harmful")
    for r in rows:
        print(f"\ntest #{r['test']} (digit {r['label']}, predicted {r['predicted']})")
        for kind in ("helpful", "harmful"):
            items = ", ".join(f"#{j} (digit {int(task.y_train[j])}, {s:+.3g})" for j, s in r[kind])
            print(f"  most {kind:8s}: {items}")


def _draw(task: Any, rows: list[dict[str, Any]], path: Path) -> bool:
    """Draws ``influence.png``; ``False`` (nothing drawn) without rows or without matplotlib."""
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("note: matplotlib is not installed, so influence.png is skipped (pip install matplotlib)")
        return False
    top = len(rows[0]["helpful"])
    fig, axes = plt.subplots(
        len(rows), 1 + 2 * top, figsize=(1.3 * (1 + 2 * top), 1.5 * len(rows)), squeeze=False
    )
    for ax_row, r in zip(axes, rows, strict=True):
        cells = [(task.x_test[r["test"]], f"test {r['label']} (pred {r['predicted']})", "black")]
        cells += [(task.x_train[j], f"+ {int(task.y_train[j])} ({s:.2g})", "green") for j, s in r["helpful"]]
        cells += [(task.x_train[j], f"− {int(task.y_train[j])} ({s:.2g})", "red") for j, s in r["harmful"]]
        for ax, (img, title, color) in zip(ax_row, cells, strict=True):
            ax.imshow(img.reshape(8, 8).cpu().numpy(), cmap="gray_r")
            ax.set_title(title, fontsize=7, color=color)
            ax.axis("off")
    fig.suptitle("test digit | most helpful (green) | most harmful (red) training digits", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def attribute(args: argparse.Namespace) -> int:
    """``grass-rs attribute``."""
    from ..attribution import distributed as D
    from ..data.bundled import digits_task

    _check_output(args.output)
    _check_dependencies(args)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    _log("training the digits MLP ...")
    task = digits_task(seed=args.seed)
    _log(f"  done in {time.perf_counter() - t0:.1f} s, test accuracy {task.test_accuracy:.3f}")
    backend = "nccl" if torch.device(args.device).type == "cuda" else "gloo"
    D.launch(_attribute_job, args.nproc, args, task, backend=backend)
    _log(f"total {time.perf_counter() - t0:.1f} s")
    return 0

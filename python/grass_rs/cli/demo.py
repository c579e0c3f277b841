"""``grass-rs demo``: each projector's compression error and time on per-sample gradients of the
digits MLP."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

__all__ = ["add_parser", "demo"]


def add_parser(sub: Any) -> None:
    """Adds ``demo`` to the sub-parsers ``sub``."""
    d = sub.add_parser("demo", help="compare projectors on per-sample gradients of the digits MLP")
    d.add_argument("-k", "--k", default="256,1024", help="comma-separated compressed dimensions")
    d.add_argument("--n", type=int, default=256, help="number of per-sample gradients (default 256)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1)
    d.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    """``grass-rs demo``: compression table of each projector on digits MLP per-sample gradients."""
    from ..attribution import sum_cross_entropy
    from ..capture import FuncGradients
    from ..data.bundled import digits_task

    torch.set_num_threads(args.threads)
    task = digits_task(seed=args.seed, steps=100)
    raw = FuncGradients(task.model, sum_cross_entropy)(task.x_train[: args.n], task.y_train[: args.n])
    g = torch.cat(list(raw.values()), dim=1)
    exact = (g.double() @ g.double().T).numpy()
    p = g.shape[1]
    print(
        f"{args.n} per-sample gradients of the digits MLP, p = {p} parameters; errors of the inner products"
    )
    print("  (Mask and GraSS rescaled by √(p/k') so that all are unbiased)")
    print(f"{'projector':>10} {'k':>6} {'time ms':>9} {'rel. Gram error':>16} {'max |cos err|':>14}")
    for k in [int(s) for s in args.k.split(",")]:
        for name in ("sjlt", "mask", "grass", "gaussian"):
            print(_demo_row(name, g, exact, min(k, p), args.seed))
    return 0


def _demo_row(name: str, g: torch.Tensor, exact: np.ndarray, k: int, seed: int) -> str:
    from ..projection import default_mask_dim, projector

    proj = projector(name, g.shape[1], k, seed=seed, scale=name == "mask")
    proj(g[:2])  # warm up
    t0 = time.perf_counter()
    pg = torch.as_tensor(proj(g)).double()
    ms = 1e3 * (time.perf_counter() - t0)
    if name == "grass":  # the mask stage keeps k' of p coordinates unscaled: E‖Px‖² = (k'/p)‖x‖²
        pg = pg * (g.shape[1] / default_mask_dim(g.shape[1], k)) ** 0.5
    approx = (pg @ pg.T).numpy()
    rel = float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    norms = np.sqrt(np.diag(exact))
    cos_err = float(np.abs((approx - exact) / np.outer(norms, norms).clip(1e-30)).max())
    return f"{name:>10} {k:>6} {ms:>9.2f} {rel:>16.4f} {cos_err:>14.4f}"

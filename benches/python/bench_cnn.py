"""Benchmark: per-sample gradient capture on a ResNet-9-style CNN (CIFAR-shaped batches).

Usage: ``python benches/python/bench_cnn.py [--batch 32] [--width 16] [--k 256] [--repeats 5]
[--conv-only] [--per-layer]``.

Two measurements, each the median over ``--repeats`` round-robin rounds (after one warm-up call):

1. **conv compression** — for every Conv2d of the model, its factors ``(δ, x)`` are recorded once;
   then each conv layer's per-sample gradients are compressed by FactGraSS from the factors
   (one fused Rust call per layer on CPU: the masked im2col columns and the masked rows of δ are
   gathered straight from the NCHW tensors), by LoGra from the factors (patches projected by a
   convolution), and by materializing the gradient (unfold + ``bmm``) then GraSS. It runs twice,
   each in its own process: with the environment as given minus ``OMP_WAIT_POLICY`` (torch's
   default: its OpenMP workers spin after each op) and with ``OMP_WAIT_POLICY=PASSIVE``. Reported:
   median and spread (min–max) over the rounds; ``--per-layer`` adds FactGraSS vs LoGra per layer.
2. **capture per batch** — forward + backward + compression of every parameter (BatchNorms in eval
   mode go through the exact fallback) with ``attach(FactGraSS(k))`` / ``attach(LoGra(k))``, against
   ``torch.func`` per-sample gradients of all parameters followed by GraSS or a dense Gaussian per
   layer (``k`` per layer everywhere). Peak memory is the growth of the process's peak RSS during the
   measurement, each method in its own subprocess.

Prints one table per measurement and the ratios to FactGraSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import grass_rs
from grass_rs.capture import layers as L
from grass_rs.evaluation.tasks import cnn as cnn_task

F = nn.functional
METHODS = ("FactGraSS", "LoGra", "torch.func + GraSS", "torch.func + Gaussian")


def resnet9(width: int, classes: int = 10) -> nn.Module:
    """ResNet-9 (the GraSS paper's CIFAR model, from the CNN task); ``width=64`` is the original."""
    torch.manual_seed(0)
    return cnn_task.resnet9(width, classes).eval()


def round_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function over ``repeats`` round-robin rounds, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, round-robin, after one warm-up call each."""
    return {n: statistics.median(t) for n, t in round_times(fns, repeats).items()}


def conv_factors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple]:
    """Each Conv2d's ``(info, δ, input)`` for one batch (sum-reduced loss)."""
    saved: dict[str, list] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):

            def fwd(mod, args, out, name=name):
                saved[name] = [L.describe(name, mod), None, args[0].detach()]
                out.register_hook(lambda g, name=name: saved[name].__setitem__(1, g.detach()))

            hooks.append(m.register_forward_hook(fwd))
    F.cross_entropy(model(x), y, reduction="sum").backward()
    for h in hooks:
        h.remove()
    return {n: tuple(v) for n, v in saved.items()}


def bench_conv(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, repeats: int, per_layer: bool = False
) -> dict[str, list[float]]:
    """Seconds (one entry per round) to compress every conv layer's per-sample gradients of one
    batch, per method; with ``per_layer`` also FactGraSS / LoGra on each layer alone."""
    facs = conv_factors(model, x, y)
    side = int((4 * k) ** 0.5)
    fg = {n: grass_rs.FactGraSS(k, mask_dim=side * side).build(i) for n, (i, _, _) in facs.items()}
    lg = {n: grass_rs.LoGra(k).build(i) for n, (i, _, _) in facs.items()}
    full = {
        n: grass_rs.Full(grass_rs.GraSS, out_dim=k, mask_dim=4 * k).build(i) for n, (i, _, _) in facs.items()
    }

    def run(comps: dict, materialize: bool, only: str | None = None) -> None:
        for n, (info, go, xin) in facs.items():
            if only is not None and n != only:
                continue
            if materialize:
                comps[n].compress_full(L.materialize(info, go, xin))
            else:
                comps[n].compress_factors(go, xin)

    fns: dict[str, Callable[[], object]] = {
        "FactGraSS (factors)": lambda: run(fg, False),
        "LoGra (factors)": lambda: run(lg, False),
        "materialize + GraSS": lambda: run(full, True),
    }
    if per_layer:
        for n, (_, _, xin) in facs.items():
            shape = "x".join(map(str, xin.shape[1:]))
            fns[f"  {n} ({shape}) FactGraSS"] = lambda n=n: run(fg, False, n)
            fns[f"  {n} ({shape}) LoGra"] = lambda n=n: run(lg, False, n)
    return round_times(fns, repeats)


def conv_table(times: dict[str, list[float]]) -> None:
    """Prints the conv-compression table: median, spread, ratio to FactGraSS (per layer: to its FactGraSS)."""
    print("| conv layers: compression per batch | median ms | min–max ms | vs FactGraSS |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times["FactGraSS (factors)"])
    for name, t in times.items():
        if name.startswith("  "):
            base = statistics.median(times[name]) if name.endswith("FactGraSS") else base
        m = statistics.median(t)
        print(f"| {name} | {m * 1e3:.2f} | {min(t) * 1e3:.2f}–{max(t) * 1e3:.2f} | {m / base:.2f}x |")


def conv_child(args: argparse.Namespace) -> None:
    """Child process: the conv-compression rounds, as JSON."""
    model = resnet9(args.width)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    print(json.dumps(bench_conv(model, x, y, args.k, args.repeats, args.per_layer)))


def func_capture(model: nn.Module, kind: str, k: int) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """``torch.func`` per-sample gradients of every parameter, then ``kind`` per module."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    by_module: dict[str, list[str]] = {}
    for n in params:
        by_module.setdefault(n.rsplit(".", 1)[0], []).append(n)
    sizes = {m: sum(params[n].numel() for n in ns) for m, ns in by_module.items()}
    factory = grass_rs.ProjectorFactory(kind, k)
    projs = {m: factory(m, p) for m, p in sizes.items()}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))

    def capture(x: torch.Tensor, y: torch.Tensor) -> dict:
        g = per_sample(params, x, y)
        return {
            m: projs[m].project(torch.cat([g[n].flatten(1) for n in ns], dim=1))
            for m, ns in by_module.items()
        }

    return capture


def hook_capture(model: nn.Module, factory: grass_rs.CompressorFactory) -> Callable:
    handle = grass_rs.attach(model, factory, strict=True)
    params = list(model.parameters())

    def capture(x: torch.Tensor, y: torch.Tensor) -> dict:
        torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), params)
        return handle.gradients()  # type: ignore[return-value]

    return capture


def make_capture(method: str, model: nn.Module, k: int) -> Callable:
    if method == "FactGraSS":
        return hook_capture(model, grass_rs.FactGraSS(k))
    if method == "LoGra":
        return hook_capture(model, grass_rs.LoGra(k))
    return func_capture(model, "grass" if method.endswith("GraSS") else "gaussian", k)


def one_method(args: argparse.Namespace) -> None:
    """Child process: time and peak-RSS growth of one capture method; prints JSON."""
    model = resnet9(args.width)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    capture = make_capture(args.only, model, args.k)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = median_times({args.only: lambda: capture(x, y)}, args.repeats)[args.only]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"method": args.only, "s": t, "peak_mib": peak / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16, help="ResNet-9 width (64 = the original)")
    ap.add_argument("--k", type=int, default=256, help="k per layer (a perfect square, for LoGra)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--conv-only", action="store_true", help="only the conv-compression tables")
    ap.add_argument("--per-layer", action="store_true", help="also FactGraSS vs LoGra per conv layer")
    ap.add_argument("--only", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--conv-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return one_method(args)
    if args.conv_child:
        return conv_child(args)
    model = resnet9(args.width)
    p = sum(q.numel() for q in model.parameters())
    print(
        f"ResNet-9 width {args.width} ({p:,} parameters), batch {args.batch} x 3x32x32, "
        f"k={args.k} per layer, {torch.get_num_threads()} threads, {args.repeats} rounds"
    )
    child_args = [a for a in sys.argv[1:] if a != "--conv-only"]
    for policy in (None, "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy is not None:
            env["OMP_WAIT_POLICY"] = policy
        cmd = [sys.executable, __file__, "--conv-child", *child_args]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        print(f"\nOMP_WAIT_POLICY={policy or '(unset)'}")
        conv_table(json.loads(out))
    if args.conv_only:
        return
    rows = []
    for method in METHODS:
        cmd = [sys.executable, __file__, "--only", method, *child_args]
        rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    print("\n| capture per batch (fwd + bwd + compress) | ms | vs FactGraSS | peak RSS growth (MiB) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['s'] * 1e3:.0f} | {r['s'] / rows[0]['s']:.1f}x | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()

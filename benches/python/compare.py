"""The compare table: grass-rs CPU projectors vs pure-torch baselines, as ratios to the read floor.

Run: ``python benches/python/compare.py`` (``make bench``). Every number comes from this one run on
this machine; the floor is ``x.sum()`` over the same input (one streaming read of it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

# torch's OpenMP workers spin after each parallel op (OMP_WAIT_POLICY=active by default) and
# steal the cores grass-rs's rayon workers need when both pools share 2 cores; passive workers
# sleep instead. Set before torch is imported; applies to every row, the floor included.
# `--omp-default` keeps torch's default (what users get).
if "--omp-default" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

import grass_rs


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    # The minimum: on a shared VM the noise is one-sided (other tenants only ever slow a run down).
    return min(times)


def torch_sjlt(proj: grass_rs.SJLT) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pure-torch SJLT users write: one index_add_ per repeat (same matrix as grass-rs)."""
    buckets, signs = proj.columns()
    scale = proj.c**-0.5

    def run(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], proj.out_dim)
        for r in range(proj.c):
            out.index_add_(1, buckets[:, r], x * signs[:, r])
        return out * scale

    return run


CONSTRUCTION: list[tuple[float, ...]] = []


def measure(x: torch.Tensor, args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    """One pass over every row: (op, implementation, seconds, floor seconds measured just before)."""
    p, r = x.shape[1], args.repeat
    rows: list[tuple[str, str, float, float]] = []

    def add(name: str, impl: str, fn: Callable[[], object], rep: int = r) -> None:
        # The floor is re-measured next to every row, so each ratio is from the same moment.
        floor = timeit(lambda: x.sum(), 3)
        rows.append((name, impl, timeit(fn, rep), floor))

    cons = []
    for c in (1, 4):
        t0 = time.perf_counter()
        s = grass_rs.SJLT(p, 2048, c=c, seed=0)
        cons.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s(x)  # the first projection also builds the cached entry table
        cons.append(time.perf_counter() - t0)
        add(f"SJLT c={c} → 2048", "grass-rs", lambda s=s: s(x))
        ts = torch_sjlt(s)
        torch.testing.assert_close(ts(x), s(x), rtol=1e-4, atol=1e-4)
        add(f"SJLT c={c} → 2048", "torch index_add_", lambda ts=ts: ts(x), max(1, r // 2))
    CONSTRUCTION.append(tuple(cons))
    for k in (8192, 2048):
        m = grass_rs.Mask(p, k, seed=0)
        idx = m.indices
        add(f"MASK → {k}", "grass-rs", lambda m=m: m(x))
        add(f"MASK → {k}", "torch index_select", lambda idx=idx: x.index_select(1, idx))
        add(f"MASK → {k}", "torch x[:, sorted_idx]", lambda idx=idx: x[:, idx])
    g = grass_rs.GraSS(p, 2048, mask_dim=8192, seed=0)
    add("GraSS 8192 → 2048", "grass-rs", lambda: g(x))
    idx = grass_rs.Mask(p, 8192, seed=0).indices
    tg = torch_sjlt(grass_rs.SJLT(8192, 2048, seed=0))
    add("GraSS 8192 → 2048", "torch index_select+index_add_", lambda: tg(x.index_select(1, idx)))
    sr = grass_rs.SRHT(p, 2048, seed=0)
    add("SRHT → 2048", "grass-rs", lambda: sr(x))
    if not args.skip_dense:
        d = grass_rs.Gaussian(p, 2048, seed=0)
        add("Gaussian → 2048", "grass-rs (on the fly)", lambda: d(x), 1)
        gm = torch.randn(p, 2048) / 2048**0.5
        add("Gaussian → 2048", "torch matmul (stored matrix)", lambda: x @ gm, 3)
        add("Gaussian → 2048", "torch randn+matmul (on the fly)", lambda: x @ torch.randn(p, 2048), 1)
        del gm
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--in-dim", type=int, default=1 << 17)
    ap.add_argument("--big-in-dim", type=int, default=1 << 23)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip-dense", action="store_true", help="skip the (slow) dense rows")
    ap.add_argument("--skip-big", action="store_true", help="skip the in_dim 2^23 rows")
    ap.add_argument("--runs", type=int, default=1, help="repeat the table; print median [min-max] of x floor")
    ap.add_argument("--omp-default", action="store_true", help="do not set OMP_WAIT_POLICY=PASSIVE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grass_rs.set_num_threads(args.threads)
    b, p, r = args.batch, args.in_dim, args.repeat
    x = torch.randn(b, p)
    runs: list[list[tuple[str, str, float, float]]] = []
    for _ in range(args.runs):
        runs.append(measure(x, args))
    print(
        f"# grass-rs {grass_rs.__version__} compare — {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, batch {b} × in_dim {p} float32, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {args.runs} run(s)"
    )
    f0 = runs[-1][0][3]
    print(f"read floor x.sum(): {f0 * 1e3:.2f} ms ({x.numel() * 4 / f0 / 1e9:.1f} GB/s), last run\n")
    head = f"| {'op':<24} | {'implementation':<32} | {'time (ms)':>10} | {'× floor':>8} |"
    print(f"{head} {'median [min–max] × floor':>26} |")
    print(f"|{'-' * 26}|{'-' * 34}|{'-' * 12}|{'-' * 10}|{'-' * 28}|")
    for i, (name, impl, t, floor) in enumerate(runs[-1]):
        ratios = [run[i][2] / run[i][3] for run in runs]
        spread = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}–{max(ratios):.2f}]"
        print(f"| {name:<24} | {impl:<32} | {t * 1e3:>10.2f} | {t / floor:>8.2f} | {spread:>26} |")
    cons = [statistics.median(c[i] for c in CONSTRUCTION) for i in range(4)] if CONSTRUCTION else []
    if cons:
        print(
            f"\nconstructing SJLT({p}, 2048, c=1 / c=4): {cons[0] * 1e3:.3f} / {cons[2] * 1e3:.3f} ms; "
            f"its first projection (builds the cached entry table): {cons[1] * 1e3:.2f} / "
            f"{cons[3] * 1e3:.2f} ms (median of {len(CONSTRUCTION)})"
        )
    if args.skip_big:
        return
    big = torch.randn(b, args.big_in_dim)
    big_floor = timeit(lambda: big.sum(), 3)
    gb = grass_rs.GraSS(args.big_in_dim, 2048, mask_dim=8192, seed=0)
    t = timeit(lambda: gb(big), r)
    print(
        f"\nGraSS 8192 → 2048 at in_dim {args.big_in_dim}: {t * 1e3:.2f} ms vs read floor "
        f"{big_floor * 1e3:.2f} ms → {t / big_floor:.4f} × floor (sub-linear: reads only the mask)"
    )
    big = torch.empty(0)  # free the 2 GiB input before the next row
    one = torch.randn(args.big_in_dim)  # a single gradient vector
    one_floor = timeit(lambda: one.sum(), r)
    s1 = grass_rs.SJLT(args.big_in_dim, 2048, seed=0)
    t1 = timeit(lambda: s1(one), r)
    ts1 = torch_sjlt(s1)
    tt = timeit(lambda: ts1(one.unsqueeze(0)), 3)
    print(
        f"SJLT c=1 → 2048 of one vector of {args.big_in_dim}: {t1 * 1e3:.2f} ms = {t1 / one_floor:.1f} × "
        f"read floor ({one_floor * 1e3:.2f} ms); torch index_add_ {tt / one_floor:.1f} ×"
    )


if __name__ == "__main__":
    main()

"""The projectors on float32, bfloat16 and float16 input (what half-precision models produce).

Run: ``python benches/python/bench_dtypes.py [--batch 64] [--in-dim 131072] [--repeat 15] [--rounds 3]``.
Each cell is the median over rounds of each round's median time; the ratios are to the median
``x.sum()`` of the same tensor (its own read floor: half the bytes for 16-bit input) and to the float32
tensor's ``x.sum()``, both measured in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import grass_rs

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def median_ms(f: Callable[[], object], repeat: int) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--in-dim", type=int, default=1 << 17)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    p = args.in_dim
    projectors: dict[str, grass_rs.Projector] = {
        "SJLT c=1 → 2048": grass_rs.SJLT(p, 2048, c=1),
        "SJLT c=4 → 2048": grass_rs.SJLT(p, 2048, c=4),
        "MASK → 8192": grass_rs.Mask(p, 8192),
        "GraSS 8192 → 2048": grass_rs.GraSS(p, 2048, mask_dim=8192),
        "SRHT → 2048": grass_rs.SRHT(p, 2048),
    }
    x32 = torch.randn(args.batch, p, generator=torch.Generator().manual_seed(0))
    inputs = {dt: x32.to(dt) for dt in DTYPES}
    cells: dict[tuple[str, torch.dtype], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        base = median_ms(lambda: x32.sum(), args.repeat)
        for dt, x in inputs.items():
            own = median_ms(lambda x=x: x.sum(), args.repeat)
            for name, proj in projectors.items():
                ms = median_ms(lambda proj=proj, x=x: proj(x), args.repeat)
                cells.setdefault((name, dt), []).append((ms, ms / own, ms / base))
    print(
        f"# grass-rs {grass_rs.__version__} on {torch.get_num_threads()} threads, "
        f"batch {args.batch} × in_dim {p}, median of {args.rounds} rounds [min–max of the ms]"
    )
    print("| op | dtype | ms | × own x.sum() | × float32 x.sum() |")
    print("|---|---|---|---|---|")
    for (name, dt), rows in cells.items():
        ms = [r[0] for r in rows]
        own = statistics.median(r[1] for r in rows)
        f32 = statistics.median(r[2] for r in rows)
        dtype = str(dt).removeprefix("torch.")
        spread = f"{statistics.median(ms):.2f} [{min(ms):.2f}–{max(ms):.2f}]"
        print(f"| {name} | {dtype} | {spread} | {own:.2f} | {f32:.2f} |")


if __name__ == "__main__":
    main()

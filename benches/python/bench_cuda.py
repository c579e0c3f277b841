#!/usr/bin/env python3
"""GPU benchmark of grass-rs's CUDA path (builds nothing; needs a CUDA build and a GPU).

For batch 64 × in_dim 2²⁰..2²⁴ in float32 and bfloat16 it times, with CUDA events:

* the ceiling: device-to-device copy bandwidth (``dst.copy_(src)``, read + write);
* SJLT c=1 and c=4, MASK, GraSS and dense Gaussian/Rademacher projections, in atomic and
  deterministic mode where it matters (SJLT/GraSS);
* pure-PyTorch baselines: ``index_add_`` (SJLT, GraSS), ``index_select`` (MASK, GraSS) and
  ``matmul`` with a materialized matrix (dense, where it fits in memory).

Each row reports the time, the effective bandwidth over the input bytes the method must read
(``batch·in_dim`` for SJLT/dense, ``batch·mask_dim`` for MASK/GraSS) as a percentage of the copy
bandwidth, and the speed-up over the PyTorch baseline. Exits 0 with a message when no GPU.

    python benches/python/bench_cuda.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch

import grass_rs
from grass_rs import _core

BATCH = 64
K = 4096
DENSE_K = 512


def timeit(fn: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Median seconds per call, measured with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), iters=10)
    return 2 * nbytes / t


def sjlt_tables(proj: grass_rs.SJLT, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Buckets ``(p, c)`` int64 and signs ``(p, c)`` float32 of every column, read back with one
    adjoint: row ``r`` of ``y`` holds ``i + 1`` on block ``r`` of the buckets (where only repeat
    ``r`` lands) and 0 elsewhere, so ``(Pᵀy)[r, j] = ±(bucket + 1)/√c`` exactly in float64.
    (``proj.columns`` gives the same through Python lists, far too slowly for 2²⁴ columns.)"""
    k, c = proj.out_dim, proj.c
    y = torch.zeros(c, k, dtype=torch.float64, device=dev)
    for r in range(c):
        lo, hi = r * k // c, (r + 1) * k // c
        y[r, lo:hi] = torch.arange(lo + 1, hi + 1, dtype=torch.float64, device=dev)
    t = proj.transpose(y) * c**0.5  # (c, p)
    buckets = (t.abs().round() - 1).to(torch.int64).T.contiguous()
    signs = torch.sign(t).to(torch.float32).T.contiguous()
    return buckets, signs


def sjlt_baseline(
    proj: grass_rs.SJLT, x: torch.Tensor, cols: torch.Tensor | None = None
) -> Callable[[], object]:
    """out.index_add_ over precomputed buckets and signs (and an index_select for GraSS)."""
    buckets, signs = sjlt_tables(proj, x.device)
    signs = signs / proj.c**0.5

    def run() -> torch.Tensor:
        xs = x if cols is None else x.index_select(1, cols)
        out = torch.zeros(x.shape[0], proj.out_dim, device=x.device)
        for r in range(proj.c):
            out.index_add_(1, buckets[:, r], xs.float() * signs[:, r])
        return out

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="in_dim 2^20 only, fewer iterations")
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()

    if not grass_rs.cuda_available():
        why = "this build has no CUDA path" if not _core.CUDA_COMPILED else "no CUDA driver/device"
        print(f"bench_cuda: skipped: grass_rs.cuda_available() is False ({why})")
        return
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    bw = copy_bandwidth()
    print(f"device: {name}; copy bandwidth {bw / 1e9:.0f} GB/s (the ceiling)")
    rows: list[dict[str, object]] = []
    sizes = [1 << 20] if args.quick else [1 << 20, 1 << 22, 1 << 24]
    iters = 3 if args.quick else args.iters

    def report(
        method: str, dtype: torch.dtype, p: int, mode: str, t: float, read: int, base: float | None
    ) -> None:
        pct = read / t / bw * 100
        vs = f"{base / t:6.2f}x" if base else "    - "
        row = {
            "method": method,
            "dtype": str(dtype).removeprefix("torch."),
            "in_dim": p,
            "mode": mode,
            "ms": t * 1e3,
            "pct_copy_bw": pct,
            "torch_ms": base * 1e3 if base else None,
        }
        rows.append(row)
        print(
            f"{method:12s} {row['dtype']:8s} 2^{p.bit_length() - 1:<3d} {mode:13s} {t * 1e3:9.3f} ms "
            f"{pct:6.1f}% of copy BW   vs torch {vs}",
            flush=True,
        )

    print(f"{'method':12s} {'dtype':8s} {'p':5s} {'mode':13s} {'time':>12s} {'':>20s}")
    for dtype in (torch.float32, torch.bfloat16):
        size = torch.finfo(dtype).bits // 8
        for p in sizes:
            x = torch.randn(BATCH, p, device=dev, dtype=dtype)
            read_all = BATCH * p * size
            for c in (1, 4):
                proj = grass_rs.SJLT(p, K, c=c, seed=1)
                base = timeit(sjlt_baseline(proj, x), iters)
                for det in (False, True):
                    _core.set_deterministic(det)
                    t = timeit(lambda proj=proj, x=x: proj.project(x), iters)
                    report(f"sjlt c={c}", dtype, p, "deterministic" if det else "atomic", t, read_all, base)
            _core.set_deterministic(None)

            mask_dim = max(K, p // 16)
            mask = grass_rs.Mask(p, mask_dim, seed=1)
            idx = mask.indices.to(dev)
            base = timeit(lambda x=x, idx=idx: x.index_select(1, idx).float(), iters)
            t = timeit(lambda mask=mask, x=x: mask.project(x), iters)
            report("mask", dtype, p, "-", t, BATCH * mask_dim * size, base)

            grass = grass_rs.GraSS(p, K, mask_dim=mask_dim, c=1, seed=1)
            gidx = grass.indices.to(dev)
            inner = grass_rs.SJLT(mask_dim, K, c=1, seed=1)
            base = timeit(sjlt_baseline(inner, x, gidx), iters)
            for det in (False, True):
                _core.set_deterministic(det)
                t = timeit(lambda grass=grass, x=x: grass.project(x), iters)
                report(
                    "grass", dtype, p, "deterministic" if det else "atomic", t, BATCH * mask_dim * size, base
                )
            _core.set_deterministic(None)

            for cls in (grass_rs.Gaussian, grass_rs.Rademacher):
                dense = cls(p, DENSE_K, seed=1)
                base = None
                if DENSE_K * p * 4 <= 4 << 30 and p <= 1 << 20:
                    # materialize (k, p) on the GPU through the adjoint of the identity
                    g = dense.transpose(torch.eye(DENSE_K, device=dev)).contiguous()  # (k, p)
                    xf = x.float()
                    base = timeit(lambda g=g, xf=xf: xf @ g.T, iters)
                    del g, xf
                t = timeit(lambda dense=dense, x=x: dense.project(x), max(2, iters // 3), warmup=1)
                report(cls.__name__.lower(), dtype, p, "-", t, read_all, base)
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "copy_bw_bytes_per_s": bw, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

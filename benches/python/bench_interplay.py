"""torch's OpenMP pool vs grass-rs's rayon pool on few cores: the time of a grass-rs call made right
after a torch op, under torch's default OpenMP wait policy and with ``OMP_WAIT_POLICY=PASSIVE``, and
with grass-rs on 1 thread or on all cores.

Run: ``python benches/python/bench_interplay.py`` (each configuration in its own subprocess, because
the wait policy is read when torch loads OpenMP).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def child(threads: int) -> None:
    import torch

    import grass_rs

    torch.set_num_threads(2)
    grass_rs.set_num_threads(threads)
    x = torch.randn(64, 1 << 17)
    a = torch.randn(512, 512)
    s = grass_rs.SJLT(1 << 17, 2048, seed=0)
    s(x)
    alone, after = [], []
    for _ in range(30):
        t = time.perf_counter()
        s(x)
        alone.append(time.perf_counter() - t)
    for _ in range(30):
        a @ a  # a small parallel torch op; its OpenMP workers may keep spinning afterwards
        t = time.perf_counter()
        s(x)
        after.append(time.perf_counter() - t)
    torch_alone, torch_after = [], []
    for _ in range(30):
        t = time.perf_counter()
        a @ a
        torch_alone.append(time.perf_counter() - t)
    for _ in range(30):
        s(x)
        t = time.perf_counter()
        a @ a
        torch_after.append(time.perf_counter() - t)
    med = statistics.median
    print(
        f"{med(alone) * 1e3:.2f} {med(after) * 1e3:.2f} "
        f"{med(torch_alone) * 1e3:.3f} {med(torch_after) * 1e3:.3f}"
    )


def main() -> None:
    print(
        "| OMP_WAIT_POLICY | grass-rs threads | SJLT alone ms | SJLT after a@a ms "
        "| a@a alone ms | a@a after SJLT ms |"
    )
    print("|---|---|---|---|---|---|")
    for policy in ("(default)", "PASSIVE"):
        for threads in (2, 1):
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy != "(default)":
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run(
                [sys.executable, __file__, CHILD, str(threads)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            print(f"| {policy} | {threads} | {out[0]} | {out[1]} | {out[2]} | {out[3]} |")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == CHILD:
        child(int(sys.argv[2]))
    else:
        main()

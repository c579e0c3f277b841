"""torch's OpenMP team vs grass-rs's parallel work on few cores: the time of a grass-rs call made right
after a torch op (and of a torch op right after a grass-rs call), under torch's default OpenMP wait
policy and with ``OMP_WAIT_POLICY=PASSIVE``, with grass-rs's work on torch's OpenMP team (the
default) or on its own rayon pool, on 1 thread or on all cores.

Run: ``python benches/python/bench_interplay.py [--rounds 3]`` (each configuration in its own
subprocess, because the wait policy is read when torch loads OpenMP). Each cell is the median over
rounds of each round's median of 30 calls, with the spread over rounds in brackets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def child(backend: str, threads: int) -> None:
    import torch

    import grass_rs

    torch.set_num_threads(2)
    grass_rs.set_thread_backend(backend)
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


def cell(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.2f} [{min(values):.2f}–{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="subprocess rounds per configuration")
    rounds = parser.parse_args().rounds
    print(
        "| OMP_WAIT_POLICY | grass-rs backend | threads | SJLT alone ms | SJLT after a@a ms "
        "| a@a alone ms | a@a after SJLT ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for policy in ("(default)", "PASSIVE"):
        for backend in ("openmp", "rayon"):
            for threads in (2, 1):
                env = dict(os.environ)
                env.pop("OMP_WAIT_POLICY", None)
                if policy != "(default)":
                    env["OMP_WAIT_POLICY"] = policy
                runs = [
                    [
                        float(v)
                        for v in subprocess.run(
                            [sys.executable, __file__, CHILD, backend, str(threads)],
                            env=env,
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout.split()
                    ]
                    for _ in range(rounds)
                ]
                cols = " | ".join(cell([r[c] for r in runs]) for c in range(4))
                print(f"| {policy} | {backend} | {threads} | {cols} |")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == CHILD:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()

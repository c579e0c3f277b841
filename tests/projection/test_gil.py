"""The GIL is released while the core computes: Python threads run during a projection, and
two threads projecting at once overlap in time."""

from __future__ import annotations

import threading
import time

import torch

import grass_rs

P = 1 << 20


def _slow_call() -> tuple[grass_rs.Projector, torch.Tensor]:
    # A dense projection of this size takes 0.1-1 s in the core (about 46 ms per 8 rows on a quiet
    # 2-core CI machine): long enough for the counting thread to run many times if the GIL is free.
    return grass_rs.Gaussian(P // 16, 512, seed=1), torch.randn(32, P // 16)


def test_other_python_threads_run_during_a_projection() -> None:
    proj, x = _slow_call()
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)
    before = ticks
    start = time.perf_counter()
    proj(x)
    elapsed = time.perf_counter() - start
    during = ticks - before
    stop.set()
    t.join()
    # With the GIL held the counter could not move at all during the call.
    assert elapsed > 0.02 and during > 1000, (elapsed, during)


def test_two_threads_project_concurrently() -> None:
    # Many short parallel tasks (SJLT over sample groups) so the pool interleaves both callers.
    proj, x = grass_rs.SJLT(1 << 16, 1024, c=4, seed=1), torch.randn(1024, 1 << 16)
    small, xs = grass_rs.SJLT(4096, 64, seed=2), torch.randn(4, 4096)
    done = 0
    stop = threading.Event()

    def project_small() -> None:
        nonlocal done
        while not stop.is_set():
            small(xs)
            done += 1

    t = threading.Thread(target=project_small)
    t.start()
    time.sleep(0.05)
    before = done
    proj(x)
    during = done - before
    stop.set()
    t.join()
    # Had the long projection held the GIL, the other thread could not finish a single call.
    assert during >= 2, during


def test_fork_safety() -> None:
    # DataLoader workers fork: a child of a process whose pool is running must not deadlock on
    # threads that did not survive the fork (grass-rs rebuilds its pool in the child).
    import multiprocessing as mp

    proj, x = grass_rs.SJLT(50_000, 256, c=2, seed=3), torch.randn(16, 50_000)
    want = proj(x)  # the parent's pool is up
    ctx = mp.get_context("fork")
    child = ctx.Process(target=_child_project, args=(proj, x, want))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child deadlocked"
    assert child.exitcode == 0, "the forked child computed a different projection"


def _child_project(proj: grass_rs.Projector, x: torch.Tensor, want: torch.Tensor) -> None:
    import os

    os._exit(0 if torch.equal(proj(x), want) else 3)

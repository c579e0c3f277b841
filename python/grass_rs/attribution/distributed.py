"""torch.distributed helpers: data sharding, Fisher all-reduce, score gathering, a spawn launcher.

Sharding is DDP-style but *contiguous*: rank ``r`` of ``w`` gets examples
``[r·n // w, (r+1)·n // w)``, so concatenating the ranks' score columns in rank order gives the
single-process column order. Works with ``gloo`` (CPU) and ``nccl`` (tensors are moved to the
current CUDA device for the collective).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_gather_columns", "all_reduce_sum", "launch", "rank_and_world", "shard_range"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, rank: int, world: int) -> range:
    """The contiguous slice of ``range(n)`` that ``rank`` owns."""
    return range(rank * n // world, (rank + 1) * n // world)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over every rank (returns a new CPU tensor; identity without a process group)."""
    if rank_and_world()[1] == 1:
        return t.clone()
    buf = t.detach().to(_comm_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def all_gather_columns(local: torch.Tensor) -> torch.Tensor:
    """Concatenates every rank's ``(rows, cols_r)`` block along columns, in rank order.

    Blocks may have different column counts (they are padded for the collective).
    """
    _, world = rank_and_world()
    if world == 1:
        return local
    dev = _comm_device()
    widths = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world)]
    dist.all_gather(widths, torch.tensor([local.shape[1]], dtype=torch.int64, device=dev))
    width = max(int(w) for w in widths)
    padded = torch.zeros(local.shape[0], width, dtype=local.dtype, device=dev)
    padded[:, : local.shape[1]] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:, : int(w)].cpu() for p, w in zip(parts, widths, strict=True)], dim=1)


def barrier() -> None:
    """``dist.barrier()`` when a process group exists."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def _worker(
    rank: int, world: int, init_file: str, backend: str, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, *args: Any, backend: str | None = None) -> None:
    """Runs ``fn(*args)`` in ``nproc`` spawned processes sharing a process group.

    Args:
        fn: a picklable (module-level) function; inside, use :func:`rank_and_world`.
        nproc: number of processes (1 runs ``fn`` in this process, no group).
        *args: arguments for ``fn``.
        backend: ``"gloo"`` (default on CPU) or ``"nccl"``.
    """
    if nproc <= 1:
        fn(*args)
        return
    backend = backend or "gloo"
    fd, init_file = tempfile.mkstemp(prefix="grass_rs_dist_")
    os.close(fd)
    os.unlink(init_file)
    try:
        torch.multiprocessing.spawn(
            _worker, args=(nproc, init_file, backend, fn, args), nprocs=nproc, join=True
        )
    finally:
        if os.path.exists(init_file):
            os.unlink(init_file)

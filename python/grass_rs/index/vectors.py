"""The index's gradient matrix on disk: one raw row-major ``(rows, dim)`` file, read in blocks.

``vectors.bin`` holds every training example's compressed gradients, layers side by side (index
``layers`` order), rows in dataset order, as float32, float16 or bfloat16 (bfloat16 stored as its
16-bit pattern). A SHA-256 per block of ``check_rows`` rows lets :func:`verify` find corruption.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgumentError, StoreError

__all__ = ["DTYPES", "VectorFile", "itemsize", "to_storage"]

DTYPES = ("float32", "float16", "bfloat16")
_NP = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
CHECK_BYTES = 16 << 20


def itemsize(dtype: str) -> int:
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"index dtype must be one of {DTYPES}, got {dtype!r}")
    return 4 if dtype == "float32" else 2


def to_storage(x: torch.Tensor, dtype: str) -> np.ndarray:
    """float32 rows → the storage dtype's numpy array (bfloat16 as uint16 bit patterns)."""
    x = x.detach().to("cpu", torch.float32).contiguous()
    if dtype == "float32":
        return x.numpy()
    if dtype == "float16":
        return x.to(torch.float16).numpy()
    return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def from_storage(buf: np.ndarray, dtype: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Storage rows → float32 tensor (into ``out`` when given; no copy for float32 without ``out``)."""
    if dtype == "float32":
        t = torch.from_numpy(buf)
    elif dtype == "float16":
        t = torch.from_numpy(buf)
    else:
        t = torch.from_numpy(buf.view(np.int16)).view(torch.bfloat16)
    if out is None:
        return t if dtype == "float32" else t.float()
    out.copy_(t)
    return out


def check_rows_for(dim: int, dtype: str) -> int:
    return max(1, CHECK_BYTES // (dim * itemsize(dtype)))


class VectorFile:
    """Read access to ``vectors.bin``.

    Args:
        path: the file.
        rows, dim, dtype: its shape and storage dtype (from ``index.json``).

    Raises:
        StoreError: the file is missing or its size does not match ``rows × dim``.
    """

    def __init__(self, path: Path, rows: int, dim: int, dtype: str) -> None:
        self.path, self.rows, self.dim, self.dtype = path, int(rows), int(dim), dtype
        self.row_bytes = self.dim * itemsize(dtype)
        if not path.is_file():
            raise StoreError(f"index is corrupt: {path.name} is missing")
        size = path.stat().st_size
        if size != self.rows * self.row_bytes:
            raise StoreError(
                f"index is corrupt: {path.name} has {size} bytes, expected {self.rows} rows × "
                f"{self.dim} × {itemsize(dtype)} = {self.rows * self.row_bytes} (truncated or overwritten?)"
            )

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as a float32 tensor (small reads, tests)."""
        buf = np.empty((stop - start, self.dim), dtype=_NP[self.dtype])
        with open(self.path, "rb") as f:
            f.seek(start * self.row_bytes)
            _read_into(f, buf)
        return from_storage(buf, self.dtype).clone()

    def blocks(self, block_rows: int, *, prefetch: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, raw block)`` over the file; two reused buffers, the next one read by a thread
        while the caller works on the current one (the yielded array is valid until the next step).
        """
        block_rows = max(1, min(int(block_rows), self.rows))
        bufs = [np.empty((block_rows, self.dim), dtype=_NP[self.dtype]) for _ in range(2 if prefetch else 1)]
        starts = list(range(0, self.rows, block_rows))
        with open(self.path, "rb", buffering=0) as f:

            def load(i: int) -> np.ndarray:
                start = starts[i]
                n = min(block_rows, self.rows - start)
                view = bufs[i % len(bufs)][:n]
                _pread_into(f.fileno(), view, start * self.row_bytes)
                return view

            if not prefetch:
                for i, start in enumerate(starts):
                    yield start, load(i)
                return
            result: dict[int, Any] = {}

            def worker(i: int) -> None:
                try:
                    result[i] = load(i)
                except BaseException as e:  # re-raised in the caller
                    result[i] = e

            t = threading.Thread(target=worker, args=(0,))
            t.start()
            for i, start in enumerate(starts):
                t.join()
                cur = result.pop(i)
                if isinstance(cur, BaseException):
                    raise cur
                if i + 1 < len(starts):
                    t = threading.Thread(target=worker, args=(i + 1,))
                    t.start()
                yield start, cur

    def checksums(self) -> list[str]:
        """SHA-256 of every block of :func:`check_rows_for` rows."""
        rows = check_rows_for(self.dim, self.dtype)
        out = []
        with open(self.path, "rb") as f:
            while True:
                data = f.read(rows * self.row_bytes)
                if not data:
                    break
                out.append(hashlib.sha256(data).hexdigest())
        return out


def _read_into(f: Any, arr: np.ndarray) -> None:
    mv = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    got = 0
    while got < len(mv):
        n = f.readinto(mv[got:])
        if not n:
            raise StoreError("index is corrupt: vectors file ended early")
        got += n


def _pread_into(fd: int, arr: np.ndarray, offset: int) -> None:
    mv = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], offset + got)
        if not n:
            raise StoreError("index is corrupt: vectors file ended early")
        got += n

"""Exact streaming top-K: scores ``Q · Vᵀ`` block by block with RAM bounded by a budget.

``Q`` is ``(n_q, dim)`` (preconditioned query gradients), ``V`` the index's ``(rows, dim)`` vectors.
Each block of ``V`` is read into a reused buffer (a second one is filled by a thread meanwhile),
scored with one matrix product and merged into a running top-K of the largest (helpful) and
smallest (harmful) scores — exact, the same answer as scoring all rows at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidArgumentError
from .vectors import VectorFile, from_storage, itemsize

__all__ = ["MIN_BLOCK", "TopK", "block_rows_for", "parse_bytes", "stream_topk"]

#: Fewest rows per block (the budget's floor is about ``MIN_BLOCK × dim × 12`` bytes).
MIN_BLOCK = 256

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
}


def parse_bytes(text: str | int) -> int:
    """``"512MB"``, ``"2G"``, ``"65536"`` → bytes (binary units).

    Raises:
        InvalidArgumentError: not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip().upper().replace("IB", "B")
        num = s.rstrip("KMGB")
        unit = s[len(num) :]
        try:
            value = int(float(num) * _UNITS[unit])
        except (ValueError, KeyError):
            raise InvalidArgumentError(f"cannot read a memory size from {text!r} (e.g. 512MB, 2GB)") from None
    if value <= 0:
        raise InvalidArgumentError(f"a memory budget must be > 0, got {text!r}")
    return value


@dataclass
class TopK:
    """Per query: ``helpful`` rows by decreasing score, ``harmful`` by increasing score."""

    helpful: torch.Tensor
    helpful_scores: torch.Tensor
    harmful: torch.Tensor
    harmful_scores: torch.Tensor


def block_rows_for(budget: int, dim: int, dtype: str, n_queries: int, top: int) -> int:
    """Rows per block so that the buffers of one step fit ``budget`` bytes.

    Per row: two raw buffers (read-ahead), a float32 copy (16-bit storage), the ``n_q`` scores and
    the top-K merge's values and indices (×2 directions).
    """
    per_row = 2 * dim * itemsize(dtype) + (0 if dtype == "float32" else 4 * dim) + n_queries * (4 + 2 * 12)
    fixed = n_queries * top * 2 * 2 * 12
    return max(1, (budget - fixed) // per_row)


def _merge(
    vals: torch.Tensor | None, idx: torch.Tensor | None, s: torch.Tensor, start: int, top: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    k = min(top, s.shape[1])
    bv, bi = torch.topk(s, k, dim=1, largest=largest, sorted=False)
    bi = bi + start
    if vals is None or idx is None:
        return bv, bi
    cv, ci = torch.cat([vals, bv], dim=1), torch.cat([idx, bi], dim=1)
    k = min(top, cv.shape[1])
    v, j = torch.topk(cv, k, dim=1, largest=largest, sorted=False)
    return v, torch.gather(ci, 1, j)


def _sorted(vals: torch.Tensor, idx: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # ties broken by row index so the order never depends on block boundaries
    order = torch.argsort(idx, dim=1, stable=True)
    vals, idx = torch.gather(vals, 1, order), torch.gather(idx, 1, order)
    order = torch.argsort(vals, dim=1, descending=largest, stable=True)
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)


def stream_topk(
    vectors: VectorFile,
    queries: torch.Tensor,
    top: int,
    *,
    budget: int | None = None,
    block_rows: int | None = None,
    prefetch: bool = True,
) -> TopK:
    """The ``top`` highest and lowest ``queries @ vectorsᵀ`` per query, streaming over ``vectors``.

    Args:
        vectors: the index's vector file.
        queries: ``(n_q, dim)`` float32.
        top: how many of each direction (clipped to the number of rows).
        budget: bytes for the block buffers (see :func:`block_rows_for`); ``None`` with
            ``block_rows=None``: every row in one block (the in-memory path).
        block_rows: rows per block (overrides ``budget``; at least :data:`MIN_BLOCK`).
        prefetch: read the next block in a thread while scoring the current one.
    """
    if top < 1:
        raise InvalidArgumentError(f"`top` must be ≥ 1, got {top}")
    q = queries.detach().to("cpu", torch.float32).contiguous()
    if q.ndim != 2 or q.shape[1] != vectors.dim:
        raise InvalidArgumentError(f"queries must be (n, {vectors.dim}), got {tuple(q.shape)}")
    if block_rows is None:
        block_rows = (
            vectors.rows
            if budget is None
            else block_rows_for(budget, vectors.dim, vectors.dtype, q.shape[0], top)
        )
    # below MIN_BLOCK rows BLAS switches to matrix-vector kernels that round differently; keeping every
    # block at least this tall makes the streamed scores bit-identical to one in-memory product
    block_rows = max(min(MIN_BLOCK, vectors.rows), min(block_rows, vectors.rows))
    conv = None if vectors.dtype == "float32" else torch.empty(block_rows, vectors.dim, dtype=torch.float32)
    scores = torch.empty(q.shape[0], block_rows, dtype=torch.float32)
    hv = hi = lv = li = None
    for start, raw in vectors.blocks(block_rows, prefetch=prefetch):
        n = raw.shape[0]
        v = from_storage(raw, vectors.dtype, None if conv is None else conv[:n])
        s = torch.mm(q, v.T, out=scores[:, :n]) if n == block_rows else q @ v.T
        hv, hi = _merge(hv, hi, s, start, top, True)
        lv, li = _merge(lv, li, s, start, top, False)
    assert hv is not None and hi is not None and lv is not None and li is not None
    hv, hi = _sorted(hv, hi, True)
    lv, li = _sorted(lv, li, False)
    return TopK(hi, hv, li, lv)

"""The Rust kernels of per-sample capture, and their torch fallbacks.

* :func:`gather_columns` — ``t[..., idx]`` (Rust parallel gather on CPU);
* :func:`masked_outer` — the masked block ``Σ_t δ_t[rows] ⊗ x̃_t[cols]`` of each sample's gradient
  (FactGraSS), one fused Rust call on CPU (optionally projected by the layer's SJLT in the same
  pass), gather + ``bmm`` elsewhere;
* :func:`input_project`, :func:`outer_sum` — LoGra's dense factor projection and per-sample
  outer-product sum;
* :func:`conv_masked_outer` — FactGraSS's masked block of a convolution, one fused Rust call on
  CPU that gathers the kept im2col columns straight from the NCHW input (zero padding included)
  and the kept rows of the NCHW output gradient, chunk by chunk of output positions;
* :func:`patch_index`, :func:`gather_patches` — the same columns gathered in torch by index
  arithmetic (other devices), without forming the unfold;
* :func:`conv_input_project` — LoGra's projection of every im2col patch, computed as a convolution
  whose kernels are the projection's rows.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _core
from ..projection.projectors import SJLT, apply_projector
from .layers import LayerInfo, conv_out_size

__all__ = [
    "conv_input_project",
    "conv_masked_outer",
    "gather_columns",
    "gather_patches",
    "input_project",
    "masked_outer",
    "outer_sum",
    "patch_index",
]

Tensor = torch.Tensor


def gather_columns(t: Tensor, idx: Tensor) -> Tensor:
    """``t[..., idx]``: ``(..., d)`` → ``(..., len(idx))``.

    float32/float64 CPU tensors go through the Rust core's parallel gather (about twice as fast
    as ``index_select`` here); others through a 2-D ``index_select`` (several times faster than
    indexing the last dimension of a 3-D tensor).
    """
    flat = t.reshape(-1, t.shape[-1])
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64) and not flat.requires_grad:
        out = torch.empty(flat.shape[0], idx.numel(), dtype=flat.dtype)
        _core.gather_columns(flat.contiguous(), idx.tolist(), out)
    else:
        out = flat.index_select(1, idx)
    return out.view(*t.shape[:-1], idx.numel())


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fused_ok(go: Tensor, x: Tensor, dtype: torch.dtype) -> bool:
    """Whether the Rust fused gather + outer-product kernel applies (CPU, no autograd, a float dtype)."""
    return (
        go.device.type == "cpu"
        and x.device.type == "cpu"
        and go.dtype in _FUSED_DTYPES
        and x.dtype in _FUSED_DTYPES
        and not (go.requires_grad or x.requires_grad)
        and go.shape[1] > 0
    )


def masked_outer(
    info: LayerInfo,
    go: Tensor,
    x: Tensor,
    rows: Tensor,
    cols: Tensor,
    bias_col: bool,
    dtype: torch.dtype,
    lists: tuple[list[int], list[int]] | None = None,
    project: SJLT | None = None,
) -> Tensor:
    """The block ``G[rows][:, cols (+ bias column)]`` of each sample's gradient, from the factors.

    Computes ``Σ_t δ_t[rows] x̃_t[cols]ᵀ``; the bias column (``x̃ = 1``) is ``Σ_t δ_t[rows]``, appended
    last when ``bias_col``. The full gradient is never formed. On CPU this is one Rust call that
    gathers token chunks straight into a register-blocked outer-product kernel (the gathered
    factors are never stored); elsewhere a gather and a ``bmm``.

    Args:
        info: a matrix layer.
        go: ``(batch, T, d_out)``.
        x: ``(batch, T, d_in)`` (Embedding: ids ``(batch, T)``; its masked one-hot vector is the
            membership test ``x == cols[j]``).
        rows: ``(s_out,)`` increasing int64 indices into ``d_out``.
        cols: ``(s_in,)`` increasing int64 indices into ``d_in`` (without the bias column).
        bias_col: append the bias column.
        dtype: compute dtype.
        lists: ``(rows.tolist(), cols.tolist())`` cached by the caller (saves two conversions per call).
        project: an SJLT from the block size: return ``project`` of the blocks instead, computed in
            the same pass on CPU (each block projected by the worker that summed it, while it is
            in that core's cache; the same bits as projecting the blocks after).

    Returns:
        ``(batch, s_out · (s_in + bias_col))``, row-major; with ``project``, ``(batch, k)``.
    """
    if info.kind != "embedding" and _fused_ok(go, x, dtype):
        if go.dtype != x.dtype:
            go, x = go.to(dtype), x.to(dtype)
        batch, tokens = go.shape[0], go.shape[1]
        row_list, col_list = lists if lists is not None else (rows.tolist(), cols.tolist())
        width = rows.numel() * (cols.numel() + int(bias_col)) if project is None else project.out_dim
        out = torch.empty(batch, width, dtype=dtype)
        _core.masked_outer(
            go.reshape(batch * tokens, -1).contiguous(),
            x.reshape(batch * tokens, -1).contiguous(),
            tokens,
            row_list,
            col_list,
            bias_col,
            out,
            None if project is None else project._core,
        )
        return out
    a = gather_columns(go, rows).to(dtype)
    b = (x.unsqueeze(-1) == cols).to(dtype) if info.kind == "embedding" else gather_columns(x, cols).to(dtype)
    z = torch.bmm(a.transpose(1, 2), b)
    if bias_col:
        z = torch.cat([z, a.sum(1).unsqueeze(-1)], dim=2)
    z = z.reshape(go.shape[0], -1)
    return z if project is None else apply_projector(project, z)


def input_project(info: LayerInfo, x: Tensor, p_in: Tensor) -> Tensor:
    """``x̃ @ p_inᵀ`` for the bias-augmented input: ``(batch, T, d_in)`` → ``(batch, T, s)``.

    Args:
        info: a matrix layer.
        x: ``(batch, T, d_in)`` (Embedding: ids ``(batch, T)``).
        p_in: ``(s, d_in_aug)`` dense matrix, in the compute dtype and on ``x``'s device.
    """
    if info.kind == "embedding":
        return nn.functional.embedding(x, p_in.T)
    out = torch.matmul(x.to(p_in.dtype), p_in[:, : info.d_in].T)
    return out + p_in[:, info.d_in] if info.bias else out


def outer_sum(a: Tensor, b: Tensor) -> Tensor:
    """``Σ_t a_t b_tᵀ`` per sample, flattened row-major: ``(B, T, m), (B, T, n)`` → ``(B, m·n)``."""
    return torch.bmm(a.transpose(1, 2), b).reshape(a.shape[0], -1)


def patch_index(info: LayerInfo, cols: Tensor, h_pad: int, w_pad: int) -> Tensor:
    """Flat offsets into one sample's padded input of the im2col entries ``cols`` at every position.

    Column ``j = (c · kh + ky) · kw + kx`` (``F.unfold``'s order) of the patch at output position
    ``(oy, ox)`` is ``x_pad[c, oy · sh + ky · dh, ox · sw + kx · dw]``, i.e. the flat offset
    ``base[j] + off[oy, ox]`` with ``base[j] = (c · H_pad + ky · dh) · W_pad + kx · dw`` and
    ``off = oy · sh · W_pad + ox · sw``.

    Args:
        info: a ``"conv"`` layer.
        cols: ``(s,)`` int64 im2col columns in ``[0, C_in · kh · kw)``.
        h_pad, w_pad: the padded input's height and width.

    Returns:
        ``(L, s)`` int64 offsets into ``x_pad[b].flatten()``, positions in row-major order.
    """
    geo = info.conv
    assert geo is not None
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    h_out = (h_pad - dh * (kh - 1) - 1) // sh + 1
    w_out = (w_pad - dw * (kw - 1) - 1) // sw + 1
    c, rest = cols // (kh * kw), cols % (kh * kw)
    base = (c * h_pad + (rest // kw) * dh) * w_pad + (rest % kw) * dw
    dev = cols.device
    off = (torch.arange(h_out, device=dev) * sh * w_pad)[:, None] + torch.arange(w_out, device=dev) * sw
    return off.reshape(-1, 1) + base


def gather_patches(x_pad: Tensor, index: Tensor) -> Tensor:
    """The chosen im2col columns of every sample: ``(B, C, H_pad, W_pad)``, ``(L, s)`` → ``(B, L, s)``.

    Reads ``B · L · s`` input values (the full unfold would be ``B · L · C · kh · kw``)."""
    flat = x_pad.reshape(x_pad.shape[0], -1)
    return gather_columns(flat, index.reshape(-1)).view(x_pad.shape[0], *index.shape)


def conv_input_project(info: LayerInfo, x_pad: Tensor, p_in: Tensor) -> Tensor:
    """``x̃_pos @ p_inᵀ`` for every bias-augmented im2col patch, as one convolution.

    Args:
        info: a ``"conv"`` layer.
        x_pad: ``(B, C_in, H_pad, W_pad)`` padded input, in ``p_in``'s dtype.
        p_in: ``(s, C_in · kh · kw [+1])`` dense matrix.

    Returns:
        ``(B, L, s)``.
    """
    geo = info.conv
    assert geo is not None
    w = p_in[:, : info.d_in].reshape(p_in.shape[0], -1, *geo.kernel)
    b = p_in[:, info.d_in] if info.bias else None
    y = nn.functional.conv2d(x_pad, w, b, stride=geo.stride, dilation=geo.dilation)
    return y.flatten(2).transpose(1, 2)


def conv_masked_outer(
    info: LayerInfo,
    go: Tensor,
    x: Tensor,
    rows: list[int],
    cols: list[int],
    bias_col: bool,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    project: SJLT | None = None,
) -> Tensor | None:
    """FactGraSS's masked block of a convolution from its channel-first factors, one fused Rust
    call (CPU).

    ``out[b] = Σ_pos δ[b, rows, pos] ⊗ [patch_pos(x[b])[cols], 1 if bias_col]``: each kept im2col
    column is read from the input at every output position by index arithmetic, zero outside the
    input; neither the unfold, the padded input nor a position-major copy of ``δ`` is formed.

    Args:
        info: a ``"conv"`` layer.
        go: ``(batch, C_out, H_out, W_out)`` or ``(batch, C_out, H_out · W_out)`` output gradients
            (a contiguous tensor is read in place).
        x: ``(batch, C_in, H, W)`` input (height 1 for a Conv1d), zero padded on the fly by ``pad``.
        rows: kept output channels; cols: kept im2col columns ``(c · kh + ky) · kw + kx``.
        bias_col: append the bias column (``Σ_pos δ[rows]``).
        pad: zero padding ``(top, bottom, left, right)``.
        project: an SJLT from the block size: return ``project`` of the blocks, computed in the
            same pass (as :func:`masked_outer`).

    Returns:
        ``(batch, len(rows) · (len(cols) + bias_col))`` (float64 if either factor is float64, else
        float32; ``(batch, k)`` with ``project``), or ``None`` when the fused kernel does not apply
        (not CPU, autograd, a dtype it does not read, or factors whose shapes do not match: the
        caller's general path reports it).
    """
    geo = info.conv
    assert geo is not None
    fused = getattr(_core, "conv_masked_outer", None)  # None in an extension built before it
    if fused is None or x.ndim != 4 or go.ndim < 2 or x.shape[0] == 0 or not _fused_ok(go, x, go.dtype):
        return None
    batch, c_in, h, w = (int(v) for v in x.shape)
    h_out, w_out = conv_out_size(geo, h + pad[0] + pad[1], w + pad[2] + pad[3])
    positions = h_out * w_out
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    if (
        c_in * kh * kw != info.d_in
        or tuple(go.shape[:2]) != (batch, info.d_out)
        or min(h_out, w_out) < 1
        or tuple(go.shape[2:]) not in ((h_out, w_out), (h_out * w_out,))
    ):
        return None
    dtype = torch.float64 if torch.float64 in (go.dtype, x.dtype) else torch.float32
    if go.dtype != x.dtype:
        go, x = go.to(dtype), x.to(dtype)
    width = len(rows) * (len(cols) + int(bias_col)) if project is None else project.out_dim
    out = torch.empty(batch, width, dtype=dtype)
    geometry = [batch, c_in, h, w, info.d_out, h_out, w_out, kh, kw, sh, sw, dh, dw, pad[0], pad[2]]
    fused(
        go.reshape(batch * info.d_out, positions).contiguous(),
        x.reshape(batch * c_in, h * w).contiguous(),
        geometry,
        rows,
        cols,
        bias_col,
        out,
        None if project is None else project._core,
    )
    return out

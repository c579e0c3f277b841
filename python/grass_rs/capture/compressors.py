"""Per-layer gradient compressors: :class:`FactGraSS`, :class:`LoGra` and :class:`Full`.

A *factory* (``FactGraSS(k)``, ``LoGra(k)``, ``Full(GraSS, out_dim=k, mask_dim=...)``) builds one
:class:`LayerCompressor` per layer (see :func:`grass_rs.attach`). Each built compressor maps a
layer's per-sample gradient (conventions in :mod:`grass_rs.layers`) to ``k`` numbers in two
equivalent ways:

* ``compress_full(G)`` — from the materialized gradients ``(batch, *grad_shape)``;
* ``compress_factors(grad_output, layer_input)`` — from the factors a hook sees, never forming ``G``.

Both give the same ``(batch, k)`` tensor (float64 for float64 input, float32 otherwise).

Seeds: each layer's projectors are seeded from ``(seed, layer name, part)`` through BLAKE2b
(:func:`layer_seed`), so a model and a seed give the same compression in every run and process.

Vector layers — LayerNorm (a gradient vector of ``p = 2d`` entries, cheap to form exactly), RMSNorm
(``p = d``) and modules captured by the generic fallback (their flattened parameter gradients) —
are compressed by a projector applied to that vector: FactGraSS uses ``GraSS(p, k, mask_dim=k', c)``
when ``p > k'`` and ``SJLT(p, k, c)`` otherwise; LoGra uses ``Gaussian(p, k)``; Full uses its projector.

Memory per layer and batch: FactGraSS ``O(batch · (T · √k' + k'))`` temporaries, LoGra
``O(batch · (T · √k + k))``, Full ``O(batch · p)``. Devices: the torch parts run on the factors'
device; the Rust projectors run there too when :func:`grass_rs.cuda_available`, otherwise the
(small) projector input is copied to the CPU and back.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from .._validate import positive_int
from .._validate import seed as check_seed
from ..errors import ArgumentTypeError, InvalidArgumentError
from ..projection import KINDS as PROJECTOR_KINDS
from ..projection import (
    SJLT,
    Gaussian,
    GraSS,
    Mask,
    Projector,
    ProjectorFactory,
    apply_projector,
    dense_matrix,
    layer_seed,
)
from . import kernels as K
from . import layers as L
from .layers import LayerInfo

__all__ = [
    "CompressorFactory",
    "FactGraSS",
    "FactGraSSCompressor",
    "Full",
    "FullCompressor",
    "LayerCompressor",
    "LoGra",
    "LoGraCompressor",
    "PerLayerProjectors",
    "RawCompressor",
    "VectorCompressor",
    "make_compressor",
]

Tensor = torch.Tensor


def _perfect_sqrt(n: int) -> int | None:
    r = math.isqrt(n)
    return r if r * r == n else None


class LayerCompressor(abc.ABC):
    """Compresses one layer's per-sample gradients to ``out_dim`` numbers.

    Attributes:
        layer: the layer it was built for.
        in_dim: ``p``, the size of one sample's gradient.
        out_dim: ``k``.
    """

    def __init__(self, layer: LayerInfo, out_dim: int) -> None:
        self.layer = layer
        self.in_dim = layer.grad_size
        self.out_dim = out_dim

    def compress_full(self, grad: Tensor) -> Tensor:
        """Compresses materialized per-sample gradients.

        Args:
            grad: ``(batch, d_out, d_in[+1])`` for matrix layers, ``(batch, p)`` for LayerNorm
                (any ``(batch, ...)`` with ``p`` entries per sample is reshaped), float dtype.

        Returns:
            ``(batch, k)``, float64 for float64 input, float32 otherwise.

        Raises:
            TypeError: not a float tensor.
            ValueError: wrong number of entries per sample.
        """
        if not isinstance(grad, Tensor) or not grad.is_floating_point():
            raise ArgumentTypeError(f"layer {self.layer.name!r}: `grad` must be a float torch tensor")
        if grad.ndim < 2 or math.prod(grad.shape[1:]) != self.in_dim:
            shape = ", ".join(map(str, self.layer.grad_shape))
            raise InvalidArgumentError(
                f"layer {self.layer.name!r}: `grad` must have shape (batch, {shape}) "
                f"({self.in_dim} entries per sample), got {tuple(grad.shape)}"
            )
        return self._full(grad.reshape(grad.shape[0], *self.layer.grad_shape))

    def compress_factors(self, grad_output: Tensor, layer_input: Tensor) -> Tensor:
        """Compresses per-sample gradients given as factors, without materializing them.

        Args:
            grad_output: ``(batch, [T,] d_out)``, gradient of the loss w.r.t. the layer output with
                per-sample scaling already applied.
            layer_input: ``(batch, [T,] d_in)`` layer input (no bias column: it is added here);
                Embedding: integer ids ``(batch, [T])``; LayerNorm: the normalized input ``x̂``.

        Returns:
            ``(batch, k)``, equal to ``compress_full`` of the materialized gradient.
        """
        if self.layer.kind == "module":
            raise InvalidArgumentError(
                f"layer {self.layer.name!r} is captured by the generic fallback and has no factors; "
                "use compress_full on its flattened parameter gradients"
            )
        if self.layer.kind == "conv":
            return self._conv(*L.conv_factors(self.layer, grad_output, layer_input))
        go, x = L.factors(self.layer, grad_output, layer_input)
        if self.layer.is_vector:
            return self._full(L.layernorm_grad(self.layer, go, x))
        return self._factors(go, x)

    @abc.abstractmethod
    def _full(self, grad: Tensor) -> Tensor: ...

    def _factors(self, go: Tensor, x: Tensor) -> Tensor:
        """From token-form factors ``(B, T, d_out)``, ``(B, T, d_in)`` (default: materialize)."""
        return self._full(L.token_grad(self.layer, go, x))

    def _conv(self, go: Tensor, x_pad: Tensor) -> Tensor:
        """From a convolution's ``(B, L, C_out)`` output gradients and ``(B, C_in, H_pad, W_pad)``
        padded input (default: unfold, then :meth:`_factors`)."""
        return self._factors(go, L.unfold(self.layer, x_pad))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self.layer.name!r}, in_dim={self.in_dim}, out_dim={self.out_dim})"
        )


class VectorCompressor(LayerCompressor):
    """A projector applied to the (flattened) per-sample gradient: LayerNorm layers and :class:`Full`.

    Attributes:
        projector: the ``p → k`` projector.
    """

    def __init__(self, layer: LayerInfo, projector: Projector) -> None:
        super().__init__(layer, projector.out_dim)
        self.projector = projector

    def _full(self, grad: Tensor) -> Tensor:
        return apply_projector(self.projector, grad.reshape(grad.shape[0], -1))


class FullCompressor(VectorCompressor):
    """``Full``: materializes the per-sample gradient (``O(batch · p)`` memory) and projects it."""


class RawCompressor(LayerCompressor):
    """No compression: the flattened per-sample gradient itself (``k = p``)."""

    def __init__(self, layer: LayerInfo) -> None:
        super().__init__(layer, layer.grad_size)

    def _full(self, grad: Tensor) -> Tensor:
        return grad.reshape(grad.shape[0], -1).to(L.compute_dtype(grad))


class _Cache:
    """Tensors converted to a device/dtype once and reused."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, torch.device, torch.dtype | None], Tensor] = {}

    def get(self, key: str, t: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
        k = (key, device, dtype)
        if k not in self._store:
            self._store[k] = t.to(device=device, dtype=dtype or t.dtype)
        return self._store[k]


class FactGraSSCompressor(LayerCompressor):
    """FactGraSS for one matrix layer: ``SJLT(G[mask_out][:, mask_in].flatten())``.

    The output gradient and the (bias-augmented) input are masked to ``s_out = min(√k', d_out)`` and
    ``s_in = min(√k', d_in[+1])`` coordinates; per-token outer products of the masked factors are
    summed (``(batch, s_out · s_in)``, the masked block of ``G``), then an SJLT maps them to ``k``.

    Convolutions mask the im2col columns: each kept column is a ``(channel, ky, kx)`` offset, gathered
    straight from the padded input at every output position (the unfold is never formed).

    Embeddings hash the vocabulary side instead of masking it: ``G[mask_out] @ Hᵀ`` with
    ``H = SJLT(V, s_in, c=1)`` (each token id lands in one of ``s_in`` buckets with a random sign), so
    every token contributes and no sample's block is all zeros.

    Attributes:
        mask_out: ``Mask(d_out, s_out)``; ``mask_out.indices`` are the kept rows of ``G``.
        mask_in: ``Mask(d_in[+1], s_in)``; index ``d_in`` is the bias column (``None`` for Embedding).
        hash_in: Embedding only: ``SJLT(V, s_in, c=1)`` on the vocabulary side, else ``None``.
        sjlt: ``SJLT(s_out · s_in, k, c)``.
    """

    def __init__(self, layer: LayerInfo, out_dim: int, side: int, c: int, seed: int) -> None:
        super().__init__(layer, out_dim)
        s_out, s_in = min(side, layer.d_out), min(side, layer.d_in_aug)
        self.mask_out = Mask(layer.d_out, s_out, seed=layer_seed(seed, layer.name, "mask_out"))
        self.sjlt = SJLT(s_out * s_in, out_dim, c=c, seed=layer_seed(seed, layer.name, "sjlt"))
        self._cache = _Cache()
        self.mask_in: Mask | None = None
        self.hash_in: SJLT | None = None
        self._hash_cols: tuple[Tensor, Tensor] | None = None
        self._lists: tuple[list[int], list[int]] | None = None  # masked_outer's (rows, cols), CPU
        # Convolutions: (kept rows, kept im2col columns, bias column) for the fused CPU kernel.
        self._conv_lists: tuple[list[int], list[int], bool] | None = None
        if layer.kind == "embedding":
            self.hash_in = SJLT(layer.d_in, s_in, c=1, seed=layer_seed(seed, layer.name, "hash_in"))
            self._bias_col, self._cols = False, torch.arange(s_in)
            return
        self.mask_in = Mask(layer.d_in_aug, s_in, seed=layer_seed(seed, layer.name, "mask_in"))
        cols = self.mask_in.indices
        self._bias_col = layer.bias and int(cols[-1]) == layer.d_in  # indices are increasing
        self._cols = cols[:-1] if self._bias_col else cols
        self._patch_index: dict[tuple[int, int, torch.device], Tensor] = {}
        if layer.kind == "conv":
            self._conv_lists = (self.mask_out.indices.tolist(), self._cols.tolist(), self._bias_col)

    def _full(self, grad: Tensor) -> Tensor:
        rows = self._cache.get("out", self.mask_out.indices, grad.device)
        block = grad.index_select(1, rows)
        if self.hash_in is not None:
            hashed = apply_projector(self.hash_in, block.reshape(-1, self.layer.d_in))
            return apply_projector(self.sjlt, hashed.reshape(grad.shape[0], -1))
        assert self.mask_in is not None
        cols = self._cache.get("in", self.mask_in.indices, grad.device)
        block = block.index_select(2, cols)
        return apply_projector(self.sjlt, block.reshape(grad.shape[0], -1))

    def _factors(self, go: Tensor, x: Tensor) -> Tensor:
        rows = self._cache.get("out", self.mask_out.indices, go.device)
        dt = L.compute_dtype(go, x)
        if self.hash_in is not None:
            return apply_projector(self.sjlt, self._hashed_embedding(go, x, rows, dt))
        cols = self._cache.get("cols", self._cols, go.device)
        if self._lists is None:  # the index lists the CPU kernel takes, converted once
            self._lists = (self.mask_out.indices.tolist(), self._cols.tolist())
        return K.masked_outer(self.layer, go, x, rows, cols, self._bias_col, dt, self._lists, self.sjlt)

    def _hashed_embedding(self, go: Tensor, ids: Tensor, rows: Tensor, dt: torch.dtype) -> Tensor:
        """``Σ_t δ_t[rows] ⊗ sign(id_t) e_bucket(id_t)``: ``(B, T, d), (B, T)`` → ``(B, s_out · s_in)``."""
        assert self.hash_in is not None
        if self._hash_cols is None:
            buckets, signs = self.hash_in.columns()  # (V, 1) each: c = 1
            self._hash_cols = (buckets[:, 0], signs[:, 0])
        buckets = self._cache.get("buckets", self._hash_cols[0], go.device)
        signs = self._cache.get("signs", self._hash_cols[1], go.device, dt)
        b = go.new_zeros((*ids.shape, self.hash_in.out_dim), dtype=dt)
        b.scatter_(2, buckets[ids].unsqueeze(-1), signs[ids].unsqueeze(-1))
        a = K.gather_columns(go, rows).to(dt)
        return torch.bmm(a.transpose(1, 2), b).reshape(go.shape[0], -1)

    def compress_factors(self, grad_output: Tensor, layer_input: Tensor) -> Tensor:
        geo = self.layer.conv
        if (
            geo is not None
            and self._conv_lists is not None
            and geo.pad_mode == "constant"
            and isinstance(grad_output, Tensor)
            and isinstance(layer_input, Tensor)
            and layer_input.ndim == grad_output.ndim == geo.spatial + 2
        ):
            # CPU fast path: the fused Rust kernel reads the module's own input and output gradient,
            # zero padding applied on the fly (no padded copy, no position-major copy of δ);
            # anything it does not take goes the general way, which also reports bad shapes.
            x = layer_input.unsqueeze(2) if geo.spatial == 1 else layer_input
            p = geo.pad  # F.pad order: (left, right[, top, bottom])
            pad = (0, 0, p[0], p[1]) if geo.spatial == 1 else (p[2], p[3], p[0], p[1])
            y = K.conv_masked_outer(self.layer, grad_output, x, *self._conv_lists, pad, self.sjlt)
            if y is not None:
                return y
        return super().compress_factors(grad_output, layer_input)

    def _conv(self, go: Tensor, x_pad: Tensor) -> Tensor:
        """Gathers only the kept im2col columns from the padded input, then the masked outer products."""
        if self._conv_lists is not None:
            y = K.conv_masked_outer(
                self.layer, go.transpose(1, 2), x_pad, *self._conv_lists, project=self.sjlt
            )
            if y is not None:
                return y
        rows = self._cache.get("out", self.mask_out.indices, go.device)
        key = (int(x_pad.shape[2]), int(x_pad.shape[3]), x_pad.device)
        if key not in self._patch_index:
            cols = self._cols.to(x_pad.device)
            self._patch_index[key] = K.patch_index(self.layer, cols, key[0], key[1])
        patches = K.gather_patches(x_pad, self._patch_index[key])  # (B, L, s_in)
        every = self._cache.get("every", torch.arange(patches.shape[2]), go.device)
        dt = L.compute_dtype(go, x_pad)
        return K.masked_outer(self.layer, go, patches, rows, every, self._bias_col, dt, project=self.sjlt)


class LoGraCompressor(LayerCompressor):
    """LoGra for one matrix layer: ``vec(P_out G P_inᵀ)`` with dense Gaussian ``P_out`` ``(√k, d_out)``
    and ``P_in`` ``(√k, d_in[+1])``; from factors, ``Σ_t (P_out δ_t)(P_in x̃_t)ᵀ``.

    Attributes:
        proj_out: ``Gaussian(d_out, √k)``; its matrix is ``P_out``.
        proj_in: ``Gaussian(d_in[+1], √k)``; its matrix is ``P_in``.
    """

    def __init__(self, layer: LayerInfo, out_dim: int, side: int, seed: int) -> None:
        super().__init__(layer, out_dim)
        self.proj_out = Gaussian(layer.d_out, side, seed=layer_seed(seed, layer.name, "proj_out"))
        self.proj_in = Gaussian(layer.d_in_aug, side, seed=layer_seed(seed, layer.name, "proj_in"))
        self._p_out = dense_matrix(self.proj_out)
        self._p_in = dense_matrix(self.proj_in)
        self._cache = _Cache()

    def _mats(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return self._cache.get("out", self._p_out, device, dtype), self._cache.get(
            "in", self._p_in, device, dtype
        )

    def _full(self, grad: Tensor) -> Tensor:
        dt = L.compute_dtype(grad)
        p_out, p_in = self._mats(grad.device, dt)
        return (p_out @ grad.to(dt) @ p_in.T).reshape(grad.shape[0], -1)

    def _factors(self, go: Tensor, x: Tensor) -> Tensor:
        dt = L.compute_dtype(go, x)
        p_out, p_in = self._mats(go.device, dt)
        a = torch.matmul(go.to(dt), p_out.T)
        b = K.input_project(self.layer, x, p_in)
        return K.outer_sum(a, b)

    def _conv(self, go: Tensor, x_pad: Tensor) -> Tensor:
        """Projects every im2col patch with one convolution (kernels = ``P_in``'s rows), no unfold."""
        dt = L.compute_dtype(go, x_pad)
        p_out, p_in = self._mats(go.device, dt)
        a = torch.matmul(go.to(dt), p_out.T)
        b = K.conv_input_project(self.layer, x_pad.to(dt), p_in)
        return K.outer_sum(a, b)


class CompressorFactory(abc.ABC):
    """Builds one :class:`LayerCompressor` per layer; ``seed`` is the base seed."""

    seed: int

    def build(self, layer: LayerInfo) -> LayerCompressor:
        """The compressor for ``layer``.

        Raises:
            ValueError: the configuration does not fit this layer (message names the layer).
        """
        try:
            return self._build(layer)
        except (ValueError, TypeError) as e:
            raise InvalidArgumentError(
                f"cannot build {type(self).__name__} for layer {layer.name!r} ({layer.kind}, "
                f"gradient shape {layer.grad_shape}): {e}"
            ) from e

    @abc.abstractmethod
    def _build(self, layer: LayerInfo) -> LayerCompressor: ...


class FactGraSS(CompressorFactory):
    """FactGraSS (arXiv 2505.18976): mask both gradient factors to ``√k'`` coordinates, sum the
    per-token outer products (``k'`` values, the masked block of ``G``), then SJLT to ``k``. The
    ``p``-dimensional gradient is never formed. Layers narrower than ``√k'`` keep all their
    coordinates on that side.

    Args:
        out_dim: ``k``.
        mask_dim: ``k'``, a perfect square ``≥ k``; default the smallest perfect square ``≥ 4k``
            (``4k`` itself when that is a square, the paper's ratio).
        c: nonzeros per column of the SJLT.
        seed: base seed.

    Raises:
        ValueError: ``k'`` is not a perfect square, or ``k > k'``, or ``c > k``.
    """

    def __init__(self, out_dim: int, *, mask_dim: int | None = None, c: int = 1, seed: int = 0) -> None:
        self.out_dim = positive_int(out_dim, "out_dim")
        if mask_dim is None:
            mask_dim = (math.isqrt(4 * self.out_dim - 1) + 1) ** 2
        self.mask_dim = positive_int(mask_dim, "mask_dim")
        self.c, self.seed = positive_int(c, "c"), check_seed(seed)
        side = _perfect_sqrt(self.mask_dim)
        if side is None:
            raise InvalidArgumentError(
                f"FactGraSS `mask_dim` (k') must be a perfect square, got {self.mask_dim}"
            )
        if self.out_dim > self.mask_dim:
            raise InvalidArgumentError(
                f"FactGraSS `out_dim` (k={self.out_dim}) must be ≤ mask_dim (k'={self.mask_dim})"
            )
        if self.c > self.out_dim:
            raise InvalidArgumentError(f"FactGraSS `c` must be ≤ out_dim ({self.out_dim}), got {self.c}")
        self.side = side

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        if layer.is_vector:
            s = layer_seed(self.seed, layer.name, "vector")
            p = layer.grad_size
            if p > self.mask_dim:
                return VectorCompressor(
                    layer, GraSS(p, self.out_dim, mask_dim=self.mask_dim, c=self.c, seed=s)
                )
            return VectorCompressor(layer, SJLT(p, self.out_dim, c=self.c, seed=s))
        return FactGraSSCompressor(layer, self.out_dim, self.side, self.c, self.seed)

    def __repr__(self) -> str:
        return f"FactGraSS(out_dim={self.out_dim}, mask_dim={self.mask_dim}, c={self.c}, seed={self.seed})"


class LoGra(CompressorFactory):
    """LoGra: dense Gaussian projections of the layer input and the output gradient to ``√k`` each,
    per-token outer products summed over tokens — ``k`` values per sample.

    Args:
        out_dim: ``k``, a perfect square.
        seed: base seed.

    Raises:
        ValueError: ``k`` is not a perfect square.
    """

    def __init__(self, out_dim: int, *, seed: int = 0) -> None:
        self.out_dim = positive_int(out_dim, "out_dim")
        self.seed = check_seed(seed)
        side = _perfect_sqrt(self.out_dim)
        if side is None:
            raise InvalidArgumentError(
                f"LoGra `out_dim` (k) must be a perfect square (√k per side), got {self.out_dim}"
            )
        self.side = side

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        if layer.is_vector:
            s = layer_seed(self.seed, layer.name, "vector")
            return VectorCompressor(layer, Gaussian(layer.grad_size, self.out_dim, seed=s))
        return LoGraCompressor(layer, self.out_dim, self.side, self.seed)

    def __repr__(self) -> str:
        return f"LoGra(out_dim={self.out_dim}, seed={self.seed})"


class Full(CompressorFactory):
    """Any foundation projector applied to the materialized per-sample gradient (the simple path;
    ``O(batch · p)`` memory per layer).

    ``Full(GraSS, out_dim=1024, mask_dim=4096)`` builds ``GraSS(p, 1024, mask_dim=4096, seed=s)``
    per layer, with ``p`` the layer's gradient size and ``s`` derived from ``seed`` (default 0).
    A ``mask_dim`` larger than a layer's ``p`` is lowered to ``p`` for that layer (all coordinates
    kept, as FactGraSS does for narrow layers); other misfits (e.g. ``out_dim > p`` for ``Mask``) raise.

    Args:
        projector_class: a :class:`~grass_rs.Projector` subclass (``SJLT``, ``Mask``, ``GraSS``, …).
        **kwargs: its arguments other than ``in_dim``; ``seed`` is the base seed.

    Raises:
        TypeError: not a projector class, ``in_dim`` given, or arguments the class does not take.
    """

    def __init__(self, projector_class: type[Projector], **kwargs: Any) -> None:
        if not (isinstance(projector_class, type) and issubclass(projector_class, Projector)):
            raise ArgumentTypeError(f"Full needs a grass_rs.Projector subclass, got {projector_class!r}")
        if "in_dim" in kwargs:
            raise ArgumentTypeError("Full sets `in_dim` to each layer's gradient size; do not pass it")
        self.seed = check_seed(kwargs.pop("seed", 0))
        try:
            inspect.signature(projector_class).bind(1, seed=self.seed, **kwargs)
        except TypeError as e:
            raise ArgumentTypeError(f"Full({projector_class.__name__}, ...): {e}") from None
        self.projector_class, self.kwargs = projector_class, kwargs

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        s, p = layer_seed(self.seed, layer.name, "full"), layer.grad_size
        kwargs = dict(self.kwargs)
        if isinstance(kwargs.get("mask_dim"), int) and kwargs["mask_dim"] > p:
            kwargs["mask_dim"] = p  # a layer smaller than the mask keeps all its coordinates
        make: Callable[..., Projector] = self.projector_class  # subclasses take (in_dim, ..., seed=)
        return FullCompressor(layer, make(p, seed=s, **kwargs))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"Full({self.projector_class.__name__}{args}, seed={self.seed})"


class PerLayerProjectors(CompressorFactory):
    """A :class:`CompressorFactory` applying a per-layer projector factory (a
    :class:`~grass_rs.ProjectorFactory` or any ``(layer_name, in_dim) -> Projector`` callable) to each
    layer's materialized gradient (``[∂W | ∂b]``), or keeping it raw when ``factory`` is ``None``.
    The hook-backend twin of :class:`~grass_rs.capture.sources.FuncGradients`: same projectors,
    same seeds, same gradients."""

    def __init__(self, factory: Callable[[str, int], Projector] | None) -> None:
        self.factory, self.seed = factory, int(getattr(factory, "seed", 0))

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        if self.factory is None:
            return RawCompressor(layer)
        return FullCompressor(layer, self.factory(layer.name, layer.grad_size))

    def __repr__(self) -> str:
        return f"PerLayerProjectors({self.factory!r})"


#: Compressor names :func:`make_compressor` takes: the factorized ones, then every projector kind.
COMPRESSOR_NAMES = ("factgrass", "logra", *PROJECTOR_KINDS)


def make_compressor(name: str, k: int, *, seed: int = 0) -> CompressorFactory:
    """The compressor factory called ``name`` with ``k`` per layer: ``"factgrass"`` →
    :class:`FactGraSS`, ``"logra"`` → :class:`LoGra`, a projector kind (``"grass"``, ``"sjlt"``, ...)
    → that projector per layer on the materialized gradient (:class:`PerLayerProjectors`)."""
    if name == "factgrass":
        return FactGraSS(k, seed=seed)
    if name == "logra":
        return LoGra(k, seed=seed)
    if name in PROJECTOR_KINDS:
        return PerLayerProjectors(ProjectorFactory(name, k, seed=seed))
    raise InvalidArgumentError(f"`compressor` must be one of {list(COMPRESSOR_NAMES)}, got {name!r}")

"""Supported layer types and the per-sample gradient of each, in factored and materialized form.

Every supported layer's per-sample gradient is written in one of two forms:

* **matrix layers** — ``nn.Linear``, HuggingFace GPT-2 ``Conv1D`` and ``nn.Embedding``. The
  gradient of sample ``b`` is ``G_b = Σ_t δ_{b,t} x̃_{b,t}ᵀ``, an ``(d_out, d_in[+1])`` matrix in the
  *Linear convention*: row ``o`` is output feature ``o``, column ``i`` is input feature ``i``, and
  the last column is the bias gradient when the layer has a bias (``x̃ = [x, 1]``). Flattened row-major
  it has ``p = d_out · (d_in + bias)`` entries. Here ``δ`` is the gradient of the loss with respect to
  the layer output (``grad_output``, shape ``(batch, [T,] d_out)``) and ``x`` is the layer input
  (``layer_input``, shape ``(batch, [T,] d_in)``); the sum runs over all tokens ``t``.

  - ``nn.Linear``: ``G = [∂W | ∂b]``, the same layout as ``weight`` (``(out_features, in_features)``).
  - ``Conv1D`` stores ``weight`` as ``(d_in, d_out)``; it is treated as a Linear layer, so
    ``G = [∂Wᵀ | ∂b]`` (the transpose of ``weight.grad``, then the bias column).
  - ``nn.Embedding(V, d)`` is a Linear layer without bias whose input is the one-hot vector of the
    token id: ``d_out = embedding_dim``, ``d_in = num_embeddings`` and ``G = ∂Wᵀ``
    (``(embedding_dim, num_embeddings)``). Its ``layer_input`` is the integer ids
    ``(batch, [T])``; the one-hot vector is never formed. Tokens equal to ``padding_idx`` contribute
    nothing, as in PyTorch.

* **convolutions** — ``nn.Conv2d`` and ``nn.Conv1d`` (``groups=1``, any stride, padding, padding mode
  and dilation) are matrix layers over output positions: ``G_b = Σ_pos δ_{b,pos} x̃_{b,pos}ᵀ`` with
  ``δ_pos`` the ``C_out`` output gradients at one output position and ``x_pos`` the im2col patch
  (``C_in · kh · kw`` entries ordered ``(channel, ky, kx)``, as ``F.unfold``) it was computed from, so
  ``G = [weight.grad.reshape(C_out, -1) | bias.grad]``. A Conv1d is a Conv2d of height 1. Its
  ``layer_input`` is the module's input ``(batch, C_in, [H,] W)`` (padding is applied here) and
  ``grad_output`` is ``(batch, C_out, [H_out,] W_out)``.

* **vector layers** — ``nn.LayerNorm`` (with ``elementwise_affine=True``). With ``x̂`` the normalized
  input, ``G = [Σ_t δ_t ⊙ x̂_t | Σ_t δ_t]`` (``[∂γ | ∂β]``, the β part only when the layer has a bias),
  a vector of ``p = d · (1 + bias)`` entries with ``d`` the number of normalized features. It is
  cheap (``O(T · d)``) to form exactly, so compressors apply a projector to it.

  The RMSNorm family (``"rmsnorm"``) is a vector layer without β: ``nn.RMSNorm`` and, found by
  structure (a leaf module named ``*RMSNorm`` or ``T5LayerNorm`` with one ``weight`` and an ``eps`` /
  ``variance_epsilon``, whose output is checked once to be ``x̂ · w`` or Gemma's ``x̂ · (1 + w)``),
  the HuggingFace Llama / Mistral / Qwen / T5 / Gemma norms; ``x̂ = x / √(mean(x²) + eps)`` and
  ``G = Σ_t δ_t ⊙ x̂_t`` for both forms.

* **any other module** (``"module"``, the generic fallback of :mod:`.fallback`) — the gradient is
  its trainable parameters' per-sample gradients flattened and concatenated in ``named_parameters``
  order, a vector of ``p`` entries computed exactly by a per-sample VJP of the module alone.

The leading dimension of every factor is the sample dimension; middle dimensions (tokens, …) are summed.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["ConvGeometry", "LayerInfo", "describe", "is_supported", "materialize", "rmsnorm_variant"]

Tensor = torch.Tensor


def _conv1d_type() -> type | None:
    """``transformers.pytorch_utils.Conv1D`` if transformers is already imported (never imports it)."""
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None) if mod is not None else None


def supported_types() -> tuple[type, ...]:
    """The module types :func:`describe` accepts in a fast form (RMSNorms are found by structure)."""
    conv = _conv1d_type()
    base: tuple[type, ...] = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv1d, nn.Conv2d, nn.RMSNorm)
    return (*base, conv) if conv is not None else base


_RMS_NAME = re.compile(r"(RMSNorm|T5LayerNorm)$")


def _rms_eps(module: nn.Module) -> float | None:
    for attr in ("eps", "variance_epsilon"):
        v = getattr(module, attr, None)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def rmsnorm_variant(module: nn.Module) -> str | None:
    """``"scale"`` (``x̂ · w``) or ``"offset"`` (Gemma: ``x̂ · (1 + w)``) for an RMSNorm, else ``None``.

    ``nn.RMSNorm`` with a weight is ``"scale"``. Other modules qualify by structure — a leaf whose class
    name ends in ``RMSNorm`` or ``T5LayerNorm``, with a single parameter ``weight`` and a float ``eps``
    or ``variance_epsilon`` — and by one probe call on a random ``(2, *weight.shape)`` input whose
    output must equal ``x̂ · w`` or ``x̂ · (1 + w)`` (transformers is never imported).
    """
    if isinstance(module, nn.RMSNorm):
        return "scale" if module.weight is not None else None
    if not _RMS_NAME.search(type(module).__name__) or next(module.children(), None) is not None:
        return None
    params = dict(module.named_parameters(recurse=False))
    w, eps = params.get("weight"), _rms_eps(module)
    if list(params) != ["weight"] or w is None or eps is None or not w.is_floating_point():
        return None
    return _probe_rmsnorm(module, w, eps)


def _probe_rmsnorm(module: nn.Module, w: Tensor, eps: float) -> str | None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *w.shape, generator=gen).to(device=w.device, dtype=w.dtype)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception:  # a module we cannot call alone is not one we recognise
        return None
    if not isinstance(out, Tensor) or out.shape != x.shape:
        return None
    xhat = rms_normalize(x.double(), w.ndim, eps)
    tol = 1e-2 if w.dtype in (torch.float16, torch.bfloat16) else 1e-4
    for variant, scale in (("scale", w.double()), ("offset", 1 + w.double())):
        if torch.allclose(out.double(), xhat * scale, rtol=tol, atol=tol):
            return variant
    return None


def rms_normalize(x: Tensor, ndim: int, eps: float | None) -> Tensor:
    """``x / √(mean(x²) + eps)`` over the last ``ndim`` dimensions (float32 for half inputs).

    ``eps=None`` is ``torch.finfo(x.dtype).eps``, as ``nn.RMSNorm``."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    e = torch.finfo(xf.dtype).eps if eps is None else eps
    dims = tuple(range(-ndim, 0))
    return xf * torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + e)


def is_supported(module: nn.Module) -> bool:
    """Whether ``module`` has a fast form (its configuration may still be rejected by :func:`describe`)."""
    return isinstance(module, supported_types()) or rmsnorm_variant(module) is not None


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution seen as a 2-D one (a Conv1d has height 1).

    Attributes:
        spatial: 1 or 2 (the module's number of spatial dimensions).
        kernel: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        pad: ``F.pad`` amounts for the module's own input (last dimension first), all zeros for none.
        pad_mode: ``F.pad`` mode (``"constant"`` for zero padding).
    """

    spatial: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, ...]
    pad_mode: str


@dataclass(frozen=True)
class LayerInfo:
    """What a compressor needs to know about one layer.

    Attributes:
        name: the module's name in the model (``""`` for the root).
        kind: ``"linear"`` (Linear, Conv1D), ``"conv"`` (Conv1d/Conv2d), ``"embedding"``,
            ``"layernorm"``, ``"rmsnorm"`` or ``"module"`` (the generic fallback).
        d_out: output features (rows of ``G``); conv: ``C_out``; for vector layers the vector size ``d``.
        d_in: input features, without the bias column; conv: ``C_in · kh · kw``; for Embedding
            ``num_embeddings``; for vector layers ``d``.
        bias: whether the layer has a bias (a last column of ``G``, or the β half for LayerNorm).
        padding_idx: Embedding's ``padding_idx`` (its tokens have zero gradient), else ``None``.
        dtype: the layer's parameter dtype.
        conv: the geometry of a ``"conv"`` layer, else ``None``.
    """

    name: str
    kind: str
    d_out: int
    d_in: int
    bias: bool
    padding_idx: int | None = None
    dtype: torch.dtype = torch.float32
    conv: ConvGeometry | None = None

    @property
    def is_vector(self) -> bool:
        """True for layers whose gradient is a vector (LayerNorm, RMSNorm, the generic fallback)."""
        return self.kind in ("layernorm", "rmsnorm", "module")

    @property
    def d_in_aug(self) -> int:
        """Columns of ``G``: ``d_in + 1`` with a bias, else ``d_in`` (matrix layers)."""
        return self.d_in + int(self.bias)

    @property
    def grad_shape(self) -> tuple[int, ...]:
        """Shape of one sample's materialized gradient: ``(d_out, d_in[+1])`` or ``(p,)``."""
        if self.is_vector:
            return (self.d_out * (1 + int(self.bias)),)
        return (self.d_out, self.d_in_aug)

    @property
    def grad_size(self) -> int:
        """``p``, the number of entries of one sample's gradient."""
        return math.prod(self.grad_shape)

    @property
    def out_dtype(self) -> torch.dtype:
        """float64 for float64 layers, float32 otherwise."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32


def _conv_info(name: str, m: nn.Conv1d | nn.Conv2d, dtype: torch.dtype) -> LayerInfo:
    if m.groups != 1:
        raise InvalidArgumentError(
            f"layer {name!r}: {type(m).__name__} with groups={m.groups} has no factored form "
            "(groups=1 only); "
            "leave it to the generic fallback (the default when `layers` is None)"
        )
    one = isinstance(m, nn.Conv1d)
    pair = lambda t: (1, int(t[0])) if one else (int(t[0]), int(t[1]))  # noqa: E731
    kernel = pair(m.kernel_size)
    geo = ConvGeometry(
        1 if one else 2,
        kernel,
        pair(m.stride),
        pair(m.dilation),
        tuple(int(v) for v in m._reversed_padding_repeated_twice),
        "constant" if m.padding_mode == "zeros" else m.padding_mode,
    )
    d_in = m.in_channels * kernel[0] * kernel[1]
    return LayerInfo(name, "conv", m.out_channels, d_in, m.bias is not None, None, dtype, geo)


def describe(name: str, module: nn.Module) -> LayerInfo:
    """Builds the :class:`LayerInfo` of a module with a fast form.

    Raises:
        TypeError: the module type has no fast form.
        ValueError: a supported type in an unsupported configuration (LayerNorm without affine
            parameters, Embedding with ``scale_grad_by_freq``, convolutions with ``groups > 1``).
    """
    dtype = next((p.dtype for p in module.parameters(recurse=False)), torch.float32)
    conv = _conv1d_type()
    if isinstance(module, nn.Linear):
        return LayerInfo(
            name, "linear", module.out_features, module.in_features, module.bias is not None, None, dtype
        )
    if conv is not None and isinstance(module, conv):
        w = module.weight
        assert isinstance(w, torch.Tensor)
        return LayerInfo(
            name, "linear", int(w.shape[1]), int(w.shape[0]), module.bias is not None, None, dtype
        )
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return _conv_info(name, module, dtype)
    if isinstance(module, nn.Embedding):
        if module.scale_grad_by_freq:
            raise InvalidArgumentError(
                f"layer {name!r}: nn.Embedding with scale_grad_by_freq=True has no per-sample gradient "
                "(it scales by batch-wide frequencies); exclude it from `layers`"
            )
        return LayerInfo(
            name, "embedding", module.embedding_dim, module.num_embeddings, False, module.padding_idx, dtype
        )
    if isinstance(module, nn.LayerNorm):
        if module.weight is None:
            raise InvalidArgumentError(
                f"layer {name!r}: nn.LayerNorm with elementwise_affine=False has no parameters"
            )
        d = math.prod(module.normalized_shape)
        return LayerInfo(name, "layernorm", d, d, module.bias is not None, None, dtype)
    if rmsnorm_variant(module) is not None:
        w = module.weight
        assert isinstance(w, torch.Tensor)
        return LayerInfo(name, "rmsnorm", w.numel(), w.numel(), False, None, dtype)
    if isinstance(module, nn.RMSNorm):
        raise InvalidArgumentError(
            f"layer {name!r}: nn.RMSNorm with elementwise_affine=False has no parameters"
        )
    names = ", ".join(t.__name__ for t in supported_types())
    raise ArgumentTypeError(
        f"layer {name!r} has unsupported type {type(module).__name__}; supported: {names}, RMSNorms"
    )


def describe_module(name: str, p: int, dtype: torch.dtype) -> LayerInfo:
    """The :class:`LayerInfo` of a module captured by the generic fallback (``p`` parameters)."""
    return LayerInfo(name, "module", p, p, False, None, dtype)


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any factor is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _tokens(t: Tensor, d: int, what: str, info: LayerInfo) -> Tensor:
    if t.ndim < 2 or t.shape[-1] != d:
        raise InvalidArgumentError(
            f"layer {info.name!r}: `{what}` must have shape (batch, [T,] {d}), got {tuple(t.shape)}"
        )
    return t.reshape(t.shape[0], -1, d)


def _check_tensors(info: LayerInfo, grad_output: object, layer_input: object) -> None:
    if not isinstance(grad_output, Tensor) or not isinstance(layer_input, Tensor):
        raise ArgumentTypeError(f"layer {info.name!r}: `grad_output` and `layer_input` must be torch tensors")
    if grad_output.ndim and grad_output.shape[0] == 0:
        raise InvalidArgumentError(f"layer {info.name!r}: the batch is empty (0 samples)")


def conv_factors(info: LayerInfo, grad_output: Tensor, layer_input: Tensor) -> tuple[Tensor, Tensor]:
    """A convolution's factors: output gradients by position and the padded 4-D input.

    Args:
        info: a ``"conv"`` layer.
        grad_output: ``(batch, C_out, [H_out,] W_out)``.
        layer_input: the module's input ``(batch, C_in, [H,] W)``.

    Returns:
        ``(δ, x_pad)``: ``(batch, L, C_out)`` with ``L = H_out · W_out`` positions, and the padded input
        ``(batch, C_in, H_pad, W_pad)`` (height 1 for a Conv1d).

    Raises:
        TypeError: not tensors.
        ValueError: shapes that do not match the layer or each other.
    """
    _check_tensors(info, grad_output, layer_input)
    geo = info.conv
    assert geo is not None
    n = geo.spatial + 2
    c_in = info.d_in // (geo.kernel[0] * geo.kernel[1])
    if layer_input.ndim != n or layer_input.shape[1] != c_in:
        raise InvalidArgumentError(
            f"layer {info.name!r}: `layer_input` must be batched (batch, {c_in}, ...) with {n} dimensions, "
            f"got {tuple(layer_input.shape)}"
        )
    x = layer_input
    if any(geo.pad):
        x = nn.functional.pad(x, list(geo.pad), mode=geo.pad_mode)
    if geo.spatial == 1:
        x = x.unsqueeze(2)
    h_out, w_out = conv_out_size(geo, x.shape[2], x.shape[3])
    expected = (x.shape[0], info.d_out, *((w_out,) if geo.spatial == 1 else (h_out, w_out)))
    if tuple(grad_output.shape) != expected:
        raise InvalidArgumentError(
            f"layer {info.name!r}: `grad_output` must have shape {expected} for input "
            f"{tuple(layer_input.shape)}, got {tuple(grad_output.shape)}"
        )
    go = grad_output.reshape(grad_output.shape[0], info.d_out, -1).transpose(1, 2)
    return go, x


def conv_out_size(geo: ConvGeometry, h: int, w: int) -> tuple[int, int]:
    """Output height and width of the convolution on a padded ``(h, w)`` input."""
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    return (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1


def unfold(info: LayerInfo, x_pad: Tensor) -> Tensor:
    """All im2col patches: ``(batch, C_in, H_pad, W_pad)`` → ``(batch, L, C_in · kh · kw)``."""
    geo = info.conv
    assert geo is not None
    cols = nn.functional.unfold(x_pad, geo.kernel, dilation=geo.dilation, stride=geo.stride)
    return cols.transpose(1, 2)


def factors(info: LayerInfo, grad_output: Tensor, layer_input: Tensor) -> tuple[Tensor, Tensor]:
    """Validates the factors of a layer's gradient and puts them in token form.

    Args:
        info: the layer.
        grad_output: ``(batch, [T,] d_out)``, per-sample scaling already applied; conv:
            ``(batch, C_out, [H_out,] W_out)``.
        layer_input: ``(batch, [T,] d_in)`` (LayerNorm/RMSNorm: the normalized input ``x̂``,
            ``(batch, [T,] d)``); for Embedding the integer ids ``(batch, [T])``; conv: the module input.

    Returns:
        ``(δ, x)`` with shapes ``(batch, T, d_out)`` and ``(batch, T, d_in)`` (Embedding: ids
        ``(batch, T)``; conv: ``T`` output positions and the unfolded patches). For Embedding, ``δ`` is
        zeroed at ``padding_idx`` tokens.

    Raises:
        TypeError: not tensors, or Embedding ids that are not integers.
        ValueError: shapes that do not match the layer or each other, an empty batch.
    """
    if info.kind == "conv":
        go, xp = conv_factors(info, grad_output, layer_input)
        return go, unfold(info, xp)
    _check_tensors(info, grad_output, layer_input)
    go = _tokens(grad_output, info.d_out, "grad_output", info)
    if info.kind == "embedding":
        if layer_input.is_floating_point() or layer_input.is_complex():
            raise ArgumentTypeError(
                f"layer {info.name!r}: an Embedding's `layer_input` must be integer token ids"
            )
        x = layer_input.reshape(layer_input.shape[0], -1) if layer_input.ndim else layer_input
        if info.padding_idx is not None:
            go = go * (x != info.padding_idx).unsqueeze(-1).to(go.dtype)
    else:
        x = _tokens(layer_input, info.d_in, "layer_input", info)
    if x.shape[:2] != go.shape[:2]:
        raise InvalidArgumentError(
            f"layer {info.name!r}: `grad_output` {tuple(grad_output.shape)} and `layer_input` "
            f"{tuple(layer_input.shape)} disagree on batch/token dimensions"
        )
    return go, x


def layernorm_grad(info: LayerInfo, go: Tensor, xhat: Tensor) -> Tensor:
    """``[Σ_t δ_t ⊙ x̂_t | Σ_t δ_t]`` (RMSNorm: the first half only): ``(B, T, d), (B, T, d)`` → ``(B, p)``."""
    dt = compute_dtype(go, xhat)
    go = go.to(dt)
    parts = [(go * xhat.to(dt)).sum(1)]
    if info.bias:
        parts.append(go.sum(1))
    return torch.cat(parts, dim=-1)


def materialize(info: LayerInfo, grad_output: Tensor, layer_input: Tensor) -> Tensor:
    """The exact per-sample gradients from their factors (``O(batch · p)`` memory).

    Args:
        info: the layer (not ``"module"``: the fallback has no factors).
        grad_output: ``(batch, [T,] d_out)``; conv: ``(batch, C_out, [H_out,] W_out)``.
        layer_input: ``(batch, [T,] d_in)``; Embedding: ids ``(batch, [T])``; LayerNorm/RMSNorm: ``x̂``;
            conv: the module input.

    Returns:
        ``(batch, d_out, d_in[+1])`` for matrix layers, ``(batch, p)`` for vector layers; float64 if a
        factor is float64, else float32.
    """
    return token_grad(info, *factors(info, grad_output, layer_input))


def token_grad(info: LayerInfo, go: Tensor, x: Tensor) -> Tensor:
    """:func:`materialize` from factors already in token form (the output of :func:`factors`)."""
    dt = compute_dtype(go, x)
    if info.is_vector:
        return layernorm_grad(info, go, x)
    go = go.to(dt)
    if info.kind == "embedding":
        g = go.new_zeros((go.shape[0], info.d_in, info.d_out))
        g.scatter_add_(1, x.unsqueeze(-1).expand(-1, -1, info.d_out), go)
        return g.transpose(1, 2)
    xa = x.to(dt)
    if info.bias:
        xa = torch.cat([xa, xa.new_ones((*xa.shape[:-1], 1))], dim=-1)
    return torch.bmm(go.transpose(1, 2), xa)

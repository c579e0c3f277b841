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

* **vector layers** — ``nn.LayerNorm`` (with ``elementwise_affine=True``). With ``x̂`` the normalized
  input, ``G = [Σ_t δ_t ⊙ x̂_t | Σ_t δ_t]`` (``[∂γ | ∂β]``, the β part only when the layer has a bias),
  a vector of ``p = d · (1 + bias)`` entries with ``d`` the number of normalized features. It is
  cheap (``O(T · d)``) to form exactly, so compressors apply a projector to it.

The leading dimension of every factor is the sample dimension; middle dimensions (tokens, …) are summed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["LayerInfo", "describe", "is_supported", "materialize"]

Tensor = torch.Tensor


def _conv1d_type() -> type | None:
    """``transformers.pytorch_utils.Conv1D`` if transformers is already imported (never imports it)."""
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None) if mod is not None else None


def supported_types() -> tuple[type, ...]:
    """The module types :func:`describe` accepts."""
    conv = _conv1d_type()
    base: tuple[type, ...] = (nn.Linear, nn.Embedding, nn.LayerNorm)
    return (*base, conv) if conv is not None else base


def is_supported(module: nn.Module) -> bool:
    """Whether ``module`` is of a supported type (its configuration may still be rejected)."""
    return isinstance(module, supported_types())


@dataclass(frozen=True)
class LayerInfo:
    """What a compressor needs to know about one layer.

    Attributes:
        name: the module's name in the model (``""`` for the root).
        kind: ``"linear"`` (Linear, Conv1D), ``"embedding"`` or ``"layernorm"``.
        d_out: output features (rows of ``G``); for LayerNorm the normalized size ``d``.
        d_in: input features, without the bias column; for Embedding ``num_embeddings``; for
            LayerNorm ``d``.
        bias: whether the layer has a bias (a last column of ``G``, or the β half for LayerNorm).
        padding_idx: Embedding's ``padding_idx`` (its tokens have zero gradient), else ``None``.
        dtype: the layer's parameter dtype.
    """

    name: str
    kind: str
    d_out: int
    d_in: int
    bias: bool
    padding_idx: int | None = None
    dtype: torch.dtype = torch.float32

    @property
    def is_vector(self) -> bool:
        """True for layers whose gradient is a vector (LayerNorm)."""
        return self.kind == "layernorm"

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


def describe(name: str, module: nn.Module) -> LayerInfo:
    """Builds the :class:`LayerInfo` of a supported module.

    Raises:
        TypeError: the module type is not supported.
        ValueError: a supported type in an unsupported configuration (LayerNorm without affine
            parameters, Embedding with ``scale_grad_by_freq``).
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
    names = ", ".join(t.__name__ for t in supported_types())
    raise ArgumentTypeError(
        f"layer {name!r} has unsupported type {type(module).__name__}; supported: {names}"
    )


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any factor is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _tokens(t: Tensor, d: int, what: str, info: LayerInfo) -> Tensor:
    if t.ndim < 2 or t.shape[-1] != d:
        raise InvalidArgumentError(
            f"layer {info.name!r}: `{what}` must have shape (batch, [T,] {d}), got {tuple(t.shape)}"
        )
    return t.reshape(t.shape[0], -1, d)


def factors(info: LayerInfo, grad_output: Tensor, layer_input: Tensor) -> tuple[Tensor, Tensor]:
    """Validates the factors of a layer's gradient and puts them in token form.

    Args:
        info: the layer.
        grad_output: ``(batch, [T,] d_out)``, per-sample scaling already applied.
        layer_input: ``(batch, [T,] d_in)`` (LayerNorm: the normalized input ``x̂``, ``(batch, [T,] d)``);
            for Embedding the integer ids ``(batch, [T])``.

    Returns:
        ``(δ, x)`` with shapes ``(batch, T, d_out)`` and ``(batch, T, d_in)`` (Embedding: ids
        ``(batch, T)``). For Embedding, ``δ`` is zeroed at ``padding_idx`` tokens.

    Raises:
        TypeError: not tensors, or Embedding ids that are not integers.
        ValueError: shapes that do not match the layer or each other.
    """
    if not isinstance(grad_output, Tensor) or not isinstance(layer_input, Tensor):
        raise ArgumentTypeError(f"layer {info.name!r}: `grad_output` and `layer_input` must be torch tensors")
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
    """``[Σ_t δ_t ⊙ x̂_t | Σ_t δ_t]``: ``(B, T, d), (B, T, d)`` → ``(B, p)``."""
    dt = compute_dtype(go, xhat)
    go = go.to(dt)
    parts = [(go * xhat.to(dt)).sum(1)]
    if info.bias:
        parts.append(go.sum(1))
    return torch.cat(parts, dim=-1)


def materialize(info: LayerInfo, grad_output: Tensor, layer_input: Tensor) -> Tensor:
    """The exact per-sample gradients from their factors (``O(batch · p)`` memory).

    Args:
        info: the layer.
        grad_output: ``(batch, [T,] d_out)``.
        layer_input: ``(batch, [T,] d_in)``; Embedding: ids ``(batch, [T])``; LayerNorm: ``x̂``.

    Returns:
        ``(batch, d_out, d_in[+1])`` for matrix layers, ``(batch, p)`` for LayerNorm; float64 if a
        factor is float64, else float32.
    """
    go, x = factors(info, grad_output, layer_input)
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

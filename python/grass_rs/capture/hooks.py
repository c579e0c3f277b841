"""Per-sample compressed gradient capture for PyTorch models: :func:`attach`.

::

    with grass_rs.attach(model, grass_rs.FactGraSS(4096), loss_reduction="mean") as handle:
        loss_fn(model(x), y).backward()
    grads = handle.gradients()          # {layer name: (batch, k)}, in module order
    flat = handle.flat()                # (batch, Σ k), the same, concatenated

How it works: a forward hook on every selected layer keeps its input (the normalized input for
LayerNorm) and registers a hook on its output tensor; during ``backward`` that hook receives
``δ = ∂loss/∂output`` and hands ``(δ, input)`` to the layer's compressor
(:meth:`~grass_rs.compressors.LayerCompressor.compress_factors`). Nothing is added to ``.grad``
and model outputs are unchanged. Stored state per layer is one ``(batch, k)`` tensor.

Conventions (see :mod:`grass_rs.layers` for each layer's gradient layout):

* dimension 0 of the model's first tensor argument, and of every selected layer's input, is the
  sample dimension. Embeddings called with a batch of 1 while the model has ``B > 1`` samples
  (e.g. GPT-2 position ids ``(1, T)``, broadcast over the batch) get their ids expanded to ``B`` rows
  so per-sample gradients exist; the model output is unchanged when the result is broadcast.
* ``loss_reduction="sum"``: the loss is ``Σ_b ℓ_b``; ``"mean"``: ``(1/B) Σ_b ℓ_b`` and ``δ`` is
  multiplied by ``B``. Either way the result is ``∇ℓ_b`` per sample.
* a module called several times in one forward pass records the sum over calls (the gradient of
  its shared parameters). Tied parameters in *different* modules are recorded per module.
* a new step starts at the first forward after a backward: all records are then cleared. A selected
  layer that got no gradient in a step records zeros.
* results are float32, or float64 for float64 layers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ArgumentTypeError, InvalidArgumentError
from . import layers as L
from .compressors import CompressorFactory, LayerCompressor

__all__ = ["GradientHandle", "attach", "select_layers"]

Tensor = torch.Tensor
Selector = Union[str, type, Callable[[str, nn.Module], bool], Iterable[Union[str, type]], None]  # noqa: UP007
_REDUCTIONS = ("sum", "mean")


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _check_type(t: type) -> None:
    if not (isinstance(t, type) and issubclass(t, nn.Module)):
        raise ArgumentTypeError(f"`layers` entries must be module names or nn.Module types, got {t!r}")
    if not issubclass(t, L.supported_types()):
        names = ", ".join(s.__name__ for s in L.supported_types())
        raise ArgumentTypeError(f"`layers` names unsupported layer type {t.__name__}; supported: {names}")


def _select_named(model: nn.Module, chosen: list[str | type]) -> list[tuple[str, nn.Module]]:
    mods = dict(model.named_modules())
    names = {c for c in chosen if isinstance(c, str)}
    types = tuple(c for c in chosen if not isinstance(c, str))
    for t in types:
        _check_type(t)
    missing = sorted(names - mods.keys())
    if missing:
        raise InvalidArgumentError(f"`layers` names modules the model does not have: {missing}")
    out = []
    for name, m in mods.items():
        if name in names:
            if not L.is_supported(m):
                L.describe(name, m)  # raises TypeError naming the layer
            out.append((name, m))
        elif types and isinstance(m, types):
            out.append((name, m))
    return out


def select_layers(model: nn.Module, layers: Selector = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs ``layers`` picks, in module order.

    Args:
        model: the model.
        layers: ``None`` (every supported layer with trainable parameters, except those inside
            ``nn.MultiheadAttention``, which bypasses its submodules' ``forward``), a module name, a
            supported module type, a list of names and/or types, or a predicate
            ``(name, module) -> bool`` asked about every supported layer.

    Raises:
        ValueError: unknown names, or nothing selected.
        TypeError: a name or type of an unsupported layer, or a malformed ``layers``.
    """
    if layers is None:
        # MultiheadAttention uses its out_proj's weight without calling it: no hook would fire
        mha = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention))
        out = [
            (n, m)
            for n, m in model.named_modules()
            if L.is_supported(m) and _trainable(m) and not (mha and n.startswith(mha))
        ]
    elif isinstance(layers, (str, type)):
        out = _select_named(model, [layers])
    elif callable(layers):
        out = [(n, m) for n, m in model.named_modules() if L.is_supported(m) and layers(n, m)]
    elif isinstance(layers, Iterable):
        out = _select_named(model, list(layers))
    else:
        kind = type(layers).__name__
        raise ArgumentTypeError(f"`layers` must be None, a name, a type, a list or a predicate, got {kind}")
    if not out:
        raise InvalidArgumentError(f"`layers`={layers!r} selects no supported layer of the model")
    return out


def _first_batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor) and v.ndim > 0:
            return int(v.shape[0])
    return None


def _layernorm_input(module: nn.LayerNorm, x: Tensor) -> Tensor:
    """The normalized input ``x̂``, flattened to ``(batch, ..., d)``."""
    dims = tuple(range(-len(module.normalized_shape), 0))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    var, mean = torch.var_mean(xf, dim=dims, unbiased=False, keepdim=True)
    xhat = (xf - mean) * torch.rsqrt(var + module.eps)
    return xhat.reshape(*x.shape[: x.ndim - len(dims)], -1)


class GradientHandle:
    """The hooks :func:`attach` placed, and the compressed per-sample gradients they recorded.

    A context manager: leaving the ``with`` block removes the hooks (records stay readable).

    Attributes:
        compressors: layer name → the :class:`~grass_rs.compressors.LayerCompressor` built for it,
            in module order.
        layers: layer name → its :class:`~grass_rs.layers.LayerInfo`.
        loss_reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(
        self,
        model: nn.Module,
        factory: CompressorFactory,
        layers: Selector = None,
        loss_reduction: str = "sum",
    ) -> None:
        if not isinstance(factory, CompressorFactory):
            raise ArgumentTypeError(
                "`compressor` must be a factory such as grass_rs.FactGraSS(k), grass_rs.LoGra(k) or "
                f"grass_rs.Full(grass_rs.GraSS, out_dim=k, mask_dim=...), got {type(factory).__name__}"
            )
        if loss_reduction not in _REDUCTIONS:
            raise InvalidArgumentError(f"`loss_reduction` must be 'sum' or 'mean', got {loss_reduction!r}")
        self.loss_reduction = loss_reduction
        chosen = select_layers(model, layers)
        self.layers = {name: L.describe(name, m) for name, m in chosen}
        self.compressors: dict[str, LayerCompressor] = {n: factory.build(i) for n, i in self.layers.items()}
        self._results: dict[str, Tensor] = {}
        self._batch: int | None = None
        self._backward_seen = False
        self._active = True
        self._hooks: list[RemovableHandle] = [
            model.register_forward_pre_hook(self._on_model, with_kwargs=True)
        ]
        for name, m in chosen:
            if self.layers[name].kind == "embedding":
                self._hooks.append(m.register_forward_pre_hook(self._expand_ids))
            self._hooks.append(m.register_forward_hook(functools.partial(self._on_forward, name)))

    # --- reading results ---

    @property
    def out_dims(self) -> dict[str, int]:
        """Layer name → ``k`` of its compressor."""
        return {n: c.out_dim for n, c in self.compressors.items()}

    def gradients(self, concat: bool = False) -> dict[str, Tensor] | Tensor:
        """The compressed per-sample gradients of the last step.

        Args:
            concat: return one ``(batch, Σ k)`` tensor (layers in module order) instead of a dict.

        Returns:
            Layer name → ``(batch, k)`` tensor, in module order (zeros for a layer that got no gradient).

        Raises:
            RuntimeError: no backward pass has been recorded yet.
        """
        if not self._results or self._batch is None:
            raise RuntimeError("no gradients recorded: run the forward and loss.backward() while attached")
        device = next(iter(self._results.values())).device
        out = {}
        for name, comp in self.compressors.items():
            r = self._results.get(name)
            if r is None:
                r = torch.zeros(self._batch, comp.out_dim, dtype=self.layers[name].out_dtype, device=device)
            out[name] = r
        return torch.cat(list(out.values()), dim=1) if concat else out

    def flat(self) -> Tensor:
        """All layers' compressed gradients concatenated: ``(batch, Σ k)``."""
        result = self.gradients(concat=True)
        assert isinstance(result, Tensor)
        return result

    def clear(self) -> None:
        """Drops the recorded gradients."""
        self._results = {}
        self._backward_seen = False
        self._batch = None

    def remove(self) -> None:
        """Removes every hook (idempotent); gradients recorded so far stay readable."""
        self._active = False
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> GradientHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"GradientHandle(layers={list(self.layers)}, loss_reduction={self.loss_reduction!r})"

    # --- hooks ---

    def _new_step_if_needed(self) -> None:
        if self._backward_seen:
            self.clear()

    def _on_model(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._new_step_if_needed()
        self._batch = _first_batch(args, kwargs)

    def _expand_ids(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        ids = args[0] if args else None
        b = self._batch
        if isinstance(ids, Tensor) and ids.ndim > 0 and ids.shape[0] == 1 and b is not None and b > 1:
            return (ids.expand(b, *ids.shape[1:]), *args[1:])
        return None

    def _on_forward(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not (isinstance(output, Tensor) and output.requires_grad and torch.is_grad_enabled()):
            return
        self._new_step_if_needed()
        x = args[0]
        if not isinstance(x, Tensor) or x.ndim < (1 if self.layers[name].kind == "embedding" else 2):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"layer {name!r}: per-sample gradients need batched input (batch, ...), got {shape}"
            )
        batch = int(x.shape[0])
        if self._batch is None:
            self._batch = batch
        elif batch != self._batch:
            raise InvalidArgumentError(
                f"layer {name!r}: input has {batch} rows but the model batch has {self._batch} samples; "
                "per-sample gradients need the sample dimension first in every selected layer"
            )
        saved = _layernorm_input(module, x.detach()) if isinstance(module, nn.LayerNorm) else x.detach()
        output.register_hook(functools.partial(self._on_grad, name, saved, batch))

    def _on_grad(self, name: str, saved: Tensor, batch: int, grad: Tensor) -> None:
        if not self._active:
            return
        self._backward_seen = True
        info = self.layers[name]
        with torch.no_grad():
            go = grad.detach()
            if info.is_vector:  # LayerNorm over several trailing dims: flatten them like x̂
                go = go.reshape(go.shape[0], -1, info.d_out)
            c = self.compressors[name].compress_factors(go, saved).to(info.out_dtype)
            if self.loss_reduction == "mean":
                c = c * batch  # compression is linear: scaling k numbers instead of δ
        prev = self._results.get(name)
        self._results[name] = c if prev is None else prev + c


def attach(
    model: nn.Module, compressor: CompressorFactory, layers: Selector = None, loss_reduction: str = "sum"
) -> GradientHandle:
    """Hooks ``model`` so every ``loss.backward()`` records compressed per-sample gradients.

    Args:
        model: the model (call it directly: its first tensor argument's dimension 0 is the batch).
        compressor: a factory building one compressor per layer: :class:`~grass_rs.FactGraSS`,
            :class:`~grass_rs.LoGra` or :class:`~grass_rs.Full`.
        layers: which layers (see :func:`select_layers`); ``None`` = every supported layer with
            trainable parameters (``nn.Linear``, GPT-2 ``Conv1D``, ``nn.Embedding``, ``nn.LayerNorm``).
        loss_reduction: ``"sum"`` if the loss sums per-sample losses, ``"mean"`` if it averages them.

    Returns:
        A :class:`GradientHandle`; use it as a context manager (hooks removed on exit) and read
        ``handle.gradients()`` (layer name → ``(batch, k)``) or ``handle.flat()`` (``(batch, Σ k)``).

    Raises:
        TypeError: unsupported layer chosen explicitly, or not a compressor factory.
        ValueError: unknown layer names, nothing selected, a bad ``loss_reduction``, or a compressor
            configuration that does not fit a layer.
    """
    return GradientHandle(model, compressor, layers, loss_reduction)

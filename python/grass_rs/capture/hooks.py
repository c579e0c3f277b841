"""Per-sample compressed gradient capture for PyTorch models: :func:`attach`.

::

    with grass_rs.attach(model, grass_rs.FactGraSS(4096), loss_reduction="mean") as handle:
        loss_fn(model(x), y).backward()
    grads = handle.gradients()          # {layer name: (batch, k)}, in module order
    flat = handle.flat()                # (batch, Σ k), the same, concatenated

How it works: a forward hook on every selected layer keeps its input (the normalized input for
LayerNorm / RMSNorm) and registers a hook on its output tensor; during ``backward`` that hook receives
``δ = ∂loss/∂output`` and hands ``(δ, input)`` to the layer's compressor
(:meth:`~grass_rs.compressors.LayerCompressor.compress_factors`). Modules without a fast form go
through the generic exact fallback (:mod:`.fallback`): their inputs are kept, and once ``δ`` of all
their outputs has arrived, a per-sample VJP of the module alone gives their parameters' per-sample
gradients, which the compressor projects (``compress_full``). Nothing is added to ``.grad`` and model
outputs are unchanged. Stored state per layer is one ``(batch, k)`` tensor.

Coverage: by default every trainable parameter is captured (:mod:`.coverage`); ``handle.coverage``
says which path covers what and names anything left out with the reason; ``strict=True`` raises
instead of the :class:`~grass_rs.capture.coverage.CoverageWarning` issued otherwise.

Conventions (see :mod:`grass_rs.layers` for each layer's gradient layout):

* dimension 0 of the model's first tensor argument, and of every selected layer's input, is the
  sample dimension. Embeddings called with a batch of 1 while the model has ``B > 1`` samples
  (e.g. GPT-2 position ids ``(1, T)``, broadcast over the batch) get their ids expanded to ``B`` rows
  so per-sample gradients exist; the model output is unchanged when the result is broadcast.
* ``loss_reduction="sum"``: the loss is ``Σ_b ℓ_b``; ``"mean"``: ``(1/B) Σ_b ℓ_b`` and ``δ`` is
  multiplied by ``B``. Either way the result is ``∇ℓ_b`` per sample.
* a module called several times in one forward pass records the sum over calls (the gradient of
  its shared parameters). Tied parameters in *different* modules are recorded per module.
* a new step starts at the first forward after a backward: all records are then cleared. A forward
  that runs *inside* a backward pass — activation checkpointing's recomputation, either
  ``use_reentrant`` mode — is part of the current step: with ``use_reentrant=True`` the recomputed
  layers are recorded by the inner backward (the first pass ran without grad and recorded nothing);
  with ``use_reentrant=False`` the first pass's records stand and the recomputed outputs are never
  differentiated, so nothing is counted twice. A selected layer that got no gradient in a step
  records zeros.
* results are float32, or float64 for float64 layers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ArgumentTypeError, InvalidArgumentError
from . import fallback as FB
from . import layers as L
from .compressors import CompressorFactory, LayerCompressor
from .coverage import Selector, Unit, enforce, plan

__all__ = ["GradientHandle", "Selector", "attach", "select_layers"]

Tensor = torch.Tensor
_REDUCTIONS = ("sum", "mean")


def select_layers(model: nn.Module, layers: Selector = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of the layers ``layers`` picks that have a fast form, in module order.

    (:func:`attach` also captures the other modules with trainable parameters through the generic
    fallback; see :func:`grass_rs.capture.coverage.plan`.)

    Args:
        model: the model.
        layers: ``None`` (every layer with a fast form and trainable parameters, except those inside
            ``nn.MultiheadAttention``), a module name, a module type, a list of names and/or types,
            or a predicate ``(name, module) -> bool``.

    Raises:
        ValueError: unknown names, or nothing selected.
        TypeError: a named module without a fast form, or a malformed ``layers``.
    """
    units, _ = plan(model, layers, fallback=False)
    out = [(u.name, u.module) for u in units if u.path == "fast"]
    if isinstance(layers, str) and not out:
        L.describe(layers, dict(model.named_modules())[layers])  # raises TypeError naming the layer
    if not out:
        raise InvalidArgumentError(f"`layers`={layers!r} selects no supported layer of the model")
    return out


def _first_batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor) and v.ndim > 0:
            return int(v.shape[0])
    return None


def _inside_backward() -> bool:
    """Whether autograd is executing a backward pass on this thread (e.g. checkpoint recomputation)."""
    return bool(torch._C._current_graph_task_id() != -1)


def _empty_batch(where: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{where}: the batch is empty (0 samples); per-sample gradients need at least one sample"
    )


#: How a LayerNorm's ``x̂`` is formed in the forward hook. ``"recompute"`` (the default):
#: ``(x - mean) · rsqrt(var + eps)`` with ``torch.var_mean``'s statistics — the reference bits, but
#: ``var_mean`` runs torch's scalar double-precision Welford reduction, 10–30× slower than the layer
#: itself at d = 768 (the largest single cost of whole-model capture, benches/README.md).
#: ``"saved"``: ``(x - mean) · rstd`` with the mean and ``rstd`` torch's own ``native_layer_norm``
#: saved for its backward (no reduction is run again; a different rounding of the same statistics,
#: ≤ 1 ulp of ``x̂``, and the statistics torch's own ``∂γ`` uses). Falls back to ``"recompute"``
#: when the output does not come from ``native_layer_norm``.
LAYERNORM_STATS = "recompute"


def _saved_stats(module: nn.LayerNorm, x: Tensor, output: Any) -> tuple[Tensor, Tensor] | None:
    """``(mean, rstd)`` saved by autograd for ``output = layer_norm(x)``, shaped to broadcast over ``x``."""
    fn = getattr(output, "grad_fn", None)
    if fn is None or type(fn).__name__ != "NativeLayerNormBackward0":
        return None
    try:
        mean, rstd = fn._saved_result1, fn._saved_result2
    except (AttributeError, RuntimeError):  # freed or not saved (e.g. inference-only graphs)
        return None
    lead = x.ndim - len(module.normalized_shape)
    want = (*x.shape[:lead], *(1,) * len(module.normalized_shape))
    if not isinstance(mean, Tensor) or tuple(mean.shape) != want or tuple(rstd.shape) != want:
        return None
    return mean.detach(), rstd.detach()


def _layernorm_input(module: nn.LayerNorm, x: Tensor, output: Any = None) -> Tensor:
    """The normalized input ``x̂``, flattened to ``(batch, ..., d)`` (see :data:`LAYERNORM_STATS`)."""
    dims = tuple(range(-len(module.normalized_shape), 0))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    stats = _saved_stats(module, x, output) if LAYERNORM_STATS == "saved" else None
    if stats is not None:
        xhat = torch.sub(xf, stats[0].to(xf.dtype)).mul_(stats[1].to(xf.dtype))
    else:
        var, mean = torch.var_mean(xf, dim=dims, unbiased=False, keepdim=True)
        # same ops and bits as (xf - mean) * torch.rsqrt(var + eps), without two temporaries
        xhat = torch.sub(xf, mean).mul_(var.add_(module.eps).rsqrt_())
    return xhat.reshape(*x.shape[: x.ndim - len(dims)], -1)


def _rmsnorm_input(module: nn.Module, x: Tensor) -> Tensor:
    """The RMS-normalized input ``x̂``, flattened to ``(batch, ..., d)``."""
    w = module.weight
    assert isinstance(w, Tensor)
    eps = module.eps if isinstance(module, nn.RMSNorm) else L._rms_eps(module)
    xhat = L.rms_normalize(x, w.ndim, eps)
    return xhat.reshape(*x.shape[: x.ndim - w.ndim], -1)


def _saved_input(info: L.LayerInfo, module: nn.Module, x: Tensor, output: Any = None) -> Tensor:
    if info.kind == "layernorm":
        assert isinstance(module, nn.LayerNorm)
        return _layernorm_input(module, x, output)
    if info.kind == "rmsnorm":
        return _rmsnorm_input(module, x)
    return x


class GradientHandle:
    """The hooks :func:`attach` placed, and the compressed per-sample gradients they recorded.

    A context manager: leaving the ``with`` block removes the hooks (records stay readable).

    Attributes:
        compressors: layer name → the :class:`~grass_rs.compressors.LayerCompressor` built for it,
            in module order.
        layers: layer name → its :class:`~grass_rs.layers.LayerInfo` (kind ``"module"`` for modules
            captured by the generic fallback).
        coverage: the :class:`~grass_rs.capture.coverage.Coverage` report (what is captured, on which
            path, and what is left out and why).
        loss_reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(
        self,
        model: nn.Module,
        factory: CompressorFactory,
        layers: Selector = None,
        loss_reduction: str = "sum",
        *,
        strict: bool = False,
        fallback: bool = True,
    ) -> None:
        if not isinstance(factory, CompressorFactory):
            raise ArgumentTypeError(
                "`compressor` must be a factory such as grass_rs.FactGraSS(k), grass_rs.LoGra(k) or "
                f"grass_rs.Full(grass_rs.GraSS, out_dim=k, mask_dim=...), got {type(factory).__name__}"
            )
        if loss_reduction not in _REDUCTIONS:
            raise InvalidArgumentError(f"`loss_reduction` must be 'sum' or 'mean', got {loss_reduction!r}")
        self.loss_reduction = loss_reduction
        units, self.coverage = plan(model, layers, fallback)
        enforce(self.coverage, strict)
        self._units: dict[str, Unit] = {u.name: u for u in units}
        self.layers = {u.name: u.info for u in units}
        self.compressors: dict[str, LayerCompressor] = {n: factory.build(i) for n, i in self.layers.items()}
        self._results: dict[str, Tensor] = {}
        self._batch: int | None = None
        self._backward_seen = False
        self._active = True
        self._replaying = False
        self._hooks: list[RemovableHandle] = [
            model.register_forward_pre_hook(self._on_model, with_kwargs=True)
        ]
        for u in units:
            self._hook_unit(u)

    def _hook_unit(self, u: Unit) -> None:
        m = u.module
        if u.path == "fallback":
            hook = functools.partial(self._on_fallback_forward, u.name)
            self._hooks.append(m.register_forward_hook(hook, with_kwargs=True))
            return
        if u.info.kind == "embedding":
            self._hooks.append(m.register_forward_pre_hook(self._expand_ids))
        self._hooks.append(m.register_forward_hook(functools.partial(self._on_forward, u.name)))

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
        # a forward inside backward (checkpoint recomputation) belongs to the step being differentiated
        if self._backward_seen and not _inside_backward():
            self.clear()

    def _on_model(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._replaying:
            return
        self._new_step_if_needed()
        batch = _first_batch(args, kwargs)
        if batch == 0:
            raise _empty_batch("model input")
        if not _inside_backward() or self._batch is None:
            self._batch = batch

    def _expand_ids(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        ids = args[0] if args else None
        b = self._batch
        if isinstance(ids, Tensor) and ids.ndim > 0 and ids.shape[0] == 1 and b is not None and b > 1:
            return (ids.expand(b, *ids.shape[1:]), *args[1:])
        return None

    def _check_batch(self, name: str, batch: int) -> None:
        if batch == 0:
            raise _empty_batch(f"layer {name!r}")
        if self._batch is None:
            self._batch = batch
        elif batch != self._batch:
            raise InvalidArgumentError(
                f"layer {name!r}: input has {batch} rows but the model batch has {self._batch} samples; "
                "per-sample gradients need the sample dimension first in every selected layer"
            )

    def _on_forward(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._replaying or not (
            isinstance(output, Tensor) and output.requires_grad and torch.is_grad_enabled()
        ):
            return
        self._new_step_if_needed()
        info = self.layers[name]
        x = args[0]
        if not isinstance(x, Tensor) or x.ndim < (1 if info.kind == "embedding" else 2):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"layer {name!r}: per-sample gradients need batched input (batch, ...), got {shape}"
            )
        batch = int(x.shape[0])
        self._check_batch(name, batch)
        saved = _saved_input(info, module, x.detach(), output)
        output.register_hook(functools.partial(self._on_grad, name, saved, batch))

    def _on_grad(self, name: str, saved: Tensor, batch: int, grad: Tensor) -> None:
        if not self._active:
            return
        info = self.layers[name]
        with torch.no_grad():
            go = grad.detach()
            if info.is_vector:  # normalization over several trailing dims: flatten them like x̂
                go = go.reshape(go.shape[0], -1, info.d_out)
            self._record(name, self.compressors[name].compress_factors(go, saved), batch)

    def _record(self, name: str, c: Tensor, batch: int) -> None:
        self._backward_seen = True
        c = c.to(self.layers[name].out_dtype)
        if self.loss_reduction == "mean":
            c = c * batch  # compression is linear: scaling k numbers instead of δ
        prev = self._results.get(name)
        self._results[name] = c if prev is None else prev + c

    def _on_fallback_forward(
        self, name: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if self._replaying or not torch.is_grad_enabled():
            return
        FB.check_module(name, module)
        if self._batch is None:
            self._batch = _first_batch(args, kwargs)
        batch = self._batch
        if batch is None:
            raise InvalidArgumentError(f"layer {name!r}: per-sample gradients need batched tensor input")
        idx, outs = FB.output_tensors(name, output, batch)
        if not outs:
            return
        self._new_step_if_needed()
        self._check_batch(name, batch)
        inputs = FB.saved_inputs(args, kwargs)
        hook = functools.partial(self._on_fallback_grad, name, inputs, idx, batch)
        # hooks live as long as the outputs; `remove()` disables them through `_active`
        if len(outs) == 1:  # a tensor hook also fires on a backward root (checkpoint's inner backward)
            outs[0].register_hook(lambda g: hook([g]))
        else:
            torch.autograd.graph.register_multi_grad_hook(outs, hook, mode="all")

    def _on_fallback_grad(
        self,
        name: str,
        inputs: tuple[Any, ...],
        idx: list[int],
        batch: int,
        grads: Sequence[Tensor | None],
    ) -> None:
        if not self._active:
            return
        u = self._units[name]
        self._replaying = True
        try:
            g = FB.per_sample_grads(u.module, u.params, inputs, idx, grads, batch)
        finally:
            self._replaying = False
        with torch.no_grad():
            self._record(name, self.compressors[name].compress_full(g), batch)


def attach(
    model: nn.Module,
    compressor: CompressorFactory,
    layers: Selector = None,
    loss_reduction: str = "sum",
    *,
    strict: bool = False,
    fallback: bool = True,
) -> GradientHandle:
    """Hooks ``model`` so every ``loss.backward()`` records compressed per-sample gradients.

    Args:
        model: the model (call it directly: its first tensor argument's dimension 0 is the batch).
        compressor: a factory building one compressor per layer: :class:`~grass_rs.FactGraSS`,
            :class:`~grass_rs.LoGra` or :class:`~grass_rs.Full`.
        layers: which modules (see :func:`grass_rs.capture.coverage.plan`); ``None`` = every module
            with trainable parameters: ``nn.Linear``, GPT-2 ``Conv1D``, ``nn.Conv1d``/``nn.Conv2d``,
            ``nn.Embedding``, ``nn.LayerNorm`` and RMSNorms in their fast form, anything else
            through the generic exact fallback.
        loss_reduction: ``"sum"`` if the loss sums per-sample losses, ``"mean"`` if it averages them.
        strict: raise if any trainable parameter is not captured (otherwise a
            :class:`~grass_rs.capture.coverage.CoverageWarning` names it, unless only ``layers``
            left it out).
        fallback: capture modules without a fast form through the generic fallback (a per-sample
            VJP of the module alone, compressed as a vector: FactGraSS → GraSS/SJLT, LoGra →
            Gaussian, Full → its projector).

    Returns:
        A :class:`GradientHandle`; use it as a context manager (hooks removed on exit) and read
        ``handle.gradients()`` (layer name → ``(batch, k)``), ``handle.flat()`` (``(batch, Σ k)``)
        and ``handle.coverage``.

    Raises:
        TypeError: a malformed selector, a named module without parameters, not a compressor factory.
        ValueError: unknown layer names, nothing selected, a bad ``loss_reduction``, a compressor
            configuration that does not fit a layer, or (``strict``) parameters left out.
    """
    return GradientHandle(model, compressor, layers, loss_reduction, strict=strict, fallback=fallback)

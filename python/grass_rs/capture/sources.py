"""Per-sample compressed gradients: the small interface the attribution pipeline needs.

:class:`GradientSource` is what :class:`grass_rs.attributor.Attributor` calls: given a batch it
returns layer → ``(batch, k_layer)`` float32 compressed per-sample gradients of a *sum-reduced*
loss. Two implementations:

* :class:`HookGradients` — uses :func:`grass_rs.attach` (layer hooks; factorized compressors
  such as FactGraSS/LoGra never form the per-sample gradient; the default path);
* :class:`FuncGradients` — ``torch.func`` (``vmap(grad)``) per-sample gradients of every selected
  Linear layer's weight and bias, flattened (``[weight.flatten(), bias]``) and projected with a
  :class:`ProjectorFactory` (or kept raw). Works for any model ``torch.func`` can trace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch.func import functional_call, grad, vmap

from .. import projection
from ..errors import ArgumentTypeError, InvalidArgumentError
from .compressors import CompressorFactory, PerLayerProjectors, make_compressor
from .coverage import enforce, plan
from .hooks import GradientHandle, Selector, attach

__all__ = [
    "BACKENDS",
    "FuncGradients",
    "GradientSource",
    "HookGradients",
    "call_model",
    "linear_layers",
    "make_source",
    "state_fingerprint",
]

BACKENDS = ("hooks", "func")

LossFn = Callable[[Any, Any], torch.Tensor]
Forward = Callable[[torch.nn.Module, Any], Any]


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """The default forward: ``model(**inputs)`` for a dict batch, ``model(inputs)`` otherwise."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def _checked_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        got = type(loss).__name__ if not isinstance(loss, torch.Tensor) else f"shape {tuple(loss.shape)}"
        raise ArgumentTypeError(
            f"`loss_fn` must return a scalar tensor (the per-sample losses summed), got {got}; "
            "for Hugging Face models use grass_rs.hf.causal_lm_loss / sequence_classification_loss "
            "(the model is called without labels=, so outputs.loss is None)"
        )
    return loss


def linear_layers(model: torch.nn.Module) -> list[str]:
    """Names of every ``torch.nn.Linear`` module, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


class GradientSource(Protocol):
    """Computes compressed per-sample gradients for one batch."""

    def __call__(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Layer → ``(batch, k_layer)`` float32 (CPU)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description (compressor, layers, seeds) for store fingerprints."""
        ...


class FuncGradients:
    """``torch.func`` per-sample gradients of selected Linear layers, optionally projected.

    Args:
        model: the model (put it in ``eval()`` mode for deterministic gradients).
        loss_fn: ``loss_fn(outputs, targets)`` reduced by **sum** over the batch.
        layers: Linear module names (default: all).
        factory: ``(layer_name, in_dim) -> projector`` or ``None`` for raw gradients.
        forward: ``forward(model, inputs)`` (default :func:`call_model`; dict batches as keywords).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        layers: Sequence[str] | None = None,
        factory: Callable[[str, int], projection.Projector] | None = None,
        forward: Forward = call_model,
    ) -> None:
        self.model, self.loss_fn, self.factory, self.forward = model, loss_fn, factory, forward
        self.layers = list(layers) if layers is not None else linear_layers(model)
        if not self.layers:
            raise InvalidArgumentError("the model has no Linear layers to attribute through; pass `layers`")
        modules = dict(model.named_modules())
        self._params: dict[str, list[str]] = {}
        for name in self.layers:
            if name not in modules:
                raise InvalidArgumentError(f"no module named {name!r} in the model")
            prefix = f"{name}." if name else ""
            self._params[name] = [prefix + p for p, _ in modules[name].named_parameters(recurse=False)]
        self.projectors: dict[str, projection.Projector] = {}
        if factory is not None:
            params = dict(model.named_parameters())
            for name, pnames in self._params.items():
                self.projectors[name] = factory(name, sum(params[p].numel() for p in pnames))

    def __call__(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        try:
            raw = self._raw(inputs, targets)
        except RuntimeError as e:
            if "vmap" not in str(e):
                raise
            raise InvalidArgumentError(_vmap_hint(self.model, e)) from e
        if not self.projectors:
            return {name: g.float() for name, g in raw.items()}
        return {name: torch.as_tensor(self.projectors[name](g.float())) for name, g in raw.items()}

    def _raw(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        wanted = [p for ps in self._params.values() for p in ps]
        sel = {p: params[p].detach() for p in wanted}
        rest = {k: v.detach() for k, v in params.items() if k not in sel}
        rest.update(dict(self.model.named_buffers()))

        def loss(p: dict[str, torch.Tensor], x: Any, y: Any) -> torch.Tensor:
            xb = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), x)
            yb = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), y)
            params = {**rest, **p}
            return _checked_loss(
                self.loss_fn(self.forward(_Functional(self.model, params), xb), yb)  # type: ignore[arg-type]
            )

        g = vmap(grad(loss), in_dims=(None, 0, 0))(sel, inputs, targets)
        return {name: _layout(g, pnames) for name, pnames in self._params.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "torch.func",
            "layers": self.layers,
            "compressor": repr(self.factory),
            "projectors": {name: repr(p) for name, p in self.projectors.items()},
        }


def _vmap_hint(model: torch.nn.Module, error: RuntimeError) -> str:
    """What to do when ``vmap(grad(...))`` cannot trace the model (data-dependent control flow)."""
    first = str(error).split(". ")[0]
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None) if config is not None else None
    if attn is not None and attn != "eager":
        return (
            f"backend='func' (torch.func.vmap) cannot run this Hugging Face model's {attn!r} attention: its "
            "mask code branches on tensor values, which vmap does not support. Load the model with "
            'attn_implementation="eager" (e.g. AutoModelForCausalLM.from_pretrained(path, '
            'attn_implementation="eager"), or set model.config._attn_implementation = "eager"), or use '
            f"backend='hooks' (the default). (torch: {first})"
        )
    return (
        "backend='func' (torch.func.vmap) cannot trace this model: its forward calls .item() or branches "
        "on tensor values. Use backend='hooks' (the default), or make the forward vmap-friendly. "
        f"(torch: {first})"
    )


class _Functional:
    """Calls ``functional_call(model, params, ...)`` when called like the model (for ``forward``)."""

    def __init__(self, model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
        self.model, self.params = model, params

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.params, args, kwargs)


def _layout(g: Mapping[str, torch.Tensor], pnames: list[str]) -> torch.Tensor:
    """Per-sample ``[∂W | ∂b]`` flattened row-major (the Linear convention of :mod:`grass_rs.layers`)."""
    weight = [p for p in pnames if p.endswith("weight")]
    bias = [p for p in pnames if p.endswith("bias")]
    if len(weight) == 1 and g[weight[0]].ndim == 3 and len(pnames) == len(weight) + len(bias):
        parts = [g[weight[0]]] + [g[b][..., None] for b in bias]
        return torch.cat(parts, dim=2).reshape(g[weight[0]].shape[0], -1).detach().cpu()
    return torch.cat([g[p].reshape(g[p].shape[0], -1) for p in pnames], dim=1).detach().cpu()


class HookGradients:
    """Compressed per-sample gradients recorded by :func:`grass_rs.attach` hooks.

    The hooks stay attached between calls; :meth:`close` removes them. The backward pass uses
    ``torch.autograd.grad`` so the model's ``.grad`` fields are left untouched.

    Args:
        model: the model.
        loss_fn: sum-reduced ``loss_fn(outputs, targets)``.
        factory: a compressor factory (``FactGraSS``, ``LoGra``, ``Full``, :class:`PerLayerProjectors`).
        layers: a layer selector for :func:`grass_rs.attach` (default: every module with trainable
            parameters, layers without a fast form through the exact fallback).
        forward: ``forward(model, inputs)`` (default :func:`call_model`; dict batches as keywords).
        strict: raise if any trainable parameter would not be captured (else a ``CoverageWarning``).

    Raises:
        InvalidArgumentError / ArgumentTypeError: unknown layers, nothing to capture, or (``strict``)
            uncovered parameters — at construction, before any data is read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        factory: CompressorFactory,
        layers: Selector = None,
        forward: Forward = call_model,
        strict: bool = False,
    ) -> None:
        self.model, self.loss_fn, self.factory, self.layers = model, loss_fn, factory, layers
        self.forward, self.strict = forward, strict
        _, self.coverage = plan(model, layers)  # unknown / unsupported layers fail here
        if strict:
            enforce(self.coverage, strict=True)
        self._handle: GradientHandle | None = None
        self._description: dict[str, Any] | None = None

    def handle(self) -> GradientHandle:
        """The live :class:`~grass_rs.GradientHandle` (attaching on first use)."""
        if self._handle is None:
            self._handle = attach(
                self.model, self.factory, self.layers, loss_reduction="sum", strict=self.strict
            )
        return self._handle

    def __call__(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        h = self.handle()
        # every trainable parameter: fallback units (e.g. attention) own parameters of submodules
        params = [p for p in self.model.parameters() if p.requires_grad]
        with torch.enable_grad():
            loss = _checked_loss(self.loss_fn(self.forward(self.model, inputs), targets))
            torch.autograd.grad(loss, params, allow_unused=True)
        grads = h.gradients()
        assert isinstance(grads, dict)
        return {k: v.detach().to("cpu", torch.float32) for k, v in grads.items()}

    def close(self) -> None:
        """Removes the hooks."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def describe(self) -> dict[str, Any]:
        if self._description is None:
            was_open = self._handle is not None
            h = self.handle()
            self._description = {
                "backend": "hooks",
                "compressor": repr(self.factory),
                "layers": list(h.layers),
                "compressors": {n: repr(c) for n, c in h.compressors.items()},
                "coverage": str(h.coverage),
            }
            if not was_open:
                self.close()
        return self._description


def state_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def as_source_map(grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies a gradients dict to float32 CPU tensors."""
    return {k: torch.as_tensor(v).detach().to("cpu", torch.float32) for k, v in grads.items()}


def make_source(
    model: torch.nn.Module,
    loss_fn: LossFn,
    compressor: Any = "default",
    *,
    k: int = 256,
    layers: Any = None,
    seed: int = 0,
    backend: str = "hooks",
    forward: Forward = call_model,
    strict: bool = False,
) -> GradientSource:
    """The :class:`GradientSource` for ``compressor`` on ``backend`` — the one place that decides it.

    The backend is what the caller says, never inferred from the model's or compressor's type:

    ============================================  ==========================  ===========================
    ``compressor``                                ``backend="hooks"``         ``backend="func"``
    ============================================  ==========================  ===========================
    ``"default"``                                 ``FactGraSS(k)``            ``ProjectorFactory("grass", k)``
    a name (``"factgrass"``, ``"grass"``, ...)    :func:`make_compressor`     projector kinds only
    ``FactGraSS`` / ``LoGra`` / ``Full``          as given                    error (hooks only)
    ``ProjectorFactory`` / ``(name, p) -> P``     per layer, materialized     per module, ``torch.func``
    ``None``                                      raw gradients               raw gradients
    a :class:`GradientSource`                     used as is                  used as is
    ============================================  ==========================  ===========================

    ``forward(model, inputs)`` calls the model on a batch (default :func:`call_model`: a dict batch
    is passed as keywords; :func:`grass_rs.hf.forward` also drops ``labels`` and adds ``position_ids``).

    Raises:
        InvalidArgumentError: unknown backend or name, unknown layers.
        ArgumentTypeError: a compressor the backend does not take, unsupported layers.
    """
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    if hasattr(compressor, "describe") and callable(compressor):
        return compressor  # type: ignore[no-any-return]
    if isinstance(compressor, str):
        if compressor == "default":
            compressor = "factgrass" if backend == "hooks" else "grass"
        if backend == "func":
            if compressor in ("factgrass", "logra"):
                raise InvalidArgumentError(
                    f"compressor {compressor!r} is factorized and needs backend='hooks'; "
                    "backend='func' takes a projector kind such as 'grass'"
                )
            compressor = projection.ProjectorFactory(compressor, k, seed=seed)
        else:
            compressor = make_compressor(compressor, k, seed=seed)
    if isinstance(compressor, CompressorFactory):
        if backend == "func":
            raise ArgumentTypeError(
                f"{type(compressor).__name__} runs in layer hooks: use backend='hooks', or pass a "
                "grass_rs.ProjectorFactory for backend='func'"
            )
        return HookGradients(model, loss_fn, compressor, layers, forward, strict=strict)
    if compressor is None or callable(compressor):
        if backend == "func":
            return FuncGradients(model, loss_fn, layers, compressor, forward)
        return HookGradients(model, loss_fn, PerLayerProjectors(compressor), layers, forward, strict=strict)
    raise ArgumentTypeError(
        "`compressor` must be 'default', a compressor name, a compressor factory, a projector factory, "
        f"None or a GradientSource, got {type(compressor).__name__}"
    )

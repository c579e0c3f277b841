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

from . import projection
from .compressors import CompressorFactory, FullCompressor, LayerCompressor, layer_seed
from .hooks import GradientHandle, Selector, attach
from .layers import LayerInfo

__all__ = [
    "FuncGradients",
    "GradientSource",
    "HookGradients",
    "PerLayerProjectors",
    "ProjectorFactory",
    "layer_seed",
    "linear_layers",
]

LossFn = Callable[[Any, Any], torch.Tensor]

PROJECTORS: dict[str, type[projection.Projector]] = {
    "grass": projection.GraSS,
    "sjlt": projection.SJLT,
    "mask": projection.Mask,
    "gaussian": projection.Gaussian,
    "rademacher": projection.Rademacher,
    "srht": projection.SRHT,
}


def linear_layers(model: torch.nn.Module) -> list[str]:
    """Names of every ``torch.nn.Linear`` module, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


class ProjectorFactory:
    """Builds one seeded projector per layer: ``factory(layer_name, in_dim) -> Projector``.

    Args:
        kind: ``"grass"``, ``"sjlt"``, ``"mask"``, ``"gaussian"`` or ``"rademacher"``.
        out_dim: ``k`` per layer (clipped to the layer's ``in_dim``).
        seed: base seed; each layer uses :func:`layer_seed` ``(seed, name)``.
        mask_factor: GraSS keeps ``mask_factor · k`` coordinates before its SJLT (paper: 4).
    """

    def __init__(self, kind: str, out_dim: int, *, seed: int = 0, mask_factor: int = 4) -> None:
        if kind not in PROJECTORS:
            raise ValueError(f"unknown projector {kind!r}; choose one of {sorted(PROJECTORS)}")
        self.kind, self.out_dim, self.seed, self.mask_factor = kind, int(out_dim), int(seed), int(mask_factor)

    def __call__(self, name: str, in_dim: int) -> projection.Projector:
        k = min(self.out_dim, in_dim)
        seed = layer_seed(self.seed, name)
        if self.kind == "grass":
            return projection.GraSS(in_dim, k, mask_dim=min(self.mask_factor * k, in_dim), seed=seed)
        cls: Any = PROJECTORS[self.kind]
        return cls(in_dim, k, seed=seed)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        args = f"out_dim={self.out_dim}, seed={self.seed}, mask_factor={self.mask_factor}"
        return f"ProjectorFactory({self.kind!r}, {args})"


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
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        layers: Sequence[str] | None = None,
        factory: Callable[[str, int], projection.Projector] | None = None,
    ) -> None:
        self.model, self.loss_fn, self.factory = model, loss_fn, factory
        self.layers = list(layers) if layers is not None else linear_layers(model)
        if not self.layers:
            raise ValueError("the model has no Linear layers to attribute through; pass `layers`")
        modules = dict(model.named_modules())
        self._params: dict[str, list[str]] = {}
        for name in self.layers:
            if name not in modules:
                raise ValueError(f"no module named {name!r} in the model")
            prefix = f"{name}." if name else ""
            self._params[name] = [prefix + p for p, _ in modules[name].named_parameters(recurse=False)]
        self.projectors: dict[str, projection.Projector] = {}
        if factory is not None:
            params = dict(model.named_parameters())
            for name, pnames in self._params.items():
                self.projectors[name] = factory(name, sum(params[p].numel() for p in pnames))

    def __call__(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        raw = self._raw(inputs, targets)
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
            return self.loss_fn(functional_call(self.model, {**rest, **p}, (xb,)), yb)

        g = vmap(grad(loss), in_dims=(None, 0, 0))(sel, inputs, targets)
        return {name: _layout(g, pnames) for name, pnames in self._params.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "torch.func",
            "layers": self.layers,
            "compressor": repr(self.factory),
            "projectors": {name: repr(p) for name, p in self.projectors.items()},
        }


def _layout(g: Mapping[str, torch.Tensor], pnames: list[str]) -> torch.Tensor:
    """Per-sample ``[∂W | ∂b]`` flattened row-major (the Linear convention of :mod:`grass_rs.layers`)."""
    weight = [p for p in pnames if p.endswith("weight")]
    bias = [p for p in pnames if p.endswith("bias")]
    if len(weight) == 1 and g[weight[0]].ndim == 3 and len(pnames) == len(weight) + len(bias):
        parts = [g[weight[0]]] + [g[b][..., None] for b in bias]
        return torch.cat(parts, dim=2).reshape(g[weight[0]].shape[0], -1).detach().cpu()
    return torch.cat([g[p].reshape(g[p].shape[0], -1) for p in pnames], dim=1).detach().cpu()


class PerLayerProjectors(CompressorFactory):
    """A :class:`~grass_rs.CompressorFactory` (for :func:`grass_rs.attach`) that applies a
    :class:`ProjectorFactory` projector to each layer's materialized gradient (``[∂W | ∂b]``).
    Unlike ``grass_rs.Full`` it clips ``k`` to small layers and names seeds like :class:`FuncGradients`,
    so both backends give identical gradients."""

    def __init__(self, factory: ProjectorFactory) -> None:
        self.factory, self.seed = factory, factory.seed

    def _build(self, layer: LayerInfo) -> LayerCompressor:
        return FullCompressor(layer, self.factory(layer.name, layer.grad_size))

    def __repr__(self) -> str:
        return f"PerLayerProjectors({self.factory!r})"


class HookGradients:
    """Compressed per-sample gradients recorded by :func:`grass_rs.attach` hooks.

    The hooks stay attached between calls; :meth:`close` removes them. The backward pass uses
    ``torch.autograd.grad`` so the model's ``.grad`` fields are left untouched.

    Args:
        model: the model.
        loss_fn: sum-reduced ``loss_fn(outputs, targets)``.
        factory: a compressor factory (``FactGraSS``, ``LoGra``, ``Full``, :class:`PerLayerProjectors`).
        layers: a layer selector for :func:`grass_rs.attach` (default: every supported layer).
    """

    def __init__(
        self, model: torch.nn.Module, loss_fn: LossFn, factory: CompressorFactory, layers: Selector = None
    ) -> None:
        self.model, self.loss_fn, self.factory, self.layers = model, loss_fn, factory, layers
        self._handle: GradientHandle | None = None
        self._description: dict[str, Any] | None = None

    def handle(self) -> GradientHandle:
        """The live :class:`~grass_rs.GradientHandle` (attaching on first use)."""
        if self._handle is None:
            self._handle = attach(self.model, self.factory, self.layers, loss_reduction="sum")
        return self._handle

    def __call__(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        h = self.handle()
        modules = dict(self.model.named_modules())
        params = [p for n in h.layers for p in modules[n].parameters(recurse=False) if p.requires_grad]
        with torch.enable_grad():
            loss = self.loss_fn(self.model(inputs), targets)
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

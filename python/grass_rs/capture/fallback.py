"""The generic exact fallback: per-sample parameter gradients of one module from its own VJP.

For a module without a fast form (BatchNorm/GroupNorm in eval mode, custom layers, attention
modules with their own parameters, ...), the forward hook keeps the module's inputs and, in
backward, receives ``δ`` for each of its outputs. The per-sample gradient of sample ``b`` is the
VJP of the module alone,

    ``g_b = ∂/∂θ Σ_j ⟨module(θ; inputs_b)_j, δ_{b,j}⟩``,

computed with ``torch.func.vmap(grad(...))`` over the samples (each sample is run as a batch of
one). Inputs whose dimension 0 is the batch size are split per sample; other inputs (position
tables, masks of batch 1, flags) are shared. Only the module's own trainable parameters are
differentiated; its buffers and sub-modules' parameters are constants here (sub-modules with
parameters are units of their own). The module must be deterministic (no dropout in train mode):
it is run again here.

BatchNorm with batch statistics (train mode, or without running statistics) couples the samples
of a batch, so a sample's gradient is not defined on its own: it is rejected with an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import InvalidArgumentError

__all__ = ["check_module", "output_tensors", "per_sample_grads", "saved_inputs"]

Tensor = torch.Tensor


def check_module(name: str, module: nn.Module) -> None:
    """Raises for module states without per-sample gradients (BatchNorm on batch statistics)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or module.running_mean is None:
            raise InvalidArgumentError(
                f"layer {name!r}: {type(module).__name__} normalizes with batch statistics (train mode or "
                "track_running_stats=False), which couples the samples of a batch: a sample's gradient "
                "is not defined on its own. Call model.eval() so it uses its running statistics, or "
                "exclude it with `layers`."
            )


def saved_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``(args, kwargs)`` with every tensor detached (kept until backward)."""
    leaves, spec = tree_flatten((args, kwargs))
    return tuple(tree_unflatten([v.detach() if isinstance(v, Tensor) else v for v in leaves], spec))


def output_tensors(name: str, output: Any, batch: int) -> tuple[list[int], list[Tensor]]:
    """The output leaves that carry gradients: their positions in ``tree_flatten(output)`` and tensors.

    Raises:
        InvalidArgumentError: such an output whose dimension 0 is not the batch.
    """
    idx, tensors = [], []
    for i, v in enumerate(tree_flatten(output)[0]):
        if isinstance(v, Tensor) and v.requires_grad:
            if v.ndim == 0 or v.shape[0] != batch:
                raise InvalidArgumentError(
                    f"layer {name!r}: output {i} has shape {tuple(v.shape)}; per-sample gradients need the "
                    f"sample dimension ({batch}) first in every output that carries a gradient"
                )
            idx.append(i)
            tensors.append(v)
    return idx, tensors


def per_sample_grads(
    module: nn.Module,
    params: Mapping[str, Tensor],
    inputs: tuple[Any, ...],
    out_idx: Sequence[int],
    grads: Sequence[Tensor | None],
    batch: int,
) -> Tensor:
    """The exact per-sample gradients of ``module``'s ``params`` for output gradients ``grads``.

    Args:
        module: the module (called through ``functional_call``).
        params: relative parameter name → parameter (the ones to differentiate), in layout order.
        inputs: ``(args, kwargs)`` saved by :func:`saved_inputs`.
        out_idx: positions of the gradient-carrying outputs in ``tree_flatten(output)``.
        grads: ``δ`` for each of them, ``(batch, ...)``, or ``None`` where none arrived.
        batch: the number of samples ``B``.

    Returns:
        ``(B, p)``: each sample's parameter gradients flattened and concatenated in ``params`` order,
        in the parameters' dtype.
    """
    if all(g is None for g in grads):
        p = sum(v.numel() for v in params.values())
        first = next(iter(params.values()))
        return torch.zeros(batch, p, dtype=first.dtype, device=first.device)
    leaves, spec = tree_flatten(inputs)
    split = [i for i, v in enumerate(leaves) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == batch]
    used = [(j, g.detach()) for j, g in zip(out_idx, grads, strict=True) if g is not None]
    primals = {n: p.detach() for n, p in params.items()}

    def vjp_one(p: dict[str, Tensor], xs: list[Tensor], gs: list[Tensor]) -> Tensor:
        full = list(leaves)
        for i, x in zip(split, xs, strict=True):
            full[i] = x.unsqueeze(0)
        args, kwargs = tree_unflatten(full, spec)
        out = tree_flatten(functional_call(module, p, tuple(args), kwargs))[0]
        terms = [(out[j] * g.unsqueeze(0).to(out[j].dtype)).sum() for (j, _), g in zip(used, gs, strict=True)]
        return torch.stack(terms).sum()

    with torch.enable_grad():
        g = vmap(grad(vjp_one), in_dims=(None, 0, 0))(
            primals, [leaves[i] for i in split], [g for _, g in used]
        )
    return torch.cat([g[n].reshape(batch, -1) for n in params], dim=1)

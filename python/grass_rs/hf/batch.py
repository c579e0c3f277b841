"""Dict batches for Hugging Face models: which keys go to the model, ``position_ids`` from the mask."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["forward", "is_hf_model", "model_inputs", "position_ids_from_mask", "to_device"]

#: Batch keys that are targets or metadata, never model inputs.
NOT_INPUTS = frozenset({"labels", "label", "index", "idx", "id", "length", "text"})


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` looks like a ``transformers`` model (a ``config`` with a ``model_type``)."""
    config = getattr(model, "config", None)
    return isinstance(model, torch.nn.Module) and isinstance(getattr(config, "model_type", None), str)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` positions counting only attended tokens: ``cumsum(mask) - 1``, padding clamped to 0.

    Right padding gives ``0 … T_b - 1`` (the default positions); left padding shifts them so every
    sequence starts at position 0, as when it is run alone.
    """
    if attention_mask.ndim != 2:
        raise InvalidArgumentError(f"`attention_mask` must be (batch, T), got {tuple(attention_mask.shape)}")
    m = attention_mask.long()
    return (m.cumsum(-1) - 1).clamp_min(0) * m


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return name in params


def model_inputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``model(**...)`` for a dict batch.

    Tensors only, without ``labels`` (the loss is computed by grass-rs, per sequence and summed) or
    metadata keys (``index``, ``text``, ...); ``position_ids`` derived from ``attention_mask`` when the
    model takes them and the batch has none.

    Raises:
        ArgumentTypeError: ``batch`` is not a mapping.
        InvalidArgumentError: no tensor inputs.
    """
    if not isinstance(batch, Mapping):
        raise ArgumentTypeError(f"an HF batch must be a dict of tensors, got {type(batch).__name__}")
    out = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k not in NOT_INPUTS}
    if not out:
        raise InvalidArgumentError(f"the batch has no tensor inputs for the model (keys: {sorted(batch)})")
    mask = out.get("attention_mask")
    if (
        mask is not None
        and "position_ids" not in out
        and "inputs_embeds" not in out
        and _accepts(model, "position_ids")
        and not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    ):
        out["position_ids"] = position_ids_from_mask(mask).to(mask.device)
    return out


def forward(model: torch.nn.Module, batch: Any) -> Any:
    """Calls ``model`` on a batch: ``model(**model_inputs(batch))`` for a dict, ``model(batch)`` else."""
    if isinstance(batch, Mapping):
        return model(**model_inputs(model, batch))
    return model(batch)


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Moves every tensor of a (nested) batch to ``device`` (``None``: unchanged)."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch

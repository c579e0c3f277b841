"""Per-sequence summed losses for Hugging Face heads, and the guard against HF's token-mean loss.

Why summed: per-sample gradients are gradients of ``Σ_b ℓ_b``. HF's ``model(..., labels=y).loss`` is
``(1/N) Σ_b Σ_t ℓ_bt`` with ``N`` the non-ignored tokens of the *whole batch*; with
``loss_reduction="mean"`` every sample's gradient is then scaled by ``B/N`` — a factor that depends on
which other sequences share its batch (0.4–1.7× on a typical corpus), so scores are silently
re-weighted. Use :func:`causal_lm_loss` (Σ_t ℓ_bt per sequence, summed) with ``loss_reduction="sum"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from ..capture.hooks import GradientHandle, Selector
from ..capture.hooks import attach as _attach
from ..errors import ArgumentTypeError, InvalidArgumentError
from .batch import is_hf_model

__all__ = [
    "TokenMeanLossError",
    "attach",
    "causal_lm_loss",
    "default_loss",
    "guard_token_mean",
    "logits_of",
    "per_sequence_causal_lm_loss",
    "sequence_classification_loss",
]

IGNORE_INDEX = -100


class TokenMeanLossError(InvalidArgumentError):
    """A hooked model computed HF's token-mean ``labels=`` loss, which re-weights samples."""


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits of a model output: ``outputs.logits``, ``outputs["logits"]``, ``outputs[0]``
    or the tensor itself."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    if not isinstance(logits, torch.Tensor):
        raise ArgumentTypeError(f"cannot find logits in a model output of type {type(outputs).__name__}")
    return logits


def _lm_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if not isinstance(batch, Mapping):
        raise ArgumentTypeError(
            "causal_lm_loss takes the batch dict (input_ids, attention_mask, labels), "
            f"got {type(batch).__name__}"
        )
    labels = batch.get("labels")
    if labels is None:
        ids = batch.get("input_ids")
        if ids is None:
            raise InvalidArgumentError("the batch has neither `labels` nor `input_ids`")
        labels = ids.clone()
    else:
        labels = labels.clone()
    mask = batch.get("attention_mask")
    if mask is not None:
        labels[mask == 0] = IGNORE_INDEX
    return labels, mask


def per_sequence_causal_lm_loss(outputs: Any, batch: Any) -> torch.Tensor:
    """``(B,)`` next-token cross-entropy summed over each sequence's non-padded, non-ignored tokens.

    Args:
        outputs: the model output (``.logits`` of shape ``(B, T, V)``).
        batch: the batch dict: ``labels`` (−100 = ignored; default ``input_ids``) and
            ``attention_mask`` (0 = padding, ignored whichever side it is on), or a ``(B, T)`` labels tensor.
    """
    logits = logits_of(outputs)
    labels, mask = _lm_labels(batch)
    labels = labels.to(logits.device)
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise InvalidArgumentError(
            f"causal LM loss: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match"
        )
    shifted = labels[:, 1:]
    if mask is not None:  # a padding position never predicts (left padding: the one before a sequence)
        shifted = shifted.masked_fill(mask[:, :-1].to(logits.device) == 0, IGNORE_INDEX)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        shifted.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return ce.reshape(shifted.shape).sum(dim=1)


def causal_lm_loss(outputs: Any, batch: Any) -> torch.Tensor:
    """Σ over the batch of :func:`per_sequence_causal_lm_loss` (use with ``loss_reduction="sum"``)."""
    return per_sequence_causal_lm_loss(outputs, batch).sum()


def sequence_classification_loss(outputs: Any, batch: Any) -> torch.Tensor:
    """Summed cross-entropy of ``labels`` (integer) or summed squared error (float labels, regression).

    ``batch`` is the batch dict (key ``labels`` or ``label``) or the labels tensor.
    """
    logits = logits_of(outputs)
    labels = batch
    if isinstance(batch, Mapping):
        labels = batch.get("labels", batch.get("label"))
    if not isinstance(labels, torch.Tensor):
        raise InvalidArgumentError("sequence classification loss: the batch has no `labels` tensor")
    labels = labels.to(logits.device)
    if labels.is_floating_point():
        return (
            (logits.float().reshape(labels.shape[0], -1) - labels.reshape(labels.shape[0], -1)) ** 2
        ).sum()
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")


def default_loss(model: torch.nn.Module) -> Any:
    """The summed loss that fits an HF model's head (from its class name and ``config.architectures``).

    Raises:
        InvalidArgumentError: not an HF model, or a head without a default loss (pass ``loss_fn``).
    """
    if not is_hf_model(model):
        raise InvalidArgumentError(f"{type(model).__name__} is not a Hugging Face model; pass `loss_fn`")
    names = [type(model).__name__, *(getattr(model.config, "architectures", None) or [])]
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return causal_lm_loss
    if any(n.endswith("ForSequenceClassification") for n in names):
        return sequence_classification_loss
    raise InvalidArgumentError(
        f"no default loss for {type(model).__name__}: pass `loss_fn` (e.g. grass_rs.hf.causal_lm_loss)"
    )


def _refuse_labels(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if kwargs.get("labels") is not None:
        raise TokenMeanLossError(
            f"{type(module).__name__} was called with labels=: its loss is a token mean over the whole "
            "batch, which scales each sample's gradient by B / (tokens in the batch) and silently "
            "re-weights samples. Call the model without labels and use "
            "grass_rs.hf.causal_lm_loss(outputs, batch) (per-sequence sums) with loss_reduction='sum'."
        )


def guard_token_mean(model: torch.nn.Module) -> RemovableHandle:
    """Makes ``model(..., labels=...)`` raise :class:`TokenMeanLossError` (until the handle is removed)."""
    return model.register_forward_pre_hook(_refuse_labels, with_kwargs=True)


def attach(
    model: torch.nn.Module, compressor: Any, layers: Selector = None, loss_reduction: str = "sum"
) -> GradientHandle:
    """:func:`grass_rs.attach` for an HF model, refusing calls with ``labels=`` (see the module doc).

    ::

        with grass_rs.hf.attach(model, grass_rs.FactGraSS(256)) as h:
            grass_rs.hf.causal_lm_loss(grass_rs.hf.forward(model, batch), batch).backward()
    """
    handle = _attach(model, compressor, layers, loss_reduction)
    handle._hooks.append(guard_token_mean(model))
    return handle

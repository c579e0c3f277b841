"""Hugging Face models in grass-rs: batch handling and per-sequence **summed** losses.

Nothing here imports ``transformers``: models are recognized by duck typing (a ``config`` with a
``model_type``), outputs by their ``.logits``.

* :func:`model_inputs` — the keyword arguments for ``model(**...)`` from a dict batch: tensors only,
  ``labels`` removed (so the model computes no token-mean loss) and ``position_ids`` taken from the
  attention mask (left padding gives every sequence positions ``0, 1, ...`` from its first token).
* :func:`causal_lm_loss` — Σ over sequences of Σ over their non-padded, non-ignored (−100) next-token
  cross-entropies: every sequence's gradient is that of its own summed loss, whatever the batch.
* :func:`sequence_classification_loss` — summed cross-entropy (or summed squared error for
  regression heads) of the ``labels``.
* :func:`default_loss` — the loss that fits a model's head; :func:`guard_token_mean` /
  :func:`attach` — an error when a hooked model is called with ``labels=`` (HF's own loss is a token
  mean over the batch, which re-weights each sample by ``B / (tokens in the batch)``).
"""

from __future__ import annotations

from .batch import forward, is_hf_model, model_inputs, position_ids_from_mask, to_device
from .losses import (
    TokenMeanLossError,
    attach,
    causal_lm_loss,
    default_loss,
    guard_token_mean,
    logits_of,
    per_sequence_causal_lm_loss,
    sequence_classification_loss,
)

__all__ = [
    "TokenMeanLossError",
    "attach",
    "causal_lm_loss",
    "default_loss",
    "forward",
    "guard_token_mean",
    "is_hf_model",
    "logits_of",
    "model_inputs",
    "per_sequence_causal_lm_loss",
    "position_ids_from_mask",
    "sequence_classification_loss",
    "to_device",
]

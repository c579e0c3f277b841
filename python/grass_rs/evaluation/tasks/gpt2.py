"""The study's language-model task: a 2-layer GPT-2 (``n_embd = 32``, byte vocabulary, built from a
config) trained on 32-byte windows of the standard library's own ``.py`` files (256 train / 128
test); LoGra vs FactGraSS with ``k`` per layer through :func:`grass_rs.attach`. Ground truth: the
log-odds of each test sequence under the subset models."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...capture import attach
from ...data.bundled import single_thread, stdlib_sequences
from .. import lds as L
from .base import HookedTask, cache_spec

__all__ = ["LM_COMPRESSORS", "LM_HP", "LM_KS", "LM_MODELS", "LMTask", "build_lm_task", "seq_log_prob"]

LM_MODELS = 40

LM_HP: dict[str, float] = {
    "seq_len": 32,
    "n_train": 256,
    "n_test": 128,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 2,
    "steps": 150,
    "lr": 5e-3,
    "weight_decay": 1e-3,
}
LM_KS = (16, 64, 256)
LM_COMPRESSORS = ("logra", "factgrass")


def _gpt2(seed: int, hp: dict[str, float]) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=256,
        n_positions=int(hp["seq_len"]),
        n_embd=int(hp["n_embd"]),
        n_layer=int(hp["n_layer"]),
        n_head=int(hp["n_head"]),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def seq_log_prob(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``(n,)`` total log-probability of tokens ``1 … T−1`` of each sequence given its prefix."""
    logits = model(ids).logits[:, :-1]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(1)


def _train_lm(seed: int, ids: torch.Tensor, hp: dict[str, float]) -> nn.Module:
    model = _gpt2(seed, hp)
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    with single_thread():
        for _ in range(int(hp["steps"])):
            opt.zero_grad()
            (-seq_log_prob(model, ids).mean()).backward()
            opt.step()
    return model.eval()


@dataclass
class LMTask(HookedTask):
    """The GPT-2 task (an :class:`~grass_rs.evaluation.tasks.base.EvalTask`): ground truth plus the
    full model and its data; gradients are captured per compressor."""

    name: str
    subsets: np.ndarray
    outputs: np.ndarray
    model: nn.Module
    train_ids: torch.Tensor
    test_ids: torch.Tensor
    retrain_s: float
    COMPRESSORS = LM_COMPRESSORS

    def capture(self, factory: Any, split: str, limit: int | None = None) -> dict[str, torch.Tensor]:
        """Compressed per-sequence gradients of ``−log p(seq)`` (batches of 32)."""
        ids = (self.train_ids if split == "train" else self.test_ids)[:limit]
        parts: list[dict[str, torch.Tensor]] = []
        with attach(self.model, factory, loss_reduction="sum") as h:
            for s in range(0, ids.shape[0], 32):
                torch.autograd.grad((-seq_log_prob(self.model, ids[s : s + 32])).sum(), self._params())
                g = h.gradients()
                assert isinstance(g, dict)
                parts.append(g)
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]


def build_lm_task(
    *,
    n_models: int = LM_MODELS,
    alpha: float = 0.5,
    cache_dir: str | Path = "grass-rs-output/lds-cache",
    seed: int = 0,
    progress: bool = False,
) -> LMTask:
    """Trains (or loads) the ``M`` subset GPT-2s; ground truth = log-odds of each test sequence."""
    hp = LM_HP
    n_train, n_test = int(hp["n_train"]), int(hp["n_test"])
    ids = stdlib_sequences(n_train + n_test, int(hp["seq_len"]), seed)
    tr, te = ids[:n_train], ids[n_train:]
    subsets = L.sample_subsets(n_train, n_models, alpha, seed=seed)
    import sys

    spec = cache_spec("gpt2", n_train=n_train, seed=seed, alpha=alpha, hp=hp, python=sys.version_info[:2])
    t0 = time.perf_counter()
    outputs = L.ground_truth(
        lambda idx, m: _train_lm(seed, tr[torch.as_tensor(idx)], hp),
        lambda model: L.sequence_log_odds(seq_log_prob(model, te)),
        subsets,
        cache=L.ModelCache(cache_dir, spec),
        build_fn=lambda: _gpt2(seed, hp),
        progress=progress,
    )
    retrain_s = time.perf_counter() - t0
    return LMTask("gpt2", subsets, outputs, _train_lm(seed, tr, hp), tr, te, retrain_s)

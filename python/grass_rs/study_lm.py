"""The study's language-model task: a tiny GPT-2 on the standard library's own source text,
LoGra vs FactGraSS per layer through :func:`grass_rs.attach` (see :mod:`grass_rs.study`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import lds as L
from ._study_common import DAMPINGS, STUDY_VERSION, _combine, _evaluate, _single_thread

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


def stdlib_sequences(n: int, seq_len: int, seed: int = 0, n_files: int = 8) -> torch.Tensor:
    """``n`` byte sequences of length ``seq_len`` from the standard library's own ``.py`` files.

    Non-overlapping windows of the first ``n_files`` modules (sorted by name) of the directory of
    ``os.py``, shuffled with ``seed``. The text depends on the Python version.
    """

    files = sorted(Path(os.__file__).parent.glob("*.py"))[:n_files]
    windows: list[bytes] = []
    for f in files:
        data = f.read_bytes()
        windows += [data[i : i + seq_len] for i in range(0, len(data) - seq_len + 1, seq_len)]
    if len(windows) < n:
        raise ValueError(f"only {len(windows)} windows of {seq_len} bytes in {len(files)} files, need {n}")
    order = np.random.default_rng(seed).permutation(len(windows))[:n]
    return torch.tensor([list(windows[i]) for i in order], dtype=torch.int64)


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
    with _single_thread():
        for _ in range(int(hp["steps"])):
            opt.zero_grad()
            (-seq_log_prob(model, ids).mean()).backward()
            opt.step()
    return model.eval()


@dataclass
class LMTask:
    """The GPT-2 task: ground truth plus the full model and its data (gradients per compressor)."""

    name: str
    subsets: np.ndarray
    outputs: np.ndarray
    model: nn.Module
    train_ids: torch.Tensor
    test_ids: torch.Tensor
    retrain_s: float


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

    spec = {
        "task": "gpt2",
        "version": STUDY_VERSION,
        "model_seed": seed,
        "data_seed": seed,
        "subset_seed": seed,
        "alpha": alpha,
        "hp": hp,
        "python": sys.version_info[:2],
    }
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


def _lm_grads(
    task: LMTask, factory: Any, batch: int = 32
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Compressed per-sequence gradients of ``−log p(seq)`` (train, test) and the capture time."""
    from .hooks import attach

    def capture(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: list[dict[str, torch.Tensor]] = []
        for s in range(0, ids.shape[0], batch):
            task.model.zero_grad(set_to_none=True)
            with attach(task.model, factory, loss_reduction="sum") as h:
                (-seq_log_prob(task.model, ids[s : s + batch])).sum().backward()
            g = h.gradients()
            assert isinstance(g, dict)
            parts.append(g)
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    capture(task.train_ids[:batch])  # warm-up (builds the compressors' caches)
    t0 = time.perf_counter()
    tr, te = capture(task.train_ids), capture(task.test_ids)
    return tr, te, time.perf_counter() - t0


def run_lm_one(
    task: LMTask,
    compressor: str,
    k: int,
    *,
    seed: int = 0,
    n_proj_seeds: int = 5,
    dampings: Sequence[float] = DAMPINGS,
    n_bootstrap: int = 1000,
) -> dict[str, Any]:
    """LoGra or FactGraSS at ``k`` per layer on the GPT-2 task; returns a table row.

    ``compress_s`` here is the whole capture (forward, backward and compression with hooks) of the
    training and test gradients, first projector seed.
    """
    from .compressors import FactGraSS, LoGra

    per_seed: list[L.LDSResult] = []
    capture_s = score_s = 0.0
    for i in range(n_proj_seeds):
        factory = LoGra(k, seed=seed + i) if compressor == "logra" else FactGraSS(k, seed=seed + i)
        tr, te, t_c = _lm_grads(task, factory)
        t0 = time.perf_counter()
        tr64 = {n: g.double() for n, g in tr.items()}
        te64 = {n: g.double() for n, g in te.items()}
        per_seed.append(_evaluate(task, tr64, te64, dampings, seed))
        if i == 0:
            capture_s, score_s = t_c, time.perf_counter() - t0
    res = _combine(per_seed, n_bootstrap, seed)
    return {
        "task": task.name,
        "compressor": compressor,
        "k": int(k),
        "p": sum(p.numel() for p in task.model.parameters()),
        "lds": res.mean,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "lds_str": str(res),
        "lds_per_seed": [r.mean for r in per_seed],
        "lds_seed_sd": float(np.std([r.mean for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0,
        "damping": [r.damping for r in per_seed],
        "compress_s": capture_s,
        "score_s": score_s,
        "total_s": capture_s + score_s,
        "n_models": res.n_subsets,
    }

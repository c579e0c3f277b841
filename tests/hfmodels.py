"""Tiny Hugging Face models and corpora built offline for the hf/ and index/ tests (no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = (
    "the a cat dog bird fish sees eats likes runs jumps over under near big small red blue green "
    "house tree river stone quickly slowly today never always and but while"
).split()


def texts(n: int, seed: int = 0, lo: int = 4, hi: int = 20) -> list[str]:
    """``n`` distinct pseudo-sentences of ``lo``..``hi`` words."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def tokenizer(corpus: list[str]):  # type: ignore[no-untyped-def]
    """A word-level fast tokenizer trained on ``corpus`` (with <pad>, <eos>, <unk>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def model_dir(
    root: Path, kind: str = "gpt2", corpus: list[str] | None = None, seed: int = 0, d: int = 32
) -> Path:
    """Saves a tiny randomly initialized ``kind`` ("gpt2" or "llama") causal LM + tokenizer to ``root``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = tokenizer(corpus or texts(200))
    v = len(tok)
    torch.manual_seed(seed)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=d, n_head=2, vocab_size=v, n_positions=64, bos_token_id=1,
                         eos_token_id=1, pad_token_id=0)  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=v, max_position_embeddings=64, bos_token_id=1,
                          eos_token_id=1, pad_token_id=0)  # fmt: skip
        model = LlamaForCausalLM(cfg)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

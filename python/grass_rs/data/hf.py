"""Your own corpus for Hugging Face models: load with ``datasets``, tokenize, batch by length.

::

    corpus = load_corpus("train.jsonl", tokenizer, max_length=512)        # a `text` column
    corpus = load_corpus("sft.parquet", tokenizer, prompt_field="prompt", completion_field="completion")
    for rows in corpus.batches(8):                                      # similar lengths together
        batch = corpus.collate(rows, padding_side="right")              # input_ids, attention_mask, labels

Sources: a JSONL/JSON, CSV or Parquet file, a folder written by ``Dataset.save_to_disk``, or a hub
name (needs a network). Text: one ``text_field`` (loss on every token) or a ``prompt_field`` +
``completion_field`` pair (loss on the completion only: prompt labels are −100). Sequences are cut
to ``max_length`` tokens: a text from the right; a prompt/completion pair by cutting the **prompt from
the left** first (a leading BOS is kept), so the completion keeps its tokens, then the completion from
the right. Examples left with no loss token (an empty completion, a one-token text) are skipped and
listed in ``Corpus.skipped`` (``Corpus.examples`` maps rows back to the data's rows). ``datasets`` is
imported only when a file is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "Corpus",
    "length_batches",
    "load_corpus",
    "load_records",
    "require",
    "tokenizer_fingerprint",
    "truncate_pair",
]

IGNORE_INDEX = -100
_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def require(name: str, purpose: str = "Hugging Face models and datasets") -> ModuleType:
    """Imports an optional dependency or raises :class:`InvalidArgumentError` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pkg = {"faiss": "faiss-cpu"}.get(name, name)
        raise InvalidArgumentError(
            f"{purpose} need the optional package {pkg!r}: pip install 'grass-rs[hf]' (or pip install {pkg})"
        ) from None


def load_records(spec: str | os.PathLike[str], split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a file, a ``save_to_disk`` folder or a hub name.

    Raises:
        InvalidArgumentError: an unknown file type, a missing split, ``datasets`` not installed.
    """
    datasets = require("datasets")
    p = Path(spec)
    if p.is_dir():
        if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            raise InvalidArgumentError(f"{p} is a folder but not one written by Dataset.save_to_disk")
        ds = datasets.load_from_disk(str(p))
    elif p.is_file():
        kind = _FORMATS.get(p.suffix.lower())
        if kind is None:
            raise InvalidArgumentError(
                f"{p}: unknown data file type {p.suffix!r}; use .jsonl/.json, .csv or .parquet"
            )
        ds = datasets.load_dataset(kind, data_files={"train": str(p)}, split="train")
    elif p.suffix.lower() in _FORMATS or str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise InvalidArgumentError(f"data file or folder {p} does not exist")
    else:
        ds = datasets.load_dataset(str(spec), split=split)  # a hub name
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InvalidArgumentError(f"{spec} has splits {sorted(ds)}, not {split!r}")
        ds = ds[split]
    return ds


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's full definition (fast tokenizers) or its vocabulary."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr((tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)).encode())
    return h.hexdigest()


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length (stable sort by length, then cut).

    Deterministic: the same lengths always give the same batches (needed for resuming and sharding).
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"`batch_size` must be ≥ 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Corpus:
    """Tokenized examples: ``input_ids[i]``, ``labels[i]`` (−100 = no loss) and a display ``texts[i]``."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    texts: list[str]
    pad_id: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: the data's row of each example (rows with no loss token are skipped)
    examples: list[int] = field(default_factory=list)
    #: the data's rows that were skipped: no loss token left after truncation
    skipped: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    def batches(self, batch_size: int) -> list[list[int]]:
        """Length-bucketed batches of row indices (see :func:`length_batches`)."""
        return length_batches(self.lengths, batch_size)

    def collate(self, rows: Sequence[int], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``labels`` (padding −100) of ``rows``, padded on one side."""
        if padding_side not in ("left", "right"):
            raise InvalidArgumentError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}")
        t = max(len(self.input_ids[r]) for r in rows)
        ids = torch.full((len(rows), t), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), t), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(self.input_ids[r])
            sl = slice(0, n) if padding_side == "right" else slice(t - n, t)
            ids[i, sl] = torch.tensor(self.input_ids[r])
            labels[i, sl] = torch.tensor(self.labels[r])
            mask[i, sl] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def fingerprint(self) -> str:
        """SHA-256 of every example's tokens and labels (what the gradients depend on)."""
        h = hashlib.sha256()
        for ids, lab in zip(self.input_ids, self.labels, strict=True):
            h.update(json.dumps([ids, lab]).encode())
        return h.hexdigest()


def _fields(
    columns: Sequence[str], text_field: str | None, prompt_field: str | None, completion_field: str | None
) -> tuple[str | None, str | None, str | None]:
    if (prompt_field is None) != (completion_field is None):
        raise InvalidArgumentError("give both `prompt_field` and `completion_field`, or neither")
    if prompt_field is not None and text_field is not None:
        raise InvalidArgumentError("give either `text_field` or `prompt_field`/`completion_field`, not both")
    if prompt_field is None and text_field is None:
        if "text" in columns:
            text_field = "text"
        elif "prompt" in columns and "completion" in columns:
            prompt_field, completion_field = "prompt", "completion"
        else:
            raise InvalidArgumentError(
                f"no `text` column (or `prompt` + `completion`) among {list(columns)}: pass the field names"
            )
    for f in (text_field, prompt_field, completion_field):
        if f is not None and f not in columns:
            raise InvalidArgumentError(f"field {f!r} is not a column of the data; columns: {list(columns)}")
    return text_field, prompt_field, completion_field


def tokenize_records(
    records: Any,
    tokenizer: Any,
    *,
    text_field: str | None = None,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    max_length: int = 512,
    limit: int | None = None,
    skip_empty: bool = True,
) -> Corpus:
    """Tokenizes a ``datasets.Dataset`` (or a list of dicts) into a :class:`Corpus`.

    ``skip_empty``: skip (and list in ``Corpus.skipped``) examples with no loss token after
    truncation; ``False`` raises instead (queries: a query without loss tokens has no gradient).

    Raises:
        InvalidArgumentError: missing fields, ``max_length < 2``, non-string values, an empty corpus,
            (``skip_empty=False``) an example without loss tokens.
    """
    if max_length < 2:
        raise InvalidArgumentError(
            f"`max_length` must be ≥ 2 (a next-token loss needs 2 tokens), got {max_length}"
        )
    columns = list(records.column_names) if hasattr(records, "column_names") else list(records[0])
    text_field, prompt_field, completion_field = _fields(columns, text_field, prompt_field, completion_field)
    n = len(records) if limit is None else min(limit, len(records))
    if n == 0:
        raise InvalidArgumentError("the data has no examples")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids_all: list[list[int]] = []
    labels_all: list[list[int]] = []
    texts: list[str] = []
    examples: list[int] = []
    skipped: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    for i in range(n):
        rec = records[i]
        if text_field is not None:
            text = rec[text_field]
            if not isinstance(text, str):
                raise ArgumentTypeError(f"row {i}: field {text_field!r} is {type(text).__name__}, not text")
            ids = list(tokenizer(text)["input_ids"])[:max_length]
            labels = list(ids)
        else:
            prompt, completion = rec[prompt_field], rec[completion_field]
            if not (isinstance(prompt, str) and isinstance(completion, str)):
                raise ArgumentTypeError(f"row {i}: prompt and completion must be text")
            p_ids = list(tokenizer(prompt)["input_ids"])
            c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
            p_ids, c_ids = truncate_pair(p_ids, c_ids, max_length, bos)
            ids = p_ids + c_ids
            labels = [IGNORE_INDEX] * len(p_ids) + c_ids
            text = f"{prompt}\u2502{completion}"
        if not any(lab != IGNORE_INDEX for lab in labels[1:]):  # the first token is never predicted
            if not skip_empty:
                raise InvalidArgumentError(
                    f"example {i} has no token to put a loss on (an empty completion or a one-token text, "
                    f"after truncation to max_length={max_length}): {text[:80]!r}"
                )
            skipped.append(i)
            continue
        ids_all.append(ids)
        labels_all.append(labels)
        texts.append(text)
        examples.append(i)
    if not ids_all:
        raise InvalidArgumentError(
            f"none of the {n} examples has a token to put a loss on (empty completions or one-token texts)"
        )
    meta = {
        "text_field": text_field,
        "prompt_field": prompt_field,
        "completion_field": completion_field,
        "max_length": max_length,
    }
    return Corpus(ids_all, labels_all, texts, int(pad if pad is not None else 0), meta, examples, skipped)


def truncate_pair(
    prompt: list[int], completion: list[int], max_length: int, bos: int | None = None
) -> tuple[list[int], list[int]]:
    """Cuts a tokenized prompt/completion pair to ``max_length`` tokens keeping the completion: the
    prompt loses tokens from the **left** first (a leading ``bos`` stays), then the completion from the
    right; one prompt token is kept when there is one, so the first completion token is predicted."""
    if len(prompt) + len(completion) <= max_length:
        return prompt, completion
    keep_bos = bool(prompt) and bos is not None and prompt[0] == bos
    head = prompt[:1] if keep_bos else []
    body = prompt[1:] if keep_bos else prompt
    # the completion gets all it can, leaving one prompt token (BOS or the prompt's last) when there is one
    c_keep = min(len(completion), max_length - (1 if prompt else 0))
    room = max_length - c_keep
    p_new = head + body[len(body) - (room - 1) :] if keep_bos else prompt[len(prompt) - room :]
    return p_new, completion[:c_keep]


def load_corpus(
    spec: str | os.PathLike[str],
    tokenizer: Any,
    *,
    split: str = "train",
    text_field: str | None = None,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    max_length: int = 512,
    limit: int | None = None,
    skip_empty: bool = True,
) -> Corpus:
    """:func:`load_records` then :func:`tokenize_records` (see the module docstring)."""
    corpus = tokenize_records(
        load_records(spec, split),
        tokenizer,
        text_field=text_field,
        prompt_field=prompt_field,
        completion_field=completion_field,
        max_length=max_length,
        limit=limit,
        skip_empty=skip_empty,
    )
    corpus.meta.update({"source": str(spec), "split": split})
    return corpus

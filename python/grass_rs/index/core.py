"""``Index``: open an index folder and answer "which training examples most influenced this output?".

::

    index = grass_rs.Index.open("runs/my-index")
    result = index.query(["the text to explain"], top=10)      # loads the index's model
    result.write_markdown("report.md"); result.write_json("results.json")

Scores are ``Σ_layers ĝ_queryᵀ (F_l + λ_l I)⁻¹ ĝ_train`` (positive: the training example lowers the
query's loss). The preconditioned query is computed once, then the index is streamed in blocks
under a RAM budget with an exact running top-K (:func:`grass_rs.index.search.stream_topk`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attribution.fim import BlockFisher
from ..data import hf as hfdata
from ..errors import ArgumentTypeError, InvalidArgumentError, StoreError, StoreMismatchError
from .build import FORMAT, VERSION, fingerprint_of, load_model, make_attributor, resolve_device
from .report import QueryResult
from .search import TopK, parse_bytes, stream_topk
from .vectors import VectorFile

__all__ = ["Index"]

DEFAULT_BUDGET = "1GB"


class Index:
    """A built index folder (see :mod:`grass_rs.index.build` for the layout). Use :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any], vectors: VectorFile, fisher: BlockFisher) -> None:
        self.path, self.meta, self.vectors, self.fisher = path, meta, vectors, fisher
        self._texts: list[str] | None = None
        self._examples: list[int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Index:
        """Opens and checks an index folder (manifest, vector file size, Fisher).

        Raises:
            StoreError: not an index, an unfinished build, or a corrupt/truncated file.
        """
        p = Path(path)
        mf = p / "index.json"
        if not mf.is_file():
            hint = (
                " (an unfinished build: run `grass-rs build` again to resume)"
                if (p / "build.json").exists()
                else ""
            )
            raise StoreError(f"{p} is not a grass-rs index: index.json is missing{hint}")
        try:
            meta = json.loads(mf.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreError(f"index {p} is corrupt: index.json is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{p} is not a grass-rs index (index.json has another format)")
        if meta.get("version") != VERSION:
            raise StoreError(f"index {p} has version {meta.get('version')}, this grass-rs reads {VERSION}")
        try:
            layers = {str(n): int(k) for n, k in meta["layers"]}
            rows, dtype = int(meta["rows"]), str(meta["dtype"])
            vectors = VectorFile(p / meta["vectors"], rows, sum(layers.values()), dtype)
            with np.load(io.BytesIO((p / "fisher.npz").read_bytes()), allow_pickle=False) as z:
                state = {key: torch.from_numpy(z[str(i)]) for i, key in enumerate(meta["fisher_keys"])}
            fisher = BlockFisher.from_state_dict(state, list(layers))
        except StoreError:
            raise
        except (KeyError, TypeError, ValueError, OSError, EOFError) as e:
            raise StoreError(f"index {p} is corrupt or incomplete ({type(e).__name__}: {e})") from None
        for name, block in fisher.blocks.items():
            if block.dim != layers[name] or block.count != rows:
                raise StoreError(f"index {p} is corrupt: the Fisher of {name!r} does not match the vectors")
        return cls(p, meta, vectors, fisher)

    # ---- description ----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.vectors.rows

    @property
    def layers(self) -> dict[str, int]:
        return {str(n): int(k) for n, k in self.meta["layers"]}

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.meta["fingerprint"])

    @property
    def texts(self) -> list[str]:
        """Every training example's text, in row order."""
        if self._texts is None:
            self._read_texts()
        assert self._texts is not None
        return self._texts

    @property
    def examples(self) -> list[int]:
        """Each row's row in the training data (they differ when examples were skipped at build)."""
        if self._examples is None:
            self._read_texts()
        assert self._examples is not None
        return self._examples

    def _read_texts(self) -> None:
        try:
            lines = [json.loads(line) for line in (self.path / "texts.jsonl").read_text().splitlines()]
            texts = [x["text"] for x in lines]
            examples = [int(x.get("example", i)) for i, x in enumerate(lines)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(f"index {self.path} is corrupt: texts.jsonl ({e})") from None
        if len(texts) != self.rows:
            raise StoreError(f"index {self.path} is corrupt: texts.jsonl has {len(texts)} rows")
        self._texts, self._examples = texts, examples

    def verify(self) -> None:
        """Reads the whole vector file and checks every block's SHA-256 (raises :class:`StoreError`)."""
        got, want = self.vectors.checksums(), list(self.meta.get("checksums", []))
        bad = [i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
        if bad or len(got) != len(want):
            rows = int(self.meta["check_rows"])
            raise StoreError(
                f"index {self.path} is corrupt: vectors.bin rows {bad[0] * rows if bad else 0}… "
                "fail their checksum"
            )

    # ---- scoring ----------------------------------------------------------------------------------
    def precondition(
        self, grads: Mapping[str, torch.Tensor], damping: float | None = None, relative: bool = True
    ) -> torch.Tensor:
        """``(n_q, dim)`` float32: per layer ``(F_l + λ_l I)⁻¹ ĝ_l``, concatenated in index order."""
        if list(grads) != list(self.layers):
            raise InvalidArgumentError(
                f"query gradients have layers {list(grads)}, the index {list(self.layers)}"
            )
        lam = float(self.meta.get("damping", 1e-3)) if damping is None else damping
        pre = self.fisher.solve(dict(grads), lam, relative)
        return torch.cat([pre[n] for n in self.layers], dim=1).to(torch.float32)

    def search(
        self,
        grads: Mapping[str, torch.Tensor],
        top: int = 10,
        *,
        budget: str | int | None = DEFAULT_BUDGET,
        damping: float | None = None,
        block_rows: int | None = None,
    ) -> TopK:
        """Exact top-``top`` helpful and harmful rows for precomputed query gradients (streaming).

        ``budget``: bytes (or ``"512MB"``) for the block buffers; ``None``: all rows in one block.
        """
        b = None if budget is None else parse_bytes(budget)
        return stream_topk(
            self.vectors, self.precondition(grads, damping), top, budget=b, block_rows=block_rows
        )

    def scores(self, grads: Mapping[str, torch.Tensor], damping: float | None = None) -> torch.Tensor:
        """Every score, ``(n_q, rows)`` float32, in memory (small indexes and tests)."""
        return self.precondition(grads, damping) @ self.vectors.read(0, self.rows).T

    # ---- queries with the model ---------------------------------------------------------------
    def check_model(self, model: torch.nn.Module, tokenizer: Any, attributor: Any = None) -> Any:
        """Raises :class:`StoreMismatchError` naming what differs from the build (model parameters,
        compressor, loss, tokenizer); returns the attributor configured like the build."""
        att = attributor or make_attributor(model, self.meta["settings"], None)
        now = fingerprint_of(att, tokenizer, self.fingerprint["text"])
        stored = self.fingerprint
        what = {
            "model": "another model (parameters differ)",
            "gradients": "another compressor or layer selection",
            "loss": "another loss",
            "tokenizer": "another tokenizer",
        }
        for key, text in what.items():
            if now[key] != stored[key]:
                att.close()
                raise StoreMismatchError(
                    f"index {self.path} was built with {text} than the one given "
                    f"(stored {key} {str(stored[key])[:80]}…, now {str(now[key])[:80]}…)"
                )
        return att

    def query(
        self,
        queries: Any,
        top: int = 10,
        *,
        model: torch.nn.Module | str | None = None,
        tokenizer: Any = None,
        budget: str | int | None = DEFAULT_BUDGET,
        batch_size: int | None = None,
        damping: float | None = None,
        device: str | None = None,
    ) -> QueryResult:
        """The most helpful and harmful training examples for each query.

        Args:
            queries: a list of texts (for a prompt/completion index: ``(prompt, completion)`` pairs or
                dicts), a data file (same fields as the index), a :class:`~grass_rs.data.hf.Corpus`,
                or precomputed query gradients (layer → ``(n_q, k)``).
            top: how many of each.
            model: a loaded model or a path (default: the index's model); ``tokenizer`` with it.
            budget: RAM for the streaming search (``None``: in memory).
            batch_size, damping, device: query batching (default: the build's), damping override, device.

        Raises:
            StoreMismatchError: the model, compressor or tokenizer is not the index's.
        """
        if top < 1:
            raise InvalidArgumentError(f"`top` must be ≥ 1, got {top}")
        b = None if budget is None else parse_bytes(budget)  # validated before the model loads
        if isinstance(queries, Mapping):
            grads = {str(k): torch.as_tensor(v) for k, v in queries.items()}
            texts = [f"query {i}" for i in range(next(iter(grads.values())).shape[0])]
        else:
            dev = resolve_device(device)
            if model is None or isinstance(model, (str, os.PathLike)):
                model, tokenizer = load_model(str(model or self.meta["settings"]["model"]), dev)
            elif tokenizer is None:
                raise InvalidArgumentError("pass the `tokenizer` with a loaded `model`")
            att = self.check_model(model, tokenizer, make_attributor(model, self.meta["settings"], dev))
            corpus = self._query_corpus(queries, tokenizer)
            texts = corpus.texts
            bs = batch_size or int(self.meta["settings"]["batch_size"])
            grads = _corpus_gradients(att, corpus, bs)
        found = stream_topk(self.vectors, self.precondition(grads, damping), top, budget=b)
        return QueryResult(texts, found, self)

    def _query_corpus(self, queries: Any, tokenizer: Any) -> hfdata.Corpus:
        t = self.fingerprint["text"]
        fields = {k: t[k] for k in ("text_field", "prompt_field", "completion_field")}
        if isinstance(queries, hfdata.Corpus):
            return queries
        if isinstance(queries, (str, os.PathLike)):
            return hfdata.load_corpus(
                queries, tokenizer, max_length=int(t["max_length"]), skip_empty=False, **fields
            )
        if not isinstance(queries, Sequence) or not queries:
            raise ArgumentTypeError("`queries` must be a non-empty list of texts, a data file or gradients")
        if fields["text_field"] is not None:
            records = [q if isinstance(q, Mapping) else {fields["text_field"]: q} for q in queries]
        else:
            p, c = fields["prompt_field"], fields["completion_field"]
            records = [q if isinstance(q, Mapping) else {p: q[0], c: q[1]} for q in queries]
        return hfdata.tokenize_records(
            records, tokenizer, max_length=int(t["max_length"]), skip_empty=False, **fields
        )


def _corpus_gradients(att: Any, corpus: hfdata.Corpus, batch_size: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    try:
        for rows in corpus.batches(batch_size):
            g = att.batch_gradients(corpus.collate(rows))
            for name, v in g.items():
                if name not in out:
                    out[name] = torch.zeros(len(corpus), v.shape[1])
                out[name][torch.tensor(rows)] = v
    finally:
        att.close()
    return out

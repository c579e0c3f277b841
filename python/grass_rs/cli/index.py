"""``grass-rs build`` and ``grass-rs query``: attribute your own Hugging Face model and corpus.

::

    grass-rs build runs/idx --model ./my-model --dataset train.jsonl --k 256 --nproc 2
    grass-rs build runs/idx --model ./my-model --dataset train.jsonl --k 256 --layer-k '*.mlp.*=1024'
    torchrun --nproc_per_node 2 -m grass_rs build runs/idx --model ./my-model --dataset train.jsonl
    grass-rs query runs/idx --queries questions.jsonl --top 10 --format html
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    """Registers ``build`` and ``query``."""
    b = sub.add_parser("build", help="index a corpus: compressed per-sample gradients + block Fisher")
    b.add_argument("index", help="index folder (created; a partial one is resumed)")
    b.add_argument("--model", required=True, help="transformers model folder or hub name")
    b.add_argument("--dataset", required=True, help="JSONL/CSV/Parquet file, save_to_disk folder or hub name")
    b.add_argument("--split", default="train", help="split of a hub dataset or DatasetDict (default train)")
    b.add_argument("--text-field", default=None, help="text column (default: `text`)")
    b.add_argument("--prompt-field", default=None, help="prompt column (loss on the completion only)")
    b.add_argument("--completion-field", default=None, help="completion column")
    b.add_argument("--max-length", type=int, default=512, help="tokens per example, longer ones cut (512)")
    b.add_argument("--batch-size", type=int, default=8, help="examples per batch, batched by length (8)")
    b.add_argument("--compressor", default="factgrass", help="factgrass (default), logra, grass, sjlt, ...")
    b.add_argument("--k", type=int, default=256, help="compressed dimension per layer (default 256)")
    b.add_argument("--layer-k", action="append", default=None, metavar="PATTERN=K",
                   help="k for the layers whose module name matches an fnmatch PATTERN (repeatable; "
                   "first match wins), e.g. --layer-k '*.mlp.*=1024'")  # fmt: skip
    b.add_argument("--layers", nargs="+", default=None, help="module names (default: every covered layer)")
    b.add_argument("--seed", type=int, default=0, help="compressor seed")
    b.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="storage precision of the gradients (default float32)")  # fmt: skip
    b.add_argument("--damping", type=float, default=1e-3, help="relative damping λ (default 1e-3)")
    b.add_argument("--limit", type=int, default=None, help="only the first N examples")
    b.add_argument("--padding-side", default="right", choices=("left", "right"))
    b.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    b.add_argument(
        "--nproc", type=int, default=1, help="processes (torch.distributed; or run under torchrun)"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    q = sub.add_parser("query", help="the most helpful/harmful training examples of each query")
    q.add_argument("index", help="index folder written by `grass-rs build`")
    q.add_argument("--queries", default=None, help="data file of queries (same fields as the index)")
    q.add_argument("--text", action="append", default=None, help="a query text (repeatable)")
    q.add_argument("--top", type=int, default=10, help="examples of each kind per query (default 10)")
    q.add_argument("--model", default=None, help="model folder (default: the one the index was built with)")
    q.add_argument("--out", default=None, help="output folder (default: INDEX/queries)")
    q.add_argument("--format", default="md", choices=("md", "html"), help="report format (default md)")
    q.add_argument("--budget", default="1GB", help="RAM for streaming over the index (default 1GB)")
    q.add_argument("--damping", type=float, default=None, help="override the index's damping")
    q.add_argument("--device", default=None, help="cpu (default), cuda, ...")
    q.add_argument("--verify", action="store_true", help="check the index's checksums first")
    q.set_defaults(func=_query)


def _build(args: argparse.Namespace) -> int:
    from ..capture.per_layer import parse_layer_k
    from ..index.build import BuildConfig, build

    cfg = BuildConfig(
        index=args.index, model=args.model, dataset=args.dataset, split=args.split,
        text_field=args.text_field, prompt_field=args.prompt_field, completion_field=args.completion_field,
        max_length=args.max_length, batch_size=args.batch_size, compressor=args.compressor, k=args.k,
        layer_k=parse_layer_k(args.layer_k) or None, layers=args.layers, seed=args.seed, dtype=args.dtype,
        damping=args.damping, device=args.device,
        padding_side=args.padding_side, limit=args.limit, nproc=args.nproc,
        progress=False if args.no_progress else None,
    )  # fmt: skip
    path = build(cfg)
    from ..index.core import Index

    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    idx = Index.open(path)
    ks = sorted(set(idx.layers.values()))
    print(
        f"index {path}: {idx.rows} examples, {len(idx.layers)} layers, "
        f"k = {'/'.join(map(str, ks))}, Σk = {idx.vectors.dim}, {idx.meta['dtype']}"
    )
    skipped = int(idx.meta.get("skipped") or 0)
    if skipped:
        first = ", ".join(map(str, idx.meta.get("skipped_examples", [])[:10]))
        print(
            f"skipped {skipped} example(s) with no loss token after truncation to --max-length "
            f"{idx.meta['settings'].get('max_length')} (empty completions or one-token texts; "
            f"data rows {first}{'…' if skipped > 10 else ''})"
        )
    return 0


def _query(args: argparse.Namespace) -> int:
    from ..index.core import Index
    from ..index.search import parse_bytes

    if args.top < 1:
        raise ValueError("--top must be ≥ 1")
    if (args.queries is None) == (args.text is None):
        raise ValueError("give --queries FILE or one or more --text")
    if args.queries is not None and not Path(args.queries).exists():
        raise ValueError(f"--queries {args.queries}: no such file")
    parse_bytes(args.budget)
    index = Index.open(args.index)
    if args.verify:
        index.verify()
    result = index.query(
        args.queries if args.queries is not None else args.text,
        args.top,
        model=args.model,
        budget=args.budget,
        damping=args.damping,
        device=args.device,
    )
    out = Path(args.out) if args.out else Path(args.index) / "queries"
    out.mkdir(parents=True, exist_ok=True)
    result.write_json(out / "results.json")
    report = (
        result.write_markdown(out / "report.md")
        if args.format == "md"
        else result.write_html(out / "report.html")
    )
    for i, text in enumerate(result.queries[:3]):
        best = result.to_dict()["queries"][i]["helpful"][0]
        print(
            f"query {i}: {text[:60]!r} → row {best['row']} (score {best['score']:.4g}): {best['text'][:60]!r}"
        )
    print(
        f"wrote {out / 'results.json'} and {report}",
        file=sys.stderr if os.environ.get("GRASS_RS_QUIET") else sys.stdout,
    )
    return 0

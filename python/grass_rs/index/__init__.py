"""Index folders: build once from your model and corpus, query many times, larger than RAM.

* :func:`build` / :class:`BuildConfig` (:mod:`.build`) — compressed per-sample gradients of a corpus
  (FactGraSS on every covered layer by default), the block Fisher and the texts, resumable and
  multi-process;
* :class:`Index` (:mod:`.core`) — ``Index.open(path).query(texts, top=10)`` checks the model against
  the index's fingerprint and streams the index under a RAM budget with an exact running top-K;
* :class:`QueryResult` (:mod:`.report`) — JSON, Markdown and HTML reports.
"""

from __future__ import annotations

from .build import BuildConfig, build, write_index
from .core import Index
from .report import QueryResult
from .search import TopK, parse_bytes, stream_topk

__all__ = [
    "BuildConfig",
    "Index",
    "QueryResult",
    "TopK",
    "build",
    "parse_bytes",
    "stream_topk",
    "write_index",
]

"""Query results: JSON and a readable Markdown or HTML report (query text, training texts, scores)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from .search import TopK

__all__ = ["QueryResult"]


class QueryResult:
    """The top helpful and harmful training rows of each query.

    Attributes:
        queries: the query texts; ``topk``: indices and scores (:class:`~grass_rs.index.search.TopK`).
    """

    def __init__(self, queries: list[str], topk: TopK, index: Any) -> None:
        self.queries, self.topk, self.index = queries, topk, index

    def to_dict(self) -> dict[str, Any]:
        texts = self.index.texts
        examples = self.index.examples

        def rows(idx: Any, sc: Any) -> list[dict[str, Any]]:
            return [
                {"row": int(r), "example": examples[int(r)], "score": float(s), "text": texts[int(r)]}
                for r, s in zip(idx, sc, strict=True)
            ]

        return {
            "index": str(self.index.path),
            "rows": self.index.rows,
            "queries": [
                {
                    "query": i,
                    "text": q,
                    "helpful": rows(self.topk.helpful[i], self.topk.helpful_scores[i]),
                    "harmful": rows(self.topk.harmful[i], self.topk.harmful_scores[i]),
                }
                for i, q in enumerate(self.queries)
            ],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        return p

    def to_markdown(self, width: int = 200) -> str:
        d = self.to_dict()
        out = [f"# Influence report\n\nIndex `{d['index']}` ({d['rows']} training examples). "
               "Score > 0: the training example lowers the query's loss (helpful).\n"]  # fmt: skip
        for q in d["queries"]:
            out.append(f"\n## Query {q['query']}\n\n> {_short(q['text'], width)}\n")
            for title, key in (("Most helpful", "helpful"), ("Most harmful", "harmful")):
                out.append(f"\n**{title}**\n\n| rank | row | score | text |\n|---:|---:|---:|---|\n")
                for r, e in enumerate(q[key], 1):
                    text = _short(e["text"], width).replace("|", "\\|")
                    out.append(f"| {r} | {e['row']} | {e['score']:.4g} | {text} |\n")
        return "".join(out)

    def write_markdown(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(self.to_markdown(), encoding="utf-8")
        return p

    def to_html(self, width: int = 400) -> str:
        d = self.to_dict()
        e = html.escape
        out = [
            "<!doctype html><meta charset='utf-8'><title>grass-rs influence report</title>",
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td{vertical-align:top;"
            "padding:2px 8px}.pos{color:#070}.neg{color:#a00}</style>",
            f"<h1>Influence report</h1><p>Index <code>{e(d['index'])}</code>, "
            f"{d['rows']} training examples.</p>",
        ]
        for q in d["queries"]:
            out.append(f"<h2>Query {q['query']}</h2><blockquote>{e(_short(q['text'], width))}</blockquote>")
            for title, key in (("Most helpful", "helpful"), ("Most harmful", "harmful")):
                out.append(
                    f"<h3>{title}</h3><table><tr><th>rank</th><th>row</th><th>score</th><th>text</th></tr>"
                )
                for r, x in enumerate(q[key], 1):
                    cls = "pos" if x["score"] > 0 else "neg"
                    out.append(
                        f"<tr><td>{r}</td><td>{x['row']}</td><td class={cls}>{x['score']:.4g}</td>"
                        f"<td>{e(_short(x['text'], width))}</td></tr>"
                    )
                out.append("</table>")
        return "\n".join(out)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(self.to_html(), encoding="utf-8")
        return p


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"

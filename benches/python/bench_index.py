"""Index benchmarks (issue 13): build throughput, query time vs index size, streaming vs faiss.

    python benches/python/bench_index.py [--sizes 10000 100000 1000000] [--repeats 3]

1. build: examples/s and tokens/s of the build loop (FactGraSS k=256 on every covered layer,
   batch → compressed gradients → crash-safe store chunk) for a GPT-2 from config (2 layers,
   d = 768, vocab 50257, 128-token texts) vs plain forward+backward over the same batches.
2. query: a synthetic index (rows × 1024 float32) streamed under a 256 MiB budget, 32 queries,
   top-10 both ways; time, rows/s, GB/s and peak RSS growth, per size.
3. the same vectors in memory in faiss-cpu's IndexFlatIP (exact inner-product search): time of
   its search vs grass-rs's streaming query (ratio = grass-rs / faiss, median over repeats).
Medians over --repeats; the page cache is warm (the file was just written).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import grass_rs
from grass_rs.attribution.store import GradientStore
from grass_rs.index import Index, write_index


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def bench_build(n: int, batch: int, repeats: int) -> dict[str, float]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=768, n_head=12)).eval()
    ids = torch.randint(0, 50257, (n, 128))
    batches = [{"input_ids": ids[i : i + batch], "attention_mask": torch.ones_like(ids[i : i + batch])}
               for i in range(0, n, batch)]  # fmt: skip

    def plain() -> None:
        for b in batches:
            out = model(**b)
            grass_rs.hf.causal_lm_loss(out, b).backward()
        model.zero_grad(set_to_none=True)

    def build() -> None:
        att = grass_rs.Attributor(model, k=256, progress=False)
        with tempfile.TemporaryDirectory() as d:
            store = None
            for b in batches:
                g = att.batch_gradients(b)
                if store is None:
                    store = GradientStore.open(Path(d) / "s", {k: v.shape[1] for k, v in g.items()}, {})
                store.append(g)
        att.close()

    plain()  # warm-up
    t_plain, t_build = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build()
        t_build.append(time.perf_counter() - t0)
    tp, tb = statistics.median(t_plain), statistics.median(t_build)
    return {"examples": n, "plain_ex_s": n / tp, "build_ex_s": n / tb, "build_tok_s": n * 128 / tb,
            "ratio": tb / tp}  # fmt: skip


def _chunks(rows: int, dim: int, chunk: int = 50_000):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    for i in range(0, rows, chunk):
        yield {"x": torch.randn(min(chunk, rows - i), dim, generator=g)}


def bench_query(rows: int, dim: int, n_q: int, repeats: int, budget: int, root: Path) -> dict[str, float]:
    path = write_index(root / f"syn{rows}", {"x": dim}, _chunks(rows, dim))
    index = Index.open(path)
    q = {"x": torch.randn(n_q, dim)}
    pre = index.precondition(q)
    index.search(q, 10, budget=budget)  # warm
    times, peaks = [], []
    for _ in range(repeats):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status("VmRSS")
        t0 = time.perf_counter()
        res = index.search(q, 10, budget=budget)
        times.append(time.perf_counter() - t0)
        peaks.append(_status("VmHWM") - before)
    t = statistics.median(times)
    out = {"rows": rows, "query_s": t, "rows_s": rows / t, "gb_s": rows * dim * 4 / t / 1e9,
           "rss_growth_mb": max(peaks) / 2**20}  # fmt: skip
    # read floor: the same blocks read without scoring
    t0 = time.perf_counter()
    for _ in index.vectors.blocks(max(256, budget // (2 * dim * 4 + 32 * 28))):
        pass
    out["read_s"] = time.perf_counter() - t0
    try:
        import faiss
    except ImportError:
        return out
    x = index.vectors.read(0, rows).numpy()
    fi = faiss.IndexFlatIP(dim)
    fi.add(x)
    fi.search(pre.numpy(), 10)
    ft = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = fi.search(pre.numpy(), 10)
        ft.append(time.perf_counter() - t0)
    out["faiss_s"] = statistics.median(ft)
    out["ratio_vs_faiss"] = t / out["faiss_s"]
    out["same_top10"] = bool((torch.from_numpy(ids) == res.helpful).all())
    del fi, x
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--budget", default="256MB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build-examples", type=int, default=32)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, grass-rs {grass_rs.__version__}", file=sys.stderr)
    if not args.skip_build:
        r = bench_build(args.build_examples, 8, args.repeats)
        print("build  ", json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    budget = grass_rs.index.parse_bytes(args.budget)
    with tempfile.TemporaryDirectory() as d:
        for rows in args.sizes:
            r = bench_query(rows, args.dim, args.queries, args.repeats, budget, Path(d))
            rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
            print("query  ", json.dumps(rounded),
                  flush=True)  # fmt: skip
            for f in Path(d).glob(f"syn{rows}/*"):
                f.unlink()


if __name__ == "__main__":
    _ = threading  # the index reads ahead in a thread
    main()

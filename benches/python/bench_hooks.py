"""Benchmark: per-layer compression from factors (LoGra vs FactGraSS vs materialize-then-GraSS) and
the cost of attaching each to forward+backward, on GPT-2-small-shaped Linear layers.

Usage: ``python benches/python/bench_hooks.py [--batch 8] [--seq 512] [--repeats 3] [--threads N]
[--whole-model] [--only-whole-model]``. ``--whole-model`` adds the cost of attaching FactGraSS / LoGra
to every supported layer of small GPT-2s built from a config (``transformers``).
Prints two tables and the ratios measured in this run. Configurations are timed round-robin
(``--repeats`` rounds); in each round a configuration first runs untimed for ``--settle``
milliseconds, because on this VM the first calls after switching from one workload to another are
up to 2x slower for ~10-20 ms (torch's OpenMP workers keep spinning after a torch op, and the
vCPUs speed up under sustained load; measured in benches/README.md), then its calls are timed
one by one. Ratios use the median and the best per-call time of each configuration.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

import grass_rs
from grass_rs.capture import layers as L

D_MODEL, D_FF = 768, 3072


def interleaved_times(
    fns: Mapping[str, Callable[[], object]], repeats: int, inner: int = 1, settle: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per ``fn()`` call, ``repeats`` round-robin rounds (interleaving spreads load from
    other processes over the configurations). In each round a configuration runs untimed for
    ``settle`` seconds (at least once), then ``inner`` calls are timed one by one."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            while time.perf_counter() - t0 < settle:
                fn()
            for _ in range(inner):
                t1 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t1)
    return times


def factories() -> dict[str, grass_rs.CompressorFactory]:
    return {
        "LoGra (k=4096: 64x64)": grass_rs.LoGra(4096),
        "FactGraSS (k'=128x128 -> k=4096)": grass_rs.FactGraSS(4096, mask_dim=128 * 128),
        "materialize + GraSS (k'=16384, k=4096)": grass_rs.Full(grass_rs.GraSS, out_dim=4096, mask_dim=16384),
    }


def bench_compress(batch: int, seq: int, repeats: int, settle: float) -> dict[str, list[float]]:
    """Seconds per ``compress_factors`` call for a Linear(768 → 3072) layer with bias."""
    info = L.LayerInfo("fc", "linear", D_FF, D_MODEL, True)
    gen = torch.Generator().manual_seed(0)
    go = torch.randn(batch, seq, D_FF, generator=gen)
    x = torch.randn(batch, seq, D_MODEL, generator=gen)
    comps = {name: factory.build(info) for name, factory in factories().items()}
    fns: Mapping[str, Callable[[], object]] = {
        n: functools.partial(c.compress_factors, go, x) for n, c in comps.items()
    }
    return interleaved_times(fns, 2 * repeats, inner=5, settle=settle)


class Block(nn.Module):
    """GPT-2-small MLP block: Linear(768 → 3072) → GELU → Linear(3072 → 768)."""

    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(D_MODEL, D_FF)
        self.c_proj = nn.Linear(D_FF, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(x)))


def bench_train_step(batch: int, seq: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per forward+backward of :class:`Block`, plain and with each compressor attached.

    Every configuration has its own copy of the model (same weights) so hooks stay attached and the
    runs can be interleaved.
    """
    torch.manual_seed(0)
    base = Block()
    x, target = torch.randn(batch, seq, D_MODEL), torch.randn(batch, seq, D_MODEL)
    models, handles = {"plain forward+backward": base}, []
    for name, factory in factories().items():
        m = Block()
        m.load_state_dict(base.state_dict())
        handles.append(grass_rs.attach(m, factory, loss_reduction="mean"))
        models[f"+ {name}"] = m

    def step(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), target).backward()

    times = interleaved_times({n: functools.partial(step, m) for n, m in models.items()}, repeats, settle=0.0)
    for h in handles:
        assert h.flat().shape == (batch, 2 * 4096)
        h.remove()
    return times


# Whole-model capture: (label, n_embd, n_layer, batch, seq, k per layer).
GPT2_CONFIGS = [
    ("d=128, 2 layers, 8x128 tokens", 128, 2, 8, 128, 256),
    ("d=512, 2 layers, 8x128 tokens", 512, 2, 8, 128, 1024),
    ("d=768, 2 layers, 8x256 tokens", 768, 2, 8, 256, 4096),
]

WholeModelResult = tuple[str, dict[str, list[list[float]]], int]


def _set_ln_stats(mode: str | None) -> None:
    """Sets ``grass_rs.capture.hooks.LAYERNORM_STATS`` (no-op for ``None`` or a tree without it)."""
    from grass_rs.capture import hooks

    if mode is not None and hasattr(hooks, "LAYERNORM_STATS"):
        hooks.LAYERNORM_STATS = mode


def bench_whole_model(repeats: int, dims: list[int], inner: int = 3) -> list[WholeModelResult]:
    """Seconds per forward+backward of a GPT-2 built from a config, plain and with FactGraSS / LoGra
    attached to every supported layer (Linear, Conv1D, Embedding, LayerNorm); per round, per
    configuration, the ``inner`` step times (so ratios can be taken within a round)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from grass_rs.capture import hooks

    hf_logging.set_verbosity_error()
    results = []
    for label, d, n_layer, batch, seq, k in GPT2_CONFIGS:
        if d not in dims:
            continue
        cfg = GPT2Config(
            n_embd=d,
            n_layer=n_layer,
            n_head=max(1, d // 64),
            n_positions=seq,
            vocab_size=8192,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        torch.manual_seed(0)
        base = GPT2LMHeadModel(cfg).eval()
        ids = torch.randint(0, cfg.vocab_size, (batch, seq))
        models: dict[str, tuple[nn.Module, str | None]] = {"plain": (base, None)}
        handles = []
        configs = [
            ("FactGraSS", grass_rs.FactGraSS(k), "recompute"),
            ("LoGra", grass_rs.LoGra(k), "recompute"),
        ]
        if hasattr(hooks, "LAYERNORM_STATS"):
            configs.insert(1, ("FactGraSS, saved LN stats", grass_rs.FactGraSS(k), "saved"))
        for name, factory, mode in configs:
            m = GPT2LMHeadModel(cfg).eval()
            m.load_state_dict(base.state_dict())
            handles.append(grass_rs.attach(m, factory, loss_reduction="mean"))
            models[name] = (m, mode)

        def step(model: nn.Module, mode: str | None, ids: torch.Tensor = ids) -> None:
            _set_ln_stats(mode)
            model.zero_grad(set_to_none=True)
            model(ids, labels=ids).loss.backward()
            _set_ln_stats("recompute")

        fns = {n: functools.partial(step, m, mode) for n, (m, mode) in models.items()}
        for fn in fns.values():  # warm-up (allocator, lazily built projector tables)
            fn()
        flat = interleaved_times(fns, repeats, inner=inner)
        rounds = {n: [ts[i : i + inner] for i in range(0, len(ts), inner)] for n, ts in flat.items()}
        n_layers = len(handles[0].gradients())
        for h in handles:
            h.remove()
        results.append((f"{label}, k={k}", rounds, n_layers))
    return results


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):+.0f}% [{min(xs):+.0f}, {max(xs):+.0f}]"


def print_whole_model(results: list[WholeModelResult]) -> None:
    policy = os.environ.get("OMP_WAIT_POLICY", "(default)")
    print(
        f"\nwhole-model capture: GPT-2 from a config, compressor attached to every supported layer "
        f"(OMP_WAIT_POLICY={policy})"
    )
    print("overhead over plain forward+backward: per round, median step time of each configuration over")
    print("the plain model's in the same round; median [min, max] over rounds")
    for label, rounds, n_layers in results:
        plain = [statistics.median(r) for r in rounds["plain"]]
        print(
            f"\n{label}, {n_layers} layers: plain {statistics.median(plain) * 1e3:.1f} ms/step "
            f"[{min(plain) * 1e3:.1f}-{max(plain) * 1e3:.1f}] over {len(plain)} rounds"
        )
        for name, rs in rounds.items():
            if name == "plain":
                continue
            ratios = [100 * (statistics.median(r) / p - 1) for r, p in zip(rs, plain, strict=True)]
            med = statistics.median(t for r in rs for t in r)
            print(f"| {name:<28} | {med * 1e3:>9.1f} ms | {_spread(ratios):>22} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="milliseconds each configuration runs untimed at the start of each round (0: none)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch default); on a loaded shared machine 1 avoids waiting "
        "for a descheduled worker thread at every parallel op",
    )
    ap.add_argument("--whole-model", action="store_true", help="add the whole-model GPT-2 rows")
    ap.add_argument("--only-whole-model", action="store_true", help="only the whole-model GPT-2 rows")
    ap.add_argument(
        "--wm-dims", type=int, nargs="+", default=[128, 512, 768], help="whole-model: which n_embd rows"
    )
    ap.add_argument("--wm-inner", type=int, default=3, help="whole-model: timed steps per round")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = args.batch * args.seq
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, T {args.seq}")
    print(f"load average before: {load} (on {os.cpu_count()} CPUs; timings are noisy on a shared machine)")
    if args.only_whole_model:
        print_whole_model(bench_whole_model(max(args.repeats, 5), args.wm_dims, args.wm_inner))
        return

    comp = bench_compress(args.batch, args.seq, args.repeats, args.settle / 1e3)
    print(
        f"\ncompress_factors, Linear {D_MODEL} -> {D_FF} (+bias), (B, T) = ({args.batch}, {args.seq}), "
        f"{args.settle:g} ms settle per round"
    )
    print(f"| {'compressor':<42} | {'best ms':>9} | {'median ms':>9} |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 11}|")
    for name, ts in comp.items():
        print(f"| {name:<42} | {min(ts) * 1e3:>9.2f} | {statistics.median(ts) * 1e3:>9.2f} |")

    steps = bench_train_step(args.batch, args.seq, args.repeats)
    best = {n: min(ts) for n, ts in steps.items()}
    plain = best["plain forward+backward"]
    print(
        f"\nforward+backward, MLP block {D_MODEL} -> {D_FF} -> {D_MODEL}, {tokens} tokens/step (best of runs)"
    )
    print(f"| {'configuration':<44} | {'ms / step':>10} | {'tokens/s':>10} | {'overhead':>9} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    for name, t in best.items():
        print(f"| {name:<44} | {t * 1e3:>10.1f} | {tokens / t:>10.0f} | {100 * (t / plain - 1):>8.1f}% |")

    names = list(comp)
    med = [statistics.median(comp[n]) for n in names]
    mins = [min(comp[n]) for n in names]
    overhead = 100 * (best[f"+ {names[1]}"] / plain - 1)
    print(
        f"\nFactGraSS compress_factors speed-up over LoGra: {med[0] / med[1]:.1f}x median, "
        f"{mins[0] / mins[1]:.1f}x best (issue 14 target: >= 6x median)"
    )
    print(f"FactGraSS speed-up over materialize + GraSS: {med[2] / med[1]:.1f}x median")
    print(f"attaching FactGraSS: {overhead:+.1f}% over plain forward+backward (target <= +25%)")
    if args.whole_model:
        print_whole_model(bench_whole_model(max(args.repeats, 5), args.wm_dims, args.wm_inner))


if __name__ == "__main__":
    main()

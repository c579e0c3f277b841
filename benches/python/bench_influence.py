"""End-to-end influence pipeline benchmark: GraSS vs dense Gaussian at the same k.

For the digits MLP and a tiny GPT-2 (built from a config, random tokens) it times each stage —
per-sample gradients + compression, FIM (accumulate + eigendecomposition), iHVP on the test
gradients, scoring — and reports the peak resident memory of the process that ran it (each
configuration runs in its own subprocess so the peaks are separate; "base" is the resident
memory after imports, model and data setup, "peak" the maximum over the run).

Run:  python benches/python/bench_influence.py [--k 256] [--threads 1] [--n-train 512] [--n-test 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


def _gpt2(seed: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=512,
        n_positions=64,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
    return model.eval()


class _LogitsOnly(torch.nn.Module):
    """GPT-2 returning logits (so ``loss_fn(model(ids), ids)`` works)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=ids).logits


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, summed over tokens and sequences."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
    )


def _setup(model_name: str, compressor: str, k: int, n_train: int, n_test: int) -> tuple[Any, Any, Any]:
    import grass_rs
    from grass_rs.attribution import Attributor, sum_cross_entropy
    from grass_rs.data.bundled import digits_task

    if model_name == "digits-mlp":
        task = digits_task(steps=100)
        train, test = task.loaders(batch_size=128, n_test=n_test)
        comp: Any = grass_rs.ProjectorFactory(compressor, k)
        att = Attributor(task.model, compressor=comp, progress=False)
        return att, train, test
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 512, (n_train + n_test, 32), generator=gen)
    model = _LogitsOnly(_gpt2(0))
    comp = grass_rs.FactGraSS(k) if compressor == "grass" else grass_rs.Full(grass_rs.Gaussian, out_dim=k)
    att = Attributor(model, loss_fn=_lm_loss, compressor=comp, progress=False)
    train = DataLoader(TensorDataset(ids[:n_train], ids[:n_train]), batch_size=32)
    test = DataLoader(TensorDataset(ids[n_train:], ids[n_train:]), batch_size=32)
    del sum_cross_entropy
    return att, train, test


def _current_rss_mib() -> float:
    """Resident memory now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


def _run(model_name: str, compressor: str, k: int, n_train: int, n_test: int, threads: int) -> dict[str, Any]:
    from grass_rs.attribution.fim import BlockFisher

    torch.set_num_threads(threads)
    att, train, test = _setup(model_name, compressor, k, n_train, n_test)
    base_rss = _current_rss_mib()
    t: dict[str, Any] = {}
    start = time.perf_counter()
    tr = att.gradients(train)
    te = att.gradients(test)
    t["grads_s"] = time.perf_counter() - start
    start = time.perf_counter()
    fisher = BlockFisher({n: g.shape[1] for n, g in tr.items()})
    fisher.update(tr)
    for block in fisher.blocks.values():
        block.eigh()
    t["fim_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pre = fisher.solve(te, 1e-3)
    t["ihvp_s"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = sum(p @ tr[n].double().T for n, p in pre.items())
    t["score_s"] = time.perf_counter() - start
    assert isinstance(scores, torch.Tensor) and bool(torch.isfinite(scores).all())
    t["layers"] = len(tr)
    t["k_total"] = sum(g.shape[1] for g in tr.values())
    t["n_train"], t["n_test"] = next(iter(tr.values())).shape[0], next(iter(te.values())).shape[0]
    t["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t["base_rss_mib"] = base_rss
    return t


def _child(args: argparse.Namespace, model_name: str, comp: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        model_name,
        comp,
        "--k",
        str(args.k),
        "--n-train",
        str(args.n_train),
    ]
    cmd += ["--n-test", str(args.n_test), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=256, help="compressed dimension per layer (default 256)")
    p.add_argument("--n-train", type=int, default=512, help="GPT-2 training sequences (digits: all 1438)")
    p.add_argument("--n-test", type=int, default=64, help="test examples")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "COMPRESSOR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # one configuration, in a fresh process: print its measurements as JSON
        model_name, comp = args.child
        print(json.dumps(_run(model_name, comp, args.k, args.n_train, args.n_test, args.threads)))
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), k = {args.k} per layer; times in seconds")
    header = f"{'model':>11} {'compressor':>10} {'layers':>6} {'Σk':>6} {'n_train':>7} {'grads+comp':>10} "
    print(header + f"{'FIM':>7} {'iHVP':>7} {'score':>7} {'RSS MiB: base → peak':>21}")
    for model_name in ("digits-mlp", "gpt2-tiny"):
        for comp in ("grass", "gaussian"):
            r = _child(args, model_name, comp)
            label = ("FactGraSS" if model_name == "gpt2-tiny" else "GraSS") if comp == "grass" else "Gaussian"
            print(
                f"{model_name:>11} {label:>10} {r['layers']:>6} {r['k_total']:>6} {r['n_train']:>7} "
                f"{r['grads_s']:>10.3f} {r['fim_s']:>7.3f} {r['ihvp_s']:>7.4f} {r['score_s']:>7.4f} "
                f"{r['base_rss_mib']:>12.0f} → {r['peak_rss_mib']:>6.0f}",
                flush=True,
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

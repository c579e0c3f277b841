"""Writes tests/data/contract_vectors.json: known answers of the seed → matrix contract.

Run after a deliberate contract change only (it is a compatibility break):
    python scripts/gen_contract_vectors.py
"""

from __future__ import annotations

import json
import pathlib

import torch

import grass_rs
from grass_rs import _core

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "contract_vectors.json"
SEEDS = [0, 1, 42, 2**63 + 12345, 2**64 - 1]


def main() -> None:
    doc: dict[str, object] = {"version": 1}
    doc["hash"] = [[k, n, _core.hash(k, n)] for k in (0, 1, 2**64 - 1) for n in (0, 1, 2, 1000, 2**40)]
    doc["stream_key"] = [[s, t, _core.stream_key(s, t)] for s in SEEDS for t in range(1, 6)]
    sjlt = []
    for p, k, c, seed in [(64, 16, 1, 0), (100, 30, 3, 42), (50, 1024, 4, 2**64 - 1)]:
        buckets, signs = grass_rs.SJLT(p, k, c=c, seed=seed).columns()
        sjlt.append(
            {
                "in_dim": p,
                "out_dim": k,
                "c": c,
                "seed": seed,
                "buckets": buckets.tolist(),
                "signs": signs.int().tolist(),
            }
        )
    doc["sjlt"] = sjlt
    doc["mask"] = [
        {"in_dim": n, "out_dim": m, "seed": seed, "indices": grass_rs.Mask(n, m, seed=seed).indices.tolist()}
        for n, m, seed in [(10, 10, 0), (100, 7, 1), (1 << 20, 40, 42), (1000, 900, 2**64 - 1)]
    ]
    dense = []
    for cls, kind in [(grass_rs.Gaussian, "gaussian"), (grass_rs.Rademacher, "rademacher")]:
        for p, k, seed in [(8, 4, 0), (5, 7, 42)]:
            m = cls(p, k, seed=seed).matrix(torch.float32)
            dense.append({"kind": kind, "in_dim": p, "out_dim": k, "seed": seed, "matrix": m.tolist()})
    doc["dense"] = dense
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

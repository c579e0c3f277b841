"""The seed → matrix contract (docs/CONTRACT.md) is pinned by known-answer vectors, and the Rust
core agrees with an independent pure-Python implementation of it."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import grass_rs
from grass_rs import _core

import reference as ref

VECTORS = json.loads((pathlib.Path(__file__).parent.parent / "data" / "contract_vectors.json").read_text())
STREAM_NAMES = {1: "sjlt", 2: "mask", 3: "gaussian", 4: "rademacher", 5: "srht"}


def test_hash_known_answers() -> None:
    for key, counter, value in VECTORS["hash"]:
        assert _core.hash(key, counter) == value
        assert ref.hash64(key, counter) == value


def test_splitmix64_published_sequence() -> None:
    # SplitMix64 seeded with 0 (Vigna's reference implementation).
    assert [_core.hash(0, n) for n in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def test_stream_keys() -> None:
    for seed, stream, value in VECTORS["stream_key"]:
        assert _core.stream_key(seed, stream) == value
        assert ref.stream_key(seed, STREAM_NAMES[stream]) == value


@pytest.mark.parametrize("case", VECTORS["sjlt"], ids=lambda c: f"p{c['in_dim']}k{c['out_dim']}c{c['c']}")
def test_sjlt_vectors(case: dict) -> None:
    p = grass_rs.SJLT(case["in_dim"], case["out_dim"], c=case["c"], seed=case["seed"])
    buckets, signs = p.columns()
    assert buckets.tolist() == case["buckets"]
    assert signs.int().tolist() == case["signs"]
    key = ref.stream_key(case["seed"], "sjlt")
    expect = [
        [ref.sjlt_entry(key, case["out_dim"], case["c"], j, r) for r in range(case["c"])]
        for j in range(case["in_dim"])
    ]
    assert [[b for b, _ in col] for col in expect] == case["buckets"]
    assert [[s for _, s in col] for col in expect] == case["signs"]


@pytest.mark.parametrize("case", VECTORS["mask"], ids=lambda c: f"n{c['in_dim']}m{c['out_dim']}")
def test_mask_vectors(case: dict) -> None:
    assert (
        grass_rs.Mask(case["in_dim"], case["out_dim"], seed=case["seed"]).indices.tolist() == case["indices"]
    )
    assert ref.mask_indices(case["in_dim"], case["out_dim"], case["seed"]) == case["indices"]


@pytest.mark.parametrize("case", VECTORS["dense"], ids=lambda c: f"{c['kind']}{c['in_dim']}x{c['out_dim']}")
def test_dense_vectors(case: dict) -> None:
    cls = grass_rs.Gaussian if case["kind"] == "gaussian" else grass_rs.Rademacher
    got = cls(case["in_dim"], case["out_dim"], seed=case["seed"]).matrix(torch.float32)
    want = torch.tensor(case["matrix"])
    # Entries are float32 with the contract's own ln and cos/sin: bit-identical everywhere.
    assert torch.equal(got, want)
    oracle = ref.dense_matrix(case["kind"], case["in_dim"], case["out_dim"], case["seed"])
    assert torch.equal(oracle, want.double())


@pytest.mark.parametrize(("p", "k", "seed"), [(300, 9, 7), (64, 33, 8), (3, 301, 2**64 - 1)])
def test_gaussian_is_bit_identical_to_the_oracle(p: int, k: int, seed: int) -> None:
    # Thousands of entries through the vectorized generator vs the float32 oracle, bit for bit.
    got = grass_rs.Gaussian(p, k, seed=seed).matrix(torch.float32)
    assert torch.equal(got.double(), ref.dense_matrix("gaussian", p, k, seed))

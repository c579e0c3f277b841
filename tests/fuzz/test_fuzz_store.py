"""Fuzzing the gradient store's on-disk files: manifest bit flips and field replacements, log and
chunk corruption (issue 16, "Also").

Every mutation must either be harmless (the store reads back exactly the original data) or raise
:class:`StoreError` — never a ``KeyError``/``TypeError``, never other data. The store is pure
Python + numpy, so cases run in-process (no crash is possible short of an interpreter bug).
Bounded for CI by ``GRASS_FUZZ_EXAMPLES`` (default 100) examples per property.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grass_rs import GradientStore, StoreError

EXAMPLES = int(os.environ.get("GRASS_FUZZ_EXAMPLES", "100"))
LAYERS = {"a": 3, "b": 2}
CONFIG = {"model": "m0", "k": 5, "nested": {"x": [1, 2.5, None]}}


def _chunks() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{n: torch.randn(rows, k, generator=gen) for n, k in LAYERS.items()} for rows in (2, 3, 1)]


CHUNKS = _chunks()


def _make(path: Path, dtype: str, complete: bool) -> None:
    with GradientStore.open(path, LAYERS, CONFIG, dtype=dtype) as store:
        for c in CHUNKS:
            store.append(c)
        if complete:
            store.mark_complete()


def _expected(dtype: str) -> list[dict[str, torch.Tensor]]:
    t = getattr(torch, dtype)
    return [{n: g.to(t).float() for n, g in c.items()} for c in CHUNKS]


def _check(path: Path, dtype: str, *, prefix_ok: bool) -> None:
    """Either StoreError, or the original data (or, for log damage, an original prefix of it)."""
    try:
        store = GradientStore.load(path)
        got = list(store.chunks())
        layers, config = store.layers, store.config
    except StoreError:
        return
    want = _expected(dtype)
    assert layers == LAYERS and config == CONFIG
    if prefix_ok:
        want = want[: len(got)]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w) and all(torch.equal(g[n], w[n]) for n in w)


def _with_store(dtype: str, complete: bool, mutate: Callable[[Path], None], *, prefix_ok: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        with mock.patch("os.fsync"):  # durability is not what is fuzzed here; keeps CI fast
            _make(path, dtype, complete)
        mutate(path)
        _check(path, dtype, prefix_ok=prefix_ok)


def _flip(file: Path, position: float, bit: int) -> None:
    data = bytearray(file.read_bytes())
    if data:
        data[min(int(position * len(data)), len(data) - 1)] ^= 1 << bit
    file.write_bytes(bytes(data))


dtypes = st.sampled_from(["float32", "float16", "bfloat16"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=EXAMPLES)
@given(dtype=dtypes, complete=st.booleans(), position=st.floats(0, 1), bit=st.integers(0, 7))
def test_fuzz_manifest_bit_flips(dtype: str, complete: bool, position: float, bit: int) -> None:
    _with_store(dtype, complete, lambda p: _flip(p / "manifest.json", position, bit), prefix_ok=False)


def _replace_field(path: Path, keys: list[Any], value: Any) -> None:
    m = json.loads((path / "manifest.json").read_text())
    node: Any = m
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (path / "manifest.json").write_text(json.dumps(m))


FIELDS = [
    ["format"],
    ["version"],
    ["fingerprint"],
    ["config"],
    ["config", "k"],
    ["config", "nested"],
    ["layers"],
    ["layers", 0],
    ["layers", 0, 0],
    ["layers", 1, 1],
    ["dtype"],
    ["checksum"],
    ["extra"],
]


@settings(max_examples=EXAMPLES)
@given(dtype=dtypes, field=st.sampled_from(FIELDS), value=json_values)
def test_fuzz_manifest_fields(dtype: str, field: list[Any], value: Any) -> None:
    _with_store(dtype, True, lambda p: _replace_field(p, field, value), prefix_ok=False)


@settings(max_examples=EXAMPLES)
@given(
    dtype=dtypes,
    complete=st.booleans(),
    position=st.floats(0, 1),
    bit=st.integers(0, 7),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzz_log_damage(dtype: str, complete: bool, position: float, bit: int, cut: float | None) -> None:
    def damage(path: Path) -> None:
        log = path / "chunks.log"
        if cut is None:
            _flip(log, position, bit)
        else:  # a writer killed mid-record: the log ends anywhere
            data = log.read_bytes()
            log.write_bytes(data[: int(cut * len(data))])

    _with_store(dtype, complete, damage, prefix_ok=True)


@settings(max_examples=EXAMPLES)
@given(
    dtype=dtypes,
    index=st.integers(0, len(CHUNKS) - 1),
    position=st.floats(0, 1),
    bit=st.integers(0, 7),
    action=st.sampled_from(["flip", "truncate", "replace", "delete"]),
)
def test_fuzz_chunk_damage(dtype: str, index: int, position: float, bit: int, action: str) -> None:
    def damage(path: Path) -> None:
        f = path / f"chunk_{index:06d}.npy"
        if action == "flip":
            _flip(f, position, bit)
        elif action == "truncate":
            f.write_bytes(f.read_bytes()[: int(position * f.stat().st_size)])
        elif action == "replace":  # another chunk's file under this name
            other = path / f"chunk_{(index + 1) % len(CHUNKS):06d}.npy"
            f.write_bytes(other.read_bytes())
        else:
            f.unlink()

    _with_store(dtype, True, damage, prefix_ok=False)

"""Gradient store: round trip, crash safety (SIGKILL + resume), corruption and mismatch detection."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from grass_rs import GradientStore, StoreError, StoreMismatchError
from grass_rs.attribution.attributor import Attributor

LAYERS = {"a": 3, "b": 2}
CONFIG = {"model": "m0", "k": 5}

JOB = """
import os, sys, time
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from grass_rs.attribution.attributor import Attributor

torch.set_num_threads(1)
N, BATCH = 96, 8


class Data(Dataset):
    def __init__(self, slow):
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(N, 12, generator=gen), torch.randint(0, 3, (N,), generator=gen)
        self.slow = slow

    def __len__(self):
        return N

    def __getitem__(self, i):
        if self.slow and i % BATCH == 0:
            time.sleep(0.4)
        return self.x[i], self.y[i]


def model():
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def fit(store, slow=False):
    att = Attributor(model(), store=store, k=16)
    att.fit(DataLoader(Data(slow), batch_size=BATCH, shuffle=False))
    test = Data(False)
    return att.score(DataLoader([(test.x[i], test.y[i]) for i in range(5)], batch_size=5))


if __name__ == "__main__":
    fit(sys.argv[1], slow=True)
"""


def chunk(rows: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(rows, k, generator=gen) for name, k in LAYERS.items()}


def test_round_trip_and_resume(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path / "s", LAYERS, CONFIG)
    parts = [chunk(4, 0), chunk(3, 1)]
    store.append(parts[0])
    again = GradientStore.open(tmp_path / "s", LAYERS, CONFIG)  # resume: same config
    assert again.num_chunks == 1 and again.num_rows == 4 and not again.complete
    again.append(parts[1])
    again.mark_complete()
    loaded = GradientStore.load(tmp_path / "s")
    assert loaded.complete and loaded.layers == LAYERS
    got = loaded.read_all()
    for name in LAYERS:
        assert torch.equal(got[name], torch.cat([p[name] for p in parts]))
    chunk_file = np.load(tmp_path / "s" / "chunk_000000.npy", mmap_mode="r")  # plain .npy, memmap-able
    assert chunk_file.shape == (4, 5) and chunk_file.dtype == np.float32
    with pytest.raises(StoreError, match="complete"):
        loaded.append(parts[0])


def test_mismatched_store_is_refused(tmp_path: Path) -> None:
    GradientStore.open(tmp_path, LAYERS, CONFIG).append(chunk(2, 0))
    with pytest.raises(StoreMismatchError, match="another configuration"):
        GradientStore.open(tmp_path, LAYERS, {**CONFIG, "k": 6})
    with pytest.raises(StoreMismatchError):
        GradientStore.open(tmp_path, {"a": 3, "b": 3}, CONFIG)


def test_corrupt_chunk_and_manifest_are_detected(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    store.append(chunk(4, 0))
    path = tmp_path / "chunk_000000.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum"):
        GradientStore.load(tmp_path).verify()
    path.unlink()
    with pytest.raises(StoreError, match="missing"):
        GradientStore.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "grass-rs-gradient-st')
    with pytest.raises(StoreError, match="unreadable manifest"):
        GradientStore.load(tmp_path)
    with pytest.raises(StoreError, match="no gradient store"):
        GradientStore.load(tmp_path / "nowhere")


def test_nan_chunk_is_not_written(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    bad = chunk(3, 0)
    bad["b"][1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        store.append(bad)
    assert store.num_chunks == 0 and not list(tmp_path.glob("chunk_*"))
    assert GradientStore.load(tmp_path).num_chunks == 0


def test_unlisted_leftovers_are_overwritten_on_resume(tmp_path: Path) -> None:
    """A kill between the chunk rename and the manifest update leaves an unlisted chunk file."""
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    store.append(chunk(2, 0))
    (tmp_path / "chunk_000001.npy").write_bytes(b"garbage from a killed run")
    (tmp_path / "chunk_000002.npy.tmp").write_bytes(b"half")
    resumed = GradientStore.open(tmp_path, LAYERS, CONFIG)
    resumed.append(chunk(2, 1))
    assert torch.equal(GradientStore.load(tmp_path).read_chunk(1)["a"], chunk(2, 1)["a"])


def _job(tmp_path: Path) -> ModuleType:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    spec = importlib.util.spec_from_file_location("grass_job", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_for_chunks(proc: subprocess.Popen[bytes], manifest: Path, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            n = len(json.loads(manifest.read_text())["chunks"])
            if n >= count:
                return n
        time.sleep(0.05)
    raise AssertionError(f"the job wrote fewer than {count} chunks (exit code {proc.poll()})")


def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    job = _job(tmp_path)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, str(tmp_path / "job.py"), str(killed)], env=env) as proc:
        try:
            n = _wait_for_chunks(proc, killed / "manifest.json", 2)
        finally:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    partial = GradientStore.load(killed)
    assert not partial.complete and n <= partial.num_chunks < 12
    resumed = job.fit(killed)
    fresh = job.fit(tmp_path / "fresh")
    assert torch.equal(resumed, fresh)
    a, b = GradientStore.load(killed).read_all(), GradientStore.load(tmp_path / "fresh").read_all()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _mlp(seed: int = 1) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _loader(n: int = 20) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)),
        batch_size=8,
    )


def test_attributor_refuses_a_store_of_another_setup(tmp_path: Path) -> None:
    Attributor(_mlp(), store=tmp_path, k=8).fit(_loader())
    Attributor(_mlp(), store=tmp_path, k=8).fit(_loader())  # same setup: resumes a complete store
    for other in [dict(model=_mlp(2)), dict(k=4), dict(seed=7)]:
        kwargs = {"k": 8, **other}
        model = kwargs.pop("model", _mlp())
        with pytest.raises(StoreMismatchError):
            Attributor(model, store=tmp_path, **kwargs).fit(_loader())
    with pytest.raises(StoreMismatchError):
        Attributor(_mlp(), store=tmp_path, k=8).fit(_loader(24))


def test_attributor_edge_cases_write_nothing_half(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        Attributor(_mlp(), store=tmp_path / "empty").fit(
            DataLoader(TensorDataset(torch.zeros(0, 6), torch.zeros(0)))
        )
    assert not (tmp_path / "empty").exists()
    broken = _mlp()
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Attributor(broken, store=tmp_path / "nan", k=8).fit(_loader())
    assert GradientStore.load(tmp_path / "nan").num_chunks == 0
    att = Attributor(_mlp(), store=tmp_path / "ok", k=8).fit(_loader())
    one = next(iter(DataLoader(_loader().dataset, batch_size=1)))
    assert att.score([one]).shape == (1, 20)
    with pytest.raises(ValueError, match="shuffle"):
        Attributor(_mlp(), k=8).fit(DataLoader(_loader().dataset, batch_size=4, shuffle=True))


def test_save_load_round_trip(tmp_path: Path) -> None:
    att = Attributor(_mlp(), k=8).fit(_loader())
    test = DataLoader(_loader(5).dataset, batch_size=5)
    before = att.score(test)
    att.save(tmp_path / "saved")
    loaded = Attributor.load(tmp_path / "saved", _mlp(), k=8)
    assert torch.equal(loaded.score(test), before)
    assert torch.equal(loaded.score(test, damping=0.5), att.score(test, damping=0.5))
    torch.testing.assert_close(att.score(DataLoader(test.dataset, batch_size=2), test_chunk=2), before)
    with pytest.raises(ValueError, match="empty"):
        att.score([])
    with pytest.raises(StoreMismatchError, match="another model"):
        Attributor.load(tmp_path / "saved", _mlp(3), k=8)
    with pytest.raises(StoreMismatchError, match="another compressor"):
        Attributor.load(tmp_path / "saved", _mlp(), k=4)

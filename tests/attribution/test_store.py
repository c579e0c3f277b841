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
    store.close()  # releases the writer lock
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
    store.close()
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
            n = GradientStore.load(manifest.parent).num_chunks  # readers take no lock
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


# ---- issue 16: writer lock, atomic appends, manifest validation, read-only, O(1) appends, dtypes ----
LOCKER = """
import sys, time
from grass_rs import GradientStore
store = GradientStore.open(sys.argv[1], {"a": 3, "b": 2}, {"model": "m0", "k": 5})
print("locked", flush=True)
time.sleep(60)
"""


def test_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = GradientStore.open(tmp_path, LAYERS, CONFIG)
    first.append(chunk(2, 0))
    with pytest.raises(StoreError, match="already open for writing"):
        GradientStore.open(tmp_path, LAYERS, CONFIG)
    reader = GradientStore.load(tmp_path)  # readers are unaffected
    assert reader.num_chunks == 1 and torch.equal(reader.read_chunk(0)["a"], chunk(2, 0)["a"])
    with pytest.raises(StoreError, match="already open for writing"):
        reader.append(chunk(2, 1))  # a loaded handle that appends is a second writer too
    first.append(chunk(2, 1))
    first.close()
    with GradientStore.open(tmp_path, LAYERS, CONFIG) as second:  # released: resumes
        assert second.num_chunks == 2
        second.append(chunk(2, 2))
    third = GradientStore.load(tmp_path)
    third.append(chunk(2, 3))  # a loaded handle may write once the lock is free
    third.mark_complete()
    assert GradientStore.load(tmp_path).num_chunks == 4
    GradientStore.open(tmp_path, LAYERS, CONFIG)  # complete: no lock needed


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            with pytest.raises(StoreError, match=f"being written by process {proc.pid}"):
                GradientStore.open(tmp_path, LAYERS, CONFIG)
            assert GradientStore.load(tmp_path).num_chunks == 0  # readers are unaffected
        finally:
            proc.kill()
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)  # the kernel released the dead writer's lock
    store.append(chunk(2, 0))
    assert store.num_chunks == 1


def test_failed_commit_then_retry_stores_the_chunk_once(tmp_path: Path, monkeypatch) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    real = json.dumps
    calls = {"n": 0}

    def failing_once(*args, **kwargs):  # the chunk-list write fails once (full disk, ...)
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", failing_once)
    with pytest.raises(OSError, match="No space"):
        store.append(chunk(3, 0))
    assert store.num_chunks == 0 and store.num_rows == 0
    store.append(chunk(3, 0))  # the retry
    monkeypatch.undo()
    assert store.num_chunks == 1 and store.num_rows == 3
    store.close()
    disk = GradientStore.load(tmp_path)
    assert disk.num_chunks == 1 and torch.equal(disk.read_all()["a"], chunk(3, 0)["a"])


def _complete_store(path: Path) -> None:
    store = GradientStore.open(path, LAYERS, CONFIG)
    store.append(chunk(2, 0))
    store.append(chunk(3, 1))
    store.mark_complete()


def _edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _v1_store(path: Path, complete: bool = False) -> None:
    """A store as version 1 wrote it: the chunk list inside manifest.json."""
    import hashlib

    from grass_rs.attribution.store import fingerprint

    path.mkdir(parents=True, exist_ok=True)
    chunks = []
    for i, rows in enumerate((2, 3)):
        arr = np.concatenate([chunk(rows, i)[n].numpy() for n in LAYERS], axis=1)
        np.save(path / f"chunk_{i:06d}.npy", arr, allow_pickle=False)
        data = (path / f"chunk_{i:06d}.npy").read_bytes()
        chunks.append(
            {"file": f"chunk_{i:06d}.npy", "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}
        )
    layers = [[n, k] for n, k in LAYERS.items()]
    manifest = {
        "format": "grass-rs-gradient-store",
        "version": 1,
        "fingerprint": fingerprint({"config": CONFIG, "layers": layers}),
        "config": CONFIG,
        "layers": layers,
        "chunks": chunks,
        "complete": complete,
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


@pytest.mark.parametrize(
    "name", ["../x.npy", "/dev/zero", "/tmp/x.npy", "sub/chunk_000000.npy", "chunk_0.npy"]
)
def test_chunk_names_outside_the_store_are_refused(tmp_path: Path, name: str) -> None:
    _v1_store(tmp_path / "s")
    (tmp_path / "x.npy").write_bytes((tmp_path / "s" / "chunk_000000.npy").read_bytes())
    _edit_manifest(tmp_path / "s", lambda m: m["chunks"][0].__setitem__("file", name))
    with pytest.raises(StoreError, match="chunk file name"):
        GradientStore.load(tmp_path / "s")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["layers"][0].__setitem__(0, "c"),  # a renamed layer (the fingerprint disagrees)
        lambda m: m["layers"][1].__setitem__(1, 3),
        lambda m: m["config"].__setitem__("k", 6),
        lambda m: m.__setitem__("layers", "ab"),
        lambda m: m.__setitem__("layers", [["a", 3], ["a", 2]]),
        lambda m: m.__setitem__("layers", [["a", True], ["b", 2]]),
        lambda m: m.__setitem__("config", [1]),
        lambda m: m.__setitem__("version", True),
        lambda m: m.__setitem__("version", "1"),
        lambda m: m.pop("fingerprint"),
        lambda m: m.__setitem__("extra", 1),
        lambda m: m.__setitem__("chunks", {"0": 1}),
        lambda m: m["chunks"].__setitem__(0, "chunk_000000.npy"),
        lambda m: m["chunks"][0].__setitem__("rows", "2"),
        lambda m: m["chunks"][0].__setitem__("rows", -1),
        lambda m: m["chunks"][0].pop("sha256"),
        lambda m: m["chunks"][0].__setitem__("sha256", 5),
        lambda m: m.__setitem__("complete", "yes"),
    ],
)
def test_malformed_manifest_fields_raise_store_error(tmp_path: Path, edit) -> None:
    _v1_store(tmp_path)
    _edit_manifest(tmp_path, edit)
    with pytest.raises(StoreError):
        GradientStore.load(tmp_path)


@pytest.mark.parametrize("field", ["layers", "config", "dtype", "fingerprint", "version"])
def test_version_2_manifest_edits_are_detected(tmp_path: Path, field: str) -> None:
    _complete_store(tmp_path)
    values = {"layers": [["c", 3], ["b", 2]], "config": {"model": "m1", "k": 5}, "dtype": "float16"}
    values |= {"fingerprint": "0" * 64, "version": 3}
    _edit_manifest(tmp_path, lambda m: m.__setitem__(field, values[field]))
    with pytest.raises(StoreError):
        GradientStore.load(tmp_path)


def test_opening_a_complete_store_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    _complete_store(tmp_path)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in tmp_path.iterdir()}
    import grass_rs.attribution.store as store_module

    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied (read-only folder)")

    monkeypatch.setattr(store_module, "atomic_write", no_write)  # a read-only folder, even for root
    monkeypatch.setattr(store_module.os, "open", no_write)
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    assert store.complete and store.num_rows == 5
    store.mark_complete()  # already complete: no write
    store.verify()
    monkeypatch.undo()
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in tmp_path.iterdir()} == before


def test_refit_of_a_complete_store_in_a_read_only_folder(tmp_path: Path) -> None:
    att = Attributor(_mlp(), store=tmp_path / "ro", k=8).fit(_loader())
    test = DataLoader(_loader(5).dataset, batch_size=5)
    expected = att.score(test)
    os.chmod(tmp_path / "ro", 0o555)
    try:
        if os.access(tmp_path / "ro", os.W_OK):  # root ignores permissions: check for writes instead
            before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "ro").iterdir())
        again = Attributor(_mlp(), store=tmp_path / "ro", k=8).fit(_loader())
        assert torch.equal(again.score(test), expected)
        if os.access(tmp_path / "ro", os.W_OK):
            assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "ro").iterdir()) == before
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_appends_do_not_rewrite_the_manifest(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    store.append(chunk(1, 0))
    manifest = tmp_path / "manifest.json"
    ino, data = manifest.stat().st_ino, manifest.read_bytes()
    log = tmp_path / "chunks.log"
    sizes = []
    for i in range(1, 41):
        store.append(chunk(1, i))
        sizes.append(log.stat().st_size)
    assert manifest.stat().st_ino == ino and manifest.read_bytes() == data  # never rewritten
    steps = np.diff(sizes)
    assert steps.max() < 200 and steps.max() - steps.min() <= 2  # O(1) bytes per append
    store.mark_complete()
    assert GradientStore.load(tmp_path).num_chunks == 41


def test_a_torn_last_record_is_ignored_and_cut_off(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG)
    store.append(chunk(2, 0))
    store.append(chunk(2, 1))
    store.close()
    log = tmp_path / "chunks.log"
    good = log.read_bytes()
    for torn in [
        good.splitlines(keepends=True)[-1][:-9],
        b'{"file": "chunk_00',
        b'{"x":1} 0123456789abcdef\n',
    ]:
        log.write_bytes(good + torn)
        assert GradientStore.load(tmp_path).num_chunks == 2
    resumed = GradientStore.open(tmp_path, LAYERS, CONFIG)
    resumed.append(chunk(2, 2))
    resumed.mark_complete()
    done = GradientStore.load(tmp_path)
    assert done.complete and done.num_chunks == 3
    assert torch.equal(done.read_chunk(2)["b"], chunk(2, 2)["b"])
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"garbage 0123456789abcdef\n" + b"".join(lines[1:]))
    with pytest.raises(StoreError, match="record 2 is corrupt"):
        GradientStore.load(tmp_path)


def test_version_1_stores_are_read_and_migrated(tmp_path: Path) -> None:
    _v1_store(tmp_path / "old")
    old = GradientStore.load(tmp_path / "old")
    assert old.num_chunks == 2 and old.num_rows == 5 and not old.complete
    assert torch.equal(old.read_all()["a"], torch.cat([chunk(2, 0)["a"], chunk(3, 1)["a"]]))
    resumed = GradientStore.open(tmp_path / "old", LAYERS, CONFIG)
    resumed.append(chunk(1, 2))
    resumed.mark_complete()
    new = GradientStore.load(tmp_path / "old")
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["version"] == 2
    assert new.complete and new.num_rows == 6 and torch.equal(new.read_chunk(2)["a"], chunk(1, 2)["a"])
    _v1_store(tmp_path / "done", complete=True)
    assert GradientStore.open(tmp_path / "done", LAYERS, CONFIG).complete  # not migrated: no write
    assert json.loads((tmp_path / "done" / "manifest.json").read_text())["version"] == 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_stores(tmp_path: Path, dtype: str) -> None:
    store = GradientStore.open(tmp_path, LAYERS, CONFIG, dtype=dtype)
    parts = [chunk(4, 0), chunk(3, 1)]
    for part in parts:
        store.append(part)
    store.mark_complete()
    loaded = GradientStore.load(tmp_path)
    assert loaded.dtype == dtype
    got = loaded.read_all()
    torch_dtype = getattr(torch, dtype)
    for name in LAYERS:
        assert got[name].dtype == torch.float32
        want = torch.cat([p[name] for p in parts]).to(torch_dtype).float()
        assert torch.equal(got[name], want)
    raw = np.load(tmp_path / "chunk_000000.npy")
    assert raw.dtype == (np.float16 if dtype == "float16" else np.uint16) and raw.shape == (4, 5)
    with pytest.raises(StoreMismatchError, match="dtype"):
        GradientStore.open(tmp_path, LAYERS, CONFIG)  # float32 requested
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        GradientStore.open(tmp_path / "x", LAYERS, CONFIG, dtype="float64")


def test_values_beyond_the_stored_range_are_not_reported_as_nan(tmp_path: Path) -> None:
    store = GradientStore.open(tmp_path / "f32", LAYERS, CONFIG)
    big = {name: g.double() for name, g in chunk(2, 0).items()}
    big["a"][0, 0] = 1e300
    with pytest.raises(
        ValueError, match=r"1e\+300 in magnitude exceed the range of the store's dtype float32"
    ):
        store.append(big)
    half = GradientStore.open(tmp_path / "f16", LAYERS, CONFIG, dtype="float16")
    big = chunk(2, 0)
    big["b"][1, 1] = 1e5
    with pytest.raises(ValueError, match="float16"):
        half.append(big)
    assert store.num_chunks == half.num_chunks == 0

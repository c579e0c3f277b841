"""Where grass-rs's parallel work runs: on torch's OpenMP team by default, on its own rayon pool on
request, with bit-identical results either way; no second pool under torch; fork-safe; the thread
count follows torch's unless set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import grass_rs
from grass_rs import _core

LINUX = sys.platform.startswith("linux")


def run_child(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    full = dict(os.environ)
    full.pop("GRASS_THREAD_BACKEND", None)
    full.pop("GRASS_NUM_THREADS", None)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def restore_backend():  # type: ignore[no-untyped-def]
    before, threads = grass_rs.thread_backend(), grass_rs.get_num_threads()
    yield
    grass_rs.set_thread_backend(before)
    grass_rs.set_num_threads(threads)


@pytest.mark.skipif(not LINUX, reason="torch's libgomp is found through /proc/self/maps")
def test_default_backend_is_torchs_openmp_team() -> None:
    assert grass_rs.thread_backend() == "openmp"
    path = _core._openmp_runtime()
    assert path is not None and os.path.basename(path).startswith("libgomp")
    with open("/proc/self/maps", encoding="utf-8") as maps:
        assert path in maps.read()  # the runtime already loaded (by torch), not a second one
    torch_root = os.path.dirname(os.path.dirname(torch.__file__))
    assert path.startswith(torch_root), path


def _projectors() -> list[grass_rs.Projector]:
    p, k = 1 << 15, 256
    return [
        grass_rs.projector("sjlt", p, k, seed=1),
        grass_rs.projector("sjlt", p, k, seed=1, c=4),
        grass_rs.projector("mask", p, 4096, seed=2),
        grass_rs.projector("grass", p, k, seed=3),
        grass_rs.projector("gaussian", p // 8, k, seed=4),
        grass_rs.projector("rademacher", p // 8, k, seed=5),
        grass_rs.projector("srht", p, k, seed=6),
    ]


@pytest.mark.skipif(not LINUX, reason="the OpenMP backend needs torch's libgomp (Linux)")
def test_both_backends_and_any_thread_count_give_identical_bits(restore_backend) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    results: dict[tuple[str, int], list[torch.Tensor]] = {}
    for backend in ("rayon", "openmp"):
        grass_rs.set_thread_backend(backend)
        for threads in (1, 2, 3):
            grass_rs.set_num_threads(threads)
            outs = []
            for proj in _projectors():
                x = torch.randn(40, proj.in_dim, generator=g.manual_seed(proj.in_dim))
                y = proj(x)
                outs += [y, proj.transpose(y)]
            results[backend, threads] = outs
    ref = results["rayon", 1]
    for key, outs in results.items():
        for a, b in zip(ref, outs, strict=True):
            assert torch.equal(a, b), key


def test_set_thread_backend_rejects_unknown_names() -> None:
    with pytest.raises(grass_rs.InvalidArgumentError, match="`backend`"):
        grass_rs.set_thread_backend("tbb")


@pytest.mark.skipif(not LINUX, reason="thread names are read from /proc")
@pytest.mark.parametrize("backend", ["openmp", "rayon"])
def test_no_second_pool_under_torch(backend: str) -> None:
    # Under the OpenMP backend grass-rs's tasks run on torch's team: no rayon worker ("grass-rs-N")
    # is ever started. The rayon backend starts them (so this test can tell the two apart).
    out = run_child(
        """
        import os, torch, grass_rs
        x = torch.randn(64, 1 << 16)
        for p in (grass_rs.SJLT(1 << 16, 512), grass_rs.Mask(1 << 16, 8192), grass_rs.SRHT(1 << 16, 512)):
            p(x)
        names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
        print(grass_rs.thread_backend(), sum(n.startswith("grass-rs-") for n in names))
        """,
        env={"GRASS_THREAD_BACKEND": backend, "GRASS_NUM_THREADS": "2"},
    )
    got_backend, pool_threads = out.split()
    assert got_backend == backend
    assert (int(pool_threads) == 0) == (backend == "openmp"), out


def test_environment_chooses_the_backend_and_bad_values_fail_at_import() -> None:
    code = "import grass_rs; print(grass_rs.thread_backend())"
    assert run_child(code, env={"GRASS_THREAD_BACKEND": "rayon"}) == "rayon"
    full = dict(os.environ, GRASS_THREAD_BACKEND="fast")
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "GRASS_THREAD_BACKEND" in proc.stderr and "'fast'" in proc.stderr


@pytest.mark.skipif(not LINUX, reason="the OpenMP backend needs torch's libgomp (Linux)")
def test_thread_count_follows_torch_unless_set() -> None:
    out = run_child(
        """
        import torch, grass_rs
        torch.set_num_threads(1); a = grass_rs.get_num_threads()
        torch.set_num_threads(2); b = grass_rs.get_num_threads()
        grass_rs.set_num_threads(3); torch.set_num_threads(1); c = grass_rs.get_num_threads()
        grass_rs.set_num_threads(None); d = grass_rs.get_num_threads()
        print(a, b, c, d)
        """
    )
    assert out == "1 2 3 1"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_computes_on_rayon_without_hanging() -> None:
    # libgomp's team does not survive fork: a child (a DataLoader worker) must not wait on it.
    out = run_child(
        """
        import os, torch, grass_rs
        grass_rs.set_num_threads(2)
        p, x = grass_rs.SJLT(1 << 16, 512, seed=3), torch.randn(64, 1 << 16)
        parent = p(x)                       # the parent's team exists now
        torch.ones(256, 256) @ torch.ones(256, 256)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = torch.equal(p(x), parent)
            os.write(w, f"{grass_rs.thread_backend()} {ok}".encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(r, 100).decode())
        """,
        timeout=60,
    )
    assert out == "rayon True"

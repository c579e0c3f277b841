"""The committed PTX of the CUDA kernels is current and valid.

* Always (CI, no CUDA needed): each ``rust/grass-core/kernels/*.ptx`` header records the sha256 of
  the current ``.cu``/``.cuh`` sources (regenerate with ``scripts/gen_ptx.py``), targets
  ``compute_80`` and uses a CUDA 12 PTX ISA (8.x) so CUDA 12.8+ drivers can JIT it.
* ``ptxas`` (the ``nvidia-cuda-nvcc-cu12==12.8.*`` wheel in ``.venv-cuda``, which ``make test``
  installs, or on PATH) assembles every file for sm_80 and sm_90.
* ``g++`` builds a CPU emulation of every kernel and checks it against sequential references.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "rust" / "grass-core" / "kernels"
PTX = sorted(KERNELS.glob("*.ptx"))


def _load_gen_ptx() -> ModuleType:
    """``scripts/gen_ptx.py`` as a module: the hash definition lives there, once."""
    spec = importlib.util.spec_from_file_location("gen_ptx", ROOT / "scripts" / "gen_ptx.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sources_sha256 = _load_gen_ptx().sources_sha256


def test_every_kernel_source_has_ptx() -> None:
    assert {p.stem for p in KERNELS.glob("*.cu")} == {p.stem for p in PTX}


@pytest.mark.parametrize("ptx", PTX, ids=[p.name for p in PTX])
def test_ptx_header_matches_sources(ptx: Path) -> None:
    text = ptx.read_text()
    m = re.search(r"^// sources-sha256: ([0-9a-f]{64})$", text, re.M)
    assert m, f"{ptx.name} has no sources-sha256 header"
    assert m.group(1) == sources_sha256(), f"{ptx.name} is stale: run scripts/gen_ptx.py"
    assert re.search(r"^// compiler: NVRTC 12\.\d+", text, re.M)
    version = re.search(r"^\.version (\d+)\.(\d+)$", text, re.M)
    assert version and (int(version.group(1)), int(version.group(2))) <= (8, 7), (
        "PTX ISA must be ≤ 8.7 (CUDA 12.8)"
    )
    assert re.search(r"^\.target sm_80$", text, re.M)


def _ptxas() -> str | None:
    try:
        import nvidia.cuda_nvcc  # type: ignore[import-not-found]

        p = Path(next(iter(nvidia.cuda_nvcc.__path__))) / "bin" / "ptxas"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    venv = ROOT / ".venv-cuda"
    for cand in venv.glob("lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas"):
        return str(cand)
    return shutil.which("ptxas")


PTXAS = _ptxas()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("ptx", PTX, ids=[p.name for p in PTX])
def test_ptxas_accepts(ptx: Path, arch: str, tmp_path: Path) -> None:
    assert PTXAS is not None, (
        "ptxas not found: `make test` installs it into .venv-cuda "
        "(pip install 'nvidia-cuda-nvcc-cu12==12.8.*')"
    )
    r = subprocess.run(
        [PTXAS, f"--gpu-name={arch}", "-O3", str(ptx), "-o", str(tmp_path / "out.cubin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, f"ptxas {arch} rejected {ptx.name}:\n{r.stderr}"
    print(r.stderr, file=sys.stderr)


def _emulation_sources(dst: Path) -> None:
    """Copies the kernels for the CPU emulator: the f16 PTX `asm` becomes a software conversion and
    the dynamic shared array a host buffer (the only CUDA-specific constructs it cannot define)."""
    for src in [*KERNELS.glob("*.cu"), *KERNELS.glob("*.cuh")]:
        text = src.read_text()
        text = text.replace('asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));', "f = emu_half(v.bits);")
        text = text.replace(
            "extern __shared__ __align__(16) unsigned char grass_smem[];",
            "unsigned char* grass_smem = g_smem;",
        )
        (dst / src.name).write_text(text)
    for src in (KERNELS / "emu").iterdir():
        (dst / src.name).write_text(src.read_text())


CXX = shutil.which("g++")


def test_kernels_on_cpu_emulator(tmp_path: Path) -> None:
    """Every kernel (atomic/CSR SJLT and GraSS in all dtypes, adjoints, mask, dense with and
    without the split) run by a CPU emulation of CUDA threads, against sequential references."""
    assert CXX is not None, "g++ (C++20) is needed to build the CPU emulation of the kernels"
    _emulation_sources(tmp_path)
    exe = tmp_path / "kernels_test"
    build = subprocess.run(
        [
            CXX,
            "-std=c++20",
            "-O1",
            "-ffp-contract=off",
            "-w",
            "-pthread",
            "-I",
            str(tmp_path),
            "-o",
            str(exe),
            str(tmp_path / "kernels_test.cpp"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=False, timeout=600)
    assert run.returncode == 0 and "0 failures" in run.stdout, run.stdout + run.stderr

    # The kernels' entries (hash.cuh, dense_entry) are the Rust core's, bit for bit (the dense
    # Gaussian uses the contract's own float32 ln and cos/sin, not a math library's).
    import torch

    import grass_rs
    from grass_rs import _core

    def entries(key: int, k: int, c: int, p: int, kind: int) -> list[str]:
        args = [str(exe), "entries", str(key), str(k), str(c), str(p), str(kind)]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()

    for p, k, c, seed in [(300, 24, 1, 7), (300, 24, 4, 7), (500, 4096, 3, 11), (50, 7, 7, 1)]:
        got = [int(v) for v in entries(_core.stream_key(seed, 1), k, c, p, -1)]
        want = [
            b | (1 << 31 if neg else 0)
            for b, neg in grass_rs.SJLT(p, k, c=c, seed=seed)._core.sjlt_columns(0, p)
        ]
        assert got == want, (p, k, c, seed)
    for kind, cls in [(0, grass_rs.Gaussian), (1, grass_rs.Rademacher)]:
        p, k, seed = 40, 33, 5
        got = torch.tensor([float(v) for v in entries(_core.stream_key(seed, 3 + kind), k, 1, p, kind)])
        want = cls(p, k, seed=seed).matrix(torch.float32).T.reshape(-1)
        assert torch.equal(got.float(), want), kind

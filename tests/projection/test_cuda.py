"""The CUDA path: same seed → same matrix as the CPU, on PyTorch's current stream.

Every test here needs a GPU and a CUDA build of grass-rs; without one they are collected and
skipped with the reason below (CI, CPU-only machines). On a GPU machine run::

    pytest -q tests/test_cuda.py            # the 64-bit test needs ~10 GB of free GPU memory

Contract checked: SJLT/MASK/GraSS bucket, sign and mask indices are bit-identical to the CPU
(the projected identity matrix is *equal* in float64), projections equal within float rounding,
deterministic mode bit-identical across runs, batch splits and streams; adjoints; all dtypes;
64-bit offsets; stream ordering; multi-device; errors.
"""

from __future__ import annotations

import pytest
import torch

import grass_rs
from grass_rs import _core

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not grass_rs.cuda_available(),
        reason="needs a CUDA GPU, its driver and a CUDA build of grass-rs "
        "(grass_rs.cuda_available() is False)",
    ),
]

DEV = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def make(name: str, p: int, k: int, seed: int = 7) -> grass_rs.Projector:
    if name == "sjlt1":
        return grass_rs.SJLT(p, k, c=1, seed=seed)
    if name == "sjlt4":
        return grass_rs.SJLT(p, k, c=4, seed=seed)
    if name == "mask":
        return grass_rs.Mask(p, k, seed=seed)
    if name == "mask_scaled":
        return grass_rs.Mask(p, k, seed=seed, scale=True)
    if name == "grass":
        return grass_rs.GraSS(p, k, mask_dim=min(p, 4 * k), c=1, seed=seed)
    if name == "grass3":
        return grass_rs.GraSS(p, k, mask_dim=min(p, 4 * k), c=3, seed=seed)
    if name == "gaussian":
        return grass_rs.Gaussian(p, k, seed=seed)
    if name == "rademacher":
        return grass_rs.Rademacher(p, k, seed=seed)
    raise ValueError(name)


SPARSE = ["sjlt1", "sjlt4", "mask", "mask_scaled", "grass", "grass3"]
ALL = [*SPARSE, "gaussian", "rademacher"]


@pytest.fixture(params=[False, True], ids=["atomic", "deterministic"])
def mode(request: pytest.FixtureRequest):
    before = _core.get_deterministic()
    grass_rs._core.set_deterministic(request.param)
    yield request.param
    grass_rs._core.set_deterministic(before)


def tol(dtype: torch.dtype, n: int) -> float:
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return 8 * eps * max(n, 1) ** 0.5


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, n: int) -> None:
    a, b = a.double().cpu(), b.double().cpu()
    scale = max(float(b.abs().max()), 1.0)
    err = float((a - b).abs().max())
    assert err <= tol(dtype, n) * scale * 4, f"max error {err:.3e} (scale {scale:.3e})"


# --- availability -----------------------------------------------------------------------------------


def test_device_count_matches_torch() -> None:
    assert _core.CUDA_COMPILED
    assert _core.cuda_device_count() == torch.cuda.device_count()


# --- indices: bit-identical to the CPU -----------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_matrix_equals_cpu(name: str, mode: bool) -> None:
    p, k = 300, 24
    proj = make(name, p, k)
    eye = torch.eye(p, dtype=torch.float64)
    cpu = proj.project(eye)
    gpu = proj.project(eye.to(DEV)).cpu()
    # Projecting the identity reads each entry exactly: buckets, signs, mask indices, scales and the
    # contract's float32 Gaussian (its own ln/cos/sin) are bit-identical on both devices.
    assert torch.equal(gpu, cpu)


def _gpu_matrix(proj: grass_rs.Projector) -> torch.Tensor:
    """``P`` computed on the GPU, ``(out_dim, in_dim)`` float64 on the CPU."""
    return proj.project(torch.eye(proj.in_dim, dtype=torch.float64, device=DEV)).T.cpu()


def test_contract_vectors_on_gpu() -> None:
    """The known-answer vectors of docs/CONTRACT.md, reproduced by the kernels."""
    import json
    from pathlib import Path

    vectors = json.loads((Path(__file__).parent.parent / "data" / "contract_vectors.json").read_text())
    for det in (False, True):
        _core.set_deterministic(det)
        try:
            for case in vectors["sjlt"]:
                proj = grass_rs.SJLT(case["in_dim"], case["out_dim"], c=case["c"], seed=case["seed"])
                m = _gpu_matrix(proj) * case["c"] ** 0.5
                for j, (buckets, signs) in enumerate(zip(case["buckets"], case["signs"], strict=True)):
                    col = m[:, j]
                    assert sorted(col.nonzero().flatten().tolist()) == sorted(buckets)
                    assert [round(float(col[b])) for b in buckets] == signs
            for case in vectors["mask"]:
                proj = grass_rs.Mask(case["in_dim"], case["out_dim"], seed=case["seed"])
                coords = torch.arange(case["in_dim"], dtype=torch.float64, device=DEV)[None]
                assert proj.project(coords)[0].long().tolist() == case["indices"]
        finally:
            _core.set_deterministic(None)
    for case in vectors["dense"]:
        cls = grass_rs.Gaussian if case["kind"] == "gaussian" else grass_rs.Rademacher
        got = _gpu_matrix(cls(case["in_dim"], case["out_dim"], seed=case["seed"])).float()
        torch.testing.assert_close(got, torch.tensor(case["matrix"]), rtol=1e-5, atol=1e-6)


# --- values, all dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ALL)
def test_project_matches_cpu(name: str, dtype: torch.dtype, mode: bool) -> None:
    p, k, batch = 5000, 64, 11
    proj = make(name, p, k)
    x = torch.randn(batch, p, generator=torch.Generator().manual_seed(1)).to(dtype)
    cpu = proj.project(x)
    gpu = proj.project(x.to(DEV))
    assert gpu.device.type == torch.device(DEV).type
    assert gpu.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    close(gpu, cpu, dtype, p)  # same entries; the summation order differs
    if name.startswith("mask"):
        assert torch.equal(gpu.cpu(), cpu)  # a gather is exact


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ALL)
def test_transpose_matches_cpu(name: str, dtype: torch.dtype) -> None:
    p, k, batch = 3000, 48, 9
    proj = make(name, p, k)
    y = torch.randn(batch, k, generator=torch.Generator().manual_seed(2), dtype=dtype)
    cpu = proj.transpose(y)
    gpu = proj.transpose(y.to(DEV))
    if name == "gaussian":
        close(gpu, cpu, torch.float32, k)
    elif name == "rademacher":
        close(gpu, cpu, dtype, k)
    else:
        # Same summation order as the CPU (over the c repeats): bit-identical.
        assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("name", ALL)
def test_adjoint(name: str) -> None:
    p, k, batch = 2000, 40, 5
    proj = make(name, p, k)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, p, generator=g, dtype=torch.float64).to(DEV)
    y = torch.randn(batch, k, generator=g, dtype=torch.float64).to(DEV)
    lhs = (proj.project(x) * y).sum(1)
    rhs = (x * proj.transpose(y)).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_half_transpose_input_is_upcast() -> None:
    proj = make("sjlt4", 500, 32)
    y = torch.randn(3, 32, device=DEV, dtype=torch.bfloat16)
    out = proj.transpose(y)
    assert out.dtype == torch.float32
    assert torch.equal(out.cpu(), proj.transpose(y.float().cpu()))


def test_one_dimensional_and_empty_batch() -> None:
    proj = make("sjlt4", 700, 16)
    x = torch.randn(700, device=DEV)
    assert proj.project(x).shape == (16,)
    assert proj.project(torch.empty(0, 700, device=DEV)).shape == (0, 16)
    assert proj.transpose(torch.empty(0, 16, device=DEV)).shape == (0, 700)


# --- determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1 << 16, (1 << 19) + 5], ids=["one_chunk", "three_chunks"])
@pytest.mark.parametrize("name", ALL)
def test_deterministic_bit_identical(name: str, p: int) -> None:
    # The deterministic CSR cuts the coordinates into chunks of 2^18 (plan.rs CSR_CHUNK).
    _core.set_deterministic(True)
    try:
        k, batch = 512, 20
        proj = make(name, p, k)
        x = torch.randn(batch, p, device=DEV)
        a = proj.project(x)
        b = proj.project(x)
        assert torch.equal(a, b)
        # Another batch split (other grids) and another stream give the same bits.
        parts = torch.cat([proj.project(x[:7]), proj.project(x[7:13]), proj.project(x[13:])])
        assert torch.equal(a, parts)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            c = proj.project(x)
        torch.cuda.current_stream().wait_stream(s)
        assert torch.equal(a, c)
        # A fresh projector (tables rebuilt) too.
        assert torch.equal(a, make(name, p, k).project(x))
    finally:
        _core.set_deterministic(None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["sjlt1", "sjlt4", "grass3"])
def test_multichunk_matches_cpu(name: str, dtype: torch.dtype, mode: bool) -> None:
    p = (1 << 19) + 5  # three chunks of the deterministic CSR
    proj = make(name, p, 256)
    x = torch.randn(3, p, generator=torch.Generator().manual_seed(4)).to(dtype)
    close(proj.project(x.to(DEV)), proj.project(x), dtype, p)


def test_deterministic_follows_torch_by_default() -> None:
    assert _core.get_deterministic() is None
    proj = make("sjlt4", 1 << 14, 256)
    x = torch.randn(8, 1 << 14, device=DEV)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        a, b = proj.project(x), proj.project(x)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(a, b)


def test_atomic_mode_is_close_to_deterministic() -> None:
    proj = make("sjlt4", 1 << 16, 1024)
    x = torch.randn(16, 1 << 16, device=DEV)
    _core.set_deterministic(True)
    try:
        d = proj.project(x)
    finally:
        _core.set_deterministic(False)
    try:
        a = proj.project(x)
    finally:
        _core.set_deterministic(None)
    close(a, d, torch.float32, 1 << 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("k", [1, 3, 6144, 12288, 20000])
def test_shared_and_global_accumulators(k: int, dtype: torch.dtype, mode: bool) -> None:
    # k · sizeof(acc) ≤ 48 KiB accumulates in shared memory, larger k in global memory.
    p = 40_000
    for c in sorted({1, min(k, 2)}):
        proj = grass_rs.SJLT(p, k, c=c, seed=9)
        x = torch.randn(10, p, dtype=dtype)
        close(proj.project(x.to(DEV)), proj.project(x), dtype, p)


# --- streams and devices ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sjlt1", "mask", "grass", "rademacher"])
def test_stream_ordering(name: str) -> None:
    """Work queued on a side stream before the projection is seen by it (we launch on the
    current stream, not the default one)."""
    p, k = 1 << 20, 256
    proj = make(name, p, k)
    src = torch.randn(4, p, device=DEV)
    want = proj.project(src.cpu())
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x = torch.zeros(4, p, device=DEV)
        torch.cuda._sleep(200_000_000)  # delay the copy: a wrong stream would read zeros
        x.copy_(src)
        y = proj.project(x)
        back = proj.transpose(y)
    s.synchronize()
    close(y, want, torch.float32, p)
    close(back, proj.transpose(want), torch.float32, k)


def test_no_current_device_side_effect() -> None:
    before = torch.cuda.current_device()
    proj = make("sjlt4", 1000, 32)
    for d in range(torch.cuda.device_count()):
        proj.project(torch.randn(2, 1000, device=f"cuda:{d}"))
        assert torch.cuda.current_device() == before


@pytest.mark.skipif(
    not grass_rs.cuda_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs"
)
@pytest.mark.parametrize("name", ALL)
def test_other_device(name: str) -> None:
    proj = make(name, 3000, 32)
    x = torch.randn(5, 3000, dtype=torch.float64)
    with torch.cuda.device(0):
        y = proj.project(x.to("cuda:1"))
        assert y.device == torch.device("cuda:1")
        assert torch.cuda.current_device() == 0
    close(y, proj.project(x), torch.float64, 3000)
    # and back on device 0 (tables are per device)
    close(proj.project(x.to("cuda:0")), proj.project(x), torch.float64, 3000)


# --- 64-bit sizes ---------------------------------------------------------------------------------------

P64 = (1 << 30) + 7  # 2 × P64 bfloat16 elements: past 2³¹ elements and 2³¹ bytes


def _free_gpu_bytes() -> int:
    if not grass_rs.cuda_available():
        return 0
    free, _ = torch.cuda.mem_get_info()
    return free


@pytest.mark.slow
@pytest.mark.skipif(_free_gpu_bytes() < (20 << 30), reason="needs a GPU with ≥ 20 GB free (64-bit sizes)")
def test_64bit_offsets() -> None:
    x = torch.zeros(2, P64, dtype=torch.bfloat16, device=DEV)
    hits = [(0, 3, 1.5), (0, P64 - 1, -2.0), (1, (1 << 30) + 2, 4.0), (1, 5, 0.25)]
    for b, j, v in hits:
        x[b, j] = v
    for c in (1, 2):
        proj = grass_rs.SJLT(P64, 64, c=c, seed=3)
        want = torch.zeros(2, 64)
        for b, j, v in hits:
            buckets, signs = proj.columns(j, j + 1)
            want[b, buckets[0]] += v * signs[0] / c**0.5
        _core.set_deterministic(False)
        try:
            got = proj.project(x)
        finally:
            _core.set_deterministic(None)
        torch.testing.assert_close(got.cpu(), want)
        back = proj.transpose(got)
        assert back.shape == (2, P64)
        for b, j, _ in hits:
            buckets, signs = proj.columns(j, j + 1)
            want_j = float((got[b].cpu()[buckets[0]] * signs[0].float()).sum()) / c**0.5
            assert float(back[b, j]) == pytest.approx(want_j, rel=1e-6, abs=1e-6)
        del back
    mask = grass_rs.Mask(P64, 1000, seed=5)
    idx = mask.indices
    y = mask.project(x)
    assert torch.equal(y.cpu(), x[:, idx.to(DEV)].float().cpu())
    g = grass_rs.GraSS(P64, 64, mask_dim=4096, c=1, seed=5)
    for det in (False, True):
        _core.set_deterministic(det)
        try:
            got = g.project(x)
        finally:
            _core.set_deterministic(None)
        sel = x[:, g.indices.to(DEV)].float().cpu()
        want = grass_rs.SJLT(4096, 64, c=1, seed=5).project(sel)
        torch.testing.assert_close(got.cpu(), want)


# --- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs() -> None:
    proj = make("sjlt4", 100, 8)
    core = proj._core
    stream = torch.cuda.current_stream().cuda_stream
    x = torch.randn(3, 100, device=DEV)
    with pytest.raises(ValueError, match="in_dim"):
        proj.project(torch.randn(3, 99, device=DEV))
    with pytest.raises(ValueError, match="columns"):
        core.project_cuda(torch.randn(3, 99, device=DEV), torch.empty(3, 8, device=DEV), stream, False)
    with pytest.raises(TypeError):
        proj.project(torch.zeros(3, 100, device=DEV, dtype=torch.int32))
    with pytest.raises(TypeError, match="float32"):
        core.project_cuda(x, torch.empty(3, 8, device=DEV, dtype=torch.float64), stream, False)
    with pytest.raises(ValueError, match="rows"):
        core.project_cuda(x, torch.empty(2, 8, device=DEV), stream, False)
    with pytest.raises(ValueError, match="CPU tensor"):
        core.project_cuda(x, torch.empty(3, 8), stream, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.project_cuda(x, torch.empty(8, 3, device=DEV).T, stream, False)
    buf = torch.empty(400, device=DEV)
    with pytest.raises(ValueError, match="overlap"):
        core.project_cuda(buf[:300].view(3, 100), buf[290:314].view(3, 8), stream, False)
    # the non-contiguous input is copied by the Python layer
    xt = torch.randn(100, 3, device=DEV).T
    close(proj.project(xt), proj.project(xt.cpu()), torch.float32, 100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_srht_on_cuda_matches_cpu(dtype: torch.dtype) -> None:
    # SRHT has no PTX kernel: CUDA tensors take the torch FWHT path on the device.
    proj = grass_rs.SRHT(1000, 64, seed=3)
    x, y = torch.randn(5, 1000, dtype=dtype), torch.randn(5, 64, dtype=dtype)
    got = proj.project(x.to(DEV))
    assert got.device.type == "cuda" and got.dtype == dtype
    close(got.cpu(), proj.project(x), dtype, 1024)
    close(proj.transpose(y.to(DEV)).cpu(), proj.transpose(y), dtype, 1024)


def test_gradients_sized_benchmark_smoke() -> None:
    # One realistic size of every kind: batch 64 × 2²⁰ in bfloat16.
    x = torch.randn(64, 1 << 20, device=DEV, dtype=torch.bfloat16)
    for name in SPARSE:
        y = make(name, 1 << 20, 4096).project(x)
        assert torch.isfinite(y).all()

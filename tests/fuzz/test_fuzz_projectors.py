"""Fuzzing the projectors: constructor arguments and input layouts/dtypes (issue 16, "Also").

Every case runs in a long-lived worker subprocess (a Rust crash — abort, segfault — kills only the
worker; the case is reported and the worker restarted). Each case must either succeed with the
right numbers or raise a clear error (``GrassError``/``ValueError``/``TypeError``/``MemoryError``):
no other exception, no crash, no hang. Bounded for CI: ``GRASS_FUZZ_EXAMPLES`` (default 100) cases
per property, derandomized by the ``ci`` hypothesis profile.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("GRASS_FUZZ_EXAMPLES", "100"))
CASE_TIMEOUT_S = 60.0

WORKER = r"""
import json, sys
import numpy as np
import torch
import grass_rs
from grass_rs.projection import dense_matrix

torch.set_num_threads(1)
CLEAR = (grass_rs.GrassError, ValueError, TypeError, MemoryError)
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64,
          "i32": torch.int32, "c64": torch.complex64}


def build(case):
    return grass_rs.projector(case["kind"], case["in_dim"], case["out_dim"], **case["kwargs"])


def make_input(p, spec):
    gen = torch.Generator().manual_seed(spec["seed"])
    batch, dim = spec["batch"], (p.out_dim if spec["adjoint"] else p.in_dim)
    base = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * spec["scale"]
    layout = spec["layout"]
    if layout == "transposed":
        x = base.T.contiguous().T
    elif layout == "strided":
        x = torch.stack([base, base], dim=2)[:, :, 0]
    elif layout == "expanded":
        x = base[:1].expand(batch, dim) if batch else base
    elif layout == "sliced":
        x = torch.cat([base, base], dim=1)[:, dim:]
    else:
        x = base
    if spec["one_d"] and batch == 1:
        x = x[0]
    dtype = spec["dtype"]
    if dtype.startswith("np"):
        arr = x.numpy()
        kind = dtype[2:]
        arr = {"f16": arr.astype(np.float16), "f32": arr.astype(np.float32), "f64": arr,
               "be": arr.astype(">f8"), "ld": arr.astype(np.longdouble), "i64": arr.astype(np.int64)}[kind]
        return arr, torch.from_numpy(np.asarray(arr, dtype=np.float64)) if kind not in ("ld", "i64") else None
    t = x.to(DTYPES[dtype])
    if layout == "neg" and t.is_floating_point():
        t = torch._neg_view(-t)
    if spec["requires_grad"] and t.is_floating_point():
        t.requires_grad_(True)
    ref = t.detach().to(torch.float64) if t.is_floating_point() else None
    return t, ref


def run(case):
    try:
        p = build(case)
    except CLEAR as e:
        return {"status": "refused", "type": type(e).__name__, "msg": str(e)[:200]}
    spec = case.get("input")
    if spec is None:
        return {"status": "built"}
    x, ref = make_input(p, spec)
    fn = p.transpose if spec["adjoint"] else p.project
    try:
        out = fn(x)
    except CLEAR as e:
        if ref is not None and spec["dtype"] not in ("i32", "c64"):
            return {"status": "bad", "why": f"valid input refused: {type(e).__name__}: {e}"}
        return {"status": "refused", "type": type(e).__name__, "msg": str(e)[:200]}
    if ref is None:
        return {"status": "bad", "why": f"invalid input {spec['dtype']} accepted"}
    out_t = torch.as_tensor(out).detach().to(torch.float64)
    m = dense_matrix(p)
    want = ref @ m if spec["adjoint"] else ref @ m.T
    if tuple(out_t.shape) != tuple(want.shape):
        return {"status": "bad", "why": f"shape {tuple(out_t.shape)} != {tuple(want.shape)}"}
    tol = 1e-9 if spec["dtype"] in ("f64", "npf64", "npbe") else 1e-4
    scale = float(ref.abs().sum()) * float(m.abs().max()) + 1e-30
    err = float((out_t - want).abs().max()) if out_t.numel() else 0.0
    if err > tol * scale:
        return {"status": "bad", "why": f"error {err:.3g} > {tol:.0e} x {scale:.3g}"}
    if isinstance(x, torch.Tensor):  # bit-identical to the contiguous copy
        again = fn(x.detach().clone(memory_format=torch.contiguous_format))
        if not torch.equal(torch.as_tensor(again), torch.as_tensor(out).detach()):
            return {"status": "bad", "why": "layout changed the bits"}
    return {"status": "ok"}


for line in sys.stdin:
    case = json.loads(line)
    try:
        reply = run(case)
    except BaseException as e:  # noqa: BLE001 - any other exception is a finding
        reply = {"status": "bad", "why": f"unclear exception {type(e).__name__}: {e}"}
    print(json.dumps(reply), flush=True)
"""


class Worker:
    """A subprocess that runs cases; restarted after a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def run(self, case: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CASE_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            code = self._stop()
            what = "hang" if not ready else f"crash (exit code {code})"
            return {"status": "bad", "why": f"worker {what} on {case}"}
        return dict(json.loads(line))

    def _stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        return code

    def close(self) -> None:
        self._stop()


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


KINDS = ["grass", "sjlt", "mask", "gaussian", "rademacher", "srht"]
# Sizes stay small or beyond what the Python checks accept: huge-but-valid allocations are the Rust
# owner's item (fallible allocation) and are fuzzed there.
dims = st.one_of(
    st.integers(-3, 200),
    st.sampled_from([2**63, 2**64, 2**70, -(2**63)]),
    st.sampled_from([1.5, "8", None, True]),
)
seeds = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([-1, 2**64, 1.0, "0", None]))


@st.composite
def constructor_cases(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    kwargs: dict[str, Any] = {"seed": draw(seeds)}
    if kind in ("sjlt", "grass"):
        kwargs["c"] = draw(st.one_of(st.integers(-1, 9), st.just(2.0)))
    if kind == "grass" and draw(st.booleans()):
        kwargs["mask_dim"] = draw(dims)
    if kind == "mask":
        kwargs["scale"] = draw(st.booleans())
    return {"kind": kind, "in_dim": draw(dims), "out_dim": draw(dims), "kwargs": kwargs}


@st.composite
def input_cases(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    in_dim = draw(st.integers(1, 48))
    out_dim = draw(st.integers(1, in_dim))
    kwargs: dict[str, Any] = {"seed": draw(st.integers(0, 2**64 - 1))}
    if kind in ("sjlt", "grass"):
        kwargs["c"] = draw(st.integers(1, out_dim))
    if kind == "grass":
        kwargs["mask_dim"] = draw(st.integers(out_dim, in_dim))
    batch = draw(st.integers(0, 5))
    spec = {
        "seed": draw(st.integers(0, 1000)),
        "batch": batch,
        "adjoint": draw(st.booleans()),
        "layout": draw(st.sampled_from(["contiguous", "transposed", "strided", "expanded", "sliced", "neg"])),
        "one_d": draw(st.booleans()),
        "dtype": draw(
            st.sampled_from(
                [
                    "f16",
                    "bf16",
                    "f32",
                    "f64",
                    "i32",
                    "c64",
                    "npf16",
                    "npf32",
                    "npf64",
                    "npbe",
                    "npld",
                    "npi64",
                ]
            )
        ),
        "requires_grad": draw(st.booleans()),
        "scale": draw(st.sampled_from([1.0, 1e-3, 100.0])),
    }
    return {"kind": kind, "in_dim": in_dim, "out_dim": out_dim, "kwargs": kwargs, "input": spec}


@settings(max_examples=EXAMPLES)
@given(case=constructor_cases())
def test_fuzz_projector_arguments(worker: Worker, case: dict[str, Any]) -> None:
    reply = worker.run(case)
    assert reply["status"] in ("built", "refused"), reply
    if reply["status"] == "refused":
        assert reply["msg"].startswith("`") or "must" in reply["msg"], reply  # names the argument


@settings(max_examples=EXAMPLES)
@given(case=input_cases())
def test_fuzz_projector_inputs(worker: Worker, case: dict[str, Any]) -> None:
    reply = worker.run(case)
    assert reply["status"] in ("ok", "refused"), reply

"""Where grass-rs's parallel work runs: on torch's OpenMP team, or on grass-rs's own rayon pool.

torch's CPU ops run on the team of its GNU OpenMP runtime (libgomp), whose workers keep spinning for
a while after each op (the default ``OMP_WAIT_POLICY``). A second pool started right after a torch op
fights them for the cores (on 2 cores a projection took twice its time), and the reverse slows
torch. So by default grass-rs runs its tasks **on torch's OpenMP team**: the workers that are
spinning anyway take them, nothing has to be set before importing torch, and ``torch.set_num_threads``
sizes both libraries (unless ``GRASS_NUM_THREADS`` / :func:`grass_rs.set_num_threads` sets grass-rs's
count). Results are bit-identical on either backend and for any thread count.

The rayon pool is used when torch's runtime is not GNU OpenMP (or cannot be found), in a forked
child (libgomp's threads do not survive ``fork``), with ``GRASS_THREAD_BACKEND=rayon`` in the
environment, or after :func:`set_thread_backend` ``("rayon")``.
"""

from __future__ import annotations

import os

import torch

from . import _core
from .errors import InvalidArgumentError

__all__ = ["set_thread_backend", "thread_backend"]

BACKENDS = ("openmp", "rayon")
ENV = "GRASS_THREAD_BACKEND"


def torch_openmp_runtime() -> str | None:
    """The path of the GNU OpenMP runtime torch's CPU ops run on, if it can be found (Linux)."""
    if not getattr(torch._C, "has_openmp", False):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "libgomp" in line}
    except OSError:
        return None
    found = sorted(p for p in paths if os.path.basename(p).startswith("libgomp"))
    # torch's own copy first (another package may bring a libgomp of its own).
    torch_dir = os.path.dirname(os.path.dirname(torch.__file__))
    found.sort(key=lambda p: not p.startswith(torch_dir))
    return found[0] if found else None


def thread_backend() -> str:
    """``"openmp"`` when grass-rs's parallel work runs on torch's OpenMP team, else ``"rayon"``."""
    return "openmp" if _core._openmp_runtime() is not None else "rayon"


def _attach_openmp(required_by: str | None) -> None:
    """Runs grass-rs's work on torch's OpenMP team when its runtime is found; when it is not,
    raises naming ``required_by`` (what asked for it), or does nothing when that is ``None``."""
    path = torch_openmp_runtime()
    if path is not None:
        _core._use_openmp(path)
    elif required_by is not None:
        raise InvalidArgumentError(
            f"{required_by} needs torch's GNU OpenMP runtime (libgomp), which is not loaded in this "
            "process; use 'rayon'"
        )


def set_thread_backend(backend: str) -> None:
    """Runs grass-rs's parallel work on torch's OpenMP team (``"openmp"``) or on its own rayon
    pool (``"rayon"``).

    Raises:
        InvalidArgumentError: ``backend`` is not one of those, or ``"openmp"`` when torch's OpenMP
            runtime cannot be found (torch built without GNU OpenMP, or not on Linux).
    """
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    if backend == "rayon":
        _core._use_openmp(None)
    else:
        _attach_openmp("`backend`='openmp'")


def configure() -> None:
    """The import-time choice: ``GRASS_THREAD_BACKEND`` when set, else OpenMP where torch uses it."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted and wanted not in BACKENDS:
        raise InvalidArgumentError(f"environment variable {ENV} must be one of {BACKENDS}, got {wanted!r}")
    if wanted != "rayon":
        _attach_openmp(f"{ENV}=openmp" if wanted == "openmp" else None)

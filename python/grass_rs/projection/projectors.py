"""Seeded, matrix-free random projections backed by the Rust core.

Implementations (all map ``(batch, in_dim)`` to ``(batch, out_dim)`` and share one interface,
:class:`Projector`):

* :class:`SJLT` — sparse Johnson–Lindenstrauss transform, ``c`` nonzeros ``±1/√c`` per column;
* :class:`Mask` — ``out_dim`` random coordinates, sorted (optionally scaled);
* :class:`GraSS` — ``SJLT ∘ Mask`` (paper arXiv 2505.18976), reads only the masked coordinates;
* :class:`Gaussian`, :class:`Rademacher` — dense baselines generated on the fly from the hash;
* :class:`SRHT` — subsampled randomized Hadamard transform (FJLT), ``O(in_dim log in_dim)``.

The seed → matrix contract is in ``docs/CONTRACT.md``: the same seed gives the same matrix on
every machine, thread count, batch split and (with the CUDA path) device.
"""

from __future__ import annotations

import abc

import torch

from .. import _core
from .._tensor import Array, as_batch, out_dtype
from .._validate import positive_int
from .._validate import seed as check_seed
from ..errors import InvalidArgumentError

__all__ = [
    "SJLT",
    "SRHT",
    "Gaussian",
    "GraSS",
    "Mask",
    "Projector",
    "Rademacher",
    "apply_projector",
    "cuda_available",
    "dense_matrix",
    "fwht",
]


def cuda_available() -> bool:
    """Whether grass-rs can run on CUDA tensors here (a CUDA build, a driver and a device)."""
    return bool(_core.CUDA_COMPILED) and _core.cuda_device_count() > 0


def _run_core(fn_name: str, core: _core.Projector, x: torch.Tensor, out: torch.Tensor) -> None:
    """Runs ``core.<fn_name>(x, out)`` on the tensors' device."""
    if x.device.type == "cpu":
        getattr(core, fn_name)(x, out)
        return
    if x.device.type == "cuda":
        # Kernels run on PyTorch's current stream of the tensor's device (raised as
        # CudaUnavailableError by the binding when this build or machine has no CUDA).
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if fn_name == "project":
            deterministic = _core.get_deterministic()
            if deterministic is None:
                deterministic = torch.are_deterministic_algorithms_enabled()
            core.project_cuda(x.detach(), out, stream, bool(deterministic))
        else:
            getattr(core, f"{fn_name}_cuda")(x.detach(), out, stream)
        return
    raise InvalidArgumentError(f"unsupported device {x.device}")


class Projector(abc.ABC):
    """A linear map ``P: R^in_dim -> R^out_dim`` defined by a seed.

    Attributes:
        in_dim: input dimension ``p``.
        out_dim: output dimension ``k``.
        seed: the seed in ``[0, 2**64)``.
    """

    in_dim: int
    out_dim: int
    seed: int

    def __init__(self, core: _core.Projector, seed: int) -> None:
        self._core = core
        self.in_dim = core.in_dim
        self.out_dim = core.out_dim
        self.seed = seed

    def project(self, x: Array) -> Array:
        """Computes ``P x`` for each row.

        Args:
            x: ``(in_dim,)`` or ``(batch, in_dim)`` torch tensor or numpy array of float16,
                bfloat16, float32 or float64. Non-contiguous input is copied first.

        Returns:
            The same kind of array, shape ``(out_dim,)`` or ``(batch, out_dim)``, float64 for
            float64 input and float32 otherwise.

        Raises:
            TypeError: not an array or not a float dtype.
            ValueError: wrong shape.
        """
        b = as_batch(x, "x", self.in_dim, dims_name="in_dim")
        t = b.tensor
        out = torch.empty((t.shape[0], self.out_dim), dtype=out_dtype(t.dtype), device=t.device)
        _run_core("project", self._core, t, out)
        return b.result(out)

    __call__ = project

    def transpose(self, y: Array) -> Array:
        """Computes the adjoint ``Pᵀ y`` for each row: ``(batch, out_dim)`` → ``(batch, in_dim)``.

        float16/bfloat16 input is computed in float32.
        """
        b = as_batch(y, "y", self.out_dim, dims_name="out_dim")
        t = b.tensor.to(out_dtype(b.tensor.dtype))
        out = torch.empty((t.shape[0], self.in_dim), dtype=t.dtype, device=t.device)
        _run_core("transpose", self._core, t, out)
        return b.result(out)

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Materializes ``P`` as an ``(out_dim, in_dim)`` tensor (by projecting the identity).

        Meant for tests and small dimensions: it costs ``in_dim`` projections.
        """
        eye = torch.eye(self.in_dim, dtype=dtype)
        return torch.as_tensor(self.project(eye)).T.contiguous()

    def _params(self) -> str:
        return ""

    def __repr__(self) -> str:
        dims = f"in_dim={self.in_dim}, out_dim={self.out_dim}"
        return f"{type(self).__name__}({dims}{self._params()}, seed={self.seed})"


class SJLT(Projector):
    """Sparse JL transform: every input coordinate goes to ``c`` distinct buckets with random signs,
    scaled by ``1/√c`` (so ``E‖Px‖² = ‖x‖²``). Cost ``O(batch · in_dim · c)``.

    Args:
        in_dim: input dimension.
        out_dim: output dimension ``k``.
        c: nonzeros per column, ``1 ≤ c ≤ out_dim``.
        seed: seed in ``[0, 2**64)``.
    """

    def __init__(self, in_dim: int, out_dim: int, *, c: int = 1, seed: int = 0) -> None:
        in_dim, out_dim, c = (
            positive_int(in_dim, "in_dim"),
            positive_int(out_dim, "out_dim"),
            positive_int(c, "c"),
        )
        if c > out_dim:
            raise InvalidArgumentError(f"`c` must be ≤ out_dim ({out_dim}), got {c}")
        self.c = c
        super().__init__(_core.Projector.sjlt(in_dim, out_dim, c, check_seed(seed)), seed)

    def columns(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets and signs of columns ``start:stop``: two ``(n, c)`` tensors (int64 buckets, ±1 signs)."""
        stop = self.in_dim if stop is None else stop
        return _columns(self._core, start, stop, self.c)

    def _params(self) -> str:
        return f", c={self.c}"


def _columns(core: _core.Projector, start: int, stop: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = core.sjlt_columns(start, max(stop - start, 0))
    buckets = torch.tensor([b for b, _ in pairs], dtype=torch.int64).reshape(-1, c)
    signs = torch.tensor([-1.0 if neg else 1.0 for _, neg in pairs]).reshape(-1, c)
    return buckets, signs


class Mask(Projector):
    """Random coordinate selection: ``out_dim`` distinct coordinates of ``in_dim``, uniformly
    without replacement, in increasing order. Cost ``O(batch · out_dim)``.

    Args:
        in_dim: input dimension.
        out_dim: number of kept coordinates, ``≤ in_dim``.
        seed: seed in ``[0, 2**64)``.
        scale: multiply kept values by ``√(in_dim/out_dim)`` (norm-preserving in expectation).
    """

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0, scale: bool = False) -> None:
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        if out_dim > in_dim:
            raise InvalidArgumentError(f"`out_dim` ({out_dim}) must be ≤ in_dim ({in_dim}) for Mask")
        self.scale = bool(scale)
        super().__init__(_core.Projector.mask(in_dim, out_dim, check_seed(seed), self.scale), seed)
        self._indices: torch.Tensor | None = None

    @property
    def indices(self) -> torch.Tensor:
        """The kept coordinates, increasing, int64."""
        if self._indices is None:
            self._indices = torch.tensor(self._core.mask_indices(), dtype=torch.int64)
        return self._indices

    def _params(self) -> str:
        return ", scale=True" if self.scale else ""


class GraSS(Projector):
    """GraSS: ``SJLT_{mask_dim → out_dim} ∘ Mask_{in_dim → mask_dim}``, fused so only the
    ``mask_dim`` selected coordinates are read: cost ``O(batch · mask_dim · c)``, sub-linear in
    ``in_dim``. With the same seed it equals ``SJLT(mask_dim, out_dim, c=c, seed=seed)`` applied
    to ``Mask(in_dim, mask_dim, seed=seed)``.

    Args:
        in_dim: input dimension.
        out_dim: output dimension ``k``.
        mask_dim: coordinates kept by the mask, ``out_dim ≤ mask_dim ≤ in_dim``.
        c: nonzeros per column of the SJLT stage.
        seed: seed in ``[0, 2**64)``.
    """

    def __init__(self, in_dim: int, out_dim: int, *, mask_dim: int, c: int = 1, seed: int = 0) -> None:
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        mask_dim, c = positive_int(mask_dim, "mask_dim"), positive_int(c, "c")
        if mask_dim < out_dim:
            raise InvalidArgumentError(f"`mask_dim` ({mask_dim}) must be ≥ out_dim ({out_dim})")
        if mask_dim > in_dim:
            raise InvalidArgumentError(f"`mask_dim` ({mask_dim}) must be ≤ in_dim ({in_dim})")
        if c > out_dim:
            raise InvalidArgumentError(f"`c` must be ≤ out_dim ({out_dim}), got {c}")
        self.mask_dim, self.c = mask_dim, c
        super().__init__(_core.Projector.grass(in_dim, out_dim, mask_dim, c, check_seed(seed)), seed)
        self._indices: torch.Tensor | None = None

    @property
    def indices(self) -> torch.Tensor:
        """The mask stage's coordinates, increasing, int64."""
        if self._indices is None:
            self._indices = torch.tensor(self._core.mask_indices(), dtype=torch.int64)
        return self._indices

    def columns(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets and signs of the SJLT stage's columns ``start:stop`` (masked positions)."""
        stop = self.mask_dim if stop is None else stop
        return _columns(self._core, start, stop, self.c)

    def _params(self) -> str:
        return f", mask_dim={self.mask_dim}, c={self.c}"


class _Dense(Projector):
    _kind = ""

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        super().__init__(_core.Projector.dense(self._kind, in_dim, out_dim, check_seed(seed)), seed)


class Gaussian(_Dense):
    """Dense ``N(0, 1/out_dim)`` projection, generated on the fly (never stored). Cost
    ``O(batch · in_dim · out_dim)`` plus ``in_dim · out_dim`` hashes per call."""

    _kind = "gaussian"


class Rademacher(_Dense):
    """Dense ``±1/√out_dim`` projection, generated on the fly (never stored)."""

    _kind = "rademacher"


class SRHT(Projector):
    """Subsampled randomized Hadamard transform (a.k.a. FJLT), ``O(batch · n log n)``.

    With ``n = next_power_of_two(in_dim)`` and ``k = out_dim``,
    ``P x = √(n/k) · S · (H/√n) · D · pad_n(x) = S H D pad_n(x) / √k``: ``D`` random ±1 signs,
    ``H`` the ``n × n`` Sylvester–Walsh–Hadamard matrix (``scipy.linalg.hadamard`` ordering), ``S``
    keeps ``k`` distinct rows drawn uniformly without replacement (increasing). ``E‖Px‖² = ‖x‖²``
    over the rows; with ``out_dim = in_dim = n`` it is orthogonal. Computed with an in-place fast
    Walsh–Hadamard transform per sample (never a dense matmul). See ``docs/CONTRACT.md``.

    Args:
        in_dim: input dimension ``p``.
        out_dim: output dimension ``k``, ``1 ≤ k ≤ next_power_of_two(in_dim)``.
        seed: seed in ``[0, 2**64)``.
    """

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        padded = 1 << (in_dim - 1).bit_length()
        if out_dim > padded:
            raise InvalidArgumentError(
                f"`out_dim` ({out_dim}) must be ≤ next_power_of_two(in_dim) ({padded}) for SRHT"
            )
        self.padded_dim = padded
        self._parts_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(_core.Projector.srht(in_dim, out_dim, check_seed(seed)), seed)

    def parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept Hadamard rows ``(out_dim,)`` int64 (increasing) and the signs ``(in_dim,)`` ±1.0."""
        rows, negative = self._core.srht_parts()
        signs = torch.tensor([-1.0 if neg else 1.0 for neg in negative], dtype=torch.float64)
        return torch.tensor(rows, dtype=torch.int64), signs

    def project(self, x: Array) -> Array:
        """Computes ``P x`` for each row (see :meth:`Projector.project`).

        CPU input runs the Rust transform; other devices (CUDA) run :func:`fwht` in torch on the
        tensor's device, the same matrix up to rounding (a radix-2 summation order).
        """
        b = as_batch(x, "x", self.in_dim, dims_name="in_dim")
        t = b.tensor
        if t.device.type == "cpu":
            out = torch.empty((t.shape[0], self.out_dim), dtype=out_dtype(t.dtype), device=t.device)
            _run_core("project", self._core, t, out)
            return b.result(out)
        return b.result(self._project_torch(t))

    __call__ = project

    def transpose(self, y: Array) -> Array:
        """Computes ``Pᵀ y`` for each row (see :meth:`Projector.transpose`; non-CPU devices as in
        :meth:`project`)."""
        b = as_batch(y, "y", self.out_dim, dims_name="out_dim")
        t = b.tensor
        if t.device.type == "cpu":
            return super().transpose(y)
        return b.result(self._transpose_torch(t))

    def _project_torch(self, x: torch.Tensor) -> torch.Tensor:
        """``P x`` of a 2-D tensor with torch ops on its device."""
        rows, signs = self._device_parts(x.device, out_dtype(x.dtype))
        buf = torch.zeros((x.shape[0], self.padded_dim), dtype=signs.dtype, device=x.device)
        buf[:, : self.in_dim] = x.detach().to(signs.dtype) * signs
        return fwht(buf).index_select(1, rows) * self.out_dim**-0.5

    def _transpose_torch(self, y: torch.Tensor) -> torch.Tensor:
        """``Pᵀ y`` of a 2-D tensor with torch ops on its device."""
        rows, signs = self._device_parts(y.device, out_dtype(y.dtype))
        buf = torch.zeros((y.shape[0], self.padded_dim), dtype=signs.dtype, device=y.device)
        buf[:, rows] = y.detach().to(signs.dtype)
        return fwht(buf)[:, : self.in_dim] * signs * self.out_dim**-0.5

    def _device_parts(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``parts()`` on ``device``, signs in ``dtype`` (cached)."""
        key = (device, dtype)
        if key not in self._parts_cache:
            rows, signs = self.parts()
            self._parts_cache[key] = (rows.to(device), signs.to(device=device, dtype=dtype))
        return self._parts_cache[key]


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Fast Walsh–Hadamard transform along the last axis (unnormalized, Sylvester order, i.e.
    ``x @ scipy.linalg.hadamard(n)``), with torch ops on ``x``'s device: ``log₂ n`` radix-2 passes.

    Args:
        x: ``(batch, n)`` with ``n`` a power of two.

    Raises:
        ValueError: ``n`` is not a power of two.
    """
    batch, n = x.shape
    if n & (n - 1):
        raise InvalidArgumentError(f"fwht needs a power-of-two length, got {n}")
    h = 1
    while h < n:
        v = x.view(batch, n // (2 * h), 2, h)
        a, b = v[:, :, 0], v[:, :, 1]
        x = torch.stack((a + b, a - b), dim=2).view(batch, n)
        h *= 2
    return x


def apply_projector(proj: Projector, x: torch.Tensor) -> torch.Tensor:
    """``proj.project(x)`` on ``x``'s device; without a CUDA build, non-CPU input goes through the CPU.

    Args:
        proj: any projector with ``in_dim == x.shape[-1]``.
        x: ``(batch, in_dim)``.

    Returns:
        ``(batch, out_dim)`` on ``x``'s device, float64 for float64 input, float32 otherwise.
    """
    if x.device.type != "cpu" and not cuda_available():
        return apply_projector(proj, x.cpu()).to(x.device)
    y = proj.project(x)
    assert isinstance(y, torch.Tensor)
    return y


def dense_matrix(proj: Projector) -> torch.Tensor:
    """``proj`` as an ``(out_dim, in_dim)`` float64 tensor, built the cheaper way round.

    ``matrix()`` projects the ``in_dim`` identity (``in_dim² · out_dim`` work for a dense projector);
    for ``out_dim < in_dim`` the rows are instead ``transpose`` of the ``out_dim`` identity.
    """
    if proj.out_dim < proj.in_dim:
        rows = proj.transpose(torch.eye(proj.out_dim, dtype=torch.float64))
        assert isinstance(rows, torch.Tensor)
        return rows
    return proj.matrix()

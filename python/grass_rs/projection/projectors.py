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

A projector is fully defined by its constructor arguments: it pickles and deep-copies by
rebuilding from them (caches are rebuilt lazily), so models with an attached handle can be
``copy.deepcopy``-ed / ``torch.save``-d and projectors can be sent to spawn-based workers.

Autograd: ``project``/``transpose`` are differentiable. An input with ``requires_grad=True`` (under
grad mode) or a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...) goes through a
``torch.autograd.Function`` whose backward is the adjoint (``transpose`` for ``project`` and vice
versa), and whose ``vmap`` rule folds the mapped axis into the batch (one Rust call).
"""

from __future__ import annotations

import abc
from typing import Any

import torch

from .. import _core
from .._tensor import Array, as_batch, check_tensor, is_transformed, out_dtype
from .._validate import int_in_range, positive_int
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
                bfloat16, float32 or float64 (dense, strided). Non-contiguous input is copied first.
                Differentiable: with ``x.requires_grad`` the gradient is ``Pᵀ`` of the output's
                gradient; ``torch.func.vmap``/``grad`` work too (module docstring).

        Returns:
            The same kind of array, shape ``(out_dim,)`` or ``(batch, out_dim)``, float64 for
            float64 input and float32 otherwise.

        Raises:
            TypeError: not an array, not a float dtype, or a sparse/nested tensor.
            ValueError: wrong shape.
        """
        return self._apply(x, adjoint=False)

    __call__ = project

    def transpose(self, y: Array) -> Array:
        """Computes the adjoint ``Pᵀ y`` for each row: ``(batch, out_dim)`` → ``(batch, in_dim)``.

        float16/bfloat16 input is computed in float32. Differentiable like :meth:`project`.
        """
        return self._apply(y, adjoint=True)

    def _apply(self, x: Array, adjoint: bool) -> Array:
        name, dim, dims_name = ("y", self.out_dim, "out_dim") if adjoint else ("x", self.in_dim, "in_dim")
        if isinstance(x, torch.Tensor) and _tracks_grad(x):
            check_tensor(x, name, dim, dims_name)
            out: torch.Tensor = _LinearFn.apply(x, self, adjoint)
            return out
        b = as_batch(x, name, dim, dims_name=dims_name)
        return b.result(self._compute(b.tensor, adjoint))

    def _compute(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """``P t`` (or ``Pᵀ t``) of a 2-D, contiguous, detached tensor."""
        if adjoint:
            t = t.to(out_dtype(t.dtype))
            out = torch.empty((t.shape[0], self.in_dim), dtype=t.dtype, device=t.device)
            _run_core("transpose", self._core, t, out)
        else:
            out = torch.empty((t.shape[0], self.out_dim), dtype=out_dtype(t.dtype), device=t.device)
            _run_core("project", self._core, t, out)
        return out

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Materializes ``P`` as an ``(out_dim, in_dim)`` tensor (by projecting the identity).

        Meant for tests and small dimensions: it costs ``in_dim`` projections.
        """
        eye = torch.eye(self.in_dim, dtype=dtype)
        return torch.as_tensor(self.project(eye)).T.contiguous()

    def _params(self) -> str:
        return ""

    def _kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments besides ``in_dim``, ``out_dim`` (pickling, equality)."""
        return {"seed": self.seed}

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the constructor arguments: the Rust core object and caches are not pickled.
        return (_rebuild, (type(self), self.in_dim, self.out_dim, self._kwargs()))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Projector)
        key = (self.in_dim, self.out_dim, self._kwargs())
        return key == (other.in_dim, other.out_dim, other._kwargs())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.in_dim, self.out_dim, tuple(sorted(self._kwargs().items()))))

    def __repr__(self) -> str:
        dims = f"in_dim={self.in_dim}, out_dim={self.out_dim}"
        return f"{type(self).__name__}({dims}{self._params()}, seed={self.seed})"


def _rebuild(cls: type[Projector], in_dim: int, out_dim: int, kwargs: dict[str, Any]) -> Projector:
    """Unpickles a projector: calls its constructor again (same matrix, fresh caches)."""
    make: Any = cls  # every concrete projector takes (in_dim, out_dim, **kwargs)
    return make(in_dim, out_dim, **kwargs)  # type: ignore[no-any-return]


def _tracks_grad(t: torch.Tensor) -> bool:
    return (t.requires_grad and torch.is_grad_enabled()) or is_transformed(t)


class _LinearFn(torch.autograd.Function):
    """``P x`` (``adjoint=False``) or ``Pᵀ y`` (``adjoint=True``) as a differentiable op.

    The backward of a linear map is its adjoint, itself a ``_LinearFn`` (so higher derivatives and
    ``torch.func`` transforms compose); the ``vmap`` rule folds the mapped axes into the batch.
    """

    @staticmethod
    def forward(x: torch.Tensor, proj: Projector, adjoint: bool) -> torch.Tensor:  # type: ignore[override]
        name, dim = ("y", proj.out_dim) if adjoint else ("x", proj.in_dim)
        b = as_batch(x, name, dim, dims_name="out_dim" if adjoint else "in_dim")
        out = b.result(proj._compute(b.tensor, adjoint))
        assert isinstance(out, torch.Tensor)
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, proj, adjoint = inputs
        ctx.proj, ctx.adjoint, ctx.in_dtype = proj, adjoint, x.dtype

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        g = _LinearFn.apply(grad.to(out_dtype(grad.dtype)), ctx.proj, not ctx.adjoint)
        return g.to(ctx.in_dtype), None, None

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, *_: Any) -> torch.Tensor:
        # forward mode (torch.func.jvp / jacfwd): a linear map's tangent is the map of the tangent
        return _LinearFn.apply(tangent, ctx.proj, ctx.adjoint)  # type: ignore[no-any-return]

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], x: torch.Tensor, proj: Projector, adjoint: bool) -> Any:
        bdim = in_dims[0]
        if bdim is None:
            return _LinearFn.apply(x, proj, adjoint), None
        x = x.movedim(bdim, 0)
        lead = x.shape[:-1]
        out = _LinearFn.apply(x.reshape(-1, x.shape[-1]), proj, adjoint)
        return out.reshape(*lead, out.shape[-1]), 0


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
        seed = check_seed(seed)
        super().__init__(_core.Projector.sjlt(in_dim, out_dim, c, seed), seed)

    def columns(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets and signs of columns ``start:stop``: two ``(n, c)`` tensors (int64 buckets, ±1 signs)."""
        return _columns(self._core, start, stop, self.in_dim, self.c)

    def _params(self) -> str:
        return f", c={self.c}"

    def _kwargs(self) -> dict[str, Any]:
        return {"c": self.c, "seed": self.seed}


def _columns(
    core: _core.Projector, start: object, stop: object, n: int, c: int
) -> tuple[torch.Tensor, torch.Tensor]:
    start = int_in_range(start, "start", 0, n)
    stop = n if stop is None else int_in_range(stop, "stop", 0, n)
    if stop < start:
        raise InvalidArgumentError(f"`stop` ({stop}) must be ≥ `start` ({start})")
    pairs = core.sjlt_columns(start, max(stop - start, 0))
    buckets = torch.tensor([b for b, _ in pairs], dtype=torch.int64).reshape(-1, c)
    signs = torch.tensor([-1.0 if neg else 1.0 for _, neg in pairs]).reshape(-1, c)
    return buckets, signs


class _Masked(Projector):
    """A projector with a mask stage: its kept coordinates as a cached tensor."""

    _indices: torch.Tensor | None = None

    @property
    def indices(self) -> torch.Tensor:
        """The kept coordinates (Mask) or the mask stage's coordinates (GraSS): increasing, int64."""
        if self._indices is None:
            self._indices = torch.tensor(self._core.mask_indices(), dtype=torch.int64)
        return self._indices


class Mask(_Masked):
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
        seed = check_seed(seed)
        super().__init__(_core.Projector.mask(in_dim, out_dim, seed, self.scale), seed)

    def _params(self) -> str:
        return ", scale=True" if self.scale else ""

    def _kwargs(self) -> dict[str, Any]:
        return {"seed": self.seed, "scale": self.scale}


class GraSS(_Masked):
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
        seed = check_seed(seed)
        super().__init__(_core.Projector.grass(in_dim, out_dim, mask_dim, c, seed), seed)

    def columns(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets and signs of the SJLT stage's columns ``start:stop`` (masked positions)."""
        return _columns(self._core, start, stop, self.mask_dim, self.c)

    def _params(self) -> str:
        return f", mask_dim={self.mask_dim}, c={self.c}"

    def _kwargs(self) -> dict[str, Any]:
        return {"mask_dim": self.mask_dim, "c": self.c, "seed": self.seed}


class _Dense(Projector):
    _kind = ""

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        in_dim, out_dim = positive_int(in_dim, "in_dim"), positive_int(out_dim, "out_dim")
        seed = check_seed(seed)
        super().__init__(_core.Projector.dense(self._kind, in_dim, out_dim, seed), seed)


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
        seed = check_seed(seed)
        super().__init__(_core.Projector.srht(in_dim, out_dim, seed), seed)

    def parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept Hadamard rows ``(out_dim,)`` int64 (increasing) and the signs ``(in_dim,)`` ±1.0."""
        rows, negative = self._core.srht_parts()
        signs = torch.tensor([-1.0 if neg else 1.0 for neg in negative], dtype=torch.float64)
        return torch.tensor(rows, dtype=torch.int64), signs

    def _compute(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """CPU input runs the Rust transform; other devices (CUDA) run :func:`fwht` in torch on the
        tensor's device, the same matrix up to rounding (a radix-2 summation order)."""
        if t.device.type == "cpu":
            return super()._compute(t, adjoint)
        return self._transpose_torch(t) if adjoint else self._project_torch(t)

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

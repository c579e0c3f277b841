"""Block-diagonal Fisher / Hessian approximations in compressed gradient space.

One :class:`FisherBlock` per layer holds the empirical Fisher ``F = Σ ĝ ĝᵀ / n`` of that layer's
compressed training gradients ``ĝ ∈ R^k``; :class:`BlockFisher` is the block-diagonal whole (a dict
layer → block). Each block solves ``(F + λI)⁻¹ x`` with

* ``solver="eigh"`` (default): the eigendecomposition ``F = V diag(w) Vᵀ`` is computed once and
  kept, so any damping ``λ`` costs one ``O(k²)`` product per vector (damping sweeps are cheap);
* ``solver="cholesky"``: a Cholesky factor of ``F + λI``, recomputed when ``λ`` changes;
* ``solver="identity"``: ``F`` is ignored and the solve is the identity (TracIn-style dot products).

Damping: ``relative=True`` uses ``λ = damping · trace(F) / k`` (``damping`` times the mean
eigenvalue), ``relative=False`` uses ``λ = damping``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .._validate import damping as check_damping
from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["SOLVERS", "BlockFisher", "FisherBlock"]

SOLVERS = ("eigh", "cholesky", "identity")


def _check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise InvalidArgumentError(f"`solver` must be one of {SOLVERS}, got {solver!r}")
    return solver


def _check_finite(g: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(g).all()):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values (diverged model or bad input?)")


class FisherBlock:
    """The empirical Fisher of one layer, accumulated from chunks of compressed gradients.

    Args:
        dim: compressed dimension ``k`` of the layer.
        dtype: accumulation and solve dtype (``torch.float64`` default, or ``torch.float32``).
        solver: ``"eigh"``, ``"cholesky"`` or ``"identity"``.

    Attributes:
        gram: ``(k, k)`` running sum ``Σ ĝ ĝᵀ``.
        count: number of gradients accumulated.
    """

    def __init__(self, dim: int, *, dtype: torch.dtype = torch.float64, solver: str = "eigh") -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ArgumentTypeError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
        self.dim = int(dim)
        self.dtype = dtype
        self.solver = _check_solver(solver)
        self.gram = torch.zeros(self.dim, self.dim, dtype=dtype)
        self.count = 0
        self._eig: tuple[torch.Tensor, torch.Tensor] | None = None
        self._chol: tuple[float, torch.Tensor] | None = None

    # ---- accumulation -------------------------------------------------------------------------
    def update(self, g: torch.Tensor) -> None:
        """Adds a chunk of gradients.

        Args:
            g: ``(n, k)`` compressed gradients (any float dtype; converted to ``self.dtype``).

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        g = torch.as_tensor(g)
        if g.ndim != 2 or g.shape[1] != self.dim:
            raise InvalidArgumentError(f"expected gradients of shape (n, {self.dim}), got {tuple(g.shape)}")
        _check_finite(g, "training gradients")
        g = g.detach().to("cpu", self.dtype)
        gram = self.gram + g.T @ g
        if not bool(torch.isfinite(gram).all()):
            raise InvalidArgumentError(
                f"the Fisher overflows {self.dtype} (training gradients up to {float(g.abs().max()):.3g}); "
                "use dtype=torch.float64 or rescale the loss"
            )
        self.gram = gram
        self.count += int(g.shape[0])
        self._eig = self._chol = None

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sums ``gram`` and ``count`` across processes with ``reduce`` (an in-place sum all-reduce)."""
        packed = torch.cat([self.gram.reshape(-1), torch.tensor([float(self.count)], dtype=self.dtype)])
        packed = reduce(packed)
        self.gram = packed[:-1].reshape(self.dim, self.dim).clone()
        self.count = round(float(packed[-1]))
        self._eig = self._chol = None

    # ---- the matrix -------------------------------------------------------------------------
    @property
    def matrix(self) -> torch.Tensor:
        """``F = Σ ĝ ĝᵀ / n``, ``(k, k)``.

        Raises:
            ValueError: no gradients were accumulated.
        """
        if self.count == 0:
            raise InvalidArgumentError("the Fisher block is empty: no training gradients were accumulated")
        return self.gram / self.count

    def damping_value(self, damping: float, relative: bool = True) -> float:
        """The absolute ``λ``: ``damping · trace(F)/k`` when ``relative``, else ``damping``.

        Raises:
            TypeError: ``damping`` is not a real number.
            ValueError: ``damping`` is NaN, infinite or negative.
        """
        damping = check_damping(damping)
        if not relative:
            return damping
        return damping * float(torch.trace(self.matrix)) / self.dim

    def _singular(self, lam: float, damping: float, relative: bool) -> InvalidArgumentError:
        """The error for a singular ``F + λI``, with advice that can actually help."""
        if relative and lam == 0 and damping > 0:
            return InvalidArgumentError(
                "F + λI is singular: F is zero (every training gradient is zero), so relative damping "
                "gives λ = damping · trace(F)/k = 0 whatever `damping` is; use relative=False with an "
                "absolute damping > 0 (or check the gradients)"
            )
        if lam == 0:
            return InvalidArgumentError(
                "F + λI is singular (F has a zero eigenvalue and λ = 0): use damping > 0"
            )
        return InvalidArgumentError(
            f"F + λI is not numerically positive definite at λ = {lam:.3g} in {self.dtype}: "
            "use a larger damping (or dtype=torch.float64)"
        )

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept eigendecomposition ``(w, V)`` of ``F`` (eigenvalues clamped at 0)."""
        if self._eig is None:
            w, v = torch.linalg.eigh(self.matrix)
            self._eig = (w.clamp_min(0), v)
        return self._eig

    # ---- solves -------------------------------------------------------------------------------
    def solve(self, x: torch.Tensor, damping: float = 1e-3, relative: bool = True) -> torch.Tensor:
        """Computes ``(F + λI)⁻¹ xᵀ`` row-wise.

        Args:
            x: ``(m, k)`` vectors (rows).
            damping: ``λ`` or its relative factor.
            relative: see the module docstring.

        Returns:
            ``(m, k)`` tensor in ``self.dtype``, row ``i`` is ``(F + λI)⁻¹ x_i``.

        Raises:
            ValueError: singular system (``λ = 0`` and a zero eigenvalue) or wrong shape.
        """
        damping = check_damping(damping)
        x = torch.as_tensor(x).detach().to("cpu", self.dtype)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidArgumentError(f"expected vectors of shape (m, {self.dim}), got {tuple(x.shape)}")
        if self.solver == "identity":
            return x.clone()
        lam = self.damping_value(damping, relative)
        if self.solver == "eigh":
            w, v = self.eigh()
            denom = w + lam
            if bool((denom <= 0).any()):
                raise self._singular(lam, damping, relative)
            return ((x @ v) / denom) @ v.T
        return torch.cholesky_solve(x.T, self._cholesky(lam, damping, relative)).T

    def _cholesky(self, lam: float, damping: float, relative: bool) -> torch.Tensor:
        if self._chol is None or self._chol[0] != lam:
            a = self.matrix + lam * torch.eye(self.dim, dtype=self.dtype)
            factor, info = torch.linalg.cholesky_ex(a)
            if int(info) != 0:
                raise self._singular(lam, damping, relative)
            self._chol = (lam, factor)
        return self._chol[1]

    def inverse(self, damping: float = 1e-3, relative: bool = True) -> torch.Tensor:
        """``(F + λI)⁻¹`` as a ``(k, k)`` matrix."""
        return self.solve(torch.eye(self.dim, dtype=self.dtype), damping, relative)

    # ---- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that fully describe the block (``gram`` and ``count``)."""
        return {"gram": self.gram.clone(), "count": torch.tensor([self.count], dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], *, solver: str = "eigh") -> FisherBlock:
        """Inverse of :meth:`state_dict`."""
        gram = state["gram"]
        block = cls(gram.shape[0], dtype=gram.dtype, solver=solver)
        block.gram = gram.clone()
        block.count = int(state["count"][0])
        return block


class BlockFisher:
    """Block-diagonal Fisher: one :class:`FisherBlock` per layer, in layer order.

    Args:
        dims: layer name → compressed dimension ``k_layer``.
        dtype: accumulation dtype.
        solver: ``"eigh"``, ``"cholesky"`` or ``"identity"``.
    """

    def __init__(
        self, dims: Mapping[str, int], *, dtype: torch.dtype = torch.float64, solver: str = "eigh"
    ) -> None:
        self.blocks = {name: FisherBlock(d, dtype=dtype, solver=solver) for name, d in dims.items()}
        self.solver = _check_solver(solver)

    @property
    def count(self) -> int:
        """Number of training gradients accumulated."""
        return next(iter(self.blocks.values())).count if self.blocks else 0

    def update(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Adds a chunk: ``grads[layer]`` is ``(n, k_layer)``, same ``n`` for every layer."""
        _check_layers(grads, self.blocks)
        for name, block in self.blocks.items():
            block.update(grads[name])

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sums every block across processes (see :meth:`FisherBlock.all_reduce`)."""
        for block in self.blocks.values():
            block.all_reduce(reduce)

    def solve(
        self, grads: Mapping[str, torch.Tensor], damping: float = 1e-3, relative: bool = True
    ) -> dict[str, torch.Tensor]:
        """Per layer ``(F_l + λ_l I)⁻¹ ĝ_l``; ``λ_l`` is relative to each block's own trace.

        ``grads`` is matched to the blocks by layer name (any order); the result is in block order.
        """
        damping = check_damping(damping)
        _check_layers(grads, self.blocks)
        return {name: block.solve(grads[name], damping, relative) for name, block in self.blocks.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict ``"<layer>/gram"``, ``"<layer>/count"`` (safetensors-friendly)."""
        out: dict[str, torch.Tensor] = {}
        for name, block in self.blocks.items():
            for key, t in block.state_dict().items():
                out[f"{name}/{key}"] = t
        return out

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], layers: list[str], *, solver: str = "eigh"
    ) -> BlockFisher:
        """Inverse of :meth:`state_dict`; ``layers`` gives the order."""
        fisher = cls({}, solver=solver)
        for name in layers:
            sub = {"gram": state[f"{name}/gram"], "count": state[f"{name}/count"]}
            fisher.blocks[name] = FisherBlock.from_state_dict(sub, solver=solver)
        return fisher


def _check_layers(grads: Mapping[str, torch.Tensor], blocks: Mapping[str, object]) -> None:
    if list(grads) != list(blocks) and set(grads) != set(blocks):
        raise InvalidArgumentError(
            f"layers {sorted(grads)} do not match the Fisher's layers {sorted(blocks)}"
        )

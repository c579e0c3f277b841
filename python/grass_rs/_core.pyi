"""Type stubs of the compiled extension ``grass_rs._core`` (hand-written; see rust/grass-py)."""

from typing import Any, final

__all__ = [
    "CUDA_COMPILED",
    "CudaUnavailableError",
    "GrassError",
    "GrassMemoryError",
    "GrassOverflowError",
    "GrassTypeError",
    "GrassValueError",
    "Projector",
    "__version__",
    "_openmp_runtime",
    "_use_openmp",
    "conv_masked_outer",
    "cuda_device_count",
    "gather_columns",
    "get_deterministic",
    "get_num_threads",
    "hash",
    "masked_outer",
    "set_deterministic",
    "set_num_threads",
    "stream_key",
]

__version__: str
CUDA_COMPILED: bool

class GrassError(Exception):
    """Base class of every grass-rs error."""

class GrassValueError(GrassError, ValueError):
    """An argument has an invalid value or shape."""

class GrassTypeError(GrassError, TypeError):
    """An argument has the wrong type or dtype."""

class GrassOverflowError(GrassError, OverflowError, ValueError):
    """An integer argument or a size is out of range."""

class GrassMemoryError(GrassError, MemoryError):
    """A buffer sized by the arguments cannot be allocated."""

class CudaUnavailableError(GrassError, RuntimeError):
    """CUDA was requested but is not available."""

@final
class Projector:
    @staticmethod
    def sjlt(in_dim: int, out_dim: int, c: int, seed: int) -> Projector: ...
    @staticmethod
    def mask(in_dim: int, out_dim: int, seed: int, scale: bool) -> Projector: ...
    @staticmethod
    def grass(in_dim: int, out_dim: int, mask_dim: int, c: int, seed: int) -> Projector: ...
    @staticmethod
    def dense(kind: str, in_dim: int, out_dim: int, seed: int) -> Projector: ...
    @staticmethod
    def srht(in_dim: int, out_dim: int, seed: int) -> Projector: ...
    @property
    def in_dim(self) -> int: ...
    @property
    def out_dim(self) -> int: ...
    def mask_indices(self) -> list[int]: ...
    def sjlt_columns(self, j0: int, n: int) -> list[tuple[int, bool]]: ...
    def srht_parts(self) -> tuple[list[int], list[bool]]: ...
    def project(self, x: Any, out: Any) -> None:
        """``out = P x``; interruptible (``KeyboardInterrupt`` leaves ``out`` unspecified)."""
    def transpose(self, y: Any, out: Any) -> None:
        """``out = Pᵀ y``; interruptible (``KeyboardInterrupt`` leaves ``out`` unspecified)."""
    def project_cuda(self, x: Any, out: Any, stream: int, deterministic: bool = False) -> None: ...
    def transpose_cuda(self, y: Any, out: Any, stream: int) -> None: ...

def set_num_threads(n: int | None) -> None:
    """Sets the thread count; ``1 <= n <= min(4 * cores, 1024)``, else ``GrassValueError``;
    ``None``: the default again (``GRASS_NUM_THREADS``, else torch's count on its OpenMP team)."""

def _use_openmp(path: str | None) -> None: ...
def _openmp_runtime() -> str | None: ...
def gather_columns(x: Any, idx: list[int], out: Any) -> None: ...
def masked_outer(
    go: Any,
    x: Any,
    tokens: int,
    rows: list[int],
    cols: list[int],
    bias: bool,
    out: Any,
    sjlt: Projector | None = None,
) -> None: ...
def conv_masked_outer(
    go: Any,
    x: Any,
    geometry: list[int],
    rows: list[int],
    cols: list[int],
    bias: bool,
    out: Any,
    sjlt: Projector | None = None,
) -> None: ...
def get_num_threads() -> int: ...
def hash(key: int, counter: int) -> int: ...
def stream_key(seed: int, stream: int) -> int: ...
def cuda_device_count() -> int: ...
def set_deterministic(flag: bool | None) -> None: ...
def get_deterministic() -> bool | None: ...

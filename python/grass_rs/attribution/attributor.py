"""The end-to-end influence pipeline: :class:`Attributor` (fit → score → save/load).

::

    attributor = Attributor(model, store="runs/grads")      # FactGraSS(256) on every layer by default
    attributor.fit(train_loader)                              # gradients → store → block Fisher
    scores = attributor.score(test_loader)                   # (n_test, n_train) helpfulness
    helpful, harmful = grass_rs.influence.top_k(scores, 5)

Scores follow the sign convention of :mod:`grass_rs.influence` (positive = the training example
lowers the test loss). Loaders must yield ``(inputs, targets)`` — or dict batches for Hugging Face
models (``input_ids``, ``attention_mask``, ``labels``, ...; see :mod:`grass_rs.hf`) — in a fixed order
(no shuffling) so
that a killed run resumes from the store's last complete chunk (one chunk per batch) and sharded
runs put the columns back in order. The loss must be **sum**-reduced over the batch.
Under ``torch.distributed`` every rank fits its contiguous shard into its own store
(``<store>/rank<r>-of-<w>``), the Fisher blocks are all-reduced and every rank returns the full
score matrix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler, Subset
from tqdm.auto import tqdm

from .._validate import damping as check_damping
from ..capture.sources import LossFn, make_source, state_fingerprint
from ..errors import ArgumentTypeError, InvalidArgumentError, StoreMismatchError
from ..hf import batch as hfb
from ..hf import losses as hfl
from . import distributed as D
from .fim import BlockFisher
from .influence import score_chunks
from .store import GradientStore

__all__ = ["Attributor", "batch_size_of", "default_loss_for", "split_batch", "sum_cross_entropy"]


def sum_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Default loss: ``cross_entropy(outputs, targets, reduction="sum")``."""
    return torch.nn.functional.cross_entropy(outputs, targets, reduction="sum")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch: a dict batch is both (the loss reads its ``labels``)."""
    if isinstance(batch, Mapping):
        return batch, batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ArgumentTypeError(
        f"a batch must be (inputs, targets) or a dict of tensors, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def batch_size_of(batch: Any) -> int:
    """Number of examples in a batch (dimension 0 of its first tensor)."""
    inputs = split_batch(batch)[0]
    values = inputs.values() if isinstance(inputs, Mapping) else [inputs]
    for v in values:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    return 1


def default_loss_for(model: torch.nn.Module) -> LossFn:
    """Summed cross-entropy, or the HF head's summed loss (:func:`grass_rs.hf.default_loss`)."""
    return hfl.default_loss(model) if hfb.is_hf_model(model) else sum_cross_entropy  # type: ignore[no-any-return]


class _MemoryStore:
    """In-memory stand-in for :class:`GradientStore` (``store=None``)."""

    def __init__(self) -> None:
        self._chunks: list[dict[str, torch.Tensor]] = []
        self.layers: dict[str, int] = {}

    num_chunks = property(lambda self: len(self._chunks))
    num_rows = property(lambda self: sum(next(iter(c.values())).shape[0] for c in self._chunks))

    def append(self, grads: Mapping[str, torch.Tensor]) -> None:
        for name, g in grads.items():
            if not bool(torch.isfinite(g).all()):
                raise InvalidArgumentError(
                    f"layer {name!r}: gradients contain NaN or infinite values; chunk not stored"
                )
        self.layers = {k: int(v.shape[1]) for k, v in grads.items()}
        self._chunks.append(dict(grads))

    def mark_complete(self) -> None:
        pass

    def chunks(self) -> Iterator[dict[str, torch.Tensor]]:
        yield from self._chunks


def _shard(loader: Iterable[Any], rank: int, world: int) -> tuple[Iterable[Any], int | None, int | None]:
    """This rank's loader, its number of examples (``None``: unknown) and the batch size."""
    if not isinstance(loader, DataLoader):
        if world > 1:
            raise ArgumentTypeError("multi-process fitting needs a torch DataLoader (to shard its dataset)")
        return loader, None, None
    if not isinstance(loader.sampler, SequentialSampler):
        raise InvalidArgumentError(
            "the loader must iterate in a fixed order (shuffle=False) to be resumable and shardable"
        )
    n = len(loader.dataset)  # type: ignore[arg-type]
    if n == 0:
        raise InvalidArgumentError("the training set is empty")
    if world == 1:
        return loader, n, loader.batch_size
    if n < world:
        raise InvalidArgumentError(f"{n} training examples cannot be split over {world} processes")
    sub = Subset(loader.dataset, list(D.shard_range(n, rank, world)))
    shard = DataLoader(sub, batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn)
    return shard, len(sub), loader.batch_size


class Attributor:
    """Influence functions on compressed gradients with a block-diagonal empirical Fisher.

    Args:
        model: the trained model (its parameters are not modified; it is put in ``eval`` mode). A
            Hugging Face model is called as ``model(**batch)`` on dict batches, without ``labels``
            (HF's token-mean loss would re-weight samples) and with ``position_ids`` from the mask.
        loss_fn: ``loss_fn(outputs, targets)``, sum-reduced (default: summed cross-entropy; for an HF
            model the summed loss of its head, :func:`grass_rs.hf.default_loss`). For dict batches
            ``targets`` is the batch dict.
        compressor: what compresses each layer's per-sample gradient (see :func:`make_source`):
            ``"default"`` (``FactGraSS(k)`` with the hooks backend, ``ProjectorFactory("grass", k)``
            with ``torch.func``), a compressor or projector name (``"factgrass"``, ``"logra"``,
            ``"grass"``, ``"sjlt"``, ...), a compressor factory (``FactGraSS``, ``LoGra``, ``Full``;
            hooks only), a :class:`~grass_rs.ProjectorFactory` or any ``(layer_name, in_dim) ->
            Projector`` callable (either backend), ``None`` for raw, uncompressed gradients (either
            backend), or a ready :class:`GradientSource`.
        k: compressed dimension per layer for a compressor given by name.
        layers: which layers (hooks: any :func:`grass_rs.attach` selector; func: module names).
            Default: every supported layer with trainable parameters (hooks), every ``nn.Linear`` (func).
        store: folder for the crash-safe gradient store (``None``: keep gradients in memory).
        damping: ``λ`` (relative to the mean eigenvalue of each block when ``relative``).
        relative: relative or absolute damping.
        solver: ``"eigh"`` (default, damping sweeps are cheap), ``"cholesky"`` or ``"identity"``.
        fim_dtype: ``torch.float64`` (default) or ``torch.float32``.
        progress: show tqdm bars (default: only on a TTY).
        seed: base seed of a compressor given by name.
        backend: ``"hooks"`` (default: layer hooks, factorized compressors never form the gradient)
            or ``"func"`` (``torch.func`` per-sample gradients of whole modules, then projected).
            Chosen here only — never from the model's or the compressor's type.
        strict: raise if any trainable parameter of the model would not be captured (hooks
            backend; otherwise a :class:`~grass_rs.capture.CoverageWarning` names what is left out).
        device: move the model and every batch there (default: leave both where they are).

    Raises:
        InvalidArgumentError / ArgumentTypeError: an unknown backend or compressor name, a compressor
            the backend does not take, unknown or unsupported layers — before any data is read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        loss_fn: LossFn | None = None,
        compressor: Any = "default",
        k: int = 256,
        layers: Sequence[str] | None = None,
        store: str | os.PathLike[str] | None = None,
        damping: float = 1e-3,
        relative: bool = True,
        solver: str = "eigh",
        fim_dtype: torch.dtype = torch.float64,
        progress: bool | None = None,
        seed: int = 0,
        backend: str = "hooks",
        device: str | torch.device | None = None,
        strict: bool = False,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ArgumentTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        self.device = torch.device(device) if device is not None else None
        self.model = (model.to(self.device) if self.device is not None else model).eval()
        self.loss_fn = loss_fn if loss_fn is not None else default_loss_for(model)
        self.source = make_source(
            model,
            self.loss_fn,
            compressor,
            k=k,
            layers=layers,
            seed=seed,
            backend=backend,
            forward=hfb.forward,
            strict=strict,
        )
        self.store_dir = Path(store) if store is not None else None
        damping = check_damping(damping)
        self.damping, self.relative, self.solver, self.fim_dtype = damping, relative, solver, fim_dtype
        self.progress = progress
        self.fisher: BlockFisher | None = None
        self.stores: list[Any] = []
        self.num_train = 0

    def close(self) -> None:
        """Removes any hooks the gradient source placed on the model."""
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    # ---- fitting ------------------------------------------------------------------------------
    def _bar(self, it: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
        """Iterates over batches with a bar counting examples (examples/s); total = batches × size."""
        disable = (not _isatty()) if self.progress is None else not self.progress
        disable = disable or D.rank_and_world()[0] != 0
        size = getattr(it, "batch_size", None)
        n_ex = len(it.dataset) if isinstance(it, DataLoader) else None  # type: ignore[arg-type]
        bar = tqdm(
            desc=desc,
            total=n_ex or (total * size if total and size else None),
            unit="ex",
            disable=disable,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for batch in it:
                yield batch
                bar.update(batch_size_of(batch))
        finally:
            bar.close()

    def _grads(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = split_batch(hfb.to_device(batch, self.device))
        return self.source(x, y)

    def batch_gradients(self, batch: Any) -> dict[str, torch.Tensor]:
        """Compressed per-sample gradients of one batch (``(inputs, targets)`` or a dict batch):
        layer → ``(batch, k_layer)`` float32 on the CPU. The hooks stay attached (see :meth:`close`)."""
        return self._grads(batch)

    def _config(self, n: int | None, batch_size: int | None, rank: int, world: int) -> dict[str, Any]:
        return {
            "model": state_fingerprint(self.model),
            "gradients": self.source.describe(),
            "loss": getattr(self.loss_fn, "__qualname__", repr(self.loss_fn)),
            "examples": n,
            "batch_size": batch_size,
            "shard": [rank, world],
        }

    def _open_store(self, dims: dict[str, int], config: dict[str, Any], rank: int, world: int) -> Any:
        if self.store_dir is None:
            return _MemoryStore()
        path = self.store_dir if world == 1 else self.store_dir / f"rank{rank}-of-{world}"
        return GradientStore.open(path, dims, config)

    def fit(self, train_loader: Iterable[Any]) -> Attributor:
        """Computes, stores (resuming a partial store) and all-reduces the training gradients' Fisher.

        Args:
            train_loader: yields ``(inputs, targets)`` batches in a fixed order.

        Returns:
            ``self``.

        Raises:
            ValueError: empty training set, shuffled loader, NaN gradients (the chunk is not written).
            StoreMismatchError: ``store`` holds gradients of another model/compressor/dataset.
        """
        rank, world = D.rank_and_world()
        loader, n, batch_size = _shard(train_loader, rank, world)
        if n == 0:
            raise InvalidArgumentError("the training set is empty")
        try:
            store = self._write_store(loader, n, batch_size, rank, world)
        finally:
            self.close()
        self.stores = [store]
        self.fisher = self._build_fisher(store.layers, [store])
        self.fisher.all_reduce(D.all_reduce_sum)
        self.num_train = self.fisher.count
        return self

    def _write_store(
        self, loader: Iterable[Any], n: int | None, batch_size: int | None, rank: int, world: int
    ) -> Any:
        store: Any = None
        try:
            for i, batch in enumerate(self._bar(loader, "train gradients", _len(loader))):
                if store is not None and i < store.num_chunks:
                    continue
                grads = self._grads(batch)
                if store is None:
                    dims = {k: int(v.shape[1]) for k, v in grads.items()}
                    store = self._open_store(dims, self._config(n, batch_size, rank, world), rank, world)
                    if i < store.num_chunks:
                        continue
                store.append(grads)
            if store is None:
                raise InvalidArgumentError("the training loader yielded no batches")
            if n is not None and store.num_rows != n:
                raise InvalidArgumentError(
                    f"stored {store.num_rows} training gradients but the shard has {n} examples"
                )
        except BaseException:
            if store is not None and hasattr(store, "close"):
                store.close()  # release the writer lock: a re-fit in this process can resume
            raise
        store.mark_complete()
        return store

    def _build_fisher(self, dims: Mapping[str, int], stores: Sequence[Any]) -> BlockFisher:
        fisher = BlockFisher(dims, dtype=self.fim_dtype, solver=self.solver)
        for store in stores:
            for chunk in store.chunks():
                fisher.update(chunk)
        return fisher

    # ---- scoring ------------------------------------------------------------------------------
    def gradients(self, loader: Iterable[Any], desc: str = "test gradients") -> dict[str, torch.Tensor]:
        """Compressed per-sample gradients of every example: layer → ``(n, k_layer)`` float32."""
        try:
            parts = [self._grads(b) for b in self._bar(loader, desc, _len(loader))]
        finally:
            self.close()
        if not parts:
            raise InvalidArgumentError("the loader yielded no batches")
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def score(
        self,
        test: Iterable[Any] | Mapping[str, torch.Tensor],
        *,
        damping: float | None = None,
        relative: bool | None = None,
        test_chunk: int = 4096,
    ) -> torch.Tensor:
        """Helpfulness scores of every training example for every test example.

        Memory stays bounded: test gradients are computed and scored ``test_chunk`` rows at a time,
        each against the training store read chunk by chunk.

        Args:
            test: a loader of ``(inputs, targets)`` or precomputed test gradients (layer → ``(n, k)``).
            damping: override the fitted damping (cheap with ``solver="eigh"``).
            relative: override relative/absolute damping.
            test_chunk: test rows held at a time (rounded up to whole batches).

        Returns:
            ``(n_test, n_train)`` float32, columns in training-set order (on every rank).
        """
        if self.fisher is None:
            raise RuntimeError("call fit() (or load()) before score()")
        lam = self.damping if damping is None else damping
        rel = self.relative if relative is None else relative
        train = _Reiterable(self.stores)
        parts = [
            score_chunks(self.fisher, g, train, damping=lam, relative=rel, test_chunk=test_chunk)
            for g in self._test_chunks(test, test_chunk)
        ]
        if not parts:
            raise InvalidArgumentError("the test set is empty")
        return D.all_gather_columns(torch.cat(parts))

    def _test_chunks(
        self, test: Iterable[Any] | Mapping[str, torch.Tensor], rows: int
    ) -> Iterator[dict[str, Any]]:
        if isinstance(test, Mapping):
            yield dict(test)
            return
        buf: list[dict[str, torch.Tensor]] = []
        try:
            for batch in self._bar(test, "test gradients", _len(test)):
                buf.append(self._grads(batch))
                if sum(next(iter(b.values())).shape[0] for b in buf) >= rows:
                    yield _cat(buf)
                    buf = []
        finally:
            self.close()
        if buf:
            yield _cat(buf)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes ``attributor.json`` and ``fisher.npz`` to ``path`` (rank 0); an in-memory store is
        written to ``path/store`` first, an on-disk store is referenced (relative to ``path`` when
        inside it, so the folder can be moved). Every rank must call it under ``torch.distributed``."""
        if self.fisher is None:
            raise RuntimeError("nothing to save: call fit() first")
        p = Path(path)
        rank, world = D.rank_and_world()
        if isinstance(self.stores[0], _MemoryStore):
            sub = p / "store" if world == 1 else p / "store" / f"rank{rank}-of-{world}"
            mem = self.stores[0]
            gs = GradientStore.open(sub, mem.layers, {"saved_from_memory": True, "shard": [rank, world]})
            for chunk in mem.chunks():
                gs.append(chunk)
            gs.mark_complete()
            self.stores = [gs]
        paths = _gather_paths(str(Path(self.stores[0].path).resolve()))
        if rank == 0:
            p.mkdir(parents=True, exist_ok=True)
            paths = [_relative_if_inside(s, p.resolve()) for s in paths]
            state = self.fisher.state_dict()
            arrays: dict[str, Any] = {f"{i}": t.numpy() for i, t in enumerate(state.values())}
            np.savez(p / "fisher.npz", **arrays)
            meta = {
                "format": "grass-rs-attributor",
                "version": 1,
                "fisher_keys": list(state),
                "layers": list(self.fisher.blocks),
                "stores": paths,
                "damping": self.damping,
                "relative": self.relative,
                "solver": self.solver,
                "model": state_fingerprint(self.model),
                "gradients": self.source.describe(),
            }
            (p / "attributor.json").write_text(json.dumps(meta, indent=1))
        D.barrier()

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: torch.nn.Module, **kwargs: Any) -> Attributor:
        """Restores a saved attributor; ``model`` and the compressor arguments (``**kwargs`` of the
        constructor) must be the ones it was fitted with.

        Raises:
            StoreMismatchError: another model or compressor than at fit time.
        """
        p = Path(path)
        meta = json.loads((p / "attributor.json").read_text())
        for key in ("damping", "relative", "solver"):
            kwargs.setdefault(key, meta[key])
        att = cls(model, **kwargs)
        if state_fingerprint(model) != meta["model"]:
            raise StoreMismatchError(f"{p} was fitted with another model (parameters differ)")
        if json.loads(json.dumps(att.source.describe())) != meta["gradients"]:
            raise StoreMismatchError(f"{p} was fitted with another compressor: {meta['gradients']}")
        with np.load(p / "fisher.npz", allow_pickle=False) as z:
            state = {key: torch.from_numpy(z[str(i)]) for i, key in enumerate(meta["fisher_keys"])}
        att.fisher = BlockFisher.from_state_dict(state, meta["layers"], solver=att.solver)
        att.stores = [GradientStore.load(p / s) for s in meta["stores"]]  # absolute paths stay absolute
        att.num_train = att.fisher.count
        return att


class _Reiterable:
    """Iterates over every chunk of several stores, afresh each time (for :func:`score_chunks`)."""

    def __init__(self, stores: Sequence[Any]) -> None:
        self.stores = stores

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for s in self.stores:
            yield from s.chunks()


def _cat(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _relative_if_inside(path: str, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside it (so a saved folder can be moved)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _gather_paths(path: str) -> list[str]:
    world = D.rank_and_world()[1]
    if world == 1:
        return [path]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, path)
    return [str(o) for o in out]


def _len(loader: Iterable[Any]) -> int | None:
    return len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()

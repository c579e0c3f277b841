"""``build``: an index folder of a Hugging Face model's compressed per-sample gradients of a corpus.

Layout of an index folder::

    index.json      format, version, rows, layers, storage dtype, block checksums, the fingerprint
                    (model parameters, compressor, loss, tokenizer, text fields, max length), settings
    vectors.bin     (rows, Σ k) gradients in dataset order (see :mod:`grass_rs.index.vectors`)
    fisher.npz      the block-diagonal Fisher's Gram matrices (float64), one per layer
    texts.jsonl     each training example's text and its row in the data (for reports)
    build.json      the build settings (written first; a resumed build must match them)
    shards/         while building: one crash-safe GradientStore per process (removed at the end)

Resumable: each batch is a store chunk (atomic); a killed build started again skips the stored
batches and gives the same bytes. Batches are cut by length once for the whole corpus and
sharded by contiguous ranges of batches, so every process computes exactly the batches one
process would; the Fisher is summed in batch order by one process at the end, so ``--nproc N``
(or ``torchrun --nproc_per_node N -m grass_rs build ...``) gives the same index as one process.

``k`` per layer: ``layer_k={"*.mlp.*": 1024}`` (``--layer-k '*.mlp.*=1024'``) gives the layers matching
an fnmatch pattern another ``k`` (first match wins; :class:`grass_rs.capture.per_layer.PerLayer`);
each layer's ``k`` is in ``index.json`` and in the fingerprint queries are checked against.

Examples left without a loss token after truncation (an empty completion, a one-token text) are
skipped: ``index.json`` counts them (``skipped``) and lists their rows in the data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write, fsync_dir
from ..attribution import distributed as D
from ..attribution.attributor import Attributor
from ..attribution.fim import BlockFisher
from ..attribution.store import GradientStore
from ..capture.per_layer import PerLayer, parse_layer_k, per_layer_k
from ..capture.sources import state_fingerprint
from ..data import hf as hfdata
from ..errors import InvalidArgumentError, StoreError, StoreMismatchError
from .vectors import DTYPES, VectorFile, check_rows_for, to_storage

__all__ = ["BuildConfig", "build", "load_model", "resolve_device", "write_index"]

FORMAT = "grass-rs-index"
VERSION = 1


@dataclass
class BuildConfig:
    """Every setting of a build (see ``grass-rs build --help``)."""

    index: str
    model: str
    dataset: str
    split: str = "train"
    text_field: str | None = None
    prompt_field: str | None = None
    completion_field: str | None = None
    max_length: int = 512
    batch_size: int = 8
    compressor: str = "factgrass"
    k: int = 256
    #: fnmatch pattern on module names → ``k`` for those layers (first match wins); else ``k``
    layer_k: dict[str, int] | None = None
    layers: list[str] | None = None
    seed: int = 0
    dtype: str = "float32"
    damping: float = 1e-3
    device: str | None = None
    padding_side: str = "right"
    limit: int | None = None
    nproc: int = 1
    progress: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Checks every argument and optional dependency before any long work (raises
        :class:`InvalidArgumentError`)."""
        for name in ("max_length", "batch_size", "k", "nproc"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"`{name}` must be a positive integer, got {v!r}")
        if self.max_length < 2:
            raise InvalidArgumentError("`max_length` must be ≥ 2")
        if self.limit is not None and self.limit < 1:
            raise InvalidArgumentError(f"`limit` must be ≥ 1, got {self.limit}")
        if self.dtype not in DTYPES:
            raise InvalidArgumentError(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}")
        if self.padding_side not in ("left", "right"):
            raise InvalidArgumentError(f"`padding_side` must be 'left' or 'right', got {self.padding_side!r}")
        if self.damping < 0:
            raise InvalidArgumentError(f"`damping` must be ≥ 0, got {self.damping}")
        if isinstance(self.layer_k, (list, tuple)):  # ["PATTERN=K", ...] as on the command line
            self.layer_k = parse_layer_k(self.layer_k)
        if self.layer_k is not None and not isinstance(self.layer_k, Mapping):
            raise InvalidArgumentError(
                f"`layer_k` must map fnmatch patterns to k, got {type(self.layer_k).__name__}"
            )
        self.layer_k = {str(p): v for p, v in self.layer_k.items()} if self.layer_k else None
        # unknown names / a bad k (also per layer) fail here
        per_layer_k(self.compressor, self.k, self.layer_k, seed=self.seed)
        resolve_device(self.device)
        for mod in ("transformers", "datasets", "tokenizers"):
            hfdata.require(mod, "grass-rs build and query")
        if _looks_local(self.model) and not Path(self.model).exists():
            raise InvalidArgumentError(f"--model {self.model}: no such folder")
        if _looks_local(self.dataset) and not Path(self.dataset).exists():
            raise InvalidArgumentError(f"--dataset {self.dataset}: no such file or folder")


def _looks_local(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or Path(spec).exists()
        or Path(spec).suffix != ""
        or spec.count("/") > 1
    )


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; checks the device exists (CUDA available, index in range) before any work.

    Raises:
        InvalidArgumentError: naming ``--device``: not a device, a type other than cpu/cuda/mps, or
            one this machine does not have.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(
            f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type not in DEVICE_TYPES:
        raise InvalidArgumentError(f"--device {device}: grass-rs build/query run on cpu, cuda[:N] or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda}); use --device cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise InvalidArgumentError(f"--device {device}: this machine has {n} CUDA device(s) (0..{n - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"--device {device}: MPS is not available on this machine")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise InvalidArgumentError(f"--device {device}: there is one CPU device; use --device cpu")
    return dev


def _local_device(dev: torch.device) -> torch.device:
    """With several processes, ``cuda`` (no index) means each process's own GPU: ``LOCAL_RANK``
    (torchrun) or the rank (``--nproc``), modulo the GPUs here."""
    rank, world = D.rank_and_world()
    if dev.type != "cuda" or dev.index is not None or world == 1:
        return dev
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % torch.cuda.device_count())


def load_model(path: str, device: torch.device | None = None) -> tuple[torch.nn.Module, Any]:
    """A ``transformers`` model (causal LM, or sequence classification when its config says so)
    and its tokenizer, from a folder or hub name; ``eval`` mode, on ``device``."""
    transformers = hfdata.require("transformers", "grass-rs build and query")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        archs = getattr(config, "architectures", None) or []
        auto = (
            transformers.AutoModelForSequenceClassification
            if any(a.endswith("ForSequenceClassification") for a in archs)
            else transformers.AutoModelForCausalLM
        )
        model = auto.from_pretrained(path)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise InvalidArgumentError(f"cannot load model/tokenizer {path!r}: {e}") from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise InvalidArgumentError(f"the tokenizer of {path!r} has neither a pad nor an eos token")
    model = model.eval()
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def fingerprint_of(att: Attributor, tokenizer: Any, corpus_meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a query must match: model parameters, compressor, loss, tokenizer, text handling."""
    return {
        "model": state_fingerprint(att.model),
        "gradients": json.loads(json.dumps(att.source.describe())),
        "loss": getattr(att.loss_fn, "__qualname__", repr(att.loss_fn)),
        "tokenizer": hfdata.tokenizer_fingerprint(tokenizer),
        "text": {
            k: corpus_meta.get(k) for k in ("text_field", "prompt_field", "completion_field", "max_length")
        },
    }


def make_attributor(
    model: torch.nn.Module, settings: Mapping[str, Any], device: torch.device | None
) -> Attributor:
    layers = settings.get("layers")
    layer_k = settings.get("layer_k")
    compressor: Any = settings["compressor"]
    if layer_k:
        compressor = per_layer_k(compressor, int(settings["k"]), layer_k, seed=int(settings["seed"]))
    return Attributor(
        model,
        compressor=compressor,
        k=int(settings["k"]),
        layers=list(layers) if layers else None,
        seed=int(settings["seed"]),
        device=device,
        progress=False,
    )


# ---- the build ----------------------------------------------------------------------------------
def build(cfg: BuildConfig) -> Path:
    """Builds (or resumes, or returns the finished) index ``cfg.index``; see the module docstring.

    Raises:
        InvalidArgumentError: bad arguments or a missing optional dependency (before any work).
        StoreMismatchError: the folder holds an index or partial build of other settings.
    """
    cfg.validate()
    path = Path(cfg.index)
    _check_existing(path, cfg)
    world = D.rank_and_world()[1]
    if world == 1 and _torchrun_world() > 1 and cfg.nproc > 1:
        raise InvalidArgumentError("--nproc with torchrun: give the number of processes to torchrun only")
    if world == 1 and cfg.nproc > 1:
        D.launch(_worker, cfg.nproc, cfg)
    elif world == 1 and _torchrun_world() > 1:  # started by torchrun: a group from its env vars
        # gloo on every device: the build only needs barriers (shards are merged from disk)
        torch.distributed.init_process_group("gloo", init_method="env://")
        try:
            D.barrier()  # every rank checked the folder before rank 0 writes build.json
            _run(cfg)
        finally:
            torch.distributed.destroy_process_group()
    else:
        _run(cfg)
    return path


def _torchrun_world() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 without it); checks the other variables it sets."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InvalidArgumentError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
    if world > 1:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise InvalidArgumentError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: start several processes with "
                "`torchrun --nproc_per_node N -m grass_rs build ...` or use --nproc N"
            )
    return world


def _worker(cfg: BuildConfig) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, D.rank_and_world()[1])))
    _run(cfg)


def _settings(cfg: BuildConfig) -> dict[str, Any]:
    keep = ("model", "dataset", "split", "text_field", "prompt_field", "completion_field", "max_length",
            "batch_size", "compressor", "k", "layers", "seed", "dtype", "limit")  # fmt: skip
    out = {k: v for k, v in asdict(cfg).items() if k in keep}
    if cfg.layer_k:  # only when set: indexes built without it keep their settings
        out["layer_k"] = dict(cfg.layer_k)
    return out


def _check_existing(path: Path, cfg: BuildConfig) -> None:
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{path} exists and is not a folder")
    build_json = path / "build.json"
    if build_json.exists():
        try:
            old = json.loads(build_json.read_text())
        except ValueError:
            raise StoreError(f"{build_json} is corrupt; delete the folder to rebuild") from None
        if old != json.loads(json.dumps(_settings(cfg))):
            diff = {k: (old.get(k), v) for k, v in _settings(cfg).items() if old.get(k) != v}
            raise StoreMismatchError(
                f"{path} holds an index (or partial build) with other settings {diff} (stored, now); "
                "use another folder or delete it"
            )
    elif path.is_dir() and any(path.iterdir()):
        raise InvalidArgumentError(f"{path} is not empty and is not a grass-rs index folder")


def _run(cfg: BuildConfig) -> None:
    rank, world = D.rank_and_world()
    path = Path(cfg.index)
    if (path / "index.json").exists():
        return  # finished earlier (same settings: checked)
    device = _local_device(resolve_device(cfg.device))
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "build.json", json.dumps(_settings(cfg), indent=1).encode())
    try:
        tokenizer, corpus, att = _prepare(cfg, device, world)
    except InvalidArgumentError:
        if rank == 0 and not (path / "shards").exists():  # nothing computed: leave no folder behind
            (path / "build.json").unlink(missing_ok=True)
            try:
                path.rmdir()
            except OSError:
                pass
        raise
    fp = fingerprint_of(att, tokenizer, corpus.meta)
    batches = corpus.batches(cfg.batch_size)
    lo, hi = D.shard_range(len(batches), rank, world).start, D.shard_range(len(batches), rank, world).stop
    store_config = {
        "fingerprint": fp,
        "corpus": corpus.fingerprint(),
        "batches": [lo, hi],
        "shard": [rank, world],
    }
    dims = {n: int(c.out_dim) for n, c in att.source.handle().compressors.items()}  # type: ignore[attr-defined]
    store = GradientStore.open(path / "shards" / f"rank{rank}-of-{world}", dims, store_config)
    try:
        _write_shard(att, corpus, batches[lo:hi], store, cfg, rank)
    finally:
        att.close()
    D.barrier()
    if rank == 0:
        _finalize(path, cfg, corpus, batches, world, fp, dims)
    D.barrier()


def _prepare(cfg: BuildConfig, device: torch.device, world: int) -> tuple[Any, hfdata.Corpus, Attributor]:
    """The tokenizer, corpus and attributor; the checks that need the model and data."""
    model, tokenizer = load_model(cfg.model, device)
    corpus = hfdata.load_corpus(
        cfg.dataset, tokenizer, split=cfg.split, text_field=cfg.text_field, prompt_field=cfg.prompt_field,
        completion_field=cfg.completion_field, max_length=cfg.max_length, limit=cfg.limit,
    )  # fmt: skip
    if len(corpus) < world:
        raise InvalidArgumentError(f"{len(corpus)} examples cannot be split over {world} processes")
    att = make_attributor(model, _settings(cfg), device)
    factory = getattr(att.source, "factory", None)
    if isinstance(factory, PerLayer):
        names = list(att.source.handle().compressors)  # type: ignore[attr-defined]
        unmatched = factory.unmatched(names)
        if unmatched:
            att.close()
            raise InvalidArgumentError(
                f"--layer-k pattern(s) {unmatched} match no captured layer; layers: {names[:8]}"
                + ("…" if len(names) > 8 else "")
            )
    return tokenizer, corpus, att


def _write_shard(
    att: Attributor,
    corpus: hfdata.Corpus,
    batches: Sequence[Sequence[int]],
    store: Any,
    cfg: BuildConfig,
    rank: int,
) -> None:
    from tqdm.auto import tqdm

    done = store.num_chunks
    disable = (not sys.stderr.isatty()) if cfg.progress is None else not cfg.progress
    total = sum(len(b) for b in batches)
    bar = tqdm(total=total, initial=sum(len(b) for b in batches[:done]), unit="ex", desc="build gradients",
               disable=disable or rank != 0, dynamic_ncols=True)  # fmt: skip
    tokens, t0 = 0, time.perf_counter()
    try:
        for rows in batches[done:]:
            grads = att.batch_gradients(corpus.collate(rows, cfg.padding_side))
            store.append(grads)
            tokens += sum(len(corpus.input_ids[r]) for r in rows)
            bar.update(len(rows))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}", refresh=False)
    finally:
        bar.close()
    if store.num_chunks != len(batches):
        raise StoreError(f"shard {store.path} has {store.num_chunks} chunks, expected {len(batches)}")
    if not store.complete:
        store.mark_complete()


def _finalize(
    path: Path,
    cfg: BuildConfig,
    corpus: hfdata.Corpus,
    batches: Sequence[Sequence[int]],
    world: int,
    fp: dict[str, Any],
    dims: dict[str, int],
) -> None:
    n, dim = len(corpus), sum(dims.values())
    stores = [GradientStore.load(path / "shards" / f"rank{r}-of-{world}") for r in range(world)]
    fisher = BlockFisher(dims)
    tmp = path / "vectors.bin.tmp"
    np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[cfg.dtype]
    out = np.memmap(tmp, mode="w+", dtype=np_dtype, shape=(n, dim))
    b = 0
    for store in stores:
        for chunk in store.chunks():
            rows = list(batches[b])
            if next(iter(chunk.values())).shape[0] != len(rows):
                raise StoreError(f"{store.path}: chunk {b} has the wrong number of rows")
            fisher.update(chunk)
            out[np.asarray(rows)] = to_storage(torch.cat([chunk[name] for name in dims], dim=1), cfg.dtype)
            b += 1
    if b != len(batches):
        raise StoreError(f"{path}: the shards hold {b} batches, expected {len(batches)}")
    out.flush()
    del out
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path / "vectors.bin")
    fsync_dir(path)
    checks = VectorFile(path / "vectors.bin", n, dim, cfg.dtype).checksums()
    state = fisher.state_dict()
    import io

    buf = io.BytesIO()
    np.savez(buf, **{str(i): t.numpy() for i, t in enumerate(state.values())})  # type: ignore[arg-type]
    atomic_write(path / "fisher.npz", buf.getvalue())
    examples = corpus.examples or list(range(n))
    texts = "".join(
        json.dumps({"row": i, "example": e, "text": t}) + "\n"
        for i, (e, t) in enumerate(zip(examples, corpus.texts, strict=True))
    )
    atomic_write(path / "texts.jsonl", texts.encode())
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "complete": True,
        "rows": n,
        "tokens": corpus.num_tokens,
        "skipped": len(corpus.skipped),
        "skipped_examples": corpus.skipped[:1000],
        "layers": [[name, k] for name, k in dims.items()],
        "dtype": cfg.dtype,
        "vectors": "vectors.bin",
        "check_rows": check_rows_for(dim, cfg.dtype),
        "checksums": checks,
        "fisher_keys": list(state),
        "fingerprint": fp,
        "settings": _settings(cfg),
        "damping": cfg.damping,
        "corpus": corpus.fingerprint(),
    }
    atomic_write(path / "index.json", json.dumps(meta, indent=1).encode())
    shutil.rmtree(path / "shards", ignore_errors=True)


def write_index(
    path: str | os.PathLike[str],
    layers: Mapping[str, int],
    chunks: Any,
    *,
    dtype: str = "float32",
    texts: Sequence[str] | None = None,
    damping: float = 1e-3,
    fingerprint: Mapping[str, Any] | None = None,
) -> Path:
    """Writes an index folder from precomputed gradient chunks (layer → ``(rows, k)``), streaming:
    for gradients computed elsewhere, synthetic benchmarks and tests. Queries then take gradients
    (:meth:`Index.search`); text queries need a ``fingerprint`` from :func:`build`."""
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"`dtype` must be one of {DTYPES}, got {dtype!r}")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    dims = {str(n): int(k) for n, k in layers.items()}
    fisher = BlockFisher(dims)
    tmp = p / "vectors.bin.tmp"
    n = 0
    with open(tmp, "wb") as f:
        for chunk in chunks:
            fisher.update(chunk)
            arr = to_storage(torch.cat([torch.as_tensor(chunk[name]) for name in dims], dim=1), dtype)
            f.write(arr.tobytes())
            n += arr.shape[0]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p / "vectors.bin")
    dim = sum(dims.values())
    state = fisher.state_dict()
    import io

    buf = io.BytesIO()
    np.savez(buf, **{str(i): t.numpy() for i, t in enumerate(state.values())})  # type: ignore[arg-type]
    atomic_write(p / "fisher.npz", buf.getvalue())
    rows_text = texts if texts is not None else [f"row {i}" for i in range(n)]
    atomic_write(
        p / "texts.jsonl",
        "".join(json.dumps({"row": i, "text": t}) + "\n" for i, t in enumerate(rows_text)).encode(),
    )
    meta = {
        "format": FORMAT, "version": VERSION, "complete": True, "rows": n, "tokens": None,
        "layers": [[k, v] for k, v in dims.items()], "dtype": dtype, "vectors": "vectors.bin",
        "check_rows": check_rows_for(dim, dtype),
        "checksums": VectorFile(p / "vectors.bin", n, dim, dtype).checksums(),
        "fisher_keys": list(state), "fingerprint": dict(fingerprint or {}), "settings": {},
        "damping": damping,
    }  # fmt: skip
    atomic_write(p / "index.json", json.dumps(meta, indent=1).encode())
    return p

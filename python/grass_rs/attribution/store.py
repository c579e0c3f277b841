"""Crash-safe, resumable on-disk store of compressed per-layer gradients.

Layout of a store folder (format version 2)::

    manifest.json          format, version, config + its fingerprint, layers, dtype, checksum
                           (written once, when the store is created)
    chunks.log             append-only log: one checksummed record per chunk, then "complete"
    chunk_000000.npy       (rows, Σ k_layer) float32 / float16 / bfloat16-as-uint16, layers side by
    chunk_000001.npy       side in manifest order; ...
    .lock                  the writer lock (``flock``), held while a writer has the store open

Chunks are plain ``.npy`` files (``np.save`` with ``allow_pickle=False``). ``chunks()`` and
``read_chunk()`` always return float32 tensors, whatever the stored ``dtype``.

Crash safety: a chunk is written to a temporary file, flushed and ``fsync``-ed, atomically renamed,
the folder is ``fsync``-ed, and only then one record (``<json> <sha256 prefix>\\n``: file, rows,
the chunk's SHA-256) is appended to ``chunks.log`` and ``fsync``-ed — ``O(1)`` per append, however
many chunks the store holds. Opening replays the log: a torn last record (a writer killed
mid-write) is ignored and cut off by the next writer; a bad record followed by good ones is
corruption. A chunk file that the log does not list is ignored and overwritten on resume.

Opening validates the whole manifest (schema, chunk names confined to ``chunk_NNNNNN.npy`` in the
store folder, the fingerprint recomputed from the config and layers, the manifest checksum): every
malformed field raises :class:`StoreError`; reading checks each chunk's checksum, dtype and shape.

Writers: :meth:`GradientStore.open` on an incomplete store takes an exclusive writer lock (a second
writer, in this or another process, gets a :class:`StoreError`); it is released by
:meth:`~GradientStore.mark_complete`, :meth:`~GradientStore.close` (or ``with``) or when the process
ends. Readers (:meth:`GradientStore.load`, or ``open`` on a complete store) take no lock and never
write, so a complete store can be read from a read-only folder. Version-1 stores (the chunk list
inside ``manifest.json``) are read as they are and migrated to version 2 when resumed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write
from ..errors import ArgumentTypeError, InvalidArgumentError, StoreError, StoreMismatchError

__all__ = ["DTYPES", "GradientStore", "StoreError", "StoreMismatchError", "fingerprint"]

FORMAT = "grass-rs-gradient-store"
VERSION = 2
MANIFEST = "manifest.json"
LOG = "chunks.log"
LOCK = ".lock"
#: Stored dtypes: name → (torch dtype the values are rounded to, numpy dtype of the ``.npy`` file).
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype("<f4")),
    "float16": (torch.float16, np.dtype("<f2")),
    "bfloat16": (torch.bfloat16, np.dtype("<u2")),  # raw bfloat16 bits: numpy has no bfloat16
}
_CHUNK_NAME = re.compile(r"chunk_[0-9]{6,}\.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RECORD_CHECK = 16  # hex digits of the SHA-256 that end each log record


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _chunk_name(index: int) -> str:
    return f"chunk_{index:06d}.npy"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _record_line(record: Mapping[str, Any]) -> bytes:
    body = _canonical(record)
    return f"{body} {hashlib.sha256(body.encode()).hexdigest()[:_RECORD_CHECK]}\n".encode()


def _header_checksum(header: Mapping[str, Any]) -> str:
    body = _canonical({k: v for k, v in header.items() if k != "checksum"})
    return hashlib.sha256(body.encode()).hexdigest()


def _is_int(value: object) -> bool:
    return type(value) is int


# ---- the writer lock -------------------------------------------------------------------------------
_HELD: set[str] = set()  # store folders locked by a handle of this process
_HELD_GUARD = threading.Lock()


class _WriterLock:
    """An exclusive, advisory lock on ``<folder>/.lock`` (``flock``; ``msvcrt.locking`` on Windows),
    also exclusive between handles of one process. Released by :meth:`release` or process exit."""

    def __init__(self, folder: Path) -> None:
        self.key = os.path.realpath(folder)
        with _HELD_GUARD:
            if self.key in _HELD:
                raise StoreError(
                    f"gradient store {folder} is already open for writing by another GradientStore in "
                    "this process; close() it (or let it mark_complete()) first, or use another folder"
                )
            path = folder / LOCK
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise StoreError(f"gradient store {folder}: cannot create {path} ({e})") from None
            try:
                _lock_fd(fd)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                    who = f"process {holder}" if holder else "another process"
                    raise StoreError(
                        f"gradient store {folder} is being written by {who} (writer lock {path}); "
                        "wait for it to finish or use another folder"
                    ) from None
                raise StoreError(f"gradient store {folder}: cannot lock {path} ({e})") from None
            try:
                os.ftruncate(fd, 0)
                _pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:  # pragma: no cover - informative only
                pass
            self.fd: int | None = fd
            _HELD.add(self.key)

    def release(self) -> None:
        with _HELD_GUARD:
            if self.fd is None:
                return
            fd, self.fd = self.fd, None
            _HELD.discard(self.key)
            try:
                _unlock_fd(fd)
            finally:
                os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode(errors="replace").strip()
    except OSError:  # pragma: no cover
        return ""


def _pwrite(fd: int, data: bytes, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.write(fd, data)  # pragma: no cover


try:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]


# ---- manifest and log parsing -----------------------------------------------------------------------
class _State:
    """What a store holds, as read from disk (or being written)."""

    def __init__(self, header: dict[str, Any], chunks: list[dict[str, Any]], complete: bool, log_size: int):
        self.header, self.chunks, self.complete, self.log_size = header, chunks, complete, log_size
        self.rows = sum(c["rows"] for c in chunks)


def _bad(p: Path, what: str, source: str = MANIFEST) -> StoreError:
    return StoreError(f"gradient store {p}: corrupt {source} ({what}); restore it or delete the store")


def _check_chunk_record(p: Path, rec: object, index: int, where: str, source: str) -> dict[str, Any]:
    if not isinstance(rec, dict) or set(rec) != {"file", "rows", "sha256"}:
        raise _bad(p, f"{where}: a chunk record must have exactly 'file', 'rows', 'sha256'", source)
    name, rows, sha = rec["file"], rec["rows"], rec["sha256"]
    if not isinstance(name, str) or not _CHUNK_NAME.fullmatch(name) or name != _chunk_name(index):
        raise _bad(
            p, f"{where}: chunk file name {name!r} is not {_chunk_name(index)!r} inside the store", source
        )
    if not _is_int(rows) or rows < 0:
        raise _bad(p, f"{where}: chunk rows {rows!r} is not an int ≥ 0", source)
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise _bad(p, f"{where}: chunk checksum {sha!r} is not a SHA-256 hex digest", source)
    return {"file": name, "rows": rows, "sha256": sha}


def _check_header(p: Path, m: object) -> dict[str, Any]:
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{p} is not a grass-rs gradient store ({MANIFEST} has no format {FORMAT!r})")
    version = m.get("version")
    if not _is_int(version) or version not in (1, VERSION):
        raise StoreError(f"gradient store {p} has version {version!r}, expected 1 or {VERSION}")
    keys = {"format", "version", "fingerprint", "config", "layers"}
    keys |= {"chunks", "complete"} if version == 1 else {"dtype", "checksum"}
    if set(m) != keys:
        raise _bad(p, f"fields {sorted(m)}, expected {sorted(keys)}")
    if version == VERSION:
        if not isinstance(m["checksum"], str) or m["checksum"] != _header_checksum(m):
            raise _bad(p, "checksum mismatch")
        if m["dtype"] not in DTYPES:
            raise _bad(p, f"dtype {m['dtype']!r} is not one of {list(DTYPES)}")
    if not isinstance(m["config"], dict):
        raise _bad(p, "config is not an object")
    layers = m["layers"]
    if not isinstance(layers, list) or not layers:
        raise _bad(p, "layers is not a non-empty list")
    names = set()
    for item in layers:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not _is_int(item[1])
            or item[1] < 1
        ):
            raise _bad(p, f"layer entry {item!r} is not [name, k ≥ 1]")
        if item[0] in names:
            raise _bad(p, f"layer {item[0]!r} is listed twice")
        names.add(item[0])
    if not isinstance(m["fingerprint"], str) or m["fingerprint"] != fingerprint(
        {"config": m["config"], "layers": layers}
    ):
        raise _bad(p, "its fingerprint does not match its config and layers")
    if version == 1:
        if not isinstance(m["chunks"], list):
            raise _bad(p, "chunks is not a list")
        if not isinstance(m["complete"], bool):
            raise _bad(p, "complete is not true/false")
    return m


def _read_log(p: Path) -> tuple[list[dict[str, Any]], bool, int]:
    """Replays ``chunks.log``: (chunk records, complete, size of the valid prefix in bytes)."""
    try:
        data = (p / LOG).read_bytes()
    except FileNotFoundError:
        raise StoreError(f"gradient store {p}: {LOG} is missing; restore it or delete the store") from None
    except OSError as e:
        raise StoreError(f"gradient store {p}: cannot read {LOG} ({e})") from None
    chunks: list[dict[str, Any]] = []
    complete, offset, pos = False, 0, 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines[:-1]):  # the piece after the last newline is a torn record
        pos += len(line) + 1
        record = _parse_record(line)
        where = f"{LOG} record {i + 1}"
        if record is None:
            if i == len(lines) - 2 and not lines[-1]:
                break  # a torn last record: ignored (and cut off by the next writer)
            raise StoreError(f"gradient store {p}: {where} is corrupt (checksum mismatch)")
        if complete:
            raise StoreError(f"gradient store {p}: {where} follows the 'complete' record")
        if record == {"complete": True}:
            complete = True
        else:
            chunks.append(_check_chunk_record(p, record, len(chunks), where, LOG))
        offset = pos
    return chunks, complete, offset


def _parse_record(line: bytes) -> Any:
    body, _, check = line.rpartition(b" ")
    if len(check) != _RECORD_CHECK or hashlib.sha256(body).hexdigest()[:_RECORD_CHECK].encode() != check:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _read_state(p: Path) -> _State:
    try:
        raw = (p / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise StoreError(f"no gradient store at {p} (missing {MANIFEST})") from None
    except OSError as e:
        raise StoreError(f"gradient store {p}: unreadable manifest ({e})") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise StoreError(f"gradient store {p}: unreadable manifest ({e})") from None
    header = _check_header(p, manifest)
    if header["version"] == 1:
        listed = enumerate(header["chunks"])
        chunks = [_check_chunk_record(p, c, i, f"chunk {i}", MANIFEST) for i, c in listed]
        state = _State(header, chunks, header["complete"], 0)
    else:
        state = _State(header, *_read_log(p))
    for c in state.chunks:
        try:
            mode = os.lstat(p / c["file"]).st_mode
        except FileNotFoundError:
            raise StoreError(f"gradient store {p}: chunk file {c['file']} is missing") from None
        if not stat.S_ISREG(mode):
            raise StoreError(f"gradient store {p}: chunk file {c['file']} is not a regular file")
    return state


def _check_dtype(dtype: object) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InvalidArgumentError(f"`dtype` must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


class GradientStore:
    """Compressed gradients of a dataset, appended chunk by chunk.

    Use :meth:`open` (create or resume; the writer) or :meth:`load` (read). Attributes ``layers``
    (name → k), ``config``, ``fingerprint`` and ``dtype`` describe what the store holds;
    ``num_chunks``/``num_rows`` what is written. A writer can be used as a context manager
    (``with GradientStore.open(...) as store:``) to release its lock on exit.
    """

    def __init__(self, path: Path, state: _State) -> None:
        self.path = path
        self._state = state
        self._lock: _WriterLock | None = None
        self._log_fd: int | None = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        layers: Mapping[str, int],
        config: Mapping[str, Any],
        *,
        dtype: str = "float32",
    ) -> GradientStore:
        """Opens the store at ``path`` for writing: creates it, or resumes a compatible one.

        An incomplete store is locked for writing (released by :meth:`mark_complete` or
        :meth:`close`); a complete one is returned read-only, without writing anything.

        Args:
            path: store folder (created if missing).
            layers: layer name → compressed dimension, in order.
            config: JSON-able description of everything that determines the gradients.
            dtype: how values are stored: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``
                (read back as float32 either way).

        Raises:
            StoreMismatchError: an existing store was written for another ``config``/``layers``/``dtype``.
            StoreError: an existing store is corrupt, or another writer holds it.
            ValueError/TypeError: invalid ``layers`` or ``dtype``.
        """
        p = Path(path)
        dtype = _check_dtype(dtype)
        if not isinstance(layers, Mapping) or not layers:
            raise InvalidArgumentError("`layers` must be a non-empty mapping layer name → k")
        for name, k in layers.items():
            if not isinstance(name, str):
                raise ArgumentTypeError(f"`layers` keys must be str layer names, got {name!r}")
            if not (_is_int(k) or isinstance(k, np.integer)) or int(k) < 1:
                raise InvalidArgumentError(f"`layers`[{name!r}] must be an int ≥ 1, got {k!r}")
        cfg = json.loads(json.dumps(dict(config), default=str))
        layer_list = [[name, int(k)] for name, k in layers.items()]
        fp = fingerprint({"config": cfg, "layers": layer_list})
        if (p / MANIFEST).exists():
            store = cls(p, _read_state(p))
            store._check_same(fp, dtype, cfg, layers)
            if store.complete:
                return store  # nothing to write: no lock, no write (read-only folders work)
        p.mkdir(parents=True, exist_ok=True)
        lock = _WriterLock(p)
        try:
            if (p / MANIFEST).exists():  # (re)read under the lock: another writer may have written
                store = cls(p, _read_state(p))
                store._check_same(fp, dtype, cfg, layers)
                if store.complete:
                    lock.release()
                    return store
            else:
                header: dict[str, Any] = {
                    "format": FORMAT,
                    "version": VERSION,
                    "fingerprint": fp,
                    "config": cfg,
                    "layers": layer_list,
                    "dtype": dtype,
                }
                header["checksum"] = _header_checksum(header)
                atomic_write(p / LOG, b"")
                atomic_write(p / MANIFEST, json.dumps(header, indent=1).encode())
                store = cls(p, _State(header, [], False, 0))
            store._lock = lock
            store._prepare_writes()
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientStore:
        """Opens an existing store for reading (no lock, no write) and validates its manifest.

        Appending to a loaded, incomplete store takes the writer lock then.

        Raises:
            StoreError: missing/corrupt manifest or log, unknown format, or listed chunk files missing.
        """
        p = Path(path)
        return cls(p, _read_state(p))

    def _check_same(self, fp: str, dtype: str, config: Mapping[str, Any], layers: Mapping[str, int]) -> None:
        if self.fingerprint != fp:
            raise StoreMismatchError(
                f"gradient store {self.path} was written for another configuration "
                f"(stored {self.config}, layers {self.layers}; "
                f"now {dict(config)}, layers {dict(layers)}); "
                "use another folder or delete it"
            )
        if self.dtype != dtype:
            raise StoreMismatchError(
                f"gradient store {self.path} stores {self.dtype}, not the requested dtype {dtype!r}; "
                "use another folder or the same dtype"
            )

    # ---- description --------------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, int]:
        """Layer name → compressed dimension, in storage order."""
        return {name: int(k) for name, k in self._state.header["layers"]}

    @property
    def config(self) -> dict[str, Any]:
        """The configuration the store was created with."""
        return dict(self._state.header["config"])

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the config and layers."""
        return str(self._state.header["fingerprint"])

    @property
    def dtype(self) -> str:
        """How values are stored: ``"float32"``, ``"float16"`` or ``"bfloat16"``."""
        return str(self._state.header.get("dtype", "float32"))

    @property
    def num_chunks(self) -> int:
        """Number of complete chunks."""
        return len(self._state.chunks)

    @property
    def num_rows(self) -> int:
        """Total rows (examples) in the complete chunks."""
        return self._state.rows

    @property
    def complete(self) -> bool:
        """Whether :meth:`mark_complete` was called (every example is stored)."""
        return self._state.complete

    # ---- writing ------------------------------------------------------------------------------
    def _ensure_writer(self) -> None:
        """Takes the writer lock (a loaded handle appending) and re-reads the store under it."""
        if self._lock is not None:
            return
        lock = _WriterLock(self.path)
        try:
            state = _read_state(self.path)
            old = self._state.header
            new = state.header
            if new["fingerprint"] != old["fingerprint"] or new.get("dtype") != old.get("dtype"):
                raise StoreError(f"gradient store {self.path} was replaced by another store since loaded")
            self._state = state
            if state.complete:
                raise StoreError(f"gradient store {self.path} is complete; cannot append")
            self._lock = lock
            self._prepare_writes()
        except BaseException:
            self._lock = None
            lock.release()
            raise

    def _prepare_writes(self) -> None:
        """Under the lock: migrates a version-1 store, cuts a torn log tail, opens the log."""
        if self._state.header["version"] == 1:
            self._migrate()
        fd = os.open(self.path / LOG, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != self._state.log_size:
                os.ftruncate(fd, self._state.log_size)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._log_fd = fd

    def _migrate(self) -> None:
        """Version 1 → 2: the chunk list moves to ``chunks.log`` (log first, then the manifest, so a
        kill in between leaves a valid version-1 store)."""
        old = self._state.header
        log = b"".join(_record_line(c) for c in self._state.chunks)
        atomic_write(self.path / LOG, log)
        header = {k: old[k] for k in ("format", "fingerprint", "config", "layers")}
        header.update(version=VERSION, dtype="float32")
        header["checksum"] = _header_checksum(header)
        atomic_write(self.path / MANIFEST, json.dumps(header, indent=1).encode())
        self._state = _State(header, self._state.chunks, False, len(log))

    def _commit(self, record: Mapping[str, Any]) -> int:
        """Appends one record to the log at the end of the valid prefix (overwriting whatever a
        failed attempt left there), ``fsync``-ed. Returns the new log size."""
        assert self._log_fd is not None
        line = _record_line(record)
        end = self._state.log_size + len(line)
        written = _pwrite(self._log_fd, line, self._state.log_size)
        if written != len(line):
            raise OSError(errno.EIO, f"short write to {self.path / LOG}")
        os.ftruncate(self._log_fd, end)
        os.fsync(self._log_fd)
        return end

    def append(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Writes one chunk (crash-safe and atomic: on any error nothing is recorded, in memory or
        on disk, and the append can be retried).

        Args:
            grads: layer → ``(rows, k_layer)`` gradients, every layer of the store.

        Raises:
            ValueError: missing layers, wrong shapes, NaN/inf values, or values beyond the range of
                the stored dtype (nothing is written).
            StoreError: the store is complete, or another writer holds it.
        """
        if self.complete:
            raise StoreError(f"gradient store {self.path} is complete; cannot append")
        arr = self._pack(grads)
        self._ensure_writer()
        name = _chunk_name(self.num_chunks)
        data = _npy_bytes(arr)
        atomic_write(self.path / name, data)
        entry = {"file": name, "rows": int(arr.shape[0]), "sha256": hashlib.sha256(data).hexdigest()}
        size = self._commit(entry)
        # only now, with the record durable, does the in-memory view change
        self._state.chunks.append(entry)
        self._state.rows += entry["rows"]
        self._state.log_size = size

    def mark_complete(self) -> None:
        """Records that every example is stored and releases the writer lock (no write when the
        store is already complete)."""
        if self.complete:
            self.close()
            return
        self._ensure_writer()
        self._state.log_size = self._commit({"complete": True})
        self._state.complete = True
        self.close()

    def close(self) -> None:
        """Releases the writer lock (if held). The handle can still read; appending again retakes
        the lock."""
        fd, self._log_fd = self._log_fd, None
        if fd is not None:
            os.close(fd)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> GradientStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _pack(self, grads: Mapping[str, torch.Tensor]) -> np.ndarray:
        if not isinstance(grads, Mapping):
            raise ArgumentTypeError(f"`grads` must be a dict layer -> (rows, k), got {type(grads).__name__}")
        layers = self.layers
        if set(grads) != set(layers):
            raise InvalidArgumentError(
                f"chunk layers {sorted(map(str, grads))} do not match the store's {sorted(layers)}"
            )
        target, np_dtype = DTYPES[self.dtype]
        parts, rows = [], None
        for name, k in layers.items():
            try:
                g = torch.as_tensor(grads[name]).detach().to("cpu")
            except (TypeError, ValueError, RuntimeError) as e:
                raise ArgumentTypeError(f"layer {name!r}: expected a (rows, {k}) tensor ({e})") from None
            if g.dtype == torch.bool or g.is_complex():
                raise ArgumentTypeError(f"layer {name!r}: expected a float tensor, got {g.dtype}")
            if g.ndim != 2 or g.shape[1] != k or (rows is not None and g.shape[0] != rows):
                raise InvalidArgumentError(
                    f"layer {name!r}: expected ({rows or 'rows'}, {k}), got {tuple(g.shape)}"
                )
            if g.is_floating_point() and not bool(torch.isfinite(g).all()):
                raise InvalidArgumentError(
                    f"layer {name!r}: gradients contain NaN or infinite values; chunk not written"
                )
            stored = g.to(target)
            if not bool(torch.isfinite(stored).all()):
                peak = float(g.double().abs().max())
                raise InvalidArgumentError(
                    f"layer {name!r}: gradients up to {peak:.3g} in magnitude exceed the range of the "
                    f"store's dtype {self.dtype} (max {torch.finfo(target).max:.3g}); chunk not written"
                )
            rows = g.shape[0]
            parts.append(stored.view(torch.int16) if target == torch.bfloat16 else stored)
        packed = torch.cat(parts, dim=1).numpy()
        return np.ascontiguousarray(packed.view(np_dtype) if packed.dtype != np_dtype else packed)

    # ---- reading ------------------------------------------------------------------------------
    def read_chunk(self, index: int, *, verify: bool = True) -> dict[str, torch.Tensor]:
        """Chunk ``index`` as layer → ``(rows, k_layer)`` float32 tensors.

        Raises:
            StoreError: checksum, dtype or shape mismatch (corrupt chunk).
            IndexError: no chunk ``index``.
        """
        if not _is_int(index) and not isinstance(index, np.integer):
            raise ArgumentTypeError(f"`index` must be an int, got {type(index).__name__}")
        if not -self.num_chunks <= int(index) < self.num_chunks:
            raise IndexError(f"`index` {index} out of range: the store has {self.num_chunks} chunks")
        entry = self._state.chunks[int(index)]
        path = self.path / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise StoreError(f"gradient store {self.path}: chunk {entry['file']} unreadable ({e})") from None
        if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise StoreError(
                f"gradient store {self.path}: chunk {entry['file']} is corrupt (checksum mismatch)"
            )
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(
                f"gradient store {self.path}: chunk {entry['file']} is unreadable ({e})"
            ) from None
        total = sum(self.layers.values())
        target, np_dtype = DTYPES[self.dtype]
        if not isinstance(arr, np.ndarray) or arr.shape != (entry["rows"], total) or arr.dtype != np_dtype:
            raise StoreError(
                f"gradient store {self.path}: chunk {entry['file']} has shape {getattr(arr, 'shape', None)} "
                f"and dtype {getattr(arr, 'dtype', None)}, expected ({entry['rows']}, {total}) {np_dtype}"
            )
        arr = np.ascontiguousarray(arr)
        if target == torch.bfloat16:
            t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).to(torch.float32)
        else:
            t = torch.from_numpy(arr).to(torch.float32)
        out, start = {}, 0
        for name, k in self.layers.items():
            out[name] = t[:, start : start + k]
            start += k
        return out

    def chunks(self, *, verify: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Iterates over the chunks in order (one in memory at a time)."""
        for i in range(self.num_chunks):
            yield self.read_chunk(i, verify=verify)

    def read_all(self) -> dict[str, torch.Tensor]:
        """Every stored row, layer → ``(num_rows, k_layer)`` (small stores, tests)."""
        chunks = list(self.chunks())
        if not chunks:
            return {name: torch.zeros(0, k) for name, k in self.layers.items()}
        return {name: torch.cat([c[name] for c in chunks]) for name in self.layers}

    def verify(self) -> None:
        """Reads every chunk and checks its checksum and shape (raises :class:`StoreError`)."""
        for i in range(self.num_chunks):
            self.read_chunk(i)

    def __repr__(self) -> str:
        state = "complete" if self.complete else ("writing" if self._lock else "incomplete")
        return (
            f"GradientStore({str(self.path)!r}, {self.num_chunks} chunks, {self.num_rows} rows, "
            f"{self.dtype}, {state})"
        )


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()

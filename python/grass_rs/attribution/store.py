"""Crash-safe, resumable on-disk store of compressed per-layer gradients.

Layout of a store folder::

    manifest.json          format, version, config + its fingerprint, layers, chunk list
    chunk_000000.npy       (rows, Σ k_layer) float32, layers side by side in manifest order
    chunk_000001.npy       ...

Chunks are plain ``.npy`` files (``np.save`` with ``allow_pickle=False``; read back with
``np.load(mmap_mode="r")``, so a store larger than memory is scored chunk by chunk).

Crash safety: a chunk is written to ``<name>.tmp``, flushed and ``fsync``-ed, atomically renamed,
the folder is ``fsync``-ed, and only then the manifest (same protocol) lists it with its SHA-256.
A process killed at any moment leaves either the old or the new manifest; a chunk file that the
manifest does not list is ignored and overwritten on resume. Opening a store checks the format,
the config fingerprint (model, compressor, seeds, k, ...) and, on read, each chunk's checksum and
shape: a corrupt or mismatched store raises :class:`StoreError` / :class:`StoreMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write
from ..errors import InvalidArgumentError, StoreError, StoreMismatchError

__all__ = ["GradientStore", "StoreError", "StoreMismatchError", "fingerprint"]

FORMAT = "grass-rs-gradient-store"
VERSION = 1
MANIFEST = "manifest.json"


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class GradientStore:
    """Compressed gradients of a dataset, appended chunk by chunk.

    Use :meth:`open` (create or resume). Attributes ``layers`` (name → k), ``config`` and
    ``fingerprint`` describe what the store holds; ``num_chunks``/``num_rows`` what is written.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self._manifest = manifest

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | os.PathLike[str], layers: Mapping[str, int], config: Mapping[str, Any]
    ) -> GradientStore:
        """Opens the store at ``path`` for writing: creates it, or resumes a compatible one.

        Args:
            path: store folder (created if missing).
            layers: layer name → compressed dimension, in order.
            config: JSON-able description of everything that determines the gradients.

        Raises:
            StoreMismatchError: an existing store was written for another ``config``/``layers``.
            StoreError: an existing store is corrupt.
        """
        p = Path(path)
        fp = fingerprint({"config": dict(config), "layers": list(layers.items())})
        if (p / MANIFEST).exists():
            store = cls.load(p)
            if store.fingerprint != fp:
                raise StoreMismatchError(
                    f"gradient store {p} was written for another configuration "
                    f"(stored {store.config}, layers {store.layers}; "
                    f"now {dict(config)}, layers {dict(layers)}); "
                    "use another folder or delete it"
                )
            return store
        p.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fp,
            "config": json.loads(json.dumps(dict(config), default=str)),
            "layers": [[name, int(k)] for name, k in layers.items()],
            "chunks": [],
            "complete": False,
        }
        store = cls(p, manifest)
        store._write_manifest()
        return store

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientStore:
        """Opens an existing store (read or resume) and checks its manifest.

        Raises:
            StoreError: missing/corrupt manifest, unknown format, or listed chunk files missing.
        """
        p = Path(path)
        try:
            manifest = json.loads((p / MANIFEST).read_text())
        except FileNotFoundError:
            raise StoreError(f"no gradient store at {p} (missing {MANIFEST})") from None
        except (OSError, ValueError) as e:
            raise StoreError(f"gradient store {p}: unreadable manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{p} is not a grass-rs gradient store")
        if manifest.get("version") != VERSION:
            raise StoreError(f"gradient store {p} has version {manifest.get('version')}, expected {VERSION}")
        for chunk in manifest["chunks"]:
            if not (p / chunk["file"]).exists():
                raise StoreError(f"gradient store {p}: chunk file {chunk['file']} is missing")
        return cls(p, manifest)

    # ---- description --------------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, int]:
        """Layer name → compressed dimension, in storage order."""
        return {name: int(k) for name, k in self._manifest["layers"]}

    @property
    def config(self) -> dict[str, Any]:
        """The configuration the store was created with."""
        return dict(self._manifest["config"])

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the config and layers."""
        return str(self._manifest["fingerprint"])

    @property
    def num_chunks(self) -> int:
        """Number of complete chunks."""
        return len(self._manifest["chunks"])

    @property
    def num_rows(self) -> int:
        """Total rows (examples) in the complete chunks."""
        return sum(int(c["rows"]) for c in self._manifest["chunks"])

    @property
    def complete(self) -> bool:
        """Whether :meth:`mark_complete` was called (every example is stored)."""
        return bool(self._manifest["complete"])

    # ---- writing ------------------------------------------------------------------------------
    def append(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Writes one chunk (crash-safe, see the module docstring).

        Args:
            grads: layer → ``(rows, k_layer)`` gradients, every layer of the store.

        Raises:
            ValueError: missing layers, wrong shapes, or NaN/inf values (nothing is written).
            StoreError: the store is already complete.
        """
        if self.complete:
            raise StoreError(f"gradient store {self.path} is complete; cannot append")
        arr = self._pack(grads)
        name = f"chunk_{self.num_chunks:06d}.npy"
        data = _npy_bytes(arr)
        atomic_write(self.path / name, data)
        self._manifest["chunks"].append(
            {"file": name, "rows": int(arr.shape[0]), "sha256": hashlib.sha256(data).hexdigest()}
        )
        self._write_manifest()

    def mark_complete(self) -> None:
        """Records that every example is stored."""
        self._manifest["complete"] = True
        self._write_manifest()

    def _pack(self, grads: Mapping[str, torch.Tensor]) -> np.ndarray:
        if set(grads) != set(self.layers):
            raise InvalidArgumentError(
                f"chunk layers {sorted(grads)} do not match the store's {sorted(self.layers)}"
            )
        parts, rows = [], None
        for name, k in self.layers.items():
            g = torch.as_tensor(grads[name]).detach().to("cpu", torch.float32)
            if g.ndim != 2 or g.shape[1] != k or (rows is not None and g.shape[0] != rows):
                raise InvalidArgumentError(
                    f"layer {name!r}: expected ({rows or 'rows'}, {k}), got {tuple(g.shape)}"
                )
            if not bool(torch.isfinite(g).all()):
                raise InvalidArgumentError(
                    f"layer {name!r}: gradients contain NaN or infinite values; chunk not written"
                )
            rows = g.shape[0]
            parts.append(g.numpy())
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _write_manifest(self) -> None:
        atomic_write(self.path / MANIFEST, json.dumps(self._manifest, indent=1).encode())

    # ---- reading ------------------------------------------------------------------------------
    def read_chunk(self, index: int, *, verify: bool = True) -> dict[str, torch.Tensor]:
        """Chunk ``index`` as layer → ``(rows, k_layer)`` float32 tensors.

        Raises:
            StoreError: checksum or shape mismatch (corrupt chunk).
        """
        entry = self._manifest["chunks"][index]
        path = self.path / entry["file"]
        data = path.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise StoreError(
                f"gradient store {self.path}: chunk {entry['file']} is corrupt (checksum mismatch)"
            )
        import io

        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise StoreError(
                f"gradient store {self.path}: chunk {entry['file']} is unreadable ({e})"
            ) from None
        total = sum(self.layers.values())
        if arr.shape != (int(entry["rows"]), total) or arr.dtype != np.float32:
            raise StoreError(f"gradient store {self.path}: chunk {entry['file']} has shape {arr.shape}")
        t = torch.from_numpy(arr)
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

"""Data loading: the bundled datasets and models (:mod:`.bundled`)."""

from __future__ import annotations

__all__: list[str] = []

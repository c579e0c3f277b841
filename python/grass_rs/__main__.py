"""``python -m grass_rs`` = the ``grass-rs`` console script."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())

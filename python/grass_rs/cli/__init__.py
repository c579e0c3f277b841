"""The ``grass-rs`` command line (also ``python -m grass_rs``); every argparse line of the package
lives in this subpackage, one module per group of commands:

* ``attribute`` (:mod:`.attribute`) — the whole attribution job on the bundled digits MLP;
* ``lds``, ``study`` (:mod:`.evaluate`) — linear datamodeling score, speed–fidelity study;
* ``demo`` (:mod:`.demo`) — projector comparison table;
* ``build``, ``query`` (:mod:`.index`) — index your own Hugging Face model and corpus, query it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import GrassError
from . import attribute, demo, evaluate, index

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The ``grass-rs`` argument parser."""
    p = argparse.ArgumentParser(prog="grass-rs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    attribute.add_parser(sub)
    evaluate.add_parsers(sub)
    demo.add_parser(sub)
    index.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grass-rs`` console script and ``python -m grass_rs``."""
    p = parser()
    args = p.parse_args(argv)
    if getattr(args, "nproc", 1) < 1:
        p.error("--nproc must be ≥ 1")
    try:
        return int(args.func(args) or 0)
    except (ValueError, GrassError) as e:  # configuration errors: one line, no traceback
        print(f"grass-rs: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output, full disk, ...: one line, no traceback
        print(f"grass-rs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("grass-rs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

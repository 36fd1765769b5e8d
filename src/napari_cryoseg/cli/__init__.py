"""``cryoseg`` command line: headless segmentation, training and model tools.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which
registers the command and sets ``func``) so commands stay small and independent.
Errors the user can fix (:class:`~napari_cryoseg.core.errors.CryoSegError`) are
printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_cryoseg import __version__

#: Sub-command modules, in the order ``cryoseg --help`` lists them.
COMMAND_MODULES = (
    "segment",
    "train",
    "finetune",
    "evaluate",
    "info",
    "import_weights",
    "measure",
    "export",
    "import_bioimageio",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every sub-command registered)."""
    parser = argparse.ArgumentParser(
        prog="cryoseg",
        description="Segment electron-microscopy images with U-Nets (napari-cryoseg, headless).",
    )
    parser.add_argument("--version", action="version", version=f"napari-cryoseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"napari_cryoseg.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"napari_cryoseg.cli.{name}":
                continue  # command not built yet
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryoseg`` script; returns the exit code."""
    from napari_cryoseg.core.errors import CryoSegError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CryoSegError as err:
        print(f"cryoseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryoseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``cryoseg`` command line: headless segmentation, training and model tools.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which
registers the command and sets ``func``) so commands stay small and independent.
Errors the user can fix (:class:`~napari_cryoseg.core.errors.CryoSegError`, a command
line that does not parse, a file-system error, running out of memory) are printed as one
line on stderr with exit code 2, never as a traceback. Anything else is a bug: it is
reported as one ``internal error`` line (exit code 1) asking for a report; set
``CRYOSEG_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from napari_cryoseg import __version__
from napari_cryoseg.cli._args import CliParser, UsageError

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
    parser = CliParser(
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _os_error_text(err: OSError) -> str:
    """``'<file>': <reason>`` for a file-system error (permission, is a folder, ...)."""
    reason = err.strerror or str(err)
    where = f"'{err.filename}': " if err.filename else ""
    return f"{where}{reason.rstrip('.').lower()}; check the path and its permissions"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and ``kill`` send): unwinds like Ctrl-C, so every partial
    output (temp files, hidden zarr stores) is removed on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _remove_unfinished_outputs() -> None:
    """Hidden output stores a signal left behind (it can land between a writer's
    creation and its ``with``); only loaded when zarr output was in use."""
    module = sys.modules.get("napari_cryoseg.io.zarr_labels")
    if module is not None:
        module.remove_unfinished_stores()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryoseg`` script; returns the exit code."""
    from napari_cryoseg.core.errors import CryoSegError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"{err.prog}: error: {_one_line(str(err))} (see '{err.prog} --help')",
              file=sys.stderr)
        return 2
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    prefix = f"cryoseg {args.command}"
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.func(args) or 0)
    except CryoSegError as err:
        print(f"{prefix}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file or folder the checks did not foresee (permissions, vanished files, ...).
        print(f"{prefix}: error: {_one_line(_os_error_text(err))}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix}: error: out of memory; use smaller inputs or settings (e.g. a "
              "smaller --batch-size, --patch or --tile)", file=sys.stderr)
        return 2
    except Terminated:
        _remove_unfinished_outputs()
        print(f"{prefix}: terminated (SIGTERM); partial outputs were removed",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        _remove_unfinished_outputs()
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line, traceback on request
        if os.environ.get("CRYOSEG_DEBUG"):
            raise
        if type(err).__name__ == "OutOfMemoryError":  # torch's CUDA/MPS out-of-memory
            print(f"{prefix}: error: the device ran out of memory; use a smaller "
                  "--batch-size, --patch or --tile, or --device cpu", file=sys.stderr)
            return 2
        print(f"{prefix}: internal error: {type(err).__name__}: {_one_line(str(err))[:300]} "
              "(this is a bug in napari-cryoseg; rerun with CRYOSEG_DEBUG=1 for the "
              "traceback and report it)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Helpers shared by the ``cryoseg`` sub-commands: arguments, model loading, outputs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from napari_cryoseg.cli._args import device_name, float_range, int_range
from napari_cryoseg.cli._progress import ProgressBar, format_duration
from napari_cryoseg.cli._settings_flags import add_setting_flag
from napari_cryoseg.core.atomic import check_output_path
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import about
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.device import DEVICE_CHOICES
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.model.bundled import BUNDLED_ALIASES, load_bundled, load_default_model
from napari_cryoseg.model.checkpoint import ModelFile

__all__ = [
    "MAX_BATCH",
    "MAX_TILE",
    "ProgressBar",
    "add_device_argument",
    "add_tiling_arguments",
    "add_trust_argument",
    "add_tta_argument",
    "check_model_output",
    "check_new_file",
    "check_not_an_input",
    "echo",
    "format_duration",
    "load_model_arg",
    "tiling_from_args",
]

#: Largest edge (tile, patch, block) and batch accepted on the command line: the tiling
#: settings' own bounds (memory is checked too).
MAX_TILE = int(about(TilingConfig, "tile").max)
MAX_BATCH = int(about(TilingConfig, "batch_size").max)


def echo(text: str = "", *, err: bool = False) -> None:
    """Write one line to stdout (results) or stderr (progress, problems) and flush."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda|mps`` (``cuda:1`` also accepted)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=device_name,
        metavar="DEVICE",
        help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto = "
        "cuda, then mps, then cpu)",
    )


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """``--tta N``: test-time augmentation copies averaged per tile (from
    :class:`SegmentSettings`' field metadata)."""
    add_setting_flag(parser, SegmentSettings, "tta")


def add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tile``, ``--overlap``, ``--batch-size`` (None: the model file's hint).

    Flag, bounds and help come from :class:`TilingConfig`'s field metadata.
    """
    group = parser.add_argument_group("tiling (default: the model file's hint)")
    for name, metavar in (("tile", "N"), ("overlap", "F"), ("batch_size", "N")):
        meta = about(TilingConfig, name)
        kind = float_range if metavar == "F" else int_range
        group.add_argument(meta.flag, type=kind(meta.min, meta.max, what=meta.what),
                           default=None, metavar=metavar, help=meta.help)


def tiling_from_args(args: argparse.Namespace, model: ModelFile) -> TilingConfig:
    """The model's tiling hint with the values given on the command line replacing it.

    Raises
    ------
    InputError
        A value out of range (TilingConfig validates it).
    """
    hint = model.tiling
    return TilingConfig(
        tile=hint.tile if getattr(args, "tile", None) is None else args.tile,
        overlap=hint.overlap if getattr(args, "overlap", None) is None else args.overlap,
        batch_size=hint.batch_size if getattr(args, "batch_size", None) is None
        else args.batch_size,
    )


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-code SHA256|PATH``: run code from this bioimage.io package (repeatable)."""
    parser.add_argument(
        "--trust-code", action="append", default=[], metavar="SHA256|PATH",
        help="run the Python code a bioimage.io model package brings (its architecture "
        "file): give the sha256 printed when the package was refused, or the package's "
        "path. Without it, code from a package is never run (repeat for more files)")


def load_model_arg(path: str | Path | None, trust_code: Iterable[str] = (), *,
                   check_trust: bool = True) -> ModelFile:
    """Load ``--model PATH`` (a model file or a bioimage.io package), or a bundled model
    (none: the default; ``em`` or ``backbone``: the EM backbone).

    Package code the user trusted (``--trust-code``) is named on stderr, one line each.
    """
    if path is None:
        return load_default_model()
    if str(path) in BUNDLED_ALIASES and not Path(path).exists():
        return load_bundled(BUNDLED_ALIASES[str(path)])
    from napari_cryoseg.engine.inference.bioimageio_model import load_any_model

    model = load_any_model(Path(path).expanduser(), list(trust_code),
                           check_trust=check_trust)
    for line in getattr(model, "trusted", []):
        echo(f"note: {line}", err=True)
    return model


def is_model_file(path: Path) -> bool:
    """True for a napari-cryoseg model file (any version): what ``--overwrite`` may replace
    where a command writes a model."""
    from napari_cryoseg.core.errors import ModelFileError
    from napari_cryoseg.model.checkpoint import is_model_payload, read_payload

    try:
        return path.is_file() and is_model_payload(read_payload(path))
    except (ModelFileError, OSError):
        return False


def check_model_output(
    path: str | os.PathLike[str], overwrite: bool,
    inputs: Iterable[tuple[str, Path | None]] = (), flag: str = "--out",
) -> Path:
    """A model file to write: the output rule, replacing only an earlier model file."""
    return check_new_file(path, flag, overwrite, inputs, is_ours=is_model_file,
                          what="model file")


def check_not_an_input(out: Path, inputs: Iterable[tuple[str, Path | None]], flag: str) -> None:
    """Refuse an output path that is one of the command's inputs or inside an input
    folder (even with --overwrite); see :func:`~napari_cryoseg.core.atomic.check_output_path`.
    """
    check_output_path(out, inputs, flag=flag, overwrite=True)


def check_new_file(
    path: str | os.PathLike[str], flag: str, overwrite: bool,
    inputs: Iterable[tuple[str, Path | None]] = (),
    is_ours: Callable[[Path], bool] | None = None, what: str = "file",
) -> Path:
    """An output file path, checked before any work: not a folder, not an input (nor
    inside an input folder), not a FIFO/device, its folder exists, and it does not exist
    unless ``overwrite`` (then only if ``is_ours`` accepts it).

    Raises
    ------
    InputError
        With one line saying what to do (``OutputExistsError`` for an existing file).
    """
    if not str(path).strip():
        raise InputError(f"{flag} is empty; give a file name to write to")
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError(f"{flag} {out} is a folder; give a file name to write to")
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} of {flag} does not exist; create it first")
    return check_output_path(out, inputs, flag=flag, overwrite=overwrite, is_ours=is_ours,
                             what=what)

"""Helpers shared by the ``cryoseg`` sub-commands: arguments, model loading, outputs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from napari_cryoseg.cli._args import device_name, float_range, int_range
from napari_cryoseg.cli._progress import ProgressBar, format_duration
from napari_cryoseg.core.errors import InputError, OutputExistsError
from napari_cryoseg.core.setting import about
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.device import DEVICE_CHOICES
from napari_cryoseg.engine.predict import TTA_CHOICES
from napari_cryoseg.model.bundled import load_default_model
from napari_cryoseg.model.checkpoint import ModelFile

__all__ = [
    "MAX_BATCH",
    "MAX_TILE",
    "ProgressBar",
    "add_device_argument",
    "add_tiling_arguments",
    "add_tta_argument",
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
    """``--tta N``: test-time augmentation copies averaged per tile."""
    parser.add_argument(
        "--tta", type=int, default=1, choices=TTA_CHOICES, metavar="N",
        help="test-time augmentation: average the predictions of N flipped/rotated copies "
        "of every tile (1 = off, 2, 4, 8; N times slower, usually a little more accurate)",
    )


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


def load_model_arg(path: str | Path | None) -> ModelFile:
    """Load ``--model PATH`` (a model file or a bioimage.io package), or the bundled default."""
    if path is None:
        return load_default_model()
    from napari_cryoseg.engine.bioimageio_model import load_any_model

    return load_any_model(Path(path).expanduser())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(out: Path, inputs: Iterable[tuple[str, Path | None]], flag: str) -> None:
    """Refuse an output path that is one of the command's inputs (even with --overwrite).

    Parameters
    ----------
    out : Path
        The output file.
    inputs : iterable of (flag, path)
        The command's input files, e.g. ``[("--labels", labels_path)]``.
    flag : str
        The output's flag, for the message.
    """
    for input_flag, path in inputs:
        if path is not None and (_same_file(out, path) or out.resolve() == path.resolve()):
            raise InputError(
                f"{flag} {out} is the {input_flag} input; writing it would destroy the "
                f"input. Choose another {flag} file"
            )


def check_new_file(
    path: str | os.PathLike[str], flag: str, overwrite: bool,
    inputs: Iterable[tuple[str, Path | None]] = (),
) -> Path:
    """An output file path, checked before any work: not a folder, not an input, its
    folder exists, and it does not exist unless ``overwrite``.

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
    check_not_an_input(out, inputs, flag)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it "
                                f"(or choose another {flag})")
    return out

"""``cryoseg segment``: segment TIFF/MRC files or folders and write label TIFFs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_cryoseg.cli._common import (
    ProgressBar,
    add_device_argument,
    add_tiling_arguments,
    echo,
    format_duration,
    load_model_arg,
    tiling_from_args,
)
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import CryoSegError, InputError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.predict import Segmenter, segment
from napari_cryoseg.io import labels_output_path, list_images, read_image, write_labels_tiff

#: Files larger than this are read lazily (strip by strip) instead of loaded whole.
LAZY_BYTES = 512 * 2**20
LABELS_SUFFIX = "_labels.tif"
PROBABILITIES_SUFFIX = "_probabilities.tif"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg segment``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment images (TIFF, MRC) and write label TIFFs",
        description="Segment TIFF/MRC images (files or folders) tile by tile and write "
        f"<stem>{LABELS_SUFFIX} label images (0 = background) into the output folder.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.tif, .tiff, .mrc, ...) or folders of them")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help="napari-cryoseg model file (.pt); default: the bundled model")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created if missing; its parent must exist)")
    add_tiling_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T",
                        help="foreground probability threshold for binary models (default 0.5)")
    parser.add_argument("--probabilities", action="store_true",
                        help=f"also write <stem>{PROBABILITIES_SUFFIX} (float32 per-class "
                        "probabilities)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)
    return parser


def _check_out_dir(out: str) -> Path:
    """The output folder; it may be missing (created later) if its parent exists."""
    out_dir = Path(out).expanduser()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out '{out_dir}' is a file; give a folder for the outputs")
    elif not out_dir.parent.is_dir():
        raise InputError(
            f"cannot create output folder '{out_dir}': its parent '{out_dir.parent}' does not "
            "exist; create it first or choose another folder"
        )
    return out_dir


def _create_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output folder '{out_dir}': {err.strerror}") from None


def _planned_outputs(
    files: list[Path], out_dir: Path, probabilities: bool, overwrite: bool
) -> list[tuple[Path, Path | None]]:
    """Output paths per input; refuses name clashes and existing files up front."""
    plans: list[tuple[Path, Path | None]] = []
    owner: dict[Path, Path] = {}
    existing: list[Path] = []
    for path in files:
        labels = labels_output_path(out_dir, path, LABELS_SUFFIX)
        probs = labels_output_path(out_dir, path, PROBABILITIES_SUFFIX) if probabilities else None
        for target in (labels, probs):
            if target is None:
                continue
            if target in owner:
                raise InputError(
                    f"'{owner[target].name}' and '{path.name}' would both be written to "
                    f"'{target}'; rename one of them or segment them separately"
                )
            owner[target] = path
            if target.exists() and not overwrite:
                existing.append(target)
        plans.append((labels, probs))
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise InputError(
            f"output '{existing[0]}'{more} already exists; pass --overwrite or choose another "
            "--out folder"
        )
    return plans


def _write_probabilities(
    path: Path, probs: np.ndarray, pixel_size_nm: float | None, overwrite: bool
) -> None:
    """float32 ImageJ TIFF, axes CYX (2D input) or ZCYX (stack), written atomically."""
    axes = "CYX" if probs.ndim == 3 else "ZCYX"
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {}
    if pixel_size_nm:
        metadata["unit"] = "nm"
        kwargs["resolution"] = (1.0 / pixel_size_nm, 1.0 / pixel_size_nm)
    data = np.ascontiguousarray(probs, dtype=np.float32)

    def write(fileobj: Any) -> None:
        tifffile.imwrite(fileobj, data, imagej=True, metadata=metadata,
                         photometric="minisblack", **kwargs)

    atomic_write(path, write, overwrite=overwrite)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def run(args: argparse.Namespace) -> int:
    """Segment every input; returns 0, or 2 if some files failed (others are written)."""
    files = list_images(args.inputs)
    if not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold} must be between 0 and 1")
    # Every check that can fail runs before the output folder is created or work starts.
    out_dir = _check_out_dir(args.out)
    plans = _planned_outputs(files, out_dir, args.probabilities, args.overwrite)
    model = load_model_arg(args.model)
    tiling = tiling_from_args(args, model)
    # One Segmenter for all files: the network is built and moved to the device once.
    segmenter = Segmenter(model, args.device)
    _create_out_dir(out_dir)
    echo(
        f"model {model.name} ({', '.join(model.class_names)}) on {segmenter.device}; "
        f"tile {tiling.tile}, overlap {tiling.overlap}, batch {tiling.batch_size}; "
        f"{len(files)} image(s) -> {out_dir}",
        err=True,
    )
    started = time.perf_counter()
    failed: list[Path] = []
    pixels = 0
    for path, (labels_path, probs_path) in zip(files, plans):
        bar = ProgressBar(path.name, unit="tiles")
        t0 = time.perf_counter()
        try:
            lazy = path.stat().st_size > LAZY_BYTES
            image = read_image(path, lazy=lazy)
            result = drain(
                segment(image.data, segmenter, tiling, threshold=args.threshold,
                        return_probabilities=args.probabilities),
                on_event=bar,
            )
            write_labels_tiff(
                labels_path, result.labels, pixel_size_nm=image.pixel_size_nm,
                class_names=result.class_names, overwrite=args.overwrite,
                z_size_nm=image.z_size_nm,
            )
            if probs_path is not None and result.probabilities is not None:
                _write_probabilities(
                    probs_path, result.probabilities, image.pixel_size_nm, args.overwrite
                )
        except (CryoSegError, OSError) as err:
            # One bad file must not stop a folder run; report it in one line and go on.
            bar.close()  # end the progress line before the error line
            failed.append(path)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            echo(f"cryoseg segment: skipped {path}: {reason}", err=True)
            continue
        finally:
            bar.close()
        foreground = int(np.count_nonzero(result.labels))
        pixels += int(np.prod(image.shape))
        extra = f", {probs_path.name}" if probs_path is not None else ""
        echo(
            f"{path} -> {labels_path}{extra} ({_shape_text(image.shape)}, "
            f"{foreground} px foreground, {time.perf_counter() - t0:.2f} s)"
        )
    elapsed = time.perf_counter() - started
    done = len(files) - len(failed)
    rate = pixels / 1e6 / elapsed if elapsed > 0 else 0.0
    echo(
        f"segmented {done} of {len(files)} image(s) in {format_duration(elapsed)} "
        f"({elapsed:.1f} s, {rate:.2f} MP/s) into {out_dir}"
    )
    if failed:
        echo(
            f"cryoseg segment: {len(failed)} image(s) failed: "
            + ", ".join(p.name for p in failed[:5])
            + (" ..." if len(failed) > 5 else ""),
            err=True,
        )
        return 2
    return 0

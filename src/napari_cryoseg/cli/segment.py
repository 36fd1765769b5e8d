"""``cryoseg segment``: segment TIFF/MRC/zarr images or folders; write label TIFFs or zarr.

Big inputs (zarr, or files above :data:`LAZY_BYTES`) are read lazily strip by strip; with
``--output-format zarr`` labels are written chunk by chunk into ``<stem>_labels.zarr``
(OME-Zarr), so neither image nor labels are ever held whole in memory. ``--scheduler``
runs the blocks on a dask.distributed cluster (``local:N`` or a scheduler address, e.g.
of a dask-jobqueue SLURM/PBS cluster).
"""

# Over 450 lines: one command's inputs (files, folders, stacks, zarr) and outputs, with the
# output rule and cleanup on interrupt that belong to it.

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_cryoseg.cli._args import int_range, path_text
from napari_cryoseg.cli._common import (
    MAX_TILE,
    ProgressBar,
    add_device_argument,
    add_tiling_arguments,
    add_trust_argument,
    add_tta_argument,
    echo,
    format_duration,
    load_model_arg,
    tiling_from_args,
)
from napari_cryoseg.cli._outputs import (
    LABELS_SUFFIX,
    PROBABILITIES_HEADER,
    PROBABILITIES_SUFFIX,
    ZARR_LABELS_SUFFIX,
    is_segment_output,
    list_segment_inputs,
)
from napari_cryoseg.cli._settings_flags import add_setting_flag
from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.errors import CryoSegError, InputError, OutputExistsError
from napari_cryoseg.core.tiling import TileGrid, padded_shape_for, plan_tiles
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, labels_dtype, segment
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.engine.training.memory import check_fits, inference_bytes
from napari_cryoseg.io import labels_output_path, read_image, write_labels_tiff
from napari_cryoseg.io.labels import usable_size_nm
from napari_cryoseg.io.zarr_io import is_zarr_path, read_zarr
from napari_cryoseg.io.zarr_labels import LabelsZarrWriter

__all__ = ["LABELS_SUFFIX", "PROBABILITIES_SUFFIX", "ZARR_LABELS_SUFFIX", "add_parser", "run"]

#: Files larger than this are read lazily (strip by strip) instead of loaded whole.
LAZY_BYTES = 512 * 2**20
#: Inputs larger than this (uncompressed) get zarr output unless --output-format says tif.
ZARR_OUTPUT_BYTES = 2 * 2**30
#: Block edge of a distributed task when --block is not given.
DEFAULT_BLOCK = 4096
#: ``local``, ``local:N``, or a scheduler address ``[scheme://]host:port``.
_SCHEDULER = re.compile(
    r"^(local(:\d{1,4})?|([a-z][a-z0-9+.-]*://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$"
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg segment``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment images (TIFF, MRC) and write label TIFFs",
        description="Segment TIFF/MRC images (files or folders) tile by tile and write "
        f"<stem>{LABELS_SUFFIX} label images (0 = background) into the output folder.",
    )
    parser.add_argument("inputs", nargs="+", type=path_text, metavar="INPUT",
                        help="image files (.tif, .tiff, .mrc, ...) or folders of them "
                        f"(earlier *{LABELS_SUFFIX} / *{PROBABILITIES_SUFFIX} outputs in "
                        "folders are skipped)")
    parser.add_argument("--model", default=None, type=path_text, metavar="MODEL",
                        help="napari-cryoseg model file (.pt); default: the bundled model")
    parser.add_argument("--out", required=True, type=path_text, metavar="DIR",
                        help="output folder (created if missing; its parent must exist)")
    add_tiling_arguments(parser)
    add_device_argument(parser)
    add_setting_flag(parser, SegmentSettings, "threshold", metavar="T")
    add_setting_flag(parser, SegmentSettings, "probabilities")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs of an earlier cryoseg run (never inputs, never "
                        "other files)")
    add_tta_argument(parser)
    add_trust_argument(parser)
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the network first (pays off for large jobs on a GPU: "
        "1.5x for the thesis preset on an H100; adds a minute of compilation)",
    )
    parser.add_argument("--output-format", choices=("tif", "zarr"), default=None,
                        help=f"labels as <stem>{LABELS_SUFFIX} or <stem>{ZARR_LABELS_SUFFIX} "
                        "(OME-Zarr, written chunk by chunk); default: zarr for zarr inputs "
                        "and images above 2 GiB, else tif")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on a dask.distributed cluster: local[:N] starts N local "
                        "workers (1 thread each), or a scheduler address such as "
                        "tcp://host:8786 (e.g. a dask-jobqueue SLURM/PBS cluster)")
    parser.add_argument("--dashboard", default=None, type=path_text, metavar="ADDRESS",
                        help="with --scheduler local[:N]: serve the dask dashboard at "
                        "ADDRESS (e.g. :8787) and print its link (default: off); a remote "
                        "scheduler serves its own dashboard, whose link is printed too")
    parser.add_argument("--block", type=int_range(256, MAX_TILE, what="a block edge"),
                        default=DEFAULT_BLOCK, metavar="N",
                        help="block edge in pixels per distributed task (default %(default)d)")
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
    files: list[Path], out_dir: Path, probabilities: bool, overwrite: bool,
    formats: list[str] | None = None,
) -> tuple[list[tuple[Path, Path | None]], set[Path]]:
    """Output paths per input and the existing outputs that may be replaced, checked up
    front (nothing is written if a check fails).

    Refuses two inputs with the same output, an output that is one of the inputs (even
    with ``--overwrite``: a segmentation never replaces its own input), an existing
    output without ``--overwrite``, and, with it, an existing file that an earlier
    ``cryoseg segment`` did not write (``--overwrite`` replaces earlier outputs only).
    """
    plans: list[tuple[Path, Path | None]] = []
    owner: dict[Path, Path] = {}
    existing: list[Path] = []
    inputs = {path.resolve(): path for path in files}
    for i, path in enumerate(files):
        suffix = ZARR_LABELS_SUFFIX if formats and formats[i] == "zarr" else LABELS_SUFFIX
        labels = labels_output_path(out_dir, path, suffix)
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
            if target.resolve() in inputs:
                raise InputError(
                    f"the output for '{path.name}' would replace the input "
                    f"'{inputs[target.resolve()]}'; choose another --out folder (inputs are "
                    "never overwritten, not even with --overwrite)"
                )
            if target.exists() or target.is_symlink():
                existing.append(target)
        plans.append((labels, probs))
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"output '{existing[0]}'{more} already exists; pass --overwrite to replace "
            "earlier outputs or choose another --out folder"
        )
    foreign = [target for target in existing if not is_segment_output(target)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise InputError(
            f"'{foreign[0]}'{more} exists and was not written by cryoseg segment; "
            "--overwrite only replaces earlier outputs. Move it away or choose another "
            "--out folder"
        )
    return plans, set(existing)


def _write_probabilities(
    path: Path, probs: np.ndarray, pixel_size_nm: float | None, overwrite: bool
) -> None:
    """float32 ImageJ TIFF, axes CYX (2D input) or ZCYX (stack), written atomically."""
    axes = "CYX" if probs.ndim == 3 else "ZCYX"
    # The header marks the file as an output: later runs skip it and may replace it.
    metadata: dict[str, Any] = {"axes": axes, "Info": PROBABILITIES_HEADER}
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


def _output_format(path: Path, requested: str | None) -> str:
    """``tif`` or ``zarr`` for one input (see ``--output-format``)."""
    if requested:
        return requested
    if is_zarr_path(path):
        return "zarr"
    try:
        return "zarr" if path.stat().st_size > ZARR_OUTPUT_BYTES else "tif"
    except OSError:
        return "tif"


def _segment_one(
    args: argparse.Namespace, path: Path, labels_path: Path, fmt: str, segmenter: Segmenter,
    tiling: Any, client: Any, bar: ProgressBar,
) -> tuple[Any, Any, Any]:
    """Segment one input and write its labels: (image, result or None, foreground px)."""
    lazy = is_zarr_path(path) or path.stat().st_size > LAZY_BYTES or client is not None
    image = _usable_sizes(read_image(path, lazy=lazy), path)
    meta = {"pixel_size_nm": image.pixel_size_nm, "overwrite": labels_path in args.replaceable}
    n_classes = segmenter.model.config.n_classes
    if client is None:
        _check_tile_memory(image.shape[-2:], segmenter, tiling)
    if client is not None:
        from napari_cryoseg.engine.inference.distributed import segment_distributed

        labels = segment_distributed(
            image.data, segmenter.model, tiling, client, block=args.block,
            threshold=args.threshold, device=args.device, torch_threads=1, tta=args.tta,
        )
        if fmt == "zarr":
            with LabelsZarrWriter(labels_path, image.shape, labels.dtype,
                                  chunks=labels.chunksize, z_size_nm=image.z_size_nm,
                                  class_names=segmenter.model.class_names, axes=image.axes,
                                  class_colors=segmenter.model.class_colors,
                                  **meta) as writer:
                labels.store(writer.array, lock=False)
                writer.commit()
            foreground = _count_foreground(labels_path)
        else:
            array = labels.compute()
            write_labels_tiff(labels_path, array, class_names=segmenter.model.class_names,
                              class_colors=segmenter.model.class_colors,
                              z_size_nm=image.z_size_nm, **meta)
            foreground = int(np.count_nonzero(array))
        return image, None, foreground
    if fmt == "zarr":
        with LabelsZarrWriter(labels_path, image.shape, labels_dtype(n_classes),
                              z_size_nm=image.z_size_nm, class_names=segmenter.model.class_names,
                              class_colors=segmenter.model.class_colors,
                              axes=image.axes, **meta) as writer:
            # The engine writes finished strips of tile rows straight into the zarr array.
            result = drain(
                segment(image.data, segmenter, tiling, threshold=args.threshold,
                        return_probabilities=args.probabilities, labels_out=writer.array),
                on_event=bar,
            )
            writer.commit()
        return image, result, _count_foreground(labels_path)
    result = drain(
        segment(image.data, segmenter, tiling, threshold=args.threshold,
                return_probabilities=args.probabilities),
        on_event=bar,
    )
    write_labels_tiff(
        labels_path, result.labels, class_names=result.class_names,
        class_colors=result.class_colors, z_size_nm=image.z_size_nm, **meta,
    )
    return image, result, int(np.count_nonzero(result.labels))


def _usable_sizes(image: Any, path: Path) -> Any:
    """``image`` with a pixel size / z spacing no file can hold (NaN, infinite, 1e-20 nm)
    dropped, with a note: the labels are still written, without that size."""
    px, dz = usable_size_nm(image.pixel_size_nm), usable_size_nm(image.z_size_nm)
    for what, raw, kept in (("pixel size", image.pixel_size_nm, px),
                            ("z spacing", image.z_size_nm, dz)):
        if raw is not None and kept is None:
            echo(f"note: {path.name}: its {what} {raw!r} nm is not usable; the labels are "
                 "written without it", err=True)
    if (px, dz) == (image.pixel_size_nm, image.z_size_nm):
        return image
    return dataclasses.replace(image, pixel_size_nm=px, z_size_nm=dz)


def _check_tile_memory(shape: tuple[int, ...], segmenter: Segmenter, tiling: Any) -> None:
    """Refuse a --tile/--batch-size whose batch of tiles would not fit in memory.

    Tiles shrink to the image (a 64x64 image with --tile 100000 takes one 64x64 tile), so
    the check uses the tiles this image really gets.
    """
    if getattr(segmenter.model, "foreign", False):
        return  # a bioimage.io model of another architecture: its library sizes its blocks
    config = segmenter.model.config
    tile_shape, overlap_px = plan_tiles(tuple(shape), tiling.tile, tiling.overlap,
                                        config.stride)
    grid = TileGrid(padded_shape_for(tuple(shape), config.stride), tile_shape, overlap_px,
                    config.stride)
    batch = min(tiling.batch_size, len(grid))
    need = inference_bytes(config, batch, tile_shape[0] * tile_shape[1])
    check_fits(need, segmenter.device,
               f"a batch of {batch} tiles of {tile_shape[0]}x{tile_shape[1]} pixels",
               "lower --batch-size or --tile")


def _check_scheduler(text: str | None) -> str | None:
    """``--scheduler`` must be ``local``, ``local:N`` or ``[scheme://]host:port``."""
    if text is None:
        return None
    text = text.strip()
    if not _SCHEDULER.match(text) or text == "local:0":
        raise InputError(
            f"--scheduler {text!r} is neither local, local:N (N >= 1 workers) nor a scheduler "
            "address such as tcp://host:8786"
        )
    return text


def _count_foreground(labels_path: Path) -> int:
    """Non-zero labels of a written zarr, counted chunk by chunk."""
    import dask.array as da

    return int(da.count_nonzero(read_zarr(labels_path)[0]).compute())


def run(args: argparse.Namespace) -> int:
    """Segment every input; returns 0, or 2 if some files failed (others are written)."""
    files, skipped = list_segment_inputs(args.inputs)
    # Every check that can fail runs before the output folder is created or work starts.
    out_dir = _check_out_dir(args.out)
    formats = [_output_format(path, getattr(args, "output_format", None)) for path in files]
    args.scheduler = _check_scheduler(getattr(args, "scheduler", None))
    args.block = getattr(args, "block", DEFAULT_BLOCK)
    if args.scheduler and args.probabilities:
        raise InputError("--probabilities is not available with --scheduler; drop one of them")
    plans, args.replaceable = _planned_outputs(files, out_dir, args.probabilities,
                                               args.overwrite, formats)
    model = load_model_arg(args.model, args.trust_code)
    tiling = tiling_from_args(args, model)
    # One Segmenter for all files: the network is built and moved to the device once.
    segmenter = Segmenter(model, args.device, compile=args.compile, tta=args.tta)
    client, cluster = _connect(args.scheduler, getattr(args, "dashboard", None))  # last check
    try:
        _create_out_dir(out_dir)
    except InputError:
        _close(client, cluster)
        raise
    if skipped:
        echo(f"note: skipped {len(skipped)} earlier cryoseg output(s) in the input folder(s) "
             f"(e.g. {skipped[0].name}); they are results, not images to segment", err=True)
    echo(
        f"model {model.name} ({', '.join(model.class_names)}) on {segmenter.device}; "
        f"tile {tiling.tile}, overlap {tiling.overlap}, batch {tiling.batch_size}; "
        f"{len(files)} image(s) -> {out_dir}",
        err=True,
    )
    if client is not None:
        echo(f"dask scheduler {client.scheduler.address}, block {args.block} px", err=True)
        if getattr(args, "dashboard", None) or cluster is None:
            echo(f"dask dashboard: {client.dashboard_link}", err=True)
    started = time.perf_counter()
    failed: list[Path] = []
    pixels = 0
    try:
        return _run_files(args, files, plans, formats, segmenter, tiling, client, out_dir,
                          started, failed, pixels)
    finally:
        _close(client, cluster)


def _connect(scheduler: str | None, dashboard: str | None = None) -> tuple[Any, Any]:
    """``(client, cluster)`` for ``--scheduler`` (both None without it)."""
    if not scheduler:
        return None, None
    from napari_cryoseg.engine.inference.distributed import make_client

    try:
        return make_client(scheduler, dashboard)
    except CryoSegError:
        raise
    except (ValueError, TypeError) as err:  # an address dask cannot parse
        raise InputError(f"--scheduler {scheduler!r}: {err}; give local, local:N or an "
                         "address such as tcp://host:8786") from None


def _close(client: Any, cluster: Any) -> None:
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def _run_files(
    args: argparse.Namespace, files: list[Path], plans: list, formats: list[str],
    segmenter: Segmenter, tiling: Any, client: Any, out_dir: Path, started: float,
    failed: list[Path], pixels: int,
) -> int:
    """The per-file loop of :func:`run`."""
    for path, (labels_path, probs_path), fmt in zip(files, plans, formats):
        bar = ProgressBar(path.name, unit="tiles")
        t0 = time.perf_counter()
        try:
            image, result, foreground = _segment_one(
                args, path, labels_path, fmt, segmenter, tiling, client, bar
            )
            if probs_path is not None and result is not None and result.probabilities is not None:
                _write_probabilities(
                    probs_path, result.probabilities, image.pixel_size_nm,
                    probs_path in args.replaceable,
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

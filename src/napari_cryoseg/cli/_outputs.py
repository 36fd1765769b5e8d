"""Recognising the files ``cryoseg segment`` writes, so they are never taken for inputs
and ``--overwrite`` only ever replaces them.

An output is recognised by its name *and* its metadata: a label TIFF carries the
``napari-cryoseg labels`` header in its ImageJ ``Info`` property, a probabilities TIFF
``napari-cryoseg probabilities``, a labels zarr the ``cryoseg`` attribute with
``kind: labels``. A user's own ``cell_labels.tif`` (hand-drawn ground truth, say) has
none of these, so it is treated as an image and never replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import tifffile

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io import list_images

__all__ = [
    "LABELS_SUFFIX",
    "PROBABILITIES_HEADER",
    "PROBABILITIES_SUFFIX",
    "ZARR_LABELS_SUFFIX",
    "is_segment_output",
    "list_segment_inputs",
]

LABELS_SUFFIX = "_labels.tif"
ZARR_LABELS_SUFFIX = "_labels.zarr"
PROBABILITIES_SUFFIX = "_probabilities.tif"
#: First line of the ImageJ ``Info`` of files written by ``cryoseg segment``.
LABELS_HEADER = "napari-cryoseg labels"  # written by io.labels.write_labels_tiff
PROBABILITIES_HEADER = "napari-cryoseg probabilities"


def _tiff_is_output(path: Path) -> bool:
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata or {}
            series = tif.series[0] if tif.series else None
            axes = series.axes if series is not None else ""
            dtype = series.dtype if series is not None else None
    except Exception:  # noqa: BLE001 - unreadable: not ours; reading it reports why
        return False
    info = meta.get("Info")
    if isinstance(info, str) and info.startswith((LABELS_HEADER, PROBABILITIES_HEADER)):
        return True
    # Probabilities written before they carried the header: float32 ImageJ CYX / ZCYX.
    return (path.name.lower().endswith(PROBABILITIES_SUFFIX) and bool(meta)
            and axes in ("CYX", "ZCYX") and str(dtype) == "float32")


def _zarr_is_output(path: Path) -> bool:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attrs = data.get(key, {}) if key and isinstance(data, dict) else data
        info = attrs.get("cryoseg") if isinstance(attrs, dict) else None
        if isinstance(info, dict) and info.get("kind") == "labels":
            return True
    return False


def is_segment_output(path: str | os.PathLike[str]) -> bool:
    """True for a ``*_labels.tif``, ``*_probabilities.tif`` or ``*_labels.zarr`` that
    ``cryoseg segment`` (or the napari plugin) wrote, judged by its metadata."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(ZARR_LABELS_SUFFIX):
        return path.is_dir() and _zarr_is_output(path)
    if name.endswith((LABELS_SUFFIX, PROBABILITIES_SUFFIX, "_labels.tiff")):
        return path.is_file() and _tiff_is_output(path)
    return False


def list_segment_inputs(
    inputs: Sequence[str | os.PathLike[str]],
) -> tuple[list[Path], list[Path]]:
    """Images to segment, and earlier outputs skipped inside the given folders.

    Files named explicitly are always kept (the user asked for them); in folders, files
    recognised by :func:`is_segment_output` are skipped: segmenting a label image as if
    it were EM data gives nonsense and, worse, a second run would then write
    ``<stem>_labels_labels.tif`` next to them.

    Raises
    ------
    InputError
        A path does not exist, or a folder holds no images (only earlier outputs).
    """
    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item).expanduser()
        found = list_images([path])
        if path.is_dir() and found != [path]:
            kept = [f for f in found if not is_segment_output(f)]
            skipped += [f for f in found if f not in kept]
            if not kept:
                raise InputError(
                    f"folder {path} holds only earlier cryoseg outputs ({len(found)} "
                    "*_labels/*_probabilities files), no images to segment; give the folder "
                    "of the images"
                )
            found = kept
        for f in found:
            if f not in seen:
                seen.add(f)
                files.append(f)
    return files, skipped

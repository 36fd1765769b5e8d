"""napari reader for MRC files (.mrc, .mrcs, .map, .st) with the voxel size as layer scale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_cryoseg.io.images import MRC_SUFFIXES, read_image

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_mrc_layers` when every path is an MRC file, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).lower().endswith(MRC_SUFFIXES) for p in paths):
        return None
    return read_mrc_layers


def read_mrc_layers(path: str | list[str]) -> list[LayerData]:
    """One image layer per file; scale = voxel size in nm (1 where unknown)."""
    paths = [path] if isinstance(path, str) else list(path)
    return [_layer(Path(p)) for p in paths]


def _layer(path: Path) -> LayerData:
    image = read_image(path, lazy=True)
    px = image.pixel_size_nm
    scale: tuple[float, ...] = (px, px) if px else (1.0, 1.0)
    axis_labels: tuple[str, ...] = ("y", "x")
    if image.data.ndim == 3:
        if image.axes == "ZYX":
            scale = (image.z_size_nm or (px or 1.0), *scale)
            axis_labels = ("z", "y", "x")
        else:
            scale = (1.0, *scale)
            axis_labels = ("t", "y", "x")
    meta = {
        "name": path.stem,
        "scale": scale,
        "axis_labels": axis_labels,
        "metadata": {"axes": image.axes, "pixel_size_nm": px, "path": str(path)},
    }
    if px:
        lead = ("pixel",) if image.axes == "TYX" else ("nm",) * (len(scale) - 2)
        meta["units"] = (*lead, "nm", "nm")
    return image.data, meta, "image"

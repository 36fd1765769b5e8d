"""napari reader for napari-cryoseg's own labels: ``*_labels.tif`` and ``*_labels.zarr``.

They open as **Labels** layers with the class names (layer ``features`` and
``metadata["cryoseg"]``), the class colours (a ``DirectLabelColormap``, background
transparent), the pixel size as ``scale`` and ``nm`` as ``units``. The reader claims a
file only when its metadata says napari-cryoseg wrote it (the ``Info`` header of the
TIFF, the ``cryoseg`` attribute of the zarr); for anything else :func:`get_labels_reader`
returns None and napari's own readers open it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_cryoseg.io.checks import TIFF_SUFFIXES

LayerData = tuple[Any, dict[str, Any], str]
META_KEY = "cryoseg"  # same key as napari_cryoseg.viewer.layers.META_KEY (no napari import here)


def _is_ours(path: str) -> bool:
    p = Path(path)
    if p.suffix.lower() in TIFF_SUFFIXES and p.is_file():
        from napari_cryoseg.io.labels import is_cryoseg_labels_tiff

        return is_cryoseg_labels_tiff(p)
    if p.is_dir():
        from napari_cryoseg.io.zarr_labels import cryoseg_labels_attrs

        return cryoseg_labels_attrs(p) is not None
    return False


def get_labels_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_labels_layers` when every path is a napari-cryoseg labels file."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_is_ours(str(p)) for p in paths):
        return None
    return read_labels_layers


def read_labels_layers(path: str | list[str]) -> list[LayerData]:
    """One Labels layer per file, with class names, colours, scale and units."""
    paths = [path] if isinstance(path, str) else list(path)
    return [_layer(Path(p)) for p in paths]


def _colormap(class_colors: list[str]) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    color_dict.update({value: color for value, color in enumerate(class_colors) if value})
    return DirectLabelColormap(color_dict=color_dict)


def _layer(path: Path) -> LayerData:
    if path.is_dir():
        from napari_cryoseg.io.zarr_labels import read_labels_zarr

        stored = read_labels_zarr(path)
        levels = stored.levels
        data: Any = levels if len(levels) > 1 else levels[0]
        names, colors = stored.class_names, stored.class_colors
        px, z_nm, axes = stored.pixel_size_nm, stored.z_size_nm, stored.axes
        ndim = levels[0].ndim
    else:
        from napari_cryoseg.io.labels import (
            read_labels_class_colors,
            read_labels_class_names,
            read_labels_tiff,
        )
        from napari_cryoseg.io.tiff import read_tiff

        data, px = read_labels_tiff(path)
        z_nm, axes = read_tiff(path, lazy=True)[2:]
        names = read_labels_class_names(path) or []
        colors = read_labels_class_colors(path) or []
        ndim = data.ndim
    if not colors:
        from napari_cryoseg.core.palette import class_colors_for

        colors = class_colors_for(len(names))
    scale = [px or 1.0] * 2
    if ndim == 3:
        scale = [(z_nm or px or 1.0) if axes == "ZYX" else 1.0, *scale]
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    kwargs: dict[str, Any] = {
        "name": stem,
        "scale": tuple(scale),
        "colormap": _colormap(colors),
        "features": {"index": list(range(len(names))), "class": list(names)},
        "opacity": 0.6,
        "metadata": {META_KEY: {"class_names": list(names), "class_colors": list(colors),
                                "pixel_size_nm": px, "path": str(path)}},
    }
    if px:
        lead = ("pixel",) if (ndim == 3 and axes != "ZYX") else ("nm",) * (ndim - 2)
        kwargs["units"] = (*lead, "nm", "nm")
    return data, kwargs, "labels"

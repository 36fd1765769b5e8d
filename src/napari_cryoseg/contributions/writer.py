"""napari writer: a Labels layer -> ImageJ TIFF with pixel size, class names and colours."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from napari_cryoseg.io.labels import write_labels_tiff


def _hex(rgba: Any) -> str | None:
    """``#rrggbb`` of a napari colour (RGBA floats 0-1), None if it is not one."""
    try:
        values = [float(v) for v in np.asarray(rgba, dtype=float).ravel()[:3]]
    except (TypeError, ValueError):
        return None
    if len(values) != 3:
        return None
    return "#" + "".join(f"{round(min(max(v, 0.0), 1.0) * 255):02x}" for v in values)


def _class_colors(attributes: dict[str, Any], n_classes: int) -> list[str] | None:
    """The layer's colour per class: from CryoSeg metadata, else from its colormap."""
    meta = (attributes.get("metadata") or {}).get("cryoseg", {})
    colors = meta.get("class_colors")
    if colors and len(colors) == n_classes:
        return [str(c) for c in colors]
    colormap = attributes.get("colormap")
    color_dict = getattr(colormap, "color_dict", None)
    if not color_dict or not n_classes:
        return None
    out = ["#000000"]
    for value in range(1, n_classes):
        color = _hex(color_dict[value]) if value in color_dict else None
        if color is None:
            return None
        out.append(color)
    return out


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Single-layer writer (File > Save Selected Layer(s) with a .tif/.tiff name).

    napari's save dialog already asked before replacing an existing file, so this
    writer replaces it; the dock's Export never overwrites.
    """
    scale = attributes.get("scale") or ()
    units = attributes.get("units") or ()
    px = float(scale[-1]) if scale and float(scale[-1]) != 1.0 else None
    if px is not None and units and str(units[-1]) not in {"nm", "nanometer", "pixel"}:
        with contextlib.suppress(Exception):  # keep the number if the unit is not a length
            px = float((px * units[-1]).to("nm").magnitude)
    meta = (attributes.get("metadata") or {}).get("cryoseg", {})
    names = meta.get("class_names")
    if not names:  # e.g. a layer whose metadata was dropped: the features still name classes
        features = attributes.get("features")
        with contextlib.suppress(Exception):
            names = [str(n) for n in features["class"]] if features is not None else None
    names = list(names) if names else None
    labels = np.asarray(data[0] if isinstance(data, list) else data)
    z = float(scale[0]) if labels.ndim == 3 and scale and float(scale[0]) != 1.0 else None
    written = write_labels_tiff(
        path, labels, pixel_size_nm=px, class_names=names, overwrite=True, z_size_nm=z,
        class_colors=_class_colors(attributes, len(names)) if names else None,
    )
    return [str(written)]

"""napari writer: a Labels layer -> ImageJ TIFF with pixel size and class names."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from napari_cryoseg.io.labels import write_labels_tiff


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
    labels = np.asarray(data)
    z = float(scale[0]) if labels.ndim == 3 and scale and float(scale[0]) != 1.0 else None
    written = write_labels_tiff(
        path, labels, pixel_size_nm=px, class_names=list(names) if names else None,
        overwrite=True, z_size_nm=z,
    )
    return [str(written)]

"""The live preview while a model trains: which region to predict, and its one layer.

napari glue (no Qt). :func:`preview_region` takes the part of an image the canvas shows
when training starts (at least :data:`MIN_EDGE` pixels, downsampled by block means when
it is larger than the preview edge) on the main thread; the training worker predicts
it now and then with the weights of the moment, and :class:`LivePreview` shows each
prediction in one labels layer, replacing its data (never a new layer per update), and
removes the layer when the run ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.engine.training.preview import PreviewRequest
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.camera import view_region
from napari_cryoseg.viewer.session import unwrap

#: Key of the preview entry in the preview layer's ``metadata``.
PREVIEW_KEY = "cryoseg-preview"
#: A view smaller than this (zoomed far in) is widened around its centre.
MIN_EDGE = 64


@dataclass(frozen=True)
class PreviewRegion:
    """A 2D region of an image to predict while training, and where it lies.

    Attributes
    ----------
    pixels : numpy.ndarray
        The region's pixels (downsampled by ``factor``), float32.
    box : tuple of int
        ``(y0, y1, x0, x1)`` in the image's data pixels.
    factor : int
        Downsampling factor (1 = full resolution).
    scale, translate : tuple of float
        Geometry of the preview layer in world coordinates (last two axes).
    source : str
        Name of the image layer.
    units : tuple of str or None
        The image layer's units of the last two axes.
    """

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    factor: int
    scale: tuple[float, float]
    translate: tuple[float, float]
    source: str
    units: tuple[str, ...] | None = None

    def request(self, every_s: float) -> PreviewRequest:
        """The engine's request for this region."""
        return PreviewRequest(self.pixels, every_s=every_s)


def _widen(lo: int, hi: int, size: int, edge: int) -> tuple[int, int]:
    """``[lo, hi)`` widened around its centre to ``min(edge, size)`` pixels."""
    want = min(edge, size)
    if hi - lo >= want:
        return lo, hi
    lo = max(0, min((lo + hi) // 2 - want // 2, size - want))
    return lo, lo + want


def block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (edge rows/columns that do not fill a block
    are dropped)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if factor <= 1:
        return pixels
    h, w = (max(n // factor, 1) * factor for n in pixels.shape)
    pixels = pixels[:h, :w]
    if pixels.shape[0] < factor or pixels.shape[1] < factor:  # thinner than a block
        return pixels[::factor, ::factor]
    return pixels.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def preview_region(viewer: Any, image_layer: Any, max_edge: int) -> PreviewRegion:
    """The part of ``image_layer`` in view (current plane), at most ``max_edge`` px."""
    image_layer = unwrap(image_layer)
    data, scale, translate, _axes = L.image_layer_data(image_layer)
    region = view_region(viewer, image_layer)
    plane = tuple(s.start for s in region[:-2])
    rows, cols = region[-2:]
    height, width = data.shape[-2:]
    y0, y1 = (0, height) if rows.stop <= rows.start else (rows.start, rows.stop)
    x0, x1 = (0, width) if cols.stop <= cols.start else (cols.start, cols.stop)
    y0, y1 = _widen(y0, y1, height, MIN_EDGE)
    x0, x1 = _widen(x0, x1, width, MIN_EDGE)
    factor = max(1, math.ceil(max(y1 - y0, x1 - x0) / max_edge))
    pixels = block_mean(np.asarray(data[(*plane, slice(y0, y1), slice(x0, x1))]), factor)
    sy, sx = scale[-2:]
    # a block's centre is (factor - 1) / 2 data pixels after its first pixel's centre
    offset = (factor - 1) / 2
    units = L.layer_units(image_layer)
    return PreviewRegion(
        pixels, (y0, y1, x0, x1), factor, (sy * factor, sx * factor),
        (translate[-2] + (y0 + offset) * sy, translate[-1] + (x0 + offset) * sx),
        str(image_layer.name), units[-2:] if units else None)


class LivePreview:
    """The preview layer of one training run (see the module docstring).

    Parameters
    ----------
    viewer
        The napari viewer.
    region : PreviewRegion
        What is predicted.
    class_names, class_colors : list of str
        The classes of the model being trained (class 0 is shown transparent).
    what : str
        ``"training"`` or ``"fine-tuning"``: part of the layer's name.
    """

    def __init__(self, viewer: Any, region: PreviewRegion, class_names: list[str],
                 class_colors: list[str], what: str = "training") -> None:
        self.viewer = unwrap(viewer)
        self.region = region
        self.class_names = list(class_names)
        self.class_colors = list(class_colors)
        self.name = f"{region.source} preview ({what})"
        self.layer: Any = None
        self.updates = 0
        self.last_step = 0

    def _alive(self) -> bool:
        return self.layer is not None and any(unwrap(lyr) is self.layer
                                              for lyr in self.viewer.layers)

    def show(self, labels: np.ndarray, step: int, final: bool = False) -> Any:
        """Show the prediction made at ``step``; the same layer every time.

        A ``final`` preview with no layer yet (a run shorter than one preview interval)
        is not shown: the layer would be removed as the run ends, and adding then removing
        a napari layer held the main thread ~1.3 s (0.6 s building the vispy visual, 0.7 s
        removing it; ``tests/widgets/test_finetune_panel.py`` heartbeat, 2-core CPU).
        Returns the layer, or None when nothing was shown.
        """
        labels = np.asarray(labels)
        if final and not self._alive():
            return None
        if self._alive():
            self.layer.data = labels
        else:  # the first update (or the user deleted the layer: it comes back)
            units = self.region.units
            self.layer = unwrap(self.viewer.add_labels(
                labels, name=self.name, scale=self.region.scale,
                translate=self.region.translate, opacity=0.7,
                colormap=L.class_colormap(self.class_names, self.class_colors),
                features={"index": list(range(len(self.class_names))),
                          "class": self.class_names},
                metadata={PREVIEW_KEY: {"source": self.region.source}},
                **({"units": units} if units else {})))
        self.updates += 1
        self.last_step = int(step)
        return self.layer

    def remove(self) -> None:
        """Remove the preview layer (the run has ended)."""
        if self._alive():
            self.viewer.layers.remove(self.layer)
        self.layer = None

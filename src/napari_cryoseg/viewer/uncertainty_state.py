"""What the Uncertainty section knows and does: maps per image layer, the next tile.

napari glue, no Qt. One :class:`UncertaintyMaps` per session (``session.extensions
["uncertainty"]``, get it with :meth:`UncertaintyMaps.for_session`). It builds the
arguments of :func:`~napari_cryoseg.engine.inference.uncertainty.tta_uncertainty` for an image
layer (the dock's job runner runs it), keeps the map it returns for that layer and shows
it as ``"<image> uncertainty"``, and answers which tile to look at next: the most
uncertain one that is not yet corrected or reviewed. Maps belong to the model that made
them: :meth:`UncertaintyMaps.clear` forgets them when the model changes.

Layers are keyed by the object behind napari's proxies (:func:`~napari_cryoseg.viewer.
session.unwrap`), and the layer is stored with its map, so a new layer that happens to
get a closed layer's ``id`` never inherits its map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.corrections import changed_mask
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.inference.uncertainty import most_uncertain_tile
from napari_cryoseg.viewer import camera
from napari_cryoseg.viewer.layers import ensure_model, layer_units
from napari_cryoseg.viewer.session import Session, same_layer, unwrap

EXTENSION_KEY = "uncertainty"
UNCERTAINTY_SUFFIX = " uncertainty"


@dataclass(frozen=True)
class UncertaintyJob:
    """The arguments of one ``tta_uncertainty`` run (``args`` and ``kwargs``)."""

    image_layer: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def desc(self) -> str:
        return f"Uncertainty of {self.image_layer.name}"


@dataclass(frozen=True)
class Tile:
    """The tile to look at next: top-left ``(y, x)`` and ``size`` (rows, columns)."""

    y: int
    x: int
    size: tuple[int, int]

    def describe(self) -> str:
        return (f"most uncertain tile: rows {self.y}-{self.y + self.size[0]}, "
                f"cols {self.x}-{self.x + self.size[1]}")


class UncertaintyMaps:
    """Uncertainty maps of a session's image layers (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._maps: dict[int, tuple[Any, np.ndarray]] = {}  # id(layer) -> (layer, map)

    @classmethod
    def for_session(cls, session: Session) -> UncertaintyMaps:
        """The session's maps (created on first use, kept in ``session.extensions``)."""
        maps = session.extensions.get(EXTENSION_KEY)
        if maps is None:
            maps = cls(session)
            session.extensions[EXTENSION_KEY] = maps
            session.on_model_changed(lambda _model: maps.clear())
        return maps

    @property
    def viewer(self) -> Any:
        return self.session.viewer

    # --- maps --------------------------------------------------------------------------
    @property
    def has_maps(self) -> bool:
        """True when an image in the viewer has a map."""
        return bool(self._live())

    def clear(self) -> None:
        """Forget every map (they belong to the model that made them)."""
        self._maps.clear()

    def _live(self) -> dict[int, tuple[Any, np.ndarray]]:
        """The maps of layers still in the viewer (others are dropped)."""
        self._maps = {key: entry for key, entry in self._maps.items()
                      if self.session.has_layer(entry[0])}
        return self._maps

    def map_of(self, image_layer: Any) -> np.ndarray | None:
        """The map of ``image_layer`` (through proxies), or None."""
        entry = self._live().get(id(unwrap(image_layer)))
        return entry[1] if entry is not None and same_layer(entry[0], image_layer) else None

    def image_layer(self) -> Any:
        """The image the section acts on: the selected image, the image of the selected
        CryoSeg labels layer, else the only segmented image."""
        active = self.viewer.layers.selection.active
        records = self.session.live_records()
        for record in records:
            if same_layer(active, record.labels_layer) or same_layer(active, record.image_layer):
                return record.image_layer
        if active is not None and type(unwrap(active)).__name__ == "Image":
            return unwrap(active)
        return records[-1].image_layer if len(records) == 1 else None

    # --- the job -----------------------------------------------------------------------
    def job(self, image_layer: Any = None) -> UncertaintyJob:
        """The arguments to compute the map of ``image_layer`` (default: :meth:`image_layer`)
        with the session's model, tiling and device (the model loads on first use)."""
        image_layer = unwrap(image_layer) if image_layer is not None else self.image_layer()
        if image_layer is None:
            raise InputError("select an image (or its CryoSeg labels layer) first")
        model = ensure_model(self.session)
        return UncertaintyJob(
            image_layer, (np.asarray(image_layer.data), model),
            {"tiling": self.session.settings.segment.tiling, "device": self.session.device})

    def receive(self, image_layer: Any, result: np.ndarray) -> Any:
        """Keep ``result`` as the map of ``image_layer`` and show it; the map layer.

        Raises :class:`InputError` when the image was closed while the job ran.
        """
        image_layer = unwrap(image_layer)
        if not self.session.has_layer(image_layer):
            raise InputError("the image layer was closed; uncertainty discarded")
        result = np.asarray(result)
        self._maps[id(image_layer)] = (image_layer, result)
        name = f"{image_layer.name}{UNCERTAINTY_SUFFIX}"
        for layer in self.viewer.layers:
            if layer.name == name and np.shape(layer.data) == result.shape:
                layer.data = result
                return layer
        units = layer_units(image_layer)
        return self.viewer.add_image(
            result, name=name, colormap="magma", blending="additive", opacity=0.6,
            contrast_limits=(0.0, 1.0), scale=image_layer.scale,
            translate=image_layer.translate, **({"units": units} if units else {}))

    # --- the next tile -----------------------------------------------------------------
    def _target(self) -> Any:
        image_layer = self.image_layer()
        live = self._live()
        if self.map_of(image_layer) is None and len(live) == 1:
            image_layer = next(iter(live.values()))[0]  # the only image with a map
        if image_layer is None or self.map_of(image_layer) is None:
            raise InputError("compute the uncertainty of this image first")
        return image_layer

    def next_tile(self, image_layer: Any = None) -> tuple[Any, Tile]:
        """(image layer, most uncertain tile of the plane in view) among pixels not yet
        corrected or reviewed; the tile edge is the loop settings' ``uncertain_tile``."""
        image_layer = self._target() if image_layer is None else unwrap(image_layer)
        umap = self.map_of(image_layer)
        if umap is None:
            raise InputError("compute the uncertainty of this image first")
        exclude = self.checked_mask(image_layer)
        plane = camera.current_plane(self.viewer, image_layer)
        umap_plane = umap[plane] if plane else umap
        exclude_plane = exclude[plane] if (exclude is not None and plane) else exclude
        edge = self.session.settings.loop.uncertain_tile
        size = (min(edge, umap_plane.shape[0]), min(edge, umap_plane.shape[1]))
        y, x = most_uncertain_tile(umap_plane, size, exclude_plane)
        return image_layer, Tile(y, x, size)

    def checked_mask(self, image_layer: Any) -> np.ndarray | None:
        """Pixels of ``image_layer``'s segmentation the user corrected or reviewed."""
        record = self.session.record_for_image(image_layer)
        if record is None:
            return None
        mask = changed_mask(record.predicted, np.asarray(record.labels_layer.data))
        return mask | record.reviewed if record.reviewed is not None else mask

    def go_to_next_tile(self) -> Tile:
        """Centre the view on :meth:`next_tile` and select the image's labels layer."""
        image_layer, tile = self.next_tile()
        camera.show_box(self.viewer, image_layer, (tile.y, tile.x), tile.size)
        record = self.session.record_for_image(image_layer)
        if record is not None:
            self.viewer.layers.selection.active = record.labels_layer
        return tile

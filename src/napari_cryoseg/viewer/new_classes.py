"""Label values painted on CryoSeg labels layers that the model has no class for.

napari glue (no Qt). The classes of a CryoSeg labels layer are its model's class
indices ``0 .. n_classes - 1``; a user who paints another value (napari's label
spinner set to 5 on a four-class result) means a new class. :func:`find_new_labels`
lists those values, :func:`show_new_labels` gives them the colour their class will get
(a value the layer's colormap does not know would be painted invisibly), and after
fine-tuning a model grown with :func:`~napari_cryoseg.model.heads.add_classes`,
:func:`adopt_classes` writes the new class indices into the layers (one undoable step;
only where they differ from the painted values) and their names and colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.palette import class_colors_for
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.session import Session


@dataclass(frozen=True)
class NewLabel:
    """A painted label value the model has no class for.

    Attributes
    ----------
    value : int
        The painted value.
    index : int
        The class index it gets when added (the model's classes come first).
    color : str
        The colour its class gets (shown at once on the layers).
    pixels : int
        Painted pixels with this value, over all CryoSeg labels layers.
    layers : tuple of str
        Names of the layers where it is painted.
    """

    value: int
    index: int
    color: str
    pixels: int
    layers: tuple[str, ...]

    @property
    def default_name(self) -> str:
        return f"class {self.value}"


def find_new_labels(session: Session) -> list[NewLabel]:
    """Values >= the model's class count painted on the session's CryoSeg layers."""
    model = session.model
    if model is None or getattr(model, "foreign", False):
        return []
    n_classes = model.config.n_classes
    found: dict[int, tuple[int, list[str]]] = {}
    for record in session.live_records():
        data = np.asarray(record.labels_layer.data)
        if data.size == 0 or int(data.max()) < n_classes:
            continue
        values, counts = np.unique(data[data >= n_classes], return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            pixels, layers = found.get(int(value), (0, []))
            found[int(value)] = (pixels + int(count), [*layers, record.labels_layer.name])
    colors = class_colors_for(n_classes + len(found))
    return [NewLabel(value, n_classes + i, colors[n_classes + i], pixels, tuple(layers))
            for i, (value, (pixels, layers)) in enumerate(sorted(found.items()))]


def _names_and_colors(record: Any, model: Any) -> tuple[list[str], list[str]]:
    names = record.extra.get("class_names") or list(model.class_names)
    colors = record.extra.get("class_colors") or list(model.class_colors)
    return list(names), list(colors)


def show_new_labels(session: Session, new_labels: list[NewLabel]) -> int:
    """Colour the new values on the layers where they are painted; returns how many
    layers changed colormap."""
    from napari.utils.colormaps import DirectLabelColormap

    model = session.model
    if model is None or not new_labels:
        return 0
    n_classes = model.config.n_classes
    changed = 0
    for record in session.live_records():
        layer = record.labels_layer
        data = np.asarray(layer.data)
        if data.size == 0 or int(data.max()) < n_classes:
            continue
        painted = set(np.unique(data[data >= n_classes]).tolist())
        wanted = {label.value: label.color for label in new_labels if label.value in painted}
        if not wanted or record.extra.get("new_label_colors") == wanted:
            continue
        names, colors = _names_and_colors(record, model)
        color_dict: dict[Any, str] = {None: "transparent", 0: "transparent"}
        color_dict.update({i: c for i, c in enumerate(colors) if i})
        color_dict.update(wanted)
        layer.colormap = DirectLabelColormap(color_dict=color_dict)
        record.extra["new_label_colors"] = wanted
        changed += 1
    return changed


def adopt_classes(session: Session, model: Any, value_to_index: dict[int, int]) -> int:
    """Give the session's CryoSeg layers the classes of ``model`` (grown by new ones).

    Painted values become their class index where they differ (one undoable step per
    layer); every layer gets the model's class names and colours. Returns the number of
    relabelled pixels.
    """
    moved = {v: i for v, i in value_to_index.items() if v != i}
    relabelled = 0
    names, colors = list(model.class_names), list(model.class_colors)
    for record in session.live_records():
        layer = record.labels_layer
        if moved:
            data = np.asarray(layer.data)
            new = data.copy()
            for value, index in moved.items():
                new[data == value] = index
            relabelled += L.update_labels_undoable(layer, new)
        layer.colormap = L.class_colormap(names, colors)
        layer.features = {"index": list(range(len(names))), "class": names}
        meta = dict(layer.metadata.get(L.META_KEY, {}))
        layer.metadata = {**layer.metadata, L.META_KEY: {**meta, "class_names": names}}
        record.extra.update(class_names=names, class_colors=colors)
        record.extra.pop("new_label_colors", None)
    return relabelled

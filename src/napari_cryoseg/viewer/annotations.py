"""Annotations for a new model: one labels layer of painted strokes per image.

napari model glue (no Qt). An :class:`AnnotationStore` lives in
``session.extensions["annotations"]`` (get it with :meth:`AnnotationStore.for_session`).
It holds the :class:`~napari_cryoseg.viewer.class_editor.ClassEditor` (names, colours,
label values), adds an annotation layer ``"<image> annotations"`` for an image layer,
keeps the layers' ``features`` and colours in step with the classes, and takes the
copies a training worker needs (:meth:`AnnotationStore.snapshot`), refusing bad input
with one line each.

Only painted pixels count: label 0 is "not painted" (unknown), not background, so
background is a class the user paints too. The annotation layers are never written by
CryoSeg; training works on copies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.class_editor import ClassEditor
from napari_cryoseg.viewer.session import Session, same_layer, unwrap

#: Key of the annotation entry in a labels layer's ``metadata``.
ANNOTATION_KEY = "cryoseg-annotations"
ANNOTATIONS_SUFFIX = " annotations"
EXTENSION_KEY = "annotations"


@dataclass
class Annotations:
    """Copies of painted strokes for the training worker (2D planes).

    Attributes
    ----------
    images, masks, valid_masks : list of numpy.ndarray
        Image planes, their painted label values (0 = not painted) and the painted
        pixels (bool), for :func:`~napari_cryoseg.engine.training.train.train`.
    names : list of str
        Image layer name of each plane (``"<name> [z]"`` for a plane of a stack).
    mapping : ClassMapping
        Painted values -> model classes (background is class 0).
    class_colors : list of str
        Colours in model order.
    painted : dict
        Class name -> painted pixels.
    image_layers : list
        The annotated image layers (for the main thread only).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    valid_masks: list[np.ndarray]
    names: list[str]
    mapping: ClassMapping
    class_colors: list[str]
    painted: dict[str, int]
    image_layers: list[Any]

    @property
    def largest_edge(self) -> int:
        return max(max(np.shape(image)[-2:]) for image in self.images)

    def provenance(self) -> dict[str, Any]:
        """What the model file records about the annotations it was trained on."""
        return {"trained_in": "napari-cryoseg dock",
                "annotations": {"images": sorted({layer.name for layer in self.image_layers}),
                                "planes": len(self.images),
                                "painted_pixels": dict(self.painted),
                                "class_values": {name: int(value) for name, value in zip(
                                    self.mapping.names[1:], self.mapping.values)}}}


class AnnotationStore:
    """The classes and annotation layers of one session (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.classes = ClassEditor()
        self._links: list[tuple[Any, Any]] = []  # (image layer, annotation layer)
        self.classes.on_change(self.restyle)

    @classmethod
    def for_session(cls, session: Session) -> AnnotationStore:
        """The session's store (created on first use, kept in ``session.extensions``)."""
        store = session.extensions.get(EXTENSION_KEY)
        if store is None:
            store = cls(session)
            session.extensions[EXTENSION_KEY] = store
        return store

    # --- layers ------------------------------------------------------------------------
    def links(self) -> list[tuple[Any, Any]]:
        """(image layer, annotation layer) pairs whose annotation layer is still open."""
        self._links = [(image, labels) for image, labels in self._links
                       if self.session.has_layer(labels)]
        return list(self._links)

    def annotate(self, image_layer: Any) -> Any:
        """The annotation layer of ``image_layer`` (added, empty, on first use)."""
        image_layer = unwrap(image_layer)
        for image, labels in self.links():
            if same_layer(image, image_layer):
                return labels
        data, scale, translate, _axes = L.image_layer_data(image_layer)  # refuses RGB, 4D
        viewer = self.session.viewer
        units = L.layer_units(image_layer)
        layer = unwrap(viewer.add_labels(
            np.zeros(tuple(data.shape), dtype=np.uint8),
            name=f"{image_layer.name}{ANNOTATIONS_SUFFIX}", scale=scale, translate=translate,
            opacity=0.8, features=self.classes.features(),
            colormap=self._colormap(), metadata={ANNOTATION_KEY: {"image": image_layer.name}},
            **({"units": units} if units else {})))
        self._links.append((image_layer, layer))
        return layer

    def annotation_for(self, layer: Any) -> Any:
        """The annotation layer ``layer`` is, or belongs to (its image); else None."""
        for image, labels in self.links():
            if same_layer(layer, labels) or same_layer(layer, image):
                return labels
        return None

    def paint_with(self, value: int, layer: Any = None) -> Any:
        """Select the brush with class ``value`` on an annotation layer; returns it.

        The layer is ``layer``'s annotation layer, else that of the selected layer, else
        the only one.
        """
        spec = self.classes.by_value(value)
        viewer = self.session.viewer
        target = self.annotation_for(layer if layer is not None
                                     else viewer.layers.selection.active)
        links = self.links()
        if target is None and len(links) == 1:
            target = links[0][1]
        if target is None:
            raise InputError(
                "select the image (or its annotation layer) to paint on; 'Annotate selected "
                "image' adds an annotation layer" if links else
                "no annotation layer yet: select an image layer and press 'Annotate "
                "selected image'")
        viewer.layers.selection.active = target
        target.selected_label = spec.value
        target.mode = "paint"
        return target

    def _colormap(self) -> Any:
        from napari.utils.colormaps import DirectLabelColormap

        return DirectLabelColormap(color_dict=self.classes.color_dict())

    def restyle(self) -> None:
        """Give every annotation layer the current class names and colours."""
        for _image, labels in self.links():
            labels.features = self.classes.features()
            labels.colormap = self._colormap()

    def painted_counts(self) -> dict[int, int]:
        """Painted pixels per label value over all annotation layers."""
        counts: dict[int, int] = {}
        for _image, labels in self.links():
            found = np.bincount(np.asarray(labels.data).ravel(), minlength=1)
            for value in np.flatnonzero(found[1:]) + 1:
                counts[int(value)] = counts.get(int(value), 0) + int(found[value])
        return counts

    def remove_class(self, value: int) -> None:
        """Remove a class that has no painted strokes (strokes are never deleted here)."""
        spec = self.classes.by_value(value)
        painted = self.painted_counts().get(spec.value, 0)
        if painted:
            raise InputError(f"class {spec.name!r} has {painted:,} painted pixels: erase its "
                             "strokes first, or keep the class")
        self.classes.remove(spec.value)

    # --- training data -----------------------------------------------------------------
    def snapshot(self) -> Annotations:
        """Copies of the painted planes and their images, checked for training.

        Raises :class:`InputError` (one line) when no class is named, nothing is
        painted, fewer than two classes or no background is painted, a class has no
        strokes, a value is painted that no class has, or an annotation layer lost its
        image.
        """
        mapping = self.classes.mapping()
        links = self.links()
        if not links:
            raise InputError("nothing to train on: select an image layer, press 'Annotate "
                             "selected image' and paint a few strokes of each class")
        known = set(self.classes.values)
        images, masks, valids, names, used = [], [], [], [], []
        counts: dict[int, int] = {}
        for image_layer, labels in links:
            annotation = np.asarray(labels.data)
            painted = annotation != 0
            if not painted.any():
                continue
            unknown = sorted(set(np.unique(annotation[painted]).tolist()) - known)
            if unknown:
                raise InputError(f"label {unknown[0]} is painted in '{labels.name}' but no "
                                 "class has it: add a class or erase those strokes")
            if not self.session.has_layer(image_layer):
                raise InputError(f"'{labels.name}' has no image any more ('{image_layer.name}' "
                                 "was closed): open it again, or delete the annotation layer")
            data = L.image_layer_data(image_layer)[0]
            if tuple(data.shape) != annotation.shape:
                raise InputError(f"'{labels.name}' {annotation.shape} no longer matches its "
                                 f"image '{image_layer.name}' {tuple(data.shape)}; annotate "
                                 "the image again")
            if annotation.ndim == 2:
                planes = [(np.array(data, copy=True), annotation.copy(), image_layer.name)]
            else:
                planes = [(np.array(data[z], copy=True), annotation[z].copy(),
                           f"{image_layer.name} [{z}]")
                          for z in range(annotation.shape[0]) if painted[z].any()]
            for image, mask, name in planes:
                images.append(image)
                masks.append(mask)
                valids.append(mask != 0)
                names.append(name)
            used.append(image_layer)
            for value, n in zip(*np.unique(annotation[painted], return_counts=True)):
                counts[int(value)] = counts.get(int(value), 0) + int(n)
        self._check_painted(counts)
        painted_names = {self.classes.by_value(v).name: n for v, n in sorted(counts.items())}
        return Annotations(images, masks, valids, names, mapping, self.classes.colors,
                           painted_names, used)

    def _check_painted(self, counts: dict[int, int]) -> None:
        if not counts:
            raise InputError("nothing painted yet: paint a few strokes of each class, "
                             "background too (unpainted pixels are ignored)")
        names = [self.classes.by_value(v).name for v in counts]
        if len(counts) < 2:
            raise InputError(f"only {names[0]!r} is painted: paint at least two classes, "
                             "background too (unpainted pixels are ignored, not background)")
        background = self.classes.classes[0]
        if background.value not in counts:
            raise InputError("paint some background too: unpainted pixels are ignored, so the "
                             "model must be shown what is none of your classes")
        missing = [spec.name for spec in self.classes.foreground if spec.value not in counts]
        if missing:
            raise InputError(f"class {missing[0]!r} has no strokes: paint some, or remove the "
                             "class")


def fit_to_memory(config: Any, annotations: Annotations, device: str) -> Any:
    """``config`` with the session's device and the patch of
    :func:`~napari_cryoseg.engine.training.memory.fit_patch_to_memory` (at most the largest image;
    refused if a step cannot fit)."""
    from napari_cryoseg.engine.training.memory import fit_patch_to_memory

    config = replace(config, device=device)
    return fit_patch_to_memory(
        config, config.architecture(annotations.mapping.n_classes),
        [np.shape(i) for i in annotations.images],
        what=f"the {config.preset} preset with {{batch}} patches of {{patch}} px",
        advice="choose a smaller preset (or a GPU)")

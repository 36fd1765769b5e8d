"""napari glue for object measurements and object classes (no Qt).

:class:`~napari_cryoseg.viewer.objects_state.ObjectsState` calls these helpers: measure
a labels layer (connected components per class) into an instance labels layer with a
features table, select and centre one object, remove small objects (undoable), colour
objects by predicted class (or one colour per object again), and export the table as
CSV without overwriting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.atomic import unique_path
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import (
    Table,
    filter_table,
    instance_labels,
    measure_objects,
    n_rows,
    remove_objects,
    small_object_ids,
    write_csv,
)
from napari_cryoseg.viewer.camera import camera_of
from napari_cryoseg.viewer.layers import (
    META_KEY,
    layer_units,
    pixel_size_nm,
    update_labels_undoable,
)

#: Suffix of the instance labels layer added by "Measure".
OBJECTS_SUFFIX = " objects"
#: Colours of predicted object classes (cycled).
CLASS_PALETTE = ("#ff5555", "#55aaff", "#ffcc33", "#66dd66", "#cc66ff", "#33dddd", "#ff9933")


@dataclass
class ObjectsResult:
    """One measurement of a labels layer."""

    source: Any  # the semantic labels layer
    image: Any  # the intensity image layer or None
    instances: np.ndarray
    classes: np.ndarray
    table: Table
    layer: Any = None  # the instance labels layer shown in the viewer
    extra: dict[str, list[Any]] = field(default_factory=dict)  # e.g. "predicted class"

    @property
    def n_objects(self) -> int:
        return n_rows(self.table)


def _class_names(layer: Any) -> list[str] | None:
    names = (layer.metadata or {}).get(META_KEY, {}).get("class_names")
    return list(names) if names else None


def measure_layer(
    viewer: Any, labels_layer: Any, image_layer: Any = None, *, min_size: int = 0
) -> ObjectsResult:
    """Measure ``labels_layer`` and add (or refresh) its ``"<name> objects"`` layer."""
    labels = np.asarray(labels_layer.data)
    image = None
    if image_layer is not None:
        image = np.asarray(image_layer.data[0] if getattr(image_layer, "multiscale", False)
                           else image_layer.data)
        if image.shape != labels.shape:
            raise InputError(
                f"image '{image_layer.name}' {image.shape} and labels '{labels_layer.name}' "
                f"{labels.shape} differ in shape; choose the image that was segmented"
            )
    instances, classes = instance_labels(labels)
    table = measure_objects(labels, image, instances=instances, classes=classes,
                            pixel_size_nm=pixel_size_nm(labels_layer),
                            class_names=_class_names(labels_layer), min_size=min_size)
    if min_size:
        keep = np.isin(instances, table["label"])
        instances = np.where(keep, instances, 0).astype(instances.dtype)
    result = ObjectsResult(labels_layer, image_layer, instances, classes, table)
    result.layer = _show_instances(viewer, result)
    return result


def _features(result: ObjectsResult) -> dict[str, Any]:
    table = {k: list(v) for k, v in result.table.items()}
    table.update({k: list(v) for k, v in result.extra.items()})
    return {"index": list(result.table["label"]), **table}


def _show_instances(viewer: Any, result: ObjectsResult) -> Any:
    source = result.source
    name = f"{source.name}{OBJECTS_SUFFIX}"
    units = layer_units(source)
    for layer in viewer.layers:
        if layer.name == name and np.shape(layer.data) == result.instances.shape:
            layer.data = result.instances
            layer.features = _features(result)
            return layer
    return viewer.add_labels(
        result.instances, name=name, scale=tuple(source.scale),
        translate=tuple(source.translate), opacity=0.7, features=_features(result),
        metadata={META_KEY: {"kind": "objects", "source": str(source.name)}},
        **({"units": units} if units else {}),
    )


def refresh_features(result: ObjectsResult) -> None:
    """Push the table (and extra columns) into the objects layer's features."""
    if result.layer is not None:
        result.layer.features = _features(result)


def select_object(viewer: Any, result: ObjectsResult, row: int) -> int:
    """Select the object of table ``row`` in its layer and centre the camera on it."""
    if not 0 <= row < result.n_objects:
        raise InputError(f"no object in row {row}")
    label = int(result.table["label"][row])
    layer = result.layer
    if layer is not None:
        layer.selected_label = label
        world = [float(v) for v in layer.data_to_world(_data_point(result, row))]
        camera = camera_of(viewer)
        center = list(camera.center)
        camera.center = (*center[:-2], world[-2], world[-1])
        if len(world) == 3 and viewer.dims.ndim >= 3:
            viewer.dims.set_point(viewer.dims.ndim - 3, world[0])  # go to the object's plane
        viewer.layers.selection.active = layer
    return label


def _data_point(result: ObjectsResult, row: int) -> np.ndarray:
    y, x = float(result.table["centroid_y"][row]), float(result.table["centroid_x"][row])
    if result.instances.ndim == 3:
        return np.array([float(result.table["plane"][row]), y, x])
    return np.array([y, x])


def remove_small(result: ObjectsResult, min_size: int) -> int:
    """Remove objects below ``min_size`` px from the labels and objects layers (undoable).

    Each layer changes in one history step (Ctrl+Z on the layer restores it). Returns
    the number of objects removed; the result's table keeps the remaining ones.
    """
    remove = small_object_ids(result.table, min_size)
    if not len(remove):
        return 0
    update_labels_undoable(result.source, remove_objects(
        result.instances, np.asarray(result.source.data), remove))
    result.instances = remove_objects(result.instances, result.instances, remove)
    if result.layer is not None:
        update_labels_undoable(result.layer, result.instances)
    keep = ~np.isin(result.table["label"], remove)
    result.table = filter_table(result.table, keep)
    result.extra = {k: [v for v, ok in zip(vals, keep) if ok] for k, vals in result.extra.items()}
    refresh_features(result)
    return int(len(remove))


def color_by_class(result: ObjectsResult, predicted: list[str], classes: list[str]) -> None:
    """Colour each object of the objects layer by its predicted class."""
    from napari.utils.colormaps import DirectLabelColormap

    if result.layer is None:
        return
    colors: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    for label, cls in zip(result.table["label"], predicted):
        colors[int(label)] = CLASS_PALETTE[classes.index(cls) % len(CLASS_PALETTE)]
    result.layer.colormap = DirectLabelColormap(color_dict=colors)


def plain_colors(result: ObjectsResult) -> None:
    """Give the objects layer napari's usual label colours (one per object) again."""
    from napari.utils.colormaps import label_colormap

    if result.layer is not None:
        result.layer.colormap = label_colormap()


def class_color(classes: list[str], name: str) -> str:
    """The colour :func:`color_by_class` uses for class ``name``."""
    return CLASS_PALETTE[classes.index(name) % len(CLASS_PALETTE)]


def default_csv_path(result: ObjectsResult, folder: str | Path | None = None) -> Path:
    """``<labels file stem>_objects.csv`` beside the layer's source file, else in ``folder``."""
    source_path = getattr(getattr(result.source, "source", None), "path", None)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(result.source.name))
    if source_path:
        p = Path(source_path)
        return p.with_name(f"{p.stem}_objects.csv")
    if folder is None:
        raise InputError("choose a folder for the CSV")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"folder '{folder}' does not exist; choose an existing folder")
    return folder / f"{safe or 'labels'}_objects.csv"


def export_csv(result: ObjectsResult, folder: str | Path | None = None) -> Path:
    """Write the objects table (with tags / predictions) as CSV; never overwrites."""
    path = unique_path(default_csv_path(result, folder))
    return write_csv(result.table, path, overwrite=False, extra=result.extra or None)

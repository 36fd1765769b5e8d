"""napari adapters for CryoSeg (no Qt): layer data in, layer kwargs out, results shown.

Everything here runs on the main thread and knows napari's *model* API only
(``napari.layers``, ``napari.utils``). The widgets stay thin by calling these helpers;
the engine never sees a layer, only arrays snapshotted by :func:`image_layer_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.core.setting import check_value
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.model.provenance import Provenance
from napari_cryoseg.viewer.session import SegmentationRecord, Session, unwrap

#: Suffixes of the layers CryoSeg adds (used to find/skip them in combos).
LABELS_SUFFIX = " labels"
PROBABILITIES_SUFFIX = " probabilities"
#: Key of the CryoSeg entry in a layer's ``metadata``.
META_KEY = "cryoseg"


@dataclass(frozen=True)
class ImageSnapshot:
    """An image layer's pixels and geometry, taken on the main thread for a worker."""

    data: Any
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axes: str
    name: str
    units: tuple[str, ...] | None = None


def _time_axis(layer: Any) -> bool:
    labels = tuple(getattr(layer, "axis_labels", ()) or ())
    meta_axes = str((getattr(layer, "metadata", None) or {}).get("axes", ""))
    if meta_axes.upper().startswith("T"):
        return True
    return bool(labels) and str(labels[0]).lower() in {"t", "time", "frame"}


def image_layer_data(layer: Any) -> tuple[Any, tuple[float, ...], tuple[float, ...], str]:
    """``(array, scale, translate, axes)`` of a grayscale image layer.

    ``axes`` is ``"YX"``, ``"ZYX"`` or ``"TYX"`` (from the layer's axis labels or a
    ``metadata["axes"]`` set by the reader). Multiscale layers give their full-resolution
    level. Raises :class:`InputError` for RGB or more than 3D layers.
    """
    if getattr(layer, "rgb", False):
        raise InputError(
            f"layer '{layer.name}' is RGB; CryoSeg segments grayscale EM images. Convert it "
            "to grayscale first (e.g. Layers > Convert > Split RGB, keep one channel)"
        )
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    ndim = len(data.shape)
    if ndim not in (2, 3):
        raise InputError(
            f"layer '{layer.name}' has {ndim} dimensions {tuple(data.shape)}; CryoSeg handles "
            "2D images, 3D stacks and time series (split channels/extra axes first)"
        )
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(t) for t in layer.translate)
    axes = "YX" if ndim == 2 else ("TYX" if _time_axis(layer) else "ZYX")
    return data, scale, translate, axes


def snapshot(layer: Any) -> ImageSnapshot:
    """:func:`image_layer_data` as a frozen object; numpy data is copied (safe for a worker)."""
    data, scale, translate, axes = image_layer_data(layer)
    if isinstance(data, np.ndarray):
        data = data.copy()
    return ImageSnapshot(data, scale, translate, axes, str(layer.name), layer_units(layer))


def layer_units(layer: Any) -> tuple[str, ...] | None:
    """A layer's units as strings (None when it has none), to copy onto derived layers."""
    units = getattr(layer, "units", None)
    return tuple(str(u) for u in units) if units else None


def pixel_size_nm(layer: Any) -> float | None:
    """XY pixel size in nm from a layer's scale (and units), None when uncalibrated."""
    size = float(layer.scale[-1])
    units = getattr(layer, "units", None)
    if units:
        unit = units[-1]
        try:
            if str(unit) in {"pixel", "px"}:
                return None if size == 1.0 else size
            return float((size * unit).to("nm").magnitude)
        except Exception:  # noqa: BLE001 - non-length units: fall back to the number
            pass
    return None if size == 1.0 else size


# --------------------------------------------------------------------------- models


def ensure_model(session: Session) -> Any:
    """The session's model, loading the bundled default on first use."""
    if session.model is None:
        from napari_cryoseg.model.bundled import load_default_model

        session.set_model(load_default_model(), keep_previous=False)
    if session.model is None:  # pragma: no cover - defensive
        raise ModelFileError("no model loaded")
    return session.model


def model_summary_lines(model: Any) -> dict[str, Any]:
    """Plain values for the dock's summary label (text only, no Qt)."""
    s = model.summary()
    arch = s["architecture"]
    px = s.get("pixel size (nm)")
    return {
        "name": s["name"],
        "classes": list(zip(model.class_names, model.class_colors)),
        "arch": (
            f"U-Net depth {arch['depth']}, {arch['base_channels']} base channels, "
            f"{s['parameters'] / 1e6:.2f} M parameters"
        ),
        "tile": f"tile {s['tile hint']['tile']}, overlap {s['tile hint']['overlap']}",
        "pixel": f"trained at {px:g} nm/pixel" if px else "pixel size not recorded",
        "provenance": Provenance.of(model).describe(),
    }


# --------------------------------------------------------------------------- results


def relabel(probabilities: np.ndarray, threshold: float, n_classes: int) -> np.ndarray:
    """Labels from cached probabilities ``(..., K, Y, X)`` without re-running the network.

    Binary models (K = 1) use ``p > threshold``; multi-class models take the argmax.
    """
    check_value(SegmentSettings, "threshold", threshold)
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-3] == 1:
        return (probabilities[..., 0, :, :] > threshold).astype(np.uint8)
    dtype = np.uint8 if n_classes <= 255 else np.uint16
    return probabilities.argmax(axis=-3).astype(dtype)


def class_colormap(class_names: list[str], class_colors: list[str]) -> Any:
    """A napari ``DirectLabelColormap``: background transparent, one colour per class."""
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    for value, color in enumerate(class_colors):
        if value:
            color_dict[value] = color
    return DirectLabelColormap(color_dict=color_dict)


def labels_layer_kwargs(prediction: Any, image: Any) -> dict[str, Any]:
    """kwargs for ``viewer.add_labels(prediction.labels, **kwargs)`` beside ``image``.

    ``image`` is an image layer or an :class:`ImageSnapshot`.
    """
    names = list(prediction.class_names)
    units = image.units if isinstance(image, ImageSnapshot) else layer_units(image)
    extra = {"units": units} if units else {}
    return {
        **extra,
        "name": f"{image.name}{LABELS_SUFFIX}",
        "scale": tuple(image.scale),
        "translate": tuple(image.translate),
        "colormap": class_colormap(names, list(prediction.class_colors)),
        "features": {"index": list(range(len(names))), "class": names},
        "opacity": 0.6,
        "metadata": {META_KEY: {"class_names": names,
                                "class_colors": list(prediction.class_colors),
                                "source": str(image.name), "info": dict(prediction.info)}},
    }


def probabilities_for_display(probabilities: np.ndarray) -> np.ndarray:
    """``(..., K, Y, X)`` -> ``(Y, X)``/``(Z, Y, X)`` for binary, ``(K, ..., Y, X)`` else."""
    if probabilities.shape[-3] == 1:
        return probabilities[..., 0, :, :]
    return np.moveaxis(probabilities, -3, 0)


def probabilities_layer_kwargs(prediction: Any, image: Any) -> dict[str, Any]:
    """kwargs for an image layer of the probabilities (class axis first for multi-class)."""
    probs = prediction.probabilities
    scale, translate = tuple(image.scale), tuple(image.translate)
    units = image.units if isinstance(image, ImageSnapshot) else layer_units(image)
    if probs is not None and probs.shape[-3] > 1:
        scale, translate = (1.0, *scale), (0.0, *translate)
        units = ("pixel", *units) if units else None
    return {
        **({"units": units} if units else {}),
        "name": f"{image.name}{PROBABILITIES_SUFFIX}",
        "scale": scale,
        "translate": translate,
        "colormap": "magma",
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.5,
        "blending": "additive",
        "visible": False,
        "metadata": {META_KEY: {"class_names": list(prediction.class_names),
                                "kind": "probabilities"}},
    }


def update_labels_undoable(layer: Any, new: np.ndarray) -> int:
    """Write ``new`` into a Labels layer as ONE undoable step (Ctrl+Z restores).

    Uses the public ``Labels.data_setitem`` (edit history); shapes that differ replace
    the data outright (not undoable). Returns the number of changed pixels.
    """
    old = np.asarray(layer.data)
    new = np.asarray(new)
    if old.shape != new.shape or not hasattr(layer, "data_setitem"):
        layer.data = new.astype(old.dtype if old.shape == new.shape else new.dtype)
        return int(new.size)
    changed = old != new
    n = int(changed.sum())
    if n:
        indices = np.nonzero(changed)
        with layer.block_history() if hasattr(layer, "block_history") else _nullcontext():
            layer.data_setitem(indices, new[changed].astype(old.dtype))
    return n


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def record_for_image(session: Session, image_layer: Any) -> SegmentationRecord | None:
    """The live record whose image is ``image_layer`` (most recent), or None."""
    return session.record_for_image(image_layer)


def corrections_mask(record: SegmentationRecord | None, current: np.ndarray) -> np.ndarray | None:
    """Pixels of a labels layer the user made: edited (differs from ``record.predicted``)
    or marked reviewed. None when there are none (or the shapes no longer match)."""
    if record is None or record.predicted is None:
        return None
    if np.shape(record.predicted) != np.shape(current):
        return None
    keep = current != np.asarray(record.predicted)
    reviewed = record.reviewed
    if reviewed is not None and np.shape(reviewed) == np.shape(current):
        keep |= np.asarray(reviewed, dtype=bool)
    return keep if keep.any() else None


def merge_keeping_corrections(
    record: SegmentationRecord | None, current: np.ndarray, new: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels to show, new baseline)`` for replacing ``current`` by ``new``.

    Edited and reviewed pixels keep the user's labels, and the baseline keeps the old
    prediction there, so they stay recorded as corrections (and reviewed marks stay).
    Every re-segmentation and re-threshold goes through this.
    """
    keep = corrections_mask(record, current) if np.shape(current) == np.shape(new) else None
    if keep is None:
        return new, new
    return np.where(keep, current, new), np.where(keep, np.asarray(record.predicted), new)


def show_prediction(
    viewer: Any,
    session: Session,
    image_layer: Any,
    prediction: Any,
    *,
    show_probabilities: bool = False,
    image: ImageSnapshot | None = None,
) -> Any:
    """Add the Labels layer for ``prediction`` or update the one from an earlier run.

    Re-running on the same image updates the same layer through the undo history
    (napari's Ctrl+Z). Pixels the user edited or marked reviewed keep their labels and
    stay recorded as corrections (:func:`merge_keeping_corrections`). The result is
    recorded in the session (cached probabilities for re-thresholding). Returns the
    labels layer.
    """
    geometry = image if image is not None else image_layer
    image_layer = unwrap(image_layer)
    record = session.record_for_image(image_layer)
    model_name = session.model.name if session.model is not None else ""
    labels = np.asarray(prediction.labels)
    baseline = labels
    if record is not None and np.shape(record.labels_layer.data) == labels.shape:
        layer = record.labels_layer
        current = np.asarray(layer.data)
        shown, baseline = merge_keeping_corrections(record, current, labels)
        update_labels_undoable(layer, shown)
        # Another model's classes: names (features, hover text) and colours follow it.
        names = list(prediction.class_names)
        if (record.extra.get("class_colors") != list(prediction.class_colors)
                or record.extra.get("class_names") != names):
            layer.colormap = class_colormap(names, list(prediction.class_colors))
        if list(layer.features.get("class", [])) != names:
            layer.features = {"index": list(range(len(names))), "class": names}
        layer.metadata = {**layer.metadata, **labels_layer_kwargs(prediction, geometry)["metadata"]}
        record.extra["reruns"] = int(record.extra.get("reruns", 0)) + 1
    else:
        layer = unwrap(viewer.add_labels(labels, **labels_layer_kwargs(prediction, geometry)))
        # the layer owns ``labels`` now; the record's baseline must not follow its edits
        baseline = labels.copy()
        record = None
    new_record = SegmentationRecord(
        image_layer=image_layer,
        labels_layer=layer,
        predicted=baseline,
        probabilities=prediction.probabilities,
        reviewed=record.reviewed if record is not None else None,
        model_name=model_name,
        extra={**(record.extra if record else {}),
               "class_names": list(prediction.class_names),
               "class_colors": list(prediction.class_colors)},
    )
    session.add_record(new_record)
    if show_probabilities and prediction.probabilities is not None:
        show_probabilities_layer(viewer, prediction, geometry)
    return layer


def show_probabilities_layer(viewer: Any, prediction: Any, image: Any) -> Any:
    """Add or refresh the probabilities image layer of ``image``."""
    kwargs = probabilities_layer_kwargs(prediction, image)
    data = probabilities_for_display(prediction.probabilities)
    for layer in viewer.layers:
        if layer.name == kwargs["name"] and np.shape(layer.data) == data.shape:
            layer.data = data
            return layer
    kwargs["visible"] = True
    return viewer.add_image(data, **kwargs)


def apply_threshold(session: Session, labels_layer: Any, threshold: float) -> int:
    """Re-label a CryoSeg labels layer from its cached probabilities (undoable).

    Pixels the user changed (where the layer differs from the stored prediction) or
    marked as reviewed keep their labels and stay corrections: a new threshold never
    overwrites them.
    Returns the number of changed pixels; 0 when the record has no probabilities.
    """
    record = session.record_for(labels_layer)
    if record is None or record.probabilities is None:
        return 0
    n_classes = len(record.extra.get("class_names", [])) or 2
    new = relabel(record.probabilities, threshold, n_classes)
    shown, baseline = merge_keeping_corrections(record, np.asarray(labels_layer.data), new)
    changed = update_labels_undoable(labels_layer, shown)
    record.predicted = baseline
    return changed


def cryoseg_labels_layers(viewer: Any) -> list[Any]:
    """Labels layers made by CryoSeg (metadata mark), in layer-list order."""
    from napari.layers import Labels

    return [
        layer for layer in viewer.layers
        if isinstance(layer, Labels) and META_KEY in (layer.metadata or {})
    ]


def unusable_reason(layer: Any) -> str | None:
    """Why an image layer cannot be segmented, in a few words with what to do; None if
    it can (or it is not a user's image layer)."""
    from napari.layers import Image

    if not isinstance(layer, Image) or META_KEY in (layer.metadata or {}):
        return None
    if getattr(layer, "rgb", False):
        return "RGB: split it to grayscale first (Layers > Convert > Split RGB)"
    if layer.ndim not in (2, 3):
        return f"{layer.ndim}D: split channels or extra axes first (2D, 3D or time series)"
    return None


def unusable_image_layers(viewer: Any) -> list[tuple[Any, str]]:
    """The image layers CryoSeg cannot segment, each with :func:`unusable_reason`."""
    out = []
    for layer in viewer.layers:
        reason = unusable_reason(layer)
        if reason is not None:
            out.append((layer, reason))
    return out


def segmentable_image_layers(viewer: Any) -> list[Any]:
    """Image layers CryoSeg can segment (not RGB, 2D/3D, not our probabilities)."""
    from napari.layers import Image

    out = []
    for layer in viewer.layers:
        if not isinstance(layer, Image) or getattr(layer, "rgb", False):
            continue
        if META_KEY in (layer.metadata or {}):
            continue
        if layer.ndim in (2, 3):
            out.append(layer)
    return out


def export_labels_layer(layer: Any, folder: Any, *, session: Session | None = None) -> Any:
    """Write a labels layer to ``folder/<layer name>.tif`` without overwriting anything.

    The pixel size comes from the layer's scale; class names from its metadata.
    An existing file gives ``"<name> (1).tif"``, ``" (2)"``, ... Returns the path.
    """
    from pathlib import Path

    from napari_cryoseg.core.atomic import unique_path
    from napari_cryoseg.io.labels import write_labels_tiff

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"export folder '{folder}' does not exist; choose an existing folder")
    safe = "".join(c if c.isalnum() or c in " ._-" else "_" for c in str(layer.name)).strip()
    stem = safe.replace(" ", "_") or "labels"
    if not stem.endswith("_labels"):  # the reader opens "*_labels*.tif" as Labels
        stem = "labels" if stem == "labels" else f"{stem}_labels"
    path = unique_path(folder / f"{stem}.tif")
    meta = (layer.metadata or {}).get(META_KEY, {})
    names = meta.get("class_names")
    colors = meta.get("class_colors")
    z = None
    if np.ndim(layer.data) == 3 and float(layer.scale[0]) != 1.0:
        z = float(layer.scale[0])
    return write_labels_tiff(
        path, np.asarray(layer.data), pixel_size_nm=pixel_size_nm(layer),
        class_names=list(names) if names else None, overwrite=False, z_size_nm=z,
        class_colors=list(colors) if colors and names and len(colors) == len(names) else None,
    )

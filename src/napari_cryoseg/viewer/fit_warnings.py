"""Fit warnings in the dock: once per image and model (napari glue, no Qt).

After each segmentation the dock asks :func:`napari_cryoseg.engine.inference.fit_check.fit_findings`
whether the model may not fit the image, and says so once for that image and model (a
second run of the same model on the same image says nothing new).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_cryoseg.engine.inference.fit_check import fit_findings
from napari_cryoseg.viewer.layers import pixel_size_nm
from napari_cryoseg.viewer.session import unwrap

__all__ = ["fit_warning", "on_fit_warning"]

_SHOWN = "fit_warnings_shown"
_LISTENERS = "fit_warning_listeners"


def on_fit_warning(session: Any, callback: Callable[[str, Any], None]) -> None:
    """Call ``callback(text, image_layer)`` for each new fit warning of ``session``."""
    session.extensions.setdefault(_LISTENERS, []).append(callback)


def fit_warning(session: Any, image_layer: Any, prediction: Any, image: Any = None) -> str | None:
    """The fit warning for this image and the session's model, or None.

    None when nothing is unusual, or when it was already given for this image and
    model. ``image`` is the snapshot that was segmented (default: the layer's data).
    """
    model = session.model
    if model is None or getattr(model, "foreign", False):
        return None
    layer = unwrap(image_layer)
    key = (id(layer), model.name, id(model))
    shown = session.extensions.setdefault(_SHOWN, set())
    if key in shown:
        return None
    data = image.data if image is not None and hasattr(image, "data") else layer.data
    findings = fit_findings(model, data, prediction.labels,
                            getattr(prediction, "probabilities", None),
                            pixel_size_nm(layer))
    shown.add(key)
    if not findings:
        return None
    text = (f"'{model.name}' may not fit '{layer.name}': " + "; ".join(findings) + ".")
    for callback in list(session.extensions.get(_LISTENERS, [])):
        callback(text, layer)
    return text

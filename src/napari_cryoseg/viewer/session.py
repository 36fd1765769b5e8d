"""Per-viewer state shared by the CryoSeg panels (napari model glue, no Qt).

A :class:`Session` holds the current model, the dock's settings
(:class:`~napari_cryoseg.viewer.settings.DockSettings`), the last segmentation of each
image layer (its labels layer, the prediction as produced, cached probabilities) and
the job that is running. Panels get the session of their viewer with
:meth:`Session.for_viewer` (backed by a ``WeakKeyDictionary``: no process-wide
singleton). Only the main thread calls methods that touch layers; workers receive
plain arrays.

napari hands a plugin's dock widget a *proxy* of the viewer (``PublicOnlyProxy``) whose
``layers`` yields new proxy objects on every access, so identity checks on them never
match. :func:`unwrap` is applied once at the boundary (the session keys and stores the
real viewer, and every layer it records), and :func:`same_layer` compares layers
whatever wraps them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.viewer.settings import DockSettings


def unwrap(obj: Any) -> Any:
    """The object behind napari's (possibly nested) proxies; ``obj`` itself otherwise."""
    seen = 0
    while seen < 8:
        try:
            wrapped = object.__getattribute__(obj, "__wrapped__")
        except AttributeError:
            return obj
        obj, seen = wrapped, seen + 1
    return obj


def same_layer(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are the same layer (through proxies or not)."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


@dataclass
class SegmentationRecord:
    """What the plugin knows about one segmented image layer.

    Attributes
    ----------
    image_layer, labels_layer
        The napari layers (references, not names: renaming a layer keeps the link).
    predicted : numpy.ndarray
        The labels exactly as the model produced them (the baseline for corrections).
    probabilities : numpy.ndarray or None
        Cached class probabilities, for re-thresholding without re-running the network.
    reviewed : numpy.ndarray or None
        bool mask of pixels the user marked as reviewed (correct as shown).
    model_name : str
        The model that produced ``predicted``.
    """

    image_layer: Any
    labels_layer: Any
    predicted: np.ndarray
    probabilities: np.ndarray | None = None
    reviewed: np.ndarray | None = None
    model_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_layer = unwrap(self.image_layer)
        self.labels_layer = unwrap(self.labels_layer)


class Session:
    """State of the CryoSeg plugin for one viewer.

    Attributes
    ----------
    viewer
        The napari viewer, never a proxy of it (any object with a ``layers`` list works
        in tests).
    model : ModelFile or None
        The current model; replaced by :meth:`set_model` (hot-swap keeps the previous
        one in :attr:`previous_models` for Revert).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    records : dict
        ``id(labels_layer) -> SegmentationRecord``.
    busy : str or None
        The kind of the job that runs (``"segment"``, ``"batch"``, ``"finetune"``,
        ``"resegment"``, ``"uncertainty"``, ``"train"``), else None: one job per viewer,
        so jobs never share the device.
    settings : DockSettings
        Segment / fine-tune / loop settings read by every job.
    """

    _by_viewer: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()

    def __init__(self, viewer: Any) -> None:
        self._viewer_ref = weakref.ref(unwrap(viewer))
        self.model: ModelFile | None = None
        self.previous_models: list[ModelFile] = []
        self.device: str = "auto"
        self.records: dict[int, SegmentationRecord] = {}
        self.busy: str | None = None
        self.settings = DockSettings()
        self._model_listeners: list[Callable[[ModelFile | None], None]] = []
        #: Per-feature state kept by other modules (e.g. "corrections"), keyed by name.
        self.extensions: dict[str, Any] = {}

    @classmethod
    def for_viewer(cls, viewer: Any) -> Session:
        """The one session of ``viewer`` (created on first use; proxies share it)."""
        viewer = unwrap(viewer)
        session = cls._by_viewer.get(viewer)
        if session is None:
            session = cls(viewer)
            cls._by_viewer[viewer] = session
        return session

    @property
    def viewer(self) -> Any:
        """The viewer, or None once it was closed."""
        return self._viewer_ref()

    # --- model -------------------------------------------------------------------------
    def on_model_changed(self, callback: Callable[[ModelFile | None], None]) -> None:
        """Call ``callback(model)`` after every :meth:`set_model` (main thread)."""
        self._model_listeners.append(callback)

    def set_model(self, model: ModelFile | None, *, keep_previous: bool = True) -> None:
        """Make ``model`` current; the old one stays available for :meth:`revert_model`."""
        if keep_previous and self.model is not None and model is not self.model:
            self.previous_models.append(self.model)
            del self.previous_models[:-5]  # keep the last few, not every fine-tune round
        self.model = model
        self.settings.adopt_model_hints(model)
        for callback in list(self._model_listeners):
            callback(model)

    def revert_model(self) -> ModelFile | None:
        """Go back to the model used before the last :meth:`set_model`; returns it."""
        if not self.previous_models:
            return None
        self.set_model(self.previous_models.pop(), keep_previous=False)
        return self.model

    # --- jobs --------------------------------------------------------------------------
    def begin(self, job: str) -> None:
        """Mark ``job`` as running; refuses a second job while one runs."""
        from napari_cryoseg.core.errors import CryoSegError

        if self.busy is not None:
            raise CryoSegError(
                f"cannot start {job}: {self.busy} is still running; wait or cancel it first"
            )
        self.busy = job

    def end(self, job: str) -> None:
        """Mark ``job`` as finished (no-op if another job is current)."""
        if self.busy == job:
            self.busy = None

    # --- segmentations ---------------------------------------------------------------
    def add_record(self, record: SegmentationRecord) -> None:
        """Remember a segmentation (replaces an older one of the same labels layer)."""
        self.records[id(record.labels_layer)] = record

    def record_for(self, labels_layer: Any) -> SegmentationRecord | None:
        """The record of a labels layer, or None if the plugin did not make it."""
        labels_layer = unwrap(labels_layer)
        record = self.records.get(id(labels_layer))
        return record if record is not None and record.labels_layer is labels_layer else None

    def record_for_image(self, image_layer: Any) -> SegmentationRecord | None:
        """The live record whose image is ``image_layer`` (most recent), or None."""
        for record in reversed(self.live_records()):
            if same_layer(record.image_layer, image_layer):
                return record
        return None

    def has_layer(self, layer: Any) -> bool:
        """True while ``layer`` is in the viewer."""
        viewer = self.viewer
        return viewer is not None and any(same_layer(layer, lyr) for lyr in viewer.layers)

    def live_records(self) -> list[SegmentationRecord]:
        """Records whose labels layer is still in the viewer (deleted ones are dropped)."""
        viewer = self.viewer
        layers = {id(unwrap(lyr)) for lyr in viewer.layers} if viewer is not None else set()
        alive = [r for r in self.records.values() if id(r.labels_layer) in layers]
        self.records = {id(r.labels_layer): r for r in alive}
        return alive

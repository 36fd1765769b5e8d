"""What the Objects section knows and does: measured objects, their tags, the classifier.

napari glue, no Qt. One :class:`ObjectsState` per session (``session.extensions
["objects"]``, get it with :meth:`ObjectsState.for_session`); the dock's Objects section
only shows it and calls its methods. It owns

* the user's :class:`~napari_cryoseg.core.object_settings.ObjectSettings` (minimum
  object size, tag vocabulary, colour by class);
* the last measurement (:class:`~napari_cryoseg.viewer.objects.ObjectsResult`);
* the tags the user gave objects, keyed by object label (not by table row), so they
  survive "Remove smaller" and follow their objects when the same layer is measured
  again;
* the object classifier trained on those tags, or loaded from a file.

Every refused action raises :class:`~napari_cryoseg.core.errors.CryoSegError` with a
one-line message. Listeners (``on_change``) are told what changed: ``"settings"``,
``"result"`` (a new table), ``"tags"`` (an object's tag or the vocabulary) or
``"predictions"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryoseg.core.classify import ObjectClassifier, fit_forest
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import FEATURE_COLUMNS, feature_matrix
from napari_cryoseg.core.object_settings import ObjectSettings
from napari_cryoseg.viewer import objects as O
from napari_cryoseg.viewer.layers import META_KEY
from napari_cryoseg.viewer.session import Session, same_layer, unwrap

EXTENSION_KEY = "objects"
PREDICTED = "predicted class"


def measurable_layers(viewer: Any) -> tuple[list[Any], list[Any]]:
    """(labels layers that can be measured, grey-level images for intensity features).

    The ``"<name> objects"`` layers that measuring adds are not offered again.
    """
    from napari.layers import Image, Labels

    layers = [unwrap(layer) for layer in viewer.layers]
    labels = [ly for ly in layers
              if isinstance(ly, Labels) and not ly.name.endswith(O.OBJECTS_SUFFIX)]
    images = [ly for ly in layers if isinstance(ly, Image) and not getattr(ly, "rgb", False)]
    return labels, images


def source_image_name(labels_layer: Any) -> str | None:
    """Name of the image a CryoSeg labels layer was segmented from (its metadata)."""
    if labels_layer is None:
        return None
    source = ((labels_layer.metadata or {}).get(META_KEY, {}) or {}).get("source")
    return str(source) if source else None


class ObjectsState:
    """The Objects section's state for one viewer (see the module docstring)."""

    def __init__(self, viewer: Any, settings: ObjectSettings | None = None) -> None:
        self.viewer = viewer
        self.settings = settings or ObjectSettings()
        self.result: O.ObjectsResult | None = None
        self.classifier: ObjectClassifier | None = None
        self.tags: dict[int, str] = {}  # object label -> tag
        self._listeners: list[Callable[[str], None]] = []

    @classmethod
    def for_session(cls, session: Session) -> ObjectsState:
        """The session's state (created on first use, kept in ``session.extensions``)."""
        state = session.extensions.get(EXTENSION_KEY)
        if state is None:
            state = cls(session.viewer)
            session.extensions[EXTENSION_KEY] = state
        return state

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after each change (``"settings"``, ``"result"``, ...)."""
        self._listeners.append(callback)

    def _notify(self, what: str) -> None:
        for callback in list(self._listeners):
            callback(what)

    # --- settings ----------------------------------------------------------------------
    def update_settings(self, **changes: Any) -> ObjectSettings:
        """Replace some settings (validated; a refused value leaves the old settings)."""
        try:
            updated = dataclasses.replace(self.settings, **changes)
        except TypeError as err:
            raise InputError(f"object settings {changes}: {err}") from None
        if updated != self.settings:
            old, self.settings = self.settings, updated
            if updated.color_by_class != old.color_by_class:
                self._show_class_colours()
            self._notify("settings")
            if updated.tags != old.tags:
                self._notify("tags")  # the choices of the tag column changed
        return self.settings

    # --- measuring ---------------------------------------------------------------------
    def measure(self, labels_layer: Any, image_layer: Any = None) -> O.ObjectsResult:
        """Measure ``labels_layer`` (objects below the minimum size skipped).

        Tags of the previous measurement of the same layer follow their objects; a
        classifier predicts every new object at once.
        """
        if labels_layer is None:
            raise InputError("no labels layer: segment an image first")
        result = O.measure_layer(self.viewer, labels_layer, image_layer,
                                 min_size=self.settings.min_size)
        self.tags = self._carried_tags(self.result, result)
        self.result = result
        if self.classifier is not None:
            self._predict()
        self._notify("result")
        return result

    def _carried_tags(self, old: O.ObjectsResult | None, new: O.ObjectsResult) -> dict[int, str]:
        """Tags for ``new``'s objects: each takes the tag of the tagged old object that
        covers most of it (labels are renumbered when objects appear or go)."""
        if (old is None or not self.tags or not same_layer(old.source, new.source)
                or old.instances.shape != new.instances.shape):
            return {}
        tagged = np.isin(old.instances, np.fromiter(self.tags, dtype=np.int64))
        pairs = np.stack([new.instances[tagged], old.instances[tagged]], axis=1)
        pairs = pairs[pairs[:, 0] > 0]
        if not len(pairs):
            return {}
        pairs, counts = np.unique(pairs, axis=0, return_counts=True)
        carried: dict[int, str] = {}
        best: dict[int, int] = {}
        for (new_label, old_label), count in zip(pairs.tolist(), counts.tolist()):
            if count > best.get(new_label, 0):
                best[new_label] = count
                carried[new_label] = self.tags[old_label]
        return carried

    def _require_result(self) -> O.ObjectsResult:
        if self.result is None:
            raise InputError("measure objects first")
        return self.result

    def labels(self) -> list[int]:
        """Object labels in table order (empty before measuring)."""
        return [] if self.result is None else [int(v) for v in self.result.table["label"]]

    def select(self, row: int) -> int:
        """Select the object of table ``row`` and centre the view on it; its label."""
        return O.select_object(self.viewer, self._require_result(), row)

    def remove_smaller(self) -> int:
        """Delete objects below the minimum size from the labels and objects layers
        (one undo step per layer); returns how many."""
        result = self._require_result()
        removed = O.remove_small(result, self.settings.min_size)
        if removed:
            kept = set(self.labels())
            self.tags = {label: tag for label, tag in self.tags.items() if label in kept}
            self._notify("result")
        return removed

    # --- tags --------------------------------------------------------------------------
    def set_tag(self, label: int, tag: str) -> None:
        """Tag object ``label`` (``""`` removes its tag); a new tag joins the vocabulary."""
        label, tag = int(label), str(tag).strip()
        if label not in self.labels():
            raise InputError(f"no object {label} in the table; measure again")
        if tag and tag not in self.settings.tags:
            self.update_settings(tags=(*self.settings.tags, tag))
        if tag:
            self.tags[label] = tag
        else:
            self.tags.pop(label, None)
        self._notify("tags")

    def tag_column(self) -> list[str]:
        """The tag of each table row (``""`` for untagged objects)."""
        return [self.tags.get(label, "") for label in self.labels()]

    # --- classifier --------------------------------------------------------------------
    def train_classifier(self) -> ObjectClassifier:
        """Fit a random forest on the tagged objects and predict every object."""
        result = self._require_result()
        column = self.tag_column()
        rows = [row for row, tag in enumerate(column) if tag]
        tags = [column[row] for row in rows]
        if len(set(tags)) < 2:
            raise InputError("tag objects of at least two classes first (column 'tag')")
        features = feature_matrix(result.table)
        self.classifier = fit_forest(features[rows], tags, FEATURE_COLUMNS)
        self._predict()
        return self.classifier

    def predicted(self) -> list[str]:
        """The predicted class of each table row (empty without a classifier)."""
        if self.result is None:
            return []
        return list(self.result.extra.get(PREDICTED, []))

    def _predict(self) -> list[str]:
        result, clf = self.result, self.classifier
        if result is None or clf is None:
            return []
        predicted = clf.predict(feature_matrix(result.table, clf.feature_names))
        result.extra[PREDICTED] = predicted
        O.refresh_features(result)
        self._show_class_colours()
        self._notify("predictions")
        return predicted

    def class_colour(self, name: str) -> str | None:
        """The colour objects of predicted class ``name`` get (None: not a class)."""
        if self.classifier is None or name not in self.classifier.classes:
            return None
        return O.class_color(list(self.classifier.classes), name)

    def _show_class_colours(self) -> None:
        result, predicted = self.result, self.predicted()
        if result is None or result.layer is None:
            return
        if self.settings.color_by_class and predicted and self.classifier is not None:
            O.color_by_class(result, predicted, list(self.classifier.classes))
        else:
            O.plain_colors(result)

    def save_classifier(self, path: str | Path) -> Path:
        """Write the classifier (``.npz``); an existing file is never replaced."""
        if self.classifier is None:
            raise InputError("train a classifier first")
        return self.classifier.save(path)

    def load_classifier(self, path: str | Path) -> ObjectClassifier:
        """Read a classifier and predict every measured object with it."""
        self.classifier = ObjectClassifier.load(path)
        self._predict()
        return self.classifier

    # --- export ------------------------------------------------------------------------
    def export_csv(self, folder: str | Path | None = None) -> Path:
        """Write the table with its tags and predictions as CSV (beside the labels
        file, else in ``folder``); never replaces a file."""
        result = self._require_result()
        extra = dict(result.extra)
        if self.tags:
            extra["tag"] = self.tag_column()
        return O.export_csv(dataclasses.replace(result, extra=extra), folder)

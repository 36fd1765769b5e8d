"""Batch section: segment every checked image layer in turn, with per-layer status.

Batch uses the session's segment settings (the same object the Segment section edits)
through the one segmentation path (:func:`~napari_cryoseg.widgets.segmentation.segment_layers`).
Layers whose labels the user corrected or reviewed start unchecked, and when checked
their corrections are kept.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import same_layer, unwrap
from napari_cryoseg.widgets.buttons import RunCancel
from napari_cryoseg.widgets.segmentation import LayerOutcome, segment_layers

CORRECTED_NOTE = "corrected"


class BatchPanel(QWidget):
    """Checklist of image layers -> one Labels layer each (uses the segment settings)."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.store = CorrectionStore.for_session(session)
        self.status_of: dict[int, str] = {}
        self._layers: list[Any] = []
        self._jobs: list[Any] = []
        #: check states the user chose (id(layer) -> state); others follow the default
        self._chosen: dict[int, Any] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        hint = QLabel("Image layers to segment with the Segment section's settings. "
                      "Layers you corrected start unchecked; if checked, your edits and "
                      "reviewed regions are kept.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.list = QListWidget()
        self.list.setMinimumHeight(70)
        self.list.setMaximumHeight(150)
        self.list.itemChanged.connect(self._item_changed)
        layout.addWidget(self.list)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment checked")
        self.cancel_button = QPushButton("Cancel")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.run_cancel = RunCancel(
            self.run_button, self.cancel_button, self.summary.setText,
            lambda message: self.summary.setText(f"Failed: {message}"))
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(lambda: self.run_cancel.cancel())
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        # corrections change the default check: refresh shortly after the last edit
        self._refresh_timer = QTimer(self, singleShot=True, interval=500)
        self._refresh_timer.timeout.connect(self.refresh)
        self.store.listeners.append(lambda _layer: self._refresh_timer.start())
        self.refresh()

    def _is_corrected(self, layer: Any) -> bool:
        record = self.session.record_for_image(layer)
        return record is not None and self.store.is_corrected(record)

    def refresh(self, *_: Any) -> None:
        """Rebuild the list: the user's checks stay; other layers are checked unless
        corrected."""
        self._layers = [unwrap(lyr) for lyr in L.segmentable_image_layers(self.viewer)]
        self.list.blockSignals(True)
        self.list.clear()
        for layer in self._layers:
            item = QListWidgetItem()
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            default = Qt.CheckState.Unchecked if self._is_corrected(layer) \
                else Qt.CheckState.Checked
            item.setCheckState(self._chosen.get(id(layer), default))
            self.list.addItem(item)
            self._set_text(layer)
        # listed after the usable ones (rows past ``self._layers``), greyed, with why
        for layer, reason in L.unusable_image_layers(self.viewer):
            item = QListWidgetItem(f"{layer.name}  —  {reason}")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            item.setToolTip(reason)
            self.list.addItem(item)
        self.list.blockSignals(False)

    def _item_changed(self, item: QListWidgetItem) -> None:
        row = self.list.row(item)
        if 0 <= row < len(self._layers):
            self._chosen[id(self._layers[row])] = item.checkState()

    def _set_text(self, layer: Any) -> None:
        for i, lyr in enumerate(self._layers):
            if same_layer(lyr, layer):
                shape = "×".join(str(s) for s in layer.data.shape) if not layer.multiscale \
                    else "multiscale"
                status = self.status_of.get(id(lyr), "")
                if not status and self._is_corrected(lyr):
                    status = CORRECTED_NOTE
                was_blocked = self.list.blockSignals(True)  # a text change is no check
                item = self.list.item(i)
                item.setText(f"{layer.name}  ({shape})" + (f"  —  {status}" if status else ""))
                item.setToolTip("You corrected or reviewed this layer's labels: unchecked by "
                                "default; if segmented, your edits and reviewed regions are "
                                "kept" if self._is_corrected(lyr) else "")
                self.list.blockSignals(was_blocked)

    def checked_layers(self) -> list[Any]:
        return [lyr for i, lyr in enumerate(self._layers)
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked(self, layers: list[Any]) -> None:
        """Check exactly ``layers`` (as the user would, one by one)."""
        for i, lyr in enumerate(self._layers):
            on = any(same_layer(lyr, x) for x in layers)
            state = Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
            self.list.item(i).setCheckState(state)  # itemChanged records the choice

    def _status(self, layer: Any, text: str) -> None:
        self.status_of[id(unwrap(layer))] = text
        self._set_text(layer)

    def run(self) -> Any:
        """Segment the checked layers; returns the job (None if nothing started)."""
        self.refresh()  # defaults follow the corrections made since the last refresh
        layers = self.checked_layers()
        if not layers:
            self.summary.setText("Check at least one image layer.")
            return None
        self._jobs = layers
        return self.run_cancel.start(
            lambda: segment_layers(
                self.viewer, self.session, layers, kind="batch",
                desc=f"Batch: {len(layers)} images", on_item=self._on_item,
                on_error=lambda message: self.summary.setText(f"Failed: {message}"),
                on_finish=self._on_finish),
            lambda: f"Segmenting {len(layers)} images…")

    @property
    def job(self) -> Any:
        """The running batch job, or None."""
        return self.run_cancel.job

    def cancel(self) -> None:
        self.run_cancel.cancel()

    def _on_item(self, outcome: LayerOutcome) -> None:
        if outcome.status == "done":
            self._status(outcome.layer, f"done in {outcome.prediction.elapsed_s:.1f} s")
        elif outcome.status == "closed":
            self._status(outcome.layer, "done (layer closed; result discarded)")
        elif outcome.status == "failed":
            self._status(outcome.layer, f"failed: {outcome.message}")
        else:
            self._status(outcome.layer, outcome.status)

    def _on_finish(self, job: Any) -> None:
        self.run_cancel.finished(job)
        layers = self._jobs
        if job.cancelled:
            for layer in layers:
                if self.status_of.get(id(layer)) in {"queued", "running"}:
                    self._status(layer, "cancelled")
        states = [self.status_of.get(id(layer), "") for layer in layers]
        done = sum(s.startswith("done") for s in states)
        failed = sum(s.startswith("failed") for s in states)
        self.summary.setText(
            f"{done} done, {failed} failed" + (" (cancelled)" if job.cancelled else "") + ".")

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
from napari_cryoseg.viewer.batch_state import BatchState
from napari_cryoseg.viewer.session import same_layer
from napari_cryoseg.widgets.buttons import RunCancel
from napari_cryoseg.widgets.segmentation import LayerOutcome, segment_layers


class BatchPanel(QWidget):
    """Checklist of image layers -> one Labels layer each (uses the segment settings)."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.state = BatchState.for_session(session)
        self._layers: list[Any] = []  # the layer of each checkable row, in order
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
        self.state.store.listeners.append(lambda _layer: self._refresh_timer.start())
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Rebuild the list: the user's checks stay; other layers are checked unless
        corrected."""
        self._layers = self.state.layers(self.viewer)
        self.list.blockSignals(True)
        self.list.clear()
        for layer in self._layers:
            item = QListWidgetItem()
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if self.state.checked(layer)
                               else Qt.CheckState.Unchecked)
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
            self.state.choose(self._layers[row], item.checkState() == Qt.CheckState.Checked)

    def _set_text(self, layer: Any) -> None:
        for i, lyr in enumerate(self._layers):
            if same_layer(lyr, layer):
                text, tooltip = self.state.row_text(lyr)
                was_blocked = self.list.blockSignals(True)  # a text change is no check
                self.list.item(i).setText(text)
                self.list.item(i).setToolTip(tooltip)
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

    def run(self) -> Any:
        """Segment the checked layers; returns the job (None if nothing started)."""
        self.refresh()  # defaults follow the corrections made since the last refresh
        layers = self.checked_layers()
        if not layers:
            self.summary.setText("Check at least one image layer.")
            return None
        self.state.started(layers)
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
        self._set_text(self.state.on_item(outcome))

    def _on_finish(self, job: Any) -> None:
        self.run_cancel.finished(job)
        summary = self.state.finished(job.cancelled)
        for layer in self.state.running:
            self._set_text(layer)
        self.summary.setText(summary)

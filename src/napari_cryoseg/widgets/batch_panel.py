"""Batch section: segment every checked image layer in turn, with per-layer status."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg import layers as L
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.widgets._workers import BatchItem, batch_generator, start_job, total_tiles


class BatchPanel(QWidget):
    """Checklist of image layers -> one Labels layer each (uses the Segment settings)."""

    def __init__(
        self, viewer: Any, session: Any, settings: Any, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.settings = settings  # the SegmentPanel: tiling() and threshold
        self.job: Any = None
        self.status_of: dict[int, str] = {}
        self._layers: list[Any] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        hint = QLabel("Image layers to segment (tile, overlap, batch size and threshold "
                      "from the Segment section):")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.list = QListWidget()
        self.list.setMinimumHeight(70)
        self.list.setMaximumHeight(150)
        layout.addWidget(self.list)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment checked")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        checked = {id(lyr): self.list.item(i).checkState() for i, lyr in enumerate(self._layers)
                   if i < self.list.count()}
        self._layers = L.segmentable_image_layers(self.viewer)
        self.list.clear()
        for layer in self._layers:
            item = QListWidgetItem()
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(checked.get(id(layer), Qt.CheckState.Checked))
            self.list.addItem(item)
            self._set_text(layer)

    def _set_text(self, layer: Any) -> None:
        for i, lyr in enumerate(self._layers):
            if lyr is layer:
                shape = "×".join(str(s) for s in layer.data.shape) if not layer.multiscale \
                    else "multiscale"
                status = self.status_of.get(id(layer), "")
                self.list.item(i).setText(
                    f"{layer.name}  ({shape})" + (f"  —  {status}" if status else ""))

    def checked_layers(self) -> list[Any]:
        return [lyr for i, lyr in enumerate(self._layers)
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked(self, layers: list[Any]) -> None:
        for i, lyr in enumerate(self._layers):
            on = any(lyr is x for x in layers)
            state = Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
            self.list.item(i).setCheckState(state)

    def _status(self, layer: Any, text: str) -> None:
        self.status_of[id(layer)] = text
        self._set_text(layer)

    def run(self) -> Any:
        layers = self.checked_layers()
        if not layers:
            self.summary.setText("Check at least one image layer.")
            return None
        try:
            model = L.ensure_model(self.session)
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.summary.setText(f"Failed: {err}")
            return None
        jobs: list[tuple[Any, Any]] = []
        for layer in layers:
            try:
                jobs.append((layer, L.snapshot(layer)))
                self._status(layer, "queued")
            except CryoSegError as err:
                self._status(layer, f"failed: {err}")
        if not jobs:
            self.summary.setText("Nothing to segment.")
            return None
        tiling = self.settings.tiling()
        binary = model.config.n_classes == 2
        try:
            self.job = start_job(
                self.session, "segment", batch_generator,
                [snap.data for _, snap in jobs], model, tiling, self.session.device,
                self.settings.threshold.value(), binary,
                total=total_tiles([snap.data.shape for _, snap in jobs], tiling,
                                  model.config.stride),
                desc=f"Batch: {len(jobs)} images",
                on_event=lambda event: self._on_event(jobs, event),
                on_error=lambda message: self.summary.setText(f"Failed: {message}"),
                on_finish=lambda job: self._on_finish(jobs, job),
            )
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.summary.setText(f"Failed: {err}")
            return None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.summary.setText(f"Segmenting {len(jobs)} images…")
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.summary.setText("Cancelling after the current tile batch…")

    def _on_event(self, jobs: list[tuple[Any, Any]], event: Any) -> None:
        if not isinstance(event, BatchItem):
            return
        layer, snap = jobs[event.index]
        if event.status == "done":
            if not any(lyr is layer for lyr in self.viewer.layers):
                self._status(layer, "done (layer closed; result discarded)")
                return
            L.show_prediction(self.viewer, self.session, layer, event.result, image=snap)
            self._status(layer, f"done in {event.result.elapsed_s:.1f} s")
        elif event.status == "failed":
            self._status(layer, f"failed: {event.result}")
        else:
            self._status(layer, event.status)

    def _on_finish(self, jobs: list[tuple[Any, Any]], job: Any) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        states = [self.status_of.get(id(layer), "") for layer, _ in jobs]
        if job.cancelled:
            for layer, _ in jobs:
                if self.status_of.get(id(layer)) in {"queued", "running"}:
                    self._status(layer, "cancelled")
        done = sum(s.startswith("done") for s in states)
        failed = sum(s.startswith("failed") for s in states)
        self.summary.setText(
            f"{done} done, {failed} failed" + (" (cancelled)" if job.cancelled else "") + ".")
        if self.job is job:
            self.job = None

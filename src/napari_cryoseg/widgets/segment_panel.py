"""Segment section: pick an image layer, tiling, threshold; Run / Cancel; live re-threshold."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg import layers as L
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.predict import TTA_CHOICES, segment
from napari_cryoseg.widgets._workers import start_job, total_tiles

THRESHOLD_DEBOUNCE_MS = 200


class LayerCombo(QComboBox):
    """Combo of the viewer's segmentable image layers, kept in sync with the layer list."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._layers: list[Any] = []
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.moved.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        current = self.layer()
        layers = L.segmentable_image_layers(self.viewer)
        for layer in layers:
            try:
                layer.events.name.connect(self.refresh, unique=True)
            except TypeError:  # older napari without ``unique``
                layer.events.name.disconnect(self.refresh)
                layer.events.name.connect(self.refresh)
        self.blockSignals(True)
        self.clear()
        self._layers = layers
        for layer in layers:
            shape = "multiscale" if layer.multiscale else "×".join(map(str, layer.data.shape))
            self.addItem(f"{layer.name}  ({shape})")
        if current is not None and any(lyr is current for lyr in layers):
            self.setCurrentIndex(next(i for i, lyr in enumerate(layers) if lyr is current))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Any:
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        for i, lyr in enumerate(self._layers):
            if lyr is layer:
                self.setCurrentIndex(i)


class SegmentPanel(QWidget):
    """Runs the model on one image layer and shows the result as a Labels layer."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.job: Any = None
        self.relabel_count = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.image = LayerCombo(viewer)
        self.image.setToolTip("Image layer to segment (2D, 3D stack or time series)")
        form.addRow("Image:", self.image)
        self.tile = QSpinBox()
        self.tile.setRange(64, 4096)
        self.tile.setSingleStep(64)
        self.tile.setValue(512)
        self.tile.setSuffix(" px")
        self.tile.setToolTip("Tile edge sent to the network (rounded up to the model's stride)")
        form.addRow("Tile:", self.tile)
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.5)
        self.overlap.setSingleStep(0.05)
        self.overlap.setDecimals(3)  # before setValue: 2 decimals would round 0.125 to 0.13
        self.overlap.setValue(0.125)
        self.overlap.setToolTip("Fraction of a tile shared with each neighbour (seams blend)")
        form.addRow("Overlap:", self.overlap)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(4)
        self.batch.setToolTip("Tiles per network call; lower it if the GPU runs out of memory")
        form.addRow("Batch size:", self.batch)
        self.threshold_label = QLabel("Threshold:")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setDecimals(3)
        self.threshold.setSingleStep(0.025)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip(
            "Foreground probability cut-off (binary models); set to the model's own, tuned "
            "on its validation images, when a model is loaded. Changing it re-labels the "
            "last result from cached probabilities without re-running the network, and "
            "keeps the pixels you corrected")
        form.addRow(self.threshold_label, self.threshold)
        self.tta = QComboBox()
        for copies in TTA_CHOICES:
            self.tta.addItem("off" if copies == 1 else f"{copies} copies", copies)
        self.tta.setToolTip(
            "Test-time augmentation: average the predictions of flipped/rotated copies of "
            "every tile. N copies take N times as long; usually a little more accurate")
        form.addRow("Test-time aug.:", self.tta)
        self.probabilities = QCheckBox("Also show probabilities layer")
        form.addRow("", self.probabilities)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Segment the chosen image with the current model")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(THRESHOLD_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.apply_threshold)
        self.threshold.valueChanged.connect(lambda _v: self._debounce.start())
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        session.on_model_changed(lambda _m: self._model_changed())
        self._model_changed()

    # --- model-dependent controls ------------------------------------------------------
    def _model_changed(self) -> None:
        model = self.session.model
        binary = model is not None and model.config.n_classes == 2
        self.threshold.setVisible(binary)
        self.threshold_label.setVisible(binary)
        if model is not None:
            if binary:
                # The model's tuned threshold becomes the default for the next run; signals
                # are blocked so that loading a model does not re-label existing results.
                self.threshold.blockSignals(True)
                self.threshold.setValue(float(getattr(model, "threshold", 0.5)))
                self.threshold.blockSignals(False)
            self.tile.setValue(int(model.tiling.tile))
            self.overlap.setValue(float(model.tiling.overlap))
            self.batch.setValue(int(model.tiling.batch_size))

    def tiling(self) -> TilingConfig:
        return TilingConfig(self.tile.value(), self.overlap.value(), self.batch.value())

    # --- run ---------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.status.setText(f"Failed: {message}")

    def run(self) -> Any:
        """Start segmenting the chosen layer; returns the job (None if it could not start)."""
        layer = self.image.layer()
        if layer is None:
            self.status.setText("Open or choose an image layer first.")
            return None
        try:
            model = L.ensure_model(self.session)
            snap = L.snapshot(layer)
            tiling = self.tiling()
            binary = model.config.n_classes == 2
            want_probs = binary or self.probabilities.isChecked()
            total = total_tiles([snap.data.shape], tiling, model.config.stride)
            self.job = start_job(
                self.session, "segment", segment, snap.data, model, tiling,
                device=self.session.device, threshold=self.threshold.value(),
                return_probabilities=want_probs, tta=int(self.tta.currentData()),
                total=total, desc=f"Segmenting {snap.name}",
                on_event=self._on_event,
                on_result=lambda prediction: self._on_result(layer, snap, prediction),
                on_error=self._fail,
                on_finish=self._on_finish,
            )
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self._fail(str(err))
            return None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Segmenting '{snap.name}' with {model.name}…")
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling after the current tile batch…")

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            eta = event.eta_s
            extra = f", about {eta:.0f} s left" if eta is not None and event.done else ""
            self.status.setText(f"Segmenting: {event.done}/{event.total} tiles{extra}")

    def _on_result(self, image_layer: Any, snap: Any, prediction: Any) -> None:
        if not any(lyr is image_layer for lyr in self.viewer.layers):
            self.status.setText("The image layer was closed; result discarded.")
            return
        before = L.record_for_image(self.session, image_layer)
        labels = L.show_prediction(
            self.viewer, self.session, image_layer, prediction,
            show_probabilities=self.probabilities.isChecked(), image=snap,
        )
        verb = "Updated" if before is not None and before.labels_layer is labels else "Added"
        undo = " (Ctrl+Z on the labels layer undoes the re-run)" if verb == "Updated" else ""
        copies = prediction.info.get("tta", 1)
        tta = f" with {copies}x test-time augmentation" if copies > 1 else ""
        self.status.setText(
            f"{verb} '{labels.name}' in {prediction.elapsed_s:.1f} s "
            f"on {prediction.info.get('device', '?')}{tta}{undo}."
        )

    def _on_finish(self, job: Any) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if job.cancelled:
            self.status.setText("Cancelled; existing layers were left as they were.")
        if self.job is job:
            self.job = None

    # --- threshold ---------------------------------------------------------------------
    def apply_threshold(self) -> int:
        """Re-label the chosen image's last result at the current threshold (no network)."""
        record = L.record_for_image(self.session, self.image.layer())
        if record is None or record.probabilities is None:
            return 0
        changed = L.apply_threshold(self.session, record.labels_layer, self.threshold.value())
        self.relabel_count += 1
        self.status.setText(
            f"Re-labelled '{record.labels_layer.name}' at threshold "
            f"{self.threshold.value():.2f}: {changed} pixels changed (no re-run).")
        return changed

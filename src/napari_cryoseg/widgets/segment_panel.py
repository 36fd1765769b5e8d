"""Segment section: pick an image layer, edit the segment settings; Run / Cancel.

The settings form writes the session's
:class:`~napari_cryoseg.engine.inference.settings.SegmentSettings`
(every other path that segments reads the same object). Moving the threshold re-labels
the last result from cached probabilities without re-running the network.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.setting import about
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.fit_warnings import on_fit_warning
from napari_cryoseg.viewer.session import same_layer
from napari_cryoseg.widgets.buttons import RunCancel
from napari_cryoseg.widgets.forms import (
    CheckBox,
    ComboBox,
    FieldSpec,
    FloatSpinBox,
    SettingsForm,
    SpinBox,
    described_field,
)
from napari_cryoseg.widgets.segmentation import LayerOutcome, segment_layers

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
        # Layers that cannot be used are listed (greyed, not selectable) with the reason,
        # so an open RGB image does not just go missing from the list.
        for layer, reason in L.unusable_image_layers(self.viewer):
            self.addItem(f"{layer.name}  —  {reason}")
            item = self.model().item(self.count() - 1)
            item.setEnabled(False)
            item.setToolTip(reason)
        if current is not None and any(same_layer(lyr, current) for lyr in layers):
            self.setCurrentIndex(next(i for i, lyr in enumerate(layers)
                                      if same_layer(lyr, current)))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Any:
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        for i, lyr in enumerate(self._layers):
            if same_layer(lyr, layer):
                self.setCurrentIndex(i)


def segment_fields(threshold_shown: Any) -> list[FieldSpec]:
    """The Segment form; ``threshold_shown(value)`` maps None to the model's threshold."""
    copies = about(SegmentSettings, "tta").choices
    return [
        described_field("segment.tiling.tile", TilingConfig, "tile", SpinBox),
        described_field("segment.tiling.overlap", TilingConfig, "overlap", FloatSpinBox),
        described_field("segment.tiling.batch_size", TilingConfig, "batch_size", SpinBox),
        described_field("segment.threshold", SegmentSettings, "threshold", FloatSpinBox,
                        to_widget=threshold_shown,
                        note="Changing it re-labels the last result from cached "
                        "probabilities without re-running the network, and keeps the "
                        "pixels you corrected"),
        described_field("segment.tta", SegmentSettings, "tta", ComboBox,
                        choices=[("off" if n == 1 else f"{n} copies", n) for n in copies]),
        described_field("segment.probabilities", SegmentSettings, "probabilities", CheckBox),
    ]


class SegmentPanel(QWidget):
    """Runs the model on one image layer and shows the result as a Labels layer."""

    #: A threshold change re-labelled the last result (pixels changed); no job ran.
    relabelled = Signal(int)

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.image = LayerCombo(viewer)
        self.image.setToolTip("Image layer to segment (2D, 3D stack or time series)")
        self.form = SettingsForm(session.settings, segment_fields(self._threshold_shown),
                                 on_user_change=self._user_changed)
        top = QHBoxLayout()
        image_label = QLabel("Image:")
        image_label.setFixedWidth(self.form.label_width)  # the form's label column
        top.addWidget(image_label)
        top.addWidget(self.image, 1)
        layout.addLayout(top)
        layout.addWidget(self.form.native)
        self.tile = self.form["segment.tiling.tile"]
        self.overlap = self.form["segment.tiling.overlap"]
        self.batch = self.form["segment.tiling.batch_size"]
        self.threshold = self.form["segment.threshold"]
        self.tta = self.form["segment.tta"]
        self.probabilities = self.form["segment.probabilities"]

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Segment the chosen image with the current model")
        self.cancel_button = QPushButton("Cancel")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.fit_label = QLabel("")  # the latest fit warning (engine/inference/fit_check.py)
        self.fit_label.setWordWrap(True)
        self.fit_label.setStyleSheet("color: #e0a000")
        layout.addWidget(self.fit_label)
        on_fit_warning(session, lambda text, _layer: self.fit_label.setText(text))
        self.run_cancel = RunCancel(self.run_button, self.cancel_button,
                                    self.status.setText, self._fail)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(THRESHOLD_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.apply_threshold)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(lambda: self.run_cancel.cancel())
        session.on_model_changed(lambda _m: self._model_changed())
        self._model_changed()

    # --- settings ----------------------------------------------------------------------
    def _threshold_shown(self, value: Any) -> float:
        model = self.session.model
        if value is not None:
            return float(value)
        return float(model.threshold) if model is not None else 0.5

    def _user_changed(self, key: str, _value: Any) -> None:
        if key == "segment.threshold":
            self._debounce.start()

    def _model_changed(self) -> None:
        model = self.session.model
        binary = model is None or model.config.n_classes == 2
        self.threshold.visible = binary
        self.form.refresh()  # a new model's own threshold (unless the user set one)

    def tiling(self) -> TilingConfig:
        """The tiling every segmentation uses now (from the session's settings)."""
        return self.session.settings.segment.tiling

    # --- run ---------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.status.setText(f"Failed: {message}")

    def run(self) -> Any:
        """Start segmenting the chosen layer; returns the job (None if it could not start)."""
        layer = self.image.layer()
        if layer is None:
            self.status.setText("Open or choose an image layer first.")
            return None
        return self.run_cancel.start(
            lambda: segment_layers(
                self.viewer, self.session, [layer], desc=f"Segmenting {layer.name}",
                on_item=self._on_item, on_progress=self._on_event, on_error=self._fail,
                on_finish=self._on_finish),
            lambda: f"Segmenting '{layer.name}' with {self.session.model.name}…")

    @property
    def job(self) -> Any:
        """The running segmentation job, or None."""
        return self.run_cancel.job

    def cancel(self) -> None:
        self.run_cancel.cancel()

    def _on_item(self, outcome: LayerOutcome) -> None:
        if outcome.status == "failed":
            self._fail(outcome.message)
        elif outcome.status == "closed":
            self.status.setText("The image layer was closed; result discarded.")
        elif outcome.status == "done":
            prediction = outcome.prediction
            verb = "Updated" if outcome.updated else "Added"
            undo = " (Ctrl+Z on the labels layer undoes the re-run)" if outcome.updated else ""
            copies = prediction.info.get("tta", 1)
            tta = f" with {copies}x test-time augmentation" if copies > 1 else ""
            self.status.setText(
                f"{verb} '{outcome.labels_layer.name}' in {prediction.elapsed_s:.1f} s "
                f"on {prediction.info.get('device', '?')}{tta}{undo}.")

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            eta = event.eta_s
            extra = f", about {eta:.0f} s left" if eta is not None and event.done else ""
            self.status.setText(f"Segmenting: {event.done}/{event.total} tiles{extra}")

    def _on_finish(self, job: Any) -> None:
        self.run_cancel.finished(job)
        if job.cancelled:
            self.status.setText("Cancelled; existing layers were left as they were.")

    # --- threshold ---------------------------------------------------------------------
    def apply_threshold(self) -> int:
        """Re-label the chosen image's last result at the current threshold (no network)."""
        record = L.record_for_image(self.session, self.image.layer())
        if record is None or record.probabilities is None:
            return 0
        threshold = self._threshold_shown(self.session.settings.segment.threshold)
        changed = L.apply_threshold(self.session, record.labels_layer, threshold)
        self.status.setText(
            f"Re-labelled '{record.labels_layer.name}' at threshold "
            f"{threshold:.2f}: {changed} pixels changed (no re-run).")
        self.relabelled.emit(changed)
        return changed

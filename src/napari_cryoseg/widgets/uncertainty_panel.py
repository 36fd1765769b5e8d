"""The "Uncertainty" section: where is the model unsure, and go there.

**Uncertainty** runs :func:`~napari_cryoseg.engine.uncertainty.tta_uncertainty` on the
selected image through the session's job runner (with the session's tiling) and adds
``<image> uncertainty``. **Go to uncertain tile** centres the view on the most uncertain
tile not yet corrected or reviewed (tile size from the session's loop settings).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.corrections import changed_mask
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.uncertainty import most_uncertain_tile, tta_uncertainty
from napari_cryoseg.viewer import camera
from napari_cryoseg.viewer.layers import layer_units
from napari_cryoseg.viewer.session import same_layer, unwrap
from napari_cryoseg.viewer.settings import LoopSettings
from napari_cryoseg.widgets.buttons import button
from napari_cryoseg.widgets.forms import SettingsForm, SpinBox, described_field
from napari_cryoseg.widgets.job_runner import JobRunner

UNCERTAINTY_SUFFIX = " uncertainty"


class UncertaintyPanel(QWidget):
    """Compute a TTA uncertainty map; jump to the most uncertain unchecked tile."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.runner = JobRunner.for_session(session)
        self.job: Any = None
        self.maps: dict[int, np.ndarray] = {}  # id(image layer) -> uncertainty map
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.form = SettingsForm(session.settings, [described_field(
            "loop.uncertain_tile", LoopSettings, "uncertain_tile", SpinBox)])
        layout.addWidget(self.form.native)
        row = QHBoxLayout()
        self.compute_btn = button(
            "Uncertainty", self.compute,
            "Segment the selected image under flips and rotations and add "
            "'<image> uncertainty' (how much the copies disagree)")
        self.goto_btn = button(
            "Go to uncertain tile", self.go_to_most_uncertain_tile,
            "Centre the view on the most uncertain tile that is not yet corrected or reviewed")
        row.addWidget(self.compute_btn)
        row.addWidget(self.goto_btn)
        layout.addLayout(row)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        session.on_model_changed(self._on_model_changed)
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.compute_btn.setEnabled(not self.runner.busy)
        self.goto_btn.setEnabled(bool(self.maps))

    def _on_model_changed(self, _model: Any) -> None:
        self.maps.clear()  # the maps belong to the old model
        self._update_buttons()

    def selected_image_layer(self) -> Any:
        """The selected image, or the image of the selected CryoSeg labels layer."""
        active = self.viewer.layers.selection.active
        for record in self.session.live_records():
            if same_layer(active, record.labels_layer) or same_layer(active, record.image_layer):
                return record.image_layer
        if active is not None and type(unwrap(active)).__name__ == "Image":
            return unwrap(active)
        records = self.session.live_records()
        return records[-1].image_layer if len(records) == 1 else None

    def compute(self) -> Any:
        """Start the uncertainty job for the selected image."""
        image_layer = self.selected_image_layer()
        if image_layer is None:
            show_warning("select an image (or its CryoSeg labels layer) first")
            return None
        if self.runner.busy:
            show_warning(f"wait for {self.session.busy} to finish first")
            return None
        from napari_cryoseg.viewer.layers import ensure_model

        try:
            model = ensure_model(self.session)
            self.job = self.runner.start(
                "uncertainty", tta_uncertainty, np.asarray(image_layer.data), model,
                tiling=self.session.settings.segment.tiling, device=self.session.device,
                desc=f"Uncertainty of {image_layer.name}", total=None,
                on_event=self._on_event,
                on_result=lambda result: self._show(image_layer, result),
                on_error=lambda message: self.status_label.setText(f"failed: {message}"),
                on_finish=self._on_finish)
        except CryoSegError as err:
            show_warning(str(err))
            return None
        return self.job

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.status_label.setText(event.message or event.stage)

    def _on_finish(self, job: Any) -> None:
        if self.job is job:
            self.job = None
        self._update_buttons()

    def _show(self, image_layer: Any, result: np.ndarray) -> None:
        if not self.session.has_layer(image_layer):
            self.status_label.setText("the image layer was closed; uncertainty discarded")
            return
        self.maps[id(unwrap(image_layer))] = result
        name = f"{image_layer.name}{UNCERTAINTY_SUFFIX}"
        for layer in self.viewer.layers:
            if layer.name == name and np.shape(layer.data) == result.shape:
                layer.data = result
                break
        else:
            units = layer_units(image_layer)
            self.viewer.add_image(result, name=name, colormap="magma", blending="additive",
                                  opacity=0.6, contrast_limits=(0.0, 1.0),
                                  scale=image_layer.scale, translate=image_layer.translate,
                                  **({"units": units} if units else {}))
        self.status_label.setText(f"uncertainty of {image_layer.name}: mean "
                                  f"{float(result.mean()):.3f}")

    def go_to_most_uncertain_tile(self) -> tuple[int, int] | None:
        """Centre the camera on the most uncertain tile not yet corrected or reviewed."""
        image_layer = self.selected_image_layer()
        if (image_layer is None or id(image_layer) not in self.maps) and len(self.maps) == 1:
            key = next(iter(self.maps))
            image_layer = next((unwrap(ly) for ly in self.viewer.layers
                                if id(unwrap(ly)) == key), None)
        if image_layer is None or id(image_layer) not in self.maps:
            show_warning("compute the uncertainty of this image first")
            return None
        umap = self.maps[id(image_layer)]
        record = self.session.record_for_image(image_layer)
        exclude = None
        if record is not None:
            exclude = changed_mask(record.predicted, np.asarray(record.labels_layer.data))
            if record.reviewed is not None:
                exclude = exclude | record.reviewed
        plane = camera.current_plane(self.viewer, image_layer)
        umap_plane = umap[plane] if plane else umap
        exclude_plane = exclude[plane] if (exclude is not None and plane) else exclude
        tile = self.session.settings.loop.uncertain_tile
        size = (min(tile, umap_plane.shape[0]), min(tile, umap_plane.shape[1]))
        y, x = most_uncertain_tile(umap_plane, size, exclude_plane)
        camera.show_box(self.viewer, image_layer, (y, x), size)
        if record is not None:
            self.viewer.layers.selection.active = record.labels_layer
        self.status_label.setText(
            f"most uncertain tile: rows {y}-{y + size[0]}, cols {x}-{x + size[1]}")
        return y, x

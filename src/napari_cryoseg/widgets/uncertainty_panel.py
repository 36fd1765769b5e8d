"""The "Uncertainty" section: where is the model unsure, and go there.

**Uncertainty** runs :func:`~napari_cryoseg.engine.inference.uncertainty.tta_uncertainty` on the
selected image through the session's job runner and hands the map to the session's
:class:`~napari_cryoseg.viewer.uncertainty_state.UncertaintyMaps`, which keeps it per
image layer and shows ``<image> uncertainty``. **Go to uncertain tile** centres the view
on the most uncertain tile not yet corrected or reviewed (tile size from the session's
loop settings). The panel holds only its widgets and the running job.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import Progress
from napari_cryoseg.engine.inference.uncertainty import tta_uncertainty
from napari_cryoseg.viewer.settings import LoopSettings
from napari_cryoseg.viewer.uncertainty_state import UncertaintyMaps
from napari_cryoseg.widgets.buttons import button
from napari_cryoseg.widgets.forms import SettingsForm, SpinBox, described_field
from napari_cryoseg.widgets.job_runner import JobRunner


class UncertaintyPanel(QWidget):
    """Compute a TTA uncertainty map; jump to the most uncertain unchecked tile."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.runner = JobRunner.for_session(session)
        self.maps = UncertaintyMaps.for_session(session)
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
        session.on_model_changed(lambda _model: self._update_buttons())
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.compute_btn.setEnabled(not self.runner.busy)
        self.goto_btn.setEnabled(self.maps.has_maps)

    def compute(self) -> Any:
        """Start the uncertainty job for the selected image."""
        if self.runner.busy:  # before the model loads
            show_warning(f"wait for {self.session.busy} to finish first")
            return None
        try:
            job = self.maps.job()
            return self.runner.start(
                "uncertainty", tta_uncertainty, *job.args, desc=job.desc, total=None,
                on_event=self._on_event,
                on_result=lambda result: self._show(job.image_layer, result),
                on_error=lambda message: self.status_label.setText(f"failed: {message}"),
                on_finish=self._on_finish, **job.kwargs)
        except CryoSegError as err:
            show_warning(str(err))
            return None

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.status_label.setText(event.message or event.stage)

    def _on_finish(self, _job: Any) -> None:
        self._update_buttons()

    def _show(self, image_layer: Any, result: Any) -> None:
        try:
            self.maps.receive(image_layer, result)
        except CryoSegError as err:
            self.status_label.setText(str(err))
            return
        self.status_label.setText(f"uncertainty of {image_layer.name}: mean "
                                  f"{float(result.mean()):.3f}")

    def go_to_most_uncertain_tile(self) -> tuple[int, int] | None:
        """Centre the camera on the most uncertain tile not yet corrected or reviewed."""
        try:
            tile = self.maps.go_to_next_tile()
        except CryoSegError as err:
            show_warning(str(err))
            return None
        self.status_label.setText(tile.describe())
        return tile.y, tile.x

"""The "Train new model" section: a model from a few painted strokes, with a live preview.

The user names classes (the class list), adds an annotation layer to one or more
images, paints a few strokes of each class (background too: unpainted pixels are
ignored), picks a size and a time budget and presses **Train**. Training runs through
the session's job runner (progress in napari's activity dock, live loss / Dice curve
here) with a live preview of the region in view; **Cancel** throws the run away. The
new model becomes the session's model and segments the open images through the dock's
one segmentation path, so the results are CryoSeg labels layers the correct / fine-tune
loop knows. The annotation layers are only read, never changed.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.model.config import PRESETS, preset
from napari_cryoseg.viewer.annotations import AnnotationStore
from napari_cryoseg.viewer.settings import LoopSettings, preset_hint
from napari_cryoseg.viewer.train_round import TrainRound
from napari_cryoseg.viewer.training_round import RoundRefused
from napari_cryoseg.widgets._loss_plot import LossPlot
from napari_cryoseg.widgets.budget_line import BudgetLine
from napari_cryoseg.widgets.buttons import button
from napari_cryoseg.widgets.class_list import ClassList
from napari_cryoseg.widgets.forms import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    SettingsForm,
    SpinBox,
    described_field,
)
from napari_cryoseg.widgets.job_runner import JobRunner
from napari_cryoseg.widgets.round_view import RoundView
from napari_cryoseg.widgets.segmentation import segment_layers

#: Presets from the cheapest up.
PRESET_ORDER = sorted(PRESETS, key=lambda name: preset(name).parameter_count())

TRAIN_FIELDS = [
    described_field("train.preset", TrainConfig, "preset", ComboBox, choices=[
        (f"{name} ({preset(name).parameter_count() / 1e6:.2g} M parameters)", name)
        for name in PRESET_ORDER]),
    described_field("train.init", TrainConfig, "init", ComboBox, choices=[
        ("EM backbone (pretrained)", "backbone"), ("random weights", "random")]),
    described_field("train.time_budget_s", TrainConfig, "time_budget_s", FloatSpinBox,
                    no_limit="no limit"),
    described_field("train.steps", TrainConfig, "steps", SpinBox, no_limit="no limit"),
    described_field("loop.preview", LoopSettings, "preview", CheckBox),
    described_field("loop.preview_every_s", LoopSettings, "preview_every_s", FloatSpinBox),
]

HELP = ("Name your classes, add an annotation layer to an image and paint a few strokes of "
        "each class, <b>background too</b>: only painted pixels are learnt from. Then "
        "Train; the new model segments the open images.")


class TrainPanel(RoundView, QWidget):
    """Class list, Annotate, settings, Train / Cancel, curve, preview; binds a
    :class:`TrainRound`."""

    #: A preview was shown (the training step whose weights made it).
    preview_shown = Signal(int)
    #: A new model became the session's model.
    model_trained = Signal(object)

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.store = AnnotationStore.for_session(session)
        self.runner = JobRunner.for_session(session)
        self.round = TrainRound(session, self.store)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        help_text = QLabel(HELP)
        help_text.setWordWrap(True)
        help_text.setStyleSheet("color: gray")
        layout.addWidget(help_text)
        self.class_list = ClassList(self.store)
        layout.addWidget(self.class_list)
        self.annotate_btn = button(
            "Annotate selected image", self.annotate_selected,
            "Add an annotation layer to the image(s) selected in the layer list")
        layout.addWidget(self.annotate_btn)
        self.form = SettingsForm(session.settings, TRAIN_FIELDS)
        layout.addWidget(self.form.native)
        self.hint_label = QLabel("")
        self.hint_label.setWordWrap(True)
        self.hint_label.setStyleSheet("color: gray")
        layout.addWidget(self.hint_label)
        self.budget_line = BudgetLine(session, self.runner, "train")
        layout.addWidget(self.budget_line)
        grid = QGridLayout()
        self.train_btn = button("Train", self.start_training,
                                "Train a new model on the painted strokes")
        self.cancel_btn = button("Cancel", self.round.cancel,
                                 "Stop and throw this training away: no model is made")
        for i, btn in enumerate((self.train_btn, self.cancel_btn)):
            grid.addWidget(btn, 0, i)
        layout.addLayout(grid)
        self.apply_btn = button("Apply kept-aside model", self.apply_kept_aside,
                                "Make the model kept aside the current one anyway and "
                                "segment the open images with it")
        layout.addWidget(self.apply_btn)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #ff5555; font-weight: bold")
        layout.addWidget(self.warning_label)
        self.plot = LossPlot(self)
        self.plot.empty_text = "press Train to train"
        self.plot.setToolTip("Training loss (left axis) and the Dice on held-out strokes "
                             "(right axis; it scores only what you painted, so whole images "
                             "score lower)")
        layout.addWidget(self.plot)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)
        session.settings.on_change(lambda job: self._show_hint() if job == "train" else None)
        self.round.on_change(self._show_round)
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._show_hint()
        self._show_round()

    def _show_hint(self) -> None:
        self.hint_label.setText(preset_hint(self.session.settings.train.preset))

    def _show_round(self) -> None:
        """The round's lines and buttons as they are now."""
        self.status_label.setText(self.round.status)
        self.warning_label.setText(self.round.warning)
        self.metrics_label.setText(self.round.metrics)
        self.apply_btn.setVisible(self.round.kept_aside is not None)
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.train_btn.setEnabled(not self.runner.busy)
        self.cancel_btn.setEnabled(self.round.running)

    # --- annotating --------------------------------------------------------------------
    def annotate_selected(self) -> list[Any]:
        """Annotation layers for the selected image layers (or the only image)."""
        try:
            made = self.round.annotate_selection(self.viewer)
        except RoundRefused as refused:
            show_warning(str(refused))
            self.round.changed(status=str(refused))
            return []
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return []
        self.round.changed(
            status=f"paint on {', '.join(repr(layer.name) for layer in made)}; each class's "
            "Paint button picks its brush")
        return made

    # --- training ----------------------------------------------------------------------
    def start_training(self) -> Any:
        """Check the annotations and start training; None (with a message) if refused."""
        try:
            start, preview = self.round.prepare(self.viewer)
            job = self._start_round(start, preview)
        except RoundRefused as refused:
            show_warning(str(refused))
            return None
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.round.changed(status=str(err))
            return None
        return job

    def _on_result(self, result: Any) -> None:
        model = self.round.on_result(result)
        if model is not None:
            self.model_trained.emit(model)

    def apply_kept_aside(self) -> None:
        """Apply the model kept aside (the user's choice) and segment the open images."""
        model = self.round.apply_kept_aside()
        if model is not None:
            self.model_trained.emit(model)
            self.segment_open_images()

    def _on_finish(self, job: Any) -> None:
        if self.round.finished(job):
            self.segment_open_images()
        self._update_buttons()

    def segment_open_images(self) -> Any:
        """Segment every open image with the session's model (the dock's one path)."""
        images = self.round.images_to_segment(self.viewer)
        if not images:
            return None
        name = self.session.model.name
        try:
            return segment_layers(
                self.viewer, self.session, images, kind="segment",
                desc=f"Segmenting with {name}",
                on_finish=lambda job: self.round.changed(
                    status=self.round.segmented_text(len(images), name, job.cancelled)))
        except CryoSegError as err:
            show_error(str(err))
            return None

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
from napari_cryoseg.engine.events import Message
from napari_cryoseg.engine.train import train
from napari_cryoseg.engine.train_settings import TrainConfig
from napari_cryoseg.engine.verdict import judge
from napari_cryoseg.model.config import PRESETS, preset
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.annotations import AnnotationStore, fit_to_memory
from napari_cryoseg.viewer.budget import time_split
from napari_cryoseg.viewer.live_preview import LivePreview, preview_region
from napari_cryoseg.viewer.session import same_layer
from napari_cryoseg.viewer.settings import LoopSettings, preset_hint
from napari_cryoseg.viewer.words import dock_words
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
from napari_cryoseg.widgets.segmentation import segment_layers
from napari_cryoseg.widgets.training_events import show_training_event

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


def _train_job(images: list, masks: list, valid_masks: list, config: Any, mapping: Any,
               names: list, colors: list, preview: Any, model_name: str,
               pixel_size_nm: float | None):
    """Worker job: :func:`~napari_cryoseg.engine.train.train` on the painted pixels."""
    yield Message(f"training on {len(images)} annotated image(s)…")
    return (yield from train(images, masks, config, mapping, names=names,
                             class_colors=colors, valid_masks=valid_masks, preview=preview,
                             model_name=model_name, pixel_size_nm=pixel_size_nm))


class TrainPanel(QWidget):
    """Class list, Annotate, settings, Train / Cancel, curve, preview."""

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
        self.job: Any = None
        self.preview: LivePreview | None = None
        self._annotated: list[Any] = []
        self._pending_segment = False
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
        self.cancel_btn = button("Cancel", self.cancel,
                                 "Stop and throw this training away: no model is made")
        for i, btn in enumerate((self.train_btn, self.cancel_btn)):
            grid.addWidget(btn, 0, i)
        layout.addLayout(grid)
        self.kept_aside: Any = None  # a model that learned too little, until applied
        self.verdict: Any = None
        self.apply_btn = button("Apply kept-aside model", self.apply_kept_aside,
                                "Make the model kept aside the current one anyway and "
                                "segment the open images with it")
        self.apply_btn.setVisible(False)
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
                             "(right axis)")
        layout.addWidget(self.plot)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)
        session.settings.on_change(lambda job: self._show_hint() if job == "train" else None)
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._show_hint()
        self._update_buttons()

    def _show_hint(self) -> None:
        self.hint_label.setText(preset_hint(self.session.settings.train.preset))

    def _update_buttons(self) -> None:
        self.train_btn.setEnabled(not self.runner.busy)
        self.cancel_btn.setEnabled(self.job is not None)

    # --- annotating --------------------------------------------------------------------
    def annotate_selected(self) -> list[Any]:
        """Annotation layers for the selected image layers (or the only image)."""
        images = L.segmentable_image_layers(self.viewer)
        selected = [layer for layer in images if layer in self.viewer.layers.selection]
        unusable = [(layer, reason) for layer, reason in L.unusable_image_layers(self.viewer)
                    if layer in self.viewer.layers.selection]
        if not selected and len(images) == 1 and not unusable:
            selected = images
        if not selected and unusable:
            layer, reason = unusable[0]
            message = f"layer '{layer.name}' cannot be annotated: {reason}"
            show_warning(message)
            self.status_label.setText(message)
            return []
        if not selected:
            message = ("select the image layer(s) to annotate in the layer list" if images
                       else "open an image first: there is nothing to annotate")
            show_warning(message)
            self.status_label.setText(message)
            return []
        try:
            made = [self.store.annotate(layer) for layer in selected]
            spec = (self.store.classes.foreground or self.store.classes.classes)[0]
            self.store.paint_with(spec.value, made[-1])
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return []
        self.status_label.setText(
            f"paint on {', '.join(repr(layer.name) for layer in made)}; each class's Paint "
            "button picks its brush")
        return made

    # --- training ----------------------------------------------------------------------
    def start_training(self) -> Any:
        """Check the annotations and start training; None (with a message) if refused."""
        if self.runner.busy:
            show_warning(f"wait for {self.session.busy or 'the running job'} to finish "
                         "(or cancel it) first")
            return None
        try:
            annotations = self.store.snapshot()
            config = fit_to_memory(self.session.settings.train, annotations,
                                   self.session.device)
            preview = self._make_preview(annotations)
            names = list(annotations.mapping.names)
            self.job = self.runner.start(
                "train", _train_job, annotations.images, annotations.masks,
                annotations.valid_masks, config, annotations.mapping, annotations.names,
                annotations.class_colors,
                None if preview is None else preview.region.request(
                    self.session.settings.loop.preview_every_s),
                "trained: " + ", ".join(names[1:]),
                L.pixel_size_nm(annotations.image_layers[0]),
                desc=f"Training a {config.preset} model", on_event=self._on_event,
                on_result=lambda result: self._on_result(result, annotations),
                on_error=self._on_error, on_finish=self._on_finish)
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.status_label.setText(str(err))
            return None
        self.preview = preview
        self._annotated = annotations.image_layers
        self.plot.clear()
        self.plot.total_steps = config.steps
        self.plot.title = f"{len(annotations.images)} image(s)"
        self.warning_label.setText("")
        self.metrics_label.setText("")
        self.kept_aside = None
        self.apply_btn.setVisible(False)
        self.status_label.setText("starting…")
        self._update_buttons()
        return self.job

    def _make_preview(self, annotations: Any) -> LivePreview | None:
        settings = self.session.settings.loop
        if not settings.preview:
            return None
        active = self.viewer.layers.selection.active
        image = next((image for image, labels in self.store.links()
                      if (same_layer(active, image) or same_layer(active, labels))
                      and any(same_layer(image, used) for used in annotations.image_layers)),
                     annotations.image_layers[0])
        region = preview_region(self.viewer, image, settings.preview_edge)
        return LivePreview(self.viewer, region, list(annotations.mapping.names),
                           list(annotations.class_colors), "training")

    def cancel(self) -> None:
        """Stop and discard the run; no model is made, the annotations stay."""
        if self.job is not None:
            self.status_label.setText("cancelling…")
            self.job.cancel()

    def _on_event(self, event: Any) -> None:
        if show_training_event(event, self.plot, self.status_label, self.preview,
                               self.preview_shown):
            return
        if isinstance(event, Message):
            if event.level == "warning":
                text = dock_words(event.text.removeprefix("WARNING: "))
                show_warning(f"CryoSeg: {text}")
                self.warning_label.setText(
                    "\n".join(filter(None, [self.warning_label.text(), text])))
            else:
                self.status_label.setText(dock_words(event.text))

    def _on_error(self, message: str) -> None:
        self.status_label.setText(f"training failed: {message} (your annotations are "
                                  "unchanged)")

    def _on_result(self, result: Any, annotations: Any) -> None:
        model = result.best
        model.provenance = {**model.provenance, **annotations.provenance()}
        dice = (f"; Dice on held-out strokes {result.best_dice:.3f} (step {result.best_step})"
                if result.best_dice is not None else "")
        self.metrics_label.setText(f"{result.steps} steps ({result.stop_reason}){dice}\n"
                                   + time_split(model.provenance))
        self.verdict = judge("train", result.steps, model.class_names,
                             after=model.provenance.get("metrics", {}).get("validation"),
                             pretrained=model.provenance.get("parent") is not None)
        if not self.verdict.apply:
            self.kept_aside = model
            self.warning_label.setText(self.verdict.text())
            self.apply_btn.setVisible(True)
            self.status_label.setText(f"the new model '{model.name}' was kept aside; the "
                                      "current model is unchanged. Apply it anyway, or "
                                      "train longer")
            return
        self._apply(model)

    def apply_kept_aside(self) -> None:
        """Apply the model kept aside (the user's choice) and segment the open images."""
        model, self.kept_aside = self.kept_aside, None
        self.apply_btn.setVisible(False)
        if model is not None and not self.runner.busy:
            self._apply(model)
            self._pending_segment = False
            self.segment_open_images()

    def _apply(self, model: Any) -> None:
        self.session.set_model(model)
        self.status_label.setText(f"new model '{model.name}' is the current model; "
                                  "segmenting the open images…")
        self.model_trained.emit(model)
        self._pending_segment = True  # started once this job has ended

    def _on_finish(self, job: Any) -> None:
        if self.job is job:
            self.job = None
        if self.preview is not None:
            self.preview.remove()
            self.preview = None
        if job.cancelled:
            self.status_label.setText("cancelled: no model was made; your annotations are "
                                      "unchanged")
        self._update_buttons()
        if self._pending_segment:
            self._pending_segment = False
            self.segment_open_images()

    def segment_open_images(self) -> Any:
        """Segment every open image with the session's model (the dock's one path)."""
        images = L.segmentable_image_layers(self.viewer)
        if not images or self.session.model is None:
            return None
        name = self.session.model.name
        try:
            return segment_layers(
                self.viewer, self.session, images, kind="segment",
                desc=f"Segmenting with {name}",
                on_finish=lambda job: self.status_label.setText(
                    f"segmented {len(images)} image(s) with the new model '{name}'"
                    + (" (cancelled)" if job.cancelled else "")
                    + "; correct the results and fine-tune, or Save model… in Fine-tune"))
        except CryoSegError as err:
            show_error(str(err))
            return None

"""The "Fine-tune" section: train a copy of the model on the corrections, swap, revert, save.

**Fine-tune** runs the round :class:`~napari_cryoseg.viewer.finetune_round.FinetuneRound`
prepares through the session's
job runner (progress in napari's activity dock, live loss / Dice curve here, a live
preview of the region in view). **Cancel** at any moment leaves the current model as it
was. When training ends the new model is hot-swapped in
on the main thread and the layers chosen in the settings are segmented again
(corrections and reviewed marks are kept). **Revert model** goes back one model,
**Save model…** writes a model file with provenance (and adds it to Recent).

Corrections painted with a label value the model has no class for bring up the "add
class?" prompt (:mod:`~napari_cryoseg.widgets.new_class_prompt`): accepting grows the
model's head (:func:`~napari_cryoseg.model.heads.add_classes`) and fine-tunes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QGridLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError, OutputExistsError
from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
from napari_cryoseg.viewer.finetune_outcome import held_out_dice
from napari_cryoseg.viewer.finetune_round import FinetuneRound
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.settings import LoopSettings
from napari_cryoseg.viewer.training_round import RoundRefused
from napari_cryoseg.viewer.words import bundled_model_available, model_file_suggestion
from napari_cryoseg.widgets._loss_plot import LossPlot
from napari_cryoseg.widgets.budget_line import BudgetLine
from napari_cryoseg.widgets.buttons import button
from napari_cryoseg.widgets.forms import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    SettingsForm,
    SpinBox,
    described_field,
)
from napari_cryoseg.widgets.job_runner import JobRunner
from napari_cryoseg.widgets.model_panel import remember_recent
from napari_cryoseg.widgets.new_class_prompt import NewClassPrompt
from napari_cryoseg.widgets.round_view import RoundView
from napari_cryoseg.widgets.segmentation import segment_layers

FINETUNE_FIELDS = [
    described_field("finetune.time_budget_s", FinetuneConfig, "time_budget_s", FloatSpinBox,
                    no_limit="no limit"),
    described_field("finetune.steps", FinetuneConfig, "steps", SpinBox, no_limit="no limit"),
    described_field("finetune.lr", FinetuneConfig, "lr", FloatSpinBox),
    described_field("finetune.freeze_encoder", FinetuneConfig, "freeze_encoder", CheckBox),
    described_field("loop.resegment", LoopSettings, "resegment", ComboBox),
    described_field("loop.preview", LoopSettings, "preview", CheckBox),
]
#: Seconds after the last edit before the corrections are searched for new label values.
NEW_LABELS_DEBOUNCE_MS = 300


class FinetunePanel(RoundView, QWidget):
    """Fine-tune, Cancel, Revert model, Save model…; binds a :class:`FinetuneRound`."""

    #: A model file was written (its path): the Model section adds it to Recent.
    model_saved = Signal(str)
    #: A live preview was shown (the training step whose weights made it).
    preview_shown = Signal(int)

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.store = CorrectionStore.for_session(session)
        self.runner = JobRunner.for_session(session)
        self.round = FinetuneRound(session, self.store)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.form = SettingsForm(session.settings, FINETUNE_FIELDS)
        layout.addWidget(self.form.native)
        self.budget = self.form["finetune.time_budget_s"]
        self.steps = self.form["finetune.steps"]
        self.resegment_choice = self.form["loop.resegment"]
        self.budget_line = BudgetLine(session, self.runner, "finetune",
                                      lambda: self.session.model)
        layout.addWidget(self.budget_line)
        grid = QGridLayout()
        self.finetune_btn = button("Fine-tune", self.start_finetune,
                                   "Train a copy of the current model on your corrections")
        self.cancel_btn = button("Cancel", self.round.cancel,
                                 "Stop at the next step; the current model stays")
        self.revert_btn = button("Revert model", self.revert,
                                 "Go back to the model before the last fine-tune")
        self.save_btn = button("Save model…", self.save_model_dialog,
                               "Write the current model to a file (with its history)")
        # A result the change check flagged waits behind these two (hidden otherwise).
        self.apply_btn = button("Apply", self.apply_pending,
                                "Use the fine-tuned model although it changes your other "
                                "images more than your corrections did")
        self.discard_btn = button("Discard", self.round.discard_kept_aside,
                                  "Keep the current model; forget the fine-tuned one")
        for i, btn in enumerate((self.finetune_btn, self.cancel_btn, self.revert_btn,
                                 self.save_btn, self.apply_btn, self.discard_btn)):
            grid.addWidget(btn, i // 2, i % 2)
        layout.addLayout(grid)
        self.prompt = NewClassPrompt(self)
        self.prompt.accepted.connect(lambda: self.start_finetune(add_new_classes=True))
        layout.addWidget(self.prompt)
        self._new_labels_timer = QTimer(self, singleShot=True,
                                        interval=NEW_LABELS_DEBOUNCE_MS)
        self._new_labels_timer.timeout.connect(self.refresh_new_labels)
        self.store.listeners.append(lambda _layer: self._new_labels_timer.start())
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.plot = LossPlot(self)
        layout.addWidget(self.plot)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)
        self.round.on_change(self._show_round)
        session.on_model_changed(self._on_model_changed)
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._show_round()

    def _show_round(self) -> None:
        """The round's lines and buttons as they are now."""
        self.status_label.setText(self.round.status)
        self.metrics_label.setText(self.round.metrics)
        self.apply_btn.setVisible(self.round.kept_aside is not None)
        self.discard_btn.setVisible(self.round.kept_aside is not None)
        self._show_unknown_labels()  # a swapped-in model may know them now
        self._update_buttons()

    def _update_buttons(self) -> None:
        idle = not self.runner.busy
        # the bundled default counts: it is what the dock shows as current, loaded on use
        has_model = self.session.model is not None or bundled_model_available()
        self.finetune_btn.setEnabled(idle and has_model)
        self.prompt.accept_btn.setEnabled(idle and has_model)
        self.cancel_btn.setEnabled(self.round.running)
        self.revert_btn.setEnabled(idle and bool(self.session.previous_models))
        self.save_btn.setEnabled(has_model and not self.round.running)

    # --- fine-tuning -------------------------------------------------------------------
    def refresh_new_labels(self) -> list[Any]:
        """Look for label values the model has no class for; show the prompt if any."""
        self.round.new_labels()
        return self._show_unknown_labels()

    def _show_unknown_labels(self) -> list[Any]:
        model = self.session.model
        self.prompt.set_labels(self.round.unknown_labels, model.name if model else "")
        return self.round.unknown_labels

    def start_finetune(self, add_new_classes: bool = False) -> Any:
        """Start training a copy of the current model on the corrections.

        With label values the model has no class for, only ``add_new_classes=True`` (the
        prompt's button) starts: the model grows by the classes named in the prompt.
        """
        try:
            start, preview = self.round.prepare(
                self.viewer, self.prompt.names() if add_new_classes else None)
            job = self._start_round(start, preview)
        except RoundRefused as refused:
            show_warning(str(refused))
            return None
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return None
        finally:
            self._show_unknown_labels()  # found again by prepare()
        return job

    def _on_result(self, value: tuple[Any, Any]) -> None:
        result, data = value
        self.plot.start_at(held_out_dice(result.before))
        self.round.on_result(result, data)

    def _on_finish(self, job: Any) -> None:
        if self.round.finished(job):
            self.resegment()
        self._update_buttons()

    def apply_pending(self) -> None:
        """Swap in the fine-tuned model the change check kept aside, and re-segment."""
        if self.round.apply_kept_aside():
            self.resegment()

    # --- re-segmentation, revert, save -------------------------------------------------
    def resegment(self) -> Any:
        """Segment the chosen layers again with the current model (corrections kept)."""
        records = self.round.records_to_resegment()
        if not records or self.session.model is None:
            return None
        if self.runner.busy:
            show_warning(f"re-segmentation skipped: {self.session.busy} is running")
            return None
        name = self.session.model.name
        try:
            return segment_layers(
                self.viewer, self.session, [r.image_layer for r in records], kind="resegment",
                desc=f"Re-segmenting with {name}", on_progress=self._on_event,
                on_finish=lambda job: self.round.changed(
                    status=f"re-segmented {len(records)} layer(s) with {name}"
                    + (" (cancelled)" if job.cancelled else "")))
        except CryoSegError as err:
            show_error(str(err))
            return None

    def revert(self) -> Any:
        """Go back to the model before the last fine-tune and re-segment."""
        try:
            model = self.round.revert()
        except RoundRefused as refused:
            show_info(str(refused))
            return None
        self.resegment()
        return model

    def save_model_to(self, path: Any, *, overwrite: bool = False) -> Any:
        """Write the current model (with provenance); refuses to overwrite unless asked."""
        from napari_cryoseg.model.checkpoint import now_iso, save_model

        model = self.session.model
        if model is None:
            show_warning("no model to save")
            return None
        model.provenance = {**model.provenance, "saved": now_iso()}
        try:
            written = save_model(model, path, overwrite=overwrite)
        except OutputExistsError:
            show_error(f"'{path}' already exists and was not overwritten; choose another name")
            return None
        except CryoSegError as err:
            show_error(str(err))
            return None
        remember_recent(written)
        self.model_saved.emit(str(written))
        show_info(f"model saved to {written}")
        self.round.changed(status=f"model saved to {written}")
        return written

    def save_model_dialog(self) -> None:
        model = self.session.model
        # next to the autosaved corrections (the project folder) when it exists, named
        # after the model ("cryoseg-default fine-tune 2 (14-05).pt"), never the cwd
        folder = self.store.project_dir if self.store.project_dir.is_dir() else Path.home()
        suggestion = model_file_suggestion(model, folder) if model is not None else \
            Path.home() / "model.pt"
        path, _ = QFileDialog.getSaveFileName(self, "Save model", str(suggestion),
                                              "CryoSeg model (*.pt)")
        if path:
            # The dialog itself asked before replacing an existing file.
            self.save_model_to(path, overwrite=True)

    def _on_model_changed(self, model: Any) -> None:
        self._new_labels_timer.start()  # what counts as a new class depends on the model
        self.round.model_changed(model)
        self._update_buttons()

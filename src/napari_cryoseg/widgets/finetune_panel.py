"""The "Fine-tune" section: train a copy of the model on the corrections, swap, revert, save.

**Fine-tune** runs :func:`~napari_cryoseg.engine.jobs.finetune_job` through the session's
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

# Over 450 lines: the run lifecycle, Apply / Discard of a flagged result and the add-class
# prompt still live here; they move to a Qt-free controller in viewer/ next.

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QGridLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError, OutputExistsError
from napari_cryoseg.engine.events import Message, Progress
from napari_cryoseg.engine.finetune_settings import FinetuneConfig
from napari_cryoseg.engine.jobs import finetune_job
from napari_cryoseg.engine.memory import fit_training_patch
from napari_cryoseg.model.heads import add_classes
from napari_cryoseg.model.provenance import Provenance
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.budget import time_split
from napari_cryoseg.viewer.finetune_outcome import describe_outcome
from napari_cryoseg.viewer.live_preview import LivePreview, preview_region
from napari_cryoseg.viewer.new_classes import adopt_classes, find_new_labels, show_new_labels
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import SegmentationRecord, same_layer
from napari_cryoseg.viewer.settings import LoopSettings
from napari_cryoseg.viewer.training_data import build_training_data, unlabelled_images
from napari_cryoseg.viewer.words import (
    bundled_model_available,
    dock_words,
    finetuned_name,
    model_file_suggestion,
)
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
from napari_cryoseg.widgets.segmentation import segment_layers
from napari_cryoseg.widgets.training_events import show_training_event

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


def _finetune_from_sources(model: Any, sources: list, band_px: int, config: Any,
                           value_map: dict[int, int] | None = None, preview: Any = None,
                           unlabelled: list | tuple = ()):
    """Worker job: build the training data from the snapshots, then fine-tune.

    ``value_map`` turns painted label values into the class indices of a model grown by
    new classes (on the copies; the layers are not touched). Returns
    ``(FinetuneResult, TrainingData)``; the masks are derived here, not on the main
    thread (2-3 s for a 2048² corrected image measured before this moved).
    """
    data = build_training_data(sources, band_px)
    for value, index in (value_map or {}).items():
        for mask in data.masks:
            mask[mask == value] = index
    result = yield from finetune_job(model, data, config, preview, unlabelled)
    return result, data


def _dice(metrics: Any) -> float | None:
    value = metrics.get("dice") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


class FinetunePanel(QWidget):
    """Fine-tune, Cancel, Revert model, Save model…; settings from the session."""

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
        self.job: Any = None
        self._own_model: Any = None  # the model this panel swapped in or reverted to
        self._pending_resegment = False
        self._added: dict[int, int] = {}  # label value -> class index of this run
        self.preview: LivePreview | None = None
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
        self.cancel_btn = button("Cancel", self.cancel,
                                 "Stop at the next step; the current model stays")
        self.revert_btn = button("Revert model", self.revert,
                                 "Go back to the model before the last fine-tune")
        self.save_btn = button("Save model…", self.save_model_dialog,
                               "Write the current model to a file (with its history)")
        # A result the change check flagged waits behind these two (hidden otherwise).
        self.apply_btn = button("Apply", self.apply_pending,
                                "Use the fine-tuned model although it changes your other "
                                "images more than your corrections did")
        self.discard_btn = button("Discard", self.discard_pending,
                                  "Keep the current model; forget the fine-tuned one")
        self._pending: tuple | None = None
        for i, btn in enumerate((self.finetune_btn, self.cancel_btn, self.revert_btn,
                                 self.save_btn, self.apply_btn, self.discard_btn)):
            grid.addWidget(btn, i // 2, i % 2)
        self.apply_btn.setVisible(False)
        self.discard_btn.setVisible(False)
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
        session.on_model_changed(self._on_model_changed)
        self.runner.started.connect(lambda _job: self._update_buttons())
        self.runner.finished.connect(lambda _job: self._update_buttons())
        self._update_buttons()

    def _update_buttons(self) -> None:
        idle = not self.runner.busy
        # the bundled default counts: it is what the dock shows as current, loaded on use
        has_model = self.session.model is not None or bundled_model_available()
        self.finetune_btn.setEnabled(idle and has_model)
        self.prompt.accept_btn.setEnabled(idle and has_model)
        self.cancel_btn.setEnabled(self.job is not None)
        self.revert_btn.setEnabled(idle and bool(self.session.previous_models))
        self.save_btn.setEnabled(has_model and self.job is None)

    # --- fine-tuning -------------------------------------------------------------------
    def finetune_config(self, images: list[Any], model: Any) -> Any:
        """The session's fine-tune settings for this run: its device, and the patch of
        :func:`~napari_cryoseg.engine.memory.fit_training_patch` (refused if it cannot fit)."""
        config = self.session.settings.finetune
        patch = fit_training_patch(
            model.config, config.patch, config.batch_size, [np.shape(i) for i in images],
            self.session.device, what="fine-tuning {batch} patches of {patch} px",
            advice="use fewer or smaller corrected images, or another device")
        return dataclasses.replace(config, device=self.session.device, patch=patch)

    def refresh_new_labels(self) -> list[Any]:
        """Look for label values the model has no class for; show the prompt if any."""
        labels = find_new_labels(self.session)
        show_new_labels(self.session, labels)
        model = self.session.model
        self.prompt.set_labels(labels, model.name if model is not None else "")
        return labels

    def start_finetune(self, add_new_classes: bool = False) -> Any:
        """Start training a copy of the current model on the corrections.

        With label values the model has no class for, only ``add_new_classes=True`` (the
        prompt's button) starts: the model grows by the classes named in the prompt.
        """
        if self.runner.busy:
            show_warning(f"wait for {self.session.busy or 'the running job'} to finish "
                         "(or cancel it) first")
            return None
        try:
            model = L.ensure_model(self.session)  # the bundled default when none is loaded
        except CryoSegError as err:
            show_warning(f"load or train a model first ({err})")
            return None
        sources = self.store.training_sources()  # copies; masks are built in the worker
        if not sources:
            show_warning("no corrections yet: edit a CryoSeg labels layer or mark a region "
                         "reviewed, then fine-tune")
            return None
        parent = model
        try:
            model, value_map = self._grow(model, self.refresh_new_labels(), add_new_classes)
            if model is None:
                return None
            config = self.finetune_config([source.image for source in sources], model)
            if value_map:
                # A new class needs BatchNorm statistics that include it and the full
                # fine-tuned weights: averaging with the parent (which never predicts
                # it) would dilute the class just learnt.
                config = dataclasses.replace(config, freeze_batchnorm=False,
                                             parent_blend=1.0)
            preview = self._make_preview(model)
            self.job = self.runner.start(
                "finetune", _finetune_from_sources, model, sources, self.store.band_px,
                config, value_map,
                None if preview is None else preview.region.request(
                    self.session.settings.loop.preview_every_s),
                unlabelled_images(self.store, sources),
                desc=f"Fine-tuning {parent.name}", on_event=self._on_train_event,
                on_result=lambda value: self._on_result(*value, parent),
                on_error=self._on_error, on_finish=self._on_finish)
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return None
        self.preview = preview
        self._added = value_map
        self.plot.clear()
        self.plot.total_steps = config.steps
        self.plot.title = f"{len(sources)} image(s)"
        self.metrics_label.setText("")
        self.status_label.setText("starting…")
        self._update_buttons()
        return self.job

    def _grow(self, model: Any, new_labels: list[Any], accepted: bool
              ) -> tuple[Any, dict[int, int]]:
        """``(model to fine-tune, painted value -> class index of the added classes)``;
        ``(None, {})`` with a message when new labels wait for the user's answer."""
        if not new_labels:
            return model, {}
        if not accepted:
            values = ", ".join(str(label.value) for label in new_labels)
            message = (f"label {values} is painted but '{model.name}' has no such class: "
                       "name it below and press 'Add class … and fine-tune', or erase "
                       "those pixels")
            show_warning(message)
            self.status_label.setText(message)
            return None, {}
        names = self.prompt.names()
        grown = add_classes(model, [names[label.value] for label in new_labels],
                            [label.color for label in new_labels])
        return grown, {label.value: label.index for label in new_labels}

    def _make_preview(self, model: Any) -> LivePreview | None:
        """The live preview of the selected corrected image (else the first one)."""
        if not self.session.settings.loop.preview:
            return None
        active = self.viewer.layers.selection.active
        records = [r for r in self.session.live_records() if self.store.is_corrected(r)]
        if not records:
            return None
        record = next((r for r in records if same_layer(active, r.labels_layer)
                       or same_layer(active, r.image_layer)), records[0])
        region = preview_region(self.viewer, record.image_layer,
                                self.session.settings.loop.preview_edge)
        return LivePreview(self.viewer, region, list(model.class_names),
                           list(model.class_colors), "fine-tuning")

    def cancel(self) -> None:
        """Stop training at its next step; the current model stays as it was."""
        if self.job is not None:
            self.status_label.setText("cancelling…")
            self.job.cancel()

    def _on_train_event(self, event: Any) -> None:
        if show_training_event(event, self.plot, self.status_label, self.preview,
                               self.preview_shown):
            return
        if isinstance(event, Message):
            self.status_label.setText(dock_words(event.text))
        elif isinstance(event, Progress):
            self.status_label.setText(event.message or event.stage)

    def _on_error(self, message: str) -> None:
        self.status_label.setText(f"fine-tuning failed: {message}")

    def _on_result(self, result: Any, data: Any, parent: Any) -> None:
        self.last_result = result  # the latest run (model, scores, change report) as reported
        self._set_pending(None)
        before = _dice(result.before)
        outcome = describe_outcome(result)
        # where the time went, under the scores
        outcome = replace(outcome, metrics=outcome.metrics + "\n"
                          + time_split(result.model.provenance))
        if before is not None:  # the parent's held-out Dice as the curve's step-0 point
            self.plot.dice.insert(0, (0, before))
            self.plot.update()
        if not outcome.swap:  # the engine kept the parent's weights: nothing to swap
            self.metrics_label.setText(outcome.metrics)
            self.status_label.setText(
                outcome.status + ("; no class was added: paint more of it and try again"
                                  if self._added else ""))
            return
        if outcome.ask:  # kept aside until the user applies or discards it
            self._set_pending((result, data, parent, outcome))
            self.metrics_label.setText(outcome.metrics)
            self.status_label.setText(outcome.status)
            return
        self._swap(result, data, parent, outcome)

    def _set_pending(self, pending: tuple | None) -> None:
        self._pending = pending
        self.apply_btn.setVisible(pending is not None)
        self.discard_btn.setVisible(pending is not None)

    def apply_pending(self) -> None:
        """Swap in the fine-tuned model the change check kept aside."""
        if self._pending is None or self.runner.busy:
            return
        result, data, parent, outcome = self._pending
        self._set_pending(None)
        self._swap(result, data, parent, outcome)
        self._pending_resegment = False
        self.resegment()

    def discard_pending(self) -> None:
        """Forget the fine-tuned model the change check kept aside."""
        if self._pending is None:
            return
        self._set_pending(None)
        name = self.session.model.name if self.session.model is not None else "no model"
        self.status_label.setText(f"discarded the fine-tuned model; {name} stays")

    def _swap(self, result: Any, data: Any, parent: Any, outcome: Any) -> None:
        text = outcome.metrics
        new_model = result.model
        new_model.provenance = {**new_model.provenance, **self._dock_provenance(parent, data)}
        self._own_model = new_model
        self.session.set_model(new_model)  # hot-swap on the main thread
        added = ""
        if self._added:
            adopt_classes(self.session, new_model, self._added)
            added = "added class(es) " + ", ".join(
                repr(new_model.class_names[i]) for i in self._added.values()) + "; "
            self.refresh_new_labels()
        self.metrics_label.setText(text)
        self.status_label.setText(f"{added}{outcome.status}".strip())
        self._pending_resegment = True  # started once this job has ended

    def _dock_provenance(self, parent: Any, data: Any) -> dict[str, Any]:
        return {
            **finetuned_name(parent),  # parent + round + time, not "unsaved model"
            "finetuned_in": "napari-cryoseg dock",
            "parent_name": parent.name,
            "corrections": {
                "images": sorted(set(data.names)),
                "planes": len(data),
                "training_pixels": int(sum(int(v.sum()) for v in data.valid_masks)),
                "project_dir": str(self.store.project_dir),
            },
        }

    def _on_finish(self, job: Any) -> None:
        if self.job is job:
            self.job = None
        if self.preview is not None:
            self.preview.remove()
            self.preview = None
        if job.cancelled:
            self.status_label.setText("cancelled: the model was not changed")
        self._update_buttons()
        if self._pending_resegment:
            self._pending_resegment = False
            self.resegment()

    # --- re-segmentation, revert, save -------------------------------------------------
    def records_to_resegment(self) -> list[SegmentationRecord]:
        mode = self.session.settings.loop.resegment
        records = self.session.live_records()
        if mode == "none":
            return []
        if mode == "all":
            return records
        return [r for r in records if not self.store.is_corrected(r)]

    def resegment(self) -> Any:
        """Segment the chosen layers again with the current model (corrections kept)."""
        records = self.records_to_resegment()
        if not records or self.session.model is None:
            return None
        if self.runner.busy:
            show_warning(f"re-segmentation skipped: {self.session.busy} is running")
            return None
        name = self.session.model.name
        try:
            return segment_layers(
                self.viewer, self.session, [r.image_layer for r in records], kind="resegment",
                desc=f"Re-segmenting with {name}", on_progress=self._on_train_event,
                on_finish=lambda job: self.status_label.setText(
                    f"re-segmented {len(records)} layer(s) with {name}"
                    + (" (cancelled)" if job.cancelled else "")))
        except CryoSegError as err:
            show_error(str(err))
            return None

    def revert(self) -> Any:
        """Go back to the model before the last fine-tune and re-segment."""
        if self.runner.busy:
            show_warning(f"wait for {self.session.busy} to finish (or cancel it) first")
            return None
        previous = self.session.previous_models[-1] if self.session.previous_models else None
        if previous is None:
            show_info("no earlier model to revert to")
            return None
        self._own_model = previous
        model = self.session.revert_model()
        self.metrics_label.setText(f"reverted to {model.name}")
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
        self.status_label.setText(f"model saved to {written}")
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
        if model is not self._own_model:
            # another model was loaded: the last fine-tune's numbers no longer apply
            self.metrics_label.setText(
                f"model: {model.name} ({Provenance.of(model).describe()})" if model else "")
        self._update_buttons()

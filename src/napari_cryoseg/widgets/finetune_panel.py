"""The "Correct & fine-tune" dock section.

The user corrects a CryoSeg labels layer with napari's label tools, presses
**Fine-tune**, and a background worker trains a *copy* of the current model on the
corrections (live loss / Dice curve). **Cancel** at any moment leaves the current model
as it was. When training ends the new model is hot-swapped in on the main thread, the
chosen layers are re-segmented, held-out Dice before/after is shown; **Revert model**
is one click and **Save model...** writes a model file with provenance.

All state lives in the :class:`~napari_cryoseg.session.Session` and the
:class:`~napari_cryoseg.corrections.CorrectionStore`; this widget only wires buttons,
workers and timers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.corrections import changed_mask
from napari_cryoseg.core.errors import CryoSegError, OutputExistsError
from napari_cryoseg.corrections import CorrectionStore, camera_of, canvas_size, restore
from napari_cryoseg.engine.events import Message, Progress, TrainStep, Validation, relay
from napari_cryoseg.session import SegmentationRecord, Session
from napari_cryoseg.widgets._loss_plot import LossPlot
from napari_cryoseg.widgets._workers import guarded as _guarded

_log = logging.getLogger(__name__)

RESEGMENT_CHOICES = ("uncorrected layers", "all", "none")
UNCERTAINTY_SUFFIX = " uncertainty"
_WARMED_UP = False


def warm_up_torch(config: Any = None) -> None:
    """One tiny forward/backward/optimizer step on the main thread (once per process).

    torch's lazy first-call set-up holds the GIL for 0.2-0.3 s; doing it here, before
    the first training worker, keeps napari's event loop from stalling at step 1.
    """
    global _WARMED_UP
    if _WARMED_UP:
        return
    import torch

    from napari_cryoseg.model.config import preset
    from napari_cryoseg.model.unet import UNet

    config = config or preset("tiny")
    net = UNet(config)
    net.train()
    size = 2 * config.stride
    x = torch.zeros((2, config.in_channels, size, size))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss = net(x).float().mean()
    loss.backward()
    optimizer.step()
    with torch.inference_mode():
        net.eval()(x)
    _WARMED_UP = True


def _result_field(result: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(result, name, None)
        if value is not None:
            return value
    return default


def _dice_of(metrics: Any) -> float | None:
    """A Dice value from a float, a dict of metrics or a metrics object."""
    if metrics is None:
        return None
    if isinstance(metrics, int | float):
        return float(metrics)
    if isinstance(metrics, dict):
        for key in ("dice", "mean_dice", "mean_foreground_dice"):
            if key in metrics and metrics[key] is not None:
                return float(metrics[key])
        return None
    value = getattr(metrics, "dice", None)
    return float(value) if value is not None else None


def _resegment(items: list[tuple[Any, Any]], model: Any, device: str):
    """Worker generator: segment each snapshotted image with ``model``."""
    from napari_cryoseg.engine.predict import Segmenter, segment

    segmenter = Segmenter(model, device)
    results = []
    for index, (key, image) in enumerate(items):
        gen = segment(image, segmenter, return_probabilities=True)
        prediction = yield from relay(gen, lambda event, index=index: Progress(
            "re-segment", index, len(items),
            f"image {index + 1}/{len(items)}: {event.done}/{event.total} tiles", event.elapsed_s,
        ))
        results.append((key, prediction))
    return results


class FinetunePanel(QWidget):
    """Correct & fine-tune: corrections, training, hot-swap, revert, save, uncertainty."""

    def __init__(self, viewer: Any, session: Session | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session or Session.for_viewer(viewer)
        self.store = CorrectionStore.for_session(self.session)
        self.worker: Any = None  # fine-tune worker
        self.aux_worker: Any = None  # re-segment / uncertainty worker
        self.last_result: Any = None
        self.uncertainty: dict[int, np.ndarray] = {}  # id(image layer) -> map
        self._cancel_requested = False
        self._pending_resegment = False
        self._started_at = 0.0
        self._budget: float | None = None
        self._total_steps: int | None = None
        self._n_records = -1
        self._build_ui()
        # debounced refresh of counts, debounced autosave, cheap periodic sync
        self._refresh_timer = QTimer(self, singleShot=True, interval=300)
        self._refresh_timer.timeout.connect(self.refresh_counts)
        self._autosave_timer = QTimer(self, singleShot=True, interval=2000)
        self._autosave_timer.timeout.connect(self.autosave)
        self._sync_timer = QTimer(self, interval=1000)
        self._sync_timer.timeout.connect(self._sync)
        self._sync_timer.start()
        self.store.listeners.append(self._on_dirty)
        self.session.on_model_changed(self._on_model_changed)
        viewer.layers.events.inserted.connect(self._schedule_refresh)
        viewer.layers.events.removed.connect(self._schedule_refresh)
        self.refresh_counts()
        self._update_buttons()

    # --- UI ----------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.counts_label = QLabel("no CryoSeg labels layers yet: segment an image first")
        self.counts_label.setWordWrap(True)
        layout.addWidget(self.counts_label)
        row = QHBoxLayout()
        self.mark_view_btn = QPushButton("Mark view reviewed")
        self.mark_view_btn.setToolTip(
            "Mark what the canvas shows of the selected labels layer as checked: its labels "
            "are used for training as they are")
        self.mark_layer_btn = QPushButton("Mark layer reviewed")
        row.addWidget(self.mark_view_btn)
        row.addWidget(self.mark_layer_btn)
        layout.addLayout(row)

        form = QFormLayout()
        self.budget_spin = QDoubleSpinBox(minimum=0, maximum=36000, decimals=0, singleStep=10)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setSpecialValueText("no limit")
        self.budget_spin.setValue(self._default_budget())
        self.steps_spin = QSpinBox(minimum=0, maximum=1_000_000, singleStep=50)
        self.steps_spin.setSpecialValueText("no limit")
        self.steps_spin.setValue(0)
        self.freeze_check = QCheckBox("freeze encoder")
        self.freeze_check.setChecked(False)
        self.freeze_check.setToolTip("Train only the decoder: faster, and safer with few "
                                     "corrections")
        self.resegment_combo = QComboBox()
        self.resegment_combo.addItems(RESEGMENT_CHOICES)
        self.resegment_combo.setToolTip("Layers to segment again with the new model "
                                        "(corrected layers keep your edits unless 'all')")
        form.addRow("Time budget", self.budget_spin)
        form.addRow("Steps", self.steps_spin)
        form.addRow("", self.freeze_check)
        form.addRow("Re-segment", self.resegment_combo)
        layout.addLayout(form)

        row = QHBoxLayout()
        self.finetune_btn = QPushButton("Fine-tune")
        self.cancel_btn = QPushButton("Cancel")
        row.addWidget(self.finetune_btn)
        row.addWidget(self.cancel_btn)
        layout.addLayout(row)
        self.progress_bar = QProgressBar(minimum=0, maximum=1000)
        self.progress_bar.setFormat("%p%")
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.plot = LossPlot(self)
        layout.addWidget(self.plot)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)

        grid = QGridLayout()
        self.revert_btn = QPushButton("Revert model")
        self.save_btn = QPushButton("Save model…")
        self.uncertainty_btn = QPushButton("Uncertainty")
        self.uncertainty_btn.setToolTip("Test-time augmentation: adds '<image> uncertainty'")
        self.goto_btn = QPushButton("Go to uncertain tile")
        self.goto_btn.setToolTip("Centre the view on the most uncertain tile that is not yet "
                                 "corrected or reviewed")
        self.save_project_btn = QPushButton("Save corrections")
        self.restore_btn = QPushButton("Restore project…")
        for i, btn in enumerate((self.revert_btn, self.save_btn, self.uncertainty_btn,
                                 self.goto_btn, self.save_project_btn, self.restore_btn)):
            grid.addWidget(btn, i // 2, i % 2)
        layout.addLayout(grid)
        self.project_label = QLabel("")
        self.project_label.setWordWrap(True)
        layout.addWidget(self.project_label)

        self.mark_view_btn.clicked.connect(self.mark_view_reviewed)
        self.mark_layer_btn.clicked.connect(self.mark_layer_reviewed)
        self.finetune_btn.clicked.connect(self.start_finetune)
        self.cancel_btn.clicked.connect(self.cancel)
        self.revert_btn.clicked.connect(self.revert)
        self.save_btn.clicked.connect(self.save_model_dialog)
        self.uncertainty_btn.clicked.connect(self.compute_uncertainty)
        self.goto_btn.clicked.connect(self.go_to_most_uncertain_tile)
        self.save_project_btn.clicked.connect(self.autosave)
        self.restore_btn.clicked.connect(self.restore_dialog)

    def _default_budget(self) -> float:
        try:
            from napari_cryoseg.engine.device import resolve_device

            return 30.0 if resolve_device(self.session.device).type == "cuda" else 60.0
        except CryoSegError:
            return 60.0

    def _update_buttons(self) -> None:
        training = self.worker is not None
        aux = self.aux_worker is not None
        has_model = self.session.model is not None
        self.finetune_btn.setEnabled(not training and not aux and has_model)
        self.cancel_btn.setEnabled(training)
        self.revert_btn.setEnabled(not training and not aux and bool(self.session.previous_models))
        self.save_btn.setEnabled(has_model and not training)
        self.uncertainty_btn.setEnabled(has_model and not training and not aux)
        self.goto_btn.setEnabled(bool(self.uncertainty))

    # --- corrections -------------------------------------------------------------------
    def _on_dirty(self, layer: Any) -> None:
        self._schedule_refresh()
        self._autosave_timer.start()

    def _schedule_refresh(self, *args: Any) -> None:
        self._refresh_timer.start()

    def _sync(self) -> None:
        records = self.store.watch_all()
        if len(records) != self._n_records:
            self._n_records = len(records)
            self.refresh_counts()
            self._update_buttons()
        if self.store.has_unsaved and not self._autosave_timer.isActive():
            self._autosave_timer.start()

    def refresh_counts(self) -> None:
        """Recompute the correction summary of each CryoSeg labels layer."""
        lines = []
        for record, summary in self.store.summaries():
            names = record.extra.get("class_names") if record.extra else None
            if names is None and self.session.model is not None:
                names = list(self.session.model.class_names)
            lines.append(f"<b>{record.labels_layer.name}</b>: {summary.describe(names)}")
        self._n_records = len(lines)
        self.counts_label.setText(
            "<br>".join(lines) if lines
            else "no CryoSeg labels layers yet: segment an image first")

    def _selected_record(self) -> SegmentationRecord | None:
        active = self.viewer.layers.selection.active
        records = self.session.live_records()
        for record in records:
            if active is record.labels_layer or active is record.image_layer:
                return record
        return records[-1] if len(records) == 1 else None

    def mark_view_reviewed(self) -> int:
        record = self._selected_record()
        if record is None:
            show_warning("select a CryoSeg labels layer first")
            return 0
        n = self.store.mark_view_reviewed(self.viewer, record.labels_layer)
        self.refresh_counts()
        return n

    def mark_layer_reviewed(self) -> int:
        record = self._selected_record()
        if record is None:
            show_warning("select a CryoSeg labels layer first")
            return 0
        n = self.store.mark_reviewed(record)
        self.refresh_counts()
        return n

    def autosave(self) -> Any:
        try:
            folder = self.store.autosave()
        except CryoSegError as err:
            show_error(f"autosave failed: {err}")
            return None
        except OSError as err:
            show_error(f"autosave failed: {err}")
            return None
        if folder is not None:
            self.project_label.setText(f"corrections saved in {folder} "
                                       f"({time.strftime('%H:%M:%S')})")
        return folder

    def restore_project(self, folder: Any) -> list[SegmentationRecord]:
        records = restore(self.viewer, folder)
        self.refresh_counts()
        self.project_label.setText(f"restored {len(records)} image(s) from {folder}")
        return records

    def restore_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Restore CryoSeg project",
                                                  str(self.store.project_dir))
        if folder:
            try:
                self.restore_project(folder)
            except (CryoSegError, OSError) as err:
                show_error(str(err))

    # --- fine-tuning -------------------------------------------------------------------
    def _finetune_config(self, images: list[np.ndarray] | None = None) -> Any:
        from napari_cryoseg.engine.finetune import FinetuneConfig

        wanted: dict[str, Any] = {
            "steps": int(self.steps_spin.value()) or None,
            "time_budget_s": float(self.budget_spin.value()) or None,
            "freeze_encoder": bool(self.freeze_check.isChecked()),
            "device": self.session.device,
        }
        if images:
            # no bigger patches than the largest corrected image (small crops train faster)
            largest = max(max(np.shape(i)[-2:]) for i in images)
            wanted["patch"] = int(min(256, max(largest, 16)))
        known = {f.name for f in dataclasses.fields(FinetuneConfig)}
        return FinetuneConfig(**{k: v for k, v in wanted.items() if k in known})

    def start_finetune(self) -> Any:
        """Start training a copy of the current model on the corrections (a worker)."""
        from napari_cryoseg.engine.finetune import finetune

        if self.worker is not None:
            show_warning("fine-tuning is already running")
            return None
        if self.session.busy is not None:
            show_warning(f"wait for {self.session.busy} to finish (or cancel it) first")
            return None
        model = self.session.model
        if model is None:
            show_warning("load or train a model first")
            return None
        data = self.store.training_data()
        if not len(data):
            show_warning("no corrections yet: edit a CryoSeg labels layer or mark a region "
                         "reviewed, then fine-tune")
            return None
        try:
            config = self._finetune_config(data.images)
        except (CryoSegError, ValueError) as err:
            show_error(str(err))
            return None
        warm_up_torch(model.config)
        self.session.begin("finetune")
        self._cancel_requested = False
        self._training_data = data
        self._parent_model = model
        self._budget = getattr(config, "time_budget_s", None)
        self._total_steps = getattr(config, "steps", None)
        self._started_at = time.perf_counter()
        self.plot.clear()
        self.plot.total_steps = self._total_steps
        self.plot.title = f"{len(data)} image(s)"
        self.metrics_label.setText("")
        self.progress_bar.setValue(0)
        self.status_label.setText("starting…")
        worker = create_worker(
            _guarded, finetune, model, data.images, data.masks, data.valid_masks, config,
            names=data.names, _start_thread=False, _ignore_errors=True,
        )
        worker.yielded.connect(self._on_train_event)
        worker.returned.connect(self._on_finetune_returned)
        worker.errored.connect(self._on_finetune_error)
        worker.finished.connect(self._on_finetune_finished)
        self.worker = worker
        self._update_buttons()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop training at its next step; the current model stays as it was."""
        if self.worker is not None:
            self._cancel_requested = True
            self.status_label.setText("cancelling…")
            self.worker.quit()
        elif self.aux_worker is not None:
            self.aux_worker.quit()

    def _on_train_event(self, event: Any) -> None:
        if isinstance(event, TrainStep):
            self.plot.add_loss(event.step, event.loss)
            fraction = 0.0
            if event.total_steps:
                fraction = event.step / event.total_steps
            if event.time_budget_s:
                fraction = max(fraction, event.elapsed_s / event.time_budget_s)
            self.progress_bar.setValue(int(1000 * min(fraction, 1.0)))
            eta = event.eta_s
            eta_text = f", about {eta:.0f} s left" if eta is not None else ""
            self.status_label.setText(f"step {event.step}: loss {event.loss:.4f}{eta_text}")
            self.plot.update()
        elif isinstance(event, Validation):
            self.plot.add_dice(event.step, event.dice)
            self.plot.update()
        elif isinstance(event, Message):
            self.status_label.setText(event.text)
        elif isinstance(event, Progress):
            self.status_label.setText(event.message or event.stage)

    def _on_finetune_error(self, err: BaseException) -> None:
        from napari_cryoseg.widgets._workers import error_message

        msg = error_message(err)
        self.status_label.setText(f"fine-tuning failed: {msg}")
        show_error(f"fine-tuning failed: {msg}")

    def _on_finetune_finished(self) -> None:
        self.session.end("finetune")
        self.worker = None
        if self._cancel_requested:
            self.status_label.setText("cancelled: the model was not changed")
            self.progress_bar.setValue(0)
        self._update_buttons()
        if self._pending_resegment:
            self._pending_resegment = False
            self.resegment()

    def _on_finetune_returned(self, result: Any) -> None:
        if self._cancel_requested or result is None:
            return  # Cancel pressed after the last step: keep the model as it was
        self.last_result = result
        before = _dice_of(_result_field(result, "before", "metrics_before", "dice_before"))
        after = _dice_of(_result_field(result, "after", "metrics_after", "dice_after"))
        steps = _result_field(result, "steps", default="?")
        message = _result_field(result, "message", default="")
        text = f"{steps} steps"
        if before is not None and after is not None:
            text = (f"held-out Dice: before {before:.3f} → after {after:.3f} "
                    f"({after - before:+.3f}); {steps} steps")
        self.progress_bar.setValue(1000)
        if before is not None:  # the parent's held-out Dice as the curve's step-0 point
            self.plot.dice.insert(0, (0, before))
            self.plot.update()
        new_model = _result_field(result, "model", "model_file", "best")
        if new_model is None or getattr(result, "improved", True) is False:
            # the engine kept the parent's weights: nothing to swap
            self.metrics_label.setText(f"{text}; model not changed")
            self.status_label.setText(message or "fine-tuning did not improve the model")
            return
        self._add_provenance(new_model)
        self.session.set_model(new_model)  # hot-swap on the main thread
        self.metrics_label.setText(text)
        self.status_label.setText(f"model swapped in. {message}".strip())
        self._pending_resegment = True  # started in _on_finetune_finished (job over)

    def _add_provenance(self, model: Any) -> None:
        data = getattr(self, "_training_data", None)
        parent = getattr(self, "_parent_model", None)
        extra = {
            "finetuned_in": "napari-cryoseg Correct & fine-tune",
            "parent_name": parent.name if parent is not None else None,
        }
        if data is not None:
            extra["corrections"] = {
                "images": sorted(set(data.names)),
                "planes": len(data),
                "training_pixels": int(sum(int(v.sum()) for v in data.valid_masks)),
                "project_dir": str(self.store.project_dir),
            }
        model.provenance = {**model.provenance, **extra}

    # --- re-segmentation, revert, save ---------------------------------------------------
    def _records_to_resegment(self) -> list[SegmentationRecord]:
        mode = self.resegment_combo.currentText()
        records = self.session.live_records()
        if mode == "none":
            return []
        if mode == "all":
            for record in records:
                self.store.bank(record)
            return records
        return [r for r in records if not self.store.is_corrected(r)]

    def resegment(self) -> Any:
        """Segment the chosen layers again with the current model (a worker)."""
        from napari_cryoseg.layers import snapshot

        records = self._records_to_resegment()
        if not records or self.session.model is None:
            return None
        if self.session.busy is not None or self.aux_worker is not None:
            show_warning(f"re-segmentation skipped: {self.session.busy or 'a job'} is running")
            return None
        items = []
        self._reseg_snapshots = {}
        for record in records:
            snap = snapshot(record.image_layer)
            self._reseg_snapshots[id(record.image_layer)] = (record.image_layer, snap)
            items.append((id(record.image_layer), snap.data))
        self.session.begin("segment")
        worker = create_worker(_guarded, _resegment, items, self.session.model, self.session.device,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_train_event)
        worker.returned.connect(self._on_resegment_returned)
        worker.errored.connect(self._on_finetune_error)
        worker.finished.connect(self._on_aux_finished("segment"))
        self.aux_worker = worker
        self._update_buttons()
        worker.start()
        return worker

    def _on_aux_finished(self, job: str):
        def done() -> None:
            self.session.end(job)
            self.aux_worker = None
            self._update_buttons()
            self.refresh_counts()

        return done

    def _on_resegment_returned(self, results: Any) -> None:
        from napari_cryoseg.layers import show_prediction

        for key, prediction in results or []:
            image_layer, snap = self._reseg_snapshots.get(key, (None, None))
            if image_layer is None or prediction is None:
                continue
            show_prediction(self.viewer, self.session, image_layer, prediction, image=snap)
        self.status_label.setText(f"re-segmented {len(results or [])} layer(s) with "
                                  f"{self.session.model.name if self.session.model else '?'}")
        self.refresh_counts()

    def revert(self) -> Any:
        """Go back to the model before the last fine-tune and re-segment."""
        if self.worker is not None:
            show_warning("cancel fine-tuning first")
            return None
        model = self.session.revert_model()
        if model is None:
            show_info("no earlier model to revert to")
            return None
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
        show_info(f"model saved to {written}")
        self.status_label.setText(f"model saved to {written}")
        return written

    def save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "finetuned.pt",
                                              "CryoSeg model (*.pt)")
        if path:
            # The dialog itself asked before replacing an existing file.
            self.save_model_to(path, overwrite=True)

    def _on_model_changed(self, model: Any) -> None:
        self.uncertainty.clear()  # the maps belong to the old model
        self._update_buttons()

    # --- uncertainty ---------------------------------------------------------------------
    def _selected_image_layer(self) -> Any:
        record = self._selected_record()
        if record is not None:
            return record.image_layer
        active = self.viewer.layers.selection.active
        if active is not None and type(active).__name__ == "Image":
            return active
        return None

    def compute_uncertainty(self) -> Any:
        """Run test-time augmentation on the selected image; adds '<image> uncertainty'."""
        from napari_cryoseg.engine.uncertainty import tta_uncertainty

        image_layer = self._selected_image_layer()
        if image_layer is None or self.session.model is None:
            show_warning("select an image (or its CryoSeg labels layer) and load a model")
            return None
        if self.session.busy is not None or self.aux_worker is not None:
            show_warning(f"wait for {self.session.busy or 'the running job'} to finish first")
            return None
        data = np.asarray(image_layer.data)
        self.session.begin("uncertainty")
        worker = create_worker(_guarded, tta_uncertainty, data, self.session.model,
                               device=self.session.device,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_train_event)
        worker.returned.connect(lambda result, layer=image_layer:
                                self._on_uncertainty(layer, result))
        worker.errored.connect(self._on_finetune_error)
        worker.finished.connect(self._on_aux_finished("uncertainty"))
        self.aux_worker = worker
        self._update_buttons()
        worker.start()
        return worker

    def _on_uncertainty(self, image_layer: Any, result: np.ndarray) -> None:
        self.uncertainty[id(image_layer)] = result
        name = f"{image_layer.name}{UNCERTAINTY_SUFFIX}"
        kwargs = {"scale": image_layer.scale, "translate": image_layer.translate}
        for layer in self.viewer.layers:
            if layer.name == name and np.shape(layer.data) == result.shape:
                layer.data = result
                break
        else:
            self.viewer.add_image(result, name=name, colormap="magma", blending="additive",
                                  opacity=0.6, contrast_limits=(0.0, 1.0), **kwargs)
        self.status_label.setText(f"uncertainty of {image_layer.name}: mean "
                                  f"{float(result.mean()):.3f}")
        self._update_buttons()

    def go_to_most_uncertain_tile(self, tile: int = 128) -> tuple[int, int] | None:
        """Centre the camera on the tile with the highest uncertainty not yet handled."""
        from napari_cryoseg.engine.uncertainty import most_uncertain_tile

        image_layer = self._selected_image_layer()
        if (image_layer is None or id(image_layer) not in self.uncertainty) and len(
            self.uncertainty
        ) == 1:
            key = next(iter(self.uncertainty))
            image_layer = next((ly for ly in self.viewer.layers if id(ly) == key), None)
        if image_layer is None or id(image_layer) not in self.uncertainty:
            show_warning("compute the uncertainty of this image first")
            return None
        umap = self.uncertainty[id(image_layer)]
        exclude = None
        record = next((r for r in self.session.live_records()
                       if r.image_layer is image_layer), None)
        if record is not None:
            exclude = changed_mask(record.predicted, np.asarray(record.labels_layer.data))
            if record.reviewed is not None:
                exclude = exclude | record.reviewed
        plane_index: tuple[int, ...] = ()
        if umap.ndim == 3:
            world_z = self.viewer.dims.point[-3] if len(self.viewer.dims.point) >= 3 else 0
            z = int(round((world_z - image_layer.translate[0]) / image_layer.scale[0]))
            plane_index = (min(max(z, 0), umap.shape[0] - 1),)
        plane = umap[plane_index] if plane_index else umap
        ex_plane = exclude[plane_index] if (exclude is not None and plane_index) else exclude
        th, tw = min(tile, plane.shape[0]), min(tile, plane.shape[1])
        y, x = most_uncertain_tile(plane, (th, tw), ex_plane)
        scale = np.asarray(image_layer.scale, dtype=float)[-2:]
        translate = np.asarray(image_layer.translate, dtype=float)[-2:]
        center = (np.array([y + th / 2, x + tw / 2]) - 0.5) * scale + translate
        camera = camera_of(self.viewer)
        current = list(camera.center)
        current[-2:] = [float(center[0]), float(center[1])]
        camera.center = tuple(current)
        canvas_h, canvas_w = canvas_size(self.viewer)
        camera.zoom = 0.9 * min(canvas_h / (th * scale[0]), canvas_w / (tw * scale[1]))
        if record is not None:
            self.viewer.layers.selection.active = record.labels_layer
        self.status_label.setText(f"most uncertain tile: rows {y}-{y + th}, cols {x}-{x + tw}")
        return y, x

    # --- cleanup -------------------------------------------------------------------------
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._sync_timer.stop()
        if self.store.has_unsaved:
            self.autosave()
        super().closeEvent(event)

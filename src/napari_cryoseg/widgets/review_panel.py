"""The "Correct & review" section: what the user changed, reviewed marks, autosave.

The user corrects a CryoSeg labels layer with napari's label tools; this section shows
per layer how many pixels were edited or marked reviewed, marks the visible region or
the whole layer as reviewed (undoable), saves the corrections to the project folder
(debounced autosave) and restores a project. All state lives in the session's
:class:`~napari_cryoseg.viewer.review.CorrectionStore`; when to autosave and what came
of it is :class:`~napari_cryoseg.viewer.autosave.Autosave`'s, whose Qt timer is here.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGridLayout, QLabel, QVBoxLayout, QWidget

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.viewer.autosave import Autosave, AutosaveOutcome
from napari_cryoseg.viewer.review import CorrectionStore, restore
from napari_cryoseg.viewer.session import SegmentationRecord, same_layer
from napari_cryoseg.widgets.buttons import button

NO_LAYERS = "no CryoSeg labels layers yet: segment an image first"


class ReviewPanel(QWidget):
    """Correction counts, reviewed marks (with undo), autosave and restore."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.store = CorrectionStore.for_session(session)
        self.saver = Autosave.for_store(self.store)
        self._n_records = -1
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        help_text = QLabel("Paint or erase on a CryoSeg labels layer to correct it; mark "
                           "regions that are right as they are as reviewed. Both are used "
                           "for fine-tuning and kept when the image is segmented again.")
        help_text.setWordWrap(True)
        help_text.setStyleSheet("color: gray")
        layout.addWidget(help_text)
        self.counts_label = QLabel(NO_LAYERS)
        self.counts_label.setWordWrap(True)
        layout.addWidget(self.counts_label)
        grid = QGridLayout()
        self.mark_view_btn = button(
            "Mark view reviewed", self.mark_view_reviewed,
            "Mark what the canvas shows of the selected labels layer as checked: its "
            "labels are used for training as they are")
        self.mark_layer_btn = button("Mark layer reviewed", self.mark_layer_reviewed,
                                     "Mark the whole selected labels layer as checked")
        self.undo_mark_btn = button("Undo last mark", self.undo_mark,
                                    "Unmark the region marked reviewed last")
        self.save_project_btn = button(
            "Save corrections", self.autosave,
            "Write the corrected images to the project folder now (it also happens "
            "a few seconds after each change)")
        self.restore_btn = button("Restore project…", self.restore_dialog,
                                  "Re-open the images and corrections of a saved project")
        for i, btn in enumerate((self.mark_view_btn, self.mark_layer_btn, self.undo_mark_btn,
                                 self.save_project_btn, self.restore_btn)):
            grid.addWidget(btn, i // 2, i % 2)
        layout.addLayout(grid)
        self.project_label = QLabel("")
        self.project_label.setWordWrap(True)
        layout.addWidget(self.project_label)

        # debounced refresh of counts, debounced autosave, cheap periodic sync
        self._refresh_timer = QTimer(self, singleShot=True, interval=300)
        self._refresh_timer.timeout.connect(self.refresh_counts)
        self._autosave_timer = QTimer(self, singleShot=True)
        self._autosave_timer.timeout.connect(lambda: self._show_saved(self.saver.tick()))
        self._sync_timer = QTimer(self, interval=1000)
        self._sync_timer.timeout.connect(self._sync)
        self._sync_timer.start()
        self.store.listeners.append(self._on_dirty)
        viewer.layers.events.inserted.connect(self._schedule_refresh)
        viewer.layers.events.removed.connect(self._schedule_refresh)
        self.refresh_counts()

    # --- counts ------------------------------------------------------------------------
    def _on_dirty(self, layer: Any) -> None:
        self._schedule_refresh()
        self._arm_autosave()

    def _arm_autosave(self) -> None:
        """(Re)start the autosave timer for as long as the saver says to wait."""
        wait = self.saver.wait_s()
        if wait is not None:
            self._autosave_timer.start(max(1, round(wait * 1000)))

    def _schedule_refresh(self, *args: Any) -> None:
        self._refresh_timer.start()

    def _sync(self) -> None:
        records = self.store.watch_all()
        if len(records) != self._n_records:
            self.refresh_counts()
        if not self._autosave_timer.isActive():
            self._arm_autosave()

    def refresh_counts(self) -> None:
        """Recompute the correction summary of each CryoSeg labels layer."""
        lines = []
        for record, summary in self.store.summaries():
            names = record.extra.get("class_names") if record.extra else None
            if names is None and self.session.model is not None:
                names = list(self.session.model.class_names)
            lines.append(f"<b>{record.labels_layer.name}</b>: {summary.describe(names)}")
        self._n_records = len(lines)
        self.counts_label.setText("<br>".join(lines) if lines else NO_LAYERS)
        self.undo_mark_btn.setEnabled(self.store.can_undo_review)

    # --- reviewed marks ----------------------------------------------------------------
    def selected_record(self) -> SegmentationRecord | None:
        """The record of the selected labels or image layer (or the only one)."""
        active = self.viewer.layers.selection.active
        records = self.session.live_records()
        for record in records:
            if same_layer(active, record.labels_layer) or same_layer(active, record.image_layer):
                return record
        return records[-1] if len(records) == 1 else None

    def mark_view_reviewed(self) -> int:
        record = self.selected_record()
        if record is None:
            show_warning("select a CryoSeg labels layer first")
            return 0
        n = self.store.mark_view_reviewed(self.viewer, record.labels_layer)
        self.refresh_counts()
        return n

    def mark_layer_reviewed(self) -> int:
        record = self.selected_record()
        if record is None:
            show_warning("select a CryoSeg labels layer first")
            return 0
        n = self.store.mark_reviewed(record)
        self.refresh_counts()
        return n

    def undo_mark(self) -> int:
        """Undo the last "mark reviewed"; returns the pixels unmarked."""
        undone = self.store.undo_review()
        self.refresh_counts()
        if undone is None:
            self.project_label.setText("no reviewed mark to undo")
            return 0
        record, n = undone
        self.project_label.setText(f"unmarked {n} reviewed pixels of {record.labels_layer.name}")
        return n

    # --- project folder ----------------------------------------------------------------
    def autosave(self) -> Any:
        """Save the corrections now; the folder written, or None."""
        return self._show_saved(self.saver.save_now())

    def _show_saved(self, outcome: AutosaveOutcome) -> Any:
        if outcome.wait_s is not None:  # the timer fired early
            self._arm_autosave()
        elif outcome.error is not None:
            show_error(outcome.error)
        elif outcome.folder is not None:
            self.project_label.setText(outcome.message)
        return outcome.folder

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

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._sync_timer.stop()
        self._show_saved(self.saver.flush())  # what changed since the last save
        super().closeEvent(event)

"""Objects section: measure objects, browse them in a table, tag, classify, export CSV.

A view of the session's :class:`~napari_cryoseg.viewer.objects_state.ObjectsState`:
the table shows its objects, tags and predictions, the settings widgets edit its
:class:`~napari_cryoseg.core.object_settings.ObjectSettings`, and each button calls one
of its methods. The panel keeps only which layers its combo boxes list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.classify import ObjectClassifier
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.object_settings import ObjectSettings, tags_from_text, tags_text
from napari_cryoseg.core.setting import about
from napari_cryoseg.viewer.objects import ObjectsResult
from napari_cryoseg.viewer.objects_state import (
    ObjectsState,
    measurable_layers,
    source_image_name,
)

T = TypeVar("T")
NO_IMAGE = "(no image: shape only)"
#: (table header, measurement column, format); shown after label, tag and predicted.
SHOWN = (
    ("class", "class_name", "{}"), ("area px", "area_px", "{:d}"),
    ("diam. px", "equivalent_diameter_px", "{:.1f}"), ("circ.", "circularity", "{:.2f}"),
    ("ecc.", "eccentricity", "{:.2f}"), ("mean", "mean_intensity", "{:.1f}"),
    ("edge/ctr", "edge_contrast", "{:+.2f}"),
)  # fmt: skip
TAG_HEADER, PREDICTED_HEADER = "tag", "predicted"
LABEL_COL, TAG_COL, PRED_COL, FIRST_COL = 0, 1, 2, 3
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
#: QSpinBox holds a C int: the ceiling of a setting without a maximum.
SPIN_MAX = 2**31 - 1


def _cell_text(value: Any, fmt: str) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return ""
    try:
        return fmt.format(int(value) if "d" in fmt else value)
    except (TypeError, ValueError):
        return ""


class MeasurePanel(QWidget):
    """Measure -> instance labels + table; row click selects; tags -> random forest."""

    def __init__(
        self,
        viewer: Any,
        session: Any,
        parent: QWidget | None = None,
        folder: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.state = ObjectsState.for_session(session)
        self._folder = folder or (lambda: str(Path.home()))
        self._labels_layers: list[Any] = []
        self._image_layers: list[Any] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Semantic labels; each connected region of a class is "
                                     "one object")
        form.addRow("Labels:", self.labels_combo)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image for intensity features (mean, rings, contrast)")
        form.addRow("Image:", self.image_combo)
        size_row = QHBoxLayout()
        min_size = about(ObjectSettings, "min_size")
        self.min_size = QSpinBox()
        self.min_size.setRange(int(min_size.min or 0), int(min_size.max or SPIN_MAX))
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip(min_size.help)
        self.remove_button = QPushButton("Remove smaller")
        self.remove_button.setToolTip("Delete objects below the minimum size from the labels "
                                      "layer (Ctrl+Z on the layer undoes it)")
        size_row.addWidget(self.min_size)
        size_row.addWidget(self.remove_button)
        form.addRow(min_size.label, size_row)
        layout.addLayout(form)
        self.measure_button = QPushButton("Measure")
        self.measure_button.setToolTip("Find objects, add an '<labels> objects' layer and "
                                       "list their measurements")
        layout.addWidget(self.measure_button)

        self.table = QTableWidget(0, len(SHOWN) + FIRST_COL)
        self.table.setHorizontalHeaderLabels(["label", TAG_HEADER, PREDICTED_HEADER]
                                             + [h for h, _, _ in SHOWN])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(300)
        layout.addWidget(self.table)

        tag_row = QHBoxLayout()
        tags = about(ObjectSettings, "tags")
        tag_row.addWidget(QLabel(tags.label))
        self.tags = QLineEdit()
        self.tags.setToolTip(tags.help)
        tag_row.addWidget(self.tags)
        layout.addLayout(tag_row)
        clf_row = QHBoxLayout()
        self.train_button = QPushButton("Train classifier")
        self.train_button.setToolTip("Random forest on the tagged objects' features; predicts "
                                     "a class for every object (needs scikit-learn)")
        colour = about(ObjectSettings, "color_by_class")
        self.color_check = QCheckBox(colour.label)
        self.color_check.setToolTip(colour.help)
        clf_row.addWidget(self.train_button)
        clf_row.addWidget(self.color_check)
        layout.addLayout(clf_row)
        file_row = QHBoxLayout()
        self.save_clf_button = QPushButton("Save classifier…")
        self.load_clf_button = QPushButton("Load classifier…")
        self.export_button = QPushButton("Export CSV")
        self.export_button.setToolTip("Write the table beside the labels file (or into the "
                                      "Export folder); existing files are never replaced")
        for button in (self.save_clf_button, self.load_clf_button, self.export_button):
            file_row.addWidget(button)
        layout.addLayout(file_row)
        self.status = QLabel("Segment an image, then Measure.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self._show_settings()
        self.min_size.valueChanged.connect(lambda value: self._set(min_size=int(value)))
        self.tags.editingFinished.connect(
            lambda: self._set(tags=tags_from_text(self.tags.text())))
        self.color_check.toggled.connect(lambda on: self._set(color_by_class=bool(on)))
        self.measure_button.clicked.connect(lambda: self.measure())
        self.remove_button.clicked.connect(lambda: self.remove_small())
        self.table.cellClicked.connect(lambda row, _col: self.select_row(row))
        self.train_button.clicked.connect(lambda: self.train_classifier())
        self.save_clf_button.clicked.connect(lambda: self.save_classifier())
        self.load_clf_button.clicked.connect(lambda: self.load_classifier())
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.state.on_change(self._on_state_change)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        self.refresh()
        self._fill_table()

    # ------------------------------------------------------------------ layer combos
    def refresh(self, *_: Any) -> None:
        labels_text, image_text = self.labels_combo.currentText(), self.image_combo.currentText()
        self._labels_layers, self._image_layers = measurable_layers(self.viewer)
        for combo, names, text in (
            (self.labels_combo, [lyr.name for lyr in self._labels_layers], labels_text),
            (self.image_combo, [NO_IMAGE] + [lyr.name for lyr in self._image_layers],
             image_text),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(max(combo.findText(text), 0))
            combo.blockSignals(False)
        if self.image_combo.currentText() == NO_IMAGE and self._labels_layers:
            source = source_image_name(self.labels_layer())
            if source and self.image_combo.findText(source) > 0:
                self.image_combo.setCurrentIndex(self.image_combo.findText(source))

    def labels_layer(self) -> Any:
        i = self.labels_combo.currentIndex()
        return self._labels_layers[i] if 0 <= i < len(self._labels_layers) else None

    def image_layer(self) -> Any:
        i = self.image_combo.currentIndex() - 1
        return self._image_layers[i] if 0 <= i < len(self._image_layers) else None

    def select_layers(self, labels: Any, image: Any = None) -> None:
        self.labels_combo.setCurrentIndex(max(self.labels_combo.findText(labels.name), 0))
        if image is not None:
            self.image_combo.setCurrentIndex(max(self.image_combo.findText(image.name), 0))

    # ------------------------------------------------------------------ state -> widgets
    def _on_state_change(self, what: str) -> None:
        if what == "settings":
            self._show_settings()
        elif what == "result":
            self._fill_table()
        elif what == "tags":
            self._fill_tag_cells()
        elif what == "predictions":
            self._fill_predictions()

    def _show_settings(self) -> None:
        settings = self.state.settings
        for widget, show in ((self.min_size, lambda: self.min_size.setValue(settings.min_size)),
                             (self.tags, lambda: self.tags.setText(tags_text(settings.tags))),
                             (self.color_check,
                              lambda: self.color_check.setChecked(settings.color_by_class))):
            widget.blockSignals(True)
            show()
            widget.blockSignals(False)

    def _fill_table(self) -> None:
        result = self.state.result
        self.table.setRowCount(0 if result is None else result.n_objects)
        if result is None:
            return
        for row, label in enumerate(self.state.labels()):
            item = QTableWidgetItem(str(label))
            item.setTextAlignment(RIGHT)
            self.table.setItem(row, LABEL_COL, item)
            for col, (_, key, fmt) in enumerate(SHOWN, start=FIRST_COL):
                item = QTableWidgetItem(_cell_text(result.table[key][row], fmt))
                if key != "class_name":
                    item.setTextAlignment(RIGHT)
                self.table.setItem(row, col, item)
            combo = QComboBox()
            combo.currentTextChanged.connect(lambda text, r=row: self._tag_chosen(r, text))
            self.table.setCellWidget(row, TAG_COL, combo)
        self._fill_tag_cells()
        self._fill_predictions()

    def _fill_tag_cells(self) -> None:
        vocabulary = list(self.state.settings.tags)
        for row, tag in enumerate(self.state.tag_column()):
            combo = self.table.cellWidget(row, TAG_COL)
            if combo is None:
                continue
            combo.blockSignals(True)
            combo.clear()
            # a tag dropped from the vocabulary stays on the objects that have it
            combo.addItems([""] + vocabulary + ([tag] if tag not in vocabulary else []))
            combo.setCurrentIndex(max(combo.findText(tag), 0))
            combo.blockSignals(False)

    def _fill_predictions(self) -> None:
        for row, name in enumerate(self.state.predicted()):
            item = QTableWidgetItem(name)
            colour = self.state.class_colour(name)
            if colour is not None:
                item.setForeground(QColor(colour))
            self.table.setItem(row, PRED_COL, item)

    # ------------------------------------------------------------------ actions
    def _fail(self, err: Exception) -> None:
        show_error(f"CryoSeg: {err}")
        self.status.setText(f"Failed: {err}")

    def _do(self, action: Callable[[], T], done: Callable[[T], str]) -> T | None:
        """Run ``action``; show ``done(value)``, or the one-line error and return None."""
        try:
            value = action()
        except (CryoSegError, OSError) as err:
            self._fail(err)
            return None
        self.status.setText(done(value))
        return value

    def _set(self, **changes: Any) -> None:
        try:
            self.state.update_settings(**changes)
        except CryoSegError as err:
            self._fail(err)
            self._show_settings()  # the refused value is not kept

    def _tag_chosen(self, row: int, tag: str) -> None:
        labels = self.state.labels()
        if 0 <= row < len(labels):
            self._do(lambda: self.state.set_tag(labels[row], tag),
                     lambda _: f"{len(self.state.tags)} object(s) tagged.")

    def measure(self) -> ObjectsResult | None:
        """Measure the chosen labels layer; fills the table."""
        layer = self.labels_layer()
        return self._do(
            lambda: self.state.measure(layer, self.image_layer()),
            lambda result: f"{result.n_objects} object(s) in '{layer.name}' (≥ "
            f"{self.state.settings.min_size} px). Click a row to go to an object; tag a few "
            "per class, then Train classifier.")

    def select_row(self, row: int) -> None:
        """Select the object of ``row`` in the objects layer and centre on it."""
        if self.state.result is None:
            return
        if self._do(lambda: self.state.select(row),
                    lambda label: f"Object {label} selected.") is not None:
            self.table.selectRow(row)

    def remove_small(self) -> int:
        """Remove objects below the minimum size (undoable per layer)."""
        if self.state.result is None and self.measure() is None:
            return 0
        removed = self._do(
            self.state.remove_smaller,
            lambda n: f"Removed {n} object(s) smaller than {self.state.settings.min_size} px "
            f"from '{self.state.result.source.name}' (Ctrl+Z on the layer undoes).")
        return removed or 0

    def train_classifier(self) -> ObjectClassifier | None:
        """Fit a random forest on the tagged objects and predict every object."""
        return self._do(
            self.state.train_classifier,
            lambda _clf: f"Classifier trained on {len(self.state.tags)} tagged object(s); "
            f"predicted {len(self.state.predicted())}.")

    def save_classifier(self, path: str | None = None) -> Path | None:
        if self.state.classifier is not None and path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save object classifier",
                                                  self._folder(), "Classifier (*.npz)")
            if not path:
                return None
        return self._do(lambda: self.state.save_classifier(path),
                        lambda written: f"Saved classifier to {written}")

    def load_classifier(self, path: str | None = None) -> ObjectClassifier | None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load object classifier",
                                                  self._folder(), "Classifier (*.npz)")
            if not path:
                return None
        return self._do(lambda: self.state.load_classifier(path),
                        lambda clf: f"Loaded classifier ({', '.join(clf.classes)}).")

    def export_csv(self, folder: str | None = None) -> Path | None:
        """Write the table as CSV (beside the labels file, else in the Export folder)."""
        path = self._do(lambda: self.state.export_csv(folder or self._folder()),
                        lambda written: f"Wrote {written}")
        if path is not None:
            show_info(f"CryoSeg: wrote {path.name}")
        return path

"""Objects section: measure objects, browse them in a table, tag, classify, export CSV."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from napari_cryoseg.core.classify import ObjectClassifier, fit_forest
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.measure import FEATURE_COLUMNS, MIN_OBJECT_PX, feature_matrix
from napari_cryoseg.viewer import objects as O

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
        self._folder = folder or (lambda: str(Path.home()))
        self.result: O.ObjectsResult | None = None
        self.classifier: ObjectClassifier | None = None
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
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10_000_000)
        self.min_size.setValue(MIN_OBJECT_PX)
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip("Objects smaller than this are ignored / removed")
        self.remove_button = QPushButton("Remove smaller")
        self.remove_button.setToolTip("Delete objects below the minimum size from the labels "
                                      "layer (Ctrl+Z on the layer undoes it)")
        size_row.addWidget(self.min_size)
        size_row.addWidget(self.remove_button)
        form.addRow("Min size:", size_row)
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
        tag_row.addWidget(QLabel("Tags:"))
        self.tags = QLineEdit("type A, type B")
        self.tags.setToolTip("Comma-separated object classes offered in the 'tag' column")
        tag_row.addWidget(self.tags)
        layout.addLayout(tag_row)
        clf_row = QHBoxLayout()
        self.train_button = QPushButton("Train classifier")
        self.train_button.setToolTip("Random forest on the tagged objects' features; predicts "
                                     "a class for every object (needs scikit-learn)")
        self.color_check = QCheckBox("Colour by class")
        self.color_check.setChecked(True)
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

        self.measure_button.clicked.connect(self.measure)
        self.remove_button.clicked.connect(self.remove_small)
        self.table.cellClicked.connect(lambda row, _col: self.select_row(row))
        self.tags.editingFinished.connect(self._refresh_tag_combos)
        self.train_button.clicked.connect(self.train_classifier)
        self.save_clf_button.clicked.connect(lambda: self.save_classifier())
        self.load_clf_button.clicked.connect(lambda: self.load_classifier())
        self.export_button.clicked.connect(lambda: self.export_csv())
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ layer combos
    def refresh(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        labels_text, image_text = self.labels_combo.currentText(), self.image_combo.currentText()
        self._labels_layers = [
            lyr for lyr in self.viewer.layers
            if isinstance(lyr, Labels) and not lyr.name.endswith(O.OBJECTS_SUFFIX)
        ]
        self._image_layers = [lyr for lyr in self.viewer.layers
                              if isinstance(lyr, Image) and not getattr(lyr, "rgb", False)]
        for combo, names, text in (
            (self.labels_combo, [lyr.name for lyr in self._labels_layers], labels_text),
            (self.image_combo, [NO_IMAGE] + [lyr.name for lyr in self._image_layers],
             image_text),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            index = combo.findText(text)
            combo.setCurrentIndex(max(index, 0) if index >= 0 else 0)
            combo.blockSignals(False)
        if self.image_combo.currentText() == NO_IMAGE and self._labels_layers:
            self._guess_image()

    def _guess_image(self) -> None:
        layer = self.labels_layer()
        source = ((layer.metadata or {}).get("cryoseg", {}) or {}).get("source") if layer else None
        if source:
            index = self.image_combo.findText(str(source))
            if index > 0:
                self.image_combo.setCurrentIndex(index)

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

    # ------------------------------------------------------------------ actions
    def _fail(self, err: Exception) -> None:
        show_error(f"CryoSeg: {err}")
        self.status.setText(f"Failed: {err}")

    def measure(self) -> O.ObjectsResult | None:
        """Measure the chosen labels layer; fills the table."""
        layer = self.labels_layer()
        if layer is None:
            self.status.setText("No labels layer: segment an image first.")
            return None
        try:
            self.result = O.measure_layer(self.viewer, layer, self.image_layer(),
                                          min_size=self.min_size.value())
        except CryoSegError as err:
            self._fail(err)
            return None
        self._fill_table()
        n = self.result.n_objects
        self.status.setText(
            f"{n} object(s) in '{layer.name}' (≥ {self.min_size.value()} px). Click a row to "
            "go to an object; tag a few per class, then Train classifier.")
        return self.result

    def _fill_table(self) -> None:
        result = self.result
        self.table.setRowCount(0 if result is None else result.n_objects)
        if result is None:
            return
        predicted = result.extra.get("predicted class")
        for row in range(result.n_objects):
            item = QTableWidgetItem(str(int(result.table["label"][row])))
            item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            self.table.setItem(row, LABEL_COL, item)
            for col, (_, key, fmt) in enumerate(SHOWN, start=FIRST_COL):
                value = result.table[key][row]
                try:
                    text = fmt.format(int(value) if "d" in fmt else value)
                except (TypeError, ValueError):
                    text = ""
                if isinstance(value, float) and not np.isfinite(value):
                    text = ""
                item = QTableWidgetItem(text)
                if key != "class_name":
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight
                                              | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(row, col, item)
            combo = QComboBox()
            combo.addItems([""] + self.tag_names())
            combo.currentIndexChanged.connect(lambda _i, r=row: self._tag_changed(r))
            self.table.setCellWidget(row, TAG_COL, combo)
            self.table.setItem(row, PRED_COL,
                               QTableWidgetItem(predicted[row] if predicted else ""))
        self._color_predicted()

    def tag_names(self) -> list[str]:
        return [t.strip() for t in self.tags.text().split(",") if t.strip()]

    def _refresh_tag_combos(self) -> None:
        names = self.tag_names()
        for row in range(self.table.rowCount()):
            combo = self.table.cellWidget(row, TAG_COL)
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([""] + names)
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)

    def _tag_changed(self, row: int) -> None:
        n = len(self.row_tags())
        self.status.setText(f"{n} object(s) tagged.")

    def set_tag(self, row: int, tag: str) -> None:
        """Tag the object of ``row`` (adds ``tag`` to the tag list when new)."""
        if tag and tag not in self.tag_names():
            self.tags.setText(", ".join(self.tag_names() + [tag]))
            self._refresh_tag_combos()
        combo = self.table.cellWidget(row, TAG_COL)
        combo.setCurrentIndex(max(combo.findText(tag), 0))

    def row_tags(self) -> dict[int, str]:
        """``{row: tag}`` of the tagged rows."""
        tags = {}
        for row in range(self.table.rowCount()):
            text = self.table.cellWidget(row, TAG_COL).currentText()
            if text:
                tags[row] = text
        return tags

    def select_row(self, row: int) -> None:
        """Select the object of ``row`` in the objects layer and centre on it."""
        if self.result is None:
            return
        try:
            label = O.select_object(self.viewer, self.result, row)
        except CryoSegError as err:
            self._fail(err)
            return
        self.table.selectRow(row)
        self.status.setText(f"Object {label} selected.")

    def remove_small(self) -> int:
        """Remove objects below the minimum size (undoable per layer)."""
        if self.result is None and self.measure() is None:
            return 0
        try:
            removed = O.remove_small(self.result, self.min_size.value())
        except CryoSegError as err:
            self._fail(err)
            return 0
        self._fill_table()
        self.status.setText(f"Removed {removed} object(s) smaller than {self.min_size.value()} "
                            f"px from '{self.result.source.name}' (Ctrl+Z on the layer undoes).")
        return removed

    def train_classifier(self) -> ObjectClassifier | None:
        """Fit a random forest on the tagged rows and predict every object."""
        if self.result is None:
            self.status.setText("Measure objects first.")
            return None
        tags = self.row_tags()
        if len(set(tags.values())) < 2:
            self.status.setText("Tag objects of at least two classes first (column 'tag').")
            return None
        features = feature_matrix(self.result.table)
        rows = sorted(tags)
        try:
            self.classifier = fit_forest(features[rows], [tags[r] for r in rows],
                                         FEATURE_COLUMNS)
        except CryoSegError as err:
            self._fail(err)
            return None
        self.apply_classifier()
        self.status.setText(f"Classifier trained on {len(rows)} tagged object(s); "
                            f"predicted {self.result.n_objects}.")
        return self.classifier

    def apply_classifier(self) -> list[str]:
        """Predict every measured object with the current classifier."""
        if self.result is None or self.classifier is None:
            return []
        clf = self.classifier
        predicted = clf.predict(feature_matrix(self.result.table, clf.feature_names))
        self.result.extra["predicted class"] = predicted
        O.refresh_features(self.result)
        self._fill_table_predictions(predicted)
        return predicted

    def _fill_table_predictions(self, predicted: list[str]) -> None:
        for row, name in enumerate(predicted):
            self.table.setItem(row, PRED_COL, QTableWidgetItem(name))
        self._color_predicted()

    def _color_predicted(self) -> None:
        if self.result is None or self.classifier is None:
            return
        predicted = self.result.extra.get("predicted class")
        if not predicted:
            return
        classes = list(self.classifier.classes)
        for row, name in enumerate(predicted):
            item = self.table.item(row, PRED_COL)
            if item is not None and name in classes:
                item.setForeground(QColor(O.class_color(classes, name)))
        if self.color_check.isChecked():
            O.color_by_class(self.result, list(predicted), classes)

    def save_classifier(self, path: str | None = None) -> Path | None:
        if self.classifier is None:
            self.status.setText("Train a classifier first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save object classifier",
                                                  self._folder(), "Classifier (*.npz)")
            if not path:
                return None
        try:
            written = self.classifier.save(path)
        except CryoSegError as err:
            self._fail(err)
            return None
        self.status.setText(f"Saved classifier to {written}")
        return written

    def load_classifier(self, path: str | None = None) -> ObjectClassifier | None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load object classifier",
                                                  self._folder(), "Classifier (*.npz)")
            if not path:
                return None
        try:
            self.classifier = ObjectClassifier.load(path)
        except CryoSegError as err:
            self._fail(err)
            return None
        self.apply_classifier()
        self.status.setText(f"Loaded classifier ({', '.join(self.classifier.classes)}).")
        return self.classifier

    def export_csv(self, folder: str | None = None) -> Path | None:
        """Write the table as CSV (beside the labels file, else in the Export folder)."""
        if self.result is None:
            self.status.setText("Measure objects first.")
            return None
        tags = self.row_tags()
        if tags:
            self.result.extra["tag"] = [tags.get(r, "") for r in range(self.result.n_objects)]
        try:
            path = O.export_csv(self.result, folder or self._folder())
        except CryoSegError as err:
            self._fail(err)
            return None
        self.status.setText(f"Wrote {path}")
        show_info(f"CryoSeg: wrote {path.name}")
        return path

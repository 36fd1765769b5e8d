"""Export section: labels layer(s) -> ImageJ TIFF in a folder, never overwriting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.viewer import layers as L

ALL_CRYOSEG = "All CryoSeg labels layers"


#: napari's save dialog preselects its own TIFF writer (no class names, colours or pixel
#: size) and has no setting to change that: say exactly what to pick.
SAVE_AS_HINT = ("File ▸ Save Selected Layer(s) writes this format only when you pick "
                "\"labels TIFF (class names, colours, pixel size)\" as the file type in its "
                "dialog; napari's default TIFF keeps no class names, colours or pixel size.")

class ExportPanel(QWidget):
    """Writes labels layers as TIFF with pixel size and class names (Fiji-readable)."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self._layers: list[Any] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.layer = QComboBox()
        self.layer.setToolTip("A labels layer, or every labels layer CryoSeg made")
        form.addRow("Labels:", self.layer)
        folder_row = QHBoxLayout()
        self.folder = QLineEdit(str(Path.home()))
        self.folder.setToolTip("Existing folder; files are named after the layer")
        self.browse = QPushButton("Choose…")
        folder_row.addWidget(self.folder)
        folder_row.addWidget(self.browse)
        form.addRow("Folder:", folder_row)
        layout.addLayout(form)
        self.export_button = QPushButton("Export TIFF")
        self.export_button.setToolTip(
            "ImageJ TIFF with pixel size, class names and colours, named '<layer>_labels.tif' "
            "so napari reopens it as labels. Existing files are never replaced: a new name "
            "'<layer>_labels (1).tif' is used instead")
        layout.addWidget(self.export_button)
        self.save_hint = QLabel(SAVE_AS_HINT)
        self.save_hint.setWordWrap(True)
        self.save_hint.setStyleSheet("color: gray")
        layout.addWidget(self.save_hint)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.browse.clicked.connect(self._choose_folder)
        self.export_button.clicked.connect(self.export)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        from napari.layers import Labels

        current = self.layer.currentText()
        self._layers = [lyr for lyr in self.viewer.layers if isinstance(lyr, Labels)]
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItem(ALL_CRYOSEG)
        for lyr in self._layers:
            self.layer.addItem(lyr.name)
        index = self.layer.findText(current)
        self.layer.setCurrentIndex(max(index, 0))
        self.layer.blockSignals(False)

    def select(self, name: str) -> None:
        self.layer.setCurrentIndex(max(self.layer.findText(name), 0))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export labels to", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def targets(self) -> list[Any]:
        index = self.layer.currentIndex()
        if index <= 0:
            return L.cryoseg_labels_layers(self.viewer)
        return [self._layers[index - 1]]

    def export(self) -> list[Path]:
        """Export the chosen layer(s); returns the written paths."""
        layers = self.targets()
        if not layers:
            self.status.setText("No labels layer to export: segment an image first.")
            return []
        written: list[Path] = []
        try:
            for layer in layers:
                written.append(Path(L.export_labels_layer(layer, self.folder.text(),
                                                          session=self.session)))
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            self.status.setText(f"Failed: {err}")
            return written
        names = ", ".join(p.name for p in written)
        renamed = [p for p in written if p.stem.endswith(")")]
        note = ("\nExisting files were kept; new names were used." if renamed else "")
        self.status.setText(
            f"Wrote {len(written)} file(s) to {written[0].parent}: {names}{note}")
        show_info(f"CryoSeg: exported {names}")
        return written

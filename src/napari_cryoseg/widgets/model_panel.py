"""Model section: bundled default (lazy), open a model file, recent models, device."""

from __future__ import annotations

import html
import json
import os
import sys
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.device import available_devices, describe_devices
from napari_cryoseg.engine.inference.bioimageio_model import load_any_model
from napari_cryoseg.model.bundled import (
    BACKBONE_NAME,
    BUNDLED_TITLES,
    DEFAULT_MODEL_NAME,
    default_model_path,
    load_bundled,
)
from napari_cryoseg.viewer.layers import model_summary_lines

MAX_RECENT = 6
MODEL_FILTER = ("CryoSeg models and bioimage.io packages (*.pt *.pth *.zip *.yaml);;"
                "All files (*)")


def config_dir() -> Path:
    """Where the dock keeps its small settings (``CRYOSEG_CONFIG_DIR`` overrides)."""
    env = os.environ.get("CRYOSEG_CONFIG_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "napari-cryoseg"


def _recent_file() -> Path:
    return config_dir() / "recent_models.json"


def read_recent() -> list[str]:
    """Recently opened model files that still exist, newest first."""
    try:
        paths = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and Path(p).is_file()][:MAX_RECENT]


def remember_recent(path: str | Path) -> None:
    """Put ``path`` first in the recent list (best effort: never fails the caller)."""
    entry = str(Path(path).resolve())
    paths = [entry] + [p for p in read_recent() if p != entry]
    try:
        _recent_file().parent.mkdir(parents=True, exist_ok=True)
        _recent_file().write_text(json.dumps(paths[:MAX_RECENT], indent=1), encoding="utf-8")
    except OSError:
        pass


class ModelPanel(QWidget):
    """Shows and changes the session's model and device."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary)

        buttons = QGridLayout()  # two rows: three buttons side by side overflow the dock
        self.default_button = QPushButton("Use bundled default")
        self.default_button.setToolTip(
            f"Load {BUNDLED_TITLES[DEFAULT_MODEL_NAME]}, shipped with CryoSeg")
        self.em_button = QPushButton("Use EM model")
        self.em_button.setToolTip(
            f"Load {BUNDLED_TITLES[BACKBONE_NAME]}: the EM backbone shipped with CryoSeg "
            "(trained on non-commercial data: research use only); new models start from it")
        self.open_button = QPushButton("Open model file…")
        self.open_button.setToolTip("Load a .pt model saved by CryoSeg (cryoseg train/finetune)")
        buttons.addWidget(self.default_button, 0, 0)
        buttons.addWidget(self.em_button, 0, 1)
        buttons.addWidget(self.open_button, 1, 0, 1, 2)
        layout.addLayout(buttons)

        form = QFormLayout()
        self.recent = QComboBox()
        self.recent.setToolTip("Model files opened recently")
        form.addRow("Recent:", self.recent)
        self.device = QComboBox()
        self.device.addItems(["auto", *available_devices()])
        self.device.setToolTip("auto = CUDA GPU if present, else Apple GPU, else CPU")
        form.addRow("Device:", self.device)
        self.device_info = QLabel(f"found: {describe_devices()}")
        self.device_info.setWordWrap(True)
        self.device_info.setStyleSheet("color: gray")
        form.addRow("", self.device_info)
        layout.addLayout(form)

        self.default_button.clicked.connect(self.use_default)
        self.em_button.clicked.connect(lambda: self.use_bundled(BACKBONE_NAME))
        self.open_button.clicked.connect(self.open_dialog)
        self.recent.activated.connect(self._recent_chosen)
        self.device.currentTextChanged.connect(self._device_changed)
        session.on_model_changed(lambda _m: self.refresh())
        self.refresh_recent()
        self.refresh()

    # --- actions -----------------------------------------------------------------------
    def use_default(self) -> bool:
        """Load the bundled default model; False (and a notification) if it is missing."""
        return self.use_bundled(DEFAULT_MODEL_NAME)

    def use_bundled(self, name: str) -> bool:
        """Load the bundled model ``name``; False (and a notification) if it is missing."""
        try:
            self.session.set_model(load_bundled(name))
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return False
        return True

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open CryoSeg model", "", MODEL_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> bool:
        """Load a model file and make it current; errors become a notification."""
        try:
            model = load_any_model(path)  # a model file or a bioimage.io package
        except CryoSegError as err:
            show_error(f"CryoSeg: {err}")
            return False
        except Exception as err:  # noqa: BLE001 - a broken file must not crash the dock
            show_error(f"CryoSeg: could not open model '{path}': {type(err).__name__}: {err}")
            return False
        self.session.set_model(model)
        remember_recent(path)
        self.refresh_recent()
        show_info(f"CryoSeg: model '{model.name}' loaded")
        return True

    def _recent_chosen(self, index: int) -> None:
        path = self.recent.itemData(index)
        if path:
            self.open_path(path)

    def _device_changed(self, text: str) -> None:
        self.session.device = text

    # --- view --------------------------------------------------------------------------
    def refresh_recent(self) -> None:
        self.recent.clear()
        paths = read_recent()
        self.recent.addItem("(none yet)" if not paths else "choose a recent model…", None)
        for p in paths:
            self.recent.addItem(Path(p).name, p)
            self.recent.setItemData(self.recent.count() - 1, p, Qt.ItemDataRole.ToolTipRole)
        self.recent.setEnabled(bool(paths))

    def refresh(self) -> None:
        model = self.session.model
        if model is None:
            path = default_model_path()
            if path.is_file():
                self.summary.setText(
                    f"<b>Bundled default</b> ({html.escape(path.name)}) — loads at first run")
            else:
                self.summary.setText(
                    "<b>No model loaded.</b> The bundled default model is missing "
                    f"(<i>{html.escape(str(path))}</i>); open a model file.")
            return
        s = model_summary_lines(model)
        swatches = " ".join(
            f"<span style='color:{html.escape(color)}'>&#9632;</span>&nbsp;{html.escape(name)}"
            for name, color in s["classes"]
        )
        self.summary.setText(
            f"<b>{html.escape(s['name'])}</b><br>{swatches}<br>"
            f"<small>{html.escape(s['arch'])}<br>{html.escape(s['tile'])}; "
            f"{html.escape(s['pixel'])}<br>{html.escape(s['provenance'])}</small>"
        )

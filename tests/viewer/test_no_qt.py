"""The sections' controllers load without Qt (they are tested and used headless)."""

from __future__ import annotations

import subprocess
import sys

import pytest

QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari._qt", "napari.qt",
              "magicgui", "superqt")


@pytest.mark.parametrize("module", ["objects_state", "uncertainty_state", "autosave"])
def test_controller_imports_no_qt(module):
    code = (f"import sys, napari_cryoseg.viewer.{module}\n"
            f"loaded = [m for m in {QT_MODULES!r} if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


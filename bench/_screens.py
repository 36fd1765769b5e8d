"""Shared helpers of the bench/make_*screenshot*.py scripts (real napari windows -> PNGs)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Where the screenshots go: docs/images, or $CRYOSEG_SCREENSHOTS to look at them first
#: without replacing the documented ones.
IMAGES = Path(os.environ.get("CRYOSEG_SCREENSHOTS")
              or Path(__file__).resolve().parents[1] / "docs" / "images")


@contextmanager
def virtual_display(size: tuple[int, int] = (1500, 950)) -> Iterator[None]:
    """A virtual X screen (Xvfb via PyVirtualDisplay) when there is no DISPLAY on Linux."""
    display = None
    if not os.environ.get("DISPLAY") and sys.platform == "linux":
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=size, color_depth=24)
        display.start()
    try:
        yield
    finally:
        if display is not None:
            display.stop()


def settle(rounds: int = 30) -> None:
    """Let Qt process pending events (layout, repaints) before a screenshot."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.02)


def save(viewer, name: str) -> Path:
    """Save the whole napari window (canvas and docks) as ``IMAGES/<name>``."""
    from skimage.io import imsave

    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    sys.stdout.write(f"wrote {path}\n")
    return path

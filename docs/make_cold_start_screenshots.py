"""Regenerate the "Start from nothing" screenshots of docs/user-guide.md (one command).

    python docs/make_cold_start_screenshots.py [--budget 60] [--preset small]

Opens a synthetic grid square in a real napari window with the CryoSeg dock, names two
classes (cell, ice) in **Train new model**, paints strokes of each and of background
(here: the eroded cores of the true objects and a few lines across the background, as a
user would scribble them), and saves the window three times:

* ``cold-start-classes.png`` - the class list and the painted strokes;
* ``cold-start-preview.png`` - training, with the live preview layer and curve;
* ``cold-start-result.png`` - the new model's labels layer of the image.

Needs Xvfb when there is no DISPLAY.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _screens import save, settle, virtual_display
from scipy import ndimage


def strokes(truth: np.ndarray, values: dict[int, int]) -> np.ndarray:
    """Sparse strokes: object cores, and lines across the background (0 = not painted)."""
    painted = np.zeros(truth.shape, np.uint8)
    for cls, value in values.items():
        if cls:
            painted[ndimage.binary_erosion(truth == cls, iterations=3)] = value
    background = ndimage.binary_erosion(truth == 0, iterations=5)
    lines = np.zeros_like(background)
    for at in np.linspace(0, truth.shape[0], 7)[1:-1].astype(int):
        lines[at:at + 3] = True
        lines[:, at:at + 3] = True
    painted[background & lines] = values[0]
    return painted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args(argv)
    with virtual_display((1500, 950)):
        import napari

        from napari_cryoseg.core.synthetic import SampleConfig, make_sample

        viewer = napari.Viewer(title="CryoSeg: start from nothing")
        viewer.window.resize(1500, 950)
        _dock, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
        dock.session.device = "cpu"
        dock.show_section("Train new model", only=True)
        panel = dock.train_panel
        settings = dock.session.settings
        settings.set("train.preset", args.preset)
        settings.set("train.time_budget_s", args.budget)
        image, truth = make_sample(3, SampleConfig(shape=(384, 384)))
        viewer.add_image(image, name="grid square")
        for name in ("cell", "ice"):
            panel.class_list.add_btn.click()
            panel.store.classes.rename(panel.store.classes.values[-1], name)
        background, cell, ice = panel.store.classes.values
        (annotations,) = panel.annotate_selected()
        painted = strokes(truth, {0: background, 1: cell, 2: ice})
        for value in (background, cell, ice):
            annotations.data_setitem(np.nonzero(painted == value), value)
        panel.store.paint_with(cell)
        viewer.reset_view()
        settle()
        save(viewer, "cold-start-classes.png")

        app = napari.qt.get_qapp()
        shown: list[int] = []
        panel.preview_shown.connect(shown.append)
        panel.start_training()

        def wait(done, timeout: float) -> None:
            end = time.monotonic() + timeout
            while not done() and time.monotonic() < end:
                app.processEvents()
                time.sleep(0.02)

        wait(lambda: len(shown) >= 3, args.budget)
        annotations.visible = False  # the preview, not the strokes, in this picture
        settle()
        save(viewer, "cold-start-preview.png")
        annotations.visible = True
        wait(lambda: not dock.runner.busy and panel.job is None, args.budget + 300)
        wait(lambda: not dock.runner.busy, 300)  # the segmentation that follows
        annotations.visible = False
        settle()
        save(viewer, "cold-start-result.png")
        sys.stdout.write(f"previews at steps {shown}; {panel.metrics_label.text()}\n")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

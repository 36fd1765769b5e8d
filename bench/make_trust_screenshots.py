"""Screenshots of the dock's budget estimate, a run kept aside and a fit warning.

    python bench/make_trust_screenshots.py

A real napari window (under a virtual X display when there is no DISPLAY), the CryoSeg
dock docked: **Train new model** measures this machine's step time and shows what its
Time budget buys (``budget-estimate.png``); a 6-step run on painted strokes is kept
aside, not applied (``kept-aside.png``); the bundled model segments random noise that
has no pixel size and the Segment section warns (``fit-warning.png``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from _screens import save, settle, virtual_display

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "widgets"))


def _wait(app, done, timeout=900.0):
    end = time.monotonic() + timeout
    while not done():
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() > end:
            raise TimeoutError("the dock did not finish in time")
    settle()


def main() -> int:
    with virtual_display((1400, 900)):
        import napari
        from cold_start_helpers import paint, scene, strokes
        from qtpy.QtWidgets import QApplication

        viewer = napari.Viewer(title="CryoSeg", show=True)
        viewer.window.resize(1360, 860)
        app = QApplication.instance()
        _dock_widget, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
        dock.session.device = "cpu"
        image, truth = scene(1, size=256)
        viewer.add_image(image, name="lift-out")
        panel = dock.train_panel
        dock.show_section("Train new model", only=True)
        panel.class_list.add_btn.click()
        background, disk = (spec.value for spec in panel.store.classes.classes)
        (annotations,) = panel.annotate_selected()
        paint(annotations, strokes(truth, {0: background, 1: disk}))
        line = panel.budget_line
        line.measure()
        _wait(app, lambda: not dock.session.busy)
        viewer.reset_view()
        save(viewer, "budget-estimate.png")

        for key, value in {"train.preset": "tiny", "train.patch": 64, "train.batch_size": 4,
                           "train.time_budget_s": None, "train.steps": 6,
                           "loop.preview": False}.items():
            dock.session.settings.set(key, value)
        panel.start_training()
        _wait(app, lambda: not dock.session.busy)
        save(viewer, "kept-aside.png")

        for layer in list(viewer.layers):
            layer.visible = False
        noise = np.random.default_rng(0).normal(128, 40, (384, 384)).clip(0, 255)
        viewer.add_image(noise.astype(np.uint8), name="noise")
        dock.show_section("Segment", only=True)
        seg = dock.segment_panel
        seg.image.select(viewer.layers["noise"])
        seg.run()
        _wait(app, lambda: not dock.session.busy)
        viewer.layers.selection.active = viewer.layers["noise labels"]
        viewer.reset_view()
        save(viewer, "fit-warning.png")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the "Start from nothing" screenshots of docs/user-guide.md (one command).

    python bench/make_cold_start_screenshots.py [--steps 150] [--preset tiny]

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
    """Sparse strokes as a user scribbles them (0 = not painted): a short band through
    the middle of each object, a line traced around the objects and a few lines across
    the background."""
    painted = np.zeros(truth.shape, np.uint8)
    rows = np.arange(truth.shape[0])[:, None]
    for cls, value in values.items():
        if not cls:
            continue
        objects, n = ndimage.label(truth == cls)
        core = ndimage.binary_erosion(truth == cls, iterations=2)
        for index, (cy, _cx) in enumerate(ndimage.center_of_mass(
                truth == cls, objects, range(1, n + 1)), start=1):
            band = np.abs(rows - cy) <= 3  # a brush of about 7 px through the middle
            painted[core & (objects == index) & band] = value
    objects = truth > 0
    around = (ndimage.binary_dilation(objects, iterations=6)
              & ~ndimage.binary_dilation(objects, iterations=3))
    background = ndimage.binary_erosion(truth == 0, iterations=5)
    lines = np.zeros_like(background)
    for at in np.linspace(0, truth.shape[0], 5)[1:-1].astype(int):
        lines[at:at + 4] = True
        lines[:, at:at + 4] = True
    painted[(truth == 0) & (around | (background & lines))] = values[0]
    return painted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # a step count, not a time budget: the pictures must not depend on the machine's load
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--patch", type=int, default=128)
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
        settings.set("train.time_budget_s", None)
        settings.set("train.steps", args.steps)
        settings.set("train.patch", args.patch)
        settings.set("train.batch_size", 4)
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

        def on_preview(step: int) -> None:
            # saved at the first preview past half the steps, while the run (and its
            # preview layer) lives
            shown.append(step)
            if step >= args.steps // 2 and len([s for s in shown if s >= args.steps // 2]) == 1:
                annotations.visible = False  # the preview, not the strokes, in this one
                save(viewer, "cold-start-preview.png")
                annotations.visible = True

        panel.preview_shown.connect(on_preview)
        panel.start_training()

        def wait(done, timeout: float) -> None:
            end = time.monotonic() + timeout
            while not done() and time.monotonic() < end:
                app.processEvents()
                time.sleep(0.02)

        wait(lambda: not dock.runner.busy and not panel.round.running, 3600)
        wait(lambda: not dock.runner.busy, 300)  # the segmentation that follows
        annotations.visible = False
        settle()
        save(viewer, "cold-start-result.png")
        sys.stdout.write(f"previews at steps {shown}; {panel.metrics_label.text()}\n")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

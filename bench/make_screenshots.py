"""Regenerate the user-guide screenshots under docs/images/ (one command).

    python bench/make_screenshots.py [--model FILE]

Opens a real napari window (under a virtual X display when there is no DISPLAY: needs
``Xvfb``, which ``pytest-xvfb``'s PyVirtualDisplay drives), docks CryoSeg, segments the
synthetic grid square with the bundled default model (or ``--model``) through the dock,
and saves ``viewer.screenshot(canvas_only=False, flash=False)`` for each section.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from _screens import IMAGES, save, virtual_display


def _wait(app, done, timeout=300.0):
    end = time.monotonic() + timeout
    while not done():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError("the dock did not finish in time")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled default model)")
    args = parser.parse_args(argv)
    with virtual_display((1400, 900)):
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_cryoseg.contributions.sample_data import sample_layers
        from napari_cryoseg.core.synthetic import SampleConfig, make_sample, make_sample_stack

        IMAGES.mkdir(parents=True, exist_ok=True)
        viewer = napari.Viewer(title="CryoSeg", show=True)
        viewer.window.resize(1360, 860)
        app = QApplication.instance()
        for data, kwargs, kind in sample_layers(seed=0, size=512):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        _dock_widget, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
        if args.model:
            dock.model_panel.open_path(args.model)
        elif not dock.model_panel.use_default():
            sys.stderr.write("bundled default model missing: pass --model FILE\n")
            return 2
        seg = dock.segment_panel
        seg.image.select(viewer.layers["grid square"])
        seg.run()
        _wait(app, lambda: seg.job is None and seg.run_button.isEnabled())
        viewer.layers.selection.active = viewer.layers["grid square labels"]
        dock.show_section("Segment")
        viewer.reset_view()
        save(viewer, "dock-segment.png")

        # Batch: two more images (one a 3-slice stack), all checked.
        cfg = SampleConfig(shape=(384, 384), pixel_size_nm=50.0)
        viewer.add_image(make_sample(5, cfg)[0], name="square B", scale=(50.0, 50.0),
                         units=("nm", "nm"))
        viewer.add_image(make_sample_stack(3, 11, SampleConfig(shape=(256, 320)))[0],
                         name="stack C", scale=(50.0, 50.0, 50.0), units=("nm",) * 3)
        for name in ("square B", "stack C"):
            viewer.layers[name].visible = False
        dock.show_section("Batch", only=True)
        batch = dock.batch_panel
        batch.run()
        _wait(app, lambda: batch.job is None and batch.run_button.isEnabled())
        for layer in viewer.layers:  # show one batch result alone (all sit at the origin)
            layer.visible = layer.name in ("stack C", "stack C labels")
        viewer.layers.selection.active = viewer.layers["stack C labels"]
        viewer.dims.set_current_step(0, 1)
        viewer.reset_view()
        save(viewer, "dock-batch.png")

        # Export: all CryoSeg labels layers to a temporary folder, twice (no overwrite).
        dock.show_section("Export", only=True)
        export = dock.export_panel
        export.folder.setText(tempfile.mkdtemp(prefix="cryoseg-export-"))
        export.select("grid square labels")
        export.export()
        export.export()
        for layer in viewer.layers:
            layer.visible = layer.name in ("grid square", "grid square labels")
        viewer.layers.selection.active = viewer.layers["grid square labels"]
        viewer.reset_view()
        _wait(app, lambda: True)
        save(viewer, "dock-export.png")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate docs/images/finetune.png: the interactive loop on a domain shift (one command).

    python bench/make_finetune_screenshot.py [--budget 90]

The bundled default model segments two grid squares of a new look (much stronger shot
noise and charging than it was trained on). The first is corrected (here: replaced by
its ground truth, as a user would paint it) and marked reviewed; the Fine-tune button
trains a copy for ``--budget`` seconds; the new model is swapped in and re-segments the
second image; the window with the live curve is saved. Needs Xvfb when there is no DISPLAY.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _screens import save, settle, virtual_display

NEW_LOOK = {"shape": (384, 384), "noise": 0.3, "charging": 0.8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=90)
    args = parser.parse_args(argv)
    with virtual_display((1500, 950)):
        import napari

        from napari_cryoseg.core.synthetic import SampleConfig, make_sample
        from napari_cryoseg.engine.events import drain
        from napari_cryoseg.engine.inference.predict import segment
        from napari_cryoseg.model.bundled import load_default_model
        from napari_cryoseg.viewer.layers import record_for_image, show_prediction
        from napari_cryoseg.viewer.review import CorrectionStore
        from napari_cryoseg.viewer.session import Session
        from napari_cryoseg.widgets.main import CryoSegWidget

        viewer = napari.Viewer(title="CryoSeg: correct and fine-tune")
        viewer.window.resize(1500, 950)
        session = Session.for_viewer(viewer)
        session.set_model(load_default_model(), keep_previous=False)
        CorrectionStore.for_session(session, project_dir=Path(tempfile.mkdtemp()) / "project")
        dock = CryoSegWidget(viewer)
        viewer.window.add_dock_widget(dock, name="CryoSeg", area="right")
        panel = dock.finetune_panel
        records, truths = [], []
        for index, seed in enumerate((500, 601)):
            image, truth = make_sample(seed, SampleConfig(**NEW_LOOK))
            layer = viewer.add_image(image, name=f"new look {index + 1}",
                                     translate=(0, index * 400))
            show_prediction(viewer, session, layer, drain(segment(image, session.model)))
            records.append(record_for_image(session, layer))
            truths.append(truth)
        records[0].labels_layer.data = truths[0].astype(records[0].labels_layer.data.dtype)
        panel.store.mark_reviewed(records[0])
        dock.review_panel.refresh_counts()
        dock.show_section("Fine-tune", only=True)
        panel.budget.value = args.budget
        panel.start_finetune()
        app = napari.qt.get_qapp()
        end = time.monotonic() + args.budget + 240
        while dock.runner.busy and \
                time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)
        settle()
        viewer.reset_view()
        save(viewer, "finetune.png")
        sys.stdout.write(f"{panel.metrics_label.text()}\n")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate docs/images/finetune_change_report.png: the change report after a fine-tune.

    python bench/make_change_report_screenshot.py [--steps 20]

The bundled default model segments three grid squares of a new look. On the first, the
false positives of one class are erased in one corner only (a partial correction, nothing
marked reviewed); Fine-tune trains a copy for ``--steps`` steps, compares it with the
current model on the two other images and the rest of the first, and shows the change
report (applied, or kept aside behind Apply / Discard when the corrections do not
support the change). Needs Xvfb when there is no DISPLAY.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _screens import save, settle, virtual_display

NEW_LOOK = {"shape": (384, 384), "noise": 0.3, "charging": 0.8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
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

        viewer = napari.Viewer(title="CryoSeg: what fine-tuning changes elsewhere")
        viewer.window.resize(1500, 950)
        session = Session.for_viewer(viewer)
        session.device = "cpu"
        session.set_model(load_default_model(), keep_previous=False)
        CorrectionStore.for_session(session, project_dir=Path(tempfile.mkdtemp()) / "project")
        dock = CryoSegWidget(viewer)
        viewer.window.add_dock_widget(dock, name="CryoSeg", area="right")
        panel = dock.finetune_panel
        records, truths = [], []
        for index, seed in enumerate((500, 601, 702)):
            image, truth = make_sample(seed, SampleConfig(**NEW_LOOK))
            layer = viewer.add_image(image, name=f"new look {index + 1}",
                                     translate=(0, index * 400))
            show_prediction(viewer, session, layer, drain(segment(image, session.model)))
            records.append(record_for_image(session, layer))
            truths.append(truth)
        # the user erases what is wrongly labelled in the top-left corner of the first
        labels = np.array(records[0].labels_layer.data)
        corner = np.zeros(labels.shape, bool)
        corner[:160, :160] = True
        wrong = corner & (labels > 0) & (labels != truths[0])
        labels[wrong] = 0
        records[0].labels_layer.data = labels
        dock.review_panel.refresh_counts()
        dock.show_section("Fine-tune", only=True)
        panel.budget.value = 0
        panel.steps.value = args.steps
        panel.start_finetune()
        app = napari.qt.get_qapp()
        end = time.monotonic() + 1200
        while dock.runner.busy and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)
        settle()
        viewer.reset_view()
        save(viewer, "finetune_change_report.png")
        sys.stdout.write(f"{panel.metrics_label.text()}\n{panel.status_label.text()}\n")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

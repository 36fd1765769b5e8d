"""The interactive loop on real EM it has never seen, in a real napari window (issue 5).

    xvfb-run -a python bench/loop_real_em.py --model VNC_MODEL.pt --data ../shared/data \
        --k 1 --budget 45 --out bench/results/loop_real_em_k1.json

A membrane model trained on Drosophila VNC (``cryoseg train ... --classes 1``) meets ISBI
2012 sections (same tissue type, other animal, other microscope session). In one napari
window with the CryoSeg dock:

1. sections 00..k-1 (to correct) and 06..11 (never corrected) are opened and segmented;
2. the labels of sections 00..k-1 are replaced by their ground truth (the user's
   corrections; the whole image is marked reviewed);
3. *Fine-tune* is pressed with the given time budget; a QTimer heartbeat records the
   event-loop gaps while the worker trains;
4. when the new model is swapped in, the uncorrected layers are re-segmented
   automatically; their Dice against ground truth before and after is recorded, with
   the wall time from the press to the last re-segmented layer;
5. the parent and the swapped-in model are also scored on sections 06-29 headlessly.

Writes a JSON report (and optionally a screenshot outside the repository: ISBI images
are non-commercial data and are never committed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _screens import settle, virtual_display  # a sibling script of bench/


def _read(data: Path, first: int, last: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import tifffile

    out = []
    for i in range(first, last + 1):
        image = tifffile.imread(data / "isbi2012_em_membranes" / "images" / f"train_{i:02d}.tif")
        mask = tifffile.imread(data / "isbi2012_em_membranes" / "masks" / f"train_{i:02d}.tif")
        out.append((f"isbi {i:02d}", image, (mask == 1).astype(np.uint8)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="VNC membrane model (.pt)")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--k", type=int, default=1, help="sections corrected (00..k-1)")
    parser.add_argument("--budget", type=float, default=45.0, help="fine-tune seconds")
    parser.add_argument("--out", required=True, help="JSON report")
    parser.add_argument("--screenshot", default=None, help="PNG path (not in the repo)")
    args = parser.parse_args()
    data = Path(args.data)

    with virtual_display():
        import napari
        from qtpy.QtCore import QTimer

        from napari_cryoseg.core.metrics import dice
        from napari_cryoseg.engine.events import drain
        from napari_cryoseg.engine.inference.evaluate import evaluate
        from napari_cryoseg.engine.inference.predict import segment
        from napari_cryoseg.model.checkpoint import load_model
        from napari_cryoseg.viewer.layers import record_for_image, show_prediction
        from napari_cryoseg.viewer.review import CorrectionStore
        from napari_cryoseg.viewer.session import Session
        from napari_cryoseg.widgets.main import CryoSegWidget

        viewer = napari.Viewer(title="CryoSeg: real EM loop")
        viewer.window.resize(1500, 950)
        session = Session.for_viewer(viewer)
        session.device = "cpu" if not _has_cuda() else "cuda"
        parent = load_model(args.model)
        session.set_model(parent, keep_previous=False)
        CorrectionStore.for_session(session, project_dir=Path(tempfile.mkdtemp()) / "project")
        dock = CryoSegWidget(viewer)
        viewer.window.add_dock_widget(dock, name="CryoSeg", area="right")
        panel = dock.finetune_panel
        corrected = _read(data, 0, args.k - 1)
        others = _read(data, 6, 11)
        records = {}
        for index, (name, image, _) in enumerate(corrected + others):
            layer = viewer.add_image(image, name=name, translate=(0, index * 530))
            prediction = drain(segment(image, session.model, device=session.device))
            show_prediction(viewer, session, layer, prediction)
            records[name] = record_for_image(session, layer)
        before = {name: dice(records[name].labels_layer.data, truth, 1)
                  for name, _, truth in others}
        for name, _, truth in corrected:
            layer = records[name].labels_layer
            layer.data = truth.astype(layer.data.dtype)  # the user's corrections
            panel.store.mark_reviewed(records[name])
        dock.review_panel.refresh_counts()
        dock.show_section("Fine-tune", only=True)
        panel.budget.value = args.budget

        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        app = napari.qt.get_qapp()
        pressed = time.perf_counter()
        panel.start_finetune()
        training_started = time.perf_counter()
        deadline = time.monotonic() + args.budget + 600
        while panel.round.running and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.005)
        trained = time.perf_counter()
        while dock.runner.busy and \
                time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.005)
        done = time.perf_counter()
        timer.stop()
        settle()
        gaps = np.diff([t for t in ticks if training_started + 0.5 <= t <= trained]) * 1000
        swapped = session.model is not parent
        after = {name: dice(records[name].labels_layer.data, truth, 1)
                 for name, _, truth in others}
        if args.screenshot:
            viewer.reset_view()
            settle()
            from skimage.io import imsave

            imsave(args.screenshot, viewer.screenshot(canvas_only=False, flash=False),
                   check_contrast=False)
        panel_text = panel.metrics_label.text()
        status_text = panel.status_label.text()
        new_model = session.model
        viewer.close()

    test = _read(data, 6, 29)  # masks already 0/1 membrane

    def score(model) -> float:
        report = drain(evaluate(model, [t[1] for t in test], [t[2] for t in test],
                                device=session.device))
        return float(report.mean_foreground_dice)

    report = {
        "model": str(args.model), "k": args.k, "budget_s": args.budget,
        "device": session.device,
        "swapped": swapped,
        "panel": panel_text, "status": status_text,
        "seconds_press_to_trained": trained - pressed,
        "seconds_press_to_resegmented": done - pressed,
        "heartbeat_ms": {"n": int(len(gaps)),
                         "median": float(statistics.median(gaps)) if len(gaps) else None,
                         "p95": float(np.percentile(gaps, 95)) if len(gaps) else None,
                         "max": float(gaps.max()) if len(gaps) else None},
        "layers_dice_before": before, "layers_dice_after": after,
        "layers_mean_before": float(np.mean(list(before.values()))),
        "layers_mean_after": float(np.mean(list(after.values()))),
        "isbi06_29_parent": score(parent),
        "isbi06_29_after": score(new_model),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("layers_dice_before", "layers_dice_after")}, indent=1))
    return 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

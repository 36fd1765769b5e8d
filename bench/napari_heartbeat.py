"""Does napari's main thread stay responsive? A 10 ms QTimer heartbeat around dock jobs.

    xvfb-run -a python bench/napari_heartbeat.py [--size 2048] [--budget 10]

Opens napari with the CryoSeg dock (as Plugins > CryoSeg does), then

1. segments a ``size`` x ``size`` synthetic grid square with the bundled default model
   (first segmentation of the process) and reports the heartbeat gaps while the job runs
   and from its last tile until the labels layer is shown;
2. corrects the result, presses Fine-tune (first training of the process) and reports
   how long the click blocked the event loop and the gaps during training.

Gaps are intervals between heartbeat ticks (10 ms when nothing blocks). Prints one JSON
object (median / p95 / max in ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def _stats(ticks: list[float], start: float, end: float) -> dict[str, float]:
    inside = [t for t in ticks if start <= t <= end]
    gaps = np.diff([start, *inside, end]) * 1000
    return {"median_ms": round(statistics.median(gaps), 1),
            "p95_ms": round(float(np.percentile(gaps, 95)), 1),
            "max_ms": round(float(gaps.max()), 1), "n": len(gaps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--open", choices=("plugin", "direct"), default="plugin",
                        help="open the dock as the Plugins menu does, or construct it "
                        "(for versions whose dock broke with napari's viewer proxy)")
    args = parser.parse_args(argv)

    import napari
    import torch
    from qtpy.QtCore import QTimer

    from napari_cryoseg.core.synthetic import SampleConfig, make_sample
    from napari_cryoseg.engine.events import Progress

    torch.set_num_threads(1)
    app = napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    if args.open == "plugin":
        _widget, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
    else:
        from napari_cryoseg.widgets.main import CryoSegWidget

        dock = CryoSegWidget(viewer)
        viewer.window.add_dock_widget(dock, name="CryoSeg", area="right")
    session = dock.session
    session.device = "cpu"
    image, truth = make_sample(0, SampleConfig(shape=(args.size, args.size)))
    layer = viewer.add_image(image, name="grid")

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    last_tile = [0.0]

    def wait(done, timeout=900.0):
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    panel = dock.segment_panel
    original = panel._on_event

    def on_event(event):  # note when the last tile was done (main thread hears it)
        if isinstance(event, Progress) and event.done == event.total:
            last_tile[0] = time.perf_counter()
        original(event)

    panel._on_event = on_event
    panel.image.select(layer)
    started = time.perf_counter()
    panel.run()
    wait(lambda: "grid labels" in viewer.layers and session.busy is None)
    shown = time.perf_counter()
    wait(lambda: time.perf_counter() > shown + 0.5)
    result = {
        "segment_s": round(shown - started, 2),
        "segment_job": _stats(ticks, started + 0.2, last_tile[0] or shown),
        "after_last_tile": _stats(ticks, last_tile[0] or shown, shown + 0.5),
        "last_tile_to_shown_s": round(shown - (last_tile[0] or shown), 2),
    }

    labels = viewer.layers["grid labels"]
    labels.data = truth.astype(labels.data.dtype)
    fpanel = dock.finetune_panel
    if hasattr(fpanel, "budget"):
        fpanel.budget.value = args.budget
        fpanel.resegment_choice.value = "none"
    else:
        fpanel.budget_spin.setValue(args.budget)
        fpanel.resegment_combo.setCurrentText("none")
    ticks.clear()
    pressed = time.perf_counter()
    fpanel.start_finetune()
    returned = time.perf_counter()
    wait(lambda: session.busy is None)
    finished = time.perf_counter()
    result["finetune_click_blocked_s"] = round(returned - pressed, 2)
    result["finetune_first_3s"] = _stats(ticks, pressed, min(pressed + 3, finished))
    result["finetune_job"] = _stats(ticks, pressed, finished)
    timer.stop()
    viewer.close()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

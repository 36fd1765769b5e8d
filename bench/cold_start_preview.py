"""What does the live preview cost a new model's training, and does napari stay responsive?

    xvfb-run -a python bench/cold_start_preview.py [--budget 20] [--size 512] \
        [--out bench/results/cold_start_preview.json] [--note "..."]

1. Engine, no viewer: trains a model from sparse strokes (``--presets``: the dock's
   default, ``small``, and ``tiny``) on a ``size`` x ``size`` synthetic image for a fixed time
   budget, with the live preview of the whole image (the dock's preview edge, every
   3 s) and without, alternating off / on / off / on so a change of the machine's load
   hits both; reports optimiser steps of each run and the share of steps the preview
   cost (the engine keeps previews within ``max_preview_share`` = 10 % of the time).
2. Real napari viewer with the CryoSeg dock (opened as Plugins > CryoSeg does): names
   two classes, paints strokes, presses Train (same preset and budget) with a 10 ms
   QTimer heartbeat running, and reports the heartbeat gaps (median / p95 / max) while
   training and previews update, the previews shown, and how long the click blocked.

Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _stats(ticks: list[float], start: float, end: float) -> dict[str, float]:
    inside = [t for t in ticks if start <= t <= end]
    gaps = np.diff([start, *inside, end]) * 1000
    return {"median_ms": round(statistics.median(gaps), 1),
            "p95_ms": round(float(np.percentile(gaps, 95)), 1),
            "max_ms": round(float(gaps.max()), 1), "n": len(gaps)}


def _scene(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic grid square, its classes and strokes a user paints (values 1 =
    background, 2 = cells; 0 = not painted), under 10 % of the pixels."""
    from scipy import ndimage

    from napari_cryoseg.core.synthetic import SampleConfig, make_sample

    image, truth = make_sample(seed, SampleConfig(shape=(size, size)))
    cells = truth == 1
    strokes = np.zeros(truth.shape, np.uint8)
    strokes[ndimage.binary_erosion(cells, iterations=3)] = 2
    background = ndimage.binary_erosion(~cells, iterations=4)
    lines = np.zeros_like(background)
    for at in np.linspace(0, size, 8)[1:-1].astype(int):
        lines[at:at + 2] = True
        lines[:, at:at + 2] = True
    strokes[background & lines] = 1
    return image, cells.astype(np.uint8), strokes


def engine_runs(preset: str, image, strokes, budget: float, edge: int, patch: int,
                batch_size: int) -> dict:
    """Steps in ``budget`` seconds with the preview off and on (alternating)."""
    from napari_cryoseg.engine.classes import ClassMapping
    from napari_cryoseg.engine.events import Preview, drain
    from napari_cryoseg.engine.training.preview import PreviewRequest
    from napari_cryoseg.engine.training.train import TrainConfig, train
    from napari_cryoseg.viewer.live_preview import block_mean

    factor = max(1, -(-max(image.shape) // edge))
    region = block_mean(image, factor)
    mapping = ClassMapping((2,), ("background", "cell"))
    config = TrainConfig(preset=preset, time_budget_s=budget, device="cpu", seed=0,
                         patch=patch, batch_size=batch_size)
    runs = []
    for preview_on in (False, True, False, True):
        previews: list = []

        def keep(event, previews=previews):
            if isinstance(event, Preview):
                previews.append(event)

        request = PreviewRequest(region) if preview_on else None
        result = drain(train([image], [strokes], config, mapping,
                             valid_masks=[strokes > 0], preview=request),
                       keep)
        runs.append({"preview": preview_on, "steps": result.steps,
                     "elapsed_s": round(result.elapsed_s, 2),
                     "previews": len(previews),
                     "preview_s": round(sum(p.seconds for p in previews), 2)})
        sys.stderr.write(f"{preset} {runs[-1]}\n")
    off = [r["steps"] / r["elapsed_s"] for r in runs if not r["preview"]]
    on = [r["steps"] / r["elapsed_s"] for r in runs if r["preview"]]
    cost = 1 - statistics.mean(on) / statistics.mean(off)
    return {"preset": preset, "budget_s": budget, "patch": patch, "batch_size": batch_size,
            "preview_region": list(region.shape),
            "runs": runs, "steps_per_s_off": round(statistics.mean(off), 2),
            "steps_per_s_on": round(statistics.mean(on), 2),
            "preview_cost_share_of_steps": round(cost, 3),
            "within_15_percent": bool(cost <= 0.15)}


def viewer_run(image, strokes, preset: str, budget: float, patch: int,
               batch_size: int) -> dict:
    """Train in a real viewer with a 10 ms heartbeat; gaps while training."""
    import napari
    from qtpy.QtCore import QTimer

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    _widget, dock = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
    session = dock.session
    session.device = "cpu"
    session.settings.set("train.preset", preset)
    session.settings.set("train.time_budget_s", budget)
    session.settings.set("train.patch", patch)
    session.settings.set("train.batch_size", batch_size)
    panel = dock.train_panel
    viewer.add_image(image, name="grid")
    panel.class_list.add_btn.click()
    panel.store.classes.rename(2, "cell")
    (annotations,) = panel.annotate_selected()
    for value in (1, 2):
        annotations.data_setitem(np.nonzero(strokes == value), value)
    shown: list[float] = []
    panel.preview_shown.connect(lambda _step: shown.append(time.perf_counter()))

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()

    def wait(done, timeout=900.0):
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    trained: list[float] = []
    panel.model_trained.connect(lambda _model: trained.append(time.perf_counter()))
    wait(lambda: time.perf_counter() > (ticks[0] if ticks else 1e18) + 1.0, 10)
    ticks.clear()
    pressed = time.perf_counter()
    job = panel.start_training()
    returned = time.perf_counter()
    assert job is not None, panel.status_label.text()
    wait(lambda: bool(trained))
    wait(lambda: session.busy is None)  # then the open image is segmented
    finished = time.perf_counter()
    timer.stop()
    result = {
        "preset": preset, "budget_s": budget,
        "train_click_blocked_s": round(returned - pressed, 3),
        "train_job": _stats(ticks, pressed, trained[0]),
        "train_and_segment": _stats(ticks, pressed, finished),
        "previews_shown": len(shown),
        "init": session.settings.train.init,
        "first_preview_after_click_s": round(shown[0] - pressed, 2) if shown else None,
        "metrics": panel.metrics_label.text(),
        "p95_below_100ms": None,
    }
    result["p95_below_100ms"] = result["train_job"]["p95_ms"] < 100
    viewer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--presets", default="small,tiny",
                        help="comma-separated presets of the engine runs")
    parser.add_argument("--viewer-preset", default=None,
                        help="preset of the Train in the viewer (default: the dock's)")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "cold_start_preview.json")
    parser.add_argument("--note", default="", help="stored in the JSON (e.g. the machine "
                        "was shared with another job)")
    args = parser.parse_args(argv)

    import torch

    from napari_cryoseg.viewer.settings import DOCK_PREVIEW_EDGE, DOCK_TRAIN_PRESET

    image, _truth, strokes = _scene(args.size)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": torch.get_num_threads(),
                    "loadavg_before": list(os.getloadavg())},
        "note": args.note,
        "image": [args.size, args.size],
        "painted_share": round(float(np.mean(strokes > 0)), 3),
        "engine": [engine_runs(preset, image, strokes, args.budget, DOCK_PREVIEW_EDGE,
                               args.patch, args.batch_size)
                   for preset in args.presets.split(",")],
    }
    result["viewer"] = viewer_run(image, strokes, args.viewer_preset or DOCK_TRAIN_PRESET,
                                  args.budget, args.patch, args.batch_size)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    text = json.dumps(result, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

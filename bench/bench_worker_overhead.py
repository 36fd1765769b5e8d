"""napari worker vs synchronous overhead: the same segmentation through drain() and a worker.

    xvfb-run -a python bench/bench_worker_overhead.py   # or QT_QPA_PLATFORM=offscreen

Runs the engine generator synchronously (``drain``) and inside a napari
``create_worker`` thread with a Qt event loop on the main thread (as the dock does),
alternating, and reports the median wall times and the overhead in percent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from napari.qt import get_qapp
from napari.qt.threading import create_worker
from qtpy.QtCore import QEventLoop

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.bundled import load_default_model


def run_in_worker(image, segmenter, tiling) -> float:
    loop = QEventLoop()
    worker = create_worker(segment, image, segmenter, tiling, _start_thread=False)
    worker.finished.connect(loop.quit)
    started = time.perf_counter()
    worker.start()
    loop.exec()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/worker_overhead.json")
    args = parser.parse_args()
    get_qapp()
    image, _ = make_sample(3, SampleConfig(shape=(args.size, args.size)))
    segmenter = Segmenter(load_default_model(), "auto")
    tiling = TilingConfig(512, 0.125, 4)
    drain(segment(image, segmenter, tiling))  # warm-up (lazy torch set-up)
    sync, threaded = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        drain(segment(image, segmenter, tiling))
        sync.append(time.perf_counter() - started)
        threaded.append(run_in_worker(image, segmenter, tiling))
    result = {
        "benchmark": "worker_overhead",
        "image": [args.size, args.size],
        "device": str(segmenter.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "sync_s": sync,
        "worker_s": threaded,
        "sync_median_s": statistics.median(sync),
        "worker_median_s": statistics.median(threaded),
        "overhead_percent": 100 * (statistics.median(threaded) / statistics.median(sync) - 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_s")}, indent=1))
    print(f"sync median {result['sync_median_s']:.3f} s, worker median "
          f"{result['worker_median_s']:.3f} s, overhead {result['overhead_percent']:+.1f} %")


if __name__ == "__main__":
    main()

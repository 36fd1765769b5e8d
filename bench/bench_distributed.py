"""Scaling of segment_distributed from 1 to 2 LocalCluster workers (CPU).

    python bench/bench_distributed.py [--size 3000] [--block 1024] [--out FILE.json]

Workers are processes with 1 torch thread each; the model is warmed on every worker
before timing (Segmenter cached per process). Baseline: single-process ``segment``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import dask.array as da
import torch
from distributed import Client, LocalCluster

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.distributed import segment_distributed
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.bundled import load_default_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--out", default="bench/results/distributed_cpu.json")
    args = parser.parse_args()
    model = load_default_model()
    image, _ = make_sample(0, SampleConfig(shape=(args.size, args.size)))
    mp = image.size / 1e6
    load_before = os.getloadavg()
    torch.set_num_threads(os.cpu_count() or 1)
    drain(segment(image[:512, :512], model, device="cpu"))  # warm-up
    t = time.perf_counter()
    ref = drain(segment(image, model, device="cpu")).labels
    single = time.perf_counter() - t
    results = {"single_process_segment": {"wall_s": single, "mp_per_s": mp / single,
                                          "torch_threads": torch.get_num_threads()}}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            warm = segment_distributed(da.from_array(image[:1024, :1024 * workers]), model, None,
                                       client, block=1024, device="cpu", torch_threads=1)
            warm.compute()  # every worker builds and caches its Segmenter
            t = time.perf_counter()
            labels = segment_distributed(da.from_array(image, chunks=1024), model, None, client,
                                         block=args.block, device="cpu", torch_threads=1)
            out = labels.compute()
            wall = time.perf_counter() - t
        results[f"distributed_{workers}_workers"] = {
            "wall_s": wall, "mp_per_s": mp / wall,
            "agreement_with_single_process": float((out == ref).mean()),
        }
    w1 = results["distributed_1_workers"]["wall_s"]
    results["speedup_2_vs_1_workers"] = w1 / results["distributed_2_workers"]["wall_s"]
    record = {
        "benchmark": "bench/bench_distributed.py", "image": [args.size, args.size],
        "block": args.block, "model": "bundled default (small U-Net, 4 classes)",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "results": results,
        "note": "2 cores shared with other users; workers are processes, 1 thread each",
    }
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""GPU inference benchmark: end-to-end tiled throughput, naive baseline, memory by image size.

Run on a CUDA machine (falls back to CPU with tiny sizes for a smoke run)::

    PYTHONPATH=src python bench/bench_gpu_inference.py --out bench/results/gpu_inference.json

Measures, in one process and on one 4096² uint16 image:
- the naive loop: one 512² tile at a time, fp32 (TF32 off), no overlap, numpy in and out;
- the engine (overlap 0.125 and smooth blending on, labels back as uint8) in several
  settings (fp32, bf16 + channels_last, batch sizes, tile 512/1024, torch.compile);
and peak GPU / host memory of the engine for 1k² to 16k² images.
Output is megapixels of output per second (MP/s) and the ratio to the naive loop.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryoseg.core.normalization import NormalizationConfig, percentile_range
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_loop(image: np.ndarray, model: ModelFile, device: torch.device) -> np.ndarray:
    """One 512² tile at a time, fp32, no overlap, numpy in and out (the baseline)."""
    net = model.build(device)
    low, high = percentile_range(image, NormalizationConfig())
    tile = 512
    height, width = image.shape
    ph, pw = -(-height // tile) * tile, -(-width // tile) * tile
    padded = np.pad(image, ((0, ph - height), (0, pw - width)), mode="reflect")
    out = np.zeros((ph, pw), np.uint8)
    with torch.inference_mode():
        for y in range(0, ph, tile):
            for x in range(0, pw, tile):
                block = (padded[y : y + tile, x : x + tile].astype(np.float32) - low) / (high - low)
                inp = torch.from_numpy(block)[None, None].to(device)
                prob = torch.sigmoid(net(inp))[0, 0].cpu().numpy()
                out[y : y + tile, x : x + tile] = prob > 0.5
    return out[:height, :width]


def timed(fn, device, repeats=2):
    """Median wall time of ``fn()`` after one warm-up run (includes host<->device copies)."""
    result = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def run_engine(image, segmenter, tiling):
    return drain(segment(image, segmenter, tiling)).labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results/gpu_inference.json")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--presets", default="thesis,small")
    parser.add_argument("--memory-sizes", default="1024,2048,4096,8192,16384")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    base, _ = make_sample(7, SampleConfig(shape=(1024, 1024), dtype="uint16"))
    reps = -(-args.size // 1024)
    image = np.tile(base, (reps, reps))[: args.size, : args.size].copy()
    megapixels = image.size / 1e6
    results: dict = {
        "machine": {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
        },
        "image": {"shape": list(image.shape), "dtype": str(image.dtype)},
        "throughput": [],
        "memory": [],
    }
    for name in args.presets.split(","):
        model = ModelFile.new(preset(name), seed=0)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        t_naive, naive = timed(lambda m=model: naive_loop(image, m, device), device, repeats=1)
        row = {"preset": name, "variant": "naive fp32 1x512 no overlap",
               "seconds": t_naive, "mp_per_s": megapixels / t_naive, "ratio": 1.0}
        results["throughput"].append(row)
        print(json.dumps(row), flush=True)
        variants = [
            ("engine fp32", dict(mixed_precision=False), TilingConfig(512, 0.125, 8)),
            ("engine bf16+CL b8 t512", dict(), TilingConfig(512, 0.125, 8)),
            ("engine bf16+CL b16 t512", dict(), TilingConfig(512, 0.125, 16)),
            ("engine bf16+CL b4 t1024", dict(), TilingConfig(1024, 0.0625, 4)),
        ]
        if not args.skip_compile and device.type == "cuda":
            variants += [
                ("engine bf16+CL+compile b8 t512", dict(compile=True), TilingConfig(512, 0.125, 8)),
                ("engine bf16+CL+compile b4 t1024", dict(compile=True),
                 TilingConfig(1024, 0.0625, 4)),
            ]
        for label, kwargs, tiling in variants:
            try:
                segmenter = Segmenter(model, device, **kwargs)
                seconds, labels = timed(lambda s=segmenter, t=tiling: run_engine(image, s, t),
                                        device)
            except Exception as err:  # report and continue with the next variant
                row = {"preset": name, "variant": label, "error": repr(err)[:300]}
            else:
                agree = float((labels == naive).mean())
                row = {"preset": name, "variant": label, "tile": tiling.tile,
                       "overlap": tiling.overlap, "batch": tiling.batch_size,
                       "seconds": seconds, "mp_per_s": megapixels / seconds,
                       "ratio": t_naive / seconds, "label_agreement_with_naive": agree}
            results["throughput"].append(row)
            print(json.dumps(row), flush=True)
    if device.type == "cuda":
        model = ModelFile.new(preset(args.presets.split(",")[0]), seed=0)
        segmenter = Segmenter(model, device)
        for size in [int(s) for s in args.memory_sizes.split(",")]:
            reps = -(-size // 1024)
            big = np.tile(base, (reps, reps))[:size, :size]
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            drain(segment(big, segmenter, TilingConfig(512, 0.125, 8)))
            torch.cuda.synchronize()
            row = {"size": size, "seconds": time.perf_counter() - start,
                   "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
                   "peak_host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
            results["memory"].append(row)
            print(json.dumps(row), flush=True)
            del big
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'preset':8} {'variant':34} {'MP/s':>8} {'ratio':>8}")
    for row in results["throughput"]:
        if "mp_per_s" in row:
            rate, ratio = row["mp_per_s"], row["ratio"]
            print(f"{row['preset']:8} {row['variant']:34} {rate:8.1f} {ratio:8.2f}")


if __name__ == "__main__":
    main()

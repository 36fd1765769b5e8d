"""Where does end-to-end GPU inference time go? (diagnosis for issue 9's 250 MP/s target)

    PYTHONPATH=src python bench/profile_gpu_inference.py --out OUT_DIR

On one 4096² uint16 image and the ``thesis`` preset (random weights), measures:
1. model-only throughput (bf16 autocast + channels_last, eager and torch.compile) for
   batches of tiles already on the device, timed with CUDA events: the ceiling;
2. the engine end to end for several tilings, with the tile pixels it computes (the
   redundancy of overlapping tiles) and its wall time;
3. the engine with the network replaced by a trivial op: the pure tiling/blending/copy
   overhead;
4. a torch.profiler table of one engine run (top CUDA kernels and CPU ops).
Writes ``profile.json`` and ``profile_table.txt`` under OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.core.tiling import TileGrid, TilingConfig, padded_shape_for, plan_tiles
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def model_only(net, batch: int, tile: int, repeats: int = 10) -> float:
    """Tile megapixels per second of the bare network on device-resident input."""
    x = torch.randn(batch, 1, tile, tile, device="cuda").contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            net(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            net(x)
        end.record()
        torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    return batch * tile * tile / 1e6 / seconds


def tile_pixels(shape, tiling: TilingConfig, stride: int) -> int:
    tiles, overlap_px = plan_tiles(shape, tiling.tile, tiling.overlap, stride)
    grid = TileGrid(padded_shape_for(shape, stride), tiles, overlap_px, stride)
    return len(grid) * tiles[0] * tiles[1]


def wall(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="profile_out")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--preset", default="thesis")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    base, _ = make_sample(7, SampleConfig(shape=(1024, 1024), dtype="uint16"))
    reps = -(-args.size // 1024)
    image = np.tile(base, (reps, reps))[: args.size, : args.size].copy()
    mp = image.size / 1e6
    model = ModelFile.new(preset(args.preset), seed=0)
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "preset": args.preset, "image": list(image.shape),
                    "model_only": [], "engine": [], "overhead": []}

    eager = Segmenter(model, "cuda")
    compiled = Segmenter(model, "cuda", compile=True)
    for batch, tile in [(8, 512), (16, 512), (4, 1024), (2, 1408), (4, 880)]:
        for name, seg in [("eager", eager), ("compile", compiled)]:
            try:
                rate = model_only(seg._forward, batch, tile)
            except Exception as err:  # keep going: a shape may not fit or compile
                row = {"batch": batch, "tile": tile, "mode": name, "error": repr(err)[:200]}
            else:
                row = {"batch": batch, "tile": tile, "mode": name, "tile_mp_per_s": rate}
            report["model_only"].append(row)
            print(json.dumps(row), flush=True)

    stride = model.config.stride
    tilings = [TilingConfig(512, 0.125, 8), TilingConfig(1024, 0.0625, 4),
               TilingConfig(880, 64 / 880, 4), TilingConfig(1408, 64 / 1408, 2),
               TilingConfig(1408, 64 / 1408, 4)]
    for tiling in tilings:
        computed = tile_pixels(image.shape, tiling, stride) / 1e6
        for name, seg in [("eager", eager), ("compile", compiled)]:
            seconds = wall(lambda s=seg, t=tiling: drain(segment(image, s, t)))
            row = {"tile": tiling.tile, "overlap": tiling.overlap, "batch": tiling.batch_size,
                   "mode": name, "seconds": seconds, "mp_per_s": mp / seconds,
                   "redundancy": computed / mp, "tile_mp_per_s": computed / seconds}
            report["engine"].append(row)
            print(json.dumps(row), flush=True)

    # Pure overhead: the same engine with a network that costs nothing.
    trivial = Segmenter(model, "cuda")
    trivial._forward = lambda x: x[:, :1] * 2.0 - 1.0
    for tiling in tilings[:3]:
        seconds = wall(lambda t=tiling: drain(segment(image, trivial, t)))
        row = {"tile": tiling.tile, "batch": tiling.batch_size, "seconds": seconds,
               "mp_per_s": mp / seconds}
        report["overhead"].append(row)
        print("overhead", json.dumps(row), flush=True)

    from torch.profiler import ProfilerActivity, profile

    tables = []
    for label, seg, tiling in [("compile 512x8", compiled, tilings[0]),
                               ("compile 1408x2", compiled, tilings[3]),
                               ("trivial 512x8", trivial, tilings[0])]:
        drain(segment(image, seg, tiling))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            drain(segment(image, seg, tiling))
            torch.cuda.synchronize()
        averages = prof.key_averages()
        tables.append(f"=== {label}: by CUDA time\n"
                      + averages.table(sort_by="cuda_time_total", row_limit=20)
                      + f"\n=== {label}: by self CPU time\n"
                      + averages.table(sort_by="self_cpu_time_total", row_limit=20))
    (out / "profile_table.txt").write_text("\n".join(tables))
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    print("\nmodel-only tile MP/s:")
    for row in report["model_only"]:
        print(" ", row.get("mode"), row["batch"], row["tile"], row.get("tile_mp_per_s"))
    print("engine:")
    for row in report["engine"]:
        print(f"  {row['mode']:8} t{row['tile']} b{row['batch']} {row['mp_per_s']:.1f} MP/s "
              f"(redundancy {row['redundancy']:.3f}, tile {row['tile_mp_per_s']:.1f})")
    for row in report["overhead"]:
        print(f"  trivial t{row['tile']} b{row['batch']} {row['mp_per_s']:.1f} MP/s")


if __name__ == "__main__":
    main()

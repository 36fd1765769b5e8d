"""CPU inference benchmark: the tiled engine vs a naive tile loop, plus CPU speed-up probes.

Run::

    .venv/bin/python bench/bench_cpu_inference.py [--presets small,thesis] [--size 2048]

Measures, in one process and on one 2048² uint16 synthetic image, per preset (untrained,
seeded weights; speed does not depend on the weights):

- naive: pad to a multiple of 512, normalise with the same percentiles, then one 512² tile
  at a time (fp32, no overlap): ``torch.from_numpy`` -> net -> sigmoid -> threshold -> numpy;
- engine: :func:`~napari_cryoseg.engine.inference.predict.segment` with tile 512, overlap 0.125,
  smooth blending, batch 4;
- the Dice agreement of the two label images (they differ only near tile seams);
- probes (``--probes``, first preset only): forward time of one batch with no_grad vs
  inference_mode, channels_last, BatchNorm folded into the convolutions, batch 1 vs 4,
  and bf16 autocast + channels_last (what the engine uses on CPUs with AMX/AVX512-BF16).

Writes JSON to stdout and to ``bench/results/cpu_inference.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_cryoseg.core.metrics import dice
from napari_cryoseg.core.normalization import normalize, percentile_range
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset

TILE = 512
RESULTS = Path(__file__).resolve().parent / "results" / "cpu_inference.json"


def make_image(size: int) -> tuple[np.ndarray, str]:
    """A uint16 test image: the procedural sample if available, else uniform noise."""
    try:
        from napari_cryoseg.core.synthetic import SampleConfig, make_sample
    except ImportError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 65535, (size, size), dtype=np.uint16), "random uint16"
    image, _ = make_sample(0, SampleConfig(shape=(size, size)))
    return image.astype(np.uint16, copy=False), "core.synthetic.make_sample"


def naive(image: np.ndarray, model: ModelFile, net: nn.Module) -> np.ndarray:
    """One tile at a time, no overlap, fp32, numpy in and out (what a script would do)."""
    h, w = image.shape
    ph, pw = -(-h // TILE) * TILE, -(-w // TILE) * TILE
    value_range = percentile_range(image, model.normalization)
    norm = normalize(image, value_range, model.normalization.clip)
    norm = np.pad(norm, ((0, ph - h), (0, pw - w)), mode="reflect")
    labels = np.zeros((ph, pw), dtype=np.uint8)
    with torch.no_grad():
        for y in range(0, ph, TILE):
            for x in range(0, pw, TILE):
                tile = np.ascontiguousarray(norm[y : y + TILE, x : x + TILE])
                prob = torch.sigmoid(net(torch.from_numpy(tile)[None, None]))
                labels[y : y + TILE, x : x + TILE] = (prob[0, 0] > 0.5).numpy()
    return labels[:h, :w]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (the best is the least disturbed by other load)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """A copy with every Conv2d -> BatchNorm2d pair fused into one Conv2d (eval only)."""
    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i in range(len(layers) - 1):
                conv, bn = layers[i], layers[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return net


def probes(model: ModelFile, repeats: int) -> dict:
    """Forward-pass variants on 4 tiles of 512² (seconds per tile, lower is better)."""
    net = model.build("cpu")
    x4 = torch.randn(4, 1, TILE, TILE)
    x1 = x4[:1]
    reference = None
    out: dict[str, dict] = {}

    def run(name: str, fn, x) -> None:
        nonlocal reference
        fn(x)  # warm-up (allocator, oneDNN primitive cache)
        seconds, y = timed(lambda: fn(x), repeats)
        entry = {"s_per_tile": seconds / x.shape[0]}
        if reference is not None and y.shape == reference.shape:
            entry["max_abs_diff_vs_no_grad"] = float((y - reference).abs().max())
        out[name] = entry

    def no_grad(x):
        with torch.no_grad():
            return net(x)

    def inference(x):
        with torch.inference_mode():
            return net(x)

    reference = no_grad(x4)
    run("no_grad_batch4", no_grad, x4)
    run("inference_mode_batch4", inference, x4)
    run("no_grad_batch1", no_grad, x1)
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def channels_last(x):
        with torch.inference_mode():
            return cl(x.contiguous(memory_format=torch.channels_last))

    run("channels_last_batch4", channels_last, x4)
    folded = fold_batch_norm(net)

    def bn_folded(x):
        with torch.inference_mode():
            return folded(x)

    run("bn_folded_batch4", bn_folded, x4)

    def bf16_channels_last(x):
        # What the engine does on CPUs with native bf16 (AMX / AVX512-BF16).
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return cl(x.contiguous(memory_format=torch.channels_last)).float()

    run("bf16_autocast_channels_last_batch4", bf16_channels_last, x4)
    base = out["no_grad_batch4"]["s_per_tile"]
    for entry in out.values():
        entry["speedup_vs_no_grad_batch4"] = base / entry["s_per_tile"]
    return out


def bench_preset(name: str, image: np.ndarray, repeats: int) -> dict:
    model = ModelFile.new(preset(name), seed=0)
    mp = image.size / 1e6
    net = model.build("cpu")
    segmenter = Segmenter(model, "cpu")
    tiling = TilingConfig(tile=TILE, overlap=0.125, batch_size=4)
    # Warm-up on one tile each so one-off costs (allocations, kernel selection) are excluded.
    naive(image[:TILE, :TILE], model, net)
    drain(segment(image[:TILE, :TILE], segmenter, tiling))
    naive_s, naive_labels = timed(lambda: naive(image, model, net), repeats)
    engine_s, prediction = timed(lambda: drain(segment(image, segmenter, tiling)), repeats)
    batch1_s, _ = timed(
        lambda: drain(segment(image, segmenter, TilingConfig(TILE, 0.125, batch_size=1))), 1
    )
    return {
        "preset": name,
        "parameters": model.n_parameters,
        "naive": {"seconds": naive_s, "MP_per_s": mp / naive_s, "s_per_MP": naive_s / mp,
                  "tiles": int(np.ceil(image.shape[0] / TILE) * np.ceil(image.shape[1] / TILE))},
        "engine": {"seconds": engine_s, "MP_per_s": mp / engine_s, "s_per_MP": engine_s / mp,
                   "tiles": prediction.info["tiles"], "tile": list(prediction.info["tile"]),
                   "overlap": tiling.overlap, "batch_size": tiling.batch_size},
        "engine_batch1_seconds": batch1_s,
        # The engine may use bf16 autocast on CPUs with native bf16; the naive loop is fp32.
        "engine_autocast_dtype": str(segmenter.amp_dtype),
        "ratio_engine_over_naive_MP_per_s": naive_s / engine_s,
        "dice_engine_vs_naive": dice(prediction.labels, naive_labels, 1),
        "label_agreement": float((prediction.labels == naive_labels).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,thesis")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    image, source = make_image(args.size)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    result = {
        "benchmark": "cpu_inference",
        "image": {"shape": list(image.shape), "dtype": str(image.dtype), "source": source},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": platform.processor() or platform.machine(),
        "presets": [bench_preset(name, image, args.repeats) for name in names],
    }
    if args.probes and names:
        result["probes"] = {"preset": names[0],
                            **probes(ModelFile.new(preset(names[0]), seed=0), args.repeats)}
    result["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Training throughput: the engine's fit loop against a naive fp32 loop of the same network.

    python bench/bench_training.py [--steps 60] [--preset small] [--batch 8] [--patch 256]
                                   [--device auto] [--out bench/results/training_cpu.json]

Both loops train the same U-Net from the same initial weights on the same patches (real EM
when ``../shared/data`` is there: Drosophila VNC mitochondria; else synthetic samples),
with the same loss, optimiser, learning-rate schedule and seed, for the same number of
steps, one after the other in one process:

- **naive**: fp32, NCHW tensors, ``loss.backward()`` / ``AdamW.step()`` - the textbook loop;
- **engine**: :func:`napari_cryoseg.engine.training.fitting.fit` as ``cryoseg train`` runs it
  (mixed precision where the hardware has it, channels-last memory layout, fused
  optimiser where available).

Reported: steps/s and training patch-megapixels/s (batch x patch^2 per second, the
sampler's cost included) and both loss curves, so "faster" can be checked to mean
"the same training, faster" (mean absolute difference of the smoothed curves).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.device import autocast_dtype, cpu_has_fast_bf16, resolve_device
from napari_cryoseg.engine.events import TrainStep, drain
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.fitting import fit, lr_factor
from napari_cryoseg.engine.training.losses import segmentation_loss
from napari_cryoseg.engine.training.sampling import PatchSampler
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.unet import UNet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "drosophila_vnc_sstem"


def training_data() -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """VNC sections with mitochondria as class 1, or synthetic samples without the data."""
    if (DATA / "images").is_dir():
        import tifffile

        stems = sorted(p.name for p in (DATA / "images").glob("*.tif"))[:8]
        images = [tifffile.imread(DATA / "images" / s) for s in stems]
        masks = [(tifffile.imread(DATA / "masks" / s) == 3).astype(np.uint8) for s in stems]
        return images, masks, f"VNC mitochondria, {len(stems)} sections"
    pairs = [make_sample(i, SampleConfig(shape=(512, 512))) for i in range(4)]
    return [p[0] for p in pairs], [(p[1] == 1).astype(np.uint8) for p in pairs], "synthetic"


def naive_loop(net: UNet, sampler: PatchSampler, steps: int, batch: int, lr: float,
               device: torch.device) -> tuple[list[float], float]:
    """fp32, NCHW: the loop a tutorial would write. Returns (losses, seconds)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    losses = []
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step / steps, "onecycle", 0.1)
        x, y = sampler.sample(batch, device)
        optimizer.zero_grad()
        loss = segmentation_loss(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return losses, time.perf_counter() - started


def smooth(values: list[float], width: int = 10) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.convolve(np.asarray(values), kernel, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench/results/training_cpu.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    images, masks, source = training_data()
    config = preset(args.preset, n_classes=2)

    def sampler() -> PatchSampler:
        return PatchSampler(images, masks, 2, args.patch, augment=AugmentConfig(), seed=0)

    def fresh_net() -> UNet:
        torch.manual_seed(0)
        return UNet(config).to(device)

    result = {
        "benchmark": "training throughput", "torch": torch.__version__,
        "device": str(device), "threads": torch.get_num_threads(),
        "cpu_fast_bf16": cpu_has_fast_bf16(), "machine": platform.processor(),
        "cores": os.cpu_count(), "loadavg_before": os.getloadavg(), "data": source,
        "preset": args.preset, "batch": args.batch, "patch": args.patch, "steps": args.steps,
        "engine_autocast": str(autocast_dtype(device)),
    }
    # Warm both paths up (first-call set-up, allocator) before timing.
    naive_loop(fresh_net(), sampler(), args.warmup, args.batch, args.lr, device)
    naive_losses, naive_s = naive_loop(fresh_net(), sampler(), args.steps, args.batch, args.lr,
                                       device)
    settings = TrainConfig(batch_size=args.batch, lr=args.lr, schedule="onecycle",
                           warmup_fraction=0.1).fit_settings(args.steps)
    drain(fit(fresh_net(), sampler(), settings.with_(total_steps=args.warmup), device=device))
    events: list[TrainStep] = []
    started = time.perf_counter()
    drain(fit(fresh_net(), sampler(), settings, device=device),
          lambda e: events.append(e) if isinstance(e, TrainStep) else None)
    engine_s = time.perf_counter() - started
    engine_losses = [e.loss for e in events]
    megapixels = args.batch * args.patch**2 / 1e6
    for name, losses, seconds in (("naive", naive_losses, naive_s),
                                  ("engine", engine_losses, engine_s)):
        result[name] = {"seconds": round(seconds, 2),
                        "steps_per_s": round(len(losses) / seconds, 3),
                        "patch_mp_per_s": round(len(losses) * megapixels / seconds, 3),
                        "losses": [round(v, 4) for v in losses]}
        print(f"{name:7s} {result[name]['steps_per_s']:.3f} steps/s, "
              f"{result[name]['patch_mp_per_s']:.3f} patch-MP/s", flush=True)
    result["speedup"] = round(result["engine"]["patch_mp_per_s"]
                              / result["naive"]["patch_mp_per_s"], 2)
    a, b = smooth(naive_losses), smooth(engine_losses)
    result["loss_curves"] = {
        "mean_abs_difference_smoothed": round(float(np.mean(np.abs(a - b))), 4),
        "naive_last10_mean": round(float(np.mean(naive_losses[-10:])), 4),
        "engine_last10_mean": round(float(np.mean(engine_losses[-10:])), 4),
    }
    result["loadavg_after"] = os.getloadavg()
    print(f"speed-up {result['speedup']}x; loss curves {result['loss_curves']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

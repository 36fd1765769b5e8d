"""Train the EM backbone: one U-Net on every labelled EM set in ``../shared/data`` together.

    nice python bench/train_backbone.py --steps 6000 --out bench/results/backbone_all
    nice python bench/train_backbone.py --steps 6000 --exclude cdeep3m \\
        --out bench/results/backbone_without_cdeep3m

The sets label different things: ISBI 2012 only membranes, CDeep3M only mitochondria,
Drosophila VNC membranes, glia / extracellular space, mitochondria and synapses. One softmax
head over the union of the classes (background, membrane, glia / extracellular,
mitochondrion, synapse) is trained with a *partial-label* cross-entropy: each pixel carries
the set of classes its label allows, and the loss is ``-log sum_{c allowed} p_c``. A CDeep3M
pixel outside a mitochondrion may be background, membrane, glia or synapse, so the loss only
asks that it is not a mitochondrion; an ISBI membrane pixel may be membrane or glia /
extracellular space (ISBI draws both black). No set teaches another's classes wrong.

Heavy intensity, contrast, gamma, blur, noise and scale augmentation keeps the features
from tying themselves to one microscope. Training runs in bf16 autocast where the CPU has
fast bf16 (AMX / AVX512-BF16) and on CUDA.

Writes ``OUT/backbone.pt`` (a CryoSeg model file whose provenance is its model card:
training sets, steps, scores, licence terms), ``OUT/train.log`` and ``OUT/scores.json``
(Dice per class on the held-out images of every set, including the excluded one).
Held out from training: the last contiguous block of each set (VNC 16-19, ISBI 24-29,
CDeep3M ``validation_*``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from napari_cryoseg.core.normalization import NormalizationConfig, normalize, percentile_range
from napari_cryoseg.engine.device import autocast_dtype
from napari_cryoseg.model.checkpoint import ModelFile, load_model, now_iso, save_model
from napari_cryoseg.model.config import preset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ["background", "membrane", "glia / extracellular", "mitochondrion", "synapse"]
COLORS = ["#000000", "#f0e442", "#56b4e9", "#e69f00", "#cc79a7"]
ALL = (1 << len(CLASSES)) - 1


def bits(*classes: int) -> int:
    return sum(1 << c for c in classes)


@dataclass
class Dataset:
    key: str
    folder: str
    #: mask value -> allowed-class bit set
    allowed: dict[int, int]
    train: list[str]
    held_out: list[str]
    pixel_nm: float | None
    licence: str


def datasets() -> list[Dataset]:
    vnc = sorted(p.stem for p in (DATA / "drosophila_vnc_sstem" / "images").glob("*.tif"))
    isbi = sorted(p.stem for p in (DATA / "isbi2012_em_membranes" / "images").glob("*.tif"))
    cdeep = sorted(p.stem for p in (DATA / "cdeep3m_mito_sbem" / "images").glob("*.tif"))
    return [
        Dataset("vnc", "drosophila_vnc_sstem", {v: bits(v) for v in range(5)},
                vnc[:16], vnc[16:], 4.6, "CC BY-NC-SA 3.0"),
        # ISBI: 1 = membrane (black in the source: membranes and extracellular space).
        Dataset("isbi", "isbi2012_em_membranes", {0: bits(0, 3, 4), 1: bits(1, 2)},
                isbi[:24], isbi[24:], 4.0, "ISBI 2012 challenge terms (research, non-commercial)"),
        Dataset("cdeep3m", "cdeep3m_mito_sbem", {0: bits(0, 1, 2, 4), 1: bits(3)},
                [s for s in cdeep if s.startswith("training")],
                [s for s in cdeep if s.startswith("validation")], None,
                "UC Regents CDeep3M licence (education, research, non-profit only)"),
    ]


def load(ds: Dataset, stem: str, norm: NormalizationConfig) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(DATA / ds.folder / "images" / f"{stem}.tif")
    mask = tifffile.imread(DATA / ds.folder / "masks" / f"{stem}.tif")
    image = normalize(image, percentile_range(image, norm), norm.clip)
    lut = np.zeros(256, np.uint8)
    for value, allowed in ds.allowed.items():
        lut[value] = allowed
    return image, lut[mask]


class Sampler:
    """Random augmented patches from all sets (each set equally likely)."""

    def __init__(self, sets: list[list[tuple[np.ndarray, np.ndarray]]], patch: int, seed: int):
        self.sets, self.patch = sets, patch
        self.rng = np.random.default_rng(seed)

    def patch_pair(self) -> tuple[np.ndarray, np.ndarray]:
        rng, p = self.rng, self.patch
        images = self.sets[rng.integers(len(self.sets))]
        image, allowed = images[rng.integers(len(images))]
        scale = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        size = min(int(round(p * scale)), *image.shape)
        y = rng.integers(0, image.shape[0] - size + 1)
        x = rng.integers(0, image.shape[1] - size + 1)
        img = image[y:y + size, x:x + size]
        lab = allowed[y:y + size, x:x + size]
        k = rng.integers(4)
        img, lab = np.rot90(img, k), np.rot90(lab, k)
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(lab)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.patch_pair() for _ in range(n)]
        imgs = [F.interpolate(torch.from_numpy(i)[None, None], size=(self.patch, self.patch),
                              mode="bilinear", align_corners=False)[0] for i, _ in pairs]
        labs = [F.interpolate(torch.from_numpy(m)[None, None].float(),
                              size=(self.patch, self.patch), mode="nearest")[0, 0].long()
                for _, m in pairs]
        return self.intensity(torch.stack(imgs)), torch.stack(labs)

    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch contrast, brightness, gamma, blur, resolution loss and noise."""
        rng = self.rng
        out = []
        for img in x:
            img = img.clamp(-0.5, 1.5)
            if rng.random() < 0.8:
                gamma = math.exp(rng.uniform(-0.5, 0.5))
                img = img.clamp(0, 1) ** gamma
            if rng.random() < 0.8:
                mean = img.mean()
                img = (img - mean) * rng.uniform(0.6, 1.5) + mean + rng.uniform(-0.2, 0.2)
            if rng.random() < 0.3:
                sigma = rng.uniform(0.5, 2.0)
                r = int(math.ceil(2 * sigma))
                k = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma ** 2))
                k = k / k.sum()
                img = F.conv2d(img[None], k.view(1, 1, 1, -1), padding=(0, r))
                img = F.conv2d(img, k.view(1, 1, -1, 1), padding=(r, 0))[0]
            if rng.random() < 0.2:
                f = rng.uniform(1.5, 2.5)
                h = img.shape[-1]
                small = F.interpolate(img[None], scale_factor=1 / f, mode="area")
                img = F.interpolate(small, size=(h, h), mode="bilinear", align_corners=False)[0]
            if rng.random() < 0.6:
                img = img + torch.randn_like(img) * rng.uniform(0.0, 0.15)
            out.append(img)
        return torch.stack(out).clamp(-0.5, 1.5)


def partial_ce(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``-log sum_{c in allowed} softmax_c``; single-class pixels of rare classes weigh 3x."""
    logits = logits.float()
    masks = torch.stack([(allowed >> c) & 1 for c in range(logits.shape[1])], 1).bool()
    log_all = torch.logsumexp(logits, 1)
    log_ok = torch.logsumexp(logits.masked_fill(~masks, -1e4), 1)
    loss = log_all - log_ok
    exact_fg = (masks.sum(1) == 1) & ~masks[:, 0]
    weight = 1.0 + 2.0 * exact_fg.float()
    return (loss * weight).sum() / weight.sum()


@torch.no_grad()
def score(net, ds: Dataset, norm: NormalizationConfig, device, amp) -> dict[str, float]:
    """Dice per class on the held-out images, comparing only classes the set labels exactly."""
    net.eval()
    inter = np.zeros(len(CLASSES))
    total = np.zeros(len(CLASSES))
    for stem in ds.held_out:
        image, allowed = load(ds, stem, norm)
        h, w = image.shape
        x = torch.from_numpy(np.pad(image, ((0, -h % 16), (0, -w % 16)), mode="reflect"))
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = net(x[None, None].to(device)).float().argmax(1)[0, :h, :w].cpu().numpy()
        for bitset in ds.allowed.values():
            if bitset & 1:
                continue  # background or "anything but": not a class to score
            # The lowest allowed class names the score (ISBI membrane = membrane or glia).
            c = (bitset & -bitset).bit_length() - 1
            truth = allowed == bitset
            hit = ((bitset >> pred) & 1).astype(bool)
            inter[c] += 2 * (truth & hit).sum()
            total[c] += truth.sum() + hit.sum()
    net.train()
    return {CLASSES[c]: round(float(inter[c] / total[c]), 4) for c in range(len(CLASSES))
            if total[c] > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="wall-clock length; the learning rate follows elapsed time, so a "
                             "busy machine makes fewer steps but still anneals")
    parser.add_argument("--init", default=None, help="start from this backbone.pt")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--exclude", default="", help="comma-separated set keys to leave out")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-every-min", type=float, default=15.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"

    def say(text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, flush=True)
        with open(log_path, "a") as log:
            log.write(line + "\n")

    torch.manual_seed(args.seed)
    norm = NormalizationConfig()
    excluded = {k for k in args.exclude.split(",") if k}
    all_sets = datasets()
    used = [ds for ds in all_sets if ds.key not in excluded]
    sets = [[load(ds, s, norm) for s in ds.train] for ds in used]
    say(f"sets {[ds.key for ds in used]} (excluded {sorted(excluded)}), "
        f"{sum(map(len, sets))} training images")
    device = torch.device(args.device)
    amp = autocast_dtype(device)
    config = preset(args.preset, n_classes=len(CLASSES))
    model = ModelFile.new(config, class_names=CLASSES, seed=args.seed, normalization=norm)
    if args.init:
        start = load_model(args.init)
        model.state_dict = start.state_dict
        say(f"starting from {args.init} ({start.provenance.get('steps')} steps)")
    net = model.build(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60.0

    def lr_at(elapsed: float) -> float:  # 2 % warm-up, then cosine to zero, on wall time
        frac = min(elapsed / budget, 1.0)
        return args.lr * min(1.0, frac / 0.02 + 1e-3) * 0.5 * (1 + math.cos(math.pi * frac))

    sampler = Sampler(sets, args.patch, args.seed)
    t0, losses, history, scores = time.perf_counter(), [], [], []
    next_score = args.score_every_min * 60.0
    step = 0
    while True:
        elapsed = time.perf_counter() - t0
        done = elapsed >= budget
        if elapsed >= next_score or done:
            next_score += args.score_every_min * 60.0
            row = {"step": step, **{ds.key: score(net, ds, norm, device, amp)
                                    for ds in all_sets}}
            scores.append(row)
            say(f"held-out Dice {json.dumps(row)}")
            card = {
                "name": "EM backbone" + (f" (without {', '.join(sorted(excluded))})"
                                         if excluded else ""),
                "kind": "backbone", "created": now_iso(), "parent": None, "steps": step,
                "time_s": round(time.perf_counter() - t0, 1), "device": str(device),
                "training_data": {
                    ds.key: {"folder": ds.folder, "images": ds.train, "licence": ds.licence}
                    for ds in used},
                "excluded": sorted(excluded),
                "recipe": {"preset": args.preset, "patch": args.patch,
                           "batch_size": args.batch_size, "lr": args.lr,
                           "loss": "partial-label cross-entropy over the union of classes",
                           "augment": "scale 0.6-1.7, rot90/flip, gamma, contrast, brightness, "
                                      "blur, resolution loss, noise"},
                "metrics": {"held_out_dice": row},
                "history": history[-40:],
                "licence": ("Weights trained on non-commercial data (ISBI 2012, Drosophila "
                            "VNC CC BY-NC-SA 3.0, CDeep3M UC Regents): research and "
                            "non-commercial use only. The code is BSD-3-Clause."),
            }
            trained = model.with_weights(net, **card)
            save_model(trained, out / "backbone.pt", overwrite=True)
        if done:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(elapsed)
        x, y = sampler.batch(args.batch_size)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(x.to(device))
        loss = partial_ce(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if step % 25 == 0:
            history.append([step, round(float(np.mean(losses[-25:])), 4)])
            say(f"step {step} loss {history[-1][1]:.4f} lr {lr_at(elapsed):.2e} "
                f"{(time.perf_counter() - t0) / step:.3f} s/step")
    (out / "scores.json").write_text(json.dumps({
        "args": vars(args), "scores": scores, "history": history,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0]},
        "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    say("done")


if __name__ == "__main__":
    main()

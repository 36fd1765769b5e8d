"""Does the held-out score shown after training from annotations predict whole images?

    python bench/heldout_score.py --backbone B/backbone.pt --steps 60 --seeds 0,1,2 \\
        --out bench/results/heldout_score_cdeep3m_cpu.json

"Train new model" holds out part of the user's annotation (scattered 64-px blocks) and
shows the Dice on it. This benchmark trains, as ``cryoseg train --sparse`` with the
dock's held-out share, on two annotations of the same CDeep3M section with about the
same number of painted pixels:

- **strokes**: ``bench/strokes.py``'s skeletons of the mitochondria and of the
  background (they keep to the middles, as the dock invites);
- **regions**: the ground truth inside a few square windows, painted edge to edge
  (``--windows`` windows of ``--window`` pixels holding some mitochondria, placed by
  the seed);

and reports for each run the held-out Dice the user is shown, the mean Dice on
``validation_z050..059`` (the images the user will segment), and the Dice in
``--windows`` square windows placed at random on the training section, every pixel
scored: what a check on windows the tool picks (not the user) would report. Use a
backbone trained without CDeep3M (``bench/train_backbone.py --exclude cdeep3m``) so the
scores measure transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import DATA, PAIRS, cli, evaluate, link_sections  # noqa: E402
from backbone_transfer import segment_section, write_strokes  # noqa: E402
from strokes import strokes_from_truth  # noqa: E402

TARGET = {"dataset": "cdeep3m_mito_sbem", "section": "training_z020", "name": "mitochondrion"}


def region_annotation(truth: np.ndarray, windows: int, edge: int, seed: int) -> np.ndarray:
    """The truth (1 background, 2 mitochondrion; 0 unpainted) inside ``windows`` square
    windows of ``edge`` pixels that hold at least 3 % mitochondria and do not overlap."""
    rng = np.random.default_rng(seed)
    out = np.zeros(truth.shape, np.uint8)
    taken = np.zeros(truth.shape, bool)
    placed = tries = 0
    while placed < windows and tries < 10_000:
        tries += 1
        y = int(rng.integers(0, truth.shape[0] - edge))
        x = int(rng.integers(0, truth.shape[1] - edge))
        window = (slice(y, y + edge), slice(x, x + edge))
        if taken[window].any() or (truth[window] > 0).mean() < 0.03:
            continue
        out[window] = np.where(truth[window] > 0, 2, 1)
        taken[window] = True
        placed += 1
    return out


def random_windows(shape: tuple[int, int], windows: int, edge: int, seed: int) -> np.ndarray:
    """``windows`` square windows of ``edge`` pixels at random places (may overlap)."""
    rng = np.random.default_rng(1000 + seed)
    inside = np.zeros(shape, bool)
    for _ in range(windows):
        y = int(rng.integers(0, shape[0] - edge))
        x = int(rng.integers(0, shape[1] - edge))
        inside[y:y + edge, x:x + edge] = True
    return inside


def dice(labels: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """Foreground Dice of ``labels`` against ``truth`` over the pixels ``where``."""
    predicted, truth = (labels > 0) & where, (truth > 0) & where
    total = int(predicted.sum() + truth.sum())
    return 2 * int((predicted & truth).sum()) / total if total else 1.0


def held_out(model: Path) -> dict:
    """The held-out Dice the run kept (what the user is shown)."""
    import torch

    provenance = torch.load(model, map_location="cpu", weights_only=True)["provenance"]
    return {"held_out_dice": provenance["metrics"]["validation"].get("dice"),
            "steps_made": provenance.get("steps"), "selected": provenance.get("selected")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="a backbone trained without CDeep3M")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--train-args", default="--patch 256 --batch-size 4")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cryoseg-heldout-"))
    truth = tifffile.imread(DATA / TARGET["dataset"] / "masks" / f"{TARGET['section']}.tif")
    eval_dir = link_sections(work / "eval", TARGET["dataset"], PAIRS["cdeep3m"]["eval"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "section": TARGET["section"], "backbone": args.backbone, "steps": args.steps,
        "windows": [args.windows, args.window], "train_args": args.train_args,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": [],
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        annotations = {"strokes": strokes_from_truth(truth),
                       "regions": region_annotation(truth, args.windows, args.window, seed)}
        for kind, annotation in annotations.items():
            folder = write_strokes(work / f"{kind}_s{seed}", TARGET, annotation)
            model = work / f"{kind}_s{seed}.pt"
            said = cli("train", "--images", str(folder / "images"), "--masks",
                       str(folder / "masks"), "--classes", "2", "--class-names", TARGET["name"],
                       "--sparse", "--seed", str(seed), "--device", "cpu", "--init",
                       args.backbone, "--steps", str(args.steps), "--out", str(model),
                       *args.train_args.split(), log=model.with_suffix(".log"))
            scores = evaluate(model, eval_dir, "1", "cpu", work)
            labels = segment_section(model, TARGET, work)
            windows = random_windows(truth.shape, args.windows, args.window, seed)
            run = {"annotation": kind, "seed": seed,
                   "painted_fraction": round(float((annotation > 0).mean()), 4),
                   **held_out(model), "image_dice": round(scores["dice"], 4),
                   "random_windows_dice": round(dice(labels, truth, windows), 4),
                   "section_dice": round(dice(labels, truth, np.ones(truth.shape, bool)), 4),
                   "worst_image": min(scores["per_image"]),
                   "shown": next((line for line in said.splitlines()
                                  if line.startswith("Dice on held-out")), None)}
            run["gap"] = (round(run["held_out_dice"] - run["image_dice"], 4)
                          if run["held_out_dice"] is not None else None)
            results["runs"].append(run)
            print(f"seed {seed} {kind}: held-out {run['held_out_dice']:.3f}, random windows "
                  f"{run['random_windows_dice']:.3f}, images {run['image_dice']:.3f}",
                  flush=True)
            out.write_text(json.dumps(results, indent=1))
    for kind in ("strokes", "regions"):
        runs = [r for r in results["runs"] if r["annotation"] == kind]
        gaps = [r["gap"] for r in runs if r["gap"] is not None]
        results[f"mean_gap_{kind}"] = round(float(np.mean(gaps)), 4) if gaps else None
        results[f"mean_random_windows_gap_{kind}"] = round(float(np.mean(
            [r["random_windows_dice"] - r["image_dice"] for r in runs])), 4)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(results, indent=1))
    print({k: v for k, v in results.items() if k.startswith("mean_")})


if __name__ == "__main__":
    main()

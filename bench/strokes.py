"""Training from painted strokes against training from the full mask, on real EM.

    python bench/strokes.py --section training_z020 --steps 200 --seeds 0 \\
        --train-args "--patch 128 --batch-size 8" \\
        --out bench/results/strokes_cdeep3m_cpu.json

A user starting from nothing paints a few strokes, not whole masks. This benchmark makes
such strokes from the ground truth of one CDeep3M mitochondria section
(``../shared/data/cdeep3m_mito_sbem``) and trains, through the ``cryoseg`` command line,
with the same time budget and seed:

- **strokes**: ``cryoseg train --sparse``; the mask holds 0 = not painted (unknown, never
  learned from), 1 = background strokes, 2 = mitochondrion strokes. Mitochondrion strokes
  are the skeleton of each mitochondrion thickened by one pixel (inside it); background
  strokes are the skeleton of the background eroded by ``--margin`` pixels (so they run
  between the organelles, as a user would paint), thickened the same way;
- **full mask**: ``cryoseg train`` on the whole ground-truth mask of the same section;

then scores both with ``cryoseg evaluate`` on ``validation_z050..059`` (mean
foreground Dice). Reported: the share of pixels painted, both Dice values and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy.ndimage import binary_dilation, binary_erosion
from skimage.morphology import disk, skeletonize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import DATA, PAIRS, cli, evaluate, link_sections, model_info  # noqa: E402

DATASET = "cdeep3m_mito_sbem"


def strokes_from_truth(mask: np.ndarray, margin: int = 6) -> np.ndarray:
    """Sparse annotation of a binary mitochondria mask: 0 unpainted, 1 background, 2 mito."""
    mito = mask > 0
    fg = skeletonize(mito) & mito
    fg = binary_dilation(fg, structure=disk(1)) & mito
    background = binary_erosion(~mito, structure=disk(margin))
    bg = skeletonize(background)
    bg = binary_dilation(bg, structure=disk(1)) & background
    out = np.zeros(mask.shape, np.uint8)
    out[bg] = 1
    out[fg] = 2
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="training_z020")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--margin", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None,
                        help="a fixed number of steps instead of the time budget")
    parser.add_argument("--train-args", default="",
                        help="more cryoseg train flags for both runs, e.g. '--patch 128'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cryoseg-strokes-"))
    truth = tifffile.imread(DATA / DATASET / "masks" / f"{args.section}.tif")
    strokes = strokes_from_truth(truth, args.margin)
    painted = float((strokes > 0).mean())
    full_dir = link_sections(work / "full", DATASET, [args.section])
    sparse_dir = work / "strokes"
    (sparse_dir / "images").mkdir(parents=True)
    (sparse_dir / "masks").mkdir(parents=True)
    (sparse_dir / "images" / f"{args.section}.tif").symlink_to(
        DATA / DATASET / "images" / f"{args.section}.tif")
    tifffile.imwrite(sparse_dir / "masks" / f"{args.section}.tif", strokes)
    eval_dir = link_sections(work / "eval", DATASET, PAIRS["cdeep3m"]["eval"])
    results: dict = {
        "section": args.section, "budget_s": None if args.steps else args.budget,
        "steps": args.steps, "train_args": args.train_args, "device": args.device,
        "painted_fraction": round(painted, 4),
        "painted_mito_fraction_of_mito": round(
            float(((strokes == 2).sum()) / max(int((truth > 0).sum()), 1)), 4),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()[0],
        "runs": [],
    }
    print(f"painted {painted:.1%} of the pixels", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    length = (["--steps", str(args.steps)] if args.steps
              else ["--time-budget", f"{args.budget:g}"])
    for seed in seeds:
        for method, folder, classes, extra in (
                ("strokes", sparse_dir, "2", ["--sparse"]),
                ("full mask", full_dir, "1", [])):
            model = work / f"{method.replace(' ', '_')}_s{seed}.pt"
            cli("train", "--images", str(folder / "images"), "--masks", str(folder / "masks"),
                "--classes", classes, "--class-names", "mitochondrion", "--val-fraction", "0",
                *length, "--device", args.device, "--seed", str(seed), "--out", str(model),
                *extra, *shlex.split(args.train_args), log=model.with_suffix(".log"))
            scores = evaluate(model, eval_dir, "1", args.device, work)
            results["runs"].append({"method": method, "seed": seed, **model_info(model),
                                    **scores})
            print(f"seed {seed} {method}: Dice {scores['dice']:.4f}", flush=True)
            out.write_text(json.dumps(results, indent=1))
    by = {m: float(np.mean([r["dice"] for r in results["runs"] if r["method"] == m]))
          for m in ("strokes", "full mask")}
    results["mean_dice"] = {m: round(v, 4) for m, v in by.items()}
    results["ratio"] = round(by["strokes"] / by["full mask"], 4) if by["full mask"] else None
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({"painted": painted, **results["mean_dice"], "ratio": results["ratio"]}))


if __name__ == "__main__":
    main()

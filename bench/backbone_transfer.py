"""Training from strokes: from the EM backbone vs from random weights vs a random forest.

    python bench/backbone_transfer.py \\
        --backbone bench/results/backbone_without_cdeep3m/backbone.pt \\
        --budgets 60,120 --seeds 0,1,2 --steps 50 \\
        --out bench/results/backbone_transfer_cdeep3m.json

Leave-one-set-out, so it measures transfer and not memory: the backbone given must have
been trained without the target set (``bench/train_backbone.py --exclude cdeep3m``). The
strokes are ``bench/strokes.py``'s (skeletons of the mitochondria and of the background of
one section, about 5 % of the pixels). Each run goes through the command line a user would
type (``cryoseg train --sparse --init ...``) with the same flags, seed and budget, and is
scored with ``cryoseg evaluate`` on the held-out sections (mean foreground Dice and the
worst section). The random forest is an ilastik-style pixel classifier (scikit-image
multiscale features, 100 trees) trained on the same stroke pixels.

``--correct N`` adds the user's second round, as the dock's loop has it: each method's
first model segments the training section, the user strokes its N largest false-positive
areas as background and its N largest missed areas as the class (a line through the
middle of each, as over an error seen in the preview; the first strokes stay), and the
method trains again from the same start on all strokes, for the same budget. Each method
is corrected where it was wrong itself, so the comparison stays fair.

``--starts "backbone,random,whole mask"`` adds a reference: from the backbone on every
pixel of the section's ground truth, the most that one labelled section teaches in the
same budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import DATA, PAIRS, cli, evaluate, link_sections  # noqa: E402
from strokes import strokes_from_truth  # noqa: E402

TARGETS = {
    "cdeep3m": {"dataset": "cdeep3m_mito_sbem", "section": "training_z020",
                "name": "mitochondrion", "eval": PAIRS["cdeep3m"]["eval"]},
    "isbi": {"dataset": "isbi2012_em_membranes", "section": "train_00", "name": "membrane",
             "eval": PAIRS["isbi"]["eval"]},
}


def correction_strokes(labels: np.ndarray, truth: np.ndarray, strokes: np.ndarray,
                       n: int) -> np.ndarray:
    """``strokes`` plus a second round over the ``n`` largest false-positive areas of
    ``labels`` (painted background, 1) and its ``n`` largest missed areas (painted
    class, 2): the skeleton of each area thickened by one pixel, inside the area, on
    pixels not painted yet."""
    from scipy.ndimage import binary_dilation
    from skimage.measure import label
    from skimage.morphology import disk, skeletonize

    predicted, truth = labels > 0, truth > 0
    out = strokes.copy()
    for wrong, value in ((predicted & ~truth, 1), (truth & ~predicted, 2)):
        parts = label(wrong)
        sizes = np.bincount(parts.ravel())[1:]
        for index in np.argsort(sizes)[::-1][:n]:
            area = parts == index + 1
            line = binary_dilation(skeletonize(area), structure=disk(1)) & area
            out[line & (out == 0)] = value
    return out


def write_strokes(folder: Path, target: dict, strokes: np.ndarray) -> Path:
    """``folder/{images,masks}``: the target section (linked) and its strokes."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    (folder / "images" / f"{target['section']}.tif").symlink_to(
        DATA / target["dataset"] / "images" / f"{target['section']}.tif")
    tifffile.imwrite(folder / "masks" / f"{target['section']}.tif", strokes)
    return folder


def segment_section(model: Path, target: dict, work: Path) -> np.ndarray:
    """The labels ``model`` gives the training section (``cryoseg segment``)."""
    out = work / f"seg_{model.stem}"
    cli("segment", "--model", str(model), "--device", "cpu", "--out", str(out),
        str(DATA / target["dataset"] / "images" / f"{target['section']}.tif"))
    return tifffile.imread(out / f"{target['section']}_labels.tif")


def forest_from_strokes(target: dict, strokes: np.ndarray, seed: int,
                        keep_labels: bool = False) -> dict:
    """ilastik-style random forest on the stroke pixels; Dice on the eval sections (and,
    with ``keep_labels``, its labels of the training section under ``"labels"``)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    from napari_cryoseg.core.metrics import confusion_counts, scores_from_counts

    def features(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32) / max(float(image.max()), 1.0)
        return multiscale_basic_features(image, intensity=True, edges=True, texture=True,
                                         sigma_min=1, sigma_max=16)

    started = time.perf_counter()
    image = tifffile.imread(DATA / target["dataset"] / "images" / f"{target['section']}.tif")
    feats = features(image)
    painted = strokes > 0
    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)
    forest.fit(feats[painted], (strokes[painted] == 2).astype(np.uint8))
    train_s = time.perf_counter() - started
    dices = []
    extra = {}
    if keep_labels:
        extra["labels"] = forest.predict(feats.reshape(-1, feats.shape[-1])).reshape(
            strokes.shape)
    for stem in target["eval"]:
        image = tifffile.imread(DATA / target["dataset"] / "images" / f"{stem}.tif")
        mask = tifffile.imread(DATA / target["dataset"] / "masks" / f"{stem}.tif")
        f = features(image)
        labels = forest.predict(f.reshape(-1, f.shape[-1])).reshape(mask.shape)
        dices.append(scores_from_counts(*confusion_counts(labels, (mask > 0).astype(np.uint8),
                                                          1)).dice)
    return {"dice": float(np.mean(dices)), "per_image": [round(float(d), 4) for d in dices],
            "train_s": round(train_s, 1), **extra}


def steps_made(log: Path) -> int | None:
    """Optimiser steps a ``cryoseg train`` run made, read from its log."""
    found = re.findall(r"\((\d+) steps in", log.read_text())
    return int(found[-1]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="a backbone trained without --target")
    parser.add_argument("--target", choices=list(TARGETS), default="cdeep3m")
    parser.add_argument("--budgets", default="60,120", help="seconds, comma-separated")
    parser.add_argument("--steps", default="50", help="fixed step counts, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-args", default="--patch 256 --batch-size 4",
                        help="more cryoseg train flags for every run")
    parser.add_argument("--no-forest", action="store_true")
    parser.add_argument("--starts", default="backbone,random",
                        help="comma-separated: backbone, random, 'whole mask' (from the "
                        "backbone on the section's whole mask instead of strokes)")
    parser.add_argument("--correct", type=int, default=0, metavar="N",
                        help="a second round: stroke each method's N largest false-positive "
                        "and N largest missed areas on the training section, train again")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = TARGETS[args.target]
    seeds = [int(s) for s in args.seeds.split(",")]
    lengths = ([("time_s", float(b)) for b in args.budgets.split(",") if b]
               + [("steps", int(s)) for s in args.steps.split(",") if s])
    work = Path(tempfile.mkdtemp(prefix="cryoseg-backbone-"))
    truth = tifffile.imread(DATA / target["dataset"] / "masks" / f"{target['section']}.tif")
    strokes = strokes_from_truth(truth)
    folder = write_strokes(work / "strokes", target, strokes)
    eval_dir = link_sections(work / "eval", target["dataset"], target["eval"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "target": args.target, "section": target["section"],
        "backbone": str(args.backbone), "painted_fraction": round(float((strokes > 0).mean()), 4),
        "train_args": args.train_args, "correct": args.correct,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()[0],
        "runs": [],
    }
    whole_dir = link_sections(work / "whole", target["dataset"], [target["section"]])

    def train_and_score(name: str, init: str, strokes_dir: Path, seed: int,
                        length: list[str]) -> tuple[Path, dict]:
        model = work / f"{name}.pt"
        log = model.with_suffix(".log")
        # "whole": from the backbone on every pixel of the section's mask (the most one
        # section's labels can teach in this budget); otherwise the strokes.
        data, classes = ((whole_dir, ["--classes", "1"]) if init == "whole mask" else
                         (strokes_dir, ["--classes", "2", "--sparse"]))
        cli("train", "--images", str(data / "images"), "--masks", str(data / "masks"),
            *classes, "--class-names", target["name"], "--val-fraction", "0",
            "--seed", str(seed), "--device", "cpu",
            "--init", "random" if init == "random" else args.backbone,
            "--out", str(model), *length, *args.train_args.split(), log=log)
        scores = evaluate(model, eval_dir, "1", "cpu", work)
        return model, {"steps_made": steps_made(log), "loadavg": os.getloadavg()[0],
                       **scores, "worst": min(scores["per_image"])}

    def second_round(labels: np.ndarray, name: str) -> tuple[Path, dict]:
        corrected = correction_strokes(labels, truth, strokes, args.correct)
        added = (corrected > 0) & (strokes == 0)
        return (write_strokes(work / f"strokes_{name}", target, corrected),
                {"round": 2, "painted_fraction": round(float((corrected > 0).mean()), 4),
                 "added_fraction": round(float(added.mean()), 4)})

    for seed in seeds:
        if not args.no_forest:
            scores = forest_from_strokes(target, strokes, seed, keep_labels=args.correct > 0)
            labels = scores.pop("labels", None)
            results["runs"].append({"method": "random forest", "seed": seed, **scores})
            print(f"seed {seed} random forest: {scores['dice']:.4f}", flush=True)
            if labels is not None:
                again, info = second_round(labels, f"forest_s{seed}")
                scores = forest_from_strokes(target, tifffile.imread(
                    again / "masks" / f"{target['section']}.tif"), seed)
                results["runs"].append({"method": "random forest", "seed": seed, **info,
                                        **scores})
                print(f"seed {seed} random forest, round 2: {scores['dice']:.4f}", flush=True)
        for kind, value in lengths:
            length = (["--time-budget", f"{value:g}"] if kind == "time_s"
                      else ["--steps", str(value)])
            for init in args.starts.split(","):
                name = f"{init.replace(' ', '_')}_{kind}{value:g}_s{seed}"
                model, scores = train_and_score(name, init, folder, seed, length)
                run = {"method": f"from {init}", "seed": seed, kind: value, **scores}
                results["runs"].append(run)
                print(f"seed {seed} {kind}={value:g} from {init}: Dice {scores['dice']:.4f} "
                      f"({run['steps_made']} steps)", flush=True)
                if args.correct and init != "whole mask":
                    again, info = second_round(segment_section(model, target, work), name)
                    _, scores = train_and_score(f"{name}_round2", init, again, seed, length)
                    results["runs"].append({"method": f"from {init}", "seed": seed,
                                            kind: value, **info, **scores})
                    print(f"seed {seed} {kind}={value:g} from {init}, round 2: Dice "
                          f"{scores['dice']:.4f} ({scores['steps_made']} steps)", flush=True)
                out.write_text(json.dumps(results, indent=1))
    summary = {}
    for run in results["runs"]:
        key = run["method"] + (f" @{run['time_s']:g}s" if "time_s" in run else
                               f" @{run['steps']} steps" if "steps" in run else "")
        key += ", round 2" if run.get("round") == 2 else ""
        summary.setdefault(key, []).append(run["dice"])
    results["mean_dice"] = {k: round(float(np.mean(v)), 4) for k, v in summary.items()}
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["mean_dice"], indent=1))


if __name__ == "__main__":
    main()

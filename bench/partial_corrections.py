"""Partial corrections: does fine-tuning on a corrected part of one image help the rest?

    python bench/partial_corrections.py --work runs/partial --cases vnc,strokes,isbi \\
        --kinds all --rules dock,reviewed --seeds 0,1,2 --steps 60 \\
        --out bench/results/partial_corrections_cpu.json

A simulated user: the parent model segments one image; inside ``W`` windows (where the
parent's errors are largest) the labels become the truth for the kind of error the user
fixes (``all``; ``fp``: only false positives erased; ``fn``: only missed pixels painted),
everywhere else they stay the parent's. What the dock learns from is built exactly as the
dock builds it (:func:`napari_cryoseg.viewer.training_data.build_training_data`):

- ``dock``: the changed pixels and the dock's band around them (``Mark view reviewed``
  not pressed);
- ``reviewed``: the whole windows marked reviewed.

The fine-tune makes the engine call the dock's job makes
(:func:`napari_cryoseg.engine.training.finetune.finetune` on the corrections' images, masks
and valid masks, see ``viewer/finetune_round.py finetune_from_sources``; the dock's default
settings with a fixed number of steps or seconds), with the user's
other open images handed over as the dock hands them. Every uncorrected section is scored
(foreground Dice); reported per run: the mean gain over the parent, the worst
single-section change, the change report and verdict of the fine-tune, steps and seconds.

Cases (data under ``../shared/data``, or ``$CRYOSEG_DATA``):

- ``vnc``: VNC-mitochondria parent (``cryoseg train`` 300 steps on the VNC class 3),
  2 windows of 384² of CDeep3M ``training_z020``; scored on ``validation_z050..059``;
- ``strokes``: a parent trained on painted strokes of CDeep3M ``training_z020`` (150
  steps, ``bench/strokes.py``'s strokes; it over-predicts), its worst 512² quadrant of
  ``validation_z050`` corrected; scored on ``validation_z051..059``;
- ``isbi``: VNC-membranes parent, 2 windows of 192² of ISBI ``train_00``; scored on
  ``train_06..29``.

Parents are trained once into ``--work`` and reused. ``--label`` names the code measured
(results of several labels, e.g. the code before and after a change run with another
``PYTHONPATH``, are merged into one ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import DATA, cli  # noqa: E402

CASES = {
    "vnc": {"parent": "vnc_mito", "dataset": "cdeep3m_mito_sbem", "corrected": "training_z020",
            "windows": 2, "window": 384,
            "open": ["training_z014", "training_z026"],
            "scored": [f"validation_z{i:03d}" for i in range(50, 60)]},
    "strokes": {"parent": "strokes", "dataset": "cdeep3m_mito_sbem",
                "corrected": "validation_z050", "windows": 1, "window": 512, "quadrant": True,
                "open": ["training_z020", "training_z026"],
                "scored": [f"validation_z{i:03d}" for i in range(51, 60)]},
    "isbi": {"parent": "vnc_membrane", "dataset": "isbi2012_em_membranes",
             "corrected": "train_00", "windows": 2, "window": 192,
             "open": ["train_01", "train_02"],
             "scored": [f"train_{i:02d}" for i in range(6, 30)]},
}


def read(dataset: str, stem: str, kind: str = "images") -> np.ndarray:
    return tifffile.imread(DATA / dataset / kind / f"{stem}.tif")


def make_parent(name: str, work: Path) -> Path:
    """Train (once) and return the parent model file ``work/<name>.pt``."""
    out = work / f"{name}.pt"
    if out.exists():
        return out
    work.mkdir(parents=True, exist_ok=True)
    if name in ("vnc_mito", "vnc_membrane"):
        cls, cname = ("3", "mitochondrion") if name == "vnc_mito" else ("1", "membrane")
        data = DATA / "drosophila_vnc_sstem"
        cli("train", "--images", str(data / "images"), "--masks", str(data / "masks"),
            "--classes", cls, "--class-names", cname, "--steps", "300", "--device", "cpu",
            "--out", str(out), log=out.with_suffix(".log"))
        return out
    from strokes import strokes_from_truth
    folder = work / "strokes_data"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    link = folder / "images" / "training_z020.tif"
    if not link.exists():
        link.symlink_to(DATA / "cdeep3m_mito_sbem" / "images" / "training_z020.tif")
    truth = read("cdeep3m_mito_sbem", "training_z020", "masks")
    tifffile.imwrite(folder / "masks" / "training_z020.tif", strokes_from_truth(truth, 6))
    cli("train", "--images", str(folder / "images"), "--masks", str(folder / "masks"),
        "--classes", "2", "--class-names", "mitochondrion", "--val-fraction", "0",
        "--steps", "150", "--device", "cpu", "--seed", "0", "--sparse", "--patch", "128",
        "--batch-size", "8", "--out", str(out), log=out.with_suffix(".log"))
    return out


def labels_of(model, image: np.ndarray) -> np.ndarray:
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment
    return drain(segment(image, model, device="cpu")).labels


def dice(labels: np.ndarray, truth: np.ndarray) -> float:
    pred, true = labels > 0, truth > 0
    denominator = pred.sum() + true.sum()
    return 1.0 if denominator == 0 else float(2 * (pred & true).sum() / denominator)


def windows(errors: np.ndarray, count: int, size: int, quadrant: bool) -> list[tuple]:
    """The ``count`` non-overlapping windows (y, x, size) holding most parent errors."""
    h, w = errors.shape
    step = size if quadrant else size // 4
    candidates = [(int(errors[y:y + size, x:x + size].sum()), y, x)
                  for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]
    chosen: list[tuple] = []
    for _, y, x in sorted(candidates, reverse=True):
        if all(abs(y - cy) >= size or abs(x - cx) >= size for cy, cx, _ in chosen):
            chosen.append((y, x, size))
        if len(chosen) == count:
            break
    return chosen


def simulate(predicted: np.ndarray, truth: np.ndarray, wins: list[tuple], kind: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """(edited labels, windows mask): the truth inside the windows for ``kind`` errors."""
    edited = predicted.copy()
    inside = np.zeros(predicted.shape, bool)
    for y, x, size in wins:
        inside[y:y + size, x:x + size] = True
    fp = inside & (predicted > 0) & (truth == 0)
    fn = inside & (predicted == 0) & (truth > 0)
    if kind in ("all", "fp"):
        edited[fp] = 0
    if kind in ("all", "fn"):
        edited[fn] = truth[fn]
    return edited, inside


def run_case(name: str, args, work: Path, results: dict, out: Path) -> None:
    import torch

    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.training.finetune import finetune
    from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
    from napari_cryoseg.model.checkpoint import load_model
    from napari_cryoseg.viewer.training_data import TrainingSource, build_training_data

    torch.set_num_threads(args.threads)
    case = CASES[name]
    ds = case["dataset"]
    parent = load_model(make_parent(case["parent"], work))
    image = read(ds, case["corrected"])
    truth = (read(ds, case["corrected"], "masks") > 0).astype(np.uint8)
    predicted = labels_of(parent, image).astype(np.uint8)
    wins = windows(predicted != truth, case["windows"], case["window"], case.get("quadrant",
                                                                              False))
    scored = {s: (read(ds, s), read(ds, s, "masks") > 0) for s in case["scored"]}
    parent_dice = {s: dice(labels_of(parent, im), t) for s, (im, t) in scored.items()}
    open_images = [read(ds, s) for s in case["open"]]
    entry = results["cases"].setdefault(name, {
        "parent": case["parent"], "corrected": case["corrected"], "windows": wins,
        "scored": case["scored"], "open_images": case["open"],
        "parent_dice": {k: round(v, 4) for k, v in parent_dice.items()},
        "parent_mean": round(float(np.mean(list(parent_dice.values()))), 4), "runs": []})
    print(f"{name}: parent mean Dice {entry['parent_mean']:.4f}; windows {wins}", flush=True)
    for kind in args.kinds.split(","):
        edited, inside = simulate(predicted, truth, wins, kind)
        added = int(((edited > 0) & (predicted == 0)).sum())
        removed = int(((edited == 0) & (predicted > 0)).sum())
        for rule in args.rules.split(","):
            source = TrainingSource(case["corrected"], image, edited, predicted,
                                    inside if rule == "reviewed" else None)
            data = build_training_data([source], args.band)
            for length in args.lengths.split(","):
                for seed in (int(s) for s in args.seeds.split(",")):
                    config = FinetuneConfig(
                        time_budget_s=float(args.seconds) if length == "time" else None,
                        steps=args.steps if length == "steps" else None, seed=seed,
                        device="cpu", **args.set)
                    began = time.perf_counter()
                    result = drain(finetune(parent, data.images, data.masks, data.valid_masks,
                                            config, names=data.names,
                                            unlabelled=open_images))
                    wall = time.perf_counter() - began
                    child = {s: dice(labels_of(result.model, im), t)
                             for s, (im, t) in scored.items()}
                    change = {s: child[s] - parent_dice[s] for s in child}
                    report = getattr(result, "change_report", None)
                    run = {
                        "label": args.label, "settings": args.set, "kind": kind,
                        "rule": rule, "length": length,
                        "seed": seed, "added_px": added, "removed_px": removed,
                        "steps": result.steps, "seconds": round(wall, 1),
                        "loadavg": round(os.getloadavg()[0], 2),
                        "mean": round(float(np.mean(list(child.values()))), 4),
                        "mean_gain": round(float(np.mean(list(change.values()))), 4),
                        "worst_change": round(float(min(change.values())), 4),
                        "per_section": {k: round(v, 4) for k, v in child.items()},
                        "message": result.message, "improved": result.improved,
                        "held_out_before": {k: round(v, 4) for k, v in result.before.items()},
                        "held_out_after": {k: round(v, 4) for k, v in result.after.items()},
                        "flagged": bool(getattr(result, "flagged", False)),
                        # what the dock uses unasked: a flagged model waits for Apply
                        "dock_gain": 0.0 if getattr(result, "flagged", False) or not
                        result.improved else round(float(np.mean(list(change.values()))), 4),
                        "change_report": None if report is None else (
                            report.to_dict() if hasattr(report, "to_dict") else str(report)),
                    }
                    entry["runs"].append(run)
                    print(f"  [{args.label}] {kind}/{rule}/{length} seed {seed}: "
                          f"{run['mean']:.4f} (gain {run['mean_gain']:+.4f}, worst "
                          f"{run['worst_change']:+.4f}) {result.steps} steps "
                          f"{wall:.0f} s; {result.message}", flush=True)
                    out.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="parents are cached here")
    parser.add_argument("--cases", default="vnc,strokes,isbi")
    parser.add_argument("--kinds", default="all", help="all, fp, fn (comma-separated)")
    parser.add_argument("--rules", default="dock,reviewed")
    parser.add_argument("--lengths", default="steps", help="steps, time (comma-separated)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--band", type=int, default=None,
                        help="band around changes (default: the dock's 4 px); corrections "
                        "of one kind widen it as the dock does (core.corrections."
                        "confirmed_band)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", default=[], action="append", metavar="FIELD=VALUE",
                        help="change a FinetuneConfig field from the dock's default, e.g. "
                        "freeze_batchnorm=true (repeat for more)")
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.band is None:  # the dock's band (4 px before it had a name)
        from napari_cryoseg.viewer import training_data
        args.band = getattr(training_data, "DEFAULT_BAND_PX", 4)
    results = json.loads(args.out.read_text()) if args.out.exists() else {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "cases": {}}
    results.setdefault("invocations", []).append({
        "label": args.label, "argv": sys.argv[1:], "band": args.band,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg()[0]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.cases.split(","):
        run_case(name, args, args.work, results, args.out)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

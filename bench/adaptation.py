"""Domain-shift benchmark: does a pretrained model plus k corrected sections beat the rest?

For each pair (a base model trained on one dataset, k corrected sections of another) and
each k, budget and seed, it runs in one go, all through the ``cryoseg`` command line:

- **zero-shot**: the base model as it is;
- **fine-tuned**: ``cryoseg finetune`` of the base model on the k sections;
- **from scratch**: ``cryoseg train --val-fraction 0`` on the same k sections, same budget;
- **random forest**: an ilastik-style pixel classifier (scikit-image
  ``multiscale_basic_features`` + scikit-learn ``RandomForestClassifier``) trained on the
  same k sections (its own wall time is reported; it has no budget knob);

and scores each with ``cryoseg evaluate`` on the pair's evaluation sections (mean
foreground Dice). The data is read from ``../shared/data`` (never copied: sections are
linked into a temporary folder).

Pairs:
- ``cdeep3m``: VNC mitochondria (ssTEM) -> CDeep3M mitochondria (volume EM, another
  modality); k = 1: ``training_z020``; k = 2: ``training_z014``, ``training_z026``;
  scored on ``validation_z050..059``.
- ``isbi``: VNC membranes -> ISBI 2012 membranes (same tissue and modality: the small
  shift); k = 1: section 00; k = 2: 00-01; scored on sections 06-29.

Usage (CPU, quiet machine: check ``cat /proc/loadavg`` first)::

    python bench/adaptation.py base --pair cdeep3m --out runs/vnc_mito.pt
    python bench/adaptation.py run --pair cdeep3m --base runs/vnc_mito.pt \\
        --ks 1,2 --budgets 30,60 --seeds 0,1,2 --out bench/results/adaptation_cdeep3m_cpu.json

``--steps N`` replaces the time budgets by a fixed number of steps for fine-tuning and
from-scratch training (load-independent, for studies on a busy machine);
``--ft-args "..."`` passes extra flags to ``cryoseg finetune``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CRYOSEG_DATA", ROOT.parent / "shared" / "data"))

PAIRS = {
    "cdeep3m": {
        "base_data": "drosophila_vnc_sstem", "base_classes": "3", "base_name": "mitochondrion",
        "target": "cdeep3m_mito_sbem", "classes": "1",
        "k": {1: ["training_z020"], 2: ["training_z014", "training_z026"]},
        "eval": [f"validation_z{i:03d}" for i in range(50, 60)],
    },
    "isbi": {
        "base_data": "drosophila_vnc_sstem", "base_classes": "1", "base_name": "membrane",
        "target": "isbi2012_em_membranes", "classes": "1",
        "k": {1: ["train_00"], 2: ["train_00", "train_01"]},
        "eval": [f"train_{i:02d}" for i in range(6, 30)],
    },
}


def cli(*args: str, log: Path | None = None) -> str:
    """Run ``cryoseg`` in a fresh interpreter (as a user would); returns its stdout."""
    command = [sys.executable, "-m", "napari_cryoseg.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if log is not None:
        log.write_text(shlex.join(command) + "\n" + done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def link_sections(folder: Path, dataset: str, stems: list[str]) -> Path:
    """``folder/{images,masks}`` holding symlinks to the given sections of ``dataset``."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            target = folder / sub / f"{stem}.tif"
            if not target.exists():
                target.symlink_to(DATA / dataset / sub / f"{stem}.tif")
    return folder


def evaluate(model: Path, eval_dir: Path, classes: str, device: str, work: Path) -> dict:
    """Mean foreground Dice (pooled per image, then averaged) of ``model`` on ``eval_dir``."""
    out = work / f"eval_{model.stem}.json"
    cli("evaluate", "--model", str(model), "--images", str(eval_dir / "images"),
        "--masks", str(eval_dir / "masks"), "--classes", classes, "--device", device,
        "--json", str(out))
    report = json.loads(out.read_text())
    out.unlink()
    return {"dice": float(report["mean"]["mean_foreground_dice"]),
            "per_image": [round(float(np.nanmean([c["dice"] for c in
                                                  list(s["classes"].values())[1:]])), 4)
                          for s in report.get("images", [])]}


def model_info(path: Path) -> dict:
    """Steps, wall time and fine-tune outcome stored in a model file."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    prov = data.get("provenance", {})
    info = {"steps": prov.get("steps"), "time_s": prov.get("time_s")}
    ft = prov.get("finetune")
    if isinstance(ft, dict):
        info.update(message=ft.get("message"), parent_blend=ft.get("parent_blend"),
                    best_step=ft.get("best_step"))
    return info


def random_forest(pair: dict, stems: list[str], seed: int, samples: int = 200_000,
                  trees: int = 100) -> tuple[dict, float]:
    """ilastik-style pixel classifier on the k sections; (Dice on the eval set, seconds)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    from napari_cryoseg.core.metrics import confusion_counts, scores_from_counts

    def features(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32) / max(float(image.max()), 1.0)
        return multiscale_basic_features(image, intensity=True, edges=True, texture=True,
                                         sigma_min=1, sigma_max=16)

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for stem in stems:
        image = tifffile.imread(DATA / pair["target"] / "images" / f"{stem}.tif")
        mask = tifffile.imread(DATA / pair["target"] / "masks" / f"{stem}.tif")
        feats = features(image)
        feats = feats.reshape(-1, feats.shape[-1])
        target = (mask.ravel() == int(pair["classes"])).astype(np.uint8)
        pick = rng.choice(target.size, min(samples // len(stems), target.size), replace=False)
        xs.append(feats[pick])
        ys.append(target[pick])
    forest = RandomForestClassifier(n_estimators=trees, n_jobs=-1, random_state=seed,
                                    max_depth=None, min_samples_leaf=1)
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    train_s = time.perf_counter() - started
    dices = []
    for stem in pair["eval"]:
        image = tifffile.imread(DATA / pair["target"] / "images" / f"{stem}.tif")
        mask = tifffile.imread(DATA / pair["target"] / "masks" / f"{stem}.tif")
        feats = features(image)
        labels = forest.predict(feats.reshape(-1, feats.shape[-1])).reshape(mask.shape)
        truth = (mask == int(pair["classes"])).astype(np.uint8)
        dices.append(scores_from_counts(*confusion_counts(labels, truth, 1)).dice)
    return ({"dice": float(np.mean(dices)), "per_image": [round(float(d), 4) for d in dices],
             "train_s": round(train_s, 1), "samples": samples, "trees": trees},
            time.perf_counter() - started)


def make_base(args: argparse.Namespace) -> None:
    """Train the base model of a pair through the CLI (as the issue measured it)."""
    pair = PAIRS[args.pair]
    data = DATA / pair["base_data"]
    cli("train", "--images", str(data / "images"), "--masks", str(data / "masks"),
        "--classes", pair["base_classes"], "--class-names", pair["base_name"],
        "--steps", str(args.steps), "--device", args.device, "--out", args.out,
        *shlex.split(args.train_args), log=Path(args.out).with_suffix(".log"))
    print(f"wrote {args.out}")


def run(args: argparse.Namespace) -> None:
    """Every method for every k, budget and seed; JSON with the environment."""
    pair = PAIRS[args.pair]
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    work = Path(tempfile.mkdtemp(prefix="cryoseg-adapt-"))
    eval_dir = link_sections(work / "eval", pair["target"], pair["eval"])
    results: dict = {
        "pair": args.pair, "base": str(args.base), "device": args.device,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()[0],
        "steps": args.steps, "ft_args": args.ft_args, "runs": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(results, indent=1))

    if "zero" in methods:
        results["zero_shot"] = evaluate(Path(args.base), eval_dir, pair["classes"], args.device,
                                        work)
        print(f"zero-shot: {results['zero_shot']['dice']:.4f}", flush=True)
        save()
    for k in ks:
        stems = pair["k"][k]
        train_dir = link_sections(work / f"k{k}", pair["target"], stems)
        for seed in seeds:
            if "rf" in methods:
                scores, seconds = random_forest(pair, stems, seed)
                results["runs"].append({"method": "random forest", "k": k, "seed": seed,
                                        "budget_s": None, "wall_s": round(seconds, 1),
                                        **scores})
                print(f"k={k} seed={seed} random forest: {scores['dice']:.4f} "
                      f"({seconds:.0f} s)", flush=True)
                save()
            for budget in budgets:
                length = (["--steps", str(args.steps)] if args.steps
                          else ["--time-budget", f"{budget:g}"])
                for method in ("finetune", "scratch"):
                    if method not in methods:
                        continue
                    model = work / f"{method}_k{k}_s{seed}_b{budget:g}.pt"
                    started = time.perf_counter()
                    if method == "finetune":
                        cli("finetune", "--model", str(args.base), "--images",
                            str(train_dir / "images"), "--masks", str(train_dir / "masks"),
                            "--classes", pair["classes"], "--device", args.device, "--seed",
                            str(seed), "--out", str(model), *length,
                            *shlex.split(args.ft_args), log=model.with_suffix(".log"))
                    else:
                        cli("train", "--images", str(train_dir / "images"), "--masks",
                            str(train_dir / "masks"), "--classes", pair["classes"],
                            "--val-fraction", "0", "--device", args.device, "--seed",
                            str(seed), "--out", str(model), *length,
                            *shlex.split(args.scratch_args), log=model.with_suffix(".log"))
                    wall = time.perf_counter() - started
                    scores = evaluate(model, eval_dir, pair["classes"], args.device, work)
                    entry = {"method": "fine-tuned" if method == "finetune" else "from scratch",
                             "k": k, "seed": seed, "budget_s": budget, "wall_s": round(wall, 1),
                             **model_info(model), **scores}
                    results["runs"].append(entry)
                    print(f"k={k} seed={seed} budget={budget:g} {entry['method']}: "
                          f"{scores['dice']:.4f} ({entry['steps']} steps, {wall:.0f} s)"
                          + (f" | {entry.get('message')}" if entry.get("message") else ""),
                          flush=True)
                    save()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["loadavg_end"] = os.getloadavg()[0]
    results["summary"] = summarise(results)
    save()
    print(json.dumps(results["summary"], indent=1))


def summarise(results: dict) -> list[dict]:
    """Mean and range of Dice per (method, k, budget) over seeds."""
    groups: dict[tuple, list[float]] = {}
    for run_ in results["runs"]:
        key = (run_["method"], run_["k"], run_["budget_s"])
        groups.setdefault(key, []).append(run_["dice"])
    return [{"method": m, "k": k, "budget_s": b, "mean_dice": round(float(np.mean(v)), 4),
             "min": round(float(np.min(v)), 4), "max": round(float(np.max(v)), 4),
             "seeds": len(v)} for (m, k, b), v in sorted(groups.items(), key=str)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("base", help="train the base model of a pair")
    base.add_argument("--pair", choices=PAIRS, required=True)
    base.add_argument("--out", required=True)
    base.add_argument("--steps", type=int, default=300)
    base.add_argument("--device", default="cpu")
    base.add_argument("--train-args", default="")
    base.set_defaults(func=make_base)
    bench = sub.add_parser("run", help="run the benchmark")
    bench.add_argument("--pair", choices=PAIRS, required=True)
    bench.add_argument("--base", required=True, type=Path)
    bench.add_argument("--ks", default="1,2")
    bench.add_argument("--budgets", default="30,60")
    bench.add_argument("--seeds", default="0,1,2")
    bench.add_argument("--methods", default="zero,finetune,scratch,rf")
    bench.add_argument("--steps", type=int, default=None)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--ft-args", default="")
    bench.add_argument("--scratch-args", default="")
    bench.add_argument("--out", required=True)
    bench.set_defaults(func=run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

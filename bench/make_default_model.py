"""Train the bundled default model on procedural sample images and evaluate it.

Usage (from the repository root; ~15 minutes on 2 CPU cores)::

    python bench/make_default_model.py --time-budget 720 \
        --out src/napari_cryoseg/models/cryoseg-default.pt --overwrite

Steps: write ``--n-train`` synthetic images (``make_sample`` seeds 1000+i: 512x512 uint16
mostly, some 256x256 and uint8/float32) and their labels as TIFFs (pixel size 50 nm) into
a temporary folder, run ``cryoseg train`` on them (4 classes: background, cell, ice,
grid bar), then write ``--n-test`` fresh samples (seeds 2000+i) and run
``cryoseg evaluate`` on them, printing mean foreground and per-class Dice.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from napari_cryoseg.core.synthetic import SampleConfig, make_sample


def write_samples(folder: Path, seeds: range) -> None:
    """Images and labels of ``seeds`` as TIFFs in ``folder/images`` and ``folder/masks``."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i, seed in enumerate(seeds):
        # Mostly 512² uint16 (the sample's default) with some 256² and dtype variety, so the
        # model sees what users open: 8-bit exports, float images, smaller crops.
        shape = (256, 256) if i % 5 == 4 else (512, 512)
        dtype = ("uint16", "uint16", "uint8", "float32")[i % 4]
        image, labels = make_sample(seed, SampleConfig(shape=shape, dtype=dtype))
        res = (1 / 50.0, 1 / 50.0)  # 50 nm pixels, ImageJ unit nm
        meta = {"unit": "nm"}
        tifffile.imwrite(folder / "images" / f"sample_{seed}.tif", image, imagej=True,
                         resolution=res, metadata=meta)
        tifffile.imwrite(folder / "masks" / f"sample_{seed}.tif", labels, imagej=True,
                         resolution=res, metadata=meta)


def cryoseg(*args: str) -> None:
    """Run the ``cryoseg`` CLI in this interpreter's environment, echoing the command."""
    command = [sys.executable, "-m", "napari_cryoseg.cli", *args]
    print("+ cryoseg " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="src/napari_cryoseg/models/cryoseg-default.pt")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--time-budget", type=float, default=720.0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None, help="keep the data here (default: temp)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        started = time.perf_counter()
        write_samples(work / "train", range(1000, 1000 + args.n_train))
        write_samples(work / "test", range(2000, 2000 + args.n_test))
        print(f"wrote samples in {time.perf_counter() - started:.0f} s", flush=True)
        train_args = [
            "train", "--images", str(work / "train/images"), "--masks", str(work / "train/masks"),
            "--out", args.out, "--preset", args.preset, "--classes", "1,2,3",
            "--class-names", "cell,ice,grid bar", "--time-budget", str(args.time_budget),
            "--batch-size", str(args.batch_size), "--patch", str(args.patch),
            "--lr", str(args.lr), "--val-fraction", "0.1", "--seed", "0",
            "--device", args.device,
        ]
        if args.overwrite:
            train_args.append("--overwrite")
        cryoseg(*train_args)
        report = work / "evaluation.json"
        cryoseg("evaluate", "--model", args.out, "--images", str(work / "test/images"),
                "--masks", str(work / "test/masks"), "--classes", "1,2,3",
                "--json", str(report), "--device", args.device)
        summary = json.loads(report.read_text())["mean"]
        print(json.dumps(summary, indent=2))
        print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tuning speed: steps/s and time to reach a target Dice, starting from the default model.

    python bench/bench_finetune.py [--budget 90] [--device auto]

Scenario (the interactive loop in miniature): the bundled default model meets images of a
different look (much stronger shot noise and charging than it was trained on), the user
corrects ONE image, and fine-tuning runs with a time budget. The fine-tuned weights are
scored on 3 other images of the new look at several points in time, giving Dice against
seconds and steps/s. The zero-shot Dice of the default model is the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryoseg.core.metrics import mean_foreground_dice
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import TrainStep, drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.bundled import load_default_model

NEW_LOOK = SampleConfig(shape=(384, 384), noise=0.3, charging=0.8)


def score(model, images, truths) -> float:
    segmenter = Segmenter(model, "auto")
    dices = [mean_foreground_dice(drain(segment(i, segmenter)).labels, t, 4)
             for i, t in zip(images, truths)]
    return float(np.mean(dices))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", default="10,30,60")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench/results/finetune_cpu.json")
    args = parser.parse_args()
    base = load_default_model()
    corrected_image, corrected_truth = make_sample(500, NEW_LOOK)
    test = [make_sample(600 + i, NEW_LOOK) for i in range(3)]
    images, truths = [t[0] for t in test], [t[1] for t in test]
    result = {"benchmark": "finetune", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "loadavg_before": os.getloadavg(),
              "scenario": "default model -> noisier, more charged samples; 1 corrected image",
              "zero_shot_dice": score(base, images, truths), "runs": []}
    print("zero-shot", result["zero_shot_dice"], flush=True)
    for budget in [float(b) for b in args.budgets.split(",")]:
        steps = []
        started = time.perf_counter()
        out = drain(finetune(base, [corrected_image], [corrected_truth], None,
                             FinetuneConfig(time_budget_s=budget, device=args.device)),
                    lambda e, steps=steps: steps.append(e) if isinstance(e, TrainStep) else None)
        wall = time.perf_counter() - started
        run = {"budget_s": budget, "wall_s": wall, "steps": out.steps,
               "steps_per_s": out.steps / max(out.elapsed_s, 1e-9),
               "holdout_before": out.before.get("dice"), "holdout_after": out.after.get("dice"),
               "kept_parent": not out.improved, "test_dice": score(out.model, images, truths)}
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    result["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

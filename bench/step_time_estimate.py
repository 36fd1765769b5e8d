"""How well the dock's "60 s ≈ N steps here" estimate holds, and what the budgets buy.

    python bench/step_time_estimate.py --out bench/results/step_time_estimate_cpu.json \\
        [--train-proposed]

On CDeep3M mitochondria (``../shared/data/cdeep3m_mito_sbem``), with strokes made from
the ground truth as ``bench/strokes.py`` makes them, and the dock's Train new model
settings (``small`` preset, 8 patches of 256 px, a held-out part of the strokes):

1. **estimate**: :func:`napari_cryoseg.engine.training.step_time.measure_step_time` (a warm-up
   step and two timed ones on random data) and the steps it says 60 s buy;
2. **measured**: a real 60 s training run on ``training_z020``'s strokes: steps made,
   and seconds per optimiser step (wall time minus held-out checks and previews);
3. **fine-tune overheads at 60 s**: the model of 2 fine-tuned with a 60 s budget on the
   strokes of ``training_z014``: seconds spent re-estimating BatchNorm statistics and
   scoring on held-out pixels, as a share of the run;
4. with ``--train-proposed``: a new model trained with the budget the dock proposes,
   scored (mean foreground Dice) on ``validation_z050..059``.

The machine may be shared: the load average is recorded at start and end.
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strokes import strokes_from_truth  # noqa: E402

from napari_cryoseg.core.metrics import dice  # noqa: E402
from napari_cryoseg.engine.classes import ClassMapping  # noqa: E402
from napari_cryoseg.engine.events import drain  # noqa: E402
from napari_cryoseg.engine.inference.predict import segment  # noqa: E402
from napari_cryoseg.engine.training import step_time as st  # noqa: E402
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune  # noqa: E402
from napari_cryoseg.engine.training.train import TrainConfig, train  # noqa: E402
from napari_cryoseg.engine.training.transfer import starts_pretrained  # noqa: E402
from napari_cryoseg.engine.training.verdict import judge  # noqa: E402
from napari_cryoseg.model.config import preset  # noqa: E402
from napari_cryoseg.viewer.settings import DockSettings  # noqa: E402

DATA = Path(os.environ.get("CRYOSEG_DATA", Path(__file__).resolve().parents[2] / "shared"
                           / "data")) / "cdeep3m_mito_sbem"
EVAL = [f"validation_z{i:03d}" for i in range(50, 60)]


def _section(stem: str) -> tuple[np.ndarray, np.ndarray]:
    return (tifffile.imread(DATA / "images" / f"{stem}.tif"),
            tifffile.imread(DATA / "masks" / f"{stem}.tif"))


def _strokes(stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, class mask (0 bg, 1 mito) and painted pixels, as the dock passes them."""
    image, truth = _section(stem)
    painted = strokes_from_truth(truth)
    return image, (painted == 2).astype(np.uint8), painted > 0


def _train(config: TrainConfig, stem: str = "training_z020"):
    image, mask, valid = _strokes(stem)
    mapping = ClassMapping.from_masks([np.array([[0, 1]], np.uint8)])
    return drain(train([image], [mask], config, mapping, valid_masks=[valid]))


def _split(provenance: dict) -> dict:
    keys = ("time_s", "adapt_s", "scoring_s", "validation_s", "preview_s", "steps")
    return {k: provenance.get(k) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--train-proposed", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dock = DockSettings().train  # the dock's defaults for Train new model
    config = TrainConfig(**{**dock.to_dict(), "time_budget_s": args.budget, "device": "cpu",
                            "augment": dock.augment, "normalization": dock.normalization})
    result: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg()[0],
        "settings": {"preset": config.preset, "patch": config.patch,
                     "batch_size": config.batch_size, "budget_s": args.budget},
    }

    def save() -> None:
        out.write_text(json.dumps(result, indent=1))

    unet = preset(config.preset, n_classes=2)
    step_s = st.measure_step_time(unet, patch=config.patch, batch=config.batch_size,
                                  device="cpu", use_cache=False)
    # as the dock's budget line: a start from the EM backbone needs fewer steps
    pretrained = starts_pretrained(config)
    estimate = st.estimate(step_s, args.budget, kind="train", pretrained=pretrained)
    result["estimate"] = {"step_s": round(step_s, 3), "steps": estimate.steps,
                          "text": estimate.text(), "proposed_budget_s": estimate.proposed_s,
                          "min_useful_steps": estimate.min_steps, "pretrained": pretrained}
    print(estimate.text(), flush=True)
    save()
    run = _train(config)
    prov = run.best.provenance
    opt_s = (prov["time_s"] - prov.get("validation_s", 0) - prov.get("preview_s", 0))
    measured_step_s = opt_s / max(run.steps, 1)
    result["measured"] = {
        "steps": run.steps, "time_s": prov["time_s"],
        "validation_s": prov.get("validation_s"),
        "step_s": round(measured_step_s, 3),
        "step_time_error": round(step_s / measured_step_s - 1, 3),
        "steps_error": round(estimate.steps / max(run.steps, 1) - 1, 3),
        "verdict": judge("train", run.steps, run.best.class_names,
                         after=prov.get("metrics", {}).get("validation"),
                         pretrained=pretrained).text(),
    }
    print(json.dumps(result["measured"]), flush=True)
    save()
    image, mask, valid = _strokes("training_z014")
    fine = drain(finetune(run.best, [image], [mask], [valid],
                          FinetuneConfig(time_budget_s=60.0, device="cpu", seed=0)))
    split = _split(fine.model.provenance)
    checks = (split["adapt_s"] or 0) + (split["scoring_s"] or 0)
    result["finetune_60s"] = {
        **split, "checks_share": round(checks / split["time_s"], 3),
        "checks_and_validation_share": round((checks + (split["validation_s"] or 0))
                                             / split["time_s"], 3),
        "steps": fine.steps, "message": fine.message,
    }
    print(json.dumps(result["finetune_60s"]), flush=True)
    save()
    if args.train_proposed:
        proposed = TrainConfig(**{**config.to_dict(), "time_budget_s": estimate.proposed_s,
                                  "augment": config.augment,
                                  "normalization": config.normalization})
        big = _train(proposed)
        scores = []
        for stem in EVAL:
            eval_image, truth = _section(stem)
            labels = drain(segment(eval_image, big.best, device="cpu")).labels
            scores.append(dice(labels, (truth > 0).astype(np.uint8), 1))
        result["proposed_run"] = {
            "budget_s": estimate.proposed_s, "steps": big.steps,
            "time_s": big.best.provenance["time_s"],
            "selected": big.best.provenance.get("selected"),
            "eval_dice_mean": round(float(np.mean(scores)), 4),
            "eval_dice": [round(float(s), 4) for s in scores],
            "verdict": judge("train", big.steps, big.best.class_names, after=big.best
                             .provenance.get("metrics", {}).get("validation"),
                             pretrained=pretrained).text()
            or "applied",
        }
        print(json.dumps(result["proposed_run"]), flush=True)
    result["loadavg_end"] = os.getloadavg()[0]
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

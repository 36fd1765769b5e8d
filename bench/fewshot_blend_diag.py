"""VNC -> ISBI few-shot: fine-tuned weights vs their average with the parent (CPU study).

    python bench/fewshot_blend_diag.py VNC_MODEL.pt K SEEDS [LR]
    e.g. python bench/fewshot_blend_diag.py vnc_small.pt 1 0,1,2

Fine-tunes on ISBI sections 00..K-1 (30 s, scattered-block holdout, best step kept,
``parent_blend=1`` so the raw fine-tuned weights come back), then scores on sections
06-29 the fine-tuned weights (blend 1) and their average with the parent (blend 0.5),
as the mean of per-image membrane Dice (what ``cryoseg evaluate`` reports). The study
behind ``FinetuneConfig.parent_blend = 0.5`` (logs in bench/results/quality_cpu/
fewshot_blend/).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import FinetuneConfig, blend_states, finetune
from napari_cryoseg.engine.train import model_from_state, predict_scores
from napari_cryoseg.model.checkpoint import load_model

ROOT = "../shared/data/isbi2012_em_membranes"


def load(i: int) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(f"{ROOT}/images/train_{i:02d}.tif")
    mask = tifffile.imread(f"{ROOT}/masks/train_{i:02d}.tif")
    return image, (mask == 1).astype(np.uint8)


def main() -> int:
    torch.set_num_threads(2)
    parent = load_model(sys.argv[1])
    k = int(sys.argv[2])
    seeds = [int(s) for s in sys.argv[3].split(",")]
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
    test = [(*load(i), None) for i in range(6, 30)]
    cpu = torch.device("cpu")

    def score(state: dict) -> float:
        model = model_from_state(parent, state, {})
        return float(np.mean([predict_scores(model, [t], cpu).dice() for t in test]))

    out = {}
    for seed in seeds:
        images, masks = zip(*[load(i) for i in range(k)])
        result = drain(finetune(parent, list(images), list(masks), None, FinetuneConfig(
            time_budget_s=30, seed=seed, device="cpu", lr=lr, parent_blend=1.0)))
        row = {"best_step": result.best_step, "steps": result.steps}
        for blend in (0.5, 1.0):
            row[f"a{blend}"] = score(blend_states(parent.state_dict, result.model.state_dict,
                                                  blend))
        out[seed] = row
        print(seed, row, flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

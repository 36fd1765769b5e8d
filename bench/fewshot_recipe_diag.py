"""Few-shot recipe diagnosis: fine-tune on ISBI sections 00..k-1 (no holdout, fixed steps).

    PYTHONPATH=src python bench/fewshot_recipe_diag.py VNC_MODEL.pt K VARIANT 25,50,100

Each length starts again from the parent; prints the membrane Dice on ISBI 06-29 and the
seconds taken. VARIANT picks the recipe (see RECIPES). Data: ../shared/data (or $DATA).
"""

import glob
import os
import sys
import time

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.data import AugmentConfig
from napari_cryoseg.engine.evaluate import evaluate
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import load_model

TRAINING_AUG = AugmentConfig()  # the training-from-scratch augmentations
NONE = AugmentConfig.none()
GEOMETRIC = AugmentConfig(brightness=0, contrast=0, gamma=0, noise=0)
RECIPES = {
    "default": {},
    "session1": {"lr": 2e-4, "augment": TRAINING_AUG},
    "bn_train": {"lr": 2e-4, "augment": TRAINING_AUG, "freeze_batchnorm": False},
    "geomaug": {"lr": 2e-4, "augment": GEOMETRIC},
    "noaug_lr2e-4": {"lr": 2e-4, "augment": NONE},
    "aug_lr1e-4": {"lr": 1e-4, "augment": TRAINING_AUG},
    "aug_lr1e-4_seed1": {"lr": 1e-4, "augment": TRAINING_AUG, "seed": 1},
    "noaug_lr1e-4": {"lr": 1e-4, "augment": NONE},
    "noaug_lr1e-4_seed1": {"lr": 1e-4, "augment": NONE, "seed": 1},
}


def main() -> None:
    model_path, k, variant, lengths = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(os.cpu_count() or 1)
    data = os.environ.get("DATA", "../shared/data") + "/isbi2012_em_membranes"
    images = [tifffile.imread(f) for f in sorted(glob.glob(f"{data}/images/*.tif"))]
    masks = [(tifffile.imread(f) == 1).astype(np.uint8)
             for f in sorted(glob.glob(f"{data}/masks/*.tif"))]
    parent = load_model(model_path)

    def test(model) -> float:
        return drain(evaluate(model, images[6:], masks[6:], device="cpu")).mean_foreground_dice

    print("zero-shot", test(parent), flush=True)
    settings = {"holdout_fraction": 0.0, "device": "cpu", **RECIPES[variant]}
    for steps in [int(s) for s in lengths.split(",")]:
        started = time.perf_counter()
        result = drain(finetune(parent, images[:k], masks[:k], None,
                                FinetuneConfig(steps=steps, **settings)))
        print(variant, k, steps, (test(result.model), time.perf_counter() - started),
              flush=True)


if __name__ == "__main__":
    main()

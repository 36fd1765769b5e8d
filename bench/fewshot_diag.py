"""Few-shot diagnosis on a GPU: VNC-trained model fine-tuned on 1 ISBI section, several recipes.

PYTHONPATH=src python bench/fewshot_diag.py DATA_DIR OUT_JSON
"""

import glob
import json
import sys
import time

import numpy as np
import tifffile

from napari_cryoseg.engine.data import ClassMapping
from napari_cryoseg.engine.evaluate import evaluate
from napari_cryoseg.engine.events import Message, Validation, drain
from napari_cryoseg.engine.finetune import FinetuneConfig, finetune
from napari_cryoseg.engine.train import TrainConfig, train

data, out = sys.argv[1], sys.argv[2]
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
vnc_images, vnc_masks = read(f"{data}/drosophila_vnc_sstem/images/*.tif"), read(
    f"{data}/drosophila_vnc_sstem/masks/*.tif")
isbi_images, isbi_masks = read(f"{data}/isbi2012_em_membranes/images/*.tif"), read(
    f"{data}/isbi2012_em_membranes/masks/*.tif")
membrane = ClassMapping.parse("1", "membrane")
results = {}


def score(model):
    report = drain(evaluate(model, isbi_images[6:], isbi_masks[6:], class_mapping=membrane))
    return report.mean_foreground_dice


start = time.perf_counter()
base = drain(train(vnc_images, vnc_masks, TrainConfig(preset="thesis", time_budget_s=45), membrane))
results["vnc_train_s"] = time.perf_counter() - start
results["zero_shot"] = score(base.best)
print("zero-shot", results["zero_shot"], flush=True)
recipes = {
    "default (frozen BN, early checks)": FinetuneConfig(time_budget_s=30),
    "frozen encoder": FinetuneConfig(time_budget_s=30, freeze_encoder=True),
}
ks = [int(k) for k in (sys.argv[3] if len(sys.argv) > 3 else "1").split(",")]
for name, config in recipes.items():
    log = []

    def keep(event, log=log):
        if isinstance(event, Validation):
            log.append([event.step, round(event.dice, 4)])
        elif isinstance(event, Message):
            log.append(event.text)

    for k in ks:
        masks = [(m == 1).astype(np.uint8) for m in isbi_masks[:k]]
        result = drain(finetune(base.best, isbi_images[:k], masks, None, config), keep)
        results[f"{name} k={k}"] = {
            "dice_other": score(result.model), "steps": result.steps, "before": result.before,
            "after": result.after, "improved": result.improved, "log": log[:12],
        }
        print(name, k, results[f"{name} k={k}"]["dice_other"], result.steps, result.message,
              flush=True)
with open(out, "w") as f:
    json.dump(results, f, indent=1, default=str)

"""CPU few-shot diagnosis, part 1: small VNC membrane models (mask==1 and mask in {1,2}).

python bench/fewshot_cpu_base.py DATA WORK OUT_JSON [BUDGET_S] [PRESET] [STEPS] [ONLY]
(STEPS: a fixed step count as well, so runs compare under a shared, loaded CPU; ONLY: m1 or m12)
Saves WORK_DIR/vnc_m1.pt and WORK_DIR/vnc_m12.pt; writes zero-shot ISBI 06-29 Dice to OUT_JSON.
"""

import glob
import json
import sys
import time

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.data import ClassMapping
from napari_cryoseg.engine.evaluate import evaluate
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import save_model

torch.set_num_threads(2)
data, work, out = sys.argv[1], sys.argv[2], sys.argv[3]
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 200
preset = sys.argv[5] if len(sys.argv) > 5 else "small"
steps = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] else None
only = sys.argv[7] if len(sys.argv) > 7 else None
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
vnc_images = read(f"{data}/drosophila_vnc_sstem/images/*.tif")
vnc_masks = read(f"{data}/drosophila_vnc_sstem/masks/*.tif")
isbi_images = read(f"{data}/isbi2012_em_membranes/images/*.tif")
isbi_masks = read(f"{data}/isbi2012_em_membranes/masks/*.tif")
membrane = ClassMapping.parse("1", "membrane")
results = {"preset": preset, "budget_s": budget, "steps": steps,
           "isbi_membrane_fraction": float(np.mean([m.mean() for m in isbi_masks])),
           "vnc_m1_fraction": float(np.mean([(m == 1).mean() for m in vnc_masks])),
           "vnc_m12_fraction": float(np.mean([np.isin(m, (1, 2)).mean() for m in vnc_masks]))}
for name, values in {"m1": (1,), "m12": (1, 2)}.items():
    if only and name != only:
        continue
    masks = [np.isin(m, values).astype(np.uint8) for m in vnc_masks]
    t0 = time.perf_counter()
    res = drain(train(vnc_images, masks, TrainConfig(
        preset=preset, time_budget_s=budget, steps=steps, batch_size=4, device="cpu"), membrane))
    save_model(res.best, f"{work}/vnc_{name}.pt", overwrite=True)
    report = drain(evaluate(res.best, isbi_images[6:], isbi_masks[6:], class_mapping=membrane))
    results[name] = {"train_s": time.perf_counter() - t0, "steps": res.steps,
                     "vnc_val_dice": res.best_dice, "best_step": res.best_step,
                     "zero_shot_isbi06_29": report.mean_foreground_dice}
    print(name, results[name], flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)

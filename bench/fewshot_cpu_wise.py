"""CPU few-shot, part 4: weight interpolation (WiSE-FT) between the parent and a fine-tuned copy.

PYTHONPATH=src python bench/fewshot_cpu_wise.py DATA_DIR PARENT.pt OUT_JSON [STEPS] [LRS] [K]
Fine-tunes on ISBI 00..K-1 without holdout, then scores
theta = (1 - a) * parent + a * finetuned on ISBI 06-29 for several a.
"""

import glob
import json
import sys

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import FinetuneConfig, finetune
from napari_cryoseg.engine.train import model_from_state, predict_scores
from napari_cryoseg.model.checkpoint import load_model

torch.set_num_threads(2)
data, parent_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 100
lrs = [float(v) for v in (sys.argv[5] if len(sys.argv) > 5 else "2e-4").split(",")]
k = int(sys.argv[6]) if len(sys.argv) > 6 else 1
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
images = read(f"{data}/isbi2012_em_membranes/images/*.tif")
masks = [(m == 1).astype(np.uint8) for m in read(f"{data}/isbi2012_em_membranes/masks/*.tif")]
test = [(im, m, None) for im, m in zip(images[6:], masks[6:])]
parent = load_model(parent_path)
cpu = torch.device("cpu")
results = {"parent": parent_path, "steps": steps, "k": k}
for lr in lrs:
    res = drain(finetune(parent, images[:k], masks[:k], None, FinetuneConfig(
        steps=steps, lr=lr, holdout_fraction=0.0, device="cpu")))
    tuned = res.model.state_dict
    row = {}
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        mixed = {n: ((1 - a) * parent.state_dict[n].float() + a * v.float()).to(v.dtype)
                 if v.is_floating_point() else v for n, v in tuned.items()}
        row[a] = predict_scores(model_from_state(parent, mixed, {}), test, cpu).dice()
        print(lr, a, row[a], flush=True)
    results[f"lr{lr:g}"] = row
    with open(out, "w") as f:
        json.dump(results, f, indent=1)

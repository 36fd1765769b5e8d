"""CPU few-shot diagnosis, part 3: label convention / boundary thickness of a VNC model on ISBI.

PYTHONPATH=src python bench/fewshot_cpu_labels.py DATA_DIR OUT_JSON MODEL.pt [MODEL.pt ...]
Zero-shot on ISBI 06-29: predicted vs true membrane fraction, Dice at several probability
thresholds and with the prediction dilated / eroded by 1-2 px; also the bottom-25 % strip of
section 00 (the fine-tuning holdout).
"""

import glob
import json
import sys

import numpy as np
import tifffile
import torch
from scipy import ndimage

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.predict import segment
from napari_cryoseg.model.checkpoint import load_model

torch.set_num_threads(2)
data, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
images = read(f"{data}/isbi2012_em_membranes/images/*.tif")
masks = [(m == 1) for m in read(f"{data}/isbi2012_em_membranes/masks/*.tif")]


def dice(pred, true):
    tp = sum(int((p & t).sum()) for p, t in zip(pred, true))
    return 2 * tp / (sum(int(p.sum()) for p in pred) + sum(int(t.sum()) for t in true))


results = {}
for path in paths:
    model = load_model(path)
    probs = [drain(segment(im, model, return_probabilities=True)).probabilities[0]
             for im in images[6:]]
    true = masks[6:]
    r = {"true_fraction": float(np.mean(true)),
         "pred_fraction@0.5": float(np.mean([p > 0.5 for p in probs])),
         "dice_by_threshold": {t: dice([p > t for p in probs], true)
                               for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)}}
    pred = [p > 0.5 for p in probs]
    for n in (1, 2):
        r[f"dice_dilate{n}"] = dice([ndimage.binary_dilation(p, iterations=n) for p in pred], true)
        r[f"dice_erode{n}"] = dice([ndimage.binary_erosion(p, iterations=n) for p in pred], true)
        r[f"dice_true_dilate{n}_vs_pred"] = dice(
            pred, [ndimage.binary_dilation(t, iterations=n) for t in true])
    p0 = drain(segment(images[0], model, return_probabilities=True)).probabilities[0]
    r["sec00_holdout_strip_dice"] = dice([p0[384:] > 0.5], [masks[0][384:]])
    r["sec00_top_dice"] = dice([p0[:384] > 0.5], [masks[0][:384]])
    results[path] = r
    print(path, json.dumps(r), flush=True)
with open(out, "w") as f:
    json.dump(results, f, indent=1)

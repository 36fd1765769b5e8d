"""CPU few-shot, part 6: is the early test-Dice drop a calibration shift? Saves fine-tuned copies.

PYTHONPATH=src python bench/fewshot_cpu_calib.py DATA_DIR PARENT.pt WORK_DIR [STEPS]
Fine-tunes on ISBI 00 (no holdout, lr 2e-4) for STEPS steps and saves WORK_DIR/ft_STEPS.pt;
then run bench/fewshot_cpu_labels.py on it (threshold sweep, predicted membrane fraction).
"""

import glob
import sys

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import load_model, save_model

torch.set_num_threads(2)
data, parent_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 25
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
images = read(f"{data}/isbi2012_em_membranes/images/*.tif")[:1]
masks = [(m == 1).astype(np.uint8) for m in read(f"{data}/isbi2012_em_membranes/masks/*.tif")[:1]]
res = drain(finetune(load_model(parent_path), images, masks, None,
                     FinetuneConfig(steps=steps, holdout_fraction=0.0, device="cpu")))
save_model(res.model, f"{work}/ft_{steps}.pt", overwrite=True)

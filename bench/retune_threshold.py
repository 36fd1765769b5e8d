"""Tune a trained binary model's foreground threshold on validation images, as
``cryoseg train`` now does at the end of training, and write a copy of the model.

    python bench/retune_threshold.py MODEL.pt VAL_IMAGES_DIR VAL_MASKS_DIR OUT.pt --classes 1

Used for the ISBI model trained before threshold tuning existed (docs/quality.md): its
validation block (sections 19-23 of 00-23) picks the threshold; test sections stay unseen.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from napari_cryoseg.cli.train import read_pairs
from napari_cryoseg.engine.training.scoring import tune_threshold
from napari_cryoseg.model.checkpoint import load_model, save_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("masks")
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=1, help="mask value of the foreground")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_model(args.model)
    names, images, masks, _, _ = read_pairs(args.images, args.masks)
    items = [(image, (np.asarray(mask) == args.classes).astype(np.uint8), None)
             for image, mask in zip(images, masks)]
    model.threshold, info = tune_threshold(model, items, args.device)
    model.provenance["threshold_tuning"] = {**info, "images": names}
    save_model(model, args.out)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

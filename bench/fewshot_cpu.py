"""CPU few-shot diagnosis, part 2: why fine-tuning a VNC model on ISBI section 00 hurts.

PYTHONPATH=src python bench/fewshot_cpu.py DATA_DIR PARENT.pt OUT_JSON [RECIPES] [STEPS] [K]

For each recipe, finetune() runs for STEPS steps on ISBI sections 00..K-1 (bottom 25 % rows
held out, as the plugin does); every held-out check ALSO scores ISBI 06-29 (never used for
adaptation), so the whole held-out vs test curve is recorded, not only the kept weights.
Also: parent loss on training patches with / without augmentation.
"""

import glob
import json
import sys
import time
from dataclasses import replace

import numpy as np
import tifffile
import torch

import napari_cryoseg.engine.finetune as ft
from napari_cryoseg.engine.data import AugmentConfig, PatchSampler
from napari_cryoseg.engine.events import Validation, drain
from napari_cryoseg.engine.losses import segmentation_loss
from napari_cryoseg.engine.train import predict_scores
from napari_cryoseg.model.checkpoint import load_model

torch.set_num_threads(2)
data, parent_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
which = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else None
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 100
k = int(sys.argv[6]) if len(sys.argv) > 6 else 1
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
isbi_images = read(f"{data}/isbi2012_em_membranes/images/*.tif")
isbi_masks = [(m == 1).astype(np.uint8) for m in read(f"{data}/isbi2012_em_membranes/masks/*.tif")]
test_items = [(im, m, None) for im, m in zip(isbi_images[6:], isbi_masks[6:])]
parent = load_model(parent_path)
cpu = torch.device("cpu")
results = {"parent": parent_path, "steps": steps, "k": k}


def test_dice(model):
    return predict_scores(model, test_items, cpu).dice()


results["parent_test_dice"] = test_dice(parent)
print("parent test", results["parent_test_dice"], flush=True)

# ---- parent loss on training patches, with and without augmentation (eval mode)
tr_im, tr_t, _, hold, _ = ft.split_holdout(isbi_images[:k], isbi_masks[:k], None, 0.25)
net = parent.build(cpu).eval()
augments = {"no_aug": AugmentConfig.none(), "default_aug": AugmentConfig(),
            "geometric_only": AugmentConfig(brightness=0, contrast=0, gamma=0, noise=0)}
for label, aug in augments.items():
    sampler = PatchSampler(tr_im, tr_t, 2, 256, parent.normalization, aug, seed=1)
    losses, bces = [], []
    with torch.no_grad():
        for _ in range(8):
            x, y = sampler.sample(4)
            logits = net(x)
            losses.append(float(segmentation_loss(logits, y)))
            bces.append(float(segmentation_loss(logits, y, dice_weight=0)))
    results[f"parent_patch_loss_{label}"] = {"loss": float(np.mean(losses)),
                                             "bce": float(np.mean(bces))}
    print(label, results[f"parent_patch_loss_{label}"], flush=True)
results["parent_holdout"] = predict_scores(parent, hold, cpu).metrics(parent.class_names)

# ---- fine-tuning recipes; every held-out check also scores the test sections
curve = []
_orig = ft.predict_scores


def logging_scores(model, items, device, tiling=None):
    acc = _orig(model, items, device, tiling)
    curve.append({"holdout_dice": acc.dice(), "test_dice": test_dice(model)})
    return acc


ft.predict_scores = logging_scores
base = ft.FinetuneConfig(steps=steps, device="cpu", val_every=25)
no_aug = AugmentConfig(brightness=0, contrast=0, gamma=0, noise=0)
recipes = {
    "lr1e-8 (sanity)": replace(base, lr=1e-8),
    "default lr2e-4": replace(base, dice_weight=1.0),  # the old default (Dice weight 1)
    "lr3e-5": replace(base, lr=3e-5),
    "lr1e-5": replace(base, lr=1e-5),
    "lr2e-4 no intensity aug": replace(base, augment=no_aug),
    "lr2e-4 bn-train": replace(base, freeze_batchnorm=False),
    "lr2e-4 frozen encoder": replace(base, freeze_encoder=True),
    "lr3e-5 frozen encoder": replace(base, lr=3e-5, freeze_encoder=True),
    "lr1e-4 sgd-like wd": replace(base, lr=1e-4, weight_decay=1e-2),
    "lr2e-4 dice1": replace(base, dice_weight=1.0),
    "lr2e-4 dice10": replace(base, dice_weight=10.0),
    "lr3e-5 dice10": replace(base, lr=3e-5, dice_weight=10.0),
}
for name, config in recipes.items():
    if which and not any(w == name for w in which):
        continue
    curve.clear()
    t0 = time.perf_counter()
    vals = []

    def keep(event, vals=vals):
        if isinstance(event, Validation):
            vals.append(event.step)

    res = drain(ft.finetune(parent, isbi_images[:k], isbi_masks[:k], None, config), keep)
    # curve[0] is the parent (before); then one entry per validation step
    points = [{"step": 0, **curve[0]}] + [{"step": s, **c} for s, c in zip(vals, curve[1:])]
    results[name] = {"time_s": time.perf_counter() - t0, "steps": res.steps,
                     "best_step": res.best_step, "improved": res.improved,
                     "before": res.before.get("dice"), "after": res.after.get("dice"),
                     "curve": points, "loss_history": res.history[::max(1, len(res.history) // 20)]}
    print(name, json.dumps(points), res.best_step, flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
with open(out, "w") as f:
    json.dump(results, f, indent=1)

"""CPU few-shot, part 5: fine-tuning with an L2-SP pull towards the parent weights.

python bench/fewshot_cpu_l2sp.py DATA PARENT.pt OUT_JSON [STEPS] [LAMBDAS] [LR] [DICE_W]
Same data path as finetune() (PatchSampler on ISBI 00, default augmentation, frozen BN,
AdamW, cosine); loss = Dice + BCE + lambda * sum((w - w_parent)^2). Scores ISBI 06-29.
"""

import glob
import json
import sys

import numpy as np
import tifffile
import torch

from napari_cryoseg.engine.data import AugmentConfig, PatchSampler
from napari_cryoseg.engine.losses import segmentation_loss
from napari_cryoseg.engine.train import lr_factor, predict_scores
from napari_cryoseg.model.checkpoint import load_model

torch.set_num_threads(2)
data, parent_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 100
lambdas = [float(v) for v in (sys.argv[5] if len(sys.argv) > 5 else "0,1,100").split(",")]
lr = float(sys.argv[6]) if len(sys.argv) > 6 else 2e-4
dice_weight = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
read = lambda pattern: [tifffile.imread(f) for f in sorted(glob.glob(pattern))]  # noqa: E731
images = read(f"{data}/isbi2012_em_membranes/images/*.tif")
masks = [(m == 1).astype(np.uint8) for m in read(f"{data}/isbi2012_em_membranes/masks/*.tif")]
test = [(im, m, None) for im, m in zip(images[6:], masks[6:])]
parent = load_model(parent_path)
results = {"parent": parent_path, "steps": steps, "lr": lr, "dice_weight": dice_weight}
for lam in lambdas:
    torch.manual_seed(0)
    sampler = PatchSampler(images[:1], masks[:1], 2, 256, parent.normalization, AugmentConfig(),
                           seed=0)
    net = parent.build("cpu").train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    anchor = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0 if lam else 1e-4)
    curve = []
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor((step - 1) / steps, "cosine", 0.05)
        x, y = sampler.sample(4)
        loss = segmentation_loss(net(x), y, dice_weight=dice_weight)
        if lam:
            loss = loss + lam * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (25, 50, 100, steps):
            net.eval()
            dice = predict_scores(parent.with_weights(net), test, torch.device("cpu")).dice()
            net.train()
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
            curve.append([step, dice])
            print(lam, step, dice, flush=True)
    results[f"lambda{lam:g}"] = curve
    with open(out, "w") as f:
        json.dump(results, f, indent=1)

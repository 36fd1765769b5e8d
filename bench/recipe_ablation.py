"""Fine-tuning recipe ablation at a fixed number of steps (load-independent), in one process.

    python bench/recipe_ablation.py cdeep3m VNC_MITO.pt 1 0 '{"steps": 40}' \\
        --out bench/results/recipe_ablation_cdeep3m_cpu.jsonl
    python bench/recipe_ablation.py cdeep3m VNC_MITO.pt 1 0 \\
        '{"adapt_batchnorm": "never", "steps": 40}'

Fine-tunes the base model on the k corrected sections of a pair (as ``bench/adaptation.py``)
with :class:`~napari_cryoseg.engine.training.finetune_settings.FinetuneConfig` defaults changed by
the JSON overrides (``"augment": null`` = no augmentation; ``"unlabelled": N`` also
re-estimates BatchNorm statistics on N other training sections without their masks), then
scores the result on the pair's evaluation sections as ``cryoseg evaluate`` does (mean
over images of the foreground Dice). One JSON line per run is appended to ``--out``: the
overrides, Dice, steps, wall time, the blend chosen and the held-out scores of every blend.
Fixed steps make runs comparable on a busy machine; wall times are not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from adaptation import DATA, PAIRS  # noqa: E402  (bench/ is the script's folder)

from napari_cryoseg.core.metrics import confusion_counts, scores_from_counts
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.model.checkpoint import load_model


def load_pair(dataset: str, stem: str, value: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and binary mask (``mask == value``) of one section."""
    image = tifffile.imread(DATA / dataset / "images" / f"{stem}.tif")
    mask = tifffile.imread(DATA / dataset / "masks" / f"{stem}.tif")
    return image, (mask == value).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pair", choices=PAIRS)
    parser.add_argument("base", type=Path)
    parser.add_argument("k", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("overrides", nargs="?", default="{}")
    parser.add_argument("--out", default="bench/results/recipe_ablation.jsonl")
    args = parser.parse_args()
    pair = PAIRS[args.pair]
    value = int(pair["classes"])
    overrides = json.loads(args.overrides)
    n_unlabelled = int(overrides.pop("unlabelled", 0))
    if "augment" in overrides:
        overrides["augment"] = (AugmentConfig(**overrides["augment"]) if overrides["augment"]
                                else AugmentConfig.none())
    model = load_model(args.base)
    corrected = [load_pair(pair["target"], s, value) for s in pair["k"][args.k]]
    evaluation = [load_pair(pair["target"], s, value) for s in pair["eval"]]
    others = sorted(p.stem for p in (DATA / pair["target"] / "images").glob("*.tif")
                    if p.stem not in pair["k"][args.k] and p.stem not in pair["eval"])
    unlabelled = [tifffile.imread(DATA / pair["target"] / "images" / f"{s}.tif")
                  for s in others[:n_unlabelled]]
    config = FinetuneConfig(seed=args.seed, device="cpu", **overrides)
    started = time.perf_counter()
    result = drain(finetune(model, [c[0] for c in corrected], [c[1] for c in corrected], None,
                            config, unlabelled=unlabelled))
    wall = time.perf_counter() - started
    per_image = []
    for image, mask in evaluation:
        labels = drain(segment(image, result.model, device="cpu")).labels
        per_image.append(scores_from_counts(*confusion_counts(labels, mask, 1)).dice)
    line = {"pair": args.pair, "k": args.k, "seed": args.seed, "overrides": args.overrides,
            "threads": torch.get_num_threads(), "dice": round(float(np.mean(per_image)), 4),
            "per_image": [round(float(d), 3) for d in per_image], "steps": result.steps,
            "wall_s": round(wall, 1), "blend": result.parent_blend,
            "adapted_batchnorm": result.adapted_batchnorm,
            "held_out_before": round(result.before.get("dice", -1.0), 4),
            "held_out_after": round(result.after.get("dice", -1.0), 4),
            "blend_scores": {str(w): round(d, 4) for w, d in result.blend_scores.items()},
            "message": result.message}
    print(json.dumps(line), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()

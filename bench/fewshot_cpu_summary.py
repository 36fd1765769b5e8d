"""Summarise bench/results/fewshot_cpu/*.json: held-out vs test Dice changes per recipe.

PYTHONPATH=src python bench/fewshot_cpu_summary.py bench/results/fewshot_cpu
"""

import json
import pathlib
import sys

import numpy as np

folder = pathlib.Path(sys.argv[1])
ft = json.loads((folder / "finetune_tiny_m1.json").read_text())
rows, dh, dt = {}, [], []
for name, r in ft.items():
    if not isinstance(r, dict) or "curve" not in r:
        continue
    c = r["curve"]
    h0, t0 = c[0]["holdout_dice"], c[0]["test_dice"]
    kept = next(p for p in c if p["step"] == r["best_step"]) if r["improved"] else c[0]
    rows[name] = {"holdout_gain_at_kept_step": kept["holdout_dice"] - h0,
                  "test_change_at_kept_step": kept["test_dice"] - t0,
                  "kept_step": r["best_step"] if r["improved"] else 0,
                  "test_change_final": c[-1]["test_dice"] - t0,
                  "best_test_any_step": max(p["test_dice"] for p in c[1:]) - t0}
    if "sanity" not in name:
        for p in c[1:]:
            dh.append(p["holdout_dice"] - h0)
            dt.append(p["test_dice"] - t0)
summary = {"parent_test_dice": ft["parent_test_dice"], "recipes": rows,
           "n_points": len(dh),
           "corr_holdout_gain_vs_test_change": float(np.corrcoef(dh, dt)[0, 1]),
           "fraction_points_test_better_than_parent": float(np.mean(np.array(dt) > 0))}
(folder / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))

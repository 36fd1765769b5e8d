"""Scoring a model on held-out images: pooled Dice/IoU, loss, threshold tuning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.metrics import (
    choose_threshold,
    confusion_counts,
    dice_by_threshold,
    scores_from_counts,
)
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` (at most) region of a 2D array."""
    h, w = array.shape[-2:]
    y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return array[..., y : y + size, x : x + size]


def probability_loss(probabilities: np.ndarray, target: np.ndarray) -> float:
    """Mean (binary) cross-entropy of predicted probabilities (K, Y, X) vs class indices."""
    eps = 1e-6
    valid = target >= 0
    if not valid.any():
        return float("nan")
    if probabilities.shape[0] == 1:
        p = np.clip(probabilities[0], eps, 1 - eps)
        nll = -np.where(target == 1, np.log(p), np.log1p(-p))
    else:
        safe = np.where(valid, target, 0)
        picked = np.take_along_axis(probabilities, safe[None].astype(np.int64), axis=0)[0]
        nll = -np.log(np.clip(picked, eps, 1.0))
    return float(nll[valid].mean())


@dataclass
class ScoreAccumulator:
    """Pooled per-class TP/FP/FN counts over several (image, target[, valid]) pairs."""

    n_classes: int
    counts: np.ndarray = field(init=False)
    losses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.n_classes, 3), dtype=np.int64)
        # Predicted pixels per class over the whole area of each item, and scored target
        # pixels per class: with sparse strokes the strokes alone flatter a model that
        # paints a class everywhere between them (engine/training/verdict.py reads these).
        self.area = np.zeros(self.n_classes, dtype=np.int64)
        self.painted = np.zeros(self.n_classes, dtype=np.int64)
        # Per class: scored pixels where the target agrees with a reference prediction
        # (the parent's: pixels the user saw and confirmed), and how many of them the
        # scored model still gives that class. Dice alone lets a model that fixes the
        # corrected pixels pay for it with objects the user confirmed.
        self.confirmed = np.zeros(self.n_classes, dtype=np.int64)
        self.kept = np.zeros(self.n_classes, dtype=np.int64)

    def add(self, labels: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None,
            reference: np.ndarray | None = None) -> None:
        """Count one prediction against its class-index target (``valid``: pixels scored;
        ``reference``: the parent's labels, whose agreement with the target counts as
        confirmed)."""
        if valid is None:
            valid = target >= 0
        else:
            valid = valid & (target >= 0)
        for c in range(self.n_classes):
            self.counts[c] += confusion_counts(labels, target, c, valid)
        if reference is not None:
            confirmed = valid & (np.asarray(reference) == target)
            self.confirmed += np.bincount(target[confirmed].astype(np.int64).ravel(),
                                          minlength=self.n_classes)[:self.n_classes]
            still = confirmed & (np.asarray(labels) == target)
            self.kept += np.bincount(target[still].astype(np.int64).ravel(),
                                     minlength=self.n_classes)[:self.n_classes]
        self.area += np.bincount(np.asarray(labels, dtype=np.int64).ravel().clip(
            0, self.n_classes - 1), minlength=self.n_classes)[:self.n_classes]
        self.painted += np.bincount(target[valid].astype(np.int64).ravel(),
                                    minlength=self.n_classes)[:self.n_classes]

    def dice(self) -> float:
        """Mean foreground Dice of the pooled counts."""
        return float(np.mean([scores_from_counts(*self.counts[c]).dice
                              for c in range(1, self.n_classes)]))

    def metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        """``{"dice/<class>": ..., "iou/<class>": ..., "loss": ...}`` for events and files."""
        out: dict[str, float] = {}
        for c in range(1, self.n_classes):
            scores = scores_from_counts(*self.counts[c])
            out[f"dice/{class_names[c]}"] = float(scores.dice)
            out[f"iou/{class_names[c]}"] = float(scores.iou)
            if scores.precision == scores.precision:  # not NaN: the class was predicted
                out[f"precision/{class_names[c]}"] = float(scores.precision)
        out["dice"] = self.dice()
        if self.area.sum():
            for c in range(self.n_classes):
                out[f"area/{class_names[c]}"] = float(self.area[c] / self.area.sum())
        if self.painted.sum():
            for c in range(self.n_classes):
                out[f"painted/{class_names[c]}"] = float(self.painted[c] / self.painted.sum())
        kept = self.kept_shares()
        for c, share in kept.items():
            out[f"kept/{class_names[c]}"] = share
        if kept:
            out["kept"] = min(kept.values())
        if self.losses:
            out["loss"] = float(np.mean(self.losses))
        return out

    def kept_shares(self, min_pixels: int = 50) -> dict[int, float]:
        """``foreground class -> share of its confirmed pixels still given that class``,
        for classes with at least ``min_pixels`` confirmed pixels."""
        return {c: float(self.kept[c] / self.confirmed[c]) for c in range(1, self.n_classes)
                if self.confirmed[c] >= min_pixels}


def shrinking_classes(
    references: Sequence[np.ndarray],
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    n_classes: int,
) -> list[int]:
    """Foreground classes the corrections take more pixels from than they give.

    ``references`` are the parent's labels of each ``(image, target, valid)`` item. Only
    corrections that shrink a class can teach "less of it" everywhere, and so make a
    model forget the objects of it the user confirmed; corrections that grow a class
    leave the parent's objects of it standing.
    """
    removed = np.zeros(n_classes, np.int64)
    added = np.zeros(n_classes, np.int64)
    for reference, (_, target, valid) in zip(references, items):
        target = np.asarray(target).astype(np.int64)
        scored = target >= 0 if valid is None else (np.asarray(valid, bool) & (target >= 0))
        reference = np.asarray(reference).astype(np.int64)
        changed = scored & (reference != target)
        removed += np.bincount(reference[changed].clip(0, n_classes - 1),
                               minlength=n_classes)[:n_classes]
        added += np.bincount(target[changed].clip(0, n_classes - 1),
                             minlength=n_classes)[:n_classes]
    return [c for c in range(1, n_classes) if removed[c] > added[c]]


def predict_scores(
    model: ModelFile,
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    device: torch.device,
    tiling: TilingConfig | None = None,
    labels_out: list[np.ndarray] | None = None,
    references: Sequence[np.ndarray] | None = None,
) -> ScoreAccumulator:
    """Segment each ``(image, class-index target, valid or None)`` and pool the scores.

    ``labels_out``, when given, receives each item's predicted labels (callers that need
    the prediction for something else need not segment the image again).
    ``references``, one per item (the parent's labels), add the ``kept`` shares: how
    much of what the user confirmed the model still predicts.
    """
    acc = ScoreAccumulator(model.config.n_classes)
    tiling = tiling or TilingConfig()
    for i, (image, target, valid) in enumerate(items):
        prediction = drain(segment(image, model, tiling, device=str(device),
                                   return_probabilities=True))
        target = target.astype(np.int64)
        if valid is not None:
            target = np.where(valid, target, -1)
        acc.add(prediction.labels, target,
                reference=None if references is None else references[i])
        if labels_out is not None:
            labels_out.append(prediction.labels)
        probabilities = prediction.probabilities
        if probabilities.ndim == target.ndim + 1 and target.ndim == 3:
            probabilities = np.moveaxis(probabilities, 1, 0)  # (T, K, Y, X) -> (K, T, Y, X)
        acc.losses.append(probability_loss(probabilities, target))
    return acc


#: Thresholds tried by :func:`tune_threshold` (a narrow band: a handful of validation
#: images cannot justify an extreme cut).
THRESHOLD_CANDIDATES = tuple(round(0.3 + 0.025 * i, 3) for i in range(17))


def tune_threshold(
    model: ModelFile,
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    device: torch.device | str,
    candidates: Sequence[float] = THRESHOLD_CANDIDATES,
) -> tuple[float, dict[str, Any]]:
    """The foreground threshold of a binary ``model`` with the best Dice on ``items``.

    Parameters
    ----------
    model : ModelFile
        A binary model (2 classes).
    items : sequence of (image, class-index target, valid or None)
        Validation data (2D images or series, as for :func:`predict_scores`).
    device : torch.device or str
        Where to run the network (once per item).
    candidates : sequence of float
        Thresholds to try; 0.5 is the default kept unless beaten by 0.002.

    Returns
    -------
    threshold : float
    info : dict
        ``{"threshold", "dice_at_0.5", "dice", "candidates", "scores"}`` for provenance.
    """
    if model.config.n_classes != 2:
        raise InputError("threshold tuning is for binary models (2 classes)")
    probabilities, truths, valid = [], [], []
    for image, target, item_valid in items:
        prediction = drain(segment(image, model, device=str(device),
                                   return_probabilities=True))
        probabilities.append(prediction.probabilities[..., 0, :, :])
        truths.append(np.asarray(target) == 1)
        valid.append(item_valid)
    scores = dice_by_threshold(probabilities, truths, candidates, valid)
    chosen = choose_threshold(candidates, scores)
    at_default = float(scores[list(candidates).index(0.5)]) if 0.5 in candidates else None
    return chosen, {
        "threshold": chosen,
        "dice_at_0.5": at_default,
        "dice": float(scores[list(candidates).index(chosen)]),
        "candidates": [float(c) for c in candidates],
        "scores": [round(float(v), 5) for v in scores],
    }

"""Segmentation metrics per class: recall, precision, Dice, IoU, pixel error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    """Scores of one class on one image (NaN where undefined, e.g. absent class)."""

    recall: float
    precision: float
    dice: float
    iou: float
    support: int  # ground-truth pixels of this class


def confusion_counts(
    prediction: np.ndarray, truth: np.ndarray, label: int, valid: np.ndarray | None = None
) -> tuple[int, int, int]:
    """True-positive, false-positive, false-negative pixel counts for ``label``."""
    pred = prediction == label
    true = truth == label
    if valid is not None:
        pred = pred & valid
        true = true & valid
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(true)) - tp
    return tp, fp, fn


def scores_from_counts(tp: int, fp: int, fn: int) -> ClassScores:
    """Recall, precision, Dice and IoU from pixel counts.

    Both empty (tp = fp = fn = 0) gives Dice = IoU = 1 (a correct "nothing there").
    """
    if tp + fp + fn == 0:
        return ClassScores(1.0, 1.0, 1.0, 1.0, 0)
    recall = tp / (tp + fn) if tp + fn else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    dice = 2 * tp / (2 * tp + fp + fn)
    iou = tp / (tp + fp + fn)
    return ClassScores(recall, precision, dice, iou, tp + fn)


def class_scores(
    prediction: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[int],
    valid: np.ndarray | None = None,
) -> dict[int, ClassScores]:
    """Scores for each label in ``labels`` (shapes must match)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} != truth shape {truth.shape}")
    return {
        int(label): scores_from_counts(*confusion_counts(prediction, truth, label, valid))
        for label in labels
    }


def dice(prediction: np.ndarray, truth: np.ndarray, label: int = 1) -> float:
    """Dice coefficient of one label."""
    return class_scores(prediction, truth, [label])[label].dice


def mean_foreground_dice(prediction: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Mean Dice over labels 1..n_classes-1 (background excluded)."""
    scores = class_scores(prediction, truth, range(1, n_classes))
    return float(np.mean([s.dice for s in scores.values()]))


def pixel_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose label differs from the truth."""
    return float(np.count_nonzero(prediction != truth)) / max(prediction.size, 1)


def dice_by_threshold(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float],
    valid: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Pooled foreground Dice of ``probability > t`` for each threshold ``t``.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        Foreground probabilities, one array per image.
    truths : sequence of numpy.ndarray
        Boolean (or 0/1) ground truth of the same shapes.
    thresholds : sequence of float
        Candidate thresholds.
    valid : sequence of numpy.ndarray or None, optional
        Pixels that count, per image (default: all).

    Returns
    -------
    numpy.ndarray
        Dice per threshold, counts pooled over all images (1.0 where neither the
        prediction nor the truth has any foreground).
    """
    counts = np.zeros((len(thresholds), 3), dtype=np.int64)  # tp, predicted, true
    for i, (prob, truth) in enumerate(zip(probabilities, truths, strict=True)):
        prob = np.asarray(prob)
        truth = np.asarray(truth).astype(bool)
        if prob.shape != truth.shape:
            raise ValueError(f"probabilities {prob.shape} and truth {truth.shape} differ")
        mask = None if valid is None or valid[i] is None else np.asarray(valid[i], bool)
        if mask is not None:
            prob, truth = prob[mask], truth[mask]
        n_true = int(truth.sum())
        fg = prob[truth]
        for k, t in enumerate(thresholds):
            counts[k] += (int((fg > t).sum()), int((prob > t).sum()), n_true)
    denominator = counts[:, 1] + counts[:, 2]
    return np.where(denominator > 0, 2 * counts[:, 0] / np.maximum(denominator, 1), 1.0)


def choose_threshold(
    thresholds: Sequence[float], scores: Sequence[float], default: float = 0.5,
    min_gain: float = 0.002,
) -> float:
    """The best-scoring threshold, or ``default`` unless another beats it by ``min_gain``.

    The margin keeps a small validation set's noise from moving the threshold.
    """
    thresholds = [float(t) for t in thresholds]
    scores = np.asarray(scores, dtype=np.float64)
    best = int(np.argmax(scores))
    if default in thresholds:
        base = scores[thresholds.index(default)]
        if scores[best] < base + min_gain:
            return default
    return thresholds[best]

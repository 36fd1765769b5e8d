"""The pixels the parent was sure of: how many the corrections took, how many a child lost.

Area alone cannot see a child that trades objects: after false positives were erased in
one corner, it may predict 20 % less of a class elsewhere (the way the corrections went)
but lose true objects the parent was sure of, not the doubtful ones the user erased.
Where the parent's top class probability is at least
:data:`~napari_cryoseg.engine.training.change_check.CONFIDENT`, its label is mostly right, so a
child that changes many of those pixels, more than the corrections changed near the
edits, is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SURE_FREE", "lost_sure_share", "near_edits", "sure_changed_by_corrections"]

#: Share of a class's sure pixels a child may change without the corrections asking.
SURE_FREE = 0.15


def near_edits(predicted: np.ndarray, corrected: np.ndarray, valid: np.ndarray | None,
               context_px: int) -> np.ndarray:
    """The pixels the user changed grown by ``context_px``, and the reviewed ones: the
    region the corrections speak for."""
    near = np.asarray(predicted) != np.asarray(corrected)
    if near.any() and context_px > 0:
        near = ndi.maximum_filter(near, size=2 * context_px + 1)
    if valid is not None:
        near = near | np.asarray(valid, bool)
    return near


def sure_changed_by_corrections(
    predicted: Sequence[np.ndarray], corrected: Sequence[np.ndarray],
    sure: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None, n_classes: int,
    context_px: int,
) -> np.ndarray:
    """Per class, the share of the parent's sure pixels near the edits the user changed."""
    total = np.zeros(n_classes, np.float64)
    changed = np.zeros(n_classes, np.float64)
    for i, (pred, corr, s) in enumerate(zip(predicted, corrected, sure)):
        pred, corr = np.asarray(pred), np.asarray(corr)
        near = near_edits(pred, corr, None if valid is None else valid[i], context_px)
        region = near & np.asarray(s, bool)
        classes = pred[region].ravel().astype(np.int64)
        total += np.bincount(classes, minlength=n_classes)[:n_classes]
        moved = pred[region] != corr[region]
        changed += np.bincount(classes[moved.ravel()], minlength=n_classes)[:n_classes]
    return np.where(total > 0, changed / np.maximum(total, 1), 0.0)


def lost_sure_share(
    parent: Sequence[np.ndarray], child: Sequence[np.ndarray],
    sure: Sequence[np.ndarray], masks: Sequence[np.ndarray | None], n_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the parent's sure pixels (within ``masks``) and the share the child
    labels otherwise."""
    total = np.zeros(n_classes, np.float64)
    lost = np.zeros(n_classes, np.float64)
    for p, c, s, m in zip(parent, child, sure, masks):
        region = np.asarray(s, bool)
        if m is not None:
            region = region & m
        classes = np.asarray(p)[region].ravel().astype(np.int64)
        total += np.bincount(classes, minlength=n_classes)[:n_classes]
        moved = (np.asarray(p)[region] != np.asarray(c)[region]).ravel()
        lost += np.bincount(classes[moved], minlength=n_classes)[:n_classes]
    return total, np.where(total > 0, lost / np.maximum(total, 1), 0.0)

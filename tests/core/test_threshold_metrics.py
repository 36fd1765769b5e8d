"""Dice against the foreground threshold, and choosing a threshold with a margin."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.metrics import choose_threshold, dice, dice_by_threshold


def test_dice_by_threshold_matches_direct_dice_pooled_over_images():
    rng = np.random.default_rng(0)
    probs = [rng.random((40, 50)), rng.random((30, 30))]
    truths = [p + rng.normal(0, 0.3, p.shape) > 0.6 for p in probs]
    thresholds = [0.3, 0.5, 0.7]
    scores = dice_by_threshold(probs, truths, thresholds)
    for t, score in zip(thresholds, scores):
        pred = np.concatenate([(p > t).ravel() for p in probs])
        truth = np.concatenate([m.ravel() for m in truths])
        assert score == pytest.approx(dice(pred.astype(np.uint8), truth.astype(np.uint8)))


def test_dice_by_threshold_counts_only_valid_pixels_and_checks_shapes():
    prob = np.array([[0.9, 0.9], [0.1, 0.8]])
    truth = np.array([[1, 0], [0, 1]], bool)
    valid = np.array([[True, False], [True, True]])  # the false positive is not reviewed
    assert dice_by_threshold([prob], [truth], [0.5], [valid])[0] == pytest.approx(1.0)
    assert dice_by_threshold([prob], [truth], [0.5])[0] == pytest.approx(0.8)
    assert dice_by_threshold([np.zeros((2, 2))], [np.zeros((2, 2), bool)], [0.5])[0] == 1.0
    with pytest.raises(ValueError, match="differ"):
        dice_by_threshold([prob], [truth[:1]], [0.5])


def test_choose_threshold_keeps_default_unless_clearly_better():
    thresholds = [0.4, 0.5, 0.6]
    assert choose_threshold(thresholds, [0.801, 0.800, 0.79]) == 0.5  # +0.001: noise
    assert choose_threshold(thresholds, [0.81, 0.800, 0.79]) == 0.4
    assert choose_threshold([0.3, 0.4], [0.7, 0.8]) == 0.4  # no 0.5 among the candidates

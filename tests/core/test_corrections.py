"""Comparing predicted and edited labels: paint, erase, fill, untouched."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cryoseg.core.corrections import (
    ONE_KIND_BAND_PX,
    bounding_boxes,
    changed_mask,
    confirmed_band,
    summarize,
    training_mask,
)


@pytest.fixture
def predicted() -> np.ndarray:
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10:20, 10:20] = 1  # a cell
    labels[40:50, 40:60] = 2  # ice
    return labels


def test_untouched_gives_zero(predicted):
    summary = summarize(predicted, predicted.copy())
    assert summary.changed_pixels == 0
    assert summary.n_objects == 0
    assert summary.added == {}
    assert summary.removed == {}
    assert summary.is_empty
    assert not training_mask(predicted, predicted.copy(), band_px=3).any()


def test_paint_counts_added_and_removed(predicted):
    edited = predicted.copy()
    edited[30:33, 5:9] = 1  # paint 12 px of class 1 on background
    summary = summarize(predicted, edited)
    assert summary.changed_pixels == 12
    assert summary.added == {1: 12}
    assert summary.removed == {0: 12}
    assert summary.n_objects == 1
    assert summary.boxes == [((30, 5), (33, 9))]
    assert "+12 class 1" in summary.describe()


def test_erase_and_fill(predicted):
    edited = predicted.copy()
    edited[10:20, 10:20] = 0  # erase the cell (100 px)
    edited[40:50, 40:60] = 1  # fill the ice region with class 1 (200 px)
    summary = summarize(predicted, edited)
    assert summary.changed_pixels == 300
    assert summary.added == {0: 100, 1: 200}
    assert summary.removed == {1: 100, 2: 200}
    assert summary.n_objects == 2
    assert sorted(summary.boxes) == [((10, 10), (20, 20)), ((40, 40), (50, 60))]
    assert summary.describe(["bg", "cell", "ice"]).startswith("2 regions, 300 px")


def test_diagonal_strokes_are_one_object():
    mask = np.eye(8, dtype=bool)
    assert len(bounding_boxes(mask)) == 1
    assert bounding_boxes(np.zeros((4, 4), bool)) == []


def test_training_mask_band_and_reviewed(predicted):
    edited = predicted.copy()
    edited[30, 30] = 1
    reviewed = np.zeros_like(predicted, dtype=bool)
    reviewed[0:5, 0:5] = True
    valid = training_mask(predicted, edited, reviewed, band_px=2)
    assert valid[30, 30]
    assert valid[32, 30]
    assert valid[30, 28]
    assert not valid[33, 30]
    assert valid[0:5, 0:5].all()
    # 4-connected diamond of radius 2 (13 px) + 25 reviewed
    assert valid.sum() == 13 + 25
    summary = summarize(predicted, edited, reviewed)
    assert summary.reviewed_pixels == 25
    assert summary.training_pixels == 26


def test_3d_band_stays_in_plane():
    predicted = np.zeros((3, 16, 16), dtype=np.uint8)
    edited = predicted.copy()
    edited[1, 8, 8] = 1
    valid = training_mask(predicted, edited, band_px=1)
    assert valid[1].sum() == 5
    assert not valid[0].any()
    assert not valid[2].any()
    assert summarize(predicted, edited).boxes == [((1, 8, 8), (2, 9, 9))]


def test_shape_mismatch_is_reported(predicted):
    with pytest.raises(ValueError, match="same grid"):
        changed_mask(predicted, predicted[:10])


def test_random_edits_match_bruteforce(rng, predicted):
    edited = predicted.copy()
    idx = rng.integers(0, 64, size=(50, 2))
    edited[idx[:, 0], idx[:, 1]] = rng.integers(0, 3, size=50)
    summary = summarize(predicted, edited)
    diff = predicted != edited
    assert summary.changed_pixels == int(diff.sum())
    n = ndi.label(diff, structure=np.ones((3, 3)))[1]
    assert summary.n_objects == n
    assert sum(summary.added.values()) == sum(summary.removed.values()) == diff.sum()


def test_corrections_of_one_kind_widen_the_confirmed_band():
    predicted = np.zeros((128, 128), np.uint8)
    predicted[10:30, 10:30] = 1  # a false positive
    predicted[10:30, 42:70] = 1  # a true object nearby (12 px away) the user leaves alone
    erased = predicted.copy()
    erased[10:30, 10:30] = 0
    assert confirmed_band(predicted, erased, 4) == ONE_KIND_BAND_PX  # only erasures
    painted = predicted.copy()
    painted[100:110, 10:20] = 1
    assert confirmed_band(predicted, painted, 4) == ONE_KIND_BAND_PX  # only additions
    both = erased.copy()
    both[40:60, 100:120] = 1  # 400 px painted against 400 px erased
    assert confirmed_band(predicted, both, 4) == 4
    assert confirmed_band(predicted, predicted.copy(), 4) == 4  # nothing changed
    assert confirmed_band(predicted, erased, 0) == 0  # no band asked for
    # the wide band reaches the object the user saw and kept: it is learnt as an object
    wide = training_mask(predicted, erased, band_px=confirmed_band(predicted, erased, 4))
    narrow = training_mask(predicted, erased, band_px=4)
    assert not (narrow & (erased == 1)).any() and (wide & (erased == 1)).sum() > 50

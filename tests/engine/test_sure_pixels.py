"""The parent's sure pixels: what the corrections changed of them, what a child lost."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.engine.training.change_check import CheckSet, compare_labels
from napari_cryoseg.engine.training.change_check import _flag_lost_sure_pixels as flag
from napari_cryoseg.engine.training.sure_pixels import (
    lost_sure_share,
    sure_changed_by_corrections,
)

NAMES = ["background", "mitochondrion"]


def _objects():
    labels = np.zeros((120, 120), np.uint8)
    labels[10:30, 10:30] = 1   # sure
    labels[60:80, 60:80] = 1   # sure
    labels[90:110, 10:30] = 1  # doubtful (a false positive the user may erase)
    sure = np.ones(labels.shape, bool)
    sure[90:110, 10:30] = False
    return labels, sure


def test_erasing_doubtful_pixels_changes_none_of_the_sure_ones():
    labels, sure = _objects()
    corrected = labels.copy()
    corrected[90:110, 10:30] = 0
    trend = sure_changed_by_corrections([labels], [corrected], [sure], None, 2, 8)
    assert trend[1] == 0.0
    corrected[10:30, 10:20] = 0  # now half of a sure object too
    trend = sure_changed_by_corrections([labels], [corrected], [sure], None, 2, 12)
    assert trend[1] == pytest.approx(200 / 400)


def test_a_child_that_drops_sure_objects_is_asked_about_and_one_that_drops_doubtful_is_not():
    parent, sure = _objects()
    check = CheckSet([np.zeros_like(parent, np.float32)], [None], [parent],
                     np.array([0.0, -0.3]), NAMES, confident=[sure],
                     sure_trend=np.array([0.0, 0.0]))
    drops_doubtful = parent.copy()
    drops_doubtful[90:110, 10:30] = 0
    drops_sure = parent.copy()
    drops_sure[60:80, 60:80] = 0
    total, lost = lost_sure_share([parent], [drops_sure], [sure], [None], 2)
    assert total[1] == 800 and lost[1] == pytest.approx(0.5)
    for child, flagged in ((drops_doubtful, False), (drops_sure, True)):
        # both lose a third of the class area: the same as the corrections' direction
        report = compare_labels([parent], [child], NAMES, check.trend)
        flag(report, check, [child])
        assert report.flagged is flagged, report.reasons
    assert "sure of" in report.reasons[-1]
    # corrections that themselves changed half the sure pixels allow the loss
    check.sure_trend = np.array([0.0, 0.5])
    report = compare_labels([parent], [drops_sure], NAMES, check.trend)
    flag(report, check, [drops_sure])
    assert "sure of" not in " ".join(report.reasons)

"""What the user confirmed: the share of it a fine-tuned model still predicts."""

import numpy as np

from napari_cryoseg.engine.training.scoring import ScoreAccumulator


def test_kept_counts_only_pixels_where_the_target_confirms_the_reference():
    target = np.zeros((10, 10), np.int64)
    target[:, :5] = 1  # the user's truth: the left half is the class
    reference = np.zeros_like(target)
    reference[:, :8] = 1  # the parent: left half right, columns 5-7 false positives
    labels = reference.copy()
    labels[:, :2] = 0  # the child forgets two confirmed columns
    labels[:, 5:8] = 0  # and fixes the false positives
    acc = ScoreAccumulator(2)
    acc.add(labels, target, reference=reference)
    metrics = acc.metrics(["background", "cell"])
    # confirmed class pixels: columns 0-4 (50 px); still predicted: columns 2-4 (30 px)
    assert metrics["kept/cell"] == 0.6
    assert metrics["kept"] == 0.6
    assert metrics["precision/cell"] == 1.0  # all 30 predicted cell pixels are cells
    # the fixed false positives are not confirmed pixels: background stays unreported
    assert "kept/background" not in metrics


def test_no_reference_no_kept_share_and_small_classes_are_not_judged():
    target = np.zeros((10, 10), np.int64)
    target[0, 0] = 1
    acc = ScoreAccumulator(2)
    acc.add(target, target)
    assert "kept" not in acc.metrics(["background", "cell"])
    acc.add(np.zeros_like(target), target, reference=target)
    assert acc.kept_shares() == {}  # one confirmed pixel is too few to judge
    assert acc.kept_shares(min_pixels=1) == {1: 0.0}


def test_ignored_pixels_are_never_confirmed():
    target = np.ones((8, 8), np.int64)
    target[:, 4:] = -1  # not reviewed
    acc = ScoreAccumulator(2)
    acc.add(np.zeros_like(target), target, reference=np.ones_like(target))
    assert acc.confirmed[1] == 32 and acc.kept[1] == 0


def test_only_classes_the_corrections_shrink_are_guarded():
    from napari_cryoseg.engine.training.scoring import shrinking_classes

    reference = np.zeros((10, 10), np.int64)
    reference[:, :6] = 1  # the parent: class 1 on the left
    reference[:, 8:] = 2  # class 2 on the right
    target = reference.copy()
    target[:, 4:6] = 0  # erases 20 px of class 1
    target[0, 1] = 2  # and moves one to class 2
    target[:, 7] = 2  # paints 10 px of class 2
    item = (np.zeros((10, 10)), target, None)
    assert shrinking_classes([reference], [item], 3) == [1]
    # pixels not reviewed say nothing
    valid = np.zeros((10, 10), bool)
    valid[:, 6:] = True
    assert shrinking_classes([reference], [(item[0], target, valid)], 3) == []

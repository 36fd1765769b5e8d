"""Keeping the parent's labels where nobody corrected: the split and the mixed batches."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.engine.training.anchors import (
    MixedSampler,
    anchor_sampler,
    checkerboard,
    split_anchors,
)
from napari_cryoseg.engine.training.augment import AugmentConfig
from napari_cryoseg.engine.training.change_check import CheckSet
from napari_cryoseg.engine.training.sampling import IGNORE_INDEX, PatchSampler


def _check(size=256):
    rng = np.random.default_rng(0)
    other = rng.random((size, size)).astype(np.float32)
    corrected = rng.random((size, size)).astype(np.float32)
    away = np.zeros((size, size), bool)
    away[:, size // 2:] = True  # right half of the corrected image is far from the edits
    labels = [np.full((size, size), 1, np.uint8), np.full((size, size), 1, np.uint8)]
    return CheckSet([other, corrected], [None, away], labels, np.zeros(2),
                    ["background", "mitochondrion"], n_other=1)


def test_checkerboard_splits_the_plane_in_two_disjoint_halves():
    a, b = checkerboard((300, 200), 64, 0), checkerboard((300, 200), 64, 1)
    assert not (a & b).any() and (a | b).all()
    assert a[0, 0] and not a[0, 64] and a[64, 64]


def test_anchors_and_the_check_never_share_a_pixel():
    check = _check()
    whole_away = check.masks[1].copy()
    anchors = split_anchors(check)
    assert len(anchors.images) == 2
    for anchor, kept in zip(anchors.masks, check.masks):
        assert anchor.any() and kept.any()
        assert not (anchor & kept).any()
    # the unreviewed mask still bounds both halves of the corrected image
    assert not (anchors.masks[1] & ~whole_away).any()
    assert not (check.masks[1] & ~whole_away).any()
    assert (anchors.masks[1] | check.masks[1]).sum() == whole_away.sum()
    assert anchors.pixels == sum(int(m.sum()) for m in anchors.masks)


def _main_sampler(size=128, seed=0):
    image = np.random.default_rng(1).random((size, size)).astype(np.float32)
    target = np.zeros((size, size), np.uint8)  # the corrections say "background"
    valid = np.zeros((size, size), bool)
    valid[:32, :32] = True
    return PatchSampler([image], [target], 2, 64, NormalizationConfig(),
                        AugmentConfig(flips=False, rotate90=False), valid_masks=[valid],
                        seed=seed)


def test_batches_hold_the_share_of_parent_labels():
    check = _check()
    anchors = split_anchors(check)
    mixed = anchor_sampler(anchors, _main_sampler(), NormalizationConfig(), 0.25, seed=0)
    assert isinstance(mixed, MixedSampler)
    from_parent = 0
    for _ in range(200):
        _, y = mixed.sample_numpy(4)
        assert y.shape == (4, 64, 64)
        # corrections come first and are never all replaced
        assert (y[0] != 1).all()
        from_parent += sum(int((patch == 1).any()) for patch in y)
        # anchor patches carry the parent's label (1) or are ignored outside the anchors
        for patch in y:
            if (patch == 1).any():
                assert set(np.unique(patch)) <= {1, IGNORE_INDEX}
    assert from_parent / 800 == pytest.approx(0.25, abs=0.05)


def test_no_share_or_no_pixels_means_the_corrections_alone():
    check = _check()
    anchors = split_anchors(check)
    main = _main_sampler()
    assert anchor_sampler(anchors, main, NormalizationConfig(), 0.0, seed=0) is None
    empty = split_anchors(CheckSet([], [], [], np.zeros(2), ["b", "m"]))
    assert anchor_sampler(empty, main, NormalizationConfig(), 0.5, seed=0) is None
    with pytest.raises(ValueError, match="share"):
        MixedSampler(main, main, 1.0)


def test_the_mixed_sampler_is_reproducible_from_its_seed():
    def batches(seed):
        check = _check()
        mixed = anchor_sampler(split_anchors(check), _main_sampler(seed=seed),
                               NormalizationConfig(), 0.5, seed=seed)
        return [mixed.sample_numpy(4)[0] for _ in range(5)]

    for a, b in zip(batches(3), batches(3)):
        np.testing.assert_array_equal(a, b)



def test_only_pixels_the_parent_is_sure_of_become_anchors():
    check = _check()
    unsure = np.ones((256, 256), bool)
    unsure[:64] = False  # the parent hesitates on the top rows
    check.confident = [unsure, np.ones((256, 256), bool)]
    anchors = split_anchors(check)
    assert not anchors.masks[0][:64].any() and anchors.masks[0][64:].any()
    # the check keeps its half wherever the parent is sure or not
    assert check.masks[0][:64].any()


def test_confidence_is_the_top_class_probability(tiny_model):
    from napari_cryoseg.engine.training.change_check import CONFIDENT, labels_and_confidence

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    labels, sure = labels_and_confidence(tiny_model, [image], "cpu")
    assert labels[0].shape == sure[0].shape == (64, 64) and sure[0].dtype == bool
    from napari_cryoseg.engine.events import drain
    from napari_cryoseg.engine.inference.predict import segment

    prob = drain(segment(image, tiny_model, device="cpu", return_probabilities=True)
                 ).probabilities
    top = prob.max(axis=0) if prob.shape[0] > 1 else np.maximum(prob[0], 1 - prob[0])
    np.testing.assert_array_equal(sure[0], top >= CONFIDENT)


def test_foreground_share_centres_anchor_patches_on_the_parents_objects():
    """Mostly-background anchors teach "keep the background" only; with ``foreground``
    a share of the anchor patches is centred on the parent's (sure) objects."""
    size = 512
    image = np.random.default_rng(2).random((size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.uint8)
    labels[100:108, 100:108] = 1  # one small object, 64 of 262 144 pixels
    check = CheckSet([image], [None], [labels], np.zeros(2), ["background", "mito"],
                     n_other=1)
    anchors = split_anchors(check)
    assert anchors.masks[0][100:108, 100:108].all()  # the object is on the anchor colour

    def share_with_object(foreground):
        mixed = anchor_sampler(anchors, _main_sampler(), NormalizationConfig(), 0.5,
                               seed=0, foreground=foreground)
        _, y = mixed.anchors.sample_numpy(200)
        return float(np.mean([(patch == 1).any() for patch in y]))

    assert share_with_object(0.0) < 0.15
    assert share_with_object(0.8) > 0.7

"""Starting from nothing: sparse strokes, live previews, classes added to a trained model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_cryoseg.core.metrics import confusion_counts, scores_from_counts
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import Preview, drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.engine.training.preview import PreviewRequest
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.model.heads import add_classes

FAST = dict(preset="tiny", batch_size=4, patch=64, device="cpu", lr=3e-3, seed=0)


def _scene(seed, size=128, squares=False):
    """Dark background, bright disks (class 1) and, optionally, mid-grey squares (2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    for _ in range(5):
        cy, cx = rng.integers(12, size - 12, 2)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(7, 12)) ** 2] = 1
    if squares:
        for _ in range(3):
            y, x = rng.integers(4, size - 16, 2)
            truth[y:y + 12, x:x + 12] = 2
    image = 50 + 130 * (truth == 1) + 80 * (truth == 2) + rng.normal(0, 25, truth.shape)
    return image.clip(0, 255).astype(np.uint8), truth


def _strokes(truth, seed):
    """Painted strokes as a user makes them: the eroded core of each disk (value 1), a
    thin line traced around the disks a few pixels outside and one background scribble
    (value 2); 0 = not painted. Under 5 % of the pixels."""
    rng = np.random.default_rng(seed)
    strokes = np.zeros_like(truth)
    strokes[ndimage.binary_erosion(truth == 1, iterations=6)] = 1
    disks = truth == 1
    around = ndimage.binary_dilation(disks, iterations=4) & ~ndimage.binary_dilation(
        disks, iterations=3)
    background = ndimage.binary_erosion(truth == 0, iterations=6)
    line = np.zeros_like(background)
    y = int(rng.integers(4, truth.shape[0] - 4))
    line[y:y + 2] = True
    strokes[around | (background & line)] = 2
    return strokes


def _dice(model, images, truths, cls=1):
    counts = np.zeros(3, np.int64)
    for image, truth in zip(images, truths):
        labels = drain(segment(image, model, device="cpu")).labels
        counts += confusion_counts(labels, truth, cls)
    return scores_from_counts(*counts).dice


@pytest.mark.slow
def test_strokes_only_beat_strokes_with_the_rest_counted_as_background():
    images, truths = zip(*[_scene(s) for s in (1, 2)])
    strokes = [_strokes(t, s) for t, s in zip(truths, (1, 2))]
    share = np.mean([np.mean(s > 0) for s in strokes])
    assert share <= 0.05, share  # sparse: at most 5 % of the pixels painted
    mapping = ClassMapping.parse("1", "disk")
    config = TrainConfig(steps=80, val_fraction=0, **FAST)
    sparse = drain(train(list(images), strokes, config, mapping,
                         valid_masks=[s > 0 for s in strokes])).best
    dense = drain(train(list(images), strokes, config, mapping)).best  # unpainted = background
    test_images, test_truths = zip(*[_scene(s) for s in (7, 8, 9)])
    sparse_dice = _dice(sparse, test_images, test_truths)
    dense_dice = _dice(dense, test_images, test_truths)
    assert sparse_dice > 0.8, sparse_dice
    assert sparse_dice > dense_dice + 0.1, (sparse_dice, dense_dice)


def test_sparse_training_holds_out_part_of_the_annotations():
    image, truth = _scene(3)
    strokes = _strokes(truth, 3)
    result = drain(train([image], [strokes], TrainConfig(steps=10, val_fraction=0.25, **FAST),
                         ClassMapping.parse("1", "disk"), valid_masks=[strokes > 0]))
    assert result.validations  # scored on held-out strokes
    assert "annotations held out" in result.best.provenance["training_data"]["val"]
    with pytest.raises(Exception, match="no annotated pixels"):
        drain(train([image], [strokes], TrainConfig(steps=1, **FAST),
                    ClassMapping.parse("1", "disk"), valid_masks=[np.zeros_like(truth, bool)]))


@pytest.mark.slow
def test_live_previews_show_the_weights_being_trained():
    image, truth = _scene(4)
    region = image[16:112, 8:120]
    events = []
    drain(train([image], [truth], TrainConfig(steps=60, val_fraction=0, **FAST),
                ClassMapping.parse("1", "disk"),
                preview=PreviewRequest(region, every_s=1e-6)), events.append)
    previews = [e for e in events if isinstance(e, Preview)]
    # A near-zero interval: one after the first step on any CPU (later ones are held to
    # their share of the time), and the final one: at least two however fast the steps.
    assert len(previews) >= 2 and previews[-1].final and not previews[0].final
    assert all(p.labels.shape == region.shape for p in previews)
    steps = [p.step for p in previews]
    assert steps == sorted(steps) and steps[-1] == 60  # the final weights are shown last
    # Previews of an untrained and a trained network differ (they follow the weights).
    assert not np.array_equal(previews[0].labels, previews[-1].labels)
    with pytest.raises(Exception, match="must be 2D"):
        PreviewRequest(np.zeros((2, 8, 8)))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_adding_a_class_keeps_every_prediction(n_classes):
    model = ModelFile.new(preset("tiny", n_classes=n_classes), seed=1)
    image, _ = _scene(5)
    before = drain(segment(image, model, device="cpu"))
    grown = add_classes(model, ["lamella"])
    after = drain(segment(image, grown, device="cpu", return_probabilities=True))
    assert grown.config.n_classes == n_classes + 1
    assert grown.class_names[-1] == "lamella" and len(grown.class_colors) == n_classes + 1
    assert model.config.n_classes == n_classes  # the input is untouched
    assert np.array_equal(before.labels, after.labels)
    # The new class is never the most probable yet: always below the background.
    assert (after.probabilities[-1] < after.probabilities[0]).all()
    with pytest.raises(Exception, match="already exist"):
        add_classes(grown, ["Lamella"])


@pytest.mark.slow
def test_a_new_class_is_learnt_by_fine_tuning():
    images, truths = zip(*[_scene(s, squares=True) for s in (1, 2, 3, 4)])
    disks_only = [np.where(t == 2, 0, t) for t in truths]
    base = drain(train(list(images), disks_only, TrainConfig(steps=60, val_fraction=0, **FAST),
                       ClassMapping.parse("1", "disk"))).best
    grown = add_classes(base, ["square"])
    result = drain(finetune(grown, list(images), list(truths), None, FinetuneConfig(
        steps=80, batch_size=4, patch=64, device="cpu", lr=3e-3, parent_blend=1.0,
        freeze_batchnorm=False)))
    assert result.improved
    test_images, test_truths = zip(*[_scene(s, squares=True) for s in (8, 9)])
    assert _dice(result.model, test_images, test_truths, cls=2) > 0.6
    assert _dice(result.model, test_images, test_truths, cls=1) > 0.6  # disks still known

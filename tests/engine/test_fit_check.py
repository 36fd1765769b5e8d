"""Cheap signals that a model does not fit an image: intensities, entropy, class
fractions, pixel size (engine, real models)."""

from __future__ import annotations

import numpy as np

from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.fit_check import class_fractions, fit_findings, intensity_stats
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def _blobs(seed=0, size=96):
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(4):
        cy, cx = rng.integers(10, size - 10, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1
    image = (60 + 120 * mask + rng.normal(0, 10, mask.shape)).clip(0, 255).astype(np.uint8)
    return image, mask


def test_training_records_what_new_images_are_compared_with():
    image, mask = _blobs()
    result = drain(train([image], [mask], TrainConfig(preset="tiny", steps=3, batch_size=2,
                                                      patch=48, val_fraction=0,
                                                      device="cpu"),
                         ClassMapping.from_masks([mask]), pixel_size_nm=4.0))
    data = result.best.provenance["training_data"]
    assert data["intensity"] == intensity_stats([image])
    assert set(data["pixel_counts"]) == {"background", "class 1"}
    # the same kind of image fits (pixel size given and equal)
    model = result.best
    assert fit_findings(model, _blobs(1)[0], _blobs(1)[1], None, 4.0) == []
    # random noise of another range does not; neither does a missing pixel size
    noise = np.random.default_rng(0).normal(2000, 800, (96, 96)).astype(np.float32)
    found = fit_findings(model, noise, np.zeros((96, 96), np.uint8), None, None)
    assert any(f.startswith("its intensities") for f in found), found
    assert any("no pixel size" in f and "4 nm/px" in f for f in found), found
    # another pixel size
    found = fit_findings(model, image, mask, None, 16.0)
    assert any("16 nm/px" in f and "0.25x their trained size" in f for f in found), found


def test_class_fractions_far_from_training_and_unsure_predictions():
    model = ModelFile.new(preset("tiny", n_classes=3), seed=0,
                          class_names=["background", "cell", "ice"])
    model.provenance["training_data"] = {
        "pixel_counts": {"background": 700, "cell": 200, "ice": 100}}
    labels = np.zeros((100, 100), np.uint8)
    labels[:55] = 1  # 55 % "cell"
    labels[55:93] = 2  # 38 % "ice"
    np.testing.assert_allclose(class_fractions(labels, 3), [0.07, 0.55, 0.38])
    found = fit_findings(model, np.zeros((100, 100), np.float32), labels)
    assert any("labels 38% of the image 'ice' (its training data had 10%)" in f
               for f in found), found
    assert not any("'cell'" in f for f in found)  # 55 % < 3 x 20 %
    # a model that cannot decide: near-uniform probabilities
    probabilities = np.full((3, 100, 100), 1 / 3, np.float32)
    found = fit_findings(model, np.zeros((100, 100)), np.zeros((100, 100), np.uint8),
                         probabilities)
    assert any("unsure over most of the image" in f for f in found)
    binary = ModelFile.new(preset("tiny"), seed=0)
    sure = np.zeros((1, 50, 50), np.float32)
    assert fit_findings(binary, np.zeros((50, 50)), np.zeros((50, 50), np.uint8), sure) == []

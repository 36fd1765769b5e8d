"""A run that learned nothing is never applied without the user's say: one verdict for
training and fine-tuning, best-step selection only with enough evidence."""

from __future__ import annotations

import numpy as np

from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.scoring import ScoreAccumulator
from napari_cryoseg.engine.training.step_time import min_useful_steps
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.engine.training.verdict import (
    choose_selection,
    held_out_score_text,
    judge,
)
from napari_cryoseg.viewer.words import dock_words

NAMES = ["background", "mito"]


def test_too_few_steps_is_kept_aside_with_a_reason_in_dock_words():
    verdict = judge("train", 6, NAMES, after={"dice": 0.95})
    assert not verdict.apply
    assert verdict.text().startswith("kept aside, not applied: only 6 training steps")
    assert "Time budget" in verdict.text() and "--" not in verdict.text()
    assert judge("train", 600, NAMES, after={"dice": 0.9}).apply
    # a pretrained start needs fewer (the hook for a backbone start)
    need = min_useful_steps("train", pretrained=True)
    assert judge("train", need, NAMES, pretrained=True).apply
    assert not judge("train", need, NAMES).apply


def test_no_held_out_gain_and_collapsed_classes_are_kept_aside():
    assert not judge("train", 600, NAMES, after={"dice": 0.05}).apply
    fine = judge("finetune", 40, NAMES, before={"dice": 0.6}, after={"dice": 0.6})
    assert not fine.apply and "no gain on the held-out pixels" in fine.text()
    assert judge("finetune", 40, NAMES, before={"dice": 0.6}, after={"dice": 0.65}).apply
    # a model calling the whole held-out area one class, with strokes of both there:
    # stroke Dice can look fine (skeleton strokes in the objects), the image is not
    collapsed = {"dice": 0.6, "area/background": 0.02, "area/mito": 0.98,
                 "painted/background": 0.7, "painted/mito": 0.3}
    verdict = judge("train", 600, NAMES, after=collapsed)
    assert not verdict.apply
    assert "calls 98% of the held-out area 'mito'" in verdict.text()
    # background over almost all of an image of small objects is a good model, not a
    # collapse (it kept every such model aside: particles, mitochondria at 8 %)
    small_objects = {"dice": 0.95, "area/background": 0.96, "area/mito": 0.04,
                     "painted/background": 0.7, "painted/mito": 0.3}
    assert judge("train", 600, NAMES, after=small_objects).apply
    vanished = {"dice": 0.5, "area/background": 1.0, "area/mito": 0.0,
                "painted/background": 0.7, "painted/mito": 0.3}
    assert "never predicts 'mito'" in judge("train", 600, NAMES, after=vanished).text()


def test_held_out_scores_report_the_area_each_class_covers():
    acc = ScoreAccumulator(2)
    labels = np.ones((10, 10), np.uint8)  # everything "mito"
    target = np.full((10, 10), -1)
    target[0, :5] = 0
    target[9, :5] = 1
    acc.add(labels, target)
    metrics = acc.metrics(NAMES)
    assert metrics["area/mito"] == 1.0 and metrics["area/background"] == 0.0
    assert metrics["painted/mito"] == 0.5
    assert "calls 100% of the held-out area 'mito'" in judge("train", 600, NAMES,
                                                            after=metrics).text()


def test_best_step_needs_enough_steps_and_checks():
    checks = [{"step": s} for s in (1, 2, 3)]
    assert choose_selection(6, checks) == "last"
    assert choose_selection(600, checks[:2]) == "last"
    assert choose_selection(600, checks) == "best"


def test_a_short_training_run_keeps_its_last_weights_not_an_early_best():
    rng = np.random.default_rng(0)
    mask = np.zeros((96, 96), np.uint8)
    mask[20:50, 20:50] = 1
    image = (80 + 100 * mask + rng.normal(0, 10, mask.shape)).astype(np.float32)
    config = TrainConfig(preset="tiny", steps=12, batch_size=2, patch=48, val_every=2,
                         val_fraction=0.3, device="cpu")
    result = drain(train([image], [mask], config, ClassMapping.from_masks([mask])))
    assert len(result.validations) >= 2  # checks to choose from, but far too few steps
    assert result.best is result.last and result.best_step == result.steps == 12
    assert result.best.provenance["selected"] == "last"
    # the dock reads the warning with its own words
    assert any("Time budget" in dock_words(w) for w in result.warnings)
    assert not any("--" in dock_words(w) for w in result.warnings)



def test_the_held_out_score_says_whole_images_score_lower():
    text = held_out_score_text(0.953, 120)
    assert text.startswith("Dice on held-out strokes 0.953 (step 120)")
    assert "whole images score lower" in text and "labels layer" in text
    assert "--" not in dock_words(text)
    assert held_out_score_text(0.9, 1, "annotations").startswith(
        "Dice on held-out annotations 0.900 (step 1)")

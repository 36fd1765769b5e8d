"""Evaluation: exact scores, the generator, JSON round trip, box plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import Progress, drain
from napari_cryoseg.engine.inference.evaluate import (
    EvaluationReport,
    evaluate,
    plot_boxplots,
    score_image,
)
from napari_cryoseg.engine.inference.predict import segment


def test_perfect_prediction_scores_one():
    truth = np.array([[0, 1, 2], [2, 1, 0]])
    scores = score_image(truth, truth, ["background", "a", "b"])
    assert scores.pixel_error == 0.0
    for s in scores.classes.values():
        assert s["dice"] == s["iou"] == s["recall"] == s["precision"] == 1.0
    assert scores.mean_foreground_dice == 1.0


def test_known_confusion():
    truth = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])
    scores = score_image(pred, truth, ["background", "fg"])
    fg = scores.classes["fg"]
    assert fg["dice"] == pytest.approx(0.5) and fg["iou"] == pytest.approx(1 / 3)
    assert fg["recall"] == pytest.approx(0.5) and fg["precision"] == pytest.approx(0.5)
    assert fg["support"] == 2 and scores.pixel_error == pytest.approx(0.5)
    # A class that is absent and never predicted: recall/precision undefined, Dice 1.
    truth3 = np.array([[0, 0, 1, 1]])
    scores3 = score_image(np.array([[0, 1, 1, 1]]), truth3, ["background", "x", "y"])
    assert scores3.classes["x"]["dice"] == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    assert scores3.classes["y"]["dice"] == 1.0 and scores3.classes["y"]["support"] == 0


def _case(tiny_model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 48), dtype=np.uint8) for _ in range(3)]
    predicted = [drain(segment(im, tiny_model)).labels for im in images]
    masks = [p.copy() for p in predicted]
    masks[1] = 1 - masks[1]  # every pixel wrong
    return images, masks


def test_evaluate_report_json_and_plot(tiny_model, tmp_path):
    images, masks = _case(tiny_model)
    events = []
    report = drain(evaluate(tiny_model, images, masks, ["a", "b", "c"], device="cpu"),
                   events.append)
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages.count("evaluate") == 4 and "segment" in stages
    assert [im.name for im in report.images] == ["a", "b", "c"]
    assert report.images[0].pixel_error == 0.0 and report.images[1].pixel_error == 1.0
    mean = report.mean
    assert mean["pixel_error"] == pytest.approx(1 / 3)
    fg = report.class_names[1]
    assert report.images[1].classes[fg]["dice"] == 0.0
    assert mean["classes"][fg]["dice"] == pytest.approx(2 / 3)
    text = report.to_json(tmp_path / "r.json")
    again = EvaluationReport.from_json(tmp_path / "r.json")
    assert again.to_json() == text
    assert EvaluationReport.from_json(text).mean_foreground_dice == pytest.approx(
        report.mean_foreground_dice)
    assert "NaN" not in text
    png = plot_boxplots(report, tmp_path / "box.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_with_class_mapping_and_bad_masks(tiny_model):
    images, masks = _case(tiny_model)
    raw = [np.where(m == 1, 7, 0).astype(np.uint8) for m in masks]
    report = drain(evaluate(tiny_model, images[:1], raw[:1],
                            class_mapping=ClassMapping.parse("7"), device="cpu"))
    assert report.mean_foreground_dice == 1.0
    with pytest.raises(InputError, match="--classes"):
        drain(evaluate(tiny_model, images[:1], raw[:1], device="cpu"))
    with pytest.raises(InputError, match="foreground classes"):
        drain(evaluate(tiny_model, images[:1], raw[:1], class_mapping=ClassMapping.parse("1,2")))
    assert not math.isnan(report.images[0].pixel_error)

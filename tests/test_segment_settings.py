"""SegmentSettings: the one declaration of segmentation settings, and segment() with a
ready-made Segmenter honouring or refusing device / precision / test-time augmentation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.engine.jobs import BatchItem, segment_many


def _image(seed=0, shape=(64, 64)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_defaults_come_from_the_tiling_config():
    settings = SegmentSettings()
    assert settings.tiling == TilingConfig()
    assert settings.threshold is None and settings.tta == 1 and not settings.probabilities


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tta": 3}, "test-time augmentation 3 must be one of 1, 2, 4, 8"),
    ({"threshold": 1.5}, "threshold 1.5 must be in (0, 1)"),
    ({"threshold": 0.0}, "threshold 0.0 must be in (0, 1)"),
    ({"threshold": float("nan")}, "threshold nan must be in (0, 1)"),
])
def test_bad_settings_one_line(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)) as err:
        SegmentSettings(**kwargs)
    assert "\n" not in str(err.value)


def test_functions_taking_one_setting_refuse_in_the_same_words(tiny_model):
    """segment(threshold=), relabel() and Segmenter(tta=) check the settings' own bounds."""
    from napari_cryoseg.viewer.layers import relabel

    image = _image()
    with pytest.raises(InputError, match=re.escape("threshold 1.0 must be in (0, 1)")):
        drain(segment(image, tiny_model, device="cpu", threshold=1.0))
    with pytest.raises(InputError, match=re.escape("threshold 0 must be in (0, 1)")):
        relabel(np.zeros((1, 8, 8), np.float32), 0, 2)
    with pytest.raises(InputError, match="test-time augmentation 3 must be one of 1, 2, 4, 8"):
        Segmenter(tiny_model, "cpu", tta=3)


def test_settings_drive_segment(tiny_model):
    image = _image()
    settings = SegmentSettings(TilingConfig(32, 0.25, 2), threshold=0.3, tta=2)
    prediction = drain(segment(image, tiny_model, device="cpu", settings=settings,
                               return_probabilities=True))
    assert prediction.info["tta"] == 2 and prediction.info["overlap"] == 0.25
    np.testing.assert_array_equal(prediction.labels,
                                  (prediction.probabilities[0] > 0.3).astype(np.uint8))
    with pytest.raises(InputError, match="both settings and tiling"):
        drain(segment(image, tiny_model, TilingConfig(), settings=settings))


def test_segmenter_options_are_refused_not_ignored(tiny_model):
    segmenter = Segmenter(tiny_model, "cpu", tta=1, mixed_precision=False)
    image = _image()
    with pytest.raises(InputError, match="tta=4 .the segmenter averages 1 copies"):
        drain(segment(image, segmenter, tta=4))
    with pytest.raises(InputError, match="tta=2"):
        drain(segment(image, segmenter, settings=SegmentSettings(tta=2)))
    four = Segmenter(tiny_model, "cpu", tta=4)
    with pytest.raises(InputError, match="tta=1"):  # settings say off: also a conflict
        drain(segment(image, four, settings=SegmentSettings(tta=1)))
    # what the segmenter does is accepted, "auto" included
    assert drain(segment(image, four, tta=4, device="auto")).info["tta"] == 4
    assert drain(segment(image, segmenter, device="cpu", mixed_precision=False)).labels.shape \
        == image.shape


def test_segment_many_reports_each_image_and_goes_on(tiny_model):
    images = [_image(0), np.zeros((1, 64), np.float32), _image(1, (48, 80))]
    events = []
    done = drain(segment_many(images, tiny_model, SegmentSettings(TilingConfig(32)), "cpu"),
                 events.append)
    assert done == 2
    items = [(e.index, e.status) for e in events if isinstance(e, BatchItem)]
    assert items == [(0, "running"), (0, "done"), (1, "running"), (1, "failed"),
                     (2, "running"), (2, "done")]
    failed = next(e for e in events if isinstance(e, BatchItem) and e.status == "failed")
    assert "too small" in failed.result and "\n" not in failed.result

"""TTA uncertainty map and the most-uncertain-tile picker."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import Progress, drain
from napari_cryoseg.engine.inference.uncertainty import (
    TRANSFORMS,
    _forward,
    _inverse,
    most_uncertain_tile,
    tta_uncertainty,
)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transforms_invert(name):
    a = np.arange(3 * 4 * 6).reshape(3, 4, 6)
    k, flip = TRANSFORMS[name]
    np.testing.assert_array_equal(_inverse(_forward(a, k, flip), k, flip), a)


@pytest.mark.parametrize("measure", ["entropy", "disagreement"])
def test_uncertainty_map(tiny_model, rng, measure):
    image = rng.normal(size=(40, 56)).astype(np.float32)
    events = []
    result = drain(tta_uncertainty(image, tiny_model, measure=measure, device="cpu"),
                   events.append)
    assert result.shape == image.shape
    assert result.dtype == np.float32
    assert result.min() >= 0.0
    assert result.max() <= 1.0
    assert result.max() > 0  # an untrained model is not sure everywhere
    assert all(isinstance(e, Progress) for e in events)
    assert events[-1].done == events[-1].total


def test_most_uncertain_tile_skips_excluded():
    u = np.zeros((100, 120), np.float32)
    u[10:30, 80:100] = 1.0
    u[60:70, 0:10] = 0.9
    assert most_uncertain_tile(u, 20) == (10, 80)
    exclude = np.zeros(u.shape, bool)
    exclude[10:30, 80:100] = True
    assert most_uncertain_tile(u, 10, exclude) == (60, 0)
    assert most_uncertain_tile(u, 500) == (0, 0)  # tile larger than the image
    with pytest.raises(InputError):
        tta_uncertainty(u, None, transforms=["identity"]).send(None)

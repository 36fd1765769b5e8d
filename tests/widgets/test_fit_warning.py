"""The dock warns, once per image and model, when a model may not fit an image
(real viewer, bundled model)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.viewer.fit_warnings import fit_warning

from .conftest import job_done, open_dock


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    return viewer, widget


def test_noise_without_pixel_size_is_flagged_once(dock, qtbot):
    viewer, widget = dock
    noise = np.random.default_rng(0).normal(128, 40, (128, 128)).clip(0, 255)
    layer = viewer.add_image(noise.astype(np.uint8), name="noise")
    panel = widget.segment_panel
    with job_done(qtbot, widget, "segment"):
        panel.run()
    text = panel.fit_label.text()
    model = widget.session.model
    assert text.startswith(f"'{model.name}' may not fit 'noise':"), text
    # the bundled model was trained at 50 nm/px; this layer has no pixel size
    assert "the image has no pixel size" in text and "50 nm/px" in text
    assert "set the layer's scale" in text  # what to do
    panel.fit_label.setText("")
    with job_done(qtbot, widget, "segment"):  # the same image and model: said already
        panel.run()
    assert panel.fit_label.text() == ""
    record = widget.session.record_for_image(layer)
    assert fit_warning(widget.session, layer, record) is None

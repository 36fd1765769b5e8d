"""Class names follow the model on every labels layer it writes: re-segmenting a layer
with another model updates its features, colours and hover text (real viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.widgets.job_runner import JobRunner

from .conftest import open_dock

GRID = ["background", "cell", "ice", "grid bar"]
MITO = ["background", "mitochondrion"]


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    return viewer, widget


def _run(qtbot, widget):
    panel = widget.segment_panel
    with qtbot.waitSignal(JobRunner.for_session(widget.session).finished, timeout=60_000):
        panel.run()


def _hover(viewer, layer, value):
    """napari's status text for the first pixel holding ``value``."""
    y, x = np.argwhere(np.asarray(layer.data) == value)[0]
    status = layer.get_status((float(y), float(x)), world=False)
    return status["coordinates"] if isinstance(status, dict) else str(status)


def test_resegmenting_with_another_model_renames_and_recolours(dock, qtbot):
    viewer, widget = dock
    session = widget.session
    image = make_sample(0, SampleConfig(shape=(96, 96)))[0]
    viewer.add_image(image, name="em")
    session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0, class_names=GRID,
                                    class_colors=["#000000", "#1f77b4", "#aec7e8",
                                                  "#ff7f0e"]))
    _run(qtbot, widget)
    layer = viewer.layers["em labels"]
    assert list(layer.features["class"]) == GRID
    mito = ModelFile.new(preset("tiny", n_classes=2), seed=3, class_names=MITO,
                         class_colors=["#000000", "#ff00ff"])
    session.set_model(mito)
    _run(qtbot, widget)
    assert viewer.layers["em labels"] is layer  # the same layer, updated
    assert list(layer.features["class"]) == MITO
    assert list(layer.features["index"]) == [0, 1]
    np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0][:3], [1.0, 0.0, 1.0])
    # the user paints label 1 somewhere: hovering names the new model's class
    data = np.array(layer.data)
    data[0, 0] = 1
    layer.data = data
    assert "mitochondrion" in _hover(viewer, layer, 1)
    assert "cell" not in _hover(viewer, layer, 1)
    assert layer.metadata["cryoseg"]["class_names"] == MITO

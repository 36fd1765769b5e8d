"""CryoSeg dock: batch over several layers (2D + 3D), export without overwriting."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.io.labels import read_labels_class_names, read_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset

from .conftest import job_done, open_dock


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("CRYOSEG_CONFIG_DIR", str(tmp_path / "config"))
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")  # as a user's script opens it
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0))
    return viewer, widget


def sample(shape, seed=0):
    return make_sample(seed, SampleConfig(shape=shape))[0]


def test_batch_three_layers_including_stack(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(sample((96, 128)), name="a", scale=(5.0, 5.0))
    viewer.add_image(sample((160, 64), seed=1), name="b")
    viewer.add_image(np.stack([sample((64, 80), seed=s) for s in range(3)]), name="stack")
    panel = widget.batch_panel
    assert [lyr.name for lyr in panel.checked_layers()] == ["a", "b", "stack"]
    with job_done(qtbot, widget, "batch"):
        panel.run()
    for name, shape in [("a", (96, 128)), ("b", (160, 64)), ("stack", (3, 64, 80))]:
        labels = viewer.layers[f"{name} labels"]
        assert labels.data.shape == shape
        assert tuple(labels.scale) == tuple(viewer.layers[name].scale)
        assert panel.state.status(viewer.layers[name]).startswith("done")
    assert "3 done, 0 failed" in panel.summary.text()
    assert widget.session.busy is None


def test_batch_only_checked_layers(dock, qtbot):
    viewer, widget = dock
    a = viewer.add_image(sample((64, 64)), name="a")
    viewer.add_image(sample((64, 64), seed=1), name="b")
    panel = widget.batch_panel
    panel.set_checked([a])
    with job_done(qtbot, widget, "batch"):
        panel.run()
    assert "a labels" in viewer.layers
    assert "b labels" not in viewer.layers


def test_export_round_trip_never_overwrites(dock, qtbot, tmp_path):
    viewer, widget = dock
    viewer.add_image(sample((96, 96)), name="img", scale=(12.5, 12.5))
    segment = widget.segment_panel
    with job_done(qtbot, widget, "segment"):
        segment.run()
    layer = viewer.layers["img labels"]
    panel = widget.export_panel
    panel.folder.setText(str(tmp_path))
    panel.select("img labels")
    (first,) = panel.export()
    data, px = read_labels_tiff(first)
    np.testing.assert_array_equal(data, layer.data)
    assert px == pytest.approx(12.5)
    assert read_labels_class_names(first) == layer.metadata["cryoseg"]["class_names"]
    original = first.read_bytes()
    layer.data[:] = 0
    (second,) = panel.export()
    assert second != first
    assert second.parent == first.parent
    assert first.read_bytes() == original
    assert not read_labels_tiff(second)[0].any()


def test_export_all_cryoseg_layers_and_bad_folder(dock, qtbot, tmp_path):
    viewer, widget = dock
    viewer.add_image(sample((64, 64)), name="x")
    viewer.add_image(sample((64, 64), seed=1), name="y")
    batch = widget.batch_panel
    with job_done(qtbot, widget, "batch"):
        batch.run()
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="hand drawn")
    panel = widget.export_panel
    panel.folder.setText(str(tmp_path))
    panel.select("All CryoSeg labels layers")
    assert sorted(p.name for p in panel.export()) == ["x_labels.tif", "y_labels.tif"]
    panel.folder.setText(str(tmp_path / "missing"))
    assert panel.export() == []
    assert "does not exist" in panel.status.text()

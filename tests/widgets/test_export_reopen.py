"""Every name Export produces - the never-overwrite ``… (1).tif`` too - reopens as a
Labels layer with its class names and colours (real viewer, real files)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.contributions.activate import activate
from napari_cryoseg.io.labels import read_labels_class_colors
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset

from .conftest import job_done, open_dock, sample

NAMES = ["background", "mito", "er"]
COLORS = ["#000000", "#ff00ff", "#00c0ff"]


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    return viewer, widget


def _hex(layer, value):
    rgba = layer.colormap.map(np.array([value]))[0]
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


def test_second_export_reopens_as_labels_with_colours(dock, qtbot, tmp_path):
    from napari.settings import get_settings

    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=3), seed=0,
                                           class_names=NAMES, class_colors=COLORS))
    viewer.add_image(sample(0, (96, 96))[0], name="img")
    with job_done(qtbot, widget, "segment"):
        widget.segment_panel.run()
    layer = viewer.layers["img labels"]
    layer.name = "mito run"  # a renamed layer still exports to a name the reader claims
    panel = widget.export_panel
    panel.folder.setText(str(tmp_path))
    panel.select("mito run")
    (first,) = panel.export()
    (second,) = panel.export()
    assert first.name == "mito_run_labels.tif"
    assert second.name == "mito_run_labels (1).tif"
    assert read_labels_class_colors(second) == COLORS
    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    try:
        activate()
        for path in (first, second):
            before = len(viewer.layers)
            viewer.window._qt_viewer._qt_open([str(path)], stack=False)  # File > Open
            assert len(viewer.layers) == before + 1
            opened = viewer.layers[-1]
            assert opened._type_string == "labels", path.name
            assert opened.source.reader_plugin == "napari-cryoseg"
            np.testing.assert_array_equal(np.asarray(opened.data), np.asarray(layer.data))
            assert list(opened.features["class"]) == NAMES
            assert [_hex(opened, v) for v in (1, 2)] == COLORS[1:]
    finally:
        plugins.extension2reader = saved
    assert "labels TIFF (class names, colours, pixel size)" in panel.save_hint.text()

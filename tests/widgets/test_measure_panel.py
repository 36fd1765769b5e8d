"""Objects section of the dock: measure, select, remove small (undo), tags -> classes, CSV."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_cryoseg.widgets.measure_panel import TAG_COL

_spec = importlib.util.spec_from_file_location(
    "_measure_data", Path(__file__).parents[1] / "core" / "test_measure.py")
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)
kinds_by_row, two_kinds = _data.kinds_by_row, _data.two_kinds


@pytest.fixture
def dock(make_napari_viewer):
    from napari_cryoseg.widgets.main import CryoSegWidget

    viewer = make_napari_viewer()
    widget = CryoSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CryoSeg")
    return viewer, widget


def test_objects_section(dock, tmp_path):
    from napari_cryoseg.viewer.camera import camera_of

    viewer, widget = dock
    assert "Objects" in widget.sections
    labels, image, kinds, centres = two_kinds(seed=2, n=24, size=300)
    labels[1:3, 1:3] = 1  # a 4-pixel speck
    img = viewer.add_image(image, name="cells")
    lab = viewer.add_labels(labels, name="cells labels", scale=(2.0, 2.0))
    panel = widget.measure_panel
    panel.select_layers(lab, img)
    panel.min_size.setValue(0)
    result = panel.measure()
    assert result is not None and result.n_objects == 25
    assert panel.table.rowCount() == 25
    objects = viewer.layers["cells labels objects"]
    assert objects.data.max() == 25
    assert "circularity" in objects.features.columns

    # Row click selects the object and centres the camera on it (world coordinates).
    panel.select_row(3)
    label = int(result.table["label"][3])
    assert objects.selected_label == label
    cy, cx = result.table["centroid_y"][3] * 2, result.table["centroid_x"][3] * 2
    assert tuple(camera_of(viewer).center)[-2:] == pytest.approx((cy, cx))

    # Remove the speck, then undo on the labels layer.
    panel.min_size.setValue(10)
    assert panel.remove_small() == 1
    assert lab.data[1:3, 1:3].max() == 0 and panel.table.rowCount() == 24
    lab.undo()
    assert lab.data[1:3, 1:3].max() == 1

    # Tags chosen in the table's cells -> classifier -> predictions for every object.
    pytest.importorskip("sklearn")
    state = panel.state
    panel.tags.setText("round, long")
    panel.tags.editingFinished.emit()
    assert state.settings.tags == ("round", "long")
    table = state.result.table
    truth = kinds_by_row(table, kinds, centres)
    for kind in ("round", "long"):
        for row in [i for i, t in enumerate(truth) if t == kind][:4]:
            panel.table.cellWidget(row, TAG_COL).setCurrentText(kind)
    assert sorted(state.tags.values()) == ["long"] * 4 + ["round"] * 4
    assert "8 object(s) tagged" in panel.status.text()
    clf = panel.train_classifier()
    assert clf is not None
    predicted = state.result.extra["predicted class"]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) >= 0.9
    assert panel.table.item(0, 2).text() == predicted[0]
    assert "predicted class" in objects.features.columns

    saved = panel.save_classifier(str(tmp_path / "clf.npz"))
    state.classifier = None
    panel.load_classifier(str(saved))
    assert state.result.extra["predicted class"] == predicted

    first = panel.export_csv(str(tmp_path))
    second = panel.export_csv(str(tmp_path))
    assert first != second and first.exists() and second.exists()  # never overwritten
    header = first.read_text().splitlines()[0]
    assert "predicted class" in header and "tag" in header

"""Faults on the napari side: bad layers, layers deleted or edited while a worker runs.

A real viewer (``make_napari_viewer``, Xvfb) with the CryoSeg dock and tiny models.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.layers import record_for_image, show_prediction
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import Session
from napari_cryoseg.widgets import buttons as buttons_module
from napari_cryoseg.widgets import finetune_panel as finetune_module
from napari_cryoseg.widgets import segment_panel as segment_module
from napari_cryoseg.widgets.main import CryoSegWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages the panels show as napari error/warning notifications."""
    shown: list[str] = []
    for module in (segment_module, finetune_module, buttons_module):
        monkeypatch.setattr(module, "show_error", shown.append, raising=False)
        monkeypatch.setattr(module, "show_warning", shown.append, raising=False)
    return shown


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = CryoSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CryoSeg")
    widget.session.device = "cpu"
    widget.session.set_model(ModelFile.new(preset("tiny"), seed=0), keep_previous=False)
    return viewer, widget


def _layer_state(viewer) -> list[tuple[str, str, tuple[int, ...], int]]:
    return [(layer.name, type(layer).__name__, tuple(np.shape(layer.data)),
             hash(np.asarray(layer.data).tobytes())) for layer in viewer.layers]


def _one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip() and "Traceback" not in text


@pytest.mark.parametrize("kind", ["rgb", "rgba", "4d"])
def test_bad_image_layer_gives_one_line_and_loses_nothing(dock, qtbot, errors, kind):
    viewer, widget = dock
    panel = widget.segment_panel
    rng = np.random.default_rng(0)
    if kind == "4d":
        viewer.add_image(rng.random((2, 3, 32, 32)).astype(np.float32), name="bad")
    else:
        channels = 3 if kind == "rgb" else 4
        viewer.add_image((rng.random((32, 32, channels)) * 255).astype(np.uint8), name="bad",
                         rgb=True)
    viewer.add_labels(np.ones((32, 32), np.uint8), name="my labels")
    before = _layer_state(viewer)
    # The layer is listed greyed with the reason, never offered: Run says so in one line.
    assert panel.image.layer() is None
    assert panel.image.count() == 1 and not panel.image.model().item(0).isEnabled()
    assert panel.image.itemText(0).startswith("bad") and "first" in panel.image.itemText(0)
    assert panel.run() is None
    assert _one_line(panel.status.text()) and "image layer" in panel.status.text()
    # Even if it were chosen (e.g. a plugin changed it under us), the run is refused in
    # one line (a napari notification plus the status), with no worker and no new layer.
    bad = viewer.layers["bad"]
    panel.image.layer = lambda: bad
    try:
        assert panel.run() is None
    finally:
        del panel.image.layer  # back to the combo's own method
    assert panel.job is None and widget.session.busy is None
    assert errors and all(_one_line(m) for m in errors), errors
    assert any(word in errors[-1].lower() for word in ("rgb", "shape", "channel")), errors
    assert _one_line(panel.status.text()) and panel.status.text().startswith("Failed:")
    assert _layer_state(viewer) == before


def test_layer_deleted_while_segmenting(dock, qtbot, errors):
    viewer, widget = dock
    panel = widget.segment_panel
    rng = np.random.default_rng(1)
    keep = viewer.add_image(rng.random((64, 64)).astype(np.float32), name="keep me")
    labels = viewer.add_labels(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 5,
                               name="corrections")
    doomed = viewer.add_image(rng.random((256, 256)).astype(np.float32), name="doomed")
    panel.image.select(doomed)
    panel.tile.value = 64
    before = [(lyr.name, np.asarray(lyr.data).copy()) for lyr in (keep, labels)]
    job = panel.run()
    assert job is not None
    viewer.layers.remove(doomed)  # before the worker can deliver its result
    qtbot.waitUntil(lambda: panel.job is None and panel.run_button.isEnabled(),
                    timeout=TIMEOUT_MS)
    assert widget.session.busy is None
    assert [lyr.name for lyr in viewer.layers] == ["keep me", "corrections"]
    for (name, data) in before:
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert "closed" in panel.status.text(), panel.status.text()  # result discarded
    assert not errors


def test_labels_edited_while_finetuning_keeps_the_edits(make_napari_viewer, qtbot, tmp_path,
                                                        errors):
    viewer = make_napari_viewer()
    session = Session.for_viewer(viewer)
    session.device = "cpu"
    session.set_model(ModelFile.new(preset("tiny"), seed=0), keep_previous=False)
    CorrectionStore.for_session(session, project_dir=tmp_path / "project")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
    panel = widget.finetune_panel
    rng = np.random.default_rng(2)
    image = (rng.random((64, 64)) * 255).astype(np.uint8)
    prediction = drain(segment(image, session.model, device="cpu"))
    image_layer = viewer.add_image(image, name="grid")
    show_prediction(viewer, session, image_layer, prediction)
    record = record_for_image(session, image_layer)
    record.labels_layer.data = (image > 128).astype(record.labels_layer.data.dtype)
    panel.store.mark_reviewed(record)
    panel.steps.value = 3
    with qtbot.waitSignal(widget.runner.finished, timeout=TIMEOUT_MS):
        assert panel.start_finetune() is not None
        # Edit the labels while the worker trains on its snapshot.
        edited = np.array(record.labels_layer.data)
        edited[:16, :16] = 1
        edited[40:50, 40:50] = 0
        record.labels_layer.data = edited
    assert session.busy is None
    np.testing.assert_array_equal(record.labels_layer.data, edited)
    assert any(lyr is record.labels_layer for lyr in viewer.layers)
    assert not [m for m in errors if "fail" in m.lower()], errors

"""CryoSeg dock: segment one layer, re-run + undo, live threshold, cancel, device combo."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cryoseg.core.metrics import mean_foreground_dice
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.inference import predict
from napari_cryoseg.model.bundled import default_model_path
from napari_cryoseg.model.checkpoint import ModelFile, load_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.layers import relabel
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.widgets.job_runner import JobRunner

from .conftest import open_dock


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("CRYOSEG_CONFIG_DIR", str(tmp_path / "config"))
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")  # as a user's script opens it
    return viewer, widget


def wait_done(qtbot, panel, timeout=30_000):
    """Wait for the job runner's ``finished`` signal (the job was started just before;
    its signal is queued from the worker, so it cannot have been delivered yet)."""
    if panel.job is not None:
        with qtbot.waitSignal(JobRunner.for_session(panel.session).finished, timeout=timeout):
            pass
    assert panel.job is None and panel.run_button.isEnabled()


def small_image(seed=0, size=128):
    return make_sample(seed, SampleConfig(shape=(size, size)))


def test_device_combo_lists_cpu(dock):
    _, widget = dock
    items = [widget.model_panel.device.itemText(i)
             for i in range(widget.model_panel.device.count())]
    assert "cpu" in items
    assert items[0] == "auto"
    assert "cpu" in widget.model_panel.device_info.text()


def test_tiling_defaults_are_not_rounded(dock):
    """The spin boxes hold the engine's defaults exactly (0.125, not 0.13)."""
    _, widget = dock
    panel = widget.segment_panel
    assert panel.tiling() == TilingConfig()
    shown = TilingConfig(panel.tile.value, panel.overlap.value, panel.batch.value)
    assert shown == TilingConfig()


def test_sample_segmented_with_default_model(dock, qtbot):
    path = default_model_path()
    if not path.is_file():
        standin = os.environ.get("CRYOSEG_STANDIN_MODEL")
        if not standin:
            pytest.skip(f"bundled default model not trained yet ({path})")
        model = load_model(standin)
    else:
        model = None
    viewer, widget = dock
    if model is not None:
        widget.session.set_model(model)
    viewer.open_sample("napari-cryoseg", "grid_square")
    image, truth = viewer.layers["grid square"], viewer.layers["grid square ground truth"]
    panel = widget.segment_panel
    panel.image.select(image)
    panel.run()
    wait_done(qtbot, panel, timeout=60_000)
    labels = viewer.layers["grid square labels"]
    assert labels.data.shape == image.data.shape
    assert labels.data.dtype == np.uint8
    assert tuple(labels.scale) == tuple(image.scale) == (50.0, 50.0)
    dice = mean_foreground_dice(labels.data, truth.data, 4)
    assert dice >= 0.9, f"mean foreground Dice {dice:.3f}"


def test_rerun_updates_same_layer_and_undo(dock, qtbot):
    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0))
    image = viewer.add_image(small_image()[0], name="img", scale=(2.0, 2.0))
    panel = widget.segment_panel
    panel.run()
    wait_done(qtbot, panel)
    layer = viewer.layers["img labels"]
    assert panel.status.text().startswith("Added 'img labels'")
    first = layer.data.copy()
    assert tuple(layer.scale) == (2.0, 2.0)
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=7))
    panel.run()
    wait_done(qtbot, panel)
    assert len(viewer.layers) == 2
    assert viewer.layers["img labels"] is layer
    assert not np.array_equal(layer.data, first)
    assert panel.status.text().startswith("Updated 'img labels'")
    assert widget.session.record_for(layer).image_layer is image
    layer.undo()
    np.testing.assert_array_equal(layer.data, first)


def test_test_time_augmentation_option(dock, qtbot):
    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny"), seed=0))
    viewer.add_image(small_image()[0], name="img")
    panel = widget.segment_panel
    assert panel.tta.value == 1  # off by default
    panel.tta.value = 4
    panel.run()
    wait_done(qtbot, panel)
    assert "with 4x test-time augmentation" in panel.status.text()
    with_tta = viewer.layers["img labels"].data.copy()
    panel.tta.value = 1
    panel.run()
    wait_done(qtbot, panel)
    assert "test-time" not in panel.status.text()
    assert not np.array_equal(viewer.layers["img labels"].data, with_tta)


def test_threshold_relabels_without_network(dock, qtbot, monkeypatch):
    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny"), seed=0))  # binary
    panel = widget.segment_panel
    assert panel.threshold.native.isVisibleTo(widget)
    viewer.add_image(small_image()[0], name="img")
    panel.run()
    wait_done(qtbot, panel)
    layer = viewer.layers["img labels"]
    record = widget.session.record_for(layer)
    started: list = []
    widget.runner.started.connect(started.append)
    relabels: list[int] = []
    panel.relabelled.connect(relabels.append)

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not run for a threshold change")

    monkeypatch.setattr(predict.Segmenter, "probabilities", no_network)
    threshold = float(np.quantile(record.probabilities, 0.3))
    panel.threshold.value = round(threshold, 2)
    qtbot.waitUntil(lambda: len(relabels) == 1, timeout=5_000)
    assert started == []  # no job (no worker) for a threshold change
    expected = relabel(record.probabilities, round(threshold, 2), 2)
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.data.any()


def test_threshold_follows_model_and_keeps_corrections(dock, qtbot):
    viewer, widget = dock
    model = ModelFile.new(preset("tiny"), seed=0)
    model.threshold = 0.375  # as tuned by training on a validation block
    panel = widget.segment_panel
    relabels: list[int] = []
    panel.relabelled.connect(relabels.append)
    widget.session.set_model(model)
    assert panel.threshold.value == pytest.approx(0.375)
    viewer.add_image(small_image()[0], name="img")
    panel.run()
    wait_done(qtbot, panel)
    layer = viewer.layers["img labels"]
    record = widget.session.record_for(layer)
    np.testing.assert_array_equal(layer.data, relabel(record.probabilities, 0.375, 2))
    assert relabels == []  # loading the model re-labelled nothing
    # The user flips a square of labels (foreground <-> background), then moves the
    # threshold to 0.99.
    painted = np.zeros(layer.data.shape, bool)
    painted[10:30, 10:30] = True
    flipped = (1 - layer.data[painted]).astype(layer.data.dtype)
    layer.data_setitem(np.nonzero(painted), flipped)
    reviewed = np.zeros(layer.data.shape, bool)  # marked "correct as shown"
    reviewed[60:80, 60:80] = True
    record.reviewed = reviewed
    shown = layer.data[reviewed].copy()
    panel.threshold.value = 0.99
    qtbot.waitUntil(lambda: len(relabels) == 1, timeout=5_000)
    new = relabel(record.probabilities, 0.99, 2)
    assert not np.array_equal(new[reviewed], shown)  # 0.99 would have changed them
    np.testing.assert_array_equal(layer.data[painted], flipped)  # the correction survives
    np.testing.assert_array_equal(layer.data[reviewed], shown)  # and so do reviewed pixels
    rest = ~(painted | reviewed)
    np.testing.assert_array_equal(layer.data[rest], new[rest])
    np.testing.assert_array_equal(record.predicted[rest], new[rest])
    # the painted square is still recorded as a correction after the re-threshold
    store = CorrectionStore.for_session(widget.session)
    store.mark_dirty(layer)
    assert store.summary(record).changed_pixels >= int(painted.sum())


def test_multiclass_model_hides_threshold(dock):
    _, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4)))
    assert not widget.segment_panel.threshold.native.isVisibleTo(widget)


def test_cancel_leaves_existing_layers(dock, qtbot):
    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0))
    panel = widget.segment_panel
    small = viewer.add_image(small_image()[0], name="small")
    panel.image.select(small)
    panel.run()
    wait_done(qtbot, panel)
    before = viewer.layers["small labels"].data.copy()
    big = viewer.add_image(np.random.default_rng(0).random((1024, 1024), np.float32), name="big")
    panel.image.select(big)
    panel.tile.value = 64
    panel.batch.value = 1
    panel.run()
    qtbot.waitUntil(lambda: "tiles" in panel.status.text(), timeout=10_000)
    panel.cancel()
    wait_done(qtbot, panel)
    assert [lyr.name for lyr in viewer.layers] == ["small", "small labels", "big"]
    np.testing.assert_array_equal(viewer.layers["small labels"].data, before)
    assert widget.session.busy is None
    assert "Cancelled" in panel.status.text()


def test_worker_error_becomes_status_and_frees_session(dock, qtbot):
    viewer, widget = dock
    widget.session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0))
    viewer.add_image(np.zeros((1, 64), np.float32), name="line")
    panel = widget.segment_panel
    panel.run()
    wait_done(qtbot, panel)
    assert panel.status.text().startswith("Failed: image of shape (1, 64) is too small")
    assert widget.session.busy is None
    assert [lyr.name for lyr in viewer.layers] == ["line"]

"""The Correct & fine-tune panel in a real napari viewer (Xvfb), with tiny models."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from napari_cryoseg.core.metrics import dice
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.layers import record_for_image, show_prediction
from napari_cryoseg.viewer.review import CorrectionStore, camera_of
from napari_cryoseg.viewer.session import Session
from napari_cryoseg.widgets.finetune_panel import FinetunePanel

SHAPE = (160, 160)
TIMEOUT_MS = 90_000


def _sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    image, labels = make_sample(seed, SampleConfig(shape=SHAPE, n_cells=30, n_clusters=4))
    return image, (labels == 1).astype(np.uint8)  # binary: cell vs rest


def _segment(viewer, session, image, name):
    prediction = drain(segment(image, session.model, device="cpu"))
    image_layer = viewer.add_image(image, name=name)
    show_prediction(viewer, session, image_layer, prediction)
    return record_for_image(session, image_layer)


def _held_out_dice(model, image, truth) -> float:
    return dice(drain(segment(image, model, device="cpu")).labels, truth)


def _weights_equal(a: ModelFile, b: ModelFile) -> bool:
    return a.state_dict.keys() == b.state_dict.keys() and all(
        torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


@pytest.fixture
def setup(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    session = Session.for_viewer(viewer)
    session.device = "cpu"
    session.set_model(ModelFile.new(preset("tiny"), seed=0), keep_previous=False)
    CorrectionStore.for_session(session, project_dir=tmp_path / "project")
    panel = FinetunePanel(viewer, session)
    viewer.window.add_dock_widget(panel, name="Correct & fine-tune")
    qtbot.addWidget(panel)
    return viewer, session, panel


def _correct(record, truth):
    record.labels_layer.data = truth.astype(record.labels_layer.data.dtype)


def _wait_idle(qtbot, panel, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: panel.worker is None and panel.aux_worker is None, timeout=timeout)


def test_finetune_swaps_model_and_improves_held_out_dice(setup, qtbot):
    viewer, session, panel = setup
    image_a, truth_a = _sample(1)
    image_b, truth_b = _sample(2)  # held out: never shown to the panel
    image_c, _ = _sample(3)
    old_model = session.model
    rec_a = _segment(viewer, session, image_a, "train")
    rec_c = _segment(viewer, session, image_c, "other")
    old_pred_c = rec_c.predicted.copy()
    _correct(rec_a, truth_a)
    panel.store.mark_reviewed(rec_a)  # the whole corrected image is right
    panel.refresh_counts()
    assert "train labels" in panel.counts_label.text()
    before = _held_out_dice(old_model, image_b, truth_b)

    panel.budget_spin.setValue(20)
    assert panel.start_finetune() is not None
    assert session.busy == "finetune"
    _wait_idle(qtbot, panel)

    assert session.busy is None
    assert session.model is not old_model
    assert not _weights_equal(session.model, old_model)  # the swap changed the weights
    assert session.previous_models[-1] is old_model
    assert len(panel.plot.loss) > 5
    after = _held_out_dice(session.model, image_b, truth_b)
    print(f"\nheld-out Dice (cell) before {before:.3f} after {after:.3f}; "
          f"panel: {panel.metrics_label.text()}")
    assert after > before + 0.1
    assert "held-out Dice" in panel.metrics_label.text() or "model updated" in \
        panel.metrics_label.text()
    # the uncorrected layer was re-segmented with the new model; the corrected one kept
    rec_c_new = record_for_image(session, rec_c.image_layer)
    assert not np.array_equal(rec_c_new.predicted, old_pred_c)
    np.testing.assert_array_equal(rec_a.labels_layer.data, truth_a)


def test_cancel_leaves_model_bit_identical(setup, qtbot, tmp_path):
    viewer, session, panel = setup
    path = save_model(session.model, tmp_path / "start.pt")
    file_bytes = path.read_bytes()
    session.set_model(load_model(path), keep_previous=False)
    model = session.model
    reference = {k: v.clone() for k, v in model.state_dict.items()}
    image, truth = _sample(1)
    record = _segment(viewer, session, image, "img")
    _correct(record, truth)

    session.busy = "segment"  # a segmentation is running: refused
    assert panel.start_finetune() is None
    session.busy = None

    panel.budget_spin.setValue(60)
    panel.start_finetune()
    qtbot.waitUntil(lambda: len(panel.plot.loss) >= 3, timeout=TIMEOUT_MS)
    panel.cancel()
    _wait_idle(qtbot, panel)
    assert session.model is model
    assert session.previous_models == []
    assert all(torch.equal(model.state_dict[k], reference[k]) for k in reference)
    assert model.state_dict.keys() == reference.keys()
    assert path.read_bytes() == file_bytes
    assert "cancelled" in panel.status_label.text()
    assert session.busy is None
    assert panel.finetune_btn.isEnabled()


def test_revert_restores_previous_model_and_save_never_overwrites(setup, qtbot, tmp_path):
    viewer, session, panel = setup
    old_model = session.model
    image, truth = _sample(1)
    record = _segment(viewer, session, image, "img")
    _correct(record, truth)
    panel.budget_spin.setValue(10)
    panel.start_finetune()
    _wait_idle(qtbot, panel)
    new_model = session.model
    assert new_model is not old_model
    assert panel.revert_btn.isEnabled()

    out = tmp_path / "finetuned.pt"
    assert panel.save_model_to(out) == out
    saved = load_model(out)
    assert _weights_equal(saved, new_model)
    assert saved.provenance["corrections"]["images"] == ["img"]
    assert saved.provenance["parent_name"] == old_model.name
    first = out.read_bytes()
    assert panel.save_model_to(out) is None  # exists: refused, not overwritten
    assert out.read_bytes() == first

    panel.revert_btn.click()
    _wait_idle(qtbot, panel)
    assert session.model is old_model
    assert not panel.revert_btn.isEnabled()


def test_heartbeat_stays_smooth_during_finetune(setup, qtbot):
    from qtpy.QtCore import QTimer

    viewer, session, panel = setup
    image, truth = _sample(1)
    record = _segment(viewer, session, image, "img")
    _correct(record, truth)
    panel.budget_spin.setValue(8)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    started = time.perf_counter()
    panel.start_finetune()  # warms torch up on the main thread first
    _wait_idle(qtbot, panel)
    timer.stop()
    times = [t for t in ticks if t >= started + 0.5]
    gaps_ms = np.diff(times) * 1000
    assert len(gaps_ms) > 100
    assert len(panel.plot.loss) > 5
    median = statistics.median(gaps_ms)
    p95 = float(np.percentile(gaps_ms, 95))
    print(f"\nheartbeat during fine-tune: {len(gaps_ms)} gaps, median {median:.1f} ms, "
          f"p95 {p95:.1f} ms, max {gaps_ms.max():.1f} ms; {len(panel.plot.loss)} steps")
    assert median <= 25
    assert p95 <= 50


def test_autosave_and_restore_through_panel(setup, qtbot, make_napari_viewer, tmp_path):
    viewer, session, panel = setup
    folder = tmp_path / "project"
    image, truth = _sample(4)
    record = _segment(viewer, session, image, "grid 4")
    _correct(record, truth)
    viewer.layers.selection.active = record.labels_layer
    viewer.reset_view()
    assert panel.mark_view_reviewed() > 0
    qtbot.waitUntil(lambda: (folder / "project.json").exists()
                    and not panel.store.has_unsaved, timeout=10_000)  # debounced autosave
    assert "saved in" in panel.project_label.text()

    viewer2 = make_napari_viewer()
    panel2 = FinetunePanel(viewer2, Session.for_viewer(viewer2))
    qtbot.addWidget(panel2)
    (restored,) = panel2.restore_project(folder)
    np.testing.assert_array_equal(restored.labels_layer.data, truth)
    np.testing.assert_array_equal(restored.image_layer.data, image)
    np.testing.assert_array_equal(restored.predicted, record.predicted)
    np.testing.assert_array_equal(restored.reviewed, record.reviewed)
    assert "grid 4 labels" in panel2.counts_label.text()


def test_uncertainty_layer_and_go_to_tile(setup, qtbot):
    viewer, session, panel = setup
    image, _ = _sample(5)
    record = _segment(viewer, session, image, "u")
    viewer.layers.selection.active = record.labels_layer
    panel.compute_uncertainty()
    _wait_idle(qtbot, panel)
    layer = viewer.layers["u uncertainty"]
    assert layer.data.shape == image.shape
    assert layer.data.dtype == np.float32
    y, x = panel.go_to_most_uncertain_tile(tile=64)
    center = camera_of(viewer).center[-2:]
    assert abs(center[0] - (y + 31.5)) < 1
    assert abs(center[1] - (x + 31.5)) < 1


def test_engine_runtime_error_is_reported_and_frees_the_panel(setup, qtbot, monkeypatch):
    import napari_cryoseg.engine.finetune as engine_finetune

    viewer, session, panel = setup
    model = session.model
    image, truth = _sample(1)
    _correct(_segment(viewer, session, image, "img"), truth)

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("simulated torch failure")

    monkeypatch.setattr(engine_finetune, "finetune", broken)
    panel.start_finetune()
    _wait_idle(qtbot, panel, timeout=10_000)  # superqt alone would never emit finished
    assert "simulated torch failure" in panel.status_label.text()
    assert session.busy is None
    assert session.model is model

"""Fine-tune, revert, save, review marks and uncertainty in the dock (real viewer, Xvfb).

Tiny models trained for real; the dock is opened the scripted way
(``add_plugin_dock_widget``); tests wait on the job runner's ``finished`` signal.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from napari_cryoseg.core.metrics import dice
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.camera import camera_of
from napari_cryoseg.viewer.layers import record_for_image, show_prediction
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.widgets.model_panel import read_recent

from .conftest import binary_sample, job_done, open_dock


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
def setup(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    session = widget.session
    session.device = "cpu"
    session.set_model(ModelFile.new(preset("tiny"), seed=0), keep_previous=False)
    # The parent is untrained: its BatchNorm statistics are those of initialisation, and
    # keeping them fixed (the default, right for trained parents) stops a few dozen steps
    # from learning anything (held-out Dice 0.004 -> 0.004 after 50 steps; 0.66 after 40
    # with them free; CPU, this test's images).
    session.settings.set("finetune.freeze_batchnorm", False)
    CorrectionStore.for_session(session).project_dir = tmp_path / "project"
    return viewer, session, widget


def _correct(record, truth):
    record.labels_layer.data = truth.astype(record.labels_layer.data.dtype)


@pytest.mark.slow
def test_finetune_swaps_model_and_improves_held_out_dice(setup, qtbot):
    viewer, session, widget = setup
    panel = widget.finetune_panel
    image_a, truth_a = binary_sample(1)
    image_b, truth_b = binary_sample(2)  # held out: never shown to the panel
    image_c, _ = binary_sample(3)
    old_model = session.model
    rec_a = _segment(viewer, session, image_a, "train")
    rec_c = _segment(viewer, session, image_c, "other")
    old_pred_c = rec_c.predicted.copy()
    _correct(rec_a, truth_a)
    widget.review_panel.store.mark_reviewed(rec_a)  # the whole corrected image is right
    widget.review_panel.refresh_counts()
    assert "train labels" in widget.review_panel.counts_label.text()
    before = _held_out_dice(old_model, image_b, truth_b)

    # a step count, not a time budget: the gain must not depend on the machine's load
    panel.budget.value = 0
    panel.steps.value = 40
    assert session.settings.finetune.time_budget_s is None
    assert session.settings.finetune.steps == 40
    with job_done(qtbot, widget, "resegment", timeout=240_000):  # fine-tune, re-segment
        assert panel.start_finetune() is not None
        assert session.busy == "finetune"

    assert session.busy is None
    assert session.model is not old_model
    assert not _weights_equal(session.model, old_model)  # the swap changed the weights
    assert session.previous_models[-1] is old_model
    assert len(panel.plot.loss) > 5
    after = _held_out_dice(session.model, image_b, truth_b)
    print(f"\nheld-out Dice (cell) before {before:.3f} after {after:.3f}; "
          f"panel: {panel.metrics_label.text()}")
    assert after > before + 0.1
    assert "held-out Dice" in panel.metrics_label.text()
    # the uncorrected layer was re-segmented with the new model; the corrected one kept
    rec_c_new = record_for_image(session, rec_c.image_layer)
    assert not np.array_equal(rec_c_new.predicted, old_pred_c)
    np.testing.assert_array_equal(rec_a.labels_layer.data, truth_a)
    # the Model section now shows where the model came from, with its held-out Dice
    summary = widget.model_panel.summary.text()
    assert f"fine-tuned from {old_model.name}" in summary and "held-out Dice" in summary


@pytest.mark.slow
def test_cancel_leaves_model_bit_identical(setup, qtbot, tmp_path):
    viewer, session, widget = setup
    panel = widget.finetune_panel
    path = save_model(session.model, tmp_path / "start.pt")
    file_bytes = path.read_bytes()
    session.set_model(load_model(path), keep_previous=False)
    model = session.model
    reference = {k: v.clone() for k, v in model.state_dict.items()}
    image, truth = binary_sample(1)
    _correct(_segment(viewer, session, image, "img"), truth)

    session.busy = "segment"  # a segmentation is running: refused
    assert panel.start_finetune() is None
    session.busy = None

    panel.budget.value = 60
    with job_done(qtbot, widget, "finetune") as blocker:
        panel.start_finetune()
        qtbot.waitUntil(lambda: len(panel.plot.loss) >= 3, timeout=60_000)
        panel.cancel_btn.click()
    assert blocker.args[0].cancelled
    assert session.model is model
    assert session.previous_models == []
    assert all(torch.equal(model.state_dict[k], reference[k]) for k in reference)
    assert path.read_bytes() == file_bytes
    assert "cancelled" in panel.status_label.text()
    assert session.busy is None
    assert panel.finetune_btn.isEnabled()


@pytest.mark.slow
def test_revert_save_recent_and_metrics_line(setup, qtbot, tmp_path):
    viewer, session, widget = setup
    panel = widget.finetune_panel
    old_model = session.model
    image, truth = binary_sample(1)
    _correct(_segment(viewer, session, image, "img"), truth)
    panel.budget.value = 10
    with job_done(qtbot, widget, "finetune"):  # the only layer is corrected: no re-segment
        panel.finetune_btn.click()
    new_model = session.model
    assert new_model is not old_model
    assert panel.revert_btn.isEnabled()
    # where the time went: training steps and the held-out checks
    assert "s training (" in panel.metrics_label.text()
    assert "scoring held-out pixels" in panel.metrics_label.text()
    # named after its parent, the round and the time, not "unsaved model"
    assert new_model.name.startswith(f"{old_model.name} fine-tune 1 ("), new_model.name

    out = tmp_path / "finetuned.pt"
    assert panel.save_model_to(out) == out
    saved = load_model(out)
    assert _weights_equal(saved, new_model)
    assert saved.provenance["corrections"]["images"] == ["img"]
    assert saved.provenance["parent_name"] == old_model.name
    # a saved model is offered under Recent
    assert str(out.resolve()) in read_recent()
    recent = widget.model_panel.recent
    assert str(out.resolve()) in [recent.itemData(i) for i in range(recent.count())]
    first = out.read_bytes()
    assert panel.save_model_to(out) is None  # exists: refused, not overwritten
    assert out.read_bytes() == first

    panel.revert_btn.click()
    assert session.model is old_model
    assert panel.metrics_label.text() == f"reverted to {old_model.name}"
    assert not panel.revert_btn.isEnabled()
    # loading another model: the metrics line no longer talks about the revert
    assert widget.model_panel.open_path(out)
    assert "reverted" not in panel.metrics_label.text()
    assert "finetuned" in panel.metrics_label.text()


@pytest.mark.slow
def test_heartbeat_stays_smooth_during_finetune(setup, qtbot):
    """The main thread keeps ticking every ~10 ms while a fine-tune runs in its worker.

    The run has a fixed 3 s time budget (no step limit), so the sampled window is as long
    on any CPU: a faster machine makes more steps, not fewer ticks. Only the gaps between
    ticks are asserted (median and 95th percentile, relative to the timer's 10 ms), never
    a count of ticks or steps.
    """
    from qtpy.QtCore import QTimer

    viewer, session, widget = setup
    panel = widget.finetune_panel
    image, truth = binary_sample(1)
    _correct(_segment(viewer, session, image, "img"), truth)
    panel.budget.value = 3
    panel.steps.value = 0  # no step limit: the budget ends the run
    panel.resegment_choice.value = "none"
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    started = time.perf_counter()
    with job_done(qtbot, widget, "finetune"):
        panel.finetune_btn.click()  # torch warm-up runs in the worker, not here
        click_s = time.perf_counter() - started
    timer.stop()
    first_tick_s = ticks[0] - started if ticks else float("inf")
    gaps_ms = np.diff([t for t in ticks if t >= started + 0.5]) * 1000
    # >= 3 s of run after the first 0.5 s: fewer than 20 gaps means a blocked main thread
    assert len(gaps_ms) >= 20, len(gaps_ms)
    assert len(panel.plot.loss) >= 1
    median = statistics.median(gaps_ms)
    p95 = float(np.percentile(gaps_ms, 95))
    late = [t for t in ticks if t >= started + 0.5]
    # the result, the model swap and the preview's removal happen in the last second
    end_gap_ms = max(np.diff([t for t in late if t >= late[-1] - 1.0]) * 1000, default=0.0)
    worst = int(np.argmax(gaps_ms))
    print(f"\nheartbeat during fine-tune: {len(gaps_ms)} gaps, median {median:.1f} ms, "
          f"p95 {p95:.1f} ms, max {gaps_ms.max():.1f} ms ({late[-1] - late[worst + 1]:.2f} s "
          f"before the end); the click took {click_s * 1000:.0f} ms, first tick "
          f"{first_tick_s * 1000:.0f} ms after it; "
          f"{len(panel.plot.loss)} steps; torch threads {torch.get_num_threads()}; "
          f"largest gap of the last second (result, swap) {end_gap_ms:.0f} ms")
    assert click_s < 0.5  # the click returns at once
    # median: the timer mostly fires on time; p95 within ten intervals: no step, event or
    # result handling holds the main thread (a shared 2-core machine at load 7-8 gave
    # p95 48-54 ms; training on the main thread gives gaps of a whole step, >= 100 ms)
    assert median <= 25
    assert p95 <= 100


def test_autosave_only_corrected_and_restore(setup, qtbot, make_napari_viewer, tmp_path):
    viewer, session, widget = setup
    review = widget.review_panel
    folder = tmp_path / "project"
    image, truth = binary_sample(4)
    record = _segment(viewer, session, image, "grid 4")
    _segment(viewer, session, binary_sample(5)[0], "untouched")
    _correct(record, truth)
    viewer.layers.selection.active = record.labels_layer
    viewer.reset_view()
    assert review.mark_view_btn.isEnabled()
    review.mark_view_btn.click()
    assert record.reviewed is not None and record.reviewed.any()
    qtbot.waitUntil(lambda: (folder / "project.json").exists()
                    and not review.store.has_unsaved, timeout=10_000)  # debounced autosave
    assert "saved in" in review.project_label.text()
    # only the corrected image is copied into the project
    assert sorted(p.name for p in folder.glob("*.tif")) == [
        "grid_4_corrected.tif", "grid_4_image.tif", "grid_4_predicted.tif",
        "grid_4_reviewed.tif"]

    viewer2 = make_napari_viewer()
    widget2 = open_dock(viewer2, "menu")
    (restored,) = widget2.review_panel.restore_project(folder)
    np.testing.assert_array_equal(restored.labels_layer.data, truth)
    np.testing.assert_array_equal(restored.image_layer.data, image)
    np.testing.assert_array_equal(restored.predicted, record.predicted)
    np.testing.assert_array_equal(restored.reviewed, record.reviewed)
    assert "grid 4 labels" in widget2.review_panel.counts_label.text()


def test_mark_reviewed_can_be_undone(setup):
    viewer, session, widget = setup
    review = widget.review_panel
    record = _segment(viewer, session, binary_sample(6)[0], "img")
    viewer.layers.selection.active = record.labels_layer
    viewer.reset_view()
    assert not review.undo_mark_btn.isEnabled()
    review.mark_layer_btn.click()
    whole = int(record.reviewed.sum())
    assert whole == record.reviewed.size
    assert review.undo_mark_btn.isEnabled()
    review.undo_mark_btn.click()
    assert record.reviewed is None
    assert "unmarked" in review.project_label.text()
    assert review.store.summary(record).reviewed_pixels == 0
    assert not review.undo_mark_btn.isEnabled()


def test_uncertainty_layer_and_go_to_tile_button(setup, qtbot):
    viewer, session, widget = setup
    panel = widget.uncertainty_panel
    image, _ = binary_sample(5)
    record = _segment(viewer, session, image, "u")
    viewer.layers.selection.active = record.labels_layer
    with job_done(qtbot, widget, "uncertainty"):
        panel.compute_btn.click()
    layer = viewer.layers["u uncertainty"]
    assert layer.data.shape == image.shape
    assert layer.data.dtype == np.float32
    panel.form["loop.uncertain_tile"].value = 64
    panel.goto_btn.click()  # the real button: Qt passes checked=False
    text = panel.status_label.text()
    y, x = (int(v) for v in (text.split("rows ")[1].split("-")[0],
                             text.split("cols ")[1].split("-")[0]))
    assert f"rows {y}-{y + 64}, cols {x}-{x + 64}" in text, text
    center = camera_of(viewer).center[-2:]
    assert abs(center[0] - (y + 31.5)) < 1
    assert abs(center[1] - (x + 31.5)) < 1
    zoom = camera_of(viewer).zoom
    assert 0.5 < zoom < 100, zoom


def test_engine_runtime_error_is_reported_and_frees_the_panel(setup, qtbot, monkeypatch):
    import napari_cryoseg.viewer.finetune_round as finetune_round

    viewer, session, widget = setup
    panel = widget.finetune_panel
    model = session.model
    image, truth = binary_sample(1)
    _correct(_segment(viewer, session, image, "img"), truth)

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("simulated torch failure")

    monkeypatch.setattr(finetune_round, "finetune", broken)  # the engine call of the round
    with job_done(qtbot, widget, "finetune", timeout=30_000) as blocker:
        panel.finetune_btn.click()  # superqt alone would never emit finished
    assert "simulated torch failure" in blocker.args[0].error
    assert "simulated torch failure" in panel.status_label.text()
    assert session.busy is None
    assert session.model is model


def test_uncorrected_open_images_reach_the_batchnorm_reestimation(setup):
    """Fine-tune re-estimates BatchNorm on every segmented image, corrected or not."""
    from napari_cryoseg.viewer.training_data import unlabelled_images

    viewer, session, widget = setup
    corrected_image, truth = binary_sample(1)
    other_image, _ = binary_sample(2)
    corrected = _segment(viewer, session, corrected_image, "corrected")
    _segment(viewer, session, other_image, "other")
    viewer.add_image(np.stack([other_image] * 3), name="a stack")  # not segmented
    _correct(corrected, truth)
    store = widget.finetune_panel.store
    sources = store.training_sources()
    assert [s.name for s in sources] == ["corrected"]
    images = unlabelled_images(store, sources)
    assert len(images) == 1 and np.array_equal(images[0], other_image)
    images[0][:] = 0  # a copy: the layer keeps its pixels
    assert viewer.layers["other"].data.any()
    assert unlabelled_images(store, sources, limit=0) == []

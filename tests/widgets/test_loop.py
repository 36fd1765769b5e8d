"""The napari loop through the dock opened as users open it (Plugins menu, scripted).

segment -> re-run updates the same layer -> paint corrections -> they are counted ->
fine-tune trains on them; any re-segmentation keeps corrections and reviewed marks.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import Session

from .conftest import binary_sample, job_done, open_dock


def _ready(viewer, how, seed=0):
    widget = open_dock(viewer, how)
    widget.session.device = "cpu"
    widget.session.set_model(ModelFile.new(preset("tiny"), seed=seed), keep_previous=False)
    return widget


def _paint(labels, center, value, size=12) -> np.ndarray:
    """Paint a square with the brush as a user does; returns the painted mask."""
    labels.brush_size = size
    labels.selected_label = value
    before = np.asarray(labels.data).copy()
    labels.paint(center, value)
    return np.asarray(labels.data) != before


@pytest.mark.slow
def test_loop_works_whichever_way_the_dock_is_opened(make_napari_viewer, qtbot, how):
    viewer = make_napari_viewer()
    widget = _ready(viewer, how)
    image, _truth = binary_sample(1)
    viewer.add_image(image, name="img")
    with job_done(qtbot, widget, "segment"):
        widget.segment_panel.run_button.click()
    assert [layer.name for layer in viewer.layers] == ["img", "img labels"]
    labels = viewer.layers["img labels"]
    with job_done(qtbot, widget, "segment"):
        widget.segment_panel.run_button.click()
    # the second run updates the layer; no "img labels [1]"
    assert [layer.name for layer in viewer.layers] == ["img", "img labels"]
    assert widget.segment_panel.status.text().startswith("Updated 'img labels'")

    current = int(np.asarray(labels.data)[40, 40])
    painted = _paint(labels, (40, 40), 1 - current)
    assert painted.any()
    widget.review_panel.refresh_counts()
    text = widget.review_panel.counts_label.text()
    assert "img labels" in text and "no CryoSeg labels" not in text, text
    summary = CorrectionStore.for_session(widget.session).summary(labels)
    assert summary.changed_pixels == int(painted.sum())

    widget.finetune_panel.steps.value = 3
    with job_done(qtbot, widget, "finetune") as blocker:
        widget.finetune_panel.finetune_btn.click()
    job = blocker.args[0]
    assert job.error is None and job.result is not None, job.error
    result, data = job.result
    assert result.n_corrected_pixels > 0 and data.names == ["img"]

    # a dock opened later, the other way, sees the same session and corrections
    other = open_dock(viewer, "menu" if how == "plugin" else "plugin")
    assert other.session is widget.session is Session.for_viewer(viewer)
    other.review_panel.refresh_counts()
    assert "img labels" in other.review_panel.counts_label.text()


@pytest.mark.slow
def test_every_resegmentation_keeps_corrections_and_reviewed_marks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _ready(viewer, "plugin")
    session = widget.session
    store = CorrectionStore.for_session(session)
    image, _ = binary_sample(2)
    image_layer = viewer.add_image(image, name="img")
    other_layer = viewer.add_image(binary_sample(3)[0], name="other")
    widget.segment_panel.image.select(image_layer)
    with job_done(qtbot, widget, "segment"):
        widget.segment_panel.run()
    labels = viewer.layers["img labels"]
    painted = _paint(labels, (30, 30), 1 - int(np.asarray(labels.data)[30, 30]))
    reviewed = np.zeros(labels.data.shape, bool)
    reviewed[100:140, 100:140] = True
    store.mark_reviewed(labels, (slice(100, 140), slice(100, 140)))
    kept = np.asarray(labels.data).copy()
    users = painted | reviewed
    changed = store.summary(labels).changed_pixels

    def check(after: str) -> None:
        data = np.asarray(labels.data)
        np.testing.assert_array_equal(data[users], kept[users], err_msg=after)
        record = session.record_for(labels)
        np.testing.assert_array_equal(record.reviewed, reviewed, err_msg=after)
        store.mark_dirty(labels)
        summary = store.summary(labels)
        assert summary.changed_pixels == changed, after
        assert summary.reviewed_pixels == int(reviewed.sum()), after

    # Batch: the corrected layer starts unchecked ...
    batch = widget.batch_panel
    batch.refresh()
    assert [layer.name for layer in batch.checked_layers()] == ["other"]
    assert "corrected" in batch.list.item(0).text()
    # ... and checked anyway with a different model, it keeps the corrections
    session.set_model(ModelFile.new(preset("tiny"), seed=5))
    batch.set_checked([image_layer, other_layer])
    with job_done(qtbot, widget, "batch"):
        batch.run_button.click()
    assert not np.array_equal(np.asarray(labels.data)[~users], kept[~users])  # it did run
    check("batch")
    # Run on the same image with yet another model
    session.set_model(ModelFile.new(preset("tiny"), seed=6))
    with job_done(qtbot, widget, "segment"):
        widget.segment_panel.run()
    check("run")
    # Revert (re-segments every layer when asked to)
    widget.finetune_panel.resegment_choice.value = "all"
    with job_done(qtbot, widget, "resegment"):
        widget.finetune_panel.revert_btn.click()
    check("revert")
    # Ctrl+Z of a re-run restores pixels; the record still knows the corrections
    labels.undo()
    np.testing.assert_array_equal(np.asarray(labels.data)[users], kept[users])

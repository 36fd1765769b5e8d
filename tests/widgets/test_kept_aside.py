"""A new model that learned too little is kept aside with its report; the user chooses
to apply it (real viewer, real training)."""

from __future__ import annotations

import pytest

from napari_cryoseg.engine.training.step_time import min_useful_steps

from .cold_start_helpers import paint, scene, strokes
from .conftest import job_done, open_dock

#: Far too few steps on purpose (the old default made 6 in 60 s on a 2-core CPU).
SHORT = {"train.preset": "tiny", "train.batch_size": 2, "train.patch": 48,
         "train.time_budget_s": None, "train.steps": 6, "loop.preview": False}


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    return viewer, widget


def test_a_run_with_too_few_steps_is_kept_aside_until_applied(dock, qtbot):
    viewer, widget = dock
    session = widget.session
    panel = widget.train_panel
    for key, value in SHORT.items():
        session.settings.set(key, value)
    image, truth = scene(1, size=96)
    viewer.add_image(image, name="section")
    panel.class_list.add_btn.click()
    background, disk = (spec.value for spec in panel.store.classes.classes)
    (annotations,) = panel.annotate_selected()
    paint(annotations, strokes(truth, {0: background, 1: disk}))
    current = session.model
    with job_done(qtbot, widget, "train", timeout=300_000):
        assert panel.start_training() is not None
    assert min_useful_steps("train") > 6
    # not applied: the current model and the open images are as they were
    assert session.model is current
    assert "section labels" not in viewer.layers
    assert panel.round.kept_aside is not None and panel.round.kept_aside.class_names[1] == "class 1"
    assert panel.warning_label.text().startswith(
        "kept aside, not applied: only 6 training steps were made")
    assert "Time budget" in panel.warning_label.text()
    assert "--" not in panel.warning_label.text()  # dock words, not flags
    assert "kept aside" in panel.status_label.text()
    assert panel.apply_btn.isVisibleTo(panel)
    # where the time went
    assert "training (6 steps)" in panel.metrics_label.text()
    # the user chooses to apply it: it becomes current and segments the open images
    kept = panel.round.kept_aside
    with job_done(qtbot, widget, "segment", timeout=300_000):
        panel.apply_btn.click()
    assert session.model is kept
    assert "section labels" in viewer.layers
    assert not panel.apply_btn.isVisibleTo(panel) and panel.round.kept_aside is None

"""Train new model in the dock starts from the bundled EM backbone (real viewer, Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.model.bundled import backbone_path, load_backbone

from .cold_start_helpers import paint, scene, strokes
from .conftest import job_done, open_dock

pytestmark = pytest.mark.skipif(not backbone_path().is_file(),
                                reason="the bundled EM backbone is not in this checkout")

#: The backbone is a `small` U-Net: a handful of steps on 64 px patches keeps the test short.
FEW_STEPS = {"train.batch_size": 2, "train.patch": 64, "train.time_budget_s": None,
             "train.steps": 6, "loop.preview_every_s": 0.1}


def test_train_starts_from_the_backbone_and_names_the_classes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    session = widget.session
    session.device = "cpu"
    panel = widget.train_panel
    assert session.settings.train.init == "backbone"  # the default start
    assert panel.form.widgets["train.init"].value == "backbone"
    for key, value in FEW_STEPS.items():
        session.settings.set(key, value)
    image, truth = scene(3)
    viewer.add_image(image, name="section")
    panel.class_list.add_btn.click()
    background, mito = (spec.value for spec in panel.store.classes.classes)
    field = panel.class_list.rows[mito]["name"]
    field.setText("mitochondria")
    field.editingFinished.emit()
    (annotations,) = panel.annotate_selected()
    paint(annotations, strokes(truth, {0: background, 1: mito, 2: background}))
    notes: list[str] = []
    previews: list[int] = []
    panel.preview_shown.connect(previews.append)
    original = panel._on_event

    def record(event):
        text = getattr(event, "text", None)
        if text:
            notes.append(text)
        original(event)

    panel._on_event = record
    with job_done(qtbot, widget, "train", timeout=600_000):
        assert panel.start_training() is not None
    # A handful of steps is below what the dock applies by itself: the model waits
    # beside the current one until the user applies it (then it segments the images).
    qtbot.waitUntil(lambda: panel.round.kept_aside is not None or session.busy == "segment"
                    or "section labels" in viewer.layers, timeout=60_000)
    if panel.round.kept_aside is not None:
        assert panel.apply_btn.isVisibleTo(panel)
        with job_done(qtbot, widget, "segment", timeout=600_000):
            panel.apply_kept_aside()
    else:
        qtbot.waitUntil(lambda: session.busy is None and "section labels" in viewer.layers,
                        timeout=600_000)
    start = [n for n in notes if n.startswith("starting from")]
    assert start and start[0].startswith("starting from the EM backbone"), notes
    assert "mitochondria <- mitochondrion" in start[0]
    assert previews, "no live preview while training"
    model = session.model
    assert model.class_names == ["background", "mitochondria"]
    assert model.provenance["parent"] == load_backbone().name
    labels = viewer.layers["section labels"]
    assert list(labels.features["class"])[:2] == ["background", "mitochondria"]
    assert np.isin(np.unique(labels.data), [0, 1]).all()

"""The Train new model and Fine-tune sections say what their time budget buys here,
before the click, and propose one that is enough (real viewer, real measurement)."""

from __future__ import annotations

import pytest

from napari_cryoseg.engine.training import step_time as st
from napari_cryoseg.viewer.budget import step_request

from .conftest import job_done, open_dock


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    return viewer, widget


def test_measure_speed_shows_what_the_budget_buys(dock, qtbot):
    viewer, widget = dock
    session = widget.session
    line = widget.train_panel.budget_line
    for key, value in {"train.preset": "tiny", "train.patch": 48,
                       "train.batch_size": 2}.items():
        session.settings.set(key, value)
    assert "press Measure speed" in line.label.text()
    assert line.measure_btn.isVisibleTo(widget.train_panel)
    with job_done(qtbot, widget, "measure"):
        assert line.measure() is not None
    request = step_request("train", session.settings, "cpu")
    step_s = st.cached_step_time(request.key())
    assert step_s is not None and step_s > 0
    expected = st.estimate(step_s, 60.0, kind="train",
                           overhead_s=st.first_step_extra(request.key()))
    assert line.label.text() == expected.text()
    assert line.label.text().startswith(f"60 s ≈ {expected.steps} steps here")
    assert not line.measure_btn.isVisibleTo(widget.train_panel)  # known now
    # the same network elsewhere in this session needs no second measurement
    session.settings.set("train.time_budget_s", 30.0)
    assert line.label.text().startswith("30 s ≈ ")


def test_a_budget_too_short_proposes_one_that_is_enough(dock):
    viewer, widget = dock
    session = widget.session
    panel = widget.train_panel
    line = panel.budget_line
    session.settings.set("train.init", "random")  # from random weights: 60 steps needed
    # the step time this 2-core CPU measured for the default network (small, 8 x 256 px)
    st.record_step_time(step_request("train", session.settings, "cpu").key(), 3.9)
    line.refresh()
    text = line.label.text()
    assert text.startswith("60 s ≈ 10 steps here (3.9 s a step)"), text
    assert "a useful new model needs about 60 steps" in text
    # a preview comes between two steps: the line says how often that can be here
    assert "live previews come between steps: about every 4 s here" in text
    session.settings.set("loop.preview", False)
    line.refresh()
    assert "previews" not in line.label.text()
    session.settings.set("loop.preview", True)
    line.refresh()
    assert line.use_btn.isVisibleTo(panel) and line.use_btn.text() == "Use 330 s"
    line.use_btn.click()
    assert session.settings.train.time_budget_s == 330.0
    assert panel.form["train.time_budget_s"].value == 330.0
    assert line.label.text().startswith("330 s ≈ 62 steps here")
    assert not line.use_btn.isVisibleTo(panel)
    # "no limit" for the time budget, 200 steps: the steps are what it buys
    session.settings.set("train.time_budget_s", None)
    session.settings.set("train.steps", 200)
    assert line.label.text().startswith("200 steps ≈ 780 s here")


def test_finetune_section_estimates_for_the_current_model(dock):
    viewer, widget = dock
    session = widget.session
    from napari_cryoseg.viewer.layers import ensure_model

    model = ensure_model(session)
    line = widget.finetune_panel.budget_line
    request = step_request("finetune", session.settings, "cpu", model)
    st.record_step_time(request.key(), 0.5)
    line.refresh()
    text = line.label.text()
    # part of the 60 s goes to checks (at most a quarter), the rest trains
    assert text.startswith("60 s ≈ "), text
    steps = int(text.split("≈ ")[1].split(" steps")[0])
    assert steps == st.steps_in(60.0, 0.5, overhead_s=15.0)
    assert "fine-tuning needs about 20 steps" in text


def test_a_backbone_start_needs_fewer_steps(dock):
    viewer, widget = dock
    session = widget.session
    line = widget.train_panel.budget_line
    assert session.settings.train.init == "backbone"
    st.record_step_time(step_request("train", session.settings, "cpu").key(), 3.9)
    line.refresh()
    text = line.label.text()
    if step_request("train", session.settings, "cpu").pretrained:
        assert "a useful new model needs about 20 steps" in text, text
    else:  # a checkout without the bundled backbone starts from random weights
        assert "a useful new model needs about 60 steps" in text, text

"""The job runner: one module starts workers; progress in napari's activity dock."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from napari.utils import progress

import napari_cryoseg
from napari_cryoseg.core.errors import CryoSegError, InputError
from napari_cryoseg.engine.events import TrainStep

from .conftest import open_dock

PACKAGE = Path(napari_cryoseg.__file__).parent


def test_workers_start_only_in_the_job_runner():
    starters = re.compile(
        r"\b(create_worker|thread_worker|QThread|QThreadPool|threading\.Thread)\b")
    found = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if not p.is_relative_to(PACKAGE / "engine")
                   and starters.search(p.read_text(encoding="utf-8")))
    assert found == ["widgets/job_runner.py"], found


def _training_like(steps: int, shape: tuple[int, int]):
    """A job shaped like training from annotations: steps, then a preview to show."""
    for step in range(1, steps + 1):
        yield TrainStep(step, steps, loss=1.0 / step, lr=1e-3, elapsed_s=0.01 * step)
        if step == steps // 2:
            yield ("preview", np.full(shape, step, dtype=np.float32))
    return "trained"


def test_training_job_reports_progress_in_the_activity_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    runner = widget.runner
    shown: list[float] = []
    results: list[str] = []

    def on_event(event):
        if isinstance(event, tuple) and event[0] == "preview":  # main thread: layers ok
            if "preview" in viewer.layers:
                viewer.layers["preview"].data = event[1]
            else:
                viewer.add_image(event[1], name="preview")
        elif isinstance(event, TrainStep):
            shown.append(bars[0].n / bars[0].total)

    bars: list[progress] = []
    runner.started.connect(lambda job: bars.append(job.bar))
    with qtbot.waitSignal(runner.finished, timeout=20_000) as blocker:
        job = runner.start("train", _training_like, 10, (8, 8), desc="Training",
                           on_event=on_event, on_result=results.append)
        assert job in [j for j in [runner.job]] and widget.session.busy == "train"
        assert bars[0] in progress._all_instances  # listed in napari's activity dock
    assert blocker.args[0] is job and job.result == "trained" and results == ["trained"]
    # the steps advanced the bar to its end (never backwards)
    assert len(shown) == 10 and shown == sorted(shown) and shown[-1] > 0
    assert bars[0].n == bars[0].total
    np.testing.assert_array_equal(viewer.layers["preview"].data, np.full((8, 8), 5))
    assert bars[0] not in progress._all_instances  # closed
    assert widget.session.busy is None and runner.job is None


def _fails():
    yield TrainStep(1, 3, 1.0, 1e-3, 0.0)
    raise InputError("image 'x' is empty; choose another layer")


def test_one_error_relay_frees_the_session(make_napari_viewer, qtbot, monkeypatch):
    from napari_cryoseg.widgets import job_runner

    shown: list[str] = []
    monkeypatch.setattr(job_runner, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "menu")
    errors: list[str] = []
    with qtbot.waitSignal(widget.runner.finished, timeout=20_000) as blocker:
        widget.runner.start("train", _fails, desc="Training", on_error=errors.append)
    job = blocker.args[0]
    assert job.error == "image 'x' is empty; choose another layer" == errors[0]
    assert shown == [f"CryoSeg: {job.error}"]
    assert widget.session.busy is None
    # a second job while one runs is refused before any thread starts
    with qtbot.waitSignal(widget.runner.finished, timeout=20_000) as blocker:
        first = widget.runner.start("train", _training_like, 200, (4, 4), desc="Training")
        with pytest.raises(CryoSegError, match="cannot start segment: train is still running"):
            widget.runner.start("segment", _training_like, 2, (4, 4), desc="again")
    assert blocker.args[0] is first

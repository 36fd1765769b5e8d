"""The CryoSeg dock opened the ways users open it, and helpers that wait on its signals."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.widgets.main import CryoSegWidget

JOB_TIMEOUT_MS = 90_000


def open_dock(viewer, how: str) -> CryoSegWidget:
    """Open the dock as a user does: ``"plugin"`` = ``add_plugin_dock_widget`` (the
    scripted way), ``"menu"`` = the Plugins menu's CryoSeg action."""
    if how == "plugin":
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
        return widget
    if how == "menu":
        actions = [a for a in viewer.window.plugins_menu.actions()
                   if a.text().startswith("CryoSeg")]
        assert actions, [a.text() for a in viewer.window.plugins_menu.actions()]
        before = set(map(id, viewer.window.dock_widgets.values()))
        actions[0].trigger()
        new = [w for w in viewer.window.dock_widgets.values() if id(w) not in before]
        assert len(new) == 1 and isinstance(new[0], CryoSegWidget), new
        return new[0]
    raise ValueError(how)


@pytest.fixture(params=["plugin", "menu"])
def how(request) -> str:
    """Each test using it runs once per way of opening the dock."""
    return request.param


@contextmanager
def job_done(qtbot, widget, kind: str | None = None, timeout: int = JOB_TIMEOUT_MS):
    """Wait (inside the ``with``) until a job of ``kind`` (any when None) finished.

    Yields the blocker; ``blocker.args[0]`` is the finished :class:`Job`.
    """
    def matches(job) -> bool:
        return kind is None or job.kind == kind

    with qtbot.waitSignal(widget.runner.finished, timeout=timeout,
                          check_params_cb=matches) as blocker:
        yield blocker


def sample(seed: int = 0, shape=(128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic grid-square image and its ground-truth classes."""
    return make_sample(seed, SampleConfig(shape=shape))


def binary_sample(seed: int, shape=(160, 160)) -> tuple[np.ndarray, np.ndarray]:
    image, labels = make_sample(seed, SampleConfig(shape=shape, n_cells=30, n_clusters=4))
    return image, (labels == 1).astype(np.uint8)  # binary: cell vs rest

"""Controllers of the dock's sections tested without Qt: napari's ``ViewerModel``.

``ViewerModel`` is the viewer without a window (layers, selection, camera, dims), so
these tests run where no display exists. No module here imports qtpy or napari.qt.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def viewer():
    from napari.components import ViewerModel

    return ViewerModel()


@pytest.fixture
def session(viewer):
    from napari_cryoseg.viewer.session import Session

    return Session.for_viewer(viewer)

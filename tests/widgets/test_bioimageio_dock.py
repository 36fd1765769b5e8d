"""The dock's "Open model file…" takes bioimage.io packages and segments with them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bioimageio.core", reason="the 'bioimageio' extra is not installed")

from bioimageio_helpers import foreign_package  # noqa: E402


def test_dock_opens_foreign_package_and_segments(make_napari_viewer, qtbot, tmp_path,
                                                 monkeypatch):
    monkeypatch.setenv("CRYOSEG_CONFIG_DIR", str(tmp_path / "config"))
    package = foreign_package(tmp_path)
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-cryoseg", "CryoSeg")
    assert widget.model_panel.open_path(str(package))
    model = widget.session.model
    assert model.foreign and model.class_names == ["dark", "bright"]
    assert "two class conv" in widget.model_panel.summary.text()
    image = np.random.default_rng(3).integers(0, 4000, (70, 100)).astype(np.uint16)
    viewer.add_image(image, name="img", scale=(4.0, 4.0))
    panel = widget.segment_panel
    panel.run()
    qtbot.waitUntil(lambda: panel.job is None and panel.run_button.isEnabled(), timeout=60_000)
    labels = viewer.layers["img labels"]
    np.testing.assert_array_equal(labels.data, (image > image.mean()).astype(np.uint8))
    assert list(labels.features["class"]) == ["dark", "bright"]
    # A broken package, or a missing library, is a one-line notification; the model stays.
    from napari_cryoseg.widgets import model_panel as panel_module

    shown: list[str] = []
    monkeypatch.setattr(panel_module, "show_error", shown.append)
    (tmp_path / "broken.zip").write_bytes(b"nope")
    assert not widget.model_panel.open_path(str(tmp_path / "broken.zip"))
    assert "not a zip file" in shown[-1] and "\n" not in shown[-1]
    monkeypatch.setitem(__import__("sys").modules, "bioimageio.core", None)
    assert not widget.model_panel.open_path(str(package))
    assert "needs the 'bioimageio' extra: pip install 'napari-cryoseg[bioimageio]'" in shown[-1]
    assert widget.session.model is model

"""RGB and N-D image layers are listed with the reason they cannot be used, not dropped."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import open_dock


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("CRYOSEG_CONFIG_DIR", str(tmp_path / "config"))
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    return viewer, widget


def test_rgb_and_4d_layers_say_why_they_cannot_be_used(dock):
    viewer, widget = dock
    viewer.add_image(np.zeros((64, 64), np.float32), name="em")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((2, 2, 32, 32), np.float32), name="hyper")

    combo = widget.segment_panel.image
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts[0].startswith("em")
    rgb_row = next(i for i, t in enumerate(texts) if t.startswith("photo"))
    assert "RGB" in texts[rgb_row] and "Split RGB" in texts[rgb_row]
    assert not combo.model().item(rgb_row).isEnabled()
    assert any(t.startswith("hyper") and "4D" in t for t in texts)
    combo.setCurrentIndex(rgb_row)  # even when forced there, it is no layer to segment
    assert combo.layer() is None

    batch = widget.batch_panel
    rows = [batch.list.item(i).text() for i in range(batch.list.count())]
    assert any(r.startswith("photo") and "RGB" in r for r in rows)
    assert [lyr.name for lyr in batch.checked_layers()] == ["em"]

    viewer.layers.selection = {viewer.layers["photo"]}
    assert widget.train_panel.annotate_selected() == []
    status = widget.train_panel.status_label.text()
    assert "'photo' cannot be annotated" in status and "RGB" in status


def test_the_dock_fits_its_area_with_every_section_open(dock, qtbot):
    viewer, widget = dock
    viewer.window._qt_window.resize(1500, 950)  # the dock's default share of the window
    viewer.window.show()  # sizes are laid out only in a shown window
    viewer.add_image(np.zeros((64, 64), np.float32), name="a" * 80)  # a long layer name
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    for title in widget.sections:
        widget.show_section(title)
    qtbot.wait(50)
    from qtpy.QtWidgets import QScrollArea

    scroll = widget.findChild(QScrollArea)
    bar = scroll.horizontalScrollBar()
    needed = scroll.widget().minimumSizeHint().width()
    assert needed <= scroll.viewport().width() and bar.maximum() == 0, (
        f"content needs {needed} px, the dock shows {scroll.viewport().width()}")

"""CryoSeg's own labels outputs reopen in napari as Labels layers (names, colours, scale).

Real viewer, real files: written by the CLI and by napari's save path, re-opened with
``viewer.open``; other TIFFs stay with napari's built-in reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main
from napari_cryoseg.contributions.activate import LABELS_PATTERNS, activate
from napari_cryoseg.contributions.labels_reader import get_labels_reader
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.io.labels import read_labels_class_colors, write_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset

NAMES = ["background", "cell", "ice"]
COLORS = ["#000000", "#33cc66", "#3399ff"]


@pytest.fixture
def segmented(tmp_path):
    """A 3-class tiny model's labels of a sample image, as TIFF and as OME-Zarr (CLI)."""
    model = ModelFile.new(preset("tiny", n_classes=3, base_channels=4), class_names=NAMES,
                          class_colors=COLORS, seed=0)
    model_path = save_model(model, tmp_path / "m.pt")
    image, _ = make_sample(0, SampleConfig(shape=(96, 120)))
    tifffile.imwrite(tmp_path / "img.tif", image, imagej=True, resolution=(1 / 7.5, 1 / 7.5),
                     metadata={"unit": "nm"})
    for fmt in ("tif", "zarr"):
        assert main(["segment", str(tmp_path / "img.tif"), "--model", str(model_path),
                     "--out", str(tmp_path / fmt), "--device", "cpu",
                     "--output-format", fmt]) == 0
    return tmp_path / "tif" / "img_labels.tif", tmp_path / "zarr" / "img_labels.zarr"


def _check_layer(layer, expected):
    assert layer._type_string == "labels"
    data = layer.data[0] if layer.multiscale else layer.data
    np.testing.assert_array_equal(np.asarray(data), expected)
    assert list(layer.features["class"]) == NAMES
    assert layer.metadata["cryoseg"]["class_names"] == NAMES
    assert tuple(layer.scale) == pytest.approx((7.5, 7.5))
    assert [str(u) for u in layer.units] == ["nanometer", "nanometer"]
    for value, color in enumerate(COLORS[1:], start=1):
        rgba = layer.colormap.map(np.array([value]))[0]
        hexa = "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])
        assert hexa == color


def test_cli_outputs_reopen_as_labels(make_napari_viewer, segmented):
    tif_path, zarr_path = segmented
    viewer = make_napari_viewer()
    [tif_layer] = viewer.open(str(tif_path), plugin="napari-cryoseg")
    expected = tifffile.imread(tif_path)
    _check_layer(tif_layer, expected)
    [zarr_layer] = viewer.open(str(zarr_path), plugin="napari-cryoseg")
    assert zarr_layer.multiscale and len(zarr_layer.data) >= 2
    _check_layer(zarr_layer, expected)
    # File > Open / drag and drop (no plugin named): napari asks its reader preferences,
    # which CryoSeg fills on activation for its own labels patterns. (The scripting call
    # ``viewer.open(path)`` defaults to napari's built-in reader in napari 0.9.)
    from napari.settings import get_settings

    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    try:
        activate()
        for path in (tif_path, zarr_path):
            # plugin=None raises if the choice were ambiguous (the GUI would ask instead)
            [plain] = viewer.open(str(path), plugin=None)
            _check_layer(plain, expected)
            before = len(viewer.layers)
            viewer.window._qt_viewer._qt_open([str(path)], stack=False)
            assert len(viewer.layers) == before + 1
            _check_layer(viewer.layers[-1], expected)
            assert viewer.layers[-1].source.reader_plugin == "napari-cryoseg"
    finally:
        plugins.extension2reader = saved


def test_reader_claims_only_cryoseg_files(tmp_path):
    plain = tmp_path / "other_labels.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint8))
    assert get_labels_reader(str(plain)) is None  # napari's built-in reader opens it
    ours = write_labels_tiff(tmp_path / "x_labels.tif", np.eye(8, dtype=np.uint8),
                             class_names=["bg", "fg"])
    assert get_labels_reader(str(ours)) is not None
    (tmp_path / "dir_labels.zarr").mkdir()
    assert get_labels_reader(str(tmp_path / "dir_labels.zarr")) is None
    (tmp_path / "broken_labels.tif").write_bytes(b"not a tiff")
    assert get_labels_reader(str(tmp_path / "broken_labels.tif")) is None


def test_activation_keeps_the_users_reader_preference():
    from napari.settings import get_settings

    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    try:
        plugins.extension2reader = {"*_labels.tif": "napari"}
        activate()
        prefs = dict(plugins.extension2reader)
        assert prefs["*_labels.tif"] == "napari"  # the user's choice stays
        assert all(prefs[p] == "napari-cryoseg" for p in LABELS_PATTERNS[1:])
    finally:
        plugins.extension2reader = saved


def test_save_selected_layer_with_cryoseg_writer_keeps_classes(make_napari_viewer, segmented,
                                                               tmp_path):
    """File > Save Selected Layers, choosing CryoSeg's entry the way the dialog does."""
    from napari._qt.qt_viewer import _npe2_decode_selected_filter
    from napari.plugins._npe2 import file_extensions_string_for_layers

    tif_path, _ = segmented
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tif_path), plugin="napari-cryoseg")
    viewer.layers.selection = {layer}
    ext_str, writers = file_extensions_string_for_layers([layer])
    entries = ext_str.split(";;")
    ours = [e for e in entries if e.startswith("CryoSeg labels TIFF")]
    assert ours, entries  # one readable entry, not "CryoSeg CryoSeg ..."
    writer = _npe2_decode_selected_filter(ext_str, ours[0], writers)
    out = tmp_path / "saved_labels.tif"
    saved = viewer.layers.save(str(out), selected=True, _writer=writer)
    assert saved == [str(out)]
    assert read_labels_class_colors(out) == COLORS
    viewer.layers.clear()
    [back] = viewer.open(str(out), plugin="napari-cryoseg")
    _check_layer(back, np.asarray(layer.data))

"""Reader (MRC), writer (labels TIFF) and sample data contributions."""

from __future__ import annotations

import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from napari_cryoseg.contributions.reader import get_reader
from napari_cryoseg.contributions.sample_data import grid_square
from napari_cryoseg.contributions.writer import write_labels
from napari_cryoseg.core.synthetic import CLASS_NAMES
from napari_cryoseg.io.labels import read_labels_class_names, read_labels_tiff


def test_mrc_reader_keeps_data_and_voxel_size(tmp_path):
    data = np.random.default_rng(0).random((3, 32, 48)).astype(np.float32)
    path = tmp_path / "vol.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 12.0  # Angstrom -> 1.2 nm
    reader = get_reader(str(path))
    assert reader is not None
    [(layer_data, kwargs, kind)] = reader(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(np.asarray(layer_data), data)
    assert kwargs["scale"] == pytest.approx((1.2, 1.2, 1.2))
    assert kwargs["name"] == "vol"


def test_reader_declines_other_files(tmp_path):
    assert get_reader(str(tmp_path / "image.tif")) is None
    assert get_reader([str(tmp_path / "a.mrc"), str(tmp_path / "b.png")]) is None


def test_napari_opens_mrc_with_scale(make_napari_viewer, tmp_path):
    path = tmp_path / "image.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.arange(64 * 80, dtype=np.int16).reshape(64, 80))
        mrc.voxel_size = 25.0
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-cryoseg")
    assert layer.data.shape == (64, 80)
    assert tuple(layer.scale) == pytest.approx((2.5, 2.5))


def test_writer_round_trip(tmp_path):
    labels = np.random.default_rng(1).integers(0, 4, (40, 50), dtype=np.uint8)
    meta = {"cryoseg": {"class_names": list(CLASS_NAMES)}}
    attributes = {"scale": (50.0, 50.0), "metadata": meta}
    [written] = write_labels(str(tmp_path / "out.tif"), labels, attributes)
    data, px = read_labels_tiff(written)
    np.testing.assert_array_equal(data, labels)
    assert px == pytest.approx(50.0)
    assert read_labels_class_names(written) == list(CLASS_NAMES)


def test_sample_data_shapes():
    (image, image_kwargs, image_kind), (labels, labels_kwargs, labels_kind) = grid_square()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.shape == labels.shape == (512, 512)
    assert image.dtype == np.uint16
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert image_kwargs["scale"] == labels_kwargs["scale"] == (50.0, 50.0)


def test_contributions_do_not_import_torch():
    code = ("import sys; import napari_cryoseg.contributions.reader, "
            "napari_cryoseg.contributions.writer, napari_cryoseg.contributions.sample_data, "
            "napari_cryoseg.contributions.labels_reader, napari_cryoseg.contributions.activate; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

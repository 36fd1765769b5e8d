"""Zarr / OME-Zarr reading and chunked label writing."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io import list_images, read_image
from napari_cryoseg.io.zarr_io import LabelsZarrWriter, read_labels_zarr, write_zarr_image


def test_ome_zarr_round_trip_lazy(tmp_path, rng):
    data = rng.integers(0, 4000, (300, 200), dtype=np.uint16)
    path = write_zarr_image(tmp_path / "img.zarr", data, chunks=(128, 128), pixel_size_nm=2.5)
    image = read_image(path, lazy=True)
    assert isinstance(image.data, da.Array)
    assert image.axes == "YX" and image.pixel_size_nm == pytest.approx(2.5)
    np.testing.assert_array_equal(image.data.compute(), data)
    eager = read_image(path)
    assert isinstance(eager.data, np.ndarray)
    np.testing.assert_array_equal(eager.data, data)
    assert list_images([tmp_path]) == [path]
    assert list_images([path]) == [path]


def test_ngff_04_five_d_micrometre_highest_level(tmp_path, rng):
    data = rng.random((1, 1, 4, 64, 48)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    group.create_array("s0", data=data, chunks=(1, 1, 1, 32, 48))
    group.create_array("s1", data=data[..., ::2, ::2], chunks=(1, 1, 1, 32, 24))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": axes,
        "datasets": [
            {"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [1, 1, 0.05, 0.004, 0.004]}]},
            {"path": "s1", "coordinateTransformations": [
                {"type": "scale", "scale": [1, 1, 0.05, 0.008, 0.008]}]},
        ],
    }]
    image = read_image(tmp_path / "v04.zarr", lazy=True)
    assert image.shape == (4, 64, 48) and image.axes == "ZYX"
    assert image.pixel_size_nm == pytest.approx(4.0) and image.z_size_nm == pytest.approx(50.0)
    np.testing.assert_array_equal(image.data.compute(), data[0, 0])


def test_multichannel_zarr_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    group.create_array("0", data=np.zeros((2, 32, 32), np.uint8))
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
        "datasets": [{"path": "0"}]}]}
    with pytest.raises(InputError, match="channels"):
        read_image(tmp_path / "c.zarr", lazy=True)


def test_labels_writer_commit_and_no_silent_overwrite(tmp_path):
    target = tmp_path / "a_labels.zarr"
    with LabelsZarrWriter(target, (100, 70), np.uint8, pixel_size_nm=3.0,
                          class_names=["background", "cell"]) as writer:
        writer.array[10:20] = 1
        assert not target.exists()  # written in a temporary folder until commit
        writer.commit()
    labels, names = read_labels_zarr(target)
    assert names == ["background", "cell"] and int(labels.sum().compute()) == 700
    assert read_image(target).pixel_size_nm == pytest.approx(3.0)
    with pytest.raises(InputError, match="already exists"):
        LabelsZarrWriter(target, (100, 70), np.uint8)
    with pytest.raises(RuntimeError), LabelsZarrWriter(target, (5, 5), np.uint8,
                                                       overwrite=True) as writer:
        raise RuntimeError("interrupted")
    assert not list(tmp_path.glob(".a_labels.zarr.tmp-*"))  # aborted store removed
    assert read_labels_zarr(target)[0].shape == (100, 70)  # old output untouched

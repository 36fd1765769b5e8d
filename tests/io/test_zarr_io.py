"""Zarr / OME-Zarr reading and chunked label writing."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io import list_images, read_image
from napari_cryoseg.io.zarr_io import write_zarr_image
from napari_cryoseg.io.zarr_labels import LabelsZarrWriter, read_labels_zarr


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
    stored = read_labels_zarr(target)
    assert stored.class_names == ["background", "cell"]
    assert int(stored.data.sum().compute()) == 700
    assert read_image(target).pixel_size_nm == pytest.approx(3.0)
    with pytest.raises(InputError, match="already exists"):
        LabelsZarrWriter(target, (100, 70), np.uint8)
    with pytest.raises(RuntimeError), LabelsZarrWriter(target, (5, 5), np.uint8,
                                                       overwrite=True) as writer:
        raise RuntimeError("interrupted")
    assert not list(tmp_path.glob(".a_labels.zarr.tmp-*"))  # aborted store removed
    assert read_labels_zarr(target).data.shape == (100, 70)  # old output untouched


def test_labels_zarr_is_ngff_labels_for_ome_zarr_reader(tmp_path):
    """ome-zarr's own reader sees a labels group: image-label colours, classes, pyramid."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    target = tmp_path / "cell_labels.zarr"
    labels = np.zeros((3, 600, 520), np.uint8)
    labels[:, 100:300, 50:200] = 2
    labels[1, 400:500, 300:500] = 1
    with LabelsZarrWriter(target, labels.shape, np.uint8, pixel_size_nm=4.0, z_size_nm=20.0,
                          class_names=["background", "cell", "ice"],
                          class_colors=["#000000", "#33cc66", "#3399ff"], axes="ZYX",
                          chunks=(1, 256, 520)) as writer:
        for start in range(0, 600, 256):  # strip by strip, as the engine writes
            writer.array[:, start:start + 256] = labels[:, start:start + 256]
        writer.commit()
    nodes = list(Reader(parse_url(str(target)))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label_nodes) == 1
    node = label_nodes[0]
    assert len(node.data) >= 2  # a pyramid
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    assert tuple(node.data[1].shape) == (3, 300, 260)  # XY halved, Z kept
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[:, ::2, ::2])
    assert node.metadata["properties"] == {1: {"class": "cell"}, 2: {"class": "ice"}}
    assert node.metadata["color"][1] == pytest.approx([0x33 / 255, 0xCC / 255, 0x66 / 255, 1])
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [20.0, 4.0, 4.0]
    assert [a["unit"] for a in node.metadata["axes"]] == ["nanometer"] * 3
    stored = read_labels_zarr(target)
    assert len(stored.levels) >= 2 and stored.class_colors[1] == "#33cc66"
    assert stored.z_size_nm == pytest.approx(20.0) and stored.axes == "ZYX"


def test_old_single_level_labels_zarr_still_reads(tmp_path):
    """Outputs of earlier versions (a root multiscales image + cryoseg attrs) keep working."""
    group = zarr.open_group(str(tmp_path / "old_labels.zarr"), mode="w", zarr_format=3)
    group.create_array("0", data=np.eye(40, dtype=np.uint8))
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "nanometer"},
                 {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [2.0, 2.0]}]}]}]}
    group.attrs["cryoseg"] = {"kind": "labels", "class_names": ["background", "fg"],
                              "background": 0}
    stored = read_labels_zarr(tmp_path / "old_labels.zarr")
    assert stored.class_names == ["background", "fg"] and stored.pixel_size_nm == 2.0
    np.testing.assert_array_equal(stored.data.compute(), np.eye(40, dtype=np.uint8))

"""Tests for napari_cryoseg.io.labels and napari_cryoseg.core.atomic (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cryoseg.core import atomic
from napari_cryoseg.core.atomic import atomic_write, unique_path
from napari_cryoseg.core.errors import InputError, OutputExistsError
from napari_cryoseg.io import (
    labels_output_path,
    read_image,
    read_labels_class_names,
    read_labels_tiff,
    write_labels_tiff,
)

RNG = np.random.default_rng(1)


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- labels


def test_labels_roundtrip_2d_uint8(tmp_path):
    labels = RNG.integers(0, 4, size=(50, 70)).astype(np.int32)
    path = write_labels_tiff(tmp_path / "a_labels.tif", labels, pixel_size_nm=1.25)

    assert path == tmp_path / "a_labels.tif"
    back, px = read_labels_tiff(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    assert px == pytest.approx(1.25, rel=1e-6)
    assert _tmp_files(tmp_path) == []


def test_labels_roundtrip_3d(tmp_path):
    labels = RNG.integers(0, 3, size=(4, 20, 30)).astype(np.uint8)
    path = write_labels_tiff(tmp_path / "vol.tif", labels, pixel_size_nm=0.8, z_size_nm=1.6)
    back, px = read_labels_tiff(path)
    np.testing.assert_array_equal(back, labels)
    assert px == pytest.approx(0.8, rel=1e-6)
    img = read_image(path)
    assert img.axes == "ZYX"
    assert img.z_size_nm == pytest.approx(1.6, rel=1e-6)


@pytest.mark.parametrize(
    ("max_value", "dtype", "expected"),
    [
        (1, np.bool_, np.uint8),
        (255, np.int64, np.uint8),
        (255, np.uint16, np.uint8),
        (256, np.int32, np.uint16),
        (65535, np.uint32, np.uint16),
    ],
)
def test_labels_dtype_choice(tmp_path, max_value, dtype, expected):
    labels = np.zeros((8, 9), dtype=dtype)
    labels[3, 4] = max_value
    path = write_labels_tiff(tmp_path / "l.tif", labels)
    back, px = read_labels_tiff(path)
    assert back.dtype == expected
    np.testing.assert_array_equal(back, labels.astype(expected))
    assert px is None


@pytest.mark.parametrize(
    ("labels", "phrase"),
    [
        (np.full((4, 4), 65536, np.int64), "more than a 16-bit TIFF"),
        (np.full((4, 4), -1, np.int16), "negative"),
        (np.zeros((4, 4), np.float32), "integer array"),
        (np.zeros((2, 2, 4, 4), np.uint8), "expected YX or ZYX"),
        (np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_bad_labels_rejected(tmp_path, labels, phrase):
    path = tmp_path / "bad.tif"
    with pytest.raises(InputError, match=phrase):
        write_labels_tiff(path, labels)
    assert not path.exists()
    assert _tmp_files(tmp_path) == []


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_pixel_size_rejected(tmp_path, bad):
    with pytest.raises(InputError, match="pixel size must be a positive number"):
        write_labels_tiff(tmp_path / "x.tif", np.zeros((4, 4), np.uint8), pixel_size_nm=bad)


@pytest.mark.parametrize("px", [0.1234567, 1.25, 3.3333333, 12.345678, 0.0137, 1234.5])
def test_pixel_size_roundtrip_precision(tmp_path, px):
    path = write_labels_tiff(tmp_path / "p.tif", np.ones((6, 6), np.uint8), pixel_size_nm=px)
    _, back = read_labels_tiff(path)
    assert back == pytest.approx(px, rel=1e-6)


def test_labels_file_is_imagej_compatible(tmp_path):
    labels = RNG.integers(0, 3, size=(40, 40)).astype(np.uint8)
    path = write_labels_tiff(tmp_path / "ij.tif", labels, pixel_size_nm=2.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["unit"] == "nm"
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        num, den = page.tags["XResolution"].value
        assert den / num == pytest.approx(2.5)


def test_class_names_roundtrip(tmp_path):
    names = ["background", "membrane", "Mitochondrien-Außenmembran"]
    labels = RNG.integers(0, 3, size=(16, 16)).astype(np.uint8)
    path = write_labels_tiff(tmp_path / "n.tif", labels, class_names=names)
    assert read_labels_class_names(path) == names
    with tifffile.TiffFile(path) as tif:
        info = tif.imagej_metadata["Info"]
    assert "1: membrane" in info  # human-readable in Fiji's Image > Show Info


def test_class_names_absent(tmp_path):
    path = write_labels_tiff(tmp_path / "n.tif", np.zeros((4, 4), np.uint8))
    assert read_labels_class_names(path) is None


def test_no_overwrite_without_flag(tmp_path):
    path = tmp_path / "out.tif"
    write_labels_tiff(path, np.ones((8, 8), np.uint8))
    before = path.read_bytes()

    with pytest.raises(InputError, match="already exists; pass --overwrite") as info:
        write_labels_tiff(path, np.full((8, 8), 2, np.uint8))

    assert isinstance(info.value, FileExistsError)
    assert isinstance(info.value, OutputExistsError)
    assert path.read_bytes() == before
    assert _tmp_files(tmp_path) == []


def test_overwrite_with_flag(tmp_path):
    path = tmp_path / "out.tif"
    write_labels_tiff(path, np.ones((8, 8), np.uint8))
    write_labels_tiff(path, np.full((8, 8), 2, np.uint8), overwrite=True)
    back, _ = read_labels_tiff(path)
    assert (back == 2).all()


def test_labels_non_ascii_path(tmp_path):
    path = tmp_path / "Zellen_µm_ö_labels.tif"
    labels = RNG.integers(0, 5, size=(10, 12)).astype(np.uint8)
    write_labels_tiff(path, labels, pixel_size_nm=3.0)
    back, px = read_labels_tiff(path)
    np.testing.assert_array_equal(back, labels)
    assert px == pytest.approx(3.0)


def test_write_labels_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_labels_tiff(tmp_path / "missing" / "l.tif", np.zeros((4, 4), np.uint8))


def test_read_labels_rejects_float_image(tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="not integer labels"):
        read_labels_tiff(path)


def test_read_labels_missing_and_wrong_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_labels_tiff(tmp_path / "none.tif")
    path = tmp_path / "labels.mrc"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_labels_tiff(path)


@pytest.mark.parametrize(
    ("input_name", "suffix", "expected"),
    [
        ("cell_01.tif", "_labels.tif", "cell_01_labels.tif"),
        ("tomo.mrc", "_labels.tif", "tomo_labels.tif"),
        ("cells.ome.tif", "_labels.tif", "cells_labels.tif"),
        ("a.b.tiff", "_seg.tif", "a.b_seg.tif"),
    ],
)
def test_labels_output_path(tmp_path, input_name, suffix, expected):
    out = labels_output_path(tmp_path / "out", Path("/data/in") / input_name, suffix=suffix)
    assert out == tmp_path / "out" / expected


# --------------------------------------------------------------------------- atomic


def test_atomic_write_creates_file_via_hidden_temp(tmp_path):
    path = tmp_path / "data.bin"
    seen: list[list[str]] = []

    def write(f):
        f.write(b"hello")
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    assert atomic_write(path, write, overwrite=False) == path
    assert path.read_bytes() == b"hello"
    (temp_name,) = seen[0]
    assert temp_name.startswith(".")
    assert temp_name.endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old content")

    def failing(f):
        f.write(b"partial new content")
        raise RuntimeError("boom midway")

    with pytest.raises(RuntimeError, match="boom midway"):
        atomic_write(path, failing, overwrite=True)

    assert path.read_bytes() == b"old content"
    assert _tmp_files(tmp_path) == []


def test_atomic_write_failure_leaves_no_new_file(tmp_path):
    path = tmp_path / "new.bin"

    def failing(f):
        f.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_file_created_meanwhile(tmp_path):
    path = tmp_path / "race.bin"

    def write(f):
        f.write(b"mine")
        path.write_bytes(b"theirs")  # someone else creates the file during our write

    with pytest.raises(OutputExistsError, match="already exists"):
        atomic_write(path, write, overwrite=False)
    assert path.read_bytes() == b"theirs"
    assert _tmp_files(tmp_path) == []


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        atomic_write(tmp_path / "no" / "x.bin", lambda f: f.write(b"x"), overwrite=False)
    assert str(tmp_path / "no") in str(info.value)


def test_atomic_write_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(InputError, match="is not a folder"):
        atomic_write(blocker / "x.bin", lambda f: f.write(b"x"), overwrite=False)


def test_atomic_write_target_is_a_folder(tmp_path):
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        atomic_write(tmp_path / "dir.tif", lambda f: f.write(b"x"), overwrite=True)


def test_atomic_write_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only")
        with pytest.raises(InputError, match="not writable"):
            write_labels_tiff(folder / "l.tif", np.zeros((4, 4), np.uint8))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_atomic_write_not_writable_message(tmp_path, monkeypatch):
    """Same check as above, simulated so that it also runs as root."""
    real_access = os.access

    def fake_access(path, mode, *args, **kwargs):
        if Path(path) == tmp_path and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "access", fake_access)
    with pytest.raises(InputError, match="is not writable") as info:
        atomic_write(tmp_path / "x.bin", lambda f: f.write(b"x"), overwrite=False)
    assert str(tmp_path) in str(info.value)


def test_atomic_write_disk_full_becomes_input_error(tmp_path):
    def full(f):
        raise OSError(28, "No space left on device")  # ENOSPC

    with pytest.raises(InputError, match="not enough disk space"):
        atomic_write(tmp_path / "x.bin", full, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_unique_path(tmp_path):
    path = tmp_path / "export.tif"
    assert unique_path(path) == path
    path.write_bytes(b"x")
    assert unique_path(path) == tmp_path / "export (1).tif"
    (tmp_path / "export (1).tif").write_bytes(b"x")
    assert unique_path(path) == tmp_path / "export (2).tif"


def test_unique_path_keeps_compound_and_missing_suffix(tmp_path):
    ome = tmp_path / "cells.ome.tif"
    ome.write_bytes(b"x")
    assert unique_path(ome) == tmp_path / "cells (1).ome.tif"
    plain = tmp_path / "README"
    plain.write_bytes(b"x")
    assert unique_path(plain) == tmp_path / "README (1)"

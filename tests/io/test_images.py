"""Tests for napari_cryoseg.io.images: real files written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import tifffile

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.io import IMAGE_SUFFIXES, list_images, read_image, validate_image_array
from napari_cryoseg.io.images import unit_to_nm

RNG = np.random.default_rng(0)


def _image(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return RNG.normal(size=shape).astype(dt)
    info = np.iinfo(dt)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def _write_imagej(
    path: Path,
    data: np.ndarray,
    *,
    pixel_size: float | None = None,
    unit: str = "nm",
    axes: str | None = None,
    spacing: float | None = None,
    compression: str | None = None,
) -> Path:
    metadata: dict = {"axes": axes or ("YX" if data.ndim == 2 else "ZYX")}
    kwargs: dict = {}
    if pixel_size is not None:
        metadata["unit"] = unit
        kwargs["resolution"] = (1 / pixel_size, 1 / pixel_size)
    if spacing is not None:
        metadata["spacing"] = spacing
    tifffile.imwrite(path, data, imagej=True, metadata=metadata, compression=compression, **kwargs)
    return path


def _write_mrc(path: Path, data: np.ndarray, voxel_size: float | None = None) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


def _truncate(path: Path, fraction: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize(
    ("unit", "size_in_unit", "expected_nm"),
    [
        ("nm", 1.5, 1.5),
        ("um", 0.0125, 12.5),
        ("micron", 0.0034, 3.4),
        ("\\u00B5m", 0.002, 2.0),  # how Fiji escapes "µm" in the ImageJ description
    ],
)
def test_tiff_roundtrip_imagej_pixel_size(tmp_path, dtype, unit, size_in_unit, expected_nm):
    data = _image((40, 56), dtype)
    path = _write_imagej(tmp_path / "img.tif", data, pixel_size=size_in_unit, unit=unit)

    img = read_image(path)

    assert isinstance(img.data, np.ndarray)
    assert img.data.dtype == data.dtype
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_nm == pytest.approx(expected_nm, rel=1e-6)
    assert img.z_size_nm is None
    assert img.axes == "YX"
    assert img.path == path
    assert not img.is_lazy


def test_tiff_stack_with_spacing(tmp_path):
    data = _image((5, 32, 48), "uint16")
    path = _write_imagej(tmp_path / "stack.tif", data, pixel_size=0.8, spacing=2.5)

    img = read_image(path)

    np.testing.assert_array_equal(img.data, data)
    assert img.axes == "ZYX"
    assert img.pixel_size_nm == pytest.approx(0.8)
    assert img.z_size_nm == pytest.approx(2.5)


def test_tiff_time_series_axes(tmp_path):
    data = _image((3, 20, 24), "uint8")
    path = _write_imagej(tmp_path / "movie.tif", data, axes="TYX")

    img = read_image(path)

    assert img.axes == "TYX"
    assert img.z_size_nm is None
    np.testing.assert_array_equal(img.data, data)


def test_tiff_singleton_axes_are_squeezed(tmp_path):
    data = _image((1, 4, 1, 20, 24), "float32")
    path = _write_imagej(tmp_path / "sq.tif", data, axes="TZCYX")

    for lazy in (False, True):
        img = read_image(path, lazy=lazy)
        assert img.shape == (4, 20, 24)
        assert img.axes == "ZYX"
        np.testing.assert_array_equal(np.asarray(img.data), data[0, :, 0])


def test_tiff_without_calibration_has_no_pixel_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _image((16, 16), "uint16"))
    assert read_image(path).pixel_size_nm is None


def test_tiff_resolution_tag_in_centimeters(tmp_path):
    path = tmp_path / "cm.tif"
    # 1e6 pixels per cm = 10 nm per pixel
    tifffile.imwrite(
        path, _image((16, 16), "uint16"), resolution=(1e6, 1e6), resolutionunit="CENTIMETER"
    )
    assert read_image(path).pixel_size_nm == pytest.approx(10.0)


def test_tiff_default_72_dpi_is_not_a_pixel_size(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _image((16, 16), "uint8"), resolution=(72, 72), resolutionunit="INCH")
    assert read_image(path).pixel_size_nm is None


def test_ome_tiff_physical_size(tmp_path):
    data = _image((3, 20, 30), "uint16")
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.0125,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeZ": 20.0,
            "PhysicalSizeZUnit": "nm",
        },
    )
    img = read_image(path)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_nm == pytest.approx(12.5)
    assert img.z_size_nm == pytest.approx(20.0)


def test_big_endian_tiff_is_returned_in_native_byte_order(tmp_path):
    data = _image((16, 24), "uint16")
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, data, byteorder=">")
    img = read_image(path)
    assert img.data.dtype.isnative
    np.testing.assert_array_equal(img.data, data)


def test_bool_tiff_is_accepted(tmp_path):
    data = RNG.random((16, 16)) > 0.5
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, data)
    img = read_image(path)
    assert img.data.dtype == np.bool_
    np.testing.assert_array_equal(img.data, data)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_lazy_tiff_matches_eager(tmp_path, compression):
    data = _image((4, 64, 80), "uint16")
    path = _write_imagej(tmp_path / "lazy.tif", data, pixel_size=2.0, compression=compression)

    lazy = read_image(path, lazy=True)
    eager = read_image(path)

    assert isinstance(lazy.data, da.Array)
    assert lazy.is_lazy
    assert lazy.shape == (4, 64, 80)
    assert lazy.data.dtype == np.uint16
    assert lazy.pixel_size_nm == pytest.approx(2.0)
    assert lazy.axes == eager.axes == "ZYX"
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    np.testing.assert_array_equal(lazy.data[2].compute(), data[2])


def test_non_ascii_path(tmp_path):
    folder = tmp_path / "Daten_ä"
    folder.mkdir()
    data = _image((20, 20), "uint8")
    tif = _write_imagej(folder / "Zellen_µm_ö.tif", data, pixel_size=1.0)
    mrc = _write_mrc(folder / "Tomo_ß_é.mrc", data.astype(np.float32), voxel_size=10.0)

    np.testing.assert_array_equal(read_image(tif).data, data)
    np.testing.assert_array_equal(read_image(tif, lazy=True).data.compute(), data)
    assert read_image(mrc).pixel_size_nm == pytest.approx(1.0)
    assert list_images([folder]) == [mrc, tif]  # "Tomo" sorts before "Zellen"


# --------------------------------------------------------------------------- MRC


def test_mrc_roundtrip_voxel_size(tmp_path):
    data = _image((6, 30, 40), "float32")
    path = _write_mrc(tmp_path / "tomo.mrc", data, voxel_size=12.5)

    img = read_image(path)

    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_nm == pytest.approx(1.25)
    assert img.z_size_nm == pytest.approx(1.25)
    assert img.axes == "ZYX"


def test_mrc_2d_without_voxel_size(tmp_path):
    data = _image((30, 40), "int16")
    path = _write_mrc(tmp_path / "img.mrc", data)

    img = read_image(path)

    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_nm is None  # voxel size 0 in the header means unknown
    assert img.z_size_nm is None
    assert img.axes == "YX"


def test_mrcs_stack_is_tyx(tmp_path):
    data = _image((5, 16, 16), "float32")
    path = tmp_path / "particles.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 4.0
    img = read_image(path)
    assert img.axes == "TYX"
    assert img.pixel_size_nm == pytest.approx(0.4)
    assert img.z_size_nm is None
    np.testing.assert_array_equal(img.data, data)


def test_lazy_mrc_matches_eager(tmp_path):
    data = _image((4, 24, 32), "uint16")
    path = _write_mrc(tmp_path / "vol.map", data, voxel_size=8.0)

    lazy = read_image(path, lazy=True)
    eager = read_image(path)

    assert isinstance(lazy.data, da.Array)
    assert lazy.shape == data.shape
    assert lazy.pixel_size_nm == pytest.approx(0.8)
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    np.testing.assert_array_equal(eager.data, data)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("lazy", [False, True])
def test_missing_file(tmp_path, lazy):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.tif", lazy=lazy)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("name", ["empty.tif", "empty.mrc"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)") as info:
        read_image(path)
    assert name in str(info.value)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(
    ("shape", "compression"),
    [((4, 64, 64), None), ((4, 64, 64), "zlib"), ((128, 128), None), ((128, 128), "zlib")],
)
def test_truncated_tiff(tmp_path, lazy, shape, compression):
    path = _write_imagej(
        tmp_path / "cut.tif", _image(shape, "uint16"), pixel_size=1.0, compression=compression
    )
    _truncate(path)
    with pytest.raises(InputError, match="truncated") as info:
        read_image(path, lazy=lazy)
    assert "cut.tif" in str(info.value)
    assert "\n" not in str(info.value)


def test_text_file_renamed_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError, match="not a valid TIFF") as info:
        read_image(path)
    assert "notes.tif" in str(info.value)


@pytest.mark.parametrize("imagej", [False, True])
def test_rgb_tiff(tmp_path, imagej):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, _image((20, 30, 3), "uint8"), photometric="rgb", imagej=imagej)
    with pytest.raises(InputError, match="RGB image; convert it to grayscale") as info:
        read_image(path)
    assert "Image > Type > 8-bit" in str(info.value)


def test_rgba_array_rejected():
    with pytest.raises(InputError, match="RGB"):
        validate_image_array(np.zeros((20, 30, 4), np.uint8))


@pytest.mark.parametrize(
    ("shape", "axes"), [((2, 3, 16, 16), "TZYX"), ((2, 3, 2, 16, 16), "TZCYX")]
)
def test_4d_and_5d_tiff(tmp_path, shape, axes):
    path = _write_imagej(tmp_path / "hyper.tif", _image(shape, "uint8"), axes=axes)
    with pytest.raises(InputError, match="expected YX, ZYX or TYX") as info:
        read_image(path)
    assert "has shape" in str(info.value)


def test_multichannel_tiff(tmp_path):
    path = _write_imagej(tmp_path / "chan.tif", _image((2, 16, 16), "uint16"), axes="CYX")
    with pytest.raises(InputError, match="2 channels"):
        read_image(path)


def test_complex_tiff(tmp_path):
    path = tmp_path / "fft.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.complex64))
    with pytest.raises(InputError, match="complex"):
        read_image(path)


@pytest.mark.parametrize("shape", [(1, 8), (8, 1), (1, 1)])
def test_image_smaller_than_2x2(tmp_path, shape):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8))
    with pytest.raises(InputError, match="smaller than 2×2"):
        read_image(path)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("damage", ["garbage", "zeros"])
def test_broken_mrc_header(tmp_path, lazy, damage):
    path = _write_mrc(tmp_path / "broken.mrc", _image((3, 20, 20), "float32"), voxel_size=5.0)
    raw = bytearray(path.read_bytes())
    raw[:64] = bytes(range(190, 254)) if damage == "garbage" else bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="invalid header") as info:
        read_image(path, lazy=lazy)
    assert "broken.mrc" in str(info.value)


def test_text_file_renamed_mrc(tmp_path):
    path = tmp_path / "fake.mrc"
    path.write_text("hello")
    with pytest.raises(InputError, match="invalid header"):
        read_image(path)


def test_truncated_mrc(tmp_path):
    path = _write_mrc(tmp_path / "cut.mrc", _image((4, 32, 32), "float32"))
    _truncate(path, 0.6)
    with pytest.raises(InputError, match="truncated") as info:
        read_image(path)
    assert "cut.mrc" in str(info.value)
    with pytest.raises(InputError, match="truncated"):
        read_image(path, lazy=True)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError, match="unsupported file type '.png'") as info:
        read_image(path)
    assert ".mrc" in str(info.value)


def test_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_image(tmp_path / "missing.mrc")


# --------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 2), np.uint8),
        np.zeros((3, 10, 12), np.float64),
        np.array([[np.nan, np.inf], [-np.inf, 1.0]], np.float32),
        np.ones((4, 4), bool),
        np.zeros((5, 6), np.int64),
        da.zeros((2, 64, 64), dtype=np.float32, chunks=(1, 64, 64)),
    ],
)
def test_validate_accepts(array):
    validate_image_array(array)


@pytest.mark.parametrize(
    ("array", "phrase"),
    [
        (np.zeros(10, np.uint8), "has shape"),
        (np.zeros((2, 3, 4, 5), np.uint8), "expected YX, ZYX or TYX"),
        (np.zeros((4, 4), np.complex128), "complex"),
        (np.array([["a", "b"], ["c", "d"]]), "non-numeric"),
        (np.zeros((4, 4), object), "non-numeric"),
        (np.zeros((0, 5), np.float32), "empty"),
        (np.zeros((1, 5), np.float32), "smaller than 2×2"),
        (np.zeros((10, 10, 3), np.uint8), "RGB"),
    ],
)
def test_validate_rejects(array, phrase):
    with pytest.raises(InputError, match=phrase):
        validate_image_array(array)


def test_validate_message_uses_name():
    with pytest.raises(InputError, match="layer 'cells' has shape"):
        validate_image_array(np.zeros(3), name="layer 'cells'")


# --------------------------------------------------------------------------- list_images


def test_list_images_folder_sorted_and_filtered(tmp_path):
    names = ["img10.tif", "img2.tif", "Img1.TIF", "b.mrc", "a.mrcs", "c.map", "tilt.st"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "photo.png").write_bytes(b"x")
    (tmp_path / ".hidden.tif").write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()  # a folder named like an image is skipped
    (tmp_path / "sub.tif" / "inner.tif").write_bytes(b"x")

    found = list_images([tmp_path])

    assert [p.name for p in found] == [
        "a.mrcs",
        "b.mrc",
        "c.map",
        "Img1.TIF",
        "img2.tif",
        "img10.tif",
        "tilt.st",
    ]
    assert all(p.suffix.lower() in IMAGE_SUFFIXES for p in found)


def test_list_images_files_and_folders_without_duplicates(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    a = folder / "a.tif"
    b = folder / "b.tif"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    extra = tmp_path / "extra.mrc"
    extra.write_bytes(b"x")

    assert list_images([str(b), folder, extra]) == [b, a, extra]
    assert list_images(str(a)) == [a]


def test_list_images_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no images") as info:
        list_images([tmp_path])
    assert str(tmp_path) in str(info.value)


def test_list_images_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        list_images([tmp_path])


def test_list_images_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        list_images([tmp_path / "missing"])
    assert "missing" in str(info.value)


def test_list_images_unsupported_file(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        list_images([path])


def test_list_images_no_inputs():
    with pytest.raises(InputError, match="no input"):
        list_images([])


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("unit", "nm"),
    [
        ("nm", 1.0),
        ("µm", 1000.0),
        ("μm", 1000.0),  # Greek mu
        ("\\u00B5m", 1000.0),
        ("micron", 1000.0),
        ("Å", 0.1),
        ("\\u00C5", 0.1),
        ("angstrom", 0.1),
        ("pixel", None),
        ("", None),
        (None, None),
    ],
)
def test_unit_to_nm(unit, nm):
    assert unit_to_nm(unit) == nm

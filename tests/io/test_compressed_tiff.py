"""LZW / JPEG compressed TIFFs (as Pillow and many microscopes write them) are read; when
the codec is really missing, the message names it instead of blaming a corrupt file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_cryoseg.io import read_image


@pytest.fixture
def compressed(tmp_path):
    data = (np.arange(64 * 80).reshape(64, 80) % 251).astype(np.uint8)
    Image.fromarray(data).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    Image.fromarray(data).save(tmp_path / "jpeg.tif", compression="jpeg", quality=95)
    return data, tmp_path


def test_lzw_and_jpeg_tiffs_read(compressed):
    data, folder = compressed
    np.testing.assert_array_equal(read_image(folder / "lzw.tif").data, data)
    lazy = read_image(folder / "lzw.tif", lazy=True).data
    np.testing.assert_array_equal(np.asarray(lazy), data)
    jpeg = read_image(folder / "jpeg.tif").data
    assert jpeg.shape == data.shape and np.abs(jpeg.astype(int) - data).mean() < 4


def test_missing_codec_is_named(compressed):
    """A real import failure of imagecodecs (in a fresh interpreter), eager and lazy."""
    _data, folder = compressed
    code = (
        "import sys; sys.modules['imagecodecs'] = None\n"
        "from napari_cryoseg.io import read_image\n"
        "for name in ('lzw.tif', 'jpeg.tif'):\n"
        "    for lazy in (False, True):\n"
        "        try:\n"
        f"            read_image(r'{folder}/' + name, lazy=lazy)\n"
        "        except Exception as err:\n"
        "            print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 4
    for line, codec in zip(out, ("LZW", "LZW", "JPEG", "JPEG")):
        assert line.startswith("InputError")
        assert f"is {codec}-compressed and no decoder for {codec} is installed" in line
        assert "pip install imagecodecs" in line and "corrupt" not in line

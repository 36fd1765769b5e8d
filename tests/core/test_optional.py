"""Missing optional libraries end in one line naming the extra, in the CLI and the library.

``sys.modules[name] = None`` makes ``import name`` raise ImportError: a real import
failure, as on a machine without the library.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.core.optional import MissingExtraError, available, require


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)
    with pytest.raises(MissingExtraError) as info:
        require("zarr", "writing OME-Zarr labels")
    message = str(info.value)
    assert message.startswith("writing OME-Zarr labels needs the 'zarr' extra: ")
    assert "pip install 'napari-cryoseg[zarr]'" in message and "\n" not in message
    assert isinstance(info.value, CryoSegError) and info.value.extra == "zarr"
    assert not available("zarr")
    assert require("json", "x").dumps([1]) == "[1]"  # present modules import normally


@pytest.mark.parametrize(("module", "extra"), [
    ("distributed", "distributed"), ("onnx", "onnx"), ("bioimageio.core", "bioimageio"),
    ("sklearn", "objects"), ("matplotlib", "plots"), ("ome_zarr.writer", "zarr"),
])
def test_every_optional_module_has_an_extra(monkeypatch, module, extra):
    monkeypatch.setitem(__import__("sys").modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"needs the '{extra}' extra: pip install "
                                                rf"'napari-cryoseg\[{extra}\]'"):
        require(module, "this feature")


def _tiff(tmp_path):
    import tifffile

    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    return path


def test_cli_zarr_output_without_zarr(monkeypatch, tmp_path, capsys):
    image = _tiff(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)
    code = main(["segment", str(image), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--output-format", "zarr"])
    err = capsys.readouterr().err
    assert code == 2
    assert "needs the 'zarr' extra: pip install 'napari-cryoseg[zarr]'" in err
    assert "Traceback" not in err


def test_cli_scheduler_without_distributed(monkeypatch, tmp_path, capsys):
    image = _tiff(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    code = main(["segment", str(image), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--scheduler", "local:1"])
    err = capsys.readouterr().err
    assert code == 2 and "needs the 'distributed' extra" in err and "Traceback" not in err


def test_cli_onnx_export_without_onnx(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    code = main(["export", "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the 'onnx' extra: pip install 'napari-cryoseg[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bioimageio_without_library(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "bioimageio.spec", None)
    code = main(["export", "--bioimageio", str(tmp_path / "pkg")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the 'bioimageio' extra" in err
    assert not (tmp_path / "pkg").exists()

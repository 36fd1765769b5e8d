"""Model exchange: ONNX export (checked with onnxruntime) and bioimage.io packages."""

from __future__ import annotations

import pytest

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset


@pytest.fixture
def model_path(tmp_path):
    model = ModelFile.new(preset("tiny", n_classes=3), class_names=["bg", "cell", "ice"],
                          seed=0)
    return save_model(model, tmp_path / "tiny.pt")


def test_onnx_matches_pytorch(model_path, tmp_path):
    pytest.importorskip("onnxruntime")
    from napari_cryoseg.model.checkpoint import load_model
    from napari_cryoseg.model.export import export_onnx, verify_onnx

    model = load_model(model_path)
    out = tmp_path / "m.onnx"
    check = export_onnx(model, out)
    assert check.ok and check.max_abs_diff < 1e-4
    # Dynamic batch, H and W: another size than the export example and the first check.
    other = verify_onnx(model, out, shape=(3, 64, 16))
    assert other.shape == (3, 3, 64, 16) and other.ok
    with pytest.raises(InputError):
        export_onnx(model, out)  # never overwrites silently
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["stride"] == "8" and "ice" in meta["class_names"]


def test_cli_export_onnx_prints_diff(model_path, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "cli.onnx"
    assert main(["export", str(model_path), "--onnx", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert out.stat().st_size > 0

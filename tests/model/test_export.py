"""Model exchange: ONNX export (checked with onnxruntime) and bioimage.io packages."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.predict import segment
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


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_bioimageio_round_trip(model_path, tmp_path, suffix, capsys):
    from napari_cryoseg.model.bioimageio import read_rdf, validate_package
    from napari_cryoseg.model.checkpoint import load_model

    out = tmp_path / f"package{suffix}"
    assert main(["export", str(model_path), "--bioimageio", str(out)]) == 0
    printed = capsys.readouterr()
    assert "bioimage.io validation" in printed.out + printed.err
    if suffix:
        names = set(zipfile.ZipFile(out).namelist())
    else:
        names = {p.name for p in out.iterdir()}
    assert {"rdf.yaml", "weights.pt", "unet.py", "test_input.npy", "test_output.npy",
            "cover.png", "documentation.md"} <= names
    rdf = read_rdf(out)
    assert rdf["format_version"].startswith("0.5")
    axes = rdf["inputs"][0]["axes"]
    assert axes[2]["size"] == {"min": 8, "step": 8}
    pre = rdf["inputs"][0]["preprocessing"][0]
    assert pre["id"] == "scale_range" and pre["kwargs"]["min_percentile"] == 1.0
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "CryoSegUNet"
    ok, message = validate_package(out)
    assert ok, message
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        assert "validation skipped" in message  # skipped with a reason, not silently

    imported = tmp_path / f"imported{suffix}.pt"
    assert main(["import-bioimageio", str(out), "--out", str(imported)]) == 0
    original, back = load_model(model_path), load_model(imported)
    assert back.class_names == original.class_names
    assert back.normalization == original.normalization
    image = np.random.default_rng(0).random((40, 56)).astype(np.float32)
    a = drain(segment(image, original, device="cpu", return_probabilities=True,
                      mixed_precision=False))
    b = drain(segment(image, back, device="cpu", return_probabilities=True,
                      mixed_precision=False))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_import_refuses_foreign_architecture(model_path, tmp_path):
    import yaml

    from napari_cryoseg.model.bioimageio import export_bioimageio, import_bioimageio
    from napari_cryoseg.model.checkpoint import load_model

    out = export_bioimageio(load_model(model_path), tmp_path / "pkg", sample_size=32)
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "OtherNet"
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ModelFileError, match="OtherNet"):
        import_bioimageio(out)
    with pytest.raises(InputError):
        export_bioimageio(load_model(model_path), out)  # exists: refused
    rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "CryoSegUNet"
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    torch.save({"x": torch.zeros(1)}, out / "weights.pt")  # replaced weights -> refused
    with pytest.raises(ModelFileError, match="sha256"):
        import_bioimageio(out)

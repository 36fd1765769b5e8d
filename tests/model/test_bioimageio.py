"""bioimage.io: export through bioimageio.spec (3 weight formats, bioimageio.core's test),
import of our own packages, segmentation with a foreign package, and unsafe packages."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile

from bioimageio_helpers import foreign_package
from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset

pytest.importorskip("bioimageio.core", reason="the 'bioimageio' extra is not installed")


@pytest.fixture
def model_path(tmp_path):
    model = ModelFile.new(preset("tiny", n_classes=3, base_channels=4),
                          class_names=["bg", "cell", "ice"], seed=0)
    return save_model(model, tmp_path / "tiny.pt")


def test_export_passes_bioimageio_test_with_torchscript_and_onnx(model_path, tmp_path,
                                                                 capsys):
    out = tmp_path / "package"
    assert main(["export", str(model_path), "--bioimageio", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bioimageio.core test_model: passed" in printed
    from bioimageio.spec import load_model_description

    descr = load_model_description(str(out), perform_io_checks=False)
    formats = {name for name, entry in descr.weights if entry is not None}
    assert formats == {"pytorch_state_dict", "torchscript", "onnx"}
    assert descr.weights.torchscript.parent == "pytorch_state_dict"
    assert [str(a.id) for a in descr.inputs[0].axes] == ["batch", "channel", "y", "x"]
    assert descr.inputs[0].axes[2].size.step == 8
    assert descr.config.model_extra["napari-cryoseg"]["class_names"] == ["bg", "cell", "ice"]


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_own_package_round_trip_can_be_fine_tuned(model_path, tmp_path, suffix):
    out = tmp_path / f"package{suffix}"
    assert main(["export", str(model_path), "--bioimageio", str(out), "--skip-test"]) == 0
    if suffix:
        assert "weights_torchscript.pt" in set(zipfile.ZipFile(out).namelist())
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
    from napari_cryoseg.engine.inference.bioimageio_model import load_any_model

    assert isinstance(load_any_model(out), ModelFile)  # dock / --model: fine-tunable


def test_overwrite_replaces_only_the_packages_own_files(model_path, tmp_path, capsys):
    """`export --bioimageio DIR --overwrite` once emptied DIR (and '.')."""
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    from napari_cryoseg.model.bioimageio import export_bioimageio

    with pytest.raises(CryoSegError, match="already exists"):
        export_bioimageio(load_model(model_path), out)
    args = ["export", str(model_path), "--bioimageio", str(out), "--overwrite", "--skip-test"]
    assert main(args) == 0
    assert (out / "notes.txt").read_text() == "mine"
    first = (out / "weights.pt").stat().st_mtime_ns
    assert main(args) == 0  # the package's own files are replaced on a second export
    assert (out / "notes.txt").read_text() == "mine" and (out / "rdf.yaml").is_file()
    assert (out / "weights.pt").stat().st_mtime_ns >= first
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("my project")
    code = main(["export", str(model_path), "--bioimageio", str(work), "--overwrite",
                 "--skip-test"])
    assert code == 2 and "is not part of a bioimage.io package" in capsys.readouterr().err
    assert (work / "README.md").read_text() == "my project"
    assert sorted(p.name for p in work.iterdir()) == ["README.md"]


def test_foreign_package_segments_through_cli_but_is_not_fine_tuned(tmp_path, capsys):
    package = foreign_package(tmp_path)
    image = np.random.default_rng(1).integers(0, 4000, (100, 90)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "img.tif", image)
    assert main(["segment", str(tmp_path / "img.tif"), "--model", str(package),
                 "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    labels = tifffile.imread(tmp_path / "o" / "img_labels.tif")
    # The model says "bright" (class 1) where the normalised pixel is above the mean.
    expected = (image > image.mean()).astype(np.uint8)
    assert labels.shape == image.shape  # 100 x 90: not multiples of the step 8
    assert (labels == expected).mean() == 1.0
    from napari_cryoseg.io.labels import read_labels_class_names

    assert read_labels_class_names(tmp_path / "o" / "img_labels.tif") == ["dark", "bright"]
    capsys.readouterr()
    assert main(["import-bioimageio", str(package), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "this bioimage.io model (two class conv) can be used to segment but not " \
           "fine-tuned" in err
    from napari_cryoseg.engine.inference.bioimageio_model import load_any_model
    from napari_cryoseg.engine.training.finetune import finetune

    foreign = load_any_model(package)
    with pytest.raises(CryoSegError, match="not fine-tuned"):
        drain(finetune(foreign, [image], [expected]))

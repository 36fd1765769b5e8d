"""bioimage.io: export through bioimageio.spec (3 weight formats, bioimageio.core's test),
import of our own packages, segmentation with a foreign package, and unsafe packages."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.predict import segment
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
    from napari_cryoseg.engine.bioimageio_model import load_any_model

    assert isinstance(load_any_model(out), ModelFile)  # dock / --model: fine-tunable


def test_overwrite_replaces_only_the_packages_own_files(model_path, tmp_path, capsys):
    """`export --bioimageio DIR --overwrite` once emptied DIR (and '.')."""
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CryoSegError, match="already exists"):
        from napari_cryoseg.model.bioimageio import export_bioimageio

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


def _foreign_package(tmp_path):
    """A 2-class conv net of another architecture, described with bioimageio.spec."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    class TwoClass(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor([[[[0.0, 0, 0], [0, -1, 0], [0, 0, 0]]],
                                                     [[[0.0, 0, 0], [0, 1, 0], [0, 0, 0]]]]))
                self.conv.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.conv(x), dim=1)

    folder = tmp_path / "foreign_src"
    folder.mkdir()
    net = TwoClass().eval()
    torch.jit.script(net).save(str(folder / "net.pt"))
    rng = np.random.default_rng(0)
    raw = rng.random((1, 1, 32, 32)).astype(np.float32)
    norm = (raw - raw.mean()) / (raw.std() + 1e-6)
    with torch.no_grad():
        out = net(torch.from_numpy(norm)).numpy()
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", out)
    (folder / "README.md").write_text("# Two class\n\n## Validation\n\nnone\n")
    size = v0_5.ParameterizedSize(min=16, step=8)
    descr = v0_5.ModelDescr(
        name="two class conv", description="a test model", license="MIT",
        authors=[v0_5.Author(name="test")], cite=[v0_5.CiteEntry(text="test", doi="10.5281/zenodo.5764892")],
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[v0_5.InputTensorDescr(
            id=v0_5.TensorId("image"),
            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
            test_tensor=v0_5.FileDescr(source=folder / "in.npy"),
            preprocessing=[v0_5.ZeroMeanUnitVarianceDescr()])],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId("prob"),
            axes=[v0_5.BatchAxis(),
                  v0_5.ChannelAxis(channel_names=[v0_5.Identifier("dark"),
                                                  v0_5.Identifier("bright")]),
                  v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId("y"), halo=4,
                                               size=v0_5.SizeReference(
                                                   tensor_id=v0_5.TensorId("image"),
                                                   axis_id=v0_5.AxisId("y"))),
                  v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId("x"), halo=4,
                                               size=v0_5.SizeReference(
                                                   tensor_id=v0_5.TensorId("image"),
                                                   axis_id=v0_5.AxisId("x")))],
            test_tensor=v0_5.FileDescr(source=folder / "out.npy"))],
        weights=v0_5.WeightsDescr(torchscript=v0_5.TorchscriptWeightsDescr(
            source=folder / "net.pt", pytorch_version=v0_5.Version("2.0"))),
    )
    return save_bioimageio_package(descr, output_path=tmp_path / "foreign.zip")


def test_foreign_package_segments_through_cli_but_is_not_fine_tuned(tmp_path, capsys):
    package = _foreign_package(tmp_path)
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
    from napari_cryoseg.engine.bioimageio_model import load_any_model
    from napari_cryoseg.engine.finetune import finetune

    foreign = load_any_model(package)
    with pytest.raises(CryoSegError, match="not fine-tuned"):
        drain(finetune(foreign, [image], [expected]))

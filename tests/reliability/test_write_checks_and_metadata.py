"""Runs never end with a file the tool refuses; ordinary commands on odd but valid
inputs give a result or one line; metadata that cannot be stored safely is escaped or
dropped (the labels themselves are always kept)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import ModelFileError
from napari_cryoseg.core.normalization import NormalizationConfig
from napari_cryoseg.engine.training.adapt import adapt_batchnorm
from napari_cryoseg.io.labels import (
    read_labels_class_names,
    write_labels_tiff,
)
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.unet import UNet

TINY = UNetConfig(depth=1, base_channels=4)


def _run(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def _refused(code, err):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.pt"
    save_model(ModelFile.new(TINY, seed=0), path)
    return path


@pytest.fixture
def pairs(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", rng.random((64, 64)).astype(np.float32))
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    tifffile.imwrite(tmp_path / "masks" / "a.tif", mask)
    return tmp_path / "images", tmp_path / "masks"


# -- 5. validate before writing -------------------------------------------------------

def test_add_class_with_a_name_too_long_is_refused_before_training(tmp_path, capsys,
                                                                   model_path, pairs):
    out = tmp_path / "out.pt"
    code, err, _ = _run(capsys, ["finetune", "--model", str(model_path), "--images",
                                 str(pairs[0]), "--masks", str(pairs[1]), "--out", str(out),
                                 "--add-class", "x" * 201, "--steps", "1"])
    _refused(code, err)
    assert "--add-class" in err and "200" in err and not out.exists()


@pytest.mark.parametrize("extra", ["tiling: {tile: 1000000000000}", "pixel_size_nm: .nan",
                                   "temporal_context: 1000", "class_names: [a, \"b\\nc\"]"])
def test_import_refuses_settings_a_model_file_cannot_hold(tmp_path, capsys, extra):
    package = tmp_path / "pkg"
    package.mkdir()
    torch.save(UNet(TINY).state_dict(), package / "weights.pt")
    (package / "rdf.yaml").write_text(
        "type: model\nformat_version: 0.5.4\nname: tiny\nweights:\n  pytorch_state_dict:\n"
        "    source: weights.pt\n    architecture: {callable: CryoSegUNet, source: unet.py,"
        " kwargs: {depth: 1, base_channels: 4}}\n    pytorch_version: '2.0'\n"
        f"config:\n  napari-cryoseg: {{{extra}}}\n")
    out = tmp_path / "m.pt"
    code, err, _ = _run(capsys, ["import-bioimageio", str(package), "--out", str(out)])
    _refused(code, err)
    assert not out.exists()


def test_save_model_refuses_what_load_model_would_refuse(tmp_path):
    model = ModelFile.new(TINY, seed=0)
    model.class_names = ["background", "line\nbreak"]
    with pytest.raises(ModelFileError, match="control characters"):
        save_model(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    model.class_names = ["background", "ok"]
    model.pixel_size_nm = math.nan
    with pytest.raises(ModelFileError, match="pixel_size_nm"):
        save_model(model, tmp_path / "m.pt")


# -- 6. ordinary commands -------------------------------------------------------------

def test_finetune_add_class_on_a_foreign_model_is_one_line(tmp_path, capsys, pairs):
    pytest.importorskip("bioimageio.core")
    from bioimageio_helpers import foreign_package

    package = foreign_package(tmp_path)
    code, err, _ = _run(capsys, ["finetune", "--model", str(package), "--images",
                                 str(pairs[0]), "--masks", str(pairs[1]), "--out",
                                 str(tmp_path / "o.pt"), "--add-class", "new"])
    _refused(code, err)
    assert "not" in err and "fine-tuned" in err


def test_unlabelled_stack_adapts_batchnorm_plane_by_plane():
    net = UNet(TINY)
    stack = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32) * 1000
    layers = adapt_batchnorm(net, [stack], NormalizationConfig(), torch.device("cpu"),
                             patch=32, n_patches=4, batch=2, mixed_precision=False)
    assert layers > 0
    means = [m.running_mean for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.isfinite(m).all() for m in means)


def test_finetune_with_an_unlabelled_stack(tmp_path, capsys, model_path, pairs):
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    tifffile.imwrite(unlabelled / "stack.tif",
                     np.random.default_rng(1).random((5, 64, 64)).astype(np.float32))
    out = tmp_path / "out.pt"
    code, err, _ = _run(capsys, ["finetune", "--model", str(model_path), "--images",
                                 str(pairs[0]), "--masks", str(pairs[1]), "--unlabelled",
                                 str(unlabelled), "--out", str(out), "--steps", "2",
                                 "--device", "cpu"])
    assert code == 0, err
    assert out.is_file()


def test_segment_keeps_labels_when_the_ome_pixel_size_is_unusable(tmp_path, capsys,
                                                                  model_path):
    image = tmp_path / "tiny_px.ome.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((48, 48)).astype(np.float32),
                     ome=True, metadata={"axes": "YX", "PhysicalSizeX": 1e-20,
                                         "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 1e-20,
                                         "PhysicalSizeYUnit": "nm"})
    out = tmp_path / "out"
    code, err, _ = _run(capsys, ["segment", str(image), "--model", str(model_path),
                                 "--out", str(out), "--device", "cpu"])
    assert code == 0, err
    assert "not usable" in err
    labels = list(out.glob("*_labels.tif"))
    assert len(labels) == 1 and tifffile.imread(labels[0]).shape == (48, 48)


def test_measure_labels_above_2_to_the_31(tmp_path, capsys):
    labels = np.zeros((32, 32), np.uint32)
    labels[4:10, 4:10] = 3_000_000_000
    labels[20:25, 20:25] = 1
    path = tmp_path / "big_labels.tif"
    tifffile.imwrite(path, labels)
    out = tmp_path / "objects.csv"
    code, err, _ = _run(capsys, ["measure", "--labels", str(path), "--out", str(out)])
    assert code == 0, err
    text = out.read_text()
    assert "3000000000" in text


@pytest.mark.parametrize("name", ["_", "class", "None"])
def test_export_with_a_class_named_underscore_or_a_keyword(tmp_path, capsys, name):
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    model = ModelFile.new(TINY.with_(n_classes=3), seed=0,
                          class_names=["background", name, "a b"])
    path = tmp_path / "m.pt"
    save_model(model, path)
    code, err, _ = _run(capsys, ["export", str(path), "--bioimageio", str(tmp_path / "p.zip"),
                                 "--skip-test"])
    assert code == 0, err
    assert (tmp_path / "p.zip").is_file()


def test_crafted_zarr_colours_do_not_break_the_reader(tmp_path):
    pytest.importorskip("ome_zarr")
    from napari_cryoseg.contributions.labels_reader import read_labels_layers
    from napari_cryoseg.io.zarr_labels import LabelsZarrWriter

    path = tmp_path / "x_labels.zarr"
    with LabelsZarrWriter(path, (32, 32), np.uint8, class_names=["bg", "a"],
                          class_colors=["#000000", "#ff0000"]) as writer:
        writer.array[:] = 1
        writer.commit()
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["cryoseg"]["class_colors"] = ["#000000", "not-a-colour(((("]
    meta["attributes"]["cryoseg"]["class_names"] = "not a list"
    (path / "zarr.json").write_text(json.dumps(meta))
    [(data, kwargs, kind)] = read_labels_layers(str(path))
    assert kind == "labels" and kwargs["colormap"] is not None


# -- 7. metadata ----------------------------------------------------------------------

def test_class_names_with_line_breaks_read_back_exactly(tmp_path):
    names = ["background", "two\nlines", 'x\ncryoseg_class_names=["evil"]', "tab\there"]
    path = write_labels_tiff(tmp_path / "l.tif", np.zeros((8, 8), np.uint8),
                             class_names=names)
    assert read_labels_class_names(path) == names
    info = tifffile.TiffFile(path).imagej_metadata["Info"]
    assert len(info.splitlines()) == 1 + len(names) + 1  # header, one per class, JSON


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0])
def test_non_finite_pixel_size_never_reaches_zarr_json(tmp_path, bad):
    pytest.importorskip("ome_zarr")
    from napari_cryoseg.io.zarr_labels import LabelsZarrWriter, read_labels_zarr

    path = tmp_path / "y_labels.zarr"
    with LabelsZarrWriter(path, (32, 32), np.uint8, pixel_size_nm=bad, z_size_nm=bad,
                          class_names=["bg", "a"]) as writer:
        writer.commit()

    def refuse(constant):
        raise AssertionError(f"{constant} in a JSON file")

    for meta in path.rglob("*.json"):
        json.loads(meta.read_text(), parse_constant=refuse)
    assert read_labels_zarr(path).pixel_size_nm is None

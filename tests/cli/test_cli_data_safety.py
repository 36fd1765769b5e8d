"""No command replaces or deletes a file it did not create, unless asked for that file.

``--overwrite`` means "replace my earlier outputs": never an input of the same command,
never a file of the same name that cryoseg did not write. Earlier outputs lying in an
input folder are skipped (with a note), not segmented as images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main
from napari_cryoseg.io import read_labels_tiff
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset

RNG = np.random.default_rng(3)


@pytest.fixture
def model(tmp_path) -> Path:
    return save_model(ModelFile.new(preset("tiny"), class_names=["background", "cell"], seed=0),
                      tmp_path / "model.pt")


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.random.default_rng(seed).random((48, 40)) * 255).astype(np.uint8)
    tifffile.imwrite(path, data)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _segment(*args) -> list[str]:
    return ["segment", *map(str, args), "--tile", "32", "--device", "cpu"]


def test_segment_in_place_never_replaces_an_input_labels_file(tmp_path, model, capsys):
    """A user's own ``cell_labels.tif`` (their ground truth) beside ``cell.tif``."""
    data = tmp_path / "data"
    _image(data / "cell.tif")
    truth = np.zeros((48, 40), np.uint8)
    truth[5:15, 5:15] = 1
    tifffile.imwrite(data / "cell_labels.tif", truth)  # not written by cryoseg: no header
    before = _snapshot(data)
    code = main(_segment(data, "--model", model, "--out", data, "--overwrite"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "would replace the input" in err and "cell_labels.tif" in err
    assert _snapshot(data) == before  # nothing replaced, nothing added


def test_rerun_in_place_skips_earlier_outputs_and_replaces_only_them(tmp_path, model, capsys):
    data = tmp_path / "data"
    for i in range(2):
        _image(data / f"img{i}.tif", seed=i)
    assert main(_segment(data, "--model", model, "--out", data, "--probabilities")) == 0
    first = _snapshot(data)
    assert sorted(first) == ["img0.tif", "img0_labels.tif", "img0_probabilities.tif",
                             "img1.tif", "img1_labels.tif", "img1_probabilities.tif"]
    capsys.readouterr()
    assert main(_segment(data, "--model", model, "--out", data, "--probabilities")) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(_segment(data, "--model", model, "--out", data, "--probabilities",
                         "--overwrite")) == 0
    out, err = capsys.readouterr()
    assert "skipped 4 earlier cryoseg output(s)" in err
    assert "segmented 2 of 2" in out
    second = _snapshot(data)
    assert sorted(second) == sorted(first)  # no img0_labels_labels.tif and the like
    assert second["img0.tif"] == first["img0.tif"] and second["img1.tif"] == first["img1.tif"]
    labels, _ = read_labels_tiff(data / "img0_labels.tif")
    assert labels.shape == (48, 40)


def test_overwrite_refuses_a_same_named_file_cryoseg_did_not_write(tmp_path, model, capsys):
    _image(tmp_path / "in" / "cell.tif")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cell_labels.tif").write_bytes(b"hand-drawn labels of someone else")
    code = main(_segment(tmp_path / "in", "--model", model, "--out", out, "--overwrite"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "was not written by cryoseg segment" in err
    assert (out / "cell_labels.tif").read_bytes() == b"hand-drawn labels of someone else"
    assert [p.name for p in out.iterdir()] == ["cell_labels.tif"]


def test_explicitly_named_output_file_is_segmented(tmp_path, model, capsys):
    """Only folder listings skip earlier outputs: a file named on purpose is used."""
    data = tmp_path / "data"
    _image(data / "a.tif")
    assert main(_segment(data, "--model", model, "--out", data)) == 0
    capsys.readouterr()
    assert main(_segment(data / "a_labels.tif", "--model", model, "--out",
                         tmp_path / "again")) == 0
    assert (tmp_path / "again" / "a_labels_labels.tif").is_file()


def _pairs(root: Path) -> tuple[Path, Path]:
    for i in range(2):
        image = _image(root / "images" / f"a{i}.tif", seed=i)
        mask = (tifffile.imread(image) > 128).astype(np.uint8)
        (root / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(root / "masks" / f"a{i}.tif", mask)
    return root / "images", root / "masks"


def test_evaluate_never_replaces_json_or_plot_without_overwrite(tmp_path, model, capsys):
    pytest.importorskip("matplotlib")
    images, masks = _pairs(tmp_path)
    from PIL import Image, PngImagePlugin

    from napari_cryoseg.engine.inference.evaluate import PLOT_SOFTWARE

    report, plot = tmp_path / "report.json", tmp_path / "plot.png"
    report.write_text(json.dumps({"model": "m", "class_names": [], "images": [], "mean": {}}))
    tag = PngImagePlugin.PngInfo()
    tag.add_text("Software", PLOT_SOFTWARE)
    Image.new("L", (4, 4)).save(plot, pnginfo=tag)  # an earlier plot of cryoseg evaluate
    for path in (report, plot):
        earlier = path.read_bytes()
        args = ["evaluate", "--model", str(model), "--images", str(images), "--masks",
                str(masks), "--device", "cpu", "--json" if path == report else "--plot",
                str(path)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
        assert path.read_bytes() == earlier
        assert main([*args, "--overwrite"]) == 0
        capsys.readouterr()
    # --overwrite replaces only what cryoseg evaluate wrote: a user's own file stays
    precious = tmp_path / "precious.json"
    precious.write_bytes(b"an earlier, precious result")
    assert main(["evaluate", "--model", str(model), "--images", str(images), "--masks",
                 str(masks), "--json", str(precious), "--overwrite"]) == 2
    assert "not a napari-cryoseg report" in capsys.readouterr().err
    assert precious.read_bytes() == b"an earlier, precious result"
    assert json.loads(report.read_text())["images"][0]["name"] == "a0"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_evaluate_json_cannot_be_an_input(tmp_path, model, capsys):
    images, masks = _pairs(tmp_path)
    before = (masks / "a0.tif").read_bytes()
    assert main(["evaluate", "--model", str(model), "--images", str(images), "--masks",
                 str(masks), "--json", str(masks / "a0.tif"), "--overwrite"]) == 2
    assert "is the --masks input" in capsys.readouterr().err
    assert (masks / "a0.tif").read_bytes() == before


def test_finetune_out_cannot_replace_its_model_even_with_overwrite(tmp_path, model, capsys):
    images, masks = _pairs(tmp_path)
    before = model.read_bytes()
    assert main(["finetune", "--model", str(model), "--images", str(images), "--masks",
                 str(masks), "--out", str(model), "--overwrite", "--steps", "1",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the --model input" in err
    assert model.read_bytes() == before


def test_train_out_cannot_replace_an_image_even_with_overwrite(tmp_path, capsys):
    images, masks = _pairs(tmp_path)
    target = images / "a1.tif"
    before = target.read_bytes()
    assert main(["train", "--images", str(images), "--masks", str(masks), "--out",
                 str(target), "--overwrite", "--steps", "1", "--preset", "tiny",
                 "--patch", "32", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the --images input" in err
    assert target.read_bytes() == before


def test_import_weights_out_cannot_replace_its_input(tmp_path, model, capsys):
    before = model.read_bytes()
    assert main(["import-weights", str(model), "--out", str(model), "--overwrite"]) == 2
    assert "is the STATE_DICT input" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_measure_out_cannot_replace_labels_or_image(tmp_path, capsys):
    from napari_cryoseg.io import write_labels_tiff

    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    path = write_labels_tiff(tmp_path / "x_labels.tif", labels, class_names=["bg", "cell"])
    image = _image(tmp_path / "x.tif")
    for target in (path, image):
        before = target.read_bytes()
        assert main(["measure", "--labels", str(path), "--image", str(image), "--out",
                     str(target), "--overwrite"]) == 2
        assert "input" in capsys.readouterr().err
        assert target.read_bytes() == before


def test_train_overwrite_replaces_only_an_earlier_last_model(tmp_path, capsys):
    """``<out>-last.pt`` is a name the command chose: --overwrite replaces it only when it
    is a napari-cryoseg model (an earlier run's), never another file of that name."""
    images, masks = _pairs(tmp_path)
    (tmp_path / "m-last.pt").write_bytes(b"someone's notes, not a model")
    args = ["train", "--images", str(images), "--masks", str(masks), "--out",
            str(tmp_path / "m.pt"), "--overwrite", "--steps", "1", "--preset", "tiny",
            "--patch", "32", "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a napari-cryoseg model file" in err
    assert (tmp_path / "m-last.pt").read_bytes() == b"someone's notes, not a model"
    (tmp_path / "m-last.pt").unlink()
    assert main(args) == 0  # a first run ...
    assert main(args) == 0  # ... and a rerun that replaces both of its models
    capsys.readouterr()


def test_measure_overwrite_replaces_only_an_earlier_default_table(tmp_path, capsys):
    from napari_cryoseg.io import write_labels_tiff

    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    path = write_labels_tiff(tmp_path / "x_labels.tif", labels, class_names=["bg", "cell"])
    table = tmp_path / "x_objects.csv"
    table.write_text("my own spreadsheet\n1,2,3\n")
    assert main(["measure", "--labels", str(path), "--overwrite"]) == 2
    assert "not a table written by cryoseg measure" in capsys.readouterr().err
    assert table.read_text() == "my own spreadsheet\n1,2,3\n"
    table.unlink()
    assert main(["measure", "--labels", str(path)]) == 0
    assert main(["measure", "--labels", str(path), "--overwrite"]) == 0
    capsys.readouterr()
    assert table.read_text().startswith("label,class,class_name")

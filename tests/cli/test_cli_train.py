"""``cryoseg train`` -> ``finetune`` -> ``evaluate`` on tiny TIFF folders, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main
from napari_cryoseg.model.checkpoint import load_model


def _write_set(root: Path, n: int = 4, size: int = 64, seed: int = 0) -> Path:
    """``root/images/img_i.tif`` (uint8, 50 nm) and ``root/masks/img_i.tif`` (disks = 2)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(8, size - 8, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(5, 10)) ** 2] = 2
        image = (60 + 60 * mask + rng.normal(0, 20, mask.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"img_{i}.tif", image, imagej=True,
                         resolution=(1 / 50, 1 / 50), metadata={"unit": "nm"})
        tifffile.imwrite(root / "masks" / f"img_{i}.tif", mask)
    return root


TRAIN_FAST = ["--preset", "tiny", "--steps", "6", "--patch", "64", "--batch-size", "2",
              "--device", "cpu", "--classes", "2", "--class-names", "disk"]


@pytest.mark.slow
def test_train_finetune_evaluate(tmp_path, capsys):
    data = _write_set(tmp_path / "data")
    model = tmp_path / "m.pt"
    images, masks = str(data / "images"), str(data / "masks")
    assert main(["train", "--images", images, "--masks", masks, "--out", str(model),
                 *TRAIN_FAST, "--tune-threshold"]) == 0
    out, err = capsys.readouterr()
    assert "wrote" in out and "disk" in out and "loss" in err
    trained = load_model(model)
    assert trained.class_names == ["background", "disk"]
    assert trained.pixel_size_nm == pytest.approx(50.0)
    assert trained.provenance["training_data"]["val"] == ["img_3"]
    last = load_model(tmp_path / "m-last.pt")  # the last weights, next to the best
    assert last.provenance["selected"] == "last" and "m-last.pt" in out
    assert trained.threshold == trained.provenance["threshold_tuning"]["threshold"]

    valid = tmp_path / "valid"
    valid.mkdir()
    for i in range(4):
        v = np.zeros((64, 64), np.uint8)
        v[:, : 32 + i] = 1
        tifffile.imwrite(valid / f"img_{i}.tif", v)
    tuned = tmp_path / "m2.pt"
    assert main(["finetune", "--model", str(model), "--images", images, "--masks", masks,
                 "--valid", str(valid), "--out", str(tuned), "--steps", "3", "--classes", "2",
                 "--device", "cpu", "--freeze-encoder"]) == 0
    out, _ = capsys.readouterr()
    assert "corrected pixels" in out and "before" in out
    child = load_model(tuned)
    assert child.provenance["parent"]["path"] == str(model)
    assert child.provenance["n_corrected_pixels"] == sum(64 * (32 + i) for i in range(4))

    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["evaluate", "--model", str(tuned), "--images", images, "--masks", masks,
                 "--classes", "2", "--json", str(report), "--plot", str(plot),
                 "--device", "cpu"]) == 0
    out, _ = capsys.readouterr()
    assert "mean foreground Dice" in out and "img_0" in out
    data_json = json.loads(report.read_text())
    assert [im["name"] for im in data_json["images"]] == [f"img_{i}" for i in range(4)]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert data_json["info"]["tta"] == 1

    tta_report = tmp_path / "tta.json"
    assert main(["evaluate", "--model", str(tuned), "--images", images, "--masks", masks,
                 "--classes", "2", "--json", str(tta_report), "--device", "cpu",
                 "--tta", "4"]) == 0
    assert json.loads(tta_report.read_text())["info"]["tta"] == 4


def test_train_refuses_an_existing_last_model_before_training(tmp_path, capsys):
    from napari_cryoseg.model.checkpoint import ModelFile, save_model
    from napari_cryoseg.model.config import preset

    data = _write_set(tmp_path / "data", n=2)
    earlier = save_model(ModelFile.new(preset("tiny"), seed=1), tmp_path / "n-last.pt")
    before = earlier.read_bytes()  # the last weights of an earlier run
    args = ["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
            "--out", str(tmp_path / "n.pt"), *TRAIN_FAST]
    assert main(args) == 2
    assert "n-last.pt already exists" in _error_line(capsys)
    assert earlier.read_bytes() == before
    assert not (tmp_path / "n.pt").exists()
    assert main([*args, "--overwrite"]) == 0  # thresholds are tuned only when asked
    model = load_model(tmp_path / "n.pt")
    assert model.threshold == 0.5 and "threshold_tuning" not in model.provenance


@pytest.mark.slow
def test_finetune_holdout_and_recipe_flags(tmp_path, capsys):
    data = _write_set(tmp_path / "data", n=2, size=160)  # 9 blocks of 64 px each
    model = tmp_path / "m.pt"
    images, masks = str(data / "images"), str(data / "masks")
    assert main(["train", "--images", images, "--masks", masks, "--out", str(model),
                 *TRAIN_FAST]) == 0
    for layout, expected in (("rows", "bottom rows"), ("blocks", "scattered 64-px blocks")):
        tuned = tmp_path / f"{layout}.pt"
        assert main(["finetune", "--model", str(model), "--images", images, "--masks", masks,
                     "--out", str(tuned), "--steps", "2", "--classes", "2", "--device", "cpu",
                     "--holdout-layout", layout, "--holdout-fraction", "0.3", "--lr", "5e-5",
                     "--seed", "7"]) == 0
        recipe = load_model(tuned).provenance["finetune"]["recipe"]
        assert (recipe["holdout_layout"], recipe["holdout_fraction"], recipe["lr"],
                recipe["seed"]) == (layout, 0.3, 5e-5, 7)
        assert load_model(tuned).provenance["finetune"]["holdout"].startswith(expected)
    capsys.readouterr()
    assert main(["finetune", "--model", str(model), "--images", images, "--masks", masks,
                 "--out", str(tmp_path / "bad.pt"), "--steps", "2", "--classes", "2",
                 "--holdout-fraction", "1.5"]) == 2
    line = _error_line(capsys)
    assert "--holdout-fraction: 1.5 is out of range" in line and "[0, 1)" in line


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    return err[-1]


def test_missing_partner_and_shape_mismatch_exit_2(tmp_path, capsys):
    data = _write_set(tmp_path / "data", n=2)
    (data / "masks" / "img_1.tif").unlink()
    args = ["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
            "--out", str(tmp_path / "m.pt"), *TRAIN_FAST]
    assert main(args) == 2
    line = _error_line(capsys)
    assert line.startswith("cryoseg train: error:") and "img_1.tif" in line
    tifffile.imwrite(data / "masks" / "img_1.tif", np.zeros((32, 64), np.uint8))
    assert main(args) == 2
    line = _error_line(capsys)
    assert "img_1.tif" in line and "differs from mask shape" in line
    assert not (tmp_path / "m.pt").exists()
    assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--images",
                 str(data / "images"), "--masks", str(data / "masks")]) == 2


def test_existing_out_refused_before_training(tmp_path, capsys, monkeypatch):
    data = _write_set(tmp_path / "data", n=2)
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")

    def boom(*args, **kwargs):  # training must not even start
        raise AssertionError("training started")

    monkeypatch.setattr("napari_cryoseg.cli.train.train", boom)
    assert main(["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
                 "--out", str(out), *TRAIN_FAST]) == 2
    line = _error_line(capsys)
    assert "already exists" in line and "--overwrite" in line
    assert out.read_bytes() == b"precious"
    monkeypatch.setattr("napari_cryoseg.cli.finetune.finetune", boom)
    assert main(["finetune", "--model", str(out), "--images", str(data / "images"),
                 "--masks", str(data / "masks"), "--out", str(out)]) == 2
    assert "is the --model input" in _error_line(capsys)  # the plainer reason comes first


def test_sparse_training_says_its_held_out_score_overrates_whole_images(tmp_path, capsys):
    """The held-out Dice of sparse annotations comes with what it means for images."""
    from scipy import ndimage

    data = _write_set(tmp_path / "data", n=4, size=96)
    for path in (data / "masks").iterdir():
        disks = tifffile.imread(path) == 2
        annotation = np.where(ndimage.binary_erosion(disks, iterations=2), 2, 0)
        far = ~ndimage.binary_dilation(disks, iterations=6)
        annotation[::12][far[::12]] = 1  # background lines away from the disks
        tifffile.imwrite(path, annotation.astype(np.uint8))
    assert main(["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
                 "--out", str(tmp_path / "m.pt"), "--sparse", "--val-fraction", "0.25",
                 *TRAIN_FAST]) == 0
    said = capsys.readouterr().out
    assert "Dice on held-out annotations" in said, said
    assert "whole images score lower" in said and "labels layer" in said

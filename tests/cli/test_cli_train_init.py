"""``cryoseg train --init``: where a new model's weights start, and the bundled models by name."""

from __future__ import annotations

import pytest
from test_cli_train import _write_set

from napari_cryoseg.cli import main
from napari_cryoseg.model.bundled import backbone_path
from napari_cryoseg.model.checkpoint import ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset

FAST = ["--steps", "2", "--patch", "64", "--batch-size", "2", "--device", "cpu",
        "--classes", "2", "--class-names", "mitochondria", "--val-fraction", "0"]


def test_init_from_a_model_file_keeps_its_features_and_says_so(tmp_path, capsys):
    data = _write_set(tmp_path / "data")
    start = ModelFile.new(preset("tiny", n_classes=3),
                          class_names=["background", "membrane", "mitochondrion"], seed=5)
    start_path = save_model(start, tmp_path / "em.pt")
    out = tmp_path / "m.pt"
    assert main(["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
                 "--out", str(out), "--init", str(start_path), "--lr", "1e-9", *FAST]) == 0
    captured = capsys.readouterr()
    assert "starting from 'em'" in captured.err + captured.out
    assert "mitochondria <- mitochondrion" in captured.err + captured.out
    made = load_model(out)
    assert made.provenance["parent"] == "em"
    assert made.class_names == ["background", "mitochondria"]
    assert made.config.base_channels == start.config.base_channels  # the start's network


def test_bad_init_is_one_line(tmp_path, capsys):
    data = _write_set(tmp_path / "data")
    code = main(["train", "--images", str(data / "images"), "--masks", str(data / "masks"),
                 "--out", str(tmp_path / "m.pt"), "--init", str(tmp_path / "missing.pt"),
                 *FAST])
    err = capsys.readouterr().err
    assert code != 0 and "is not a file" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.skipif(not backbone_path().is_file(), reason="the bundled EM backbone is not in "
                    "this checkout (bench/train_backbone.py makes it)")
def test_info_shows_the_backbone_card(capsys):
    assert main(["info", "em"]) == 0
    out = capsys.readouterr().out
    assert "mitochondrion" in out and "membrane" in out
    assert "non-commercial" in out

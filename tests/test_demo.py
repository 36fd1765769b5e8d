"""cryoseg-demo --headless: writes the TIFFs and prints the Dice; says so when no model."""

from __future__ import annotations

from napari_cryoseg import demo
from napari_cryoseg.core.synthetic import CLASS_COLORS, CLASS_NAMES
from napari_cryoseg.io.labels import read_labels_tiff
from napari_cryoseg.model import bundled
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset


def test_headless_demo_writes_tiffs_and_dice(tmp_path, capsys):
    model = ModelFile.new(preset("tiny", n_classes=4), class_names=list(CLASS_NAMES),
                          class_colors=list(CLASS_COLORS))
    model_path = save_model(model, tmp_path / "m.pt")
    out = tmp_path / "out"
    argv = ["--headless", str(out), "--size", "128", "--model", str(model_path)]
    assert demo.main(argv) == 0
    assert "mean foreground Dice vs ground truth" in capsys.readouterr().out
    labels, px = read_labels_tiff(out / "grid-square_labels.tif")
    assert labels.shape == (128, 128)
    assert px == 50.0
    assert demo.main(argv) == 0  # a second run keeps the first files
    assert (out / "grid-square_labels (1).tif").is_file()


def test_headless_demo_without_bundled_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bundled, "default_model_path", lambda: tmp_path / "missing.pt")
    assert demo.main(["--headless", str(tmp_path / "out")]) == 2
    assert "bundled default model is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""Class values of any width, and annotations that would teach the wrong thing.

More than 255 classes keep their values (uint8 targets wrapped 257 to class 1);
sparse annotations need both background and class strokes; every named class must
occur; median-frequency weights count painted pixels only; a validation split that
would take every stroke leaves them for training and says so.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cryoseg.cli import main
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.classes import ClassMapping
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.training.finetune import correction_targets
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import UNetConfig
from napari_cryoseg.model.heads import add_classes

TINY = UNetConfig(depth=1, base_channels=4)
FAST = dict(unet=TINY, batch_size=2, patch=32, device="cpu", seed=0)


def test_mapping_keeps_class_values_above_255():
    mapping = ClassMapping.parse(list(range(1, 301)))
    mask = np.array([[0, 1, 256], [257, 299, 300]], np.uint16)
    target = mapping.apply(mask)
    assert target.tolist() == [[0, 1, 256], [257, 299, 300]]


def test_training_with_300_classes_runs():
    rng = np.random.default_rng(0)
    image = rng.random((40, 40)).astype(np.float32)
    mask = (np.arange(40 * 40).reshape(40, 40) % 301).astype(np.uint16)
    mapping = ClassMapping.parse(list(range(1, 301)))
    result = drain(train([image], [mask], TrainConfig(steps=2, val_fraction=0, **FAST),
                         mapping))
    assert result.best.config.n_classes == 301


def test_finetune_targets_do_not_wrap_above_255():
    model = ModelFile.new(UNetConfig(depth=1, base_channels=4, n_classes=300), seed=0)
    image = np.zeros((16, 16), np.float32)
    mask = np.full((16, 16), 257, np.uint16)
    target = correction_targets(model, [image], [mask], None, None, ["a"])[0]
    assert int(target.max()) == 257  # not 257 % 256 == 1


def test_add_class_to_a_model_with_more_than_255_classes():
    model = ModelFile.new(UNetConfig(depth=1, base_channels=4, n_classes=256), seed=0)
    bigger = add_classes(model, ["new"])
    mask = np.full((16, 16), 256, np.uint16)
    target = correction_targets(bigger, [np.zeros((16, 16), np.float32)], [mask], None, None,
                                ["a"])[0]
    assert int(target.max()) == 256 and bigger.config.n_classes == 257


def _sparse_scene():
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    strokes = np.zeros((64, 64), np.uint8)
    strokes[10:14, 5:60] = 1   # class strokes
    strokes[40:44, 5:60] = 2   # background strokes (value 2 is not a class)
    return image, strokes


def test_sparse_needs_background_strokes():
    image, strokes = _sparse_scene()
    strokes[strokes == 2] = 0
    with pytest.raises(InputError, match="no background"):
        drain(train([image], [strokes], TrainConfig(steps=1, val_fraction=0, **FAST),
                    ClassMapping.parse("1"), valid_masks=[strokes > 0]))


def test_sparse_needs_class_strokes():
    image, strokes = _sparse_scene()
    with pytest.raises(InputError, match="only background"):  # class pixels not painted
        drain(train([image], [strokes], TrainConfig(steps=1, val_fraction=0, **FAST),
                    ClassMapping.parse("1"), valid_masks=[strokes == 2]))


def test_a_named_class_that_never_occurs_is_refused():
    image, strokes = _sparse_scene()
    with pytest.raises(InputError, match="7"):
        drain(train([image], [strokes], TrainConfig(steps=1, val_fraction=0, **FAST),
                    ClassMapping.parse("1,7")))


def test_median_frequency_weights_count_painted_pixels_only():
    image, strokes = _sparse_scene()
    config = TrainConfig(steps=1, val_fraction=0, class_weighting="median_frequency", **FAST)
    result = drain(train([image], [strokes], config, ClassMapping.parse("1"),
                         valid_masks=[strokes > 0]))
    weights = result.best.provenance["recipe"]["class_weights"]
    # 220 painted pixels of each side: equal frequencies, equal weights. Counting the
    # 3656 unpainted pixels as background would weight the class ~9x more.
    assert weights == pytest.approx([1.0, 1.0])


def test_strokes_only_on_the_held_out_image_still_train():
    rng = np.random.default_rng(2)
    images = [rng.random((48, 48)).astype(np.float32) for _ in range(4)]
    masks = [np.zeros((48, 48), np.uint8) for _ in range(4)]
    masks[-1][5:10, 5:40] = 1  # the last image: held out whole by a 0.25 split
    masks[-1][30:35, 5:40] = 2
    result = drain(train(images, masks, TrainConfig(steps=2, val_fraction=0.25, **FAST),
                         ClassMapping.parse("1"), valid_masks=[m > 0 for m in masks]))
    val = result.best.provenance["training_data"]["val"]
    assert "every annotated pixel" in val and "nothing is held out" in val
    counts = result.best.provenance["training_data"]["pixel_counts"]
    assert counts["class 1"] > 0


def test_cli_refuses_classes_0_in_sparse_mode(tmp_path, capsys):
    image, strokes = _sparse_scene()
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", strokes)
    code = main(["train", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks"), "--out", str(tmp_path / "m.pt"), "--sparse",
                 "--classes", "0", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--classes 0" in err, err

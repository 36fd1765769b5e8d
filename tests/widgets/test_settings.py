"""One settings object per job: every path that segments reads the session's settings.

Regression tests for settings that were lost or ignored: Run with no model loaded
reset the tile/overlap/batch the user typed to the default model's hint; Batch and the
re-segmentation after fine-tuning ignored the Segment section (test-time augmentation,
tile); the Model section never showed a Dice.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.tiling import TilingConfig, plan_tiles
from napari_cryoseg.model.bundled import default_model_path
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset

from .conftest import job_done, open_dock, sample


def _planned(tile: int, overlap: float = 0.125, shape=(256, 256), stride: int = 8):
    """The tile the engine cuts for a requested tile (it shrinks tiles to fit)."""
    return plan_tiles(shape, tile, overlap, stride)[0]


def _info(viewer, name):
    return viewer.layers[f"{name} labels"].metadata["cryoseg"]["info"]


def test_typed_tiling_survives_loading_the_default_model_at_run(make_napari_viewer, qtbot):
    if not default_model_path().is_file():
        pytest.skip("bundled default model missing")
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    widget.session.device = "cpu"
    assert widget.session.model is None  # Run will load the bundled default first
    panel = widget.segment_panel
    panel.tile.value = 128
    panel.overlap.value = 0.25
    panel.batch.value = 2
    viewer.add_image(sample(0, (320, 320))[0], name="img")
    with job_done(qtbot, widget, "segment"):
        panel.run_button.click()
    assert widget.session.model is not None
    assert (panel.tile.value, panel.overlap.value, panel.batch.value) == (128, 0.25, 2)
    assert widget.session.settings.segment.tiling == TilingConfig(128, 0.25, 2)
    info = _info(viewer, "img")
    assert (info["tile"], info["overlap"], info["batch_size"]) == (
        _planned(128, 0.25, (320, 320), widget.session.model.config.stride), 0.25, 2)


def test_model_hint_fills_only_what_the_user_did_not_set(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "menu")
    panel = widget.segment_panel
    panel.overlap.value = 0.25  # typed
    model = ModelFile.new(preset("tiny"), seed=0)
    model.tiling = TilingConfig(256, 0.0625, 8)
    model.threshold = 0.3
    widget.session.set_model(model)
    assert panel.tile.value == 256 and panel.batch.value == 8  # the model's hint
    assert panel.overlap.value == 0.25  # the user's value stays
    assert panel.threshold.value == pytest.approx(0.3)


def test_batch_and_resegment_use_the_segment_settings(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    session = widget.session
    session.device = "cpu"
    session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=0))
    panel = widget.segment_panel
    panel.tile.value = 64
    panel.tta.value = 2
    viewer.add_image(sample(0, (256, 256))[0], name="a")
    viewer.add_image(sample(1, (256, 256))[0], name="b")
    with job_done(qtbot, widget, "batch"):
        widget.batch_panel.run_button.click()
    assert _planned(64) != _planned(128)
    for name in ("a", "b"):
        info = _info(viewer, name)
        assert (info["tile"], info["tta"]) == (_planned(64), 2), info
    # the re-segmentation after fine-tuning / Revert reads the same settings
    panel.tta.value = 4
    panel.tile.value = 128
    session.set_model(ModelFile.new(preset("tiny", n_classes=4), seed=1))
    widget.finetune_panel.resegment_choice.value = "all"
    with job_done(qtbot, widget, "resegment"):
        widget.finetune_panel.revert_btn.click()
    for name in ("a", "b"):
        info = _info(viewer, name)
        assert (info["tile"], info["tta"]) == (_planned(128), 4), info


def test_model_section_shows_history_and_dice(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    trained = ModelFile.new(preset("tiny"), seed=0)
    trained.provenance.update({"kind": "train", "steps": 1200,
                               "metrics": {"validation": {"dice": 0.8771}}})
    path = save_model(trained, tmp_path / "trained.pt")
    assert widget.model_panel.open_path(path)
    text = widget.model_panel.summary.text()
    assert "validation Dice 0.877" in text and "1200 steps" in text, text
    assert "{" not in text  # no raw dicts
    finetuned = ModelFile.new(preset("tiny"), seed=1)
    finetuned.provenance.update({
        "kind": "finetune", "steps": 40,
        "parent": {"name": "trained", "path": str(path), "created": None},
        "finetune": {"before": {"dice": 0.61}, "after": {"dice": 0.7}},
        "metrics": {"holdout_before": {"dice": 0.61}, "holdout_after": {"dice": 0.7}}})
    widget.session.set_model(finetuned)
    text = widget.model_panel.summary.text()
    assert "fine-tuned from trained" in text and "held-out Dice 0.700" in text, text
    assert "parent 0.610" in text and "{" not in text


def test_bad_setting_is_refused_in_one_line(make_napari_viewer):
    from napari_cryoseg.core.errors import InputError

    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    settings = widget.session.settings
    before = settings.finetune
    with pytest.raises(InputError, match=r"learning rate -1.0 must be in \(0, 1\]") as err:
        settings.set("finetune.lr", -1.0)
    assert "\n" not in str(err.value)
    assert settings.finetune == before
    assert "finetune.lr" not in settings.edited
    np.testing.assert_equal(widget.finetune_panel.form["finetune.lr"].value, before.lr)


def test_dock_rows_take_their_bounds_and_help_from_the_settings(make_napari_viewer):
    """The spin boxes the user sees carry the dataclass's bounds (core/setting.py)."""
    from napari_cryoseg.core.setting import about
    from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
    from napari_cryoseg.engine.training.train_settings import TrainConfig
    from napari_cryoseg.viewer.settings import LoopSettings

    viewer = make_napari_viewer()
    widget = open_dock(viewer, "plugin")
    tile = widget.uncertainty_panel.form["loop.uncertain_tile"]
    meta = about(LoopSettings, "uncertain_tile")
    assert (tile.min, tile.max, tile.step) == (meta.min, meta.max, meta.step)
    assert tile.tooltip == meta.help
    lr = widget.finetune_panel.form["finetune.lr"]
    meta = about(FinetuneConfig, "lr")
    assert lr.max == meta.max and lr.min == pytest.approx(10.0 ** -meta.decimals)
    budget = widget.train_panel.form["train.time_budget_s"]
    assert (budget.min, budget.max) == (0, about(TrainConfig, "time_budget_s").max)
    assert budget.native.specialValueText() == "no limit"
